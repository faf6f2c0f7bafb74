"""The tokenizer inside an artifact: the one the model was trained with.

A model trained on the dataset's sentencepiece model ships it as `tokenizer.model` (format 1).
One trained with a checkpoint tokenizer (config.input.tokenizer: an HF CLIP / SigLIP directory,
the HF tokenizer given for an open_clip file, or a big_vision sentencepiece `.model`) ships it
as `tokenizer/`, written by transformers' `save_pretrained` (tokenizer files only, no weights),
so `load_pretrained` reads it without network access (format 2: older readers refuse it by
version instead of tokenizing with the wrong vocabulary).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

SENTENCEPIECE_FILE = "tokenizer.model"
CHECKPOINT_DIR = "tokenizer"


def entry(kind: str, source: str) -> dict[str, str]:
  """config.json's `tokenizer`: kind ("sentencepiece" | "checkpoint"), path in the artifact,
  and where it came from."""
  return {"kind": kind, "path": SENTENCEPIECE_FILE if kind == "sentencepiece" else CHECKPOINT_DIR,
          "source": source}


def load_checkpoint_tokenizer(path: str):
  """A CheckpointTokenizer (an HF tokenizer directory or a sentencepiece .model); its `save`
  writes what `load` reads back from an artifact."""
  from echovlm_jax.interop import checkpoint_tokenizer  # noqa: PLC0415 - transformers only here
  return checkpoint_tokenizer.CheckpointTokenizer.load(path)


def kind_of(config: Mapping[str, Any]) -> str:
  """The artifact's tokenizer kind (artifacts without the entry predate checkpoint ones)."""
  return dict(config.get("tokenizer") or {}).get("kind", "sentencepiece")


def load(path: str, config: Mapping[str, Any]):
  """The artifact's tokenizer (raises what the tokenizer class raises; pretrained wraps it)."""
  if kind_of(config) == "checkpoint":
    return load_checkpoint_tokenizer(os.path.join(path, CHECKPOINT_DIR))
  from echovlm_jax.data import tokenizer as tokenizer_lib  # noqa: PLC0415
  return tokenizer_lib.Tokenizer.load(os.path.join(path, SENTENCEPIECE_FILE))
