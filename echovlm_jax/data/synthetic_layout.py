"""Screen layout of synthetic echo images and what scanners burn in around the data.

Owns where the ultrasound data sits (sector fan, M-mode strip, spectral strip),
the mask of that region, cached pixel grids, and the overlays drawn outside it:
scanner text, the depth scale, the velocity scale and the ECG trace.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from PIL import ImageFont

from echovlm_jax.echo import schema

# Views whose captions state LVEF or TAPSE: with one frame they get an M-mode strip
# under a smaller sector (the scanner's "2D + M-mode" display), see synthetic.py.
MMODE_VIEWS = ("plax", "psax_mid", "a4c", "a2c", "a3c")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Pixel geometry of one display mode at one image size (all in pixels)."""
  size: int
  kind: str                      # "sector", "sector_mmode" or "doppler"
  apex: tuple[float, float]      # (row, col) of the sector apex
  radius: float
  half_angle: float              # radians
  strip: tuple[int, int, int, int] | None   # (r0, r1, c0, c1) of the M-mode / spectral strip
  ecg: tuple[int, int, int, int]            # (r0, r1, c0, c1)


@functools.lru_cache(maxsize=64)
def layout_for(view: str, image_size: int, num_frames: int = 1, half_angle_deg: float = 35.0
               ) -> Layout:
  """The display mode a rendered `view` uses (`view` is the view actually drawn); a B-mode
  sector opens `half_angle_deg` either side of its axis (synthetic_sites: a lab's probe)."""
  s = image_size
  ecg = (int(0.875 * s), int(0.985 * s), int(0.03 * s), int(0.97 * s))
  if schema.VIEW_INFO[view].kind == "doppler":
    return Layout(s, "doppler", (0.02 * s, 0.5 * s), 0.22 * s, math.radians(30),
                  (int(0.30 * s), int(0.845 * s), int(0.03 * s), int(0.82 * s)), ecg)
  if num_frames == 1 and view in MMODE_VIEWS:
    return Layout(s, "sector_mmode", (0.03 * s, 0.5 * s), 0.45 * s, math.radians(half_angle_deg),
                  (int(0.50 * s), int(0.85 * s), int(0.05 * s), int(0.87 * s)), ecg)
  return Layout(s, "sector", (0.07 * s, 0.5 * s), 0.74 * s, math.radians(half_angle_deg), None, ecg)


@functools.lru_cache(maxsize=64)
def polar_grid(lay: Layout):
  """Per pixel: depth as a fraction of the radius, beam angle, and inside-fan mask. [H, W] each."""
  rows, cols = np.mgrid[0:lay.size, 0:lay.size].astype(np.float32) + 0.5
  dr, dc = rows - lay.apex[0], cols - lay.apex[1]
  rho = np.hypot(dr, dc) / lay.radius
  theta = np.arctan2(dc, dr)
  fan = (rho <= 1.0) & (np.abs(theta) <= lay.half_angle) & (dr > 0)
  return rho, theta, fan


def ultrasound_mask(lay: Layout) -> np.ndarray:
  """bool [H, W]: where ultrasound data is drawn (fan plus strip); overlays stay outside."""
  mask = polar_grid(lay)[2].copy()
  if lay.strip is not None:
    r0, r1, c0, c1 = lay.strip
    mask[r0:r1, c0:c1] = True
  return mask


def sector_mask(view: str, image_size: int = 128, num_frames: int = 1) -> np.ndarray:
  """bool [H, W] ultrasound region of an image that draws `view` (like DICOM's US regions)."""
  return ultrasound_mask(layout_for(view, image_size, num_frames))


# ------------------------------------------------------------------ overlays

@functools.lru_cache(maxsize=8)
def _font(px: int):
  return ImageFont.load_default(size=px)


def font_px(image_size: int) -> int:
  return max(6, round(image_size / 12))


def text_mask(text: str, px: int) -> np.ndarray:
  """bool [h, w] glyph bitmap of `text` at font size `px`."""
  m = _font(px).getmask(text)
  w, h = m.size
  return (np.asarray(m, np.uint8).reshape(h, w) > 110) if w and h else np.zeros((1, 1), bool)


def draw_text(layer: np.ndarray, forbidden: np.ndarray, text: str, row: int, col: int,
              value: int, align: str = "left") -> bool:
  """Burns `text` into `layer` at (row, col); skipped (False) if it would touch `forbidden`."""
  g = text_mask(text, font_px(layer.shape[0]))
  h, w = g.shape
  if align == "right":
    col -= w
  if row < 0 or col < 0 or row + h > layer.shape[0] or col + w > layer.shape[1]:
    return False
  win = (slice(row, row + h), slice(col, col + w))
  if (forbidden[win] & g).any():
    return False
  layer[win] = np.where(g, np.uint8(value), layer[win])
  return True


def draw_polyline(layer: np.ndarray, rows: np.ndarray, c0: int, value: int) -> None:
  """A connected trace: rows [n] float, one per column starting at c0 (vertical runs joined)."""
  r = np.round(rows).astype(np.int32)
  lo = np.minimum(r, np.concatenate([r[:1], r[:-1]]))
  hi = np.maximum(r, np.concatenate([r[:1], r[:-1]]))
  r0, r1 = int(lo.min()), int(hi.max()) + 1
  grid = np.arange(r0, r1)[:, None]
  on = (grid >= lo[None, :]) & (grid <= hi[None, :])
  sub = layer[r0:r1, c0:c0 + len(r)]
  sub[on] = np.maximum(sub[on], np.uint8(value))


def ecg_wave(phase) -> np.ndarray:
  """Lead-II-like voltage for a cardiac phase (R wave at phase 0 = end-diastole)."""
  d = np.mod(np.asarray(phase) + 0.5, 1.0) - 0.5     # distance to the R wave in cycles
  g = lambda mu, w, a: a * np.exp(-((d - mu) / w) ** 2)
  return (g(0.0, 0.011, 1.0) + g(-0.02, 0.008, -0.15) + g(0.024, 0.009, -0.28)
          + g(-0.13, 0.03, 0.14) + g(0.30, 0.05, 0.28))


def draw_ecg(layer: np.ndarray, lay: Layout, phase_start: float, cycles: float, value: int,
             noise: np.ndarray) -> None:
  """The ECG trace under the data: `cycles` beats across the band from `phase_start`."""
  r0, r1, c0, c1 = lay.ecg
  n = c1 - c0
  v = ecg_wave(phase_start + np.linspace(0.0, cycles, n)) + noise[:n]
  rows = r1 - 1.5 - (v + 0.3) / 1.3 * (r1 - r0 - 3)
  draw_polyline(layer, np.clip(rows, r0, r1 - 1), c0, value)


def draw_depth_scale(layer: np.ndarray, forbidden: np.ndarray, lay: Layout, depth_cm: float,
                     value: int) -> None:
  """Dots every cm (bigger every 5 cm) beside the fan's right edge: this is how depth is read."""
  col = int(round(lay.apex[1] + lay.radius * math.sin(lay.half_angle) + 0.035 * lay.size))
  px_cm = lay.radius / depth_cm
  for k in range(1, int(depth_cm) + 1):
    row = int(round(lay.apex[0] + k * px_cm))
    big = 1 if k % 5 == 0 else 0
    win = (slice(row - big, row + big + 1), slice(col - big, col + big + 1))
    if row + big < layer.shape[0] and col + big < layer.shape[1] and not forbidden[win].any():
      layer[win] = value
