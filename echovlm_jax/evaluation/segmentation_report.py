"""The segmentation run's report: per-structure tables (Dice at ED and ES, HD95 and mean
surface distance in mm) per split, and overlays of image, truth and prediction."""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Mapping

import numpy as np
from PIL import Image

from echovlm_jax.echo import schema

# One colour per structure (background stays the image): red LV cavity, green myocardium,
# blue LA, yellow RV, magenta RA.
COLOURS = np.array([[0, 0, 0], [230, 40, 40], [40, 200, 60], [50, 90, 240], [240, 220, 40],
                    [220, 60, 220]], np.float32)


def _fmt(x: Any) -> str:
  return "n/a" if x is None or not np.isfinite(x) else f"{float(x):.3f}"


def overlay(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """frame float [H, W] in [-1, 1], labels int [H, W] -> uint8 RGB [H, W, 3]: 40 % colour."""
  g = np.repeat(((frame + 1.0) * 127.5).clip(0, 255)[..., None], 3, -1)
  m = labels > 0
  g[m] = 0.6 * g[m] + 0.4 * COLOURS[labels[m]]
  return g.astype(np.uint8)


def save_overlays(examples: list[dict], path: str) -> str:
  """Rows of (image, truth, prediction) -> one PNG at `path`."""
  rows = []
  for ex in examples:
    image = np.repeat(((ex["frame"] + 1.0) * 127.5).clip(0, 255)[..., None], 3, -1).astype(np.uint8)
    rows.append(np.concatenate([image, overlay(ex["frame"], ex["truth"]),
                                overlay(ex["frame"], ex["pred"])], axis=1))
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  return path


def _table(metrics: Mapping[str, float], prefix: str) -> list[str]:
  md = ["| structure | Dice ED | Dice ES | HD95 ED (mm) | HD95 ES (mm) | MSD ED (mm) | MSD ES (mm) |",
        "|---|---|---|---|---|---|---|"]
  for name in schema.STRUCTURES[1:]:
    cells = [metrics.get(f"{prefix}/{m}/{name}/{p}") for m in ("dice", "hd95", "msd")
             for p in ("ed", "es")]
    if all(c is None for c in cells):
      continue
    md.append(f"| {name} | " + " | ".join(_fmt(c) for c in cells) + " |")
  return md


def write_report(workdir: str, results: Mapping[str, dict]) -> str:
  """workdir/report.md, workdir/metrics.json and workdir/report/overlays_<split>.png; returns
  report.md's path. results: entry name -> Evaluator.details[name]."""
  from echovlm_jax.evaluation import registry  # pylint: disable=g-import-not-at-top
  plot_dir = os.path.join(workdir, "report")
  os.makedirs(plot_dir, exist_ok=True)
  md = ["# Segmentation report", "", f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "", "> **Not a medical device.** A research model.", "",
        "Per structure over the frames whose truth shows it, at end-diastole (ED) and "
        "end-systole (ES): Dice, the 95th-percentile Hausdorff distance and the mean surface "
        "distance in mm (MONAI's definitions; a structure predicted nowhere has no distance "
        "and is counted under `missing/` in metrics.json).", ""]
  for r in sorted(results.values(), key=lambda r: r["split"] != "test"):
    prefix = registry.metric_prefix(r)
    md += [f"## {r['split']} (step {r['step']}, {r['frames']} frames)", "",
           f"Mean Dice (LV cavity, myocardium, LA at ED and ES): "
           f"{_fmt(r['metrics'].get(f'{prefix}/dice/mean'))}", ""]
    md += _table(r["metrics"], prefix) + [""]
    m = r["metrics"]
    md += ["LVEF by the method of discs from the ED / ES LV cavities "
           f"({int(m.get(f'{prefix}/lvef/studies_biplane', 0))} studies biplane A4C + A2C, "
           f"{int(m.get(f'{prefix}/lvef/studies_monoplane', 0))} A4C monoplane): MAE of the "
           f"predicted masks' LVEF against the true masks' {_fmt(m.get(f'{prefix}/lvef/mae_vs_true_masks'))} "
           f"points, against the reported LVEF {_fmt(m.get(f'{prefix}/lvef/mae_vs_reported'))} "
           f"(the true masks' own: {_fmt(m.get(f'{prefix}/lvef/true_masks_mae_vs_reported'))}).", ""]
    if r["overlays"]:
      path = save_overlays(r["overlays"], os.path.join(plot_dir, f"overlays_{r['split']}.png"))
      views = ", ".join(ex["view"] for ex in r["overlays"])
      md += [f"Image, truth, prediction at ED ({views}):", "",
             f"![overlays]({os.path.relpath(path, workdir)})", ""]
  md.append("Colours: " + ", ".join(f"{n} {c}" for n, c in zip(
      schema.STRUCTURES[1:], ("red", "green", "blue", "yellow", "magenta"))) + ".")
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(md) + "\n")
  flat = {k: v for r in results.values() for k, v in r["metrics"].items()}
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump({"metrics": {k: (v if np.isfinite(v) else None) for k, v in flat.items()}}, f, indent=1)
  return path

