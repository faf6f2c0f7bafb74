"""A clip regressor: EchoVLM's image tower (ViT, with its temporal encoder for clips) and a
linear head to one value, e.g. LVEF from a cine (train/tasks/lvef.py). Parameters are
float32; the tower computes in config.model.dtype, the head in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.models import layers
from echovlm_jax.models.vit import ViT


class ClipRegressor(nnx.Module):
  """frames -> one value per clip; `model_config` is config.model (only its image tower)."""

  def __init__(self, model_config: Any, *, rngs: nnx.Rngs):
    cfg = model_config
    self.image = ViT(cfg.image, res=cfg.image.res, dtype=layers.dtype_of(cfg.dtype),
                     remat=cfg.remat, scan=cfg.scan_layers, rngs=rngs)
    # Zero-initialised: the first prediction is the training mean (targets are z-scored).
    self.head = layers.Dense(cfg.image.width, 1, ("embed", None), dtype=jnp.float32,
                             rngs=rngs, kernel_init=nnx.initializers.zeros)

  def __call__(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] (or evaluation windows [B, K, T, H, W, C]) in [-1, 1] ->
    [B] float32."""
    return self.head(self.image(frames).astype(jnp.float32))[:, 0]
