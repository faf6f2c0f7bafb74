"""Our params -> big_vision or open_clip checkpoint names: the inverse of clip_layouts (tests,
sharing our towers with those code bases). Echo towers only: no q/k/v biases or ln_pre."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from flax import nnx

from echovlm_jax.interop import our_params
from echovlm_jax.interop.clip_layouts import BV_BLOCK, BV_MAP_HEAD, BV_TOP, OC_BLOCK, OC_TOP
from echovlm_jax.interop.weights import Flat


def to_big_vision(params: nnx.State, model_config: Any) -> Flat:
  """Our params -> big_vision two-tower names (unscanned layout)."""
  ours = our_params.per_layer(params, model_config)
  out: Flat = {}
  inv_top = {v: k for k, v in BV_TOP.items()}
  inv_block = {v: k for k, v in BV_BLOCK.items()}
  inv_map = {v: k for k, v in BV_MAP_HEAD.items()}
  p, c = int(model_config.image.patch), int(model_config.image.channels)
  for name, v in ours.items():
    m = re.fullmatch(r"(image|text)/encoder/blocks/(\d+)/(.+)", name)
    if m:
      base = "img/Transformer/encoderblock" if m.group(1) == "image" else "txt/Encoder_0/encoderblock"
      out[f"{base}_{m.group(2)}/{inv_block[m.group(3)]}"] = v
    elif name.startswith("image/head/"):
      rest = name[len("image/head/"):]
      out[f"img/MAPHead_0/{'probe' if rest == 'probe' else inv_map[rest]}"] = (
          v.reshape(1, 1, -1) if rest == "probe" else v)
    elif name == "image/embedding/kernel":
      out["img/embedding/kernel"] = v.reshape(p, p, c, -1)
    elif name == "image/posemb":
      out["img/pos_embedding"] = v[None]
    elif name == "image/cls":
      out["img/cls"] = v[None]
    elif name == "text/posemb":
      out["txt/pos_embedding"] = v[None]
    elif name in inv_top:
      out[inv_top[name]] = v
  return out


def to_open_clip(params: nnx.State, model_config: Any) -> Flat:
  """Our params -> open_clip state-dict names (the image tower needs pool="tok")."""
  ours = our_params.per_layer(params, model_config)
  out: Flat = {}
  inv_block = {v: k for k, v in OC_BLOCK.items()}
  inv_top = {v: k for k, v in OC_TOP.items()}
  p, c = int(model_config.image.patch), int(model_config.image.channels)
  for tower, base in (("image", "visual.transformer.resblocks"), ("text", "transformer.resblocks")):
    for i in range(int(model_config[tower].depth)):
      pre = f"{tower}/encoder/blocks/{i}/"
      for ours_name, src in inv_block.items():
        v = ours[pre + ours_name]
        out[f"{base}.{i}.{src}"] = v.T if v.ndim == 2 else v
      q, k, v = (ours[pre + f"attn/{n}"] for n in ("query", "key", "value"))
      w = q.shape[0]
      out[f"{base}.{i}.attn.in_proj_weight"] = np.concatenate(
          [x.reshape(w, w).T for x in (q, k, v)])
      out[f"{base}.{i}.attn.in_proj_bias"] = np.zeros(3 * w, np.float32)
      out[f"{base}.{i}.attn.out_proj.weight"] = ours[pre + "attn/out"].reshape(w, w).T
  out["visual.conv1.weight"] = ours["image/embedding/kernel"].reshape(p, p, c, -1).transpose(3, 2, 0, 1)
  posemb = ours["image/posemb"]
  out["visual.positional_embedding"] = np.concatenate([np.zeros_like(posemb[:1]), posemb])
  if "image/cls" in ours:
    out["visual.class_embedding"] = ours["image/cls"][0]
  out["positional_embedding"] = ours["text/posemb"]
  for ours_name, src in inv_top.items():
    if ours_name in ours:
      out[src] = ours[ours_name]
  return out
