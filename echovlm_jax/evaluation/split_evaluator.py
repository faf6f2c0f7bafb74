"""What a task's evaluator does around its metric: for each due config.evals entry, score one
held-out split, prefix the scalars (`<split>/<type>/<metric>`), log them and keep the details
for the report. The view classifier's, segmentation's and landmarks' evaluators subclass it
and supply `score` and `write_report`; the contrastive run's is registry.Evaluator."""

from __future__ import annotations

from typing import Any, Mapping

import jax

from echovlm_jax.evaluation import registry


class SplitEvaluator:
  """Subclasses set EVAL_TYPES and define score(model, cfg) -> (scalars, details)."""
  EVAL_TYPES: tuple[str, ...] = ()

  def __init__(self, config, mesh: jax.sharding.Mesh, keep):
    """keep: the examples the evaluator scores, as the iterators take it."""
    registry.check_evals_config(config.evals, self.EVAL_TYPES)
    self.config, self.evals_config, self.input_config = config, config.evals, config.input
    self.mesh, self.keep = mesh, keep
    self.batch_size = registry.eval_batch_size(config)
    self.details: dict[str, dict] = {}

  def score(self, model, cfg: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    raise NotImplementedError

  def due(self, step: int, last_step: bool = False) -> bool:
    return any(registry.is_due(cfg, step, last_step) for cfg in self.evals_config.values())

  def maybe_run(self, model, step: int, last_step: bool = False) -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, cfg in self.evals_config.items():
      if not registry.is_due(cfg, step, last_step):
        continue
      scalars, details = self.score(model, cfg)
      prefix = registry.metric_prefix(cfg)
      entry = {f"{prefix}/{k}": float(v) for k, v in scalars.items()}
      flat.update(entry)
      self.details[name] = dict(type=cfg["type"], split=cfg["split"], step=int(step),
                                metrics=entry, **details)
    registry.log_metrics(step, flat)
    return flat
