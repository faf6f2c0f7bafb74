"""The view classifier's evaluators (config.task = "view_classifier"): one pass over a held-out
split's labelled examples (the task's keep: views from config.view_classifier.trusted_sources;
splits are by patient), then accuracy, balanced accuracy, per-view recall, the confusion
matrix, expected calibration error and coverage / accuracy at the confidence threshold. The
trainer holds an `Evaluator`; the report is view_report.py's. `make_predict_fn` is also what
tools/label_views.py labels with.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import embeddings as emb_lib
from echovlm_jax.evaluation import metrics
from echovlm_jax.evaluation import registry
from echovlm_jax.evaluation import split_evaluator
from echovlm_jax.models import vit_classifier

EVAL_TYPES = ("view_classification",)
ECE_BINS = 15


def check_evals_config(evals_config: Mapping[str, Any]) -> None:
  """registry.check_evals_config with the classifier's only type (a contrastive evaluator in
  a classifier config fails at start)."""
  registry.check_evals_config(evals_config, EVAL_TYPES)


def make_predict_fn(model: nnx.Module) -> Callable[[jax.Array], jax.Array]:
  """frames [B, T, H, W, C] (a global array on the mesh) -> probabilities [B, NUM_CLASSES] of a
  ViewClassifier, jitted once per architecture (keyed on the graphdef)."""
  graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
  return lambda frames: _probs(graphdef, state, frames)


@jax.jit(static_argnums=0)
def _probs(graphdef, state, frames):
  return jax.nn.softmax(nnx.merge(graphdef, state)(frames), axis=-1)


def predict_split(model, input_config, split: str, batch_size: int, mesh: jax.sharding.Mesh,
                  keep) -> dict[str, np.ndarray]:
  """probs [N, V] float32 and y [N] (KNOWN_VIEWS positions) of the examples `keep` keeps."""
  from echovlm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  predict = make_predict_fn(model)
  to_known = vit_classifier.known_index()
  probs, ys = [], []
  for batch in input_pipeline.make_eval_iterator(input_config, split, batch_size, mesh, keep=keep):
    valid = emb_lib.to_host(batch["valid"]) > 0
    probs.append(emb_lib.to_host(predict(batch["frames"]))[valid])
    ys.append(to_known[emb_lib.to_host(batch["view"])[valid]])
  v = vit_classifier.NUM_CLASSES
  return dict(probs=np.concatenate(probs).astype(np.float32) if probs else np.zeros((0, v), np.float32),
              y=np.concatenate(ys).astype(np.int64) if ys else np.zeros((0,), np.int64))


def calibration(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
  """Expected calibration error of the top-class confidence [N] against correct [N] (bool):
  sum over equal-width bins of (share of images) x |accuracy - mean confidence|; NaN when
  N = 0. Also the per-bin table (lower edge, count, accuracy, confidence) for the plot.
  Not sklearn.calibration.calibration_curve: it puts a confidence on an inner edge into the
  lower bin (np.digitize here: the upper), drops empty bins and returns no counts."""
  edges = np.linspace(0.0, 1.0, bins + 1)
  idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
  table, ece = [], 0.0
  for b in range(bins):
    sel = idx == b
    n = int(sel.sum())
    acc = float(correct[sel].mean()) if n else float("nan")
    mean_conf = float(conf[sel].mean()) if n else float("nan")
    if n:
      ece += n / len(conf) * abs(acc - mean_conf)
    table.append(dict(lo=float(edges[b]), n=n, accuracy=acc, confidence=mean_conf))
  return dict(ece=ece if len(conf) else float("nan"), bins=table)


def coverage_at(conf: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float]:
  """(share of images with confidence >= threshold, accuracy on them); NaN where undefined."""
  sel = conf >= threshold
  coverage = float(sel.mean()) if len(conf) else float("nan")
  return coverage, float(correct[sel].mean()) if sel.any() else float("nan")


def classification_metrics(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
  """probs [N, V] (KNOWN_VIEWS order), y [N] -> scalars and the report's details: accuracy,
  balanced_accuracy, ece, coverage / accuracy_at_threshold, per_view_recall, confusion [V, V]
  (rows true), calibration bins, and the coverage-accuracy curve over thresholds."""
  pred = probs.argmax(axis=1) if len(probs) else np.zeros((0,), np.int64)
  conf = probs.max(axis=1) if len(probs) else np.zeros((0,), np.float32)
  correct = pred == y
  cm = metrics.confusion_matrix(y, pred, vit_classifier.NUM_CLASSES)
  recall = metrics.per_class_recall(cm)
  cal = calibration(conf, correct)
  coverage, acc_at = coverage_at(conf, correct, threshold)
  grid = np.round(np.linspace(0.0, 0.99, 100), 2)
  curve = [(float(t), *coverage_at(conf, correct, t)) for t in grid]
  return dict(accuracy=metrics.accuracy(y, pred), balanced_accuracy=metrics.balanced_accuracy(y, pred),
              ece=cal["ece"], threshold=float(threshold), coverage=coverage,
              accuracy_at_threshold=acc_at, n=int(len(y)), confusion=cm,
              view_names=list(schema.KNOWN_VIEWS),
              per_view_recall={v: float(r) for v, r in zip(schema.KNOWN_VIEWS, recall)},
              calibration=cal["bins"], coverage_curve=curve)


class Evaluator(split_evaluator.SplitEvaluator):
  """What the trainer holds for config.task = "view_classifier" (the contrastive run's
  registry.Evaluator has the same three methods)."""
  EVAL_TYPES = EVAL_TYPES

  def score(self, model, cfg):
    out = predict_split(model, self.input_config, cfg["split"], self.batch_size, self.mesh,
                        self.keep)
    res = classification_metrics(out["probs"], out["y"],
                                 float(self.config.view_classifier.confidence_threshold))
    scalars = {k: res[k] for k in ("accuracy", "balanced_accuracy", "ece", "coverage",
                                   "accuracy_at_threshold")}
    scalars.update({f"recall/{v}": r for v, r in res["per_view_recall"].items()})
    return scalars, res

  def write_report(self, workdir: str, metrics_history: list[dict]) -> str | None:
    """report.md + metrics.json + plots of the latest results; None when none ran."""
    if not self.details:
      return None
    from echovlm_jax.evaluation import view_report  # pylint: disable=g-import-not-at-top
    return view_report.write_report(workdir, self.details, metrics_history)
