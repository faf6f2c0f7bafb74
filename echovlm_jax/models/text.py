"""The text tower: a transformer over token ids with learned positions. Returns width-d features.

Pooling (`pool`): "eos" = the first `eos_id` (our sentencepiece: 1; CLIP: its end-of-text id;
a truncated text without one is pooled at its last non-pad token), "argmax" = the highest id
(CLIP configs from before transformers fixed eos_token_id: end-of-text is the largest id),
"last" = the last position (SigLIP, whose texts are always padded to full length), "mean" =
over non-pad tokens. `pad_mask` hides keys equal to `pad_id` (ours); CLIP and SigLIP were
trained without it (their pad id is a real token, and causal attention hides CLIP's padding).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.models import layers

POOLS = ("eos", "mean", "last", "argmax")


class TextTransformer(nnx.Module):
  """tokens [B, L] int32 -> [B, width] float32."""

  def __init__(self, cfg: Any, *, vocab_size: int, dtype, remat: bool, scan: bool,
               rngs: nnx.Rngs, attn_impl: str = ""):
    if cfg.pool not in POOLS:
      raise ValueError(f"config.model.text.pool={cfg.pool!r}: expected one of {POOLS}.")
    w = cfg.width
    self.pool, self.causal, self.dtype = cfg.pool, bool(cfg.causal), dtype
    self.pad_mask = bool(cfg.pad_mask)
    self.pad_id, self.eos_id = int(cfg.pad_id), int(cfg.eos_id)
    self.token_embedding = layers.param(rngs, nnx.initializers.normal(0.02), (vocab_size, w),
                                        ("vocab", "embed"))
    self.posemb = layers.param(rngs, nnx.initializers.normal(0.01), (cfg.max_len, w),
                               ("length", "embed"))
    opts = layers.block_options(cfg, attn_impl)
    self.encoder = layers.Encoder(w, cfg.depth, cfg.heads, opts, dtype=dtype,
                                  remat=remat, scan=scan, rngs=rngs)
    self.norm = layers.LayerNorm(w, dtype=dtype, rngs=rngs, eps=opts["ln_eps"])

  def __call__(self, tokens: jax.Array) -> jax.Array:
    b, length = tokens.shape
    if length > self.posemb.shape[0]:
      raise ValueError(f"TextTransformer: {length} tokens but config.model.text.max_len="
                       f"{self.posemb.shape[0]}.")
    x = jnp.take(self.token_embedding[...], tokens, axis=0).astype(self.dtype)
    x = x + self.posemb[...][:length].astype(self.dtype)[None]
    valid = tokens != self.pad_id                                # [B, L]
    mask = valid[:, None, None, :] if self.pad_mask else None    # keys: never attend to padding
    x = self.norm(self.encoder(x, mask, self.causal)).astype(jnp.float32)
    if self.pool == "mean":
      v = valid.astype(jnp.float32)[..., None]
      return (x * v).sum(1) / jnp.maximum(v.sum(1), 1.0)
    if self.pool == "last":
      return x[:, -1]
    if self.pool == "argmax":
      idx = jnp.argmax(tokens, axis=1)
    else:
      is_eos = tokens == self.eos_id
      last = jnp.maximum(valid.sum(1) - 1, 0)
      idx = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1), last)
    return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
