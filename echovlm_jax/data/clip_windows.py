"""Which frames of a video a clip holds, and which of a stored clip the model reads.

A reader takes T frames of a video, evenly over the file (`sample_indices`) or at a fixed
time step from its frame time (`indices_at_rate`: DICOM cines, EchoNet AVIs).

A clip of T stored frames is read `window` frames at a time. Training takes one window at a
random start per example and step (as EchoNet-Dynamic and EchoFM sample clips); evaluation
and inference take `count` windows at fixed, evenly spaced starts and average their
embeddings (as PanEcho's num_clips). NumPy only: the input pipeline and the inference code
(no TensorFlow) share it.
"""

from __future__ import annotations

import numpy as np


def resolve(num_frames: int, window: int) -> int:
  """The window length in frames: `window`, or all `num_frames` when window is 0; ValueError
  naming the config key when it does not fit the clip."""
  if window < 0 or window > num_frames:
    raise ValueError(f"config.input.window={window}: expected 0 (all frames) or 1..{num_frames} "
                     f"(config.input.num_frames, the frames stored per clip).")
  return window or num_frames


def starts(num_frames: int, window: int, count: int) -> np.ndarray:
  """int [K] first frames of K = min(count, positions) evenly spaced windows of `window`
  frames in a clip of `num_frames` (the first and last window always among them)."""
  positions = num_frames - window + 1
  k = max(1, min(int(count), positions))
  if k == 1:
    return np.array([(positions - 1) // 2])
  return np.rint(np.linspace(0, positions - 1, k)).astype(int)


def take(frames: np.ndarray, window: int, count: int) -> np.ndarray:
  """frames [N, T, ...] -> [N, K, window, ...] (`starts`' windows); K = 1 keeps one window."""
  t = frames.shape[1]
  idx = starts(t, window, count)[:, None] + np.arange(window)[None]   # [K, window]
  return frames[:, idx]


def sample_indices(total: int, num_frames: int | None) -> np.ndarray:
  """Evenly spaced frame indices: the centres of `num_frames` equal bins of the clip.

  num_frames=1 gives the middle frame; num_frames > total repeats frames (nearest bin).
  Returns int [num_frames] (or all indices when num_frames is None).
  """
  if num_frames is None:
    return np.arange(total)
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  return np.minimum(((np.arange(num_frames) + 0.5) * total / num_frames).astype(int), total - 1)


def indices_at_rate(total: int, num_frames: int, frame_ms: float | None, fps: float
                    ) -> np.ndarray:
  """Frame indices of a window of `num_frames` frames at the time step 1 / fps, centred in
  the cine (nearest stored frame to each time; a cine shorter than the window repeats its
  first / last frames). Without a frame time (frame_ms None) or fps <= 0: sample_indices.
  Returns int [num_frames]."""
  if not frame_ms or fps <= 0 or total == 1:
    return sample_indices(total, num_frames)
  step = (1000.0 / fps) / frame_ms                       # stored frames per clip frame
  centre = (total - 1) / 2.0
  pos = centre + (np.arange(num_frames) - (num_frames - 1) / 2.0) * step
  return np.clip(np.rint(pos), 0, total - 1).astype(int)
