"""The segmentation evaluators (config.task = "segmentation"): one pass over a held-out split's
B-mode frames with ground truth, the argmax label image against the truth, per structure at
end-diastole and end-systole: Dice, HD95 and mean surface distance in mm
(segmentation_metrics.py); and per study, LVEF from the ED and ES LV cavities of A4C and A2C
by the method of discs (simpson.py), against the true masks' and the reported value. The trainer holds an `Evaluator`; the report is
segmentation_report.py's, with example overlays.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import embeddings as emb_lib
from echovlm_jax.evaluation import registry
from echovlm_jax.evaluation import segmentation_metrics
from echovlm_jax.evaluation import simpson
from echovlm_jax.evaluation import split_evaluator

EVAL_TYPES = ("segmentation",)
# Structures with surface distances in the report (the LV's and LA's, as CAMUS reports them).
DISTANCE_STRUCTURES = ("lv_cavity", "lv_myocardium", "left_atrium")
PHASE_TOLERANCE = 0.05   # cycles: a frame this close to ED_PHASE / ES_PHASE counts as ED / ES
NUM_OVERLAYS = 6
SIMPSON_VIEWS = ("a4c", "a2c")
CAVITY = schema.STRUCTURES.index("lv_cavity")


def check_evals_config(evals_config: Mapping[str, Any]) -> None:
  registry.check_evals_config(evals_config, EVAL_TYPES)


def phase_name(phase: float) -> str:
  """"ed", "es" or "other" for a frame's phase in cycles (NaN: other)."""
  for name, at in (("ed", schema.ED_PHASE), ("es", schema.ES_PHASE)):
    d = abs((phase - at + 0.5) % 1.0 - 0.5)
    if d <= PHASE_TOLERANCE:
      return name
  return "other"


def make_predict_fn(model: nnx.Module) -> Callable[[jax.Array], jax.Array]:
  """frames [B, T, H, W, C] -> label image int32 [B, T, H, W] (argmax of the logits), jitted
  once per architecture."""
  graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
  return lambda frames: _labels(graphdef, state, frames)


@jax.jit(static_argnums=0)
def _labels(graphdef, state, frames):
  return jnp.argmax(nnx.merge(graphdef, state)(frames), axis=-1).astype(jnp.int32)


def score_split(model, input_config, split: str, batch_size: int, mesh: jax.sharding.Mesh,
                keep) -> dict[str, Any]:
  """Per (structure, phase): Dice / HD95 / MSD lists over the frames whose truth shows the
  structure; a few (frame, truth, prediction, view) examples at ED for the overlays."""
  from echovlm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  predict = make_predict_fn(model)
  scores: dict[tuple[str, str, str], list[float]] = collections.defaultdict(list)
  overlays, frames_scored = [], 0
  # study -> view -> phase -> (predicted, true) LV cavity masks; study -> (spacing by view, lvef)
  cavities: dict[int, dict] = collections.defaultdict(lambda: collections.defaultdict(dict))
  study_info: dict[int, dict] = collections.defaultdict(dict)
  for batch in input_pipeline.make_eval_iterator(input_config, split, batch_size, mesh, keep=keep,
                                                 kind="dense"):
    valid = emb_lib.to_host(batch["valid"]) > 0
    pred = emb_lib.to_host(predict(batch["frames"]))[valid]
    truth = emb_lib.to_host(batch["masks"])[valid]
    phases = emb_lib.to_host(batch["phases"])[valid]
    spacing = emb_lib.to_host(batch["pixel_spacing_mm"])[valid]
    views = emb_lib.to_host(batch["view"])[valid]
    studies = emb_lib.to_host(batch["study_id"])[valid]
    lvef = emb_lib.to_host(batch["lvef"])[valid]
    frames = emb_lib.to_host(batch["frames"])[valid] if len(overlays) < NUM_OVERLAYS else None
    for i in range(pred.shape[0]):
      for t in range(pred.shape[1]):
        phase = phase_name(float(phases[i, t]))
        frames_scored += 1
        for k, name in enumerate(schema.STRUCTURES[1:], start=1):
          tm = truth[i, t] == k
          if not tm.any():
            continue
          pm = pred[i, t] == k
          scores[("dice", name, phase)].append(segmentation_metrics.dice(pm, tm))
          # A release without a pixel spacing (EchoNet-Dynamic) has no distances in mm.
          if name in DISTANCE_STRUCTURES and np.isfinite(spacing[i]):
            hd95, msd = segmentation_metrics.surface_distances(pm, tm, float(spacing[i]))
            scores[("hd95", name, phase)].append(hd95)
            scores[("msd", name, phase)].append(msd)
        view = schema.VIEWS[int(views[i])]
        if view in SIMPSON_VIEWS and phase in ("ed", "es"):
          sid = int(studies[i])
          cavities[sid][view][phase] = (pred[i, t] == CAVITY, truth[i, t] == CAVITY)
          study_info[sid].update({view: float(spacing[i]), "lvef": float(lvef[i])})
        if frames is not None and t == 0 and len(overlays) < NUM_OVERLAYS and truth[i, t].any():
          overlays.append(dict(frame=frames[i, t, ..., 0], truth=truth[i, t], pred=pred[i, t],
                               view=schema.VIEWS[int(views[i])]))
  return dict(scores=dict(scores), overlays=overlays, frames=frames_scored,
              lvef=lvef_by_study(cavities, study_info))


def lvef_by_study(cavities: Mapping[int, Mapping], info: Mapping[int, Mapping]) -> list[dict]:
  """Per study with an A4C at ED and ES: LVEF (%) by the method of discs (simpson.py; biplane
  with an A2C pair, else A4C monoplane) from the predicted and the true cavity masks, and the
  study's reported LVEF."""
  out = []
  for sid, views in sorted(cavities.items()):
    a4c, a2c = views.get("a4c", {}), views.get("a2c", {})
    if set(a4c) != {"ed", "es"}:
      continue
    biplane = set(a2c) == {"ed", "es"}
    row = dict(study=sid, biplane=biplane, reported=info[sid]["lvef"])
    # Without a pixel spacing (EchoNet-Dynamic) the volumes are in pixel units: their ratio,
    # the ejection fraction, is the same (a monoplane A4C; both views share the unit).
    spacing = {v: s if np.isfinite(s) else 1.0
               for v, s in ((v, info[sid].get(v, 0.0)) for v in SIMPSON_VIEWS)}
    for which, k in (("predicted", 0), ("true_masks", 1)):
      vol = {p: simpson.volume_ml(a4c[p][k], spacing["a4c"],
                                  a2c[p][k] if biplane else None, spacing["a2c"])
             for p in ("ed", "es")}
      row[which] = simpson.ejection_fraction(vol["ed"], vol["es"])
    out.append(row)
  return out


def summarise_lvef(rows: list[dict]) -> dict[str, float]:
  """MAE (points) of the predicted masks' LVEF against the true masks' and against the
  reported value, and how many studies were biplane / monoplane."""
  def mae(a, b):
    d = np.array([r[a] - r[b] for r in rows], np.float64)
    d = d[np.isfinite(d)]
    return float(np.abs(d).mean()) if d.size else float("nan")
  return {"lvef/mae_vs_true_masks": mae("predicted", "true_masks"),
          "lvef/mae_vs_reported": mae("predicted", "reported"),
          "lvef/true_masks_mae_vs_reported": mae("true_masks", "reported"),
          "lvef/studies_biplane": float(sum(r["biplane"] for r in rows)),
          "lvef/studies_monoplane": float(sum(not r["biplane"] for r in rows))}


def summarise(scores: Mapping[tuple[str, str, str], list[float]]) -> dict[str, float]:
  """metric/structure/phase -> mean over frames (NaNs: a structure predicted nowhere has no
  surface distance and is counted in `missing/...` instead); dice/mean: the mean Dice of the
  LV cavity, myocardium and LA at ED and ES."""
  out: dict[str, float] = {}
  for (metric, name, phase), values in sorted(scores.items()):
    v = np.asarray(values, np.float64)
    out[f"{metric}/{name}/{phase}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    if metric == "hd95":
      out[f"missing/{name}/{phase}"] = float(np.isnan(v).mean())
  main = [out[k] for k in (f"dice/{n}/{p}" for n in DISTANCE_STRUCTURES for p in ("ed", "es"))
          if k in out]
  out["dice/mean"] = float(np.mean(main)) if main else float("nan")
  return out


class Evaluator(split_evaluator.SplitEvaluator):
  """What the trainer holds for config.task = "segmentation"."""
  EVAL_TYPES = EVAL_TYPES

  def score(self, model, cfg):
    out = score_split(model, self.input_config, cfg["split"], self.batch_size, self.mesh, self.keep)
    return ({**summarise(out["scores"]), **summarise_lvef(out["lvef"])},
            dict(frames=out["frames"], overlays=out["overlays"], lvef=out["lvef"]))

  def write_report(self, workdir: str, metrics_history: list[dict]) -> str | None:
    """report.md, metrics.json and the overlays of the latest results; None when none ran."""
    del metrics_history  # the tables are the latest results; the curves are in metrics.jsonl
    if not self.details:
      return None
    from echovlm_jax.evaluation import segmentation_report  # pylint: disable=g-import-not-at-top
    return segmentation_report.write_report(workdir, self.details)
