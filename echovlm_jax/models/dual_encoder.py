"""The EchoVLM dual encoder: ViT + text transformer projected to a shared L2-normalised space,
a learned temperature (stored as a log) and sigmoid bias, and a measurement head on the image
embedding. Parameters are float32; compute runs in config.model.dtype.

Each tower's projection (`image.proj`, `text.proj`) is "dense" (with bias: ours, and SigLIP's
text head), "linear" (no bias: CLIP) or "none" (SigLIP's image tower; width == embed_dim).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from echovlm_jax.models import layers
from echovlm_jax.models.text import TextTransformer
from echovlm_jax.models.vit import ViT


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """[..., d] -> unit norm along d (finite for an all-zero row)."""
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


PROJECTIONS = ("dense", "linear", "none")


def _projection(tower_cfg: Any, d: int, name: str, rngs: nnx.Rngs) -> layers.Dense | None:
  kind = tower_cfg.proj
  if kind not in PROJECTIONS:
    raise ValueError(f"config.model.{name}.proj={kind!r}: expected one of {PROJECTIONS}.")
  if kind == "none":
    if int(tower_cfg.width) != d:
      raise ValueError(f"config.model.{name}.proj='none' needs {name}.width == embed_dim "
                       f"({tower_cfg.width} != {d}).")
    return None
  # Projections run in float32: they are tiny and feed the normalised embeddings.
  return layers.Dense(tower_cfg.width, d, ("embed", None), dtype=jnp.float32, rngs=rngs,
                      use_bias=kind == "dense")


class DualEncoder(nnx.Module):
  """See module docstring; `model_config` is config.model."""

  def __init__(self, model_config: Any, *, vocab_size: int, num_measurements: int,
               rngs: nnx.Rngs):
    cfg = model_config
    dtype = layers.dtype_of(cfg.dtype)
    common = dict(dtype=dtype, remat=cfg.remat, scan=cfg.scan_layers, rngs=rngs,
                  attn_impl=cfg.attention_impl)
    self.image = ViT(cfg.image, res=cfg.image.res, **common)
    self.text = TextTransformer(cfg.text, vocab_size=vocab_size, **common)
    d = cfg.embed_dim
    self.image_proj = _projection(cfg.image, d, "image", rngs)
    self.text_proj = _projection(cfg.text, d, "text", rngs)
    self.logit_scale = nnx.Param(jnp.asarray(np.log(cfg.init_temperature), jnp.float32),
                                 out_sharding=(), eager_sharding=False)
    self.logit_bias = nnx.Param(jnp.asarray(cfg.init_bias, jnp.float32), out_sharding=(),
                                eager_sharding=False)
    self.meas_fc1 = layers.Dense(d, cfg.meas_hidden, (None, "mlp"), dtype=jnp.float32, rngs=rngs)
    self.meas_fc2 = layers.Dense(cfg.meas_hidden, num_measurements, ("mlp", "meas"),
                                 dtype=jnp.float32, rngs=rngs)

  def encode_image(self, frames: jax.Array) -> jax.Array:
    """frames [B, T, H, W, C] in [-1, 1] -> [B, d] L2-normalised float32."""
    x = self.image(frames)
    return l2_normalize(x if self.image_proj is None else self.image_proj(x))

  def encode_text(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, L] int32 (pad 0, EOS 1) -> [B, d] L2-normalised float32."""
    x = self.text(tokens)
    return l2_normalize(x if self.text_proj is None else self.text_proj(x))

  def predict_measurements(self, image_emb: jax.Array) -> jax.Array:
    """image_emb [B, d] -> [B, M] z-scored measurement predictions."""
    return self.meas_fc2(jax.nn.gelu(self.meas_fc1(image_emb)))

  def __call__(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """batch with frames [B,T,H,W,C], text [B,L] (and optionally neg_text [B,L]) -> dict of
    image_emb [B,d], text_emb [B,d], neg_text_emb [B,d] (if neg_text given), meas_pred [B,M]
    and text_meas_pred [B,M] (the measurement head on each embedding),
    logit_scale () (the log of s), logit_bias ()."""
    image_emb = self.encode_image(batch["frames"])
    text_emb = self.encode_text(batch["text"])
    out = dict(image_emb=image_emb, text_emb=text_emb,
               meas_pred=self.predict_measurements(image_emb),
               text_meas_pred=self.predict_measurements(text_emb),
               logit_scale=self.logit_scale[...], logit_bias=self.logit_bias[...])
    if "neg_text" in batch:
      out["neg_text_emb"] = self.encode_text(batch["neg_text"])
    return out
