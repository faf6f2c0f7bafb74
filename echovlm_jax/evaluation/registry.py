"""Evaluators listed in config.evals (big_vision style) and the loop that runs the due ones.

config.evals is a ConfigDict name -> {type, split, every (<= 0: last step only), and for a
mixture of builds (config.input.data) the `source` whose split it scores}; probes
and study_pooling (fitted on a split's embeddings) also take train_split (default "train") and train_max_batches (0 or absent: all). One
embedding pass per split (and one prompt encoding) per step is shared by every evaluator
that needs it; `Evaluator` is what the trainer holds, `run_evals` the functional core.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from echovlm_jax.evaluation import embeddings as emb_lib
from echovlm_jax.evaluation import probes
from echovlm_jax.evaluation import report  # matplotlib is imported only when a plot is drawn
from echovlm_jax.evaluation import retrieval
from echovlm_jax.evaluation import study_pooling
from echovlm_jax.evaluation import zero_shot

# Metric keys use a short split name: "validation" -> "val/zero_shot_views/accuracy".
SPLIT_PREFIX = {"validation": "val", "train": "train", "test": "test"}
DEFAULT_BATCH_SIZE = 64

MakeIterator = Callable[[Any, str, int, jax.sharding.Mesh], Iterable[Mapping]]


class _Context:
  """Lazily computed, cached inputs of the evaluators at one step."""

  def __init__(self, model, step, mesh, input_config, tokenizer, cache, batch_size,
               make_iterator, meas_std):
    self.model, self.step, self.mesh = model, step, mesh
    self.input_config, self.tokenizer = input_config, tokenizer
    self.cache, self.batch_size = cache, batch_size
    self.make_iterator, self.meas_std = make_iterator, meas_std

  def embeddings(self, split: str, max_batches: int | None = None, source: str | None = None
                 ) -> dict[str, np.ndarray]:
    key = ("embeddings", split, max_batches, source, self.step)
    if key not in self.cache:
      it = self.make_iterator(self.input_config, split, self.batch_size, self.mesh,
                              **({"source": source} if source else {}))
      self.cache[key] = emb_lib.compute_embeddings(self.model, it, self.mesh,
                                                   max_batches=max_batches)
      logging.info("Embedded %d examples of split %r at step %s.",
                   len(self.cache[key]["view"]), split, self.step)
    return self.cache[key]

  def prompts(self) -> dict[str, np.ndarray]:
    key = ("prompts", self.step)
    if key not in self.cache:
      self.cache[key] = emb_lib.prompt_embeddings(self.model, self.tokenizer,
                                                  int(self.input_config.max_text_len))
    return self.cache[key]


# Each evaluator: (entry config, context) -> (scalars, details for the report).

def _emb(cfg, ctx: _Context, split: str | None = None, max_batches: int | None = None):
  """The embeddings of the entry's split (or `split`) of the entry's source."""
  return ctx.embeddings(split or cfg["split"], max_batches, cfg.get("source") or None)


def _zero_shot_views(cfg, ctx: _Context):
  res = zero_shot.zero_shot_views(_emb(cfg, ctx), ctx.prompts()["views"])
  scalars = {k: res[k] for k in ("accuracy", "balanced_accuracy")}
  scalars.update({f"recall/{v}": r for v, r in res["per_view_recall"].items()})
  return scalars, res


def _zero_shot_findings(cfg, ctx: _Context):
  p = ctx.prompts()
  res = zero_shot.zero_shot_findings(_emb(cfg, ctx), p["label_pos"], p["label_neg"])
  scalars = {"macro_auc": res["macro_auc"], "study_macro_auc": res["study_macro_auc"]}
  for label, r in res["per_label"].items():
    scalars[f"auc/{label}"] = r["auc"]
    scalars[f"study_auc/{label}"] = r["study_auc"]
  return scalars, res


def _retrieval(cfg, ctx: _Context):
  res = retrieval.retrieval(_emb(cfg, ctx))
  return {k: v for k, v in res.items() if k not in ("n", "n_captions")}, res


def _negation(cfg, ctx: _Context):
  res = retrieval.negation(_emb(cfg, ctx))
  return {"sensitivity": res["sensitivity"], "mean_margin": res["mean_margin"]}, res


def _probes(cfg, ctx: _Context):
  # Both keys are declared in configs/echovlm.py; entries written by hand may leave them out.
  train = _emb(cfg, ctx, cfg.get("train_split", "train"),
               int(cfg.get("train_max_batches", 0)) or None)
  test = _emb(cfg, ctx)
  res = dict(views=probes.view_probe(train, test), labels=probes.label_probes(train, test),
             measurements=probes.measurement_probes(train, test, ctx.meas_std))
  scalars = {"view_accuracy": res["views"]["accuracy"],
             "view_balanced_accuracy": res["views"]["balanced_accuracy"]}
  aucs = [r["auc"] for r in res["labels"].values()]
  defined = [a for a in aucs if a == a]
  scalars["label_macro_auc"] = float(np.mean(defined)) if defined else float("nan")
  scalars.update({f"label_auc/{l}": r["auc"] for l, r in res["labels"].items()})
  scalars.update({f"mae/{m}": r["mae"] for m, r in res["measurements"].items()})
  return scalars, res


def _study_pooling(cfg, ctx: _Context):
  train = _emb(cfg, ctx, cfg.get("train_split", "train"),
               int(cfg.get("train_max_batches", 0)) or None)
  p = ctx.prompts()
  params = study_pooling.fit(train, p["views"], p["label_pos"], p["label_neg"])
  res = study_pooling.evaluate(_emb(cfg, ctx), params, p["views"], p["label_pos"],
                               p["label_neg"])
  res["params"] = params    # written beside the report: what export copies into an artifact
  scalars = {f"{pool}/{k}": res[pool][k] for pool in ("mean", "attention")
             for k in ("macro_auc", "i2t_r1", "i2t_r5", "t2i_r1")}
  return scalars, res


EVALUATORS: dict[str, Callable] = {
    "zero_shot_views": _zero_shot_views,
    "zero_shot_findings": _zero_shot_findings,
    "retrieval": _retrieval,
    "negation": _negation,
    "probes": _probes,
    "study_pooling": _study_pooling,
}


def check_evals_config(evals_config: Mapping[str, Any],
                       types: Iterable[str] = tuple(EVALUATORS)) -> None:
  """Fails loudly on a type not in `types` (default: this registry's), an entry without a
  split, or two entries that would write the same metric keys."""
  seen, types = {}, tuple(types)
  for name, cfg in evals_config.items():
    if cfg.get("type") not in types:
      raise ValueError(f"config.evals.{name}.type={cfg.get('type')!r}: expected one of "
                       f"{', '.join(types)}.")
    if "split" not in cfg:
      raise ValueError(f"config.evals.{name}: needs a split (e.g. 'validation' or 'test').")
    key = (cfg["split"], cfg["type"], cfg.get("source") or "")
    if key in seen:
      raise ValueError(f"config.evals.{name} and config.evals.{seen[key]} both run {key[1]!r} on "
                       f"split {key[0]!r}{f' of {key[2]}' if key[2] else ''}: their metrics "
                       "would collide; drop one.")
    seen[key] = name


def check_eval_sources(evals_config: Mapping[str, Any], input_config) -> None:
  """Each entry's `source` names an entry of config.input.data (and only a mixture has any)."""
  from echovlm_jax.data import mixture  # pylint: disable=g-import-not-at-top
  names = list(mixture.entries(input_config))
  for name, cfg in evals_config.items():
    src = cfg.get("source") or ""
    if src and src not in names:
      raise ValueError(f"config.evals.{name}.source={src!r}: "
                       + (f"config.input.data has {names}." if names else
                          "config.input.data is empty (one build): leave source out."))


def is_due(cfg: Mapping[str, Any], step: int, last_step: bool = False) -> bool:
  """every > 0: at multiples of every; every <= 0 (or absent): only at the last step."""
  every = int(cfg.get("every", 0) or 0)
  return last_step or (every > 0 and step % every == 0)


def log_metrics(step: int, flat: Mapping[str, float]) -> None:
  """One log line per defined metric of an evaluation step (NaN: not defined, not logged)."""
  for k, v in sorted(flat.items()):
    if not math.isnan(v):
      logging.info("step %d  %s = %.4f", step, k, v)


def metric_prefix(cfg: Mapping[str, Any]) -> str:
  """"<split>/<type>", or "<split>/<source>/<type>" for an entry scoring a mixture's source."""
  split = SPLIT_PREFIX.get(cfg["split"], cfg["split"])
  src = cfg.get("source") or ""
  return f"{split}/{src}/{cfg['type']}" if src else f"{split}/{cfg['type']}"


def _default_make_iterator(input_config, split, batch_size, mesh, source=None):
  from echovlm_jax.data import input_pipeline
  return input_pipeline.make_eval_iterator(input_config, split, batch_size, mesh, source=source)


def run_evals_with_details(evals_config: Mapping[str, Any], model: nnx.Module, step: int,
                           mesh: jax.sharding.Mesh, input_config, tokenizer,
                           splits_cache: dict | None = None, *, last_step: bool = False,
                           batch_size: int = DEFAULT_BATCH_SIZE,
                           make_iterator: MakeIterator | None = None,
                           meas_std: np.ndarray | None = None
                           ) -> tuple[dict[str, float], dict[str, dict]]:
  """Runs the evaluators due at `step`; returns (flat metrics, details per entry name).

  Flat keys are "<split>/<type>/<metric>" ("val/zero_shot_views/accuracy").
  details[name] = dict(type, split, step, metrics (the entry's flat metrics),
  **structured results) for the report. `splits_cache` (a dict) lets several
  calls at the same step share the embedding pass; entries of other steps are
  dropped. `meas_std` [M] converts probe errors back to measurement units.
  """
  check_evals_config(evals_config)
  cache = {} if splits_cache is None else splits_cache
  for key in [k for k in cache if k[-1] != step]:
    del cache[key]
  ctx = _Context(model, step, mesh, input_config, tokenizer, cache, batch_size,
                 make_iterator or _default_make_iterator, meas_std)
  flat, details = {}, {}
  for name, cfg in evals_config.items():
    if not is_due(cfg, step, last_step):
      continue
    scalars, res = EVALUATORS[cfg["type"]](cfg, ctx)
    prefix = metric_prefix(cfg)
    entry = {f"{prefix}/{k}": float(v) for k, v in scalars.items()}
    flat.update(entry)
    details[name] = dict(type=cfg["type"], split=cfg["split"], step=int(step), metrics=entry,
                         source=cfg.get("source") or "", **res)
  return flat, details


def run_evals(evals_config: Mapping[str, Any], model: nnx.Module, step: int,
              mesh: jax.sharding.Mesh, input_config, tokenizer,
              splits_cache: dict | None = None, **kwargs) -> dict[str, float]:
  """Flat metrics of the evaluators due at `step` (see `run_evals_with_details`)."""
  return run_evals_with_details(evals_config, model, step, mesh, input_config, tokenizer,
                                splits_cache, **kwargs)[0]


def eval_batch_size(config) -> int:
  """config.eval_batch_size, where 0 means the training batch size."""
  return int(config.eval_batch_size) or int(config.batch_size)


def _load_meas_std(input_config) -> np.ndarray | None:
  """Train-split stds [M] stored beside the dataset, or None (probe MAE then stays in z units)."""
  try:
    from echovlm_jax.data import input_pipeline
    _, std = input_pipeline.load_measurement_stats(input_config)
  except Exception as e:  # pylint: disable=broad-except
    # A missing stats file must not stop training; the report then says "standard deviations".
    logging.warning("No measurement stats (%s): probe MAE is reported in z units.", e)
    return None
  return np.asarray(std, np.float64)


class Evaluator:
  """What the trainer holds: runs due evals, keeps the latest details for the report.

    evaluator = Evaluator(config, mesh, tokenizer)
    metrics = evaluator.maybe_run(model, step, last_step=...)   # {} when nothing is due
    path = evaluator.write_report(workdir, metrics_history)
  """

  def __init__(self, config, mesh: jax.sharding.Mesh, tokenizer, *,
               make_iterator: MakeIterator | None = None, meas_std: np.ndarray | None = None):
    check_evals_config(config.evals)
    self.evals_config = config.evals
    self.input_config = config.input
    self.batch_size = eval_batch_size(config)
    self.targets = report.config_targets(config)
    self.mesh, self.tokenizer = mesh, tokenizer
    self.make_iterator = make_iterator
    self.meas_std = meas_std if meas_std is not None else _load_meas_std(config.input)
    self.cache: dict = {}
    self.details: dict[str, dict] = {}

  def due(self, step: int, last_step: bool = False) -> bool:
    """Whether any evaluator runs at `step` (cheap: the trainer asks every step)."""
    return any(is_due(cfg, step, last_step) for cfg in self.evals_config.values())

  def maybe_run(self, model: nnx.Module, step: int, last_step: bool = False) -> dict[str, float]:
    flat, details = run_evals_with_details(
        self.evals_config, model, step, self.mesh, self.input_config, self.tokenizer,
        self.cache, last_step=last_step, batch_size=self.batch_size,
        make_iterator=self.make_iterator, meas_std=self.meas_std)
    self.details.update(details)
    log_metrics(step, flat)
    return flat

  def write_report(self, workdir: str, metrics_history: list[dict]) -> str | None:
    """Writes report.md + metrics.json + plots from the latest results; None when none ran."""
    if not self.details:
      return None
    return report.write_report(workdir, self.details, metrics_history, targets=self.targets)
