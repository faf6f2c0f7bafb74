"""The architecture an outside checkpoint implies: the config.model entries that make our towers
the checkpoint's. Widths, depths and sizes come from the weight shapes (always exact); heads,
activation, LayerNorm eps and end-of-text id from config.json or the layout's convention.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import ml_collections
import numpy as np

from configs import echovlm
from echovlm_jax.interop.weights import CheckpointError, Flat

# HF hidden_act -> ours (models/layers.ACTIVATIONS).
HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
           "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh"}


def _depth(flat: Mapping[str, np.ndarray], pattern: str) -> int:
  idx = {int(m.group(1)) for k in flat if (m := re.match(pattern, k))}
  return max(idx) + 1 if idx else 0


def _hf(flat: Flat, hf: Mapping[str, Any], siglip: bool) -> dict[str, Any]:
  vc, tc = dict(hf.get("vision_config") or {}), dict(hf.get("text_config") or {})
  patch = flat["vision_model.embeddings.patch_embedding.weight"]
  w, c, p = patch.shape[0], patch.shape[1], patch.shape[2]
  n_pos = flat["vision_model.embeddings.position_embedding.weight"].shape[0]
  grid = int(round(np.sqrt(n_pos - (0 if siglip else 1))))
  tok = flat["text_model.embeddings.token_embedding.weight"]
  tw = tok.shape[1]
  eps = 1e-6 if siglip else 1e-5
  act = "gelu_pytorch_tanh" if siglip else "quick_gelu"
  mlp = lambda tower: flat[f"{tower}_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
  image = dict(width=w, depth=_depth(flat, r"vision_model\.encoder\.layers\.(\d+)\."),
               heads=int(vc.get("num_attention_heads", 12)), patch=p, channels=c,
               res=grid * p, mlp_dim=mlp("vision"), act=HF_ACTS[vc.get("hidden_act", act)],
               ln_eps=float(vc.get("layer_norm_eps", eps)), qkv_bias=True,
               ln_pre=not siglip, pool="map" if siglip else "tok",
               proj="none" if siglip else "linear")
  text = dict(width=tw, depth=_depth(flat, r"text_model\.encoder\.layers\.(\d+)\."),
              heads=int(tc.get("num_attention_heads", 12 if siglip else 8)),
              max_len=flat["text_model.embeddings.position_embedding.weight"].shape[0],
              mlp_dim=mlp("text"), act=HF_ACTS[tc.get("hidden_act", act)],
              ln_eps=float(tc.get("layer_norm_eps", eps)), qkv_bias=True, pad_mask=False,
              causal=not siglip, proj="dense" if siglip else "linear")
  if siglip:
    text.update(pool="last")
    embed_dim = flat["text_model.head.weight"].shape[0]
  else:
    eos = int(tc.get("eos_token_id", 2))
    # Before transformers' PR #24773 CLIP configs said eos_token_id=2 and pooled at argmax.
    text.update(pool="argmax" if eos == 2 else "eos", eos_id=eos, pad_id=eos)
    embed_dim = flat["visual_projection.weight"].shape[0]
  return dict(image=image, text=text, embed_dim=int(embed_dim), vocab_size=int(tok.shape[0]))


def _open_clip(flat: Flat) -> dict[str, Any]:
  conv = flat["visual.conv1.weight"]                                # [w, c, p, p]
  w, c, p = conv.shape[0], conv.shape[1], conv.shape[2]
  grid = int(round(np.sqrt(flat["visual.positional_embedding"].shape[0] - 1)))
  tok = flat["token_embedding.weight"]
  tw = tok.shape[1]
  # open_clip's heads are width / 64 for both towers; OpenAI weights use quick GELU (LAION
  # ones exact GELU: override act).
  common = dict(act="quick_gelu", ln_eps=1e-5, qkv_bias=True, proj="linear")
  image = dict(common, width=w, heads=max(w // 64, 1), patch=p, channels=c, res=grid * p,
               depth=_depth(flat, r"visual\.transformer\.resblocks\.(\d+)\."),
               mlp_dim=flat["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
               ln_pre="visual.ln_pre.weight" in flat, pool="tok")
  text = dict(common, width=tw, heads=max(tw // 64, 1), pool="argmax", causal=True,
              pad_mask=False, depth=_depth(flat, r"transformer\.resblocks\.(\d+)\."),
              max_len=flat["positional_embedding"].shape[0],
              mlp_dim=flat["transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
  return dict(image=image, text=text, embed_dim=int(flat["visual.proj"].shape[1]),
              vocab_size=int(tok.shape[0]))


def _big_vision(flat: Flat) -> dict[str, Any]:
  def block(tower: str, name: str) -> np.ndarray:
    stacked = flat.get(f"{tower}/encoderblock/{name}")
    return stacked[0] if stacked is not None else flat[f"{tower}/encoderblock_0/{name}"]

  def depth(tower: str) -> int:
    stacked = flat.get(f"{tower}/encoderblock/LayerNorm_0/scale")
    return (stacked.shape[0] if stacked is not None
            else _depth(flat, re.escape(tower) + r"/encoderblock_(\d+)/"))

  attn, mlp = "MultiHeadDotProductAttention_0", "MlpBlock_0/Dense_0/kernel"
  kernel = flat["img/embedding/kernel"]                             # [p, p, c, w]
  p, c, w = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  n = int(np.prod(flat["img/pos_embedding"].shape[:-1]))
  common = dict(act="gelu_tanh", ln_eps=1e-6)
  it, tt = "img/Transformer", "txt/Encoder_0"
  image = dict(common, width=w, patch=p, channels=c, res=int(round(np.sqrt(n))) * p,
               depth=depth(it), heads=block(it, f"{attn}/query/kernel").shape[1],
               mlp_dim=block(it, mlp).shape[1], ln_pre=False,
               qkv_bias=any(k.startswith(it) and "query/bias" in k for k in flat),
               pool="map" if "img/MAPHead_0/probe" in flat else
               "tok" if "img/cls" in flat else "gap",
               proj="dense" if "img/head/kernel" in flat else "none")
  tok = flat["txt/Embed_0/embedding"]
  text = dict(common, width=tok.shape[1], depth=depth(tt),
              heads=block(tt, f"{attn}/query/kernel").shape[1], mlp_dim=block(tt, mlp).shape[1],
              max_len=int(np.prod(flat["txt/pos_embedding"].shape[:-1])),
              qkv_bias=any(k.startswith(tt) and "query/bias" in k for k in flat),
              pool="last", causal=False, pad_mask=False,
              proj="dense" if "txt/head/kernel" in flat else "none")
  embed_dim = (flat["txt/head/kernel"].shape[1] if "txt/head/kernel" in flat else tok.shape[1])
  return dict(image=image, text=text, embed_dim=int(embed_dim), vocab_size=int(tok.shape[0]))


def architecture(flat: Flat, layout: str, hf: Mapping[str, Any] | None = None, path: str = ""
                 ) -> dict[str, Any]:
  """{image: {...}, text: {...}, embed_dim, vocab_size}: the config.model entries (and the
  vocabulary) that reproduce the checkpoint."""
  try:
    if layout in ("hf_clip", "hf_siglip"):
      return _hf(flat, hf or {}, layout == "hf_siglip")
    return _open_clip(flat) if layout == "open_clip" else _big_vision(flat)
  except KeyError as e:
    raise CheckpointError(path, f"{layout} checkpoint lacks {e}; is it a complete two-tower "
                                "model?") from None


def model_config(arch: dict[str, Any]) -> ml_collections.ConfigDict:
  """config.model for an `architecture`: its towers and embed_dim over configs/echovlm.py's
  config.model (float32, no scan; what the checkpoint does not say keeps our default)."""
  model = echovlm.with_defaults(dict(image=arch["image"], text=arch["text"],
                                     embed_dim=arch["embed_dim"], vocab_size=arch["vocab_size"]),
                                echovlm.get_config().model.to_dict())
  return ml_collections.ConfigDict(model)
