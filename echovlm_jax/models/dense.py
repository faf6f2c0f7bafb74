"""The dense tasks' network: EchoVLM's image tower (ViT) and a light decoder from its patch
tokens to per-pixel outputs (segmentation logits, or landmark heatmaps).

The decoder is SETR's progressive upsampling (PUP: conv, x2 upsample, conv, ... from the 1/p
patch grid to full resolution) with one full-resolution skip from the frame itself, as
UNETR's first skip: a ViT's tokens are 16 px apart, and the myocardium is a few pixels thick,
so the last convolutions see the image's own edges. Intermediate ViT blocks are not tapped
(UNETR's other skips): the tower stays exactly the pretrained module, and its output alone is
what a frozen-tower (linear-probe style) evaluation measures. docs/design.md says why.
Parameters are float32; the decoder computes in config.model.dtype.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.models import layers
from echovlm_jax.models.vit import ViT

SKIP_CHANNELS = 16


class Conv(nnx.Module):
  """k x k convolution, NHWC, 'SAME' padding; kernel [k, k, in, out] (replicated: small)."""

  def __init__(self, din: int, dout: int, k: int, *, dtype, rngs: nnx.Rngs, kernel_init=None):
    init = kernel_init or nnx.initializers.lecun_normal()
    self.kernel = layers.param(rngs, init, (k, k, din, dout), (None, None, None, None))
    self.bias = layers.param(rngs, nnx.initializers.zeros, (dout,), (None,))
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                                     (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...].astype(self.dtype)


def _up2(x: jax.Array) -> jax.Array:
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")


class Decoder(nnx.Module):
  """Patch tokens [N, g, g, width] and frames [N, H, W, C] -> [N, H, W, num_outputs] float32."""

  def __init__(self, width: int, channels: int, patch: int, features: int, num_outputs: int, *,
               dtype, rngs: nnx.Rngs):
    if patch & (patch - 1):
      raise ValueError(f"config.model.image.patch={patch}: the decoder upsamples by 2, so the "
                       "patch must be a power of two.")
    self.proj = Conv(width, features, 1, dtype=dtype, rngs=rngs)
    self.ups = nnx.List([Conv(features, features, 3, dtype=dtype, rngs=rngs)
                         for _ in range(int(math.log2(patch)))])
    self.skip = nnx.List([Conv(channels, SKIP_CHANNELS, 3, dtype=dtype, rngs=rngs),
                          Conv(SKIP_CHANNELS, SKIP_CHANNELS, 3, dtype=dtype, rngs=rngs)])
    self.fuse = Conv(features + SKIP_CHANNELS, features, 3, dtype=dtype, rngs=rngs)
    # Zero-initialised: the first steps start from uniform outputs (the view classifier's habit).
    self.out = Conv(features, num_outputs, 1, dtype=dtype, rngs=rngs,
                    kernel_init=nnx.initializers.zeros)

  def __call__(self, tokens: jax.Array, frames: jax.Array) -> jax.Array:
    x = jax.nn.gelu(self.proj(tokens))
    for conv in self.ups:
      x = jax.nn.gelu(conv(_up2(x)))
    s = frames
    for conv in self.skip:
      s = jax.nn.gelu(conv(s))
    x = jax.nn.gelu(self.fuse(jnp.concatenate([x, s.astype(x.dtype)], axis=-1)))
    return self.out(x).astype(jnp.float32)


class DenseModel(nnx.Module):
  """frames [B, T, H, W, C] in [-1, 1] -> [B, T, H, W, num_outputs] float32; `model_config` is
  config.model (its image tower), `decoder_features` the decoder's channels."""

  def __init__(self, model_config: Any, *, num_outputs: int, decoder_features: int,
               rngs: nnx.Rngs):
    cfg = model_config
    dtype = layers.dtype_of(cfg.dtype)
    self.image = ViT(cfg.image, res=cfg.image.res, dtype=dtype, remat=cfg.remat,
                     scan=cfg.scan_layers, rngs=rngs)
    self.decoder = Decoder(cfg.image.width, cfg.image.channels, cfg.image.patch, decoder_features,
                           num_outputs, dtype=dtype, rngs=rngs)

  def __call__(self, frames: jax.Array) -> jax.Array:
    b, t, h, w, c = frames.shape
    y = self.decoder(self.image.patch_tokens(frames), frames.reshape(b * t, h, w, c))
    return y.reshape(b, t, h, w, -1)
