"""An outside checkpoint as an inference model: a Hugging Face CLIP / SigLIP directory, an
open_clip state dict or a big_vision two-tower .npz becomes the parts of the same `Pretrained`
object as our artifacts (inference/load.py puts them together).

The towers are built from the checkpoint's shapes and config (architecture.py), filled through
the name tables (every misfit listed in one ModelInitError), and use the checkpoint's own image
processing and tokenizer. Zero-shot view and finding prompts are ours (echo/prompts.py). Such
a checkpoint has no measurement head.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from flax import nnx

from echovlm_jax.echo import prompts as prompts_lib
from echovlm_jax.echo import schema
from echovlm_jax.interop import architecture
from echovlm_jax.interop import checkpoint_tokenizer
from echovlm_jax.interop import conversion
from echovlm_jax.interop import image_processing
from echovlm_jax.interop import weights
from echovlm_jax.models import factory


class ExternalModel(NamedTuple):
  """What `Pretrained` is built from (inference/pretrained.py names each part)."""
  config: dict[str, Any]                          # as an artifact's config.json
  model: nnx.Module                               # the DualEncoder, filled
  tokenizer: checkpoint_tokenizer.CheckpointTokenizer | None
  stats: dict[str, Any]                           # measurement mean 0 / std 1: no head
  prompts: dict[str, Any]                         # ours, as an artifact's prompts.json
  prepare: Callable[[Any], np.ndarray]            # frames -> [N, T, S, S, 3] model input


def load(path: str, *, tokenizer: str | None = None, act: str | None = None,
         device: jax.Device | None = None) -> ExternalModel:
  """The parts of an inference model of the outside checkpoint at path.

  tokenizer: where its tokenizer lives (default: path itself, for an HF directory; an open_clip
  or big_vision file needs it: an HF tokenizer directory or a sentencepiece .model).
  act: override the MLP activation (open_clip LAION weights use "gelu"; default: the
  checkpoint's config, else quick GELU for open_clip).
  """
  flat, layout, hf = weights.read_weights(path)
  arch = architecture.architecture(flat, layout, hf, path)
  if act:
    arch["image"]["act"] = arch["text"]["act"] = act
  cfg = architecture.model_config(arch)
  model = factory.dual_encoder(cfg, vocab_size=arch["vocab_size"])()
  graphdef, params = nnx.split(model, nnx.Param)
  params, notes = conversion.convert_into(params, cfg, flat, layout, path)
  for note in notes:
    logging.info("load_pretrained: %s", note)
  if device is not None:
    params = jax.device_put(params, device)
  model = nnx.merge(graphdef, params)

  tok_path = tokenizer or (path if os.path.isdir(path) else None)
  tok = checkpoint_tokenizer.CheckpointTokenizer.load(tok_path) if tok_path else None
  res, patch = int(arch["image"]["res"]), int(arch["image"]["patch"])
  spec = image_processing.read_spec(path, layout, res)
  # A patch size that does not divide the processor's size (So400m/14 at 384 px: 27 patches
  # cover 378) leaves a remainder the checkpoint's stride-p convolution never reads: cropping
  # the bottom / right rows and columns away is exact.
  if spec.size // patch != res // patch:
    raise weights.CheckpointError(
        path, f"preprocessor_config.json makes {spec.size} px images, the model takes {res}.")
  prepare = lambda frames: image_processing.prepare_images(frames, spec)[:, :, :res, :res]
  config = {
      "model": cfg.to_dict(), "vocab_size": arch["vocab_size"],
      "num_measurements": len(schema.MEASUREMENTS),
      "input": {"res": res, "num_frames": 1, "image_size": res,
                "max_text_len": int(arch["text"]["max_len"])},
      "views": list(schema.KNOWN_VIEWS), "labels": list(schema.LABELS),
      "measurements": list(schema.MEASUREMENTS),
      "source": {"path": os.path.abspath(path), "layout": layout,
                 "tokenizer": os.path.abspath(tok_path) if tok_path else None},
      "measurement_head": False,
  }
  m = len(schema.MEASUREMENTS)
  stats = {"mean": dict(zip(schema.MEASUREMENTS, np.zeros(m))),
           "std": dict(zip(schema.MEASUREMENTS, np.ones(m)))}
  return ExternalModel(config, model, tok, stats, prompts_lib.prompt_sets(), prepare)
