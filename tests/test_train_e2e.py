"""The trainer end to end, as users run it (`python -m echovlm_jax.main`) on the tiny
dataset: checkpoints / metrics / TensorBoard events, SIGTERM and kill -9 with identical
losses after resume, a NaN stopping the run cleanly, restore onto another mesh, two
processes matching one, and `--mode=evaluate` on a trained workdir.

Subprocesses share the session's persistent XLA compilation cache (conftest.py): the first
run compiles, the others load the same executables (the losses below show the runs are
deterministic).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from echovlm_jax import distributed
from echovlm_jax.train import checkpointing, loop
from tests import multiprocess_utils
from tests import train_tiny_config

pytestmark = pytest.mark.slow

REPO = multiprocess_utils.REPO
CONFIG = os.path.join(REPO, "tests", "train_tiny_config.py")
STEPS = 8
PROGRESS = re.compile(r"^step\s+(\d+)/(\d+)\s+loss")


class Runner:
  """Starts `python -m echovlm_jax.main` (or another module) on the tiny config."""

  def __init__(self, data_dir: str, log_dir: str):
    self.data_dir, self.log_dir = data_dir, log_dir
    self.count = 0

  def env(self, devices: int = 8) -> dict[str, str]:
    return multiprocess_utils.worker_env(0, 1, devices, 0)

  def argv(self, workdir: str, *overrides: str, module: str = "echovlm_jax.main",
           config_arg: str = "") -> list[str]:
    config = f"{CONFIG}:{config_arg}" if config_arg else CONFIG
    return (["-m", module] if module.startswith("echovlm_jax") else [module]) + [
        "--config", config, f"--config.input.data_dir={self.data_dir}", f"--workdir={workdir}",
        f"--config.total_steps={STEPS}", *overrides]

  def start(self, workdir: str, *overrides: str, module: str = "echovlm_jax.main",
            config_arg: str = "") -> tuple[subprocess.Popen, str]:
    """(process with a text stdout pipe, path of its stderr log)."""
    self.count += 1
    err_path = os.path.join(self.log_dir, f"run{self.count}.stderr")
    argv = self.argv(workdir, *overrides, module=module, config_arg=config_arg)
    with open(err_path, "w") as err:  # a file, not a pipe: orbax logs would fill a pipe
      proc = subprocess.Popen([sys.executable, *argv],
                              cwd=REPO, env=self.env(), text=True, stdout=subprocess.PIPE,
                              stderr=err)
    return proc, err_path

  def run(self, workdir: str, *overrides: str, expect_rc: int = 0, module: str = "echovlm_jax.main",
          config_arg: str = "", timeout: float = 240) -> tuple[str, str]:
    proc, err_path = self.start(workdir, *overrides, module=module, config_arg=config_arg)
    out, _ = proc.communicate(timeout=timeout)
    err = open(err_path).read()
    assert proc.returncode == expect_rc, f"rc={proc.returncode}\nstdout:\n{out}\nstderr tail:\n{err[-3000:]}"
    return out, err


def read_until_step(proc: subprocess.Popen, step: int) -> list[str]:
  """Reads the process's stdout until a progress line for `step` or later."""
  lines = []
  for line in proc.stdout:
    lines.append(line)
    m = PROGRESS.match(line)
    if m and int(m.group(1)) >= step:
      return lines
  raise AssertionError(f"the run ended before step {step}:\n{''.join(lines)}")


def jsonl(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def losses_by_step(workdir: str) -> dict[int, list[float]]:
  """step -> every train/loss logged for it (a resumed run re-logs steps after its checkpoint)."""
  out: dict[int, list[float]] = {}
  for rec in jsonl(workdir):
    if "train/loss" in rec:
      out.setdefault(rec["step"], []).append(rec["train/loss"])
  return out


def tiny_config(data_dir: str, **overrides):
  config = train_tiny_config.get_config()
  config.input.data_dir = data_dir
  config.total_steps = STEPS
  for k, v in overrides.items():
    config[k] = v
  return config


@pytest.fixture(scope="module")
def runner(tiny_echoground, tmp_path_factory):
  input_config, _ = tiny_echoground
  return Runner(input_config.data_dir, str(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="module")
def reference(runner, tmp_path_factory):
  """An uninterrupted 8-step run (checkpoints every 2 steps): (workdir, {step: loss}, stdout)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  out, _ = runner.run(workdir)
  losses = {s: v[0] for s, v in losses_by_step(workdir).items()}
  return workdir, losses, out


def test_run_writes_checkpoints_metrics_and_events(reference):
  workdir, losses, out = reference
  assert sorted(losses) == list(range(1, STEPS + 1))
  assert checkpointing.checkpoint_steps(workdir) == [2, 4, 6, 8]
  records = jsonl(workdir)
  for rec in records:
    for key in ("train/loss", "train/loss/contrastive", "train/loss/negation", "train/loss/meas",
                "train/lr", "train/temperature", "train/grad_norm", "train/steps_per_s",
                "train/examples_per_s"):
      assert key in rec and np.isfinite(rec[key]), (key, rec)
  lrs = [r["train/lr"] for r in records]
  assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3) and lrs[-1] < lrs[2]  # warm-up, cosine
  # It learns something even in 8 steps: one batch of 8 is noisy (duplicate captions leave
  # the denominators, negation pairs vary), so compare the halves of the run.
  half = STEPS // 2
  assert np.mean([losses[s] for s in range(half + 1, STEPS + 1)]) < np.mean(
      [losses[s] for s in range(1, half + 1)])
  # A readable progress line per logged step.
  progress = [l for l in out.splitlines() if PROGRESS.match(l)]
  assert len(progress) == STEPS
  assert all(w in progress[-1] for w in ("contrastive", "lr", "steps/s", "ex/s", "ETA", "|g|"))
  # TensorBoard events on process 0, with the same scalars.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert events
  tags = {v.tag for f in events for e in tf.compat.v1.train.summary_iterator(os.path.join(workdir, f))
          for v in e.summary.value}
  assert {"train/loss", "train/loss/negation", "train/lr", "train/grad_norm"} <= tags
  # The side-car: where the data stream was, with what seed.
  extra = json.load(open(os.path.join(workdir, "checkpoints", "8", "extra", "metadata")))
  assert extra["data_position"] == STEPS and extra["seed"] == 0 and extra["vocab_size"] > 0


def test_sigterm_then_kill9_resume_with_identical_losses(runner, reference, tmp_path):
  _, ref_losses, _ = reference
  workdir = str(tmp_path / "w")
  # 1. SIGTERM mid-run: saves the step it is on, exits 0.
  proc, err_path = runner.start(workdir, "--config.ckpt_every=1")
  read_until_step(proc, 1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, open(err_path).read()[-3000:]
  stopped = int(re.search(r"Stopped by a preemption signal: saved step (\d+)", out).group(1))
  assert stopped < STEPS and checkpointing.checkpoint_steps(workdir)[-1] == stopped

  # 2. Resume, then kill -9 after its first step (it saves every step: likely mid-save).
  proc, err_path = runner.start(workdir, "--config.ckpt_every=1")
  lines = read_until_step(proc, stopped + 1)
  proc.kill()
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert any(f"Resumed from step {stopped}" in l for l in lines)
  assert STEPS not in checkpointing.checkpoint_steps(workdir), "the run finished before the kill"

  # 3. Resume from the last complete checkpoint and finish.
  out, _ = runner.run(workdir, "--config.ckpt_every=1")
  assert "Resumed from step" in out
  logged = losses_by_step(workdir)
  assert sorted(logged) == list(range(1, STEPS + 1))
  for step, values in logged.items():
    for v in values:  # steps logged by the killed run and again after resume: all identical
      assert v == ref_losses[step], (step, values, ref_losses[step])


@pytest.mark.parametrize("target, named", [("frames", "loss/contrastive"), ("grads", "grad_norm")])
def test_nan_stops_cleanly_and_keeps_the_last_good_checkpoint(runner, reference, tmp_path, target,
                                                              named):
  """A NaN loss (NaN frames) and a NaN gradient with a finite loss stop the run the same way."""
  workdir = str(tmp_path / "w")
  _, err = runner.run(workdir, "--config.debug_nan_step=3", f"--config.debug_nan_target={target}",
                      expect_rc=1)
  message = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(message) == 1, err[-3000:]
  assert "Non-finite value at step 3" in message[0] and named in message[0]
  if target == "grads":
    assert "loss/" not in message[0]  # the loss itself stayed finite
  assert "Last good checkpoint: step 2" in message[0]
  assert "Traceback" not in err
  assert checkpointing.checkpoint_steps(workdir) == [2]
  # The kept checkpoint restores, and holds what the uninterrupted run had at step 2.
  config = tiny_config(runner.data_dir)
  mesh = distributed.create_mesh(config.mesh)
  model, step = checkpointing.restore_params(config, workdir, mesh)
  ref_model, _ = checkpointing.restore_params(config, reference[0], mesh, step=2)
  assert step == 2
  from flax import nnx  # pylint: disable=g-import-not-at-top
  for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(ref_model))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_onto_another_mesh(runner, reference, tmp_path):
  ref_dir, ref_losses, _ = reference
  workdir = str(tmp_path / "w")
  shutil.copytree(ref_dir, workdir)
  for step in (6, 8):  # resume from step 4, saved on the (8, 1, 1) mesh
    shutil.rmtree(os.path.join(workdir, checkpointing.CHECKPOINT_SUBDIR, str(step)))
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  config = tiny_config(runner.data_dir)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  loop.train_and_evaluate(config, workdir)
  logged = losses_by_step(workdir)
  assert sorted(logged) == [5, 6, 7, 8]
  np.testing.assert_allclose([logged[s][0] for s in (5, 6, 7, 8)],
                             [ref_losses[s] for s in (5, 6, 7, 8)], rtol=2e-4)


def test_two_processes_match_one_process(runner, tmp_path):
  # One process, 8 devices, fed exactly the global batches two hosts assemble.
  emulated = str(tmp_path / "emulated")
  runner.run(emulated, "--config.ckpt_every=8", "--emulate_processes=2",
             module=os.path.join(REPO, "tests", "train_worker.py"))
  # Two real processes with 4 devices each, through the real entry point.
  multi = str(tmp_path / "multi")
  outs = multiprocess_utils.run_workers(runner.argv(multi, "--config.ckpt_every=8"), 2, 4,
                                        timeout=300)
  assert any(PROGRESS.match(l) for l in outs[0].splitlines())
  assert not any(PROGRESS.match(l) for l in outs[1].splitlines())  # progress on process 0 only
  one, two = losses_by_step(emulated), losses_by_step(multi)
  assert sorted(two) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([two[s][0] for s in sorted(two)], [one[s][0] for s in sorted(two)],
                             rtol=1e-4)
  assert checkpointing.checkpoint_steps(multi) == [STEPS]


def test_evaluate_a_checkpoint_from_the_command_line(runner, reference):
  """--mode=evaluate restores step 4 params-only on another mesh and writes its report."""
  workdir = reference[0]
  out, _ = runner.run(workdir, "--mode=evaluate", "--step=4", "--config.mesh.data=4",
                      "--config.mesh.tensor=2", config_arg="evals")
  out_dir = os.path.join(workdir, "eval_step_4")  # not the latest step: beside the training report
  assert f"Report: {os.path.join(out_dir, 'report.md')}" in out
  metrics = json.load(open(os.path.join(out_dir, "eval_metrics.json")))
  assert metrics["step"] == 4
  assert any(k.startswith("test/retrieval/") for k in metrics), sorted(metrics)
  # In process, on the default (8, 1, 1) mesh: step 4's params give the same metrics, and
  # the headline ones equal an independent NumPy computation on their embeddings.
  from echovlm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from echovlm_jax.evaluation import registry  # pylint: disable=g-import-not-at-top
  from tests import eval_reference  # pylint: disable=g-import-not-at-top
  config = train_tiny_config.get_config("evals")
  config.input.data_dir = runner.data_dir
  mesh = distributed.create_mesh(config.mesh)
  model, _ = checkpointing.restore_params(config, workdir, mesh, step=4)
  tokenizer = input_pipeline.load_tokenizer(config.input)
  evaluator = registry.Evaluator(config, mesh, tokenizer)
  flat = evaluator.maybe_run(model, 4, last_step=True)
  assert flat.keys() == {k for k in metrics if k not in ("step", "workdir")}
  for key, value in flat.items():
    assert metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-3, nan_ok=True), key
  eval_reference.check(flat, "test", evaluator.cache[("embeddings", "test", None, None, 4)],
                       eval_reference.prompt_classes(model, tokenizer, config.input.max_text_len),
                       evaluator.cache[("prompts", 4)])
  assert os.path.exists(os.path.join(out_dir, "metrics.json"))
  assert checkpointing.checkpoint_steps(workdir) == [2, 4, 6, 8]  # the workdir's checkpoints untouched
