"""The image tower: a ViT over single frames, pooled per frame ("map" | "gap" | "tok"), then
over the T frames of a clip: averaged (`temporal="mean"`), or averaged after a transformer
over time (`"factorised"`, models/temporal.py). Returns the pooled, un-projected width-d
features.

Variants by config: `ln_pre` (a LayerNorm before the encoder, CLIP) and the block options of
layers.block_options (CLIP: quick GELU + q/k/v biases; SigLIP: MAP head with biases). The
class token of "tok" carries no position: a checkpoint's class position is folded into it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.models import layers
from echovlm_jax.models import temporal as temporal_lib

POOLS = ("map", "gap", "tok")


class MAPHead(nnx.Module):
  """Multihead attention pooling (big_vision): a learned probe attends over the tokens."""

  def __init__(self, width: int, heads: int, options: dict, *, dtype, rngs: nnx.Rngs):
    self.probe = layers.param(rngs, nnx.initializers.xavier_uniform(), (1, width), (None, "embed"))
    self.attn = layers.Attention(width, heads, dtype=dtype, rngs=rngs,
                                 qkv_bias=options["qkv_bias"], impl=options["attn_impl"])
    self.ln = layers.LayerNorm(width, dtype=dtype, rngs=rngs, eps=options["ln_eps"])
    self.mlp = layers.Mlp(width, options["mlp_dim"], dtype=dtype, rngs=rngs, act=options["act"])

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, w] -> [B, w]."""
    probe = jnp.broadcast_to(self.probe[...].astype(x.dtype)[None], (x.shape[0], 1, x.shape[-1]))
    y = self.attn(probe, x)
    y = y + self.mlp(self.ln(y))
    return y[:, 0]


class ViT(nnx.Module):
  """Vision transformer on [B, T, H, W, C] frames in [-1, 1] -> [B, width]."""

  def __init__(self, cfg: Any, *, res: int, dtype, remat: bool, scan: bool, rngs: nnx.Rngs,
               attn_impl: str = ""):
    if cfg.pool not in POOLS:
      raise ValueError(f"config.model.image.pool={cfg.pool!r}: expected one of {POOLS}.")
    if res % cfg.patch:
      raise ValueError(f"config.model.image.res={res} is not divisible by patch={cfg.patch}.")
    self.patch, self.channels, self.pool, self.dtype = cfg.patch, cfg.channels, cfg.pool, dtype
    w = cfg.width
    self.embedding = layers.Dense(cfg.patch * cfg.patch * cfg.channels, w, ("patch", "embed"),
                                  dtype=dtype, rngs=rngs)
    num_tokens = (res // cfg.patch) ** 2
    self.posemb = layers.param(rngs, nnx.initializers.normal(0.02), (num_tokens, w),
                               ("length", "embed"))
    self.cls = (layers.param(rngs, nnx.initializers.zeros, (1, w), (None, "embed"))
                if cfg.pool == "tok" else None)
    opts = layers.block_options(cfg, attn_impl)
    self.ln_pre = (layers.LayerNorm(w, dtype=dtype, rngs=rngs, eps=opts["ln_eps"])
                   if cfg.ln_pre else None)
    self.encoder = layers.Encoder(w, cfg.depth, cfg.heads, opts, dtype=dtype,
                                  remat=remat, scan=scan, rngs=rngs)
    self.norm = layers.LayerNorm(w, dtype=dtype, rngs=rngs, eps=opts["ln_eps"])
    self.head = (MAPHead(w, cfg.heads, opts, dtype=dtype, rngs=rngs)
                 if cfg.pool == "map" else None)
    kind = cfg.get("temporal", "mean")
    if kind not in temporal_lib.TEMPORAL:
      raise ValueError(f"config.model.image.temporal={kind!r}: expected one of "
                       f"{temporal_lib.TEMPORAL}.")
    self.temporal = (temporal_lib.TemporalEncoder(w, cfg.temporal_depth, cfg.heads, cfg.frames,
                                                  opts, dtype=dtype, remat=remat, scan=scan,
                                                  rngs=rngs)
                     if kind == "factorised" else None)

  def patchify(self, frames: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, (H/p)(W/p), p*p*C]."""
    n, h, w, c = frames.shape
    p = self.patch
    x = frames.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // p) * (w // p), p * p * c)

  def __call__(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] float in [-1, 1] -> [B, width]: the mean over T of the per-frame
    features, after the temporal encoder when there is one. Evaluation windows [B, K, T, H, W,
    C] (data/clip_windows.py): each window is encoded alone and their features averaged."""
    if frames.ndim == 6:
      b, k = frames.shape[:2]
      y = self(frames.reshape(b * k, *frames.shape[2:]))
      return y.reshape(b, k, -1).mean(axis=1)
    b, t = frames.shape[:2]
    x = self.encode(frames)
    if self.pool == "map":
      y = self.head(x)
    elif self.pool == "gap":
      y = x.mean(axis=1)
    else:
      y = x[:, 0]
    y = y.reshape(b, t, -1)
    if self.temporal is not None:
      y = self.temporal(y)
    # Average in float32 so long clips do not lose precision in bf16.
    return y.astype(jnp.float32).mean(axis=1)

  def patch_tokens(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] -> the encoder's normed patch tokens [B*T, H/p, W/p, width] on
    the patch grid (the class token left out): what a dense decoder reads."""
    b, t, h, w, _ = frames.shape
    x = self.encode(frames)
    if self.cls is not None:
      x = x[:, 1:]
    return x.reshape(b * t, h // self.patch, w // self.patch, x.shape[-1])

  def encode(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] -> normed tokens [B*T, N (+1 class token), width]."""
    b, t, h, w, c = frames.shape
    if c != self.channels:
      raise ValueError(f"ViT: frames have {c} channels, config.model.image.channels={self.channels}.")
    x = self.embedding(self.patchify(frames.reshape(b * t, h, w, c)))
    if x.shape[1] != self.posemb.shape[0]:
      raise ValueError(f"ViT: {h}x{w} frames give {x.shape[1]} patches but the model was built for "
                       f"{self.posemb.shape[0]}; set config.input.res to the model's resolution.")
    x = x + self.posemb[...].astype(x.dtype)[None]
    if self.cls is not None:
      x = jnp.concatenate([jnp.broadcast_to(self.cls[...].astype(x.dtype)[None],
                                            (x.shape[0], 1, x.shape[-1])), x], axis=1)
    if self.ln_pre is not None:
      x = self.ln_pre(x)
    return self.norm(self.encoder(x))
