"""`PretrainedDense`: an exported segmentation or landmark model ready for inference.
`load_pretrained` (load.py) returns one for an artifact whose config.json names a dense task.
Frames go through the same preparation as the dual encoder's (frames.prepare_frames); each
frame is read on its own, so any number of frames per clip works.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echovlm_jax.inference import frames as frames_lib
from echovlm_jax.models import dense


@functools.partial(jax.jit, static_argnums=0)
def _labels_fn(graphdef, params, frames):
  return jnp.argmax(nnx.merge(graphdef, params)(frames), axis=-1).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnums=0)
def _points_fn(graphdef, params, frames):
  return dense.points_of(nnx.merge(graphdef, params)(frames))   # [N, T, K, 2]


def _frame_size(frames: Any) -> tuple[int, int]:
  """(H, W) of frames in any layout prepare_frames reads (a last axis of 1 or 3 is channels)."""
  shape = np.shape(frames)
  if len(shape) == 5 or (len(shape) == 4 and shape[-1] in (1, 3)):
    return int(shape[-3]), int(shape[-2])
  return int(shape[-2]), int(shape[-1])


def _grid_index(n_out: int, n_in: int) -> np.ndarray:
  """For each of n_out pixels of the caller's frame, the nearest of the model's n_in pixels
  under prepare_frames' sampling (first and last pixels aligned)."""
  if n_out == 1:
    return np.zeros(1, int)
  return np.rint(np.arange(n_out) * (n_in - 1) / (n_out - 1)).astype(int)


class PretrainedDense:
  """A segmentation (`segment`) or landmark (`landmarks`) model. Build it with load_pretrained.

  Attributes: config (config.json), task, outputs (structure or point names, in order), res.
  """

  def __init__(self, path: str, config: Mapping[str, Any], model: nnx.Module, *,
               batch_size: int = 32, device: jax.Device | None = None):
    self.path, self.config = path, dict(config)
    self.task, self.outputs = config["task"], list(config["outputs"])
    self.res = int(config["input"]["res"])
    self.num_frames = int(config["input"]["num_frames"])
    self.image_size = int(config["input"]["image_size"])
    self.graphdef, self.params = nnx.split(model, nnx.Param)
    self.batch_size, self.device = int(batch_size), device

  def _run(self, fn, frames: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """prepared [N, T, res, res, 1] through fn in chunks of batch_size examples."""
    x = frames_lib.prepare_frames(frames, self.res)
    h, w = _frame_size(frames)
    out = [np.asarray(fn(self.graphdef, self.params, jnp.asarray(x[i:i + self.batch_size])))
           for i in range(0, len(x), self.batch_size)]
    return np.concatenate(out) if out else np.zeros((0,)), (h, w)

  def segment(self, frames: Any) -> np.ndarray:
    """Frames (as classify_views takes them: [N, T, H, W], [N, H, W], ... uint8 or float in
    [0, 1]) -> uint8 label images [N, T, H, W] in the frames' own pixel grid, values indexing
    `outputs` (schema.STRUCTURES: 0 background, 1 LV cavity, ...)."""
    if self.task != "segmentation":
      raise ValueError(f"{self.path} is a {self.task!r} model; segment() needs a segmentation one.")
    labels, (h, w) = self._run(_labels_fn, frames)
    return labels[:, :, _grid_index(h, self.res)][:, :, :, _grid_index(w, self.res)]

  def landmarks(self, frames: Any) -> np.ndarray:
    """Frames -> float32 [N, T, K, 2] (row, col) in the frames' own pixel grid, K = `outputs`
    (schema.LANDMARKS); a view without a point still gets one: read the ones it shows."""
    if self.task != "landmarks":
      raise ValueError(f"{self.path} is a {self.task!r} model; landmarks() needs a landmark one.")
    pts, (h, w) = self._run(_points_fn, frames)
    scale = np.array([(h - 1) / (self.res - 1), (w - 1) / (self.res - 1)], np.float32)
    return (pts * scale).astype(np.float32)
