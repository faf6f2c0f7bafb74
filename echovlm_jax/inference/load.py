"""`load_pretrained`: an exported artifact (checked, restored) or an outside CLIP / SigLIP
checkpoint (interop/external_model.py) as a `Pretrained`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax

from echovlm_jax.inference import artifact
from echovlm_jax.inference import artifact_tokenizer
from echovlm_jax.inference.pretrained import Pretrained


def _load_tokenizer(path: str, config: Mapping[str, Any]):
  """The artifact's tokenizer, checked against the model's vocabulary."""
  kind = artifact_tokenizer.kind_of(config)
  where = (artifact.TOKENIZER_FILE if kind == "sentencepiece"
           else artifact_tokenizer.CHECKPOINT_DIR + "/")
  try:
    tokenizer = artifact_tokenizer.load(path, config)
  except ModuleNotFoundError:
    raise  # a checkpoint tokenizer without transformers: the error names the install command
  except Exception as e:  # noqa: BLE001 - sentencepiece / transformers raise many types
    raise artifact.ArtifactError(path, f"{where} is not a usable {kind} tokenizer "
                                       f"({type(e).__name__}: {e}).") from None
  vocab = int(config["vocab_size"])
  # A checkpoint's embedding table may have more rows than its tokenizer has ids.
  if tokenizer.vocab_size != vocab and not (kind == "checkpoint" and tokenizer.vocab_size < vocab):
    raise artifact.ArtifactError(path, f"{where} has {tokenizer.vocab_size} ids but "
                                       f"{artifact.CONFIG_FILE} says vocab_size={vocab}.")
  return tokenizer


def load_pretrained(path: str | os.PathLike, *, batch_size: int = 32,
                    device: jax.Device | None = None, check_hashes: bool = True,
                    tokenizer: str | None = None, act: str | None = None):
  """Loads an artifact written by `python -m echovlm_jax.tools.export` (a `Pretrained` dual
  encoder, or a `PretrainedDense` for a segmentation / landmark model), or an outside checkpoint:
  a Hugging Face CLIP / SigLIP directory, an open_clip state dict (.safetensors / .bin / .pt)
  or a big_vision .npz (tokenizer: its tokenizer when not in path; act: see
  interop/external_model.load).

  batch_size: images / texts per jitted call (larger inputs are chunked). device: where the
  parameters live (default: jax's first device, an accelerator when there is one).
  check_hashes: verify every file's sha256 against MANIFEST.json (sizes are always checked).
  Raises ArtifactError (naming the path and the problem) for a missing, incomplete, corrupt
  or other-format-version artifact.
  """
  path = os.fspath(path)
  # interop only for outside checkpoints (it needs no transformers to tell them apart).
  from echovlm_jax.interop import weights  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(path, artifact.MANIFEST_FILE)) and (
      os.path.isfile(path) or weights.is_hf_dir(path)):
    from echovlm_jax.interop import external_model  # pylint: disable=g-import-not-at-top
    parts = external_model.load(path, tokenizer=tokenizer, act=act, device=device)
    return Pretrained(path, parts.config, parts.model, parts.tokenizer, parts.stats,
                      parts.prompts, batch_size=batch_size, device=device, prepare=parts.prepare)
  config = artifact.verify_artifact(path, check_hashes=check_hashes)
  if config.get("task") in artifact.DENSE_TASKS:
    from echovlm_jax.inference import dense_pretrained  # pylint: disable=g-import-not-at-top
    return dense_pretrained.PretrainedDense(path, config, artifact.restore_model(path, config, device),
                                            batch_size=batch_size, device=device)
  tokenizer = _load_tokenizer(path, config)
  try:
    with open(os.path.join(path, artifact.STATS_FILE)) as f:
      stats = json.load(f)
    with open(os.path.join(path, artifact.PROMPTS_FILE)) as f:
      prompts = json.load(f)
    missing = [m for m in config["measurements"] if m not in stats["mean"] or m not in stats["std"]]
    missing += [v for v in config["views"] if v not in prompts["views"]]
    missing += [l for l in config["labels"] if l not in prompts["labels"]]
  except (ValueError, KeyError, TypeError) as e:
    raise artifact.ArtifactError(path, f"{artifact.STATS_FILE} / {artifact.PROMPTS_FILE} "
                                       f"malformed ({type(e).__name__}: {e}).") from None
  if missing:
    raise artifact.ArtifactError(path, f"{artifact.STATS_FILE} / {artifact.PROMPTS_FILE} lack "
                                       f"entries for {missing}.")
  model = artifact.restore_model(path, config, device)
  return Pretrained(path, config, model, tokenizer, stats, prompts, batch_size=batch_size,
                    device=device)
