"""config.model_init: training from an outside CLIP / SigLIP checkpoint. `configure` makes
config.model (the text length and, for a Hugging Face directory, the tokenizer) the
checkpoint's; `load_towers` puts its towers into freshly initialised params. The trainer reads
the checkpoint once (`read`) and hands it to both.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flax import nnx

from echovlm_jax.interop import architecture
from echovlm_jax.interop import conversion
from echovlm_jax.interop import image_processing
from echovlm_jax.interop import weights

FORMATS = ("auto", "big_vision", "open_clip", "hf_clip", "hf_siglip")

# Architecture keys `configure` takes from the checkpoint; channels stays ours (1 = gray, the
# RGB kernel summed) and so does res (the position table is resized).
_ARCH_KEYS = {"image": ("width", "depth", "heads", "patch", "mlp_dim", "act", "ln_eps",
                        "qkv_bias", "ln_pre", "pool", "proj"),
              "text": ("width", "depth", "heads", "mlp_dim", "act", "ln_eps", "qkv_bias",
                       "pad_mask", "pad_id", "eos_id", "pool", "causal", "proj")}


def check_format(config: Any) -> None:
  """ValueError unless config.model_init_format is one of FORMATS (a typo would otherwise be
  read as another layout)."""
  fmt = config.model_init_format
  if fmt not in FORMATS:
    raise ValueError(f"config.model_init_format={fmt!r}: expected one of "
                     f"{', '.join(map(repr, FORMATS))} ('auto' tells the layout from the "
                     "checkpoint's names).")


def read(path: str) -> weights.Checkpoint:
  """The checkpoint file or HF directory at path; errors name config.model_init."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.model_init={path}: no such file.")
  try:
    return weights.read_weights(path)
  except weights.CheckpointError as e:
    raise conversion.ModelInitError(path, [str(e)]) from None


def _layout(config: Any, checkpoint: weights.Checkpoint) -> str:
  """config.model_init_format, or with "auto" the layout the checkpoint's names follow."""
  return checkpoint.layout if config.model_init_format == "auto" else config.model_init_format


def load_towers(params: nnx.State, config: Any,
                checkpoint: weights.Checkpoint | None = None) -> nnx.State:
  """params initialised from config.model_init when it is set (checkpoint: that file already
  read, else it is read here). config: the experiment config (model_init, model_init_format,
  model_init_skip, model). Our pipeline feeds [-1, 1]: the checkpoint's own input
  normalisation is folded into the patch kernel."""
  path = config.model_init
  if not path:
    return params
  check_format(config)
  checkpoint = checkpoint or read(path)
  layout = _layout(config, checkpoint)
  spec = image_processing.read_spec(path, layout, int(config.model.image.res))
  params, notes = conversion.convert_into(params, config.model, checkpoint.flat, layout, path,
                                          config.model_init_skip, (spec.mean, spec.std))
  for note in notes:
    logging.info("model_init: %s", note)
  return params


def configure(config: Any, checkpoint: weights.Checkpoint | None = None) -> Any:
  """config with config.model made the checkpoint's at config.model_init: tower shapes and
  block variants, embed_dim, the text length (input.max_text_len) and, for a Hugging Face
  directory, its tokenizer (input.tokenizer), so captions are tokenized as the checkpoint
  expects. Unchanged (the same object) when model_init is empty. An open_clip file carries no
  tokenizer: set config.input.tokenizer to the matching HF tokenizer directory. checkpoint:
  the file already read, else it is read here."""
  path = config.model_init
  if not path:
    return config
  check_format(config)
  checkpoint = checkpoint or read(path)
  arch = architecture.architecture(checkpoint.flat, _layout(config, checkpoint),
                                   checkpoint.hf_config, path)
  act = config.model_init_act
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
    if weights.is_hf_dir(path) and not config.input.tokenizer:
      # Absolute: the workdir's config.json must still find it when export runs elsewhere.
      config.input.tokenizer = path if "://" in path else os.path.abspath(path)
  if not config.input.tokenizer:
    logging.warning("model_init=%s carries no tokenizer: captions use the dataset's "
                    "sentencepiece ids, which mean nothing to the checkpoint's text tower; set "
                    "config.input.tokenizer.", path)
  config.lock()
  return config
