"""Reading an outside two-tower checkpoint's weights.

`read_weights(path)` gives a `Checkpoint`: a flat {name: float32 array}, its layout and (for a
Hugging Face directory) its config.json, from a Hugging Face CLIP / SigLIP directory
(config.json + model.safetensors or pytorch_model.bin), an open_clip state dict
(.safetensors / .bin / .pt / .npz) or a big_vision two-tower .npz.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, NamedTuple

import numpy as np

from echovlm_jax.interop import optional_deps

LAYOUTS = ("hf_clip", "hf_siglip", "open_clip", "big_vision")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
Flat = dict[str, np.ndarray]  # "name" -> array: a checkpoint's, or our params' (our_params.py)


class Checkpoint(NamedTuple):
  """An outside checkpoint in memory."""
  flat: Flat                             # its names -> float32 arrays
  layout: str                            # one of LAYOUTS
  hf_config: dict[str, Any] | None       # a Hugging Face directory's config.json, else None


class CheckpointError(ValueError):
  """A checkpoint path that cannot be read or whose layout is unknown."""

  def __init__(self, path: str, reason: str):
    self.path = os.fspath(path)
    super().__init__(f"checkpoint {self.path}: {reason}")


def is_hf_dir(path: str) -> bool:
  """Whether path is a Hugging Face model directory (config.json and weights)."""
  return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")) and any(
      os.path.isfile(os.path.join(path, f)) for f in HF_WEIGHTS)


def hf_config(path: str) -> dict[str, Any]:
  with open(os.path.join(path, "config.json")) as f:
    cfg = json.load(f)
  if cfg.get("model_type") not in ("clip", "siglip"):
    raise CheckpointError(path, f"config.json has model_type={cfg.get('model_type')!r}; "
                                "only 'clip' and 'siglip' dual encoders load.")
  return cfg


def load_file(path: str) -> Flat:
  """One weights file's arrays by name (a leading "params/" (big_vision) or "module." dropped)."""
  ext = os.path.splitext(path)[1]
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as z:
      flat = {k: np.asarray(z[k]) for k in z.files}
    return {k[len("params/"):] if k.startswith("params/") else k: v for k, v in flat.items()}
  if ext == ".safetensors":
    st = optional_deps.require("safetensors.numpy", f"reading {path}")
    try:
      return dict(st.load_file(path))
    except TypeError:  # bfloat16 has no NumPy dtype: go through torch
      pass
  if ext in (".safetensors", ".bin", ".pt", ".pth"):
    try:
      import torch  # noqa: PLC0415 - only for torch-pickled or bf16 weights
    except ImportError:
      raise CheckpointError(path, "reading this file needs torch (pip install torch).") from None
    if ext == ".safetensors":
      from safetensors.torch import load_file as load_torch  # noqa: PLC0415
      sd = load_torch(path)
    else:
      sd = torch.load(path, map_location="cpu", weights_only=True)
      sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    return {k[len("module."):] if k.startswith("module.") else k:
            v.detach().float().numpy() for k, v in sd.items() if hasattr(v, "detach")}
  raise CheckpointError(path, f"unknown file type {ext!r} (expected .npz, .safetensors, .bin, .pt "
                              "or a Hugging Face model directory).")


def detect_layout(flat: Mapping[str, np.ndarray], path: str = "") -> str:
  """The layout (one of LAYOUTS) the names of `flat` follow; CheckpointError when none."""
  if any(k.startswith(("vision_model.", "text_model.")) for k in flat):
    return "hf_siglip" if any(k.startswith("vision_model.head.") or k == "logit_bias"
                              for k in flat) else "hf_clip"
  if any(k.startswith(("img/", "txt/")) for k in flat):
    return "big_vision"
  if any(k.startswith("visual.") or k in ("token_embedding.weight", "text_projection") for k in flat):
    return "open_clip"
  raise CheckpointError(path, f"cannot tell the layout from names {sorted(flat)[:6]}: set "
                              "config.model_init_format to 'big_vision' or 'open_clip'")


def read_weights(path: str | os.PathLike) -> Checkpoint:
  """The checkpoint at path (a file or a Hugging Face directory), its arrays as float32."""
  path = os.fspath(path)
  hf = None
  if os.path.isdir(path):
    if not is_hf_dir(path):
      raise CheckpointError(path, f"a directory without config.json and one of {HF_WEIGHTS}.")
    hf = hf_config(path)
    name = next(f for f in HF_WEIGHTS if os.path.isfile(os.path.join(path, f)))
    flat = load_file(os.path.join(path, name))
  elif os.path.isfile(path):
    flat = load_file(path)
  else:
    raise CheckpointError(path, "no such file or directory.")
  flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
  layout = detect_layout(flat, path)
  if hf is not None and layout != f"hf_{hf['model_type']}":
    raise CheckpointError(path, f"config.json says {hf['model_type']} but the weights are {layout}.")
  return Checkpoint(flat, layout, hf)
