"""Hugging Face `CLIPModel` / `SiglipModel` parameter names -> ours (a table conversion.py runs).

torch Linear weights are [out, in] and transposed on load; q/k/v projections are split into
heads ([w, heads, kv]); CLIP's class position is folded into our position-free class token;
CLIP's patch conv has no bias (ours starts at zero); SigLIP's MAP head is torch's
nn.MultiheadAttention (packed in_proj).
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

BLOCK = {
    "layer_norm1.weight": "ln1/scale", "layer_norm1.bias": "ln1/bias",
    "layer_norm2.weight": "ln2/scale", "layer_norm2.bias": "ln2/bias",
    "self_attn.out_proj.bias": "attn/out_bias",
    "mlp.fc1.weight": "mlp/fc1/kernel", "mlp.fc1.bias": "mlp/fc1/bias",
    "mlp.fc2.weight": "mlp/fc2/kernel", "mlp.fc2.bias": "mlp/fc2/bias",
}
QKV = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}
TOP = {  # plain renames; 2-D ones are torch Linear weights (transposed)
    "vision_model.pre_layrnorm.weight": "image/ln_pre/scale",
    "vision_model.pre_layrnorm.bias": "image/ln_pre/bias",
    "vision_model.post_layernorm.weight": "image/norm/scale",
    "vision_model.post_layernorm.bias": "image/norm/bias",
    "vision_model.embeddings.patch_embedding.bias": "image/embedding/bias",
    "vision_model.head.layernorm.weight": "image/head/ln/scale",
    "vision_model.head.layernorm.bias": "image/head/ln/bias",
    "vision_model.head.attention.out_proj.bias": "image/head/attn/out_bias",
    "vision_model.head.mlp.fc1.weight": "image/head/mlp/fc1/kernel",
    "vision_model.head.mlp.fc1.bias": "image/head/mlp/fc1/bias",
    "vision_model.head.mlp.fc2.weight": "image/head/mlp/fc2/kernel",
    "vision_model.head.mlp.fc2.bias": "image/head/mlp/fc2/bias",
    "visual_projection.weight": "image_proj/kernel",
    "text_model.final_layer_norm.weight": "text/norm/scale",
    "text_model.final_layer_norm.bias": "text/norm/bias",
    "text_model.head.weight": "text_proj/kernel", "text_model.head.bias": "text_proj/bias",
    "text_projection.weight": "text_proj/kernel",
}
BUFFERS = ("position_ids",)
_LAYER = re.compile(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)")


def convert(flat: dict[str, np.ndarray], ctx, skip: Callable[[str], bool]) -> None:
  """Puts every HF array into ctx (a conversion.Conversion) under our name, or records a
  problem."""
  for src, value in sorted(flat.items()):
    if src.split(".")[-1] in BUFFERS:
      continue
    if skip(src):
      ctx.notes.append(f"{src}: skipped (config.model_init_skip)")
      continue
    m = _LAYER.fullmatch(src)
    if m:
      tower = "image" if m.group(1) == "vision" else "text"
      prefix, rest = f"{tower}/encoder/blocks/{m.group(2)}", m.group(3)
      h = ctx.heads(tower)
      proj = re.fullmatch(r"self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)", rest)
      if rest in BLOCK:
        ctx.put(src, f"{prefix}/{BLOCK[rest]}", value.T if value.ndim == 2 else value)
      elif proj and proj.group(2) == "weight":
        w = value.shape[1]
        ctx.put(src, f"{prefix}/attn/{QKV[proj.group(1)]}", value.T.reshape(w, h, -1))
      elif proj:
        ctx.bias(src, f"{prefix}/attn", QKV[proj.group(1)][0], value)
      elif rest == "self_attn.out_proj.weight":
        w = value.shape[0]
        ctx.put(src, f"{prefix}/attn/out", value.T.reshape(h, -1, w))
      else:
        ctx.problems.append(f"{src}: no counterpart in our model")
      continue
    if src == "vision_model.embeddings.patch_embedding.weight":
      ctx.patch_kernel(src, value.transpose(2, 3, 1, 0))                # OIHW -> HWIO
      if "vision_model.embeddings.patch_embedding.bias" not in flat:    # CLIP: bias-free conv
        ctx.zero_bias("image/embedding/bias", value.shape[0])
    elif src == "vision_model.embeddings.position_embedding.weight":
      has_cls = "vision_model.embeddings.class_embedding" in flat
      ctx.image_posemb(src, value[1:] if has_cls else value)
    elif src == "vision_model.embeddings.class_embedding":
      pos0 = flat["vision_model.embeddings.position_embedding.weight"][0]
      ctx.put(src, "image/cls", (value + pos0).reshape(1, -1))         # our cls has no position
    elif src == "text_model.embeddings.position_embedding.weight":
      ctx.text_posemb(src, value)
    elif src == "text_model.embeddings.token_embedding.weight":
      ctx.token_embedding(src, value)
    elif src == "vision_model.head.probe":
      ctx.put(src, "image/head/probe", value.reshape(1, -1))
    elif src == "vision_model.head.attention.in_proj_weight":
      w, h = value.shape[1], ctx.heads("image")
      for j, part in enumerate(("query", "key", "value")):
        ctx.put(f"{src}[{part}]", f"image/head/attn/{part}",
                value[j * w:(j + 1) * w].T.reshape(w, h, -1))
    elif src == "vision_model.head.attention.in_proj_bias":
      w = value.shape[0] // 3
      for j, which in enumerate("qkv"):
        ctx.bias(src, "image/head/attn", which, value[j * w:(j + 1) * w])
    elif src == "vision_model.head.attention.out_proj.weight":
      w, h = value.shape[0], ctx.heads("image")
      ctx.put(src, "image/head/attn/out", value.T.reshape(h, -1, w))
    elif src in ("logit_scale", "logit_bias"):
      ctx.put(src, src, value.reshape(()))
    elif src in TOP:
      ctx.put(src, TOP[src], value.T if value.ndim == 2 else value)
    else:
      ctx.problems.append(f"{src}: no counterpart in our model")
  ctx.fold_biases(skip)
