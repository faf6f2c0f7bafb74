"""The LVEF regressor's evaluators (config.task = "lvef"): one pass over a held-out split's
clips whose view shows a reported LVEF, then MAE, RMSE and R^2 in EF points (the z-scored
prediction times the train split's standard deviation), and the report (report.md,
metrics.json). EchoNet-Dynamic reports MAE 4.1 points on its test split (Ouyang et al. 2020).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import embeddings as emb_lib
from echovlm_jax.evaluation import registry
from echovlm_jax.evaluation import split_evaluator

EVAL_TYPES = ("lvef_regression",)
LVEF = schema.MEASUREMENTS.index("lvef")


def check_evals_config(evals_config: Mapping[str, Any]) -> None:
  registry.check_evals_config(evals_config, EVAL_TYPES)


@jax.jit(static_argnums=0)
def _predict(graphdef, state, frames):
  return nnx.merge(graphdef, state)(frames)


def predict_split(model, input_config, split: str, batch_size: int, mesh, keep
                  ) -> dict[str, np.ndarray]:
  """pred, true: float32 [N] LVEF in points for the examples `keep` keeps."""
  from echovlm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  mean, std = input_pipeline.load_measurement_stats(input_config)
  graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
  preds, trues = [], []
  for batch in input_pipeline.make_eval_iterator(input_config, split, batch_size, mesh, keep=keep):
    valid = emb_lib.to_host(batch["valid"]) > 0
    preds.append(emb_lib.to_host(_predict(graphdef, state, batch["frames"]))[valid])
    trues.append(emb_lib.to_host(batch["measurements"])[valid, LVEF])
  m, s = float(mean[LVEF]), float(std[LVEF])
  cat = lambda xs: np.concatenate(xs).astype(np.float32) if xs else np.zeros((0,), np.float32)
  return dict(pred=cat(preds) * s + m, true=cat(trues) * s + m)


def regression_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
  """mae, rmse (points), r2 and n; NaN where there are no examples."""
  if not len(true):
    return dict(mae=float("nan"), rmse=float("nan"), r2=float("nan"), n=0)
  err = pred - true
  var = float(np.var(true))
  return dict(mae=float(np.mean(np.abs(err))), rmse=float(np.sqrt(np.mean(err ** 2))),
              r2=1.0 - float(np.mean(err ** 2)) / var if var > 0 else float("nan"),
              n=int(len(true)))


class Evaluator(split_evaluator.SplitEvaluator):
  """What the trainer holds for config.task = "lvef"."""
  EVAL_TYPES = EVAL_TYPES

  def score(self, model, cfg):
    out = predict_split(model, self.input_config, cfg["split"], self.batch_size, self.mesh,
                        self.keep)
    res = regression_metrics(out["pred"], out["true"])
    return {k: v for k, v in res.items() if k != "n"}, dict(n=res["n"])

  def write_report(self, workdir: str, metrics_history: list[dict]) -> str | None:
    """report/report.md and report/metrics.json of the latest results; None when none ran."""
    del metrics_history
    if not self.details:
      return None
    out = os.path.join(workdir, "report")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
      json.dump(self.details, f, indent=1, default=float)
    lines = ["# LVEF from clips", "", "| split | step | clips | MAE (points) | RMSE | R^2 |",
             "|---|---|---|---|---|---|"]
    for d in self.details.values():
      m = {k.rsplit("/", 1)[-1]: v for k, v in d["metrics"].items()}
      lines.append(f"| {d['split']} | {d['step']} | {d['n']} | {m['mae']:.2f} | "
                   f"{m['rmse']:.2f} | {m['r2']:.3f} |")
    lines += ["", "EchoNet-Dynamic (R(2+1)D, 32 frames) reports MAE 4.1 points on its test split."]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
      f.write("\n".join(lines) + "\n")
    return path
