"""LV volumes and ejection fraction from cavity masks by the method of discs (ASE / EACVI
chamber quantification, 2015: biplane Simpson from the apical four- and two-chamber views).

Each view's cavity is cut into 20 discs perpendicular to its long axis; a disc's volume is
pi/4 x (its diameter in A4C) x (its diameter in A2C) x (L / 20), L the longer of the two
long axes (monoplane: the A4C diameter squared). The long axis here is the cavity's principal
axis (the eigenvector of its pixel covariance with the larger eigenvalue), from the same masks
for truth and prediction; the guideline's annulus-to-apex line needs the landmarks, which a
segmentation model does not predict.
"""

from __future__ import annotations

import numpy as np

NUM_DISCS = 20


def discs(mask: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, float]:
  """(diameters [NUM_DISCS] mm, long-axis length mm) of a bool cavity mask [H, W]; zeros and
  0.0 for an empty mask."""
  rows, cols = np.nonzero(mask)
  if rows.size < 3:
    return np.zeros(NUM_DISCS), 0.0
  pts = np.stack([rows, cols], 1).astype(np.float64)
  centred = pts - pts.mean(0)
  _, vecs = np.linalg.eigh(centred.T @ centred)
  axis, across = vecs[:, 1], vecs[:, 0]         # eigh sorts eigenvalues ascending
  along, side = centred @ axis, centred @ across
  lo, hi = along.min() - 0.5, along.max() + 0.5  # pixel extents, not centres
  length = hi - lo
  # Each disc's diameter is the cavity's width across its middle: the pixels within half a
  # pixel of the disc's centre line (the widest point of a thick slice would overestimate).
  centres = lo + (np.arange(NUM_DISCS) + 0.5) * length / NUM_DISCS
  diam = np.zeros(NUM_DISCS)
  for d, c in enumerate(centres):
    s = side[np.abs(along - c) <= 0.5]
    if s.size:
      diam[d] = s.max() - s.min() + 1.0   # extent of pixel centres + one pixel
  return diam * spacing_mm, length * spacing_mm


def volume_ml(a4c: np.ndarray, a4c_spacing: float, a2c: np.ndarray | None = None,
              a2c_spacing: float = 0.0) -> float:
  """LV volume in mL from an A4C cavity mask and, for biplane, an A2C one (bool [H, W])."""
  d4, l4 = discs(a4c, a4c_spacing)
  if a2c is None:
    d2, l2 = d4, l4
  else:
    d2, l2 = discs(a2c, a2c_spacing)
  length = max(l4, l2)
  return float(np.pi / 4.0 * np.sum(d4 * d2) * length / NUM_DISCS) / 1000.0   # mm^3 -> mL


def ejection_fraction(edv: float, esv: float) -> float:
  """100 (EDV - ESV) / EDV; NaN for an empty end-diastolic volume."""
  return 100.0 * (edv - esv) / edv if edv > 0 else float("nan")
