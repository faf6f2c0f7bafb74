"""Initialising our towers from pretrained two-tower weights: Hugging Face CLIP / SigLIP
directories (hf_layout.py), big_vision `.npz` (img/..., txt/...) and open_clip state dicts
(.safetensors / .bin / .npz), through explicit name tables (checkpoint_config.py reads them).
Position embeddings are resized, RGB patch kernels made grayscale; q/k/v biases load into
towers built with qkv_bias, and fold into the output bias of towers without (where exact).
`configure(config)` makes config.model (and the text length and tokenizer) the checkpoint's.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import nnx

from echovlm_jax import checkpoint_config
from echovlm_jax import clip_layouts
from echovlm_jax import hf_layout

FORMATS = ("auto", "big_vision", "open_clip", "hf_clip", "hf_siglip")
Flat = dict[str, np.ndarray]


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
OPTIONAL = ("meas_fc1/", "meas_fc2/", "logit_scale", "logit_bias", "image/head/")


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


# ----------------------------------------------------------------------------
# Loading and conversion
# ----------------------------------------------------------------------------
def load_npz(path: str) -> Flat:
  """A flat {name: array} from an .npz (a leading "params/" as big_vision writes it is dropped)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.model_init={path}: no such file.")
  return checkpoint_config._load_file(path)


def detect_format(flat: Mapping[str, np.ndarray], path: str = "") -> str:
  try:
    return checkpoint_config.detect_layout(flat, path)
  except checkpoint_config.CheckpointError as e:
    raise ModelInitError(path, [str(e)]) from None


class _Ctx:
  """What conversions need to know about our model: shapes / initial values by name."""

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

# ----------------------------------------------------------------------------
# Our parameters as a flat, per-layer view
# ----------------------------------------------------------------------------
def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(_flatten(v, name + "/"))
    else:
      out[name] = v
  return out


def _per_layer(flat: Mapping[str, Any], scanned: bool, depths: Mapping[str, int]) -> Flat:
  """Our flat params as host arrays, scanned encoders unstacked to blocks/<i>/..."""
  out = {}
  for name, v in flat.items():
    v = np.asarray(jax.device_get(v))
    tower = name.split("/")[0]
    if scanned and "/encoder/blocks/" in name and tower in depths:
      head, rest = name.split("/encoder/blocks/")
      for i in range(depths[tower]):
        out[f"{head}/encoder/blocks/{i}/{rest}"] = v[i]
    else:
      out[name] = v
  return out


def read(path: str) -> tuple[Flat, str]:
  """(flat arrays, layout) of a checkpoint file or HF directory; errors name config.model_init."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.model_init={path}: no such file.")
  try:
    flat, layout, _ = checkpoint_config.read_weights(path)
  except checkpoint_config.CheckpointError as e:
    raise ModelInitError(path, [str(e)]) from None
  return flat, layout


def load_into(params: nnx.State, model_config: Any, path: str, fmt: str = "auto",
              skip: str = "", input_norm=None) -> tuple[nnx.State, list[str]]:
  """params (an nnx.State of the DualEncoder's Params, sharded or not) with the towers from the
  checkpoint at `path`; returns (params, notes). Raises ModelInitError listing every problem."""
  if fmt not in FORMATS:
    raise ValueError(f"config.model_init_format={fmt!r}: expected one of {FORMATS}.")
  flat_src, layout = read(path)
  return convert_into(params, model_config, flat_src, layout if fmt == "auto" else fmt, path,
                      skip, input_norm)


def convert_into(params: nnx.State, model_config: Any, flat_src: Flat, fmt: str, path: str,
                 skip: str = "", input_norm=None) -> tuple[nnx.State, list[str]]:
  """`load_into` for arrays already read (flat_src in layout `fmt`). input_norm: the
  checkpoint's per-channel (mean, std), folded into an RGB -> gray patch kernel."""
  patterns = [re.compile(p.strip()) for p in skip.split(",") if p.strip()]
  skip_fn = lambda name: any(p.fullmatch(name) or p.search(name) for p in patterns)

  pure = nnx.to_pure_dict(params)
  flat_ours = _flatten(pure)
  scanned = bool(model_config.scan_layers)
  depths = {"image": int(model_config.image.depth), "text": int(model_config.text.depth)}
  ours = _per_layer(flat_ours, scanned, depths)
  ctx = _Ctx(ours, model_config, input_norm)
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

  # Write back: restack scanned layers, keep every array's sharding.
  new = dict(ours)
  new.update(ctx.out)
  keep = sorted(n for n in ours if n not in ctx.out)
  for name, old in flat_ours.items():
    tower = name.split("/")[0]
    if scanned and "/encoder/blocks/" in name and tower in depths:
      head, rest = name.split("/encoder/blocks/")
      value = np.stack([new[f"{head}/encoder/blocks/{i}/{rest}"] for i in range(depths[tower])])
    else:
      value = new[name]
    value = value.astype(old.dtype)
    if isinstance(old, jax.Array):
      value = jax.make_array_from_callback(value.shape, old.sharding, lambda idx, v=value: v[idx])
    _set(pure, name.split("/"), value)
  nnx.replace_by_pure_dict(params, pure)
  notes = ctx.notes + [f"loaded {len(ctx.out)} arrays ({fmt}) from {path}"]
  if keep:
    notes.append(f"kept from initialisation: {', '.join(keep)}")
  return params, notes


def _set(tree: dict, keys: list[str], value: Any) -> None:
  for k in keys[:-1]:
    tree = tree[k if k in tree else int(k)]
  last = keys[-1]
  tree[last if last in tree else int(last)] = value


def apply_model_init(params: nnx.State, config: Any) -> nnx.State:
  """The trainer's hook: params initialised from config.model_init when it is set.

  config: the full experiment config (model_init, model_init_format, model_init_skip, model).
  """
  path = config.get("model_init", "")
  if not path:
    return params
  from echovlm_jax import checkpoint_processing, run_config
  run_config.check_model_init_format(config)
  fmt = config.get("model_init_format", "auto")
  flat, layout = read(path)
  layout = layout if fmt == "auto" else fmt
  # Our pipeline feeds [-1, 1]; the checkpoint's own normalisation is folded into the kernel.
  spec = checkpoint_processing.read_spec(path, layout, int(config.model.image.res))
  params, notes = convert_into(params, config.model, flat, layout, path,
                               config.get("model_init_skip", ""), (spec.mean, spec.std))
  for note in notes:
    logging.info("model_init: %s", note)
  return params


# Architecture keys `configure` takes from the checkpoint; channels stays ours (1 = gray, the
# RGB kernel summed) and so does res (the position table is resized).
_ARCH_KEYS = {"image": ("width", "depth", "heads", "patch", "mlp_dim", "act", "ln_eps",
                        "qkv_bias", "ln_pre", "pool", "proj"),
              "text": ("width", "depth", "heads", "mlp_dim", "act", "ln_eps", "qkv_bias",
                       "pad_mask", "pad_id", "eos_id", "pool", "causal", "proj")}


def configure(config: Any) -> Any:
  """config with config.model made the checkpoint's at config.model_init: tower shapes and
  block variants, embed_dim, the text length (input.max_text_len) and, for a Hugging Face
  directory, its tokenizer (input.tokenizer), so captions are tokenized as the checkpoint
  expects. Unchanged (the same object) when model_init is empty. An open_clip file carries no
  tokenizer: set config.input.tokenizer to the matching HF tokenizer directory."""
  path = config.get("model_init", "")
  if not path:
    return config
  from echovlm_jax import run_config  # noqa: PLC0415 - the trainer's start-up checks
  run_config.check_model_init_format(config)  # configure runs before validate_config
  flat, layout = read(path)
  fmt = config.get("model_init_format", "auto")
  arch = checkpoint_config.architecture(
      flat, layout if fmt == "auto" else fmt,
      checkpoint_config.hf_config(path) if checkpoint_config.is_hf_dir(path) else None, path)
  act = config.get("model_init_act", "")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for tower, keys in _ARCH_KEYS.items():
      for k in keys:
        if k in arch[tower]:
          config.model[tower][k] = arch[tower][k]
      if act:
        config.model[tower].act = act
    config.model.embed_dim = arch["embed_dim"]
    config.model.vocab_size = arch["vocab_size"]  # the checkpoint's rows, not len(tokenizer)
    config.model.text.max_len = config.input.max_text_len = int(arch["text"]["max_len"])
    if checkpoint_config.is_hf_dir(path) and not config.input.get("tokenizer"):
      # Absolute: the workdir's config.json must still find it when export runs elsewhere.
      config.input.tokenizer = path if "://" in path else os.path.abspath(path)
  if not config.input.get("tokenizer"):
    logging.warning("model_init=%s carries no tokenizer: captions use the dataset's "
                    "sentencepiece ids, which mean nothing to the checkpoint's text tower; set "
                    "config.input.tokenizer.", path)
  config.lock()
  return config
