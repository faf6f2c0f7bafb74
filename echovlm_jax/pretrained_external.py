"""`load_pretrained` for outside checkpoints: a Hugging Face CLIP / SigLIP directory, an open_clip
state dict or a big_vision two-tower .npz becomes the same `Pretrained` object as our artifacts.

The towers are built from the checkpoint's shapes and config (checkpoint_config.architecture),
filled through model_init's name tables (every misfit listed in one ModelInitError), and use
the checkpoint's own image processing and tokenizer (checkpoint_processing). Zero-shot view and
finding prompts are ours (echo/prompts.py). Such a checkpoint has no measurement head.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from echovlm_jax import checkpoint_config
from echovlm_jax import checkpoint_processing
from echovlm_jax import model_init
from echovlm_jax.echo import prompts as prompts_lib
from echovlm_jax.echo import schema


def model_config(arch: dict[str, Any]) -> ml_collections.ConfigDict:
  """config.model for an `architecture` (float32, no scan)."""
  image = dict(arch["image"], mlp_ratio=4)
  text = dict(arch["text"], mlp_ratio=4)
  return ml_collections.ConfigDict(dict(
      image=image, text=text, embed_dim=arch["embed_dim"], dtype="float32", remat=False,
      scan_layers=False, init_temperature=10.0, init_bias=-10.0, meas_hidden=256))


def load(path: str, *, tokenizer: str | None = None, act: str | None = None,
         batch_size: int = 32, device: jax.Device | None = None):
  """A `Pretrained` from an outside checkpoint at path.

  tokenizer: where its tokenizer lives (default: path itself, for an HF directory; an open_clip
  or big_vision file needs it: an HF tokenizer directory or a sentencepiece .model).
  act: override the MLP activation (open_clip LAION weights use "gelu"; default: the
  checkpoint's config, else quick GELU for open_clip).
  """
  from echovlm_jax.models import factory
  from echovlm_jax.pretrained import Pretrained
  flat, layout, hf = checkpoint_config.read_weights(path)
  arch = checkpoint_config.architecture(flat, layout, hf, path)
  if act:
    arch["image"]["act"] = arch["text"]["act"] = act
  cfg = model_config(arch)
  model = factory.dual_encoder(cfg, vocab_size=arch["vocab_size"])()
  graphdef, params = nnx.split(model, nnx.Param)
  params, notes = model_init.convert_into(params, cfg, flat, layout, path)
  for note in notes:
    logging.info("load_pretrained: %s", note)
  if device is not None:
    params = jax.device_put(params, device)
  model = nnx.merge(graphdef, params)

  tok_path = tokenizer or (path if os.path.isdir(path) else None)
  tok = checkpoint_processing.CheckpointTokenizer.load(tok_path) if tok_path else None
  res, patch = int(arch["image"]["res"]), int(arch["image"]["patch"])
  spec = checkpoint_processing.read_spec(path, layout, res)
  # A patch size that does not divide the processor's size (So400m/14 at 384 px: 27 patches
  # cover 378) leaves a remainder the checkpoint's stride-p convolution never reads: cropping
  # the bottom / right rows and columns away is exact.
  if spec.size // patch != res // patch:
    raise checkpoint_config.CheckpointError(
        path, f"preprocessor_config.json makes {spec.size} px images, the model takes {res}.")
  prepare = lambda frames: checkpoint_processing.prepare_images(frames, spec)[:, :, :res, :res]
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
  prompts = {"views": {v: prompts_lib.VIEW_PROMPTS[v] for v in schema.KNOWN_VIEWS},
             "labels": {l: prompts_lib.LABEL_PROMPTS[l] for l in schema.LABELS},
             "label_views": {l: list(prompts_lib.label_prompt_views(l)) for l in schema.LABELS}}
  m = len(schema.MEASUREMENTS)
  stats = {"mean": dict(zip(schema.MEASUREMENTS, np.zeros(m))),
           "std": dict(zip(schema.MEASUREMENTS, np.ones(m)))}
  return Pretrained(path, config, model, tok, stats, prompts, batch_size=batch_size,
                    device=device,
                    prepare=prepare)
