"""The one trainer's loop: set-up, data, state, resume, then steps with periodic metrics,
checkpoints and evaluation.

`train_and_evaluate(config, workdir)` is what `main.py` calls. Every experiment
(the paper's ablations included) is a config, never a fork; config.task picks what is trained
(tasks/: "contrastive", the dual encoder, or "view_classifier", the image tower and a linear
head on views from trusted sources). Evaluation and export restore checkpoints through
checkpointing.py, never through this module.

Fault injection (configs/echovlm.py, 0 = off): `config.debug_nan_step` makes that step
non-finite, `config.debug_nan_target` says where: "frames" (NaN inputs, so a NaN loss) or
"grads" (a finite loss with a NaN gradient), so tests can check both stop the run cleanly.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from echovlm_jax import sharding
from echovlm_jax.train import checkpointing
from echovlm_jax.train import metrics_log
from echovlm_jax.train import run_config
from echovlm_jax.train import tasks
from echovlm_jax.train import workdir_config
from echovlm_jax.train.state import create_state
from echovlm_jax.train.step import NonFiniteLossError, check_step_metrics, make_train_step

# The data modules (tf.data, TFDS) and clu's default writer are imported inside the loop (clu's
# interface comes with metrics_log), so state.py and step.py never need TensorFlow (benchmarks
# on accelerator images import those alone).


# ----------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------
def progress_line(step: int, total: int, scalars: dict[str, float], eta_s: float) -> str:
  """One readable line: loss and its terms, lr, temperature, grad norm, speed, ETA."""
  # A mixture's per-source terms ("loss/<source>/<term>") go to the logs, not this line.
  terms = " ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(scalars.items())
                   if k.startswith("loss/") and "/" not in k[5:])
  return (f"step {step:>6}/{total}  loss {scalars['loss']:.4f}" + (f" ({terms})" if terms else "")
          + f"  lr {scalars['lr']:.2e}"
          + (f"  T {scalars['temperature']:.2f}" if "temperature" in scalars else "")
          + f"  |g| {scalars['grad_norm']:.3f}  {scalars['steps_per_s']:.2f} steps/s"
          f"  {scalars['examples_per_s']:.1f} ex/s  ETA {_fmt_seconds(eta_s)}")


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from the latest checkpoint in workdir) and evaluates.

  Returns the last logged training metrics and evaluation results. Raises
  ConfigError on a config it cannot run, NonFiniteLossError when the loss or the
  gradient norm stops being finite (the last good checkpoint stays). A SIGTERM saves the
  current step and returns early.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  # Installed before the slow set-up: a SIGTERM while compiling stops at the first step.
  checkpointing.install_sigterm_handler()
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    checkpointing.uninstall_sigterm_handler()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  from clu import metric_writers
  from echovlm_jax.data import build as data_build
  from echovlm_jax.data import input_pipeline
  from echovlm_jax.data import mixture_iterator

  # --- Setup ---------------------------------------------------------------
  # The checkpoint's architecture, text length and tokenizer (config.model_init).
  config, init_checkpoint = run_config.configure_from_checkpoint(config)
  is_main = jax.process_index() == 0
  mesh = run_config.create_mesh(config)
  run_config.validate_config(config, mesh)
  task = tasks.from_config(config)
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), mesh.size,
               jax.process_count())
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  if is_main:  # WORKDIR/metrics.jsonl, which the report reads
    writer = metric_writers.MultiWriter([writer, metrics_log.JsonlWriter(workdir)])
  if is_main:
    workdir_config.write(config, workdir)

  # --- Data ----------------------------------------------------------------
  data_build.ensure_dataset(config.input, build_real=False)  # real data: built by its own job
  tokenizer = input_pipeline.load_tokenizer(config.input)
  vocab_size = config.model.vocab_size or tokenizer.vocab_size  # a checkpoint's rows

  # --- Model and state -----------------------------------------------------
  graphdef, state, state_shardings, tx = create_state(config, mesh, vocab_size, init_checkpoint)
  del init_checkpoint  # the towers are in the state: free the host copy
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  logging.info("Model: %.2fM parameters.", n_params / 1e6)

  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_ckpts, every=config.ckpt_every)
  start_step, data_position = 0, 0
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(None, checkpointing.abstract_like(state))
    start_step = int(state["step"])
    data_position = int(extra.get("data_position", start_step))
    if extra.get("seed", config.seed) != config.seed:
      logging.warning("Resuming with config.seed=%s, saved with %s: the data order changes.",
                      config.seed, extra["seed"])
    if extra.get("process_count", jax.process_count()) != jax.process_count():
      logging.warning("Resuming on %d processes, saved on %s: each host reads another slice, "
                      "so the data order changes.", jax.process_count(), extra["process_count"])
    logging.info("Resumed from step %d (data position %d).", start_step, data_position)
    if is_main:
      print(f"Resumed from step {start_step} in {ckpt.directory}.", flush=True)
  if start_step >= config.total_steps:
    logging.info("Step %d >= config.total_steps=%d: nothing to train.", start_step,
                 config.total_steps)

  # The stream is deterministic in (seed, position, process count): rebuilding it at the
  # saved position gives exactly the batches an uninterrupted run would have seen.
  train_iter = mixture_iterator.make_train_iterator(
      config.input, config.batch_size, mesh, seed=config.seed, start_step=data_position,
      keep=task.keep(config), kind=task.batch_kind)
  loss_fn = task.make_loss_fn(config, graphdef, mesh, train_iter)

  batch_sharding = sharding.batch_sharding(mesh)
  train_step = make_train_step(config, tx, mesh, state_shardings, batch_sharding, loss_fn)
  nan_step, nan_target = int(config.debug_nan_step), config.debug_nan_target
  poisoned_step = (make_train_step(config, tx, mesh, state_shardings, batch_sharding, loss_fn,
                                   poison_grads=True)
                   if nan_step and nan_target == "grads" else None)  # compiled only if used
  # The evaluators import sklearn / matplotlib: only when config.evals lists some.
  evaluator = task.make_evaluator(config, mesh, tokenizer) if config.evals else None

  # --- Loop ----------------------------------------------------------------
  last, preempted = {}, False
  t0, s0 = time.time(), start_step
  pending = None  # metrics of the previous step, checked one step late so dispatch never stalls
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      batch = next(train_iter)
      step_fn = train_step
      if step == nan_step:
        logging.warning("config.debug_nan_step=%d: NaN %s (fault injection).", step, nan_target)
        if nan_target == "frames":
          batch = dict(batch, frames=_poison(batch["frames"]))
        else:
          step_fn = poisoned_step
      state, metrics = step_fn(state, batch)
      if pending is not None:
        check_step_metrics(*pending)
      pending = (step, metrics)

      if step % config.log_every == 0 or step == config.total_steps:
        check_step_metrics(*pending)
        pending = None
        dt = time.time() - t0
        steps_per_s = (step - s0) / max(dt, 1e-9)
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        scalars.update({"steps_per_s": steps_per_s,
                        "examples_per_s": steps_per_s * config.batch_size})
        eta = (config.total_steps - step) / max(steps_per_s, 1e-9)
        writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
        if is_main:
          print(progress_line(step, config.total_steps, scalars, eta), flush=True)
        last = scalars
        t0, s0 = time.time(), step

      # should_stop is a sync point on multi-host runs: every process calls it every step.
      preempted = ckpt.should_stop(step)
      if ckpt.should_save(step) or step == config.total_steps or preempted:
        if pending is not None:
          check_step_metrics(*pending)
          pending = None
        # The side-car restores the data stream. It is the only randomness after init (the
        # model has no dropout): batches and augmentation are keyed by (seed, epoch, host).
        ckpt.save(step, state, {"data_position": train_iter.position, "seed": config.seed,
                                "process_count": jax.process_count(), "vocab_size": vocab_size},
                  force=preempted or step == config.total_steps)
      if preempted:
        logging.warning("Preemption signal received: saved step %d and stopping.", step)
        if is_main:
          print(f"Stopped by a preemption signal: saved step {step} to {ckpt.directory}; "
                "rerun the same command to resume.", flush=True)
        break

      # After the save: it runs in the background while we evaluate.
      # Asked first so the hot loop does not rebuild the module on steps with no eval.
      if evaluator is not None and evaluator.due(step, last_step=step == config.total_steps):
        results = evaluator.maybe_run(nnx.merge(graphdef, state["params"]), step,
                                      last_step=step == config.total_steps)
        if results:
          writer.write_scalars(step, results)
          last.update(results)
  except NonFiniteLossError as e:
    ckpt.wait()
    good = ckpt.latest_step()
    raise NonFiniteLossError(
        f"{e} Last good checkpoint: "
        f"{f'step {good} in {ckpt.directory}' if good is not None else 'none yet'}.") from None
  finally:
    ckpt.close()
    writer.flush()

  if evaluator is not None and is_main and not preempted:
    report = evaluator.write_report(workdir, metrics_log.read_metrics_history(workdir))
    if report:
      print(f"Report: {report}", flush=True)
  return last


def _poison(frames: jax.Array) -> jax.Array:
  """NaN frames with the batch's sharding (config.debug_nan_step fault injection)."""
  return jax.jit(lambda f: jnp.full_like(f, jnp.nan), out_shardings=frames.sharding)(frames)


def _fmt_seconds(s: float) -> str:
  s = int(s)
  return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"
