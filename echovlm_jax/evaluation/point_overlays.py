"""The landmark report's pictures: each example frame beside itself with the true points
(green) and the predicted ones (red), the pair joined by a line, enlarged for reading."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SCALE = 3            # the model's frames are small: each pixel drawn 3 x 3
TRUE, PREDICTED, LINK = (40, 210, 60), (235, 45, 45), (250, 220, 60)


def _gray(frame: np.ndarray) -> Image.Image:
  """frame float [H, W] in [-1, 1] -> an RGB image SCALE times larger."""
  g = ((frame + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
  img = Image.fromarray(g).convert("RGB")
  return img.resize((g.shape[1] * SCALE, g.shape[0] * SCALE), Image.NEAREST)


def _xy(point: np.ndarray) -> tuple[float, float]:
  """(row, col) in pixel-index units -> the enlarged image's (x, y) at the pixel's centre."""
  return ((point[1] + 0.5) * SCALE, (point[0] + 0.5) * SCALE)


def draw(frame: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> Image.Image:
  """frame [H, W]; truth, pred [K, 2] (row, col; NaN truth: a point the view lacks, not drawn)
  -> the frame, and the frame with each shown point's truth, prediction and their link."""
  plain, marked = _gray(frame), _gray(frame)
  d = ImageDraw.Draw(marked)
  r = SCALE
  for t, p in zip(truth, pred):
    if not np.isfinite(t).all():
      continue
    (tx, ty), (px, py) = _xy(t), _xy(p)
    d.line([(tx, ty), (px, py)], fill=LINK, width=1)
    d.ellipse([tx - r, ty - r, tx + r, ty + r], outline=TRUE, width=2)
    d.line([(px - r, py - r), (px + r, py + r)], fill=PREDICTED, width=2)
    d.line([(px - r, py + r), (px + r, py - r)], fill=PREDICTED, width=2)
  out = Image.new("RGB", (plain.width * 2, plain.height))
  out.paste(plain, (0, 0))
  out.paste(marked, (plain.width, 0))
  return out


def save(examples: list[dict], path: str) -> str:
  """Rows of draw(frame, truth, pred) for examples (dicts with those keys) -> one PNG."""
  rows = [draw(ex["frame"], ex["truth"], ex["pred"]) for ex in examples]
  out = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)))
  y = 0
  for row in rows:
    out.paste(row, (0, y))
    y += row.height
  out.save(path)
  return path
