"""The landmark evaluators (config.task = "landmarks"): one pass over a held-out split's frames
with ground truth; per point (schema.LANDMARKS) and phase, the error of the soft-argmax
prediction in pixels and mm; and the clinical quantities the points measure: PLAX's IVSd,
LVIDd and LVPWd at end-diastole and LVIDs at end-systole in mm, against the true points'.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import embeddings as emb_lib
from echovlm_jax.evaluation import point_overlays
from echovlm_jax.evaluation import registry
from echovlm_jax.evaluation import segmentation
from echovlm_jax.evaluation import split_evaluator
from echovlm_jax.models import dense

EVAL_TYPES = ("landmarks",)
NUM_OVERLAYS = 4
# PLAX calipers: (measurement, its two points), EchoNet-LVH's segments.
# PLAX calipers: (measurement, its two points, phase), EchoNet-LVH's segments (LVIDs: the
# internal diameter at end-systole).
CALIPERS = (("ivsd", "ivs_anterior", "lv_septal_endocardium", "ed"),
            ("lvidd", "lv_septal_endocardium", "lv_posterior_endocardium", "ed"),
            ("lvpwd", "lv_posterior_endocardium", "lvpw_epicardium", "ed"),
            ("lvids", "lv_septal_endocardium", "lv_posterior_endocardium", "es"))


def check_evals_config(evals_config: Mapping[str, Any]) -> None:
  registry.check_evals_config(evals_config, EVAL_TYPES)


def make_predict_fn(model: nnx.Module) -> Callable[[jax.Array], jax.Array]:
  """frames [B, T, H, W, C] -> points [B, T, K, 2] (row, col px), jitted once per architecture."""
  graphdef, state = nnx.split(nnx.view(model, deterministic=True, raise_if_not_found=False))
  return lambda frames: _points(graphdef, state, frames)


@jax.jit(static_argnums=0)
def _points(graphdef, state, frames):
  return dense.points_of(nnx.merge(graphdef, state)(frames))


def score_split(model, input_config, split: str, batch_size: int, mesh, keep) -> dict[str, Any]:
  """Per (point, phase) errors in px and mm; per PLAX frame at ED the caliper lengths (mm)
  from the predicted and the true points."""
  from echovlm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  predict = make_predict_fn(model)
  errors: dict[tuple[str, str, str], list[float]] = collections.defaultdict(list)
  calipers: list[dict] = []
  overlays: list[dict] = []   # the first frames at ED of each view shown, for the report
  idx = {n: i for i, n in enumerate(schema.LANDMARKS)}
  for batch in input_pipeline.make_eval_iterator(input_config, split, batch_size, mesh, keep=keep,
                                                 kind="dense"):
    valid = emb_lib.to_host(batch["valid"]) > 0
    pred = emb_lib.to_host(predict(batch["frames"]))[valid]
    truth = emb_lib.to_host(batch["landmarks"])[valid]
    phases = emb_lib.to_host(batch["phases"])[valid]
    spacing = emb_lib.to_host(batch["pixel_spacing_mm"])[valid]
    views = emb_lib.to_host(batch["view"])[valid]
    res = batch["frames"].shape[2]
    frames = emb_lib.to_host(batch["frames"])[valid] if len(overlays) < NUM_OVERLAYS else None
    for i in range(pred.shape[0]):
      for t in range(pred.shape[1]):
        phase = segmentation.phase_name(float(phases[i, t]))
        for name, k in idx.items():
          p, q = pred[i, t, k], truth[i, t, k]
          if not np.isfinite(q).all() or not ((q >= 0) & (q <= res - 1)).all():
            continue
          d = float(np.hypot(*(p - q)))
          errors[("error_px", name, phase)].append(d)
          errors[("error_mm", name, phase)].append(d * float(spacing[i]))
        view = schema.VIEWS[int(views[i])]
        if (frames is not None and phase == "ed" and len(overlays) < NUM_OVERLAYS
            and np.isfinite(truth[i, t]).all(-1).any() and view not in {o["view"] for o in overlays}):
          overlays.append(dict(frame=frames[i, t, ..., 0], truth=truth[i, t], pred=pred[i, t],
                               view=view))
        if view == "plax" and phase in ("ed", "es"):
          row = {"phase": phase}
          for meas, a, b, _ in (c for c in CALIPERS if c[3] == phase):
            for which, pts in (("predicted", pred), ("true", truth)):
              pa, pb = pts[i, t, idx[a]], pts[i, t, idx[b]]
              row[f"{meas}/{which}"] = float(np.hypot(*(pa - pb))) * float(spacing[i])
          calipers.append(row)
  return dict(errors=dict(errors), calipers=calipers, overlays=overlays)


def summarise(out: Mapping[str, Any]) -> dict[str, float]:
  """error_px|error_mm/<point>/<phase> means; <meas>/mae_mm of the predicted calipers against
  the true points' (NaN-free rows only)."""
  res = {f"{m}/{n}/{p}": float(np.mean(v)) for (m, n, p), v in sorted(out["errors"].items())}
  for meas, *_ in CALIPERS:
    d = np.array([r[f"{meas}/predicted"] - r[f"{meas}/true"] for r in out["calipers"]
                  if f"{meas}/true" in r])
    d = d[np.isfinite(d)]
    res[f"{meas}/mae_mm"] = float(np.abs(d).mean()) if d.size else float("nan")
  mm = [v for k, v in res.items() if k.startswith("error_mm/")]
  res["error_mm/mean"] = float(np.mean(mm)) if mm else float("nan")
  return res


class Evaluator(split_evaluator.SplitEvaluator):
  """What the trainer holds for config.task = "landmarks"."""
  EVAL_TYPES = EVAL_TYPES

  def score(self, model, cfg):
    out = score_split(model, self.input_config, cfg["split"], self.batch_size, self.mesh, self.keep)
    return summarise(out), dict(plax_frames=sum(r["phase"] == "ed" for r in out["calipers"]),
                                overlays=out["overlays"])

  def write_report(self, workdir: str, metrics_history: list[dict]) -> str | None:
    """report.md and metrics.json: the point errors and calipers per split."""
    del metrics_history
    if not self.details:
      return None
    fmt = lambda x: "n/a" if x is None or not np.isfinite(x) else f"{x:.2f}"  # noqa: E731
    md = ["# Landmark report", "", f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
          "", "> **Not a medical device.** A research model.", "",
          "Soft-argmax points against the renderer's, over the points a frame shows inside it.", ""]
    for r in sorted(self.details.values(), key=lambda r: r["split"] != "test"):
      prefix = f"{registry.SPLIT_PREFIX.get(r['split'], r['split'])}/landmarks"
      m = r["metrics"]
      md += [f"## {r['split']} (step {r['step']})", "",
             "| point | error ED (px) | error ED (mm) | error ES (px) | error ES (mm) |",
             "|---|---|---|---|---|"]
      for n in schema.LANDMARKS:
        cells = [m.get(f"{prefix}/{u}/{n}/{p}") for p in ("ed", "es") for u in ("error_px", "error_mm")]
        if any(c is not None for c in cells):
          md.append(f"| {n} | " + " | ".join(fmt(c) for c in cells) + " |")
      md += ["", f"PLAX at end-diastole ({r['plax_frames']} frames; LVIDs at end-systole): MAE "
             "of the predicted calipers against the true points' (mm): " + ", ".join(
                 f"{meas.upper()} {fmt(m.get(f'{prefix}/{meas}/mae_mm'))}" for meas, *_ in CALIPERS), ""]
      if r.get("overlays"):
        os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
        png = point_overlays.save(r["overlays"],
                                  os.path.join(workdir, "report", f"points_{r['split']}.png"))
        md += [f"Frame, and truth (green circles) against prediction (red crosses) at ED "
               f"({', '.join(o['view'] for o in r['overlays'])}):", "",
               f"![points]({os.path.relpath(png, workdir)})", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
      f.write("\n".join(md) + "\n")
    flat = {k: (v if np.isfinite(v) else None) for r in self.details.values()
            for k, v in r["metrics"].items()}
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
      json.dump({"metrics": flat}, f, indent=1)
    return path
