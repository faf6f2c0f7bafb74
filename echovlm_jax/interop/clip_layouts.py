"""big_vision two-tower and open_clip parameter names -> ours (tables conversion.py runs).

big_vision: img/... and txt/... (Flax names; scanned encoders stacked over depth). open_clip:
torch state-dict names (Linear weights [out, in], packed in_proj q/k/v). Both fill a
conversion.Conversion, which checks shapes and collects every problem.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np

from echovlm_jax.interop.weights import Flat

# ----------------------------------------------------------------------------
# Name tables: checkpoint name (per transformer block, or top level) -> our name
# ----------------------------------------------------------------------------
# Inside one transformer block (also big_vision's MAPHead, whose names are the same).
BV_BLOCK = {
    "LayerNorm_0/scale": "ln1/scale", "LayerNorm_0/bias": "ln1/bias",
    "LayerNorm_1/scale": "ln2/scale", "LayerNorm_1/bias": "ln2/bias",
    "MultiHeadDotProductAttention_0/query/kernel": "attn/query",
    "MultiHeadDotProductAttention_0/key/kernel": "attn/key",
    "MultiHeadDotProductAttention_0/value/kernel": "attn/value",
    "MultiHeadDotProductAttention_0/out/kernel": "attn/out",
    "MultiHeadDotProductAttention_0/out/bias": "attn/out_bias",
    "MlpBlock_0/Dense_0/kernel": "mlp/fc1/kernel", "MlpBlock_0/Dense_0/bias": "mlp/fc1/bias",
    "MlpBlock_0/Dense_1/kernel": "mlp/fc2/kernel", "MlpBlock_0/Dense_1/bias": "mlp/fc2/bias",
}
BV_QKV_BIAS = {"MultiHeadDotProductAttention_0/query/bias": "q",
               "MultiHeadDotProductAttention_0/key/bias": "k",
               "MultiHeadDotProductAttention_0/value/bias": "v"}
BV_MAP_HEAD = {"LayerNorm_0/scale": "ln/scale", "LayerNorm_0/bias": "ln/bias",
               **{k: v for k, v in BV_BLOCK.items() if k.startswith(("Multi", "Mlp"))}}
BV_TOP = {  # plain renames (shape-changing ones are handled in `_from_big_vision`)
    "img/embedding/bias": "image/embedding/bias",
    "img/Transformer/encoder_norm/scale": "image/norm/scale",
    "img/Transformer/encoder_norm/bias": "image/norm/bias",
    "img/head/kernel": "image_proj/kernel", "img/head/bias": "image_proj/bias",
    "txt/Embed_0/embedding": "text/token_embedding",
    "txt/Encoder_0/encoder_norm/scale": "text/norm/scale",
    "txt/Encoder_0/encoder_norm/bias": "text/norm/bias",
    "txt/head/kernel": "text_proj/kernel", "txt/head/bias": "text_proj/bias",
    "t": "logit_scale", "b": "logit_bias",
}
BV_BLOCK_PREFIX = {"img/Transformer/encoderblock": "image", "txt/Encoder_0/encoderblock": "text"}

OC_BLOCK = {  # torch Linear weights are [out, in]: transposed on load
    "ln_1.weight": "ln1/scale", "ln_1.bias": "ln1/bias",
    "ln_2.weight": "ln2/scale", "ln_2.bias": "ln2/bias",
    "attn.out_proj.bias": "attn/out_bias",
    "mlp.c_fc.weight": "mlp/fc1/kernel", "mlp.c_fc.bias": "mlp/fc1/bias",
    "mlp.c_proj.weight": "mlp/fc2/kernel", "mlp.c_proj.bias": "mlp/fc2/bias",
}
OC_TOP = {
    "visual.ln_pre.weight": "image/ln_pre/scale", "visual.ln_pre.bias": "image/ln_pre/bias",
    "visual.ln_post.weight": "image/norm/scale", "visual.ln_post.bias": "image/norm/bias",
    "visual.proj": "image_proj/kernel",
    "token_embedding.weight": "text/token_embedding",
    "ln_final.weight": "text/norm/scale", "ln_final.bias": "text/norm/bias",
    "text_projection": "text_proj/kernel",
    "logit_scale": "logit_scale", "logit_bias": "logit_bias",
}
OC_BLOCK_PREFIX = {"visual.transformer.resblocks": "image", "transformer.resblocks": "text"}
OC_BUFFERS = ("attn_mask",)  # non-parameter buffers some exports include


def split_block(name: str, prefixes: Mapping[str, str], sep: str) -> tuple[str, int, str] | None:
  """"<prefix><sep><i><sep><rest>" -> (tower, i, rest)."""
  for p, tower in prefixes.items():
    m = re.fullmatch(re.escape(p) + (r"_(\d+)/" if sep == "/" else r"\.(\d+)\.") + r"(.+)", name)
    if m:
      return tower, int(m.group(1)), m.group(2)
  return None

def from_big_vision(flat: Flat, ctx, skip: Callable[[str], bool]) -> None:
  # Scanned big_vision encoders store "encoderblock/..." stacked [depth, ...]: unstack first.
  for name in list(flat):
    for p in BV_BLOCK_PREFIX:
      if name.startswith(p + "/"):
        stacked = flat.pop(name)
        for i in range(stacked.shape[0]):
          flat[f"{p}_{i}/{name[len(p) + 1:]}"] = stacked[i]
  for src, value in sorted(flat.items()):
    if skip(src):
      ctx.notes.append(f"{src}: skipped (config.model_init_skip)")
      continue
    blk = split_block(src, BV_BLOCK_PREFIX, "/")
    if blk:
      tower, i, rest = blk
      prefix = f"{tower}/encoder/blocks/{i}"
      if rest in BV_BLOCK:
        ctx.put(src, f"{prefix}/{BV_BLOCK[rest]}", value)
      elif rest in BV_QKV_BIAS:
        ctx.bias(src, f"{prefix}/attn", BV_QKV_BIAS[rest], value)
      else:
        ctx.problems.append(f"{src}: no counterpart in our model")
    elif src.startswith("img/MAPHead_0/"):
      rest = src[len("img/MAPHead_0/"):]
      if rest == "probe":
        ctx.put(src, "image/head/probe", value.reshape(1, -1))
      elif rest in BV_MAP_HEAD:
        ctx.put(src, f"image/head/{BV_MAP_HEAD[rest]}", value)
      elif rest in BV_QKV_BIAS:
        ctx.bias(src, "image/head/attn", BV_QKV_BIAS[rest], value)
      else:
        ctx.problems.append(f"{src}: no counterpart in our model")
    elif src == "img/embedding/kernel":
      ctx.patch_kernel(src, value)
    elif src == "img/pos_embedding":
      ctx.image_posemb(src, value.reshape(-1, value.shape[-1]))
    elif src == "img/cls":
      ctx.put(src, "image/cls", value.reshape(1, -1))
    elif src == "txt/pos_embedding":
      ctx.text_posemb(src, value.reshape(-1, value.shape[-1]))
    elif src == "txt/Embed_0/embedding":
      ctx.token_embedding(src, value)
    elif src in BV_TOP:
      ctx.put(src, BV_TOP[src], value.reshape(()) if src in ("t", "b") and value.size == 1
              else value)
    else:
      ctx.problems.append(f"{src}: no counterpart in our model")
  ctx.fold_biases(skip)

def from_open_clip(flat: Flat, ctx, skip: Callable[[str], bool]) -> None:
  for src, value in sorted(flat.items()):
    # A skipped in_proj_bias still folds its key / value parts: skipping drops only the query part.
    skipped = skip(src) and not src.endswith("attn.in_proj_bias")
    if skipped or src.split(".")[-1] in OC_BUFFERS:
      if skipped:
        ctx.notes.append(f"{src}: skipped (config.model_init_skip)")
      continue
    blk = split_block(src, OC_BLOCK_PREFIX, ".")
    if blk:
      tower, i, rest = blk
      prefix, h = f"{tower}/encoder/blocks/{i}", ctx.heads(tower)
      if rest in OC_BLOCK:
        ctx.put(src, f"{prefix}/{OC_BLOCK[rest]}", value.T if value.ndim == 2 else value)
      elif rest == "attn.in_proj_weight":
        w = value.shape[1]
        for j, part in enumerate(("query", "key", "value")):
          ctx.put(f"{src}[{part}]", f"{prefix}/attn/{part}",
                  value[j * w:(j + 1) * w].T.reshape(w, h, w // h))
      elif rest == "attn.in_proj_bias":
        w = value.shape[0] // 3
        for j, which in enumerate("qkv"):
          ctx.bias(src, f"{prefix}/attn", which, value[j * w:(j + 1) * w])
      elif rest == "attn.out_proj.weight":
        w = value.shape[0]
        ctx.put(src, f"{prefix}/attn/out", value.T.reshape(h, w // h, w))
      else:
        ctx.problems.append(f"{src}: no counterpart in our model")
    elif src == "visual.conv1.weight":
      ctx.patch_kernel(src, value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
      ctx.zero_bias("image/embedding/bias", value.shape[0])  # conv1 has no bias
    elif src == "visual.positional_embedding":
      ctx.image_posemb(src, value[1:])  # row 0 belongs to the class token
    elif src == "visual.class_embedding":
      pos0 = flat.get("visual.positional_embedding", np.zeros((1,) + value.shape))[0]
      ctx.put(src, "image/cls", (value + pos0).reshape(1, -1))  # our cls has no position
    elif src == "positional_embedding":
      ctx.text_posemb(src, value)
    elif src == "token_embedding.weight":
      ctx.token_embedding(src, value)
    elif src in OC_TOP:
      ctx.put(src, OC_TOP[src], value.reshape(()) if src.startswith("logit_") else value)
      if src in ("visual.proj", "text_projection"):  # torch projections have no bias
        ctx.zero_bias(OC_TOP[src].replace("kernel", "bias"), value.shape[-1])
    else:
      ctx.problems.append(f"{src}: no counterpart in our model")
  ctx.fold_biases(skip)
