"""Frames as the model sees them, in NumPy: what the input pipeline does to a stored frame
(tf.image.crop_and_resize over the whole frame, [-1, 1]), for inference without TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as data/dicom.py


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
  """Bilinear resize of one axis with tf.image.crop_and_resize's sampling over the whole
  frame (first and last samples on the first and last pixels)."""
  n = x.shape[axis]
  if n == size:
    return x
  pos = np.linspace(0.0, n - 1, size) if size > 1 else np.array([(n - 1) / 2.0])
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  shape = [1] * x.ndim
  shape[axis] = size
  w = (pos - lo).astype(np.float32).reshape(shape)
  return np.take(x, lo, axis=axis) * (1.0 - w) + np.take(x, hi, axis=axis) * w


def prepare_frames(frames: Any, res: int) -> np.ndarray:
  """Frames -> float32 [N, T, res, res, 1] in [-1, 1], as the input pipeline feeds the model.

  Accepts [N, T, H, W], [N, T, H, W, 1], [N, H, W], [N, H, W, 1] or RGB [N, H, W, 3] (BT.601
  luma); uint8 in [0, 255] or float in [0, 1]. Frames are resized to res x res (bilinear,
  tf.image.crop_and_resize sampling); pass square frames (data/dicom.py crops and pads).
  """
  x = np.asarray(frames)
  if x.ndim == 5 and x.shape[-1] == 1:
    x = x[..., 0]
  elif x.ndim == 4 and x.shape[-1] == 1:
    x = x[:, None, ..., 0]
  elif x.ndim == 4 and x.shape[-1] == 3:
    x = (x.astype(np.float32) @ _LUMA)[:, None]
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8) if np.asarray(frames).dtype == np.uint8 else x
  elif x.ndim == 3:
    x = x[:, None]
  elif x.ndim != 4:
    raise ValueError(f"frames of shape {x.shape}: expected [N, T, H, W], [N, H, W], [N, H, W, 1] "
                     "or [N, H, W, 3].")
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
    if x.size and (np.nanmin(x) < -1e-6 or np.nanmax(x) > 1.0 + 1e-6):
      raise ValueError(f"float frames must lie in [0, 1] (got [{np.nanmin(x):.3g}, "
                       f"{np.nanmax(x):.3g}]); pass uint8 for 0..255 pixel values.")
  else:
    raise ValueError(f"frames dtype {x.dtype}: expected uint8 or float.")
  x = _resize_axis(_resize_axis(x, res, 2), res, 3)
  return (x * 2.0 - 1.0)[..., None].astype(np.float32)
