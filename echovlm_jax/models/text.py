"""The text tower: a transformer over sentencepiece ids (pad 0, EOS 1) with learned positions,
pooled at the first EOS token or by a mean over non-pad tokens. Returns width-d features.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.models import layers

PAD_ID = 0
EOS_ID = 1
POOLS = ("eos", "mean")


class TextTransformer(nnx.Module):
  """tokens [B, L] int32 -> [B, width] float32."""

  def __init__(self, cfg: Any, *, vocab_size: int, dtype, remat: bool, scan: bool,
               rngs: nnx.Rngs):
    if cfg.pool not in POOLS:
      raise ValueError(f"config.model.text.pool={cfg.pool!r}: expected one of {POOLS}.")
    w = cfg.width
    self.pool, self.causal, self.dtype = cfg.pool, cfg.causal, dtype
    self.token_embedding = layers.param(rngs, nnx.initializers.normal(0.02), (vocab_size, w),
                                        ("vocab", "embed"))
    self.posemb = layers.param(rngs, nnx.initializers.normal(0.01), (cfg.max_len, w),
                               ("length", "embed"))
    self.encoder = layers.Encoder(w, cfg.depth, cfg.heads, cfg.mlp_ratio, dtype=dtype,
                                  remat=remat, scan=scan, rngs=rngs)
    self.norm = layers.LayerNorm(w, dtype=dtype, rngs=rngs)

  def __call__(self, tokens: jax.Array) -> jax.Array:
    b, length = tokens.shape
    if length > self.posemb.shape[0]:
      raise ValueError(f"TextTransformer: {length} tokens but config.model.text.max_len="
                       f"{self.posemb.shape[0]}.")
    x = jnp.take(self.token_embedding[...], tokens, axis=0).astype(self.dtype)
    x = x + self.posemb[...][:length].astype(self.dtype)[None]
    valid = tokens != PAD_ID                                     # [B, L]
    mask = valid[:, None, None, :]                               # keys: never attend to padding
    if self.causal:
      mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
    x = self.norm(self.encoder(x, mask)).astype(jnp.float32)
    if self.pool == "mean":
      v = valid.astype(jnp.float32)[..., None]
      return (x * v).sum(1) / jnp.maximum(v.sum(1), 1.0)
    is_eos = tokens == EOS_ID
    # The first EOS; a truncated caption without one is pooled at its last non-pad token.
    last = jnp.maximum(valid.sum(1) - 1, 0)
    idx = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1), last)
    return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
