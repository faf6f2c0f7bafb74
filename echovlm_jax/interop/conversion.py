"""An outside checkpoint's arrays into our towers: `convert_into` runs a layout's name table
(hf_layout.py for Hugging Face CLIP / SigLIP, clip_layouts.py for big_vision and open_clip)
over a `Conversion`, which checks every array against our parameter of that name and adapts
it: position embeddings resized, RGB patch kernels made grayscale; q/k/v biases load into
towers built with qkv_bias, and fold into the output bias of towers without (where exact).
Every misfit is collected into one ModelInitError.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from echovlm_jax.interop import clip_layouts
from echovlm_jax.interop import hf_layout
from echovlm_jax.interop import our_params
from echovlm_jax.interop.weights import Flat


class ModelInitError(ValueError):
  """A pretrained checkpoint does not fit the configured model; lists every offending parameter."""

  def __init__(self, path: str, problems: list[str]):
    self.path, self.problems = path, list(problems)
    super().__init__(
        f"config.model_init={path}: {len(problems)} parameter(s) do not fit config.model:\n  "
        + "\n  ".join(problems)
        + "\n(fix config.model to match the checkpoint, or list checkpoint names to drop knowingly "
          "as regexes in config.model_init_skip)")


# Our parameters a checkpoint need not provide: they keep their initialisation.
# The temporal encoder (models/temporal.py) starts as the identity over an image checkpoint.
OPTIONAL = ("meas_fc1/", "meas_fc2/", "logit_scale", "logit_bias", "image/head/",
            "image/temporal/")


# ----------------------------------------------------------------------------
# Array adaptations
# ----------------------------------------------------------------------------
def resize_posemb(posemb: np.ndarray, num_tokens: int) -> np.ndarray:
  """[N, w] on a sqrt(N) x sqrt(N) grid -> [num_tokens, w], bilinear on the 2D grid
  (half-pixel centres, jax.image.resize; anti-aliased when shrinking)."""
  n, w = posemb.shape
  g, gt = int(round(np.sqrt(n))), int(round(np.sqrt(num_tokens)))
  if g * g != n or gt * gt != num_tokens:
    raise ValueError(f"position embeddings of {n} -> {num_tokens} tokens: not square grids.")
  if n == num_tokens:
    return posemb
  grid = jax.image.resize(posemb.reshape(g, g, w).astype(np.float32), (gt, gt, w), "bilinear")
  return np.asarray(grid).reshape(num_tokens, w)


def to_grayscale_kernel(kernel: np.ndarray) -> np.ndarray:
  """Patch kernel [p, p, 3, w] -> [p, p, 1, w]: the sum over colours, so a gray image gives
  what the RGB model gives for that image repeated in R, G and B."""
  return kernel.sum(axis=2, keepdims=True)


def fold_input_norm(kernel: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
  """RGB kernel [p, p, 3, w] of a model fed z_c = (x - mean_c) / std_c (x in [0, 1]) ->
  (gray kernel [p, p, 1, w], bias offset [w]) for our input y = 2x - 1 in [-1, 1].

  z_c = y / (2 std_c) + (0.5 - mean_c) / std_c, so the patch embedding sum_pc K z_c equals
  y @ sum_c K_c / (2 std_c) + sum_pc K_c (0.5 - mean_c) / std_c: exact for gray frames.
  With mean = std = 0.5 (SigLIP) this is the plain colour sum with no offset."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  gray = (kernel / (2.0 * std)[None, None, :, None]).sum(axis=2, keepdims=True)
  offset = np.einsum("pqcw,c->w", kernel, (0.5 - mean) / std)
  return gray.astype(np.float32), offset.astype(np.float32)


def fit_length(posemb: np.ndarray, init: np.ndarray) -> np.ndarray:
  """Text positions [L_src, w] -> [L, w]: truncated, or padded with our initial rows."""
  out = np.array(init, np.float32, copy=True)
  n = min(len(posemb), len(out))
  out[:n] = posemb[:n]
  return out


class Conversion:
  """What a name table fills: our per-layer arrays by name (`ours`, their shapes and initial
  values), the converted arrays (`out`), the names the checkpoint addressed (`tried`), every
  misfit (`problems`) and what was adapted (`notes`)."""

  def __init__(self, ours: Flat, model_config: Any, input_norm=None):
    self.ours, self.cfg = ours, model_config
    self.input_norm = input_norm  # the checkpoint's (mean, std): folded into a gray kernel
    self.embedding_bias_offset: np.ndarray | None = None
    self.out: Flat = {}
    self.problems: list[str] = []
    self.notes: list[str] = []
    self.qkv_bias: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    self.tried: set[str] = set()  # our names the checkpoint addressed (even if mis-shaped)

  def put(self, src: str, name: str, value: np.ndarray) -> None:
    self.tried.add(name)
    if name not in self.ours:
      self.problems.append(f"{src}: no counterpart in our model (would be {name})")
    elif tuple(value.shape) != tuple(self.ours[name].shape):
      self.problems.append(f"{src}: shape {tuple(value.shape)} but our {name} is "
                           f"{tuple(self.ours[name].shape)}")
    else:
      self.out[name] = np.asarray(value, np.float32)

  def heads(self, tower: str) -> int:
    return int(self.cfg[tower].heads)

  def patch_kernel(self, src: str, kernel_hwio: np.ndarray) -> None:
    """[p, p, C, w] -> our [p*p*C', w], with RGB -> gray when our model has 1 channel."""
    c = int(self.cfg.image.channels)
    if kernel_hwio.shape[2] == 3 and c == 1:
      if self.input_norm is None:
        kernel_hwio = to_grayscale_kernel(kernel_hwio)
        self.notes.append(f"{src}: RGB patch kernel summed over colours for grayscale input")
      else:
        kernel_hwio, self.embedding_bias_offset = fold_input_norm(kernel_hwio, *self.input_norm)
        self.notes.append(f"{src}: RGB patch kernel summed over colours for grayscale input "
                          f"in [-1, 1], the checkpoint's mean / std folded in (exact for gray)")
    p = int(self.cfg.image.patch)
    self.tried.add("image/embedding/kernel")
    if kernel_hwio.shape[:3] != (p, p, c):
      self.problems.append(f"{src}: patch kernel {tuple(kernel_hwio.shape)} but config.model.image "
                           f"has patch={p}, channels={c}")
      return
    self.put(src, "image/embedding/kernel", kernel_hwio.reshape(p * p * c, -1))

  def image_posemb(self, src: str, posemb: np.ndarray) -> None:
    target = self.ours.get("image/posemb")
    self.tried.add("image/posemb")
    if target is None:
      self.problems.append(f"{src}: no counterpart in our model")
      return
    try:
      value = resize_posemb(posemb, target.shape[0])
    except ValueError as e:
      self.problems.append(f"{src}: {e}")
      return
    if value.shape[0] != posemb.shape[0]:
      self.notes.append(f"{src}: {posemb.shape[0]} -> {value.shape[0]} positions (bilinear)")
    self.put(src, "image/posemb", value)

  def text_posemb(self, src: str, posemb: np.ndarray) -> None:
    target = self.ours.get("text/posemb")
    if target is None or posemb.shape[-1] != target.shape[-1]:
      self.put(src, "text/posemb", posemb)  # reports the mismatch
      return
    if len(posemb) != len(target):
      self.notes.append(f"{src}: {len(posemb)} -> {len(target)} text positions (truncated / "
                        "padded with initial values)")
    self.put(src, "text/posemb", fit_length(posemb, target))

  def token_embedding(self, src: str, emb: np.ndarray) -> None:
    target = self.ours.get("text/token_embedding")
    if target is not None and emb.shape[0] != target.shape[0] and emb.shape[1] == target.shape[1]:
      # Another tokenizer's rows mean nothing for our sentencepiece ids: keep ours.
      self.notes.append(f"{src}: vocabulary {emb.shape[0]} != ours {target.shape[0]}; token "
                        "embeddings kept from initialisation")
      self.out["text/token_embedding"] = np.asarray(target, np.float32)
      return
    self.put(src, "text/token_embedding", emb)

  def zero_bias(self, name: str, size: int) -> None:
    """A bias the checkpoint's layer lacks (torch convs / projections): ours starts at 0."""
    if name in self.ours:
      self.out.setdefault(name, np.zeros(size, np.float32))

  def bias(self, src: str, prefix: str, which: str, value: np.ndarray) -> None:
    """A q/k/v bias of the attention at `prefix`: loaded when our attention has biases,
    else collected and folded in `fold_biases`."""
    name = f"{prefix}/{dict(q='query', k='key', v='value')[which]}_bias"
    if name in self.ours:
      self.put(src, name, np.asarray(value, np.float32).reshape(self.ours[name].shape)
               if value.size == self.ours[name].size else value)
      return
    self.qkv_bias.setdefault(prefix, {})[which] = (src, np.asarray(value, np.float32))

  def fold_biases(self, skip: Callable[[str], bool]) -> None:
    """Our attention has no q/k/v biases. A key bias adds the same logit to every key of a
    query (softmax ignores it); a value bias adds bv @ W_out to every output (attention weights
    sum to 1), so it folds into out_bias. A query bias cannot be represented unless it is 0."""
    for prefix, biases in sorted(self.qkv_bias.items()):
      if "v" in biases:
        src, bv = biases["v"]
        out_k, out_b = self.out.get(f"{prefix}/out"), self.out.get(f"{prefix}/out_bias")
        if out_k is not None and out_b is not None:
          self.out[f"{prefix}/out_bias"] = out_b + np.einsum(
              "hk,hkw->w", bv.reshape(out_k.shape[:2]), out_k)
      if "q" in biases:
        src, bq = biases["q"]
        if np.abs(bq).max(initial=0.0) > 0 and not skip(src):
          self.problems.append(f"{src}: non-zero query bias, which our attention cannot "
                               "represent (skip it knowingly via config.model_init_skip)")


def convert_into(params: nnx.State, model_config: Any, flat_src: Flat, fmt: str, path: str,
                 skip: str = "", input_norm=None) -> tuple[nnx.State, list[str]]:
  """params (an nnx.State of our model's Params, sharded or not) with the towers of flat_src,
  a checkpoint's arrays in layout `fmt` read from `path`; returns (params, notes). skip:
  comma-separated regexes of checkpoint names to drop knowingly. input_norm: the checkpoint's
  per-channel (mean, std), folded into an RGB -> gray patch kernel. Raises ModelInitError
  listing every problem."""
  patterns = [re.compile(p.strip()) for p in skip.split(",") if p.strip()]
  skip_fn = lambda name: any(p.fullmatch(name) or p.search(name) for p in patterns)

  ours = our_params.per_layer(params, model_config)
  ctx = Conversion(ours, model_config, input_norm)
  convert = {"big_vision": clip_layouts.from_big_vision, "open_clip": clip_layouts.from_open_clip,
             "hf_clip": hf_layout.convert, "hf_siglip": hf_layout.convert}[fmt]
  convert(dict(flat_src), ctx, skip_fn)
  if ctx.embedding_bias_offset is not None and "image/embedding/bias" in ctx.out:
    ctx.out["image/embedding/bias"] = ctx.out["image/embedding/bias"] + ctx.embedding_bias_offset

  towers = {n.split("/")[0] for n in ctx.out | dict.fromkeys(ctx.tried)}
  towers |= {"image" for n in ctx.out if n.startswith("image_proj")}
  towers |= {"text" for n in ctx.out if n.startswith("text_proj")}
  for name in sorted(ours):
    tower = "image" if name.startswith("image") else "text" if name.startswith("text") else None
    if name in ctx.out or name in ctx.tried or name.startswith(OPTIONAL) or tower not in towers:
      continue
    ctx.problems.append(f"{name}: ours, but the checkpoint has nothing for it")
  if ctx.problems:
    raise ModelInitError(path, ctx.problems)

  keep = sorted(n for n in ours if n not in ctx.out)
  params = our_params.write_back(params, model_config, {**ours, **ctx.out})
  notes = ctx.notes + [f"loaded {len(ctx.out)} arrays ({fmt}) from {path}"]
  if keep:
    notes.append(f"kept from initialisation: {', '.join(keep)}")
  return params, notes
