"""Standalone evaluation: a workdir's checkpoint (latest or a given step) through every
evaluator config.evals lists (config.task's evaluator), then the report.

  python -m echovlm_jax.main --mode=evaluate --config ... --workdir DIR [--step N]
"""

from __future__ import annotations

import json
import logging
import os

import ml_collections

from echovlm_jax.data import build as data_build
from echovlm_jax.data import input_pipeline
from echovlm_jax.train import checkpointing
from echovlm_jax.train import metrics_log
from echovlm_jax.train import run_config
from echovlm_jax.train import tasks


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                        out_dir: str | None = None) -> dict[str, float]:
  """Runs all of config.evals (as at a last step) on a checkpoint; returns the flat metrics.

  The model is restored params-only onto config.mesh (any device count). Results go
  to out_dir (default: the workdir for its latest checkpoint, WORKDIR/eval_step_N for
  an older one, so the training report is not overwritten by a past step):
  report.md, metrics.json, plots and eval_metrics.json. Nothing else in the workdir
  is touched, so it can run while training continues there.
  """
  import jax  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  # The architecture and tokenizer the run trained with (config.model_init).
  config, _ = run_config.configure_from_checkpoint(config)
  if not config.evals:
    raise run_config.ConfigError("config.evals is empty: nothing to evaluate. List evaluators "
                            "there (see configs/echovlm.py).")
  mesh = run_config.create_mesh(config)
  run_config.validate_config(config, mesh)
  data_build.ensure_dataset(config.input, build_real=False)  # real data: built by its own job
  tokenizer = input_pipeline.load_tokenizer(config.input)
  latest = (checkpointing.checkpoint_steps(workdir) or [None])[-1]
  model, step = checkpointing.restore_params(config, workdir, mesh, step=step)
  if out_dir is None:
    out_dir = workdir if step == latest else os.path.join(workdir, f"eval_step_{step}")
  os.makedirs(out_dir, exist_ok=True)

  evaluator = tasks.from_config(config).make_evaluator(config, mesh, tokenizer)
  metrics = evaluator.maybe_run(model, step, last_step=True)
  if jax.process_index() == 0:
    with open(os.path.join(out_dir, "eval_metrics.json"), "w") as f:
      json.dump({"step": step, "workdir": workdir, **metrics}, f, indent=2, sort_keys=True)
    report = evaluator.write_report(out_dir, metrics_log.read_metrics_history(workdir))
    logging.info("Evaluated step %d of %s.", step, workdir)
    print(f"Evaluated checkpoint step {step} of {workdir}.", flush=True)
    if report:
      print(f"Report: {report}", flush=True)
  return metrics
