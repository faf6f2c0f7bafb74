"""Segmentation metrics of one predicted label image against its truth, per structure:
Dice, and the surface distances in mm that clinicians' contours are judged by (95th
percentile Hausdorff distance and mean surface distance, as MONAI defines them), from
scipy.ndimage's exact Euclidean distance transform with the pixel spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
  """2 |P & T| / (|P| + |T|) of two bool masks [H, W]; NaN when both are empty."""
  total = int(pred.sum()) + int(truth.sum())
  return 2.0 * float((pred & truth).sum()) / total if total else float("nan")


def _surface(mask: np.ndarray) -> np.ndarray:
  """The mask's boundary pixels: in the mask with a 4-neighbour outside (or at the edge)."""
  return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing_mm: float
                      ) -> tuple[float, float]:
  """(HD95, MSD) in mm between two bool masks [H, W] with square pixels of `spacing_mm`.

  HD95: the larger of the two directed 95th percentiles of boundary-to-boundary distances
  (MONAI's compute_hausdorff_distance(percentile=95)); MSD: the mean of both directions'
  distances together (compute_average_surface_distance(symmetric=True)). NaN when either
  mask is empty.
  """
  if not pred.any() or not truth.any():
    return float("nan"), float("nan")
  sp, st = _surface(pred), _surface(truth)
  # Distance of every pixel to the nearest boundary pixel of the other mask.
  to_truth = ndimage.distance_transform_edt(~st, sampling=spacing_mm)
  to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing_mm)
  d_pt, d_tp = to_truth[sp], to_pred[st]
  hd95 = max(float(np.percentile(d_pt, 95)), float(np.percentile(d_tp, 95)))
  return hd95, float(np.concatenate([d_pt, d_tp]).mean())
