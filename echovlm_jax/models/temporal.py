"""The image tower's time axis: how a clip's per-frame features [B, T, w] become one [B, w].

"mean" (the default, and what every model before it did) averages the frames. "factorised"
runs a transformer over time first: ViViT's factorised encoder and PanEcho's temporal
transformer, on the per-frame pooled features (the spatial ViT is unchanged, so an image
tower's weights are reused as they are). It is initialised to the identity: the time
position table and every block's residual outputs (attention out, MLP fc2) start at zero, so
a freshly added temporal block, or any T = 1 clip, gives exactly the image model's embedding;
training then learns motion from there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.models import layers

TEMPORAL = ("mean", "factorised")
_ZERO_AT_INIT = (("attn", "out"), ("attn", "out_bias"), ("mlp", "fc2", "kernel"),
                 ("mlp", "fc2", "bias"))


class TemporalEncoder(nnx.Module):
  """Per-frame features [B, T, w] -> [B, T, w]: time positions, then `depth` pre-LN blocks
  (layers.Encoder), identity at initialisation (see the module docstring)."""

  def __init__(self, width: int, depth: int, heads: int, frames: int, options: dict[str, Any],
               *, dtype, remat: bool, scan: bool, rngs: nnx.Rngs):
    self.posemb = layers.param(rngs, nnx.initializers.zeros, (frames, width), ("time", "embed"))
    # Named time_encoder, not encoder: checkpoint conversion keys the spatial tower's blocks
    # by ".../encoder/blocks/".
    self.time_encoder = layers.Encoder(width, depth, heads, options, dtype=dtype, remat=remat,
                                       scan=scan, rngs=rngs)
    for path, p in nnx.iter_graph(self.time_encoder):
      if isinstance(p, nnx.Param) and any(tuple(path[-len(s):]) == s for s in _ZERO_AT_INIT):
        p.set_value(jnp.zeros_like(p[...]))
    self.frames = frames

  def __call__(self, x: jax.Array) -> jax.Array:
    t = x.shape[1]
    if t > self.frames:
      raise ValueError(f"a clip of {t} frames, but the temporal encoder has positions for "
                       f"{self.frames} (config.input.num_frames).")
    x = x + self.posemb[...][:t].astype(x.dtype)[None]
    return self.time_encoder(x)
