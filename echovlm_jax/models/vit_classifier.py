"""The view classifier's network: EchoVLM's image tower (ViT) and a linear head over
schema.KNOWN_VIEWS, and how a VIEWS id maps to the head's classes. Parameters are float32; the
tower computes in config.model.dtype, the head in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.models import layers
from echovlm_jax.models.vit import ViT

NUM_CLASSES = len(schema.KNOWN_VIEWS)


def known_index() -> np.ndarray:
  """int32 [len(VIEWS)]: a VIEWS id -> its position in KNOWN_VIEWS (the head's class), -1 for
  unknown. Mapped by name, not by assuming `unknown` is last."""
  return np.array([schema.KNOWN_VIEWS.index(v) if v in schema.KNOWN_VIEWS else -1
                   for v in schema.VIEWS], np.int32)


class ViewClassifier(nnx.Module):
  """frames -> view logits; `model_config` is config.model (only its image tower is used)."""

  def __init__(self, model_config: Any, *, num_classes: int, rngs: nnx.Rngs):
    cfg = model_config
    self.image = ViT(cfg.image, res=cfg.image.res, dtype=layers.dtype_of(cfg.dtype),
                     remat=cfg.remat, scan=cfg.scan_layers, rngs=rngs)
    # Zero-initialised: the first steps start from uniform probabilities, so a pretrained
    # tower is not pushed around by a random head (big_vision's fine-tuning habit).
    self.head = layers.Dense(cfg.image.width, num_classes, ("embed", None), dtype=jnp.float32,
                             rngs=rngs, kernel_init=nnx.initializers.zeros)

  def __call__(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] in [-1, 1] -> logits [B, num_classes] float32."""
    return self.head(self.image(frames))
