"""The dense tasks' network: EchoVLM's image tower (ViT) and a light decoder from its patch
tokens to per-pixel outputs (segmentation logits, or landmark heatmaps).

The decoder is SETR's progressive upsampling (PUP: conv, x2 upsample, conv, ... from the 1/p
patch grid) with one skip from the frame itself, as UNETR's first skip: a ViT's tokens are
16 px apart, and the myocardium is a few pixels thick, so the last convolutions see the
image's own edges. It runs to half resolution and predicts full resolution by a pixel
shuffle (see Decoder). Intermediate ViT blocks are not tapped
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
  """x2 nearest-neighbour upsampling [N, H, W, C] -> [N, 2H, 2W, C]; the conv after it
  smooths. Not jax.image.resize's bilinear: its gradient is a scatter-add, which took most of
  the step on CPU (docs/performance.md)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _space_to_depth(x: jax.Array, k: int) -> jax.Array:
  """[N, H, W, C] -> [N, H/k, W/k, k*k*C]: each k x k block of pixels as channels."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // k, w // k, k * k * c)


def _depth_to_space(x: jax.Array, k: int) -> jax.Array:
  """[N, H, W, k*k*C] -> [N, kH, kW, C] (the inverse of _space_to_depth: a pixel shuffle)."""
  n, h, w, kkc = x.shape
  c = kkc // (k * k)
  x = x.reshape(n, h, w, k, k, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * k, w * k, c)


class Decoder(nnx.Module):
  """Patch tokens [N, g, g, width] and frames [N, H, W, C] -> [N, H, W, num_outputs] float32.

  Upsamples the token grid to half resolution (x2 steps of nearest + 3x3 conv), fuses the
  frame's own pixels there (each 2 x 2 block as 4 channels, so no detail is lost), and
  predicts every full-resolution pixel with a pixel shuffle (a 1x1 conv to 4 x num_outputs
  channels, one per sub-pixel). Working at half resolution keeps the decoder's convolutions,
  which XLA runs slowly on CPU, to about a quarter of the cost (docs/performance.md).
  """

  def __init__(self, width: int, channels: int, patch: int, features: int, num_outputs: int, *,
               dtype, rngs: nnx.Rngs):
    if patch & (patch - 1) or patch < 2:
      raise ValueError(f"config.model.image.patch={patch}: the decoder upsamples by 2, so the "
                       "patch must be a power of two, at least 2.")
    self.proj = Conv(width, features, 1, dtype=dtype, rngs=rngs)
    self.ups = nnx.List([Conv(features, features, 3, dtype=dtype, rngs=rngs)
                         for _ in range(int(math.log2(patch)) - 1)])
    self.skip = nnx.List([Conv(4 * channels, SKIP_CHANNELS, 3, dtype=dtype, rngs=rngs),
                          Conv(SKIP_CHANNELS, SKIP_CHANNELS, 3, dtype=dtype, rngs=rngs)])
    self.fuse = Conv(features + SKIP_CHANNELS, features, 3, dtype=dtype, rngs=rngs)
    # Zero-initialised: the first steps start from uniform outputs (the view classifier's habit).
    self.out = Conv(features, 4 * num_outputs, 1, dtype=dtype, rngs=rngs,
                    kernel_init=nnx.initializers.zeros)

  def __call__(self, tokens: jax.Array, frames: jax.Array) -> jax.Array:
    x = jax.nn.gelu(self.proj(tokens))
    for conv in self.ups:
      x = jax.nn.gelu(conv(_up2(x)))
    s = _space_to_depth(frames, 2)
    for conv in self.skip:
      s = jax.nn.gelu(conv(s))
    x = jax.nn.gelu(self.fuse(jnp.concatenate([x, s.astype(x.dtype)], axis=-1)))
    return _depth_to_space(self.out(x), 2).astype(jnp.float32)


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


class PointRegressor(nnx.Module):
  """The direct-regression alternative for landmarks: frames [B, T, H, W, C] -> points
  [B, T, K, 2] (row, col) in pixels, from the mean patch token through a hidden layer. The
  output layer is zero-initialised, so every point starts at the frame's centre."""

  def __init__(self, model_config: Any, *, num_points: int, hidden: int, rngs: nnx.Rngs):
    cfg = model_config
    dtype = layers.dtype_of(cfg.dtype)
    self.image = ViT(cfg.image, res=cfg.image.res, dtype=dtype, remat=cfg.remat,
                     scan=cfg.scan_layers, rngs=rngs)
    width, f32 = cfg.image.width, jnp.float32
    self.norm = layers.LayerNorm(width, dtype=f32, rngs=rngs)
    self.hidden = layers.Dense(width, hidden, (None, None), dtype=f32, rngs=rngs)
    self.out = layers.Dense(hidden, num_points * 2, (None, None), dtype=f32, rngs=rngs,
                            kernel_init=nnx.initializers.zeros)
    self.num_points, self.res = num_points, int(cfg.image.res)

  def __call__(self, frames: jax.Array) -> jax.Array:
    b, t = frames.shape[:2]
    pooled = self.image.patch_tokens(frames).astype(jnp.float32).mean(axis=(1, 2))   # [B*T, w]
    y = self.out(jax.nn.gelu(self.hidden(self.norm(pooled))))                        # [B*T, 2K]
    # In units of the frame: 0 is its centre, +-0.5 its edges.
    return ((0.5 + y) * (self.res - 1)).reshape(b, t, self.num_points, 2)


def points_of(outputs: jax.Array) -> jax.Array:
  """A landmark model's output -> points [..., K, 2] (row, col) px: heatmaps [B, T, H, W, K]
  through the soft-argmax, a regressor's points [B, T, K, 2] as they are."""
  return soft_argmax(outputs) if outputs.ndim == 5 else outputs


def soft_argmax(heatmaps: jax.Array) -> jax.Array:
  """heatmaps float32 [..., H, W, K] (logits) -> points [..., K, 2] (row, col) in pixels: the
  mean pixel under each map's softmax (integral regression: differentiable, sub-pixel)."""
  *lead, h, w, k = heatmaps.shape
  p = jax.nn.softmax(heatmaps.reshape(*lead, h * w, k), axis=-2).reshape(heatmaps.shape)
  rows = jnp.einsum("...hwk,h->...k", p, jnp.arange(h, dtype=p.dtype))
  cols = jnp.einsum("...hwk,w->...k", p, jnp.arange(w, dtype=p.dtype))
  return jnp.stack([rows, cols], axis=-1)
