"""One embedding pass over an eval split, and the prompt embeddings for zero-shot.

Runs a jitted encode on the mesh batch by batch, gathers every host's rows to
host memory as NumPy and drops padding, so every evaluator sees each example once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from echovlm_jax import sharding
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import metrics
from echovlm_jax.scoring import average_prompts  # its home: shared with inference/

# Batch fields carried to host next to the embeddings (all per example).
_HOST_FIELDS = ("view", "labels", "measurements", "meas_mask", "has_negation", "study_id", "text")

EncodeFn = Callable[[Mapping[str, Any]], Mapping[str, jax.Array]]


def _eval_view(model: nnx.Module) -> nnx.Module:
  # Dropout and friends off, weights shared; models without such layers pass through.
  return nnx.view(model, deterministic=True, raise_if_not_found=False)


@functools.partial(jax.jit, static_argnums=0)
def _encode_batch(graphdef, state, frames, text, neg_text):
  model = nnx.merge(graphdef, state)
  return dict(image_emb=model.encode_image(frames), text_emb=model.encode_text(text),
              neg_text_emb=model.encode_text(neg_text))


@functools.partial(jax.jit, static_argnums=0)
def _encode_text(graphdef, state, tokens):
  return nnx.merge(graphdef, state).encode_text(tokens)


def make_encode_fn(model: nnx.Module) -> EncodeFn:
  """batch -> dict(image_emb, text_emb, neg_text_emb) [B, d], jitted.

  The jit is keyed on the model's graphdef, so repeated evaluations of the same
  architecture (every eval step of a run) compile once.
  """
  graphdef, state = nnx.split(_eval_view(model))
  return lambda batch: _encode_batch(graphdef, state, batch["frames"], batch["text"],
                                     batch["neg_text"])


def to_host(x) -> np.ndarray:
  """A global (possibly multi-host sharded) array -> the full NumPy array on every host."""
  if isinstance(x, jax.Array) and jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _on_mesh(batch: Mapping[str, Any], mesh: jax.sharding.Mesh | None) -> dict:
  """Host-local NumPy batches (tests, ad-hoc use) become batch-sharded global arrays;
  batches that are jax.Arrays already (the input pipeline's) pass through."""
  if mesh is None:
    return dict(batch)
  host = {k: v for k, v in batch.items() if not isinstance(v, jax.Array)}
  return {**dict(batch), **sharding.shard_batch(host, mesh)} if host else dict(batch)


def compute_embeddings(model_or_encode_fn: nnx.Module | EncodeFn, eval_iterator: Iterable[Mapping],
                       mesh: jax.sharding.Mesh | None = None,
                       max_batches: int | None = None) -> dict[str, np.ndarray]:
  """Embeds a whole eval split once; returns host arrays without padding rows.

  eval_iterator yields global batches (docs/design.md, "Batches") with `valid` [B]. Returns
  image_emb, text_emb, neg_text_emb [N, d] float32; view [N]; labels [N, K];
  measurements, meas_mask [N, M]; has_negation [N]; study_id [N]; text [N, L];
  caption_id [N] (equal for identical captions). N = number of valid examples.
  """
  encode = (model_or_encode_fn if not isinstance(model_or_encode_fn, nnx.Module)
            else make_encode_fn(model_or_encode_fn))
  parts: dict[str, list[np.ndarray]] = {}
  for i, batch in enumerate(eval_iterator):
    if max_batches is not None and i >= max_batches:
      break
    batch = _on_mesh(batch, mesh)
    out = dict(encode(batch))
    out.update({k: batch[k] for k in _HOST_FIELDS})
    valid = to_host(batch["valid"]) > 0
    for k, v in out.items():
      parts.setdefault(k, []).append(to_host(v)[valid])
  if not parts:
    raise ValueError("compute_embeddings: the eval iterator yielded no batches; is the split empty?")
  emb = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
  for k in ("image_emb", "text_emb", "neg_text_emb", "measurements", "meas_mask", "has_negation"):
    emb[k] = emb[k].astype(np.float32)
  for k in ("view", "labels", "study_id"):
    emb[k] = emb[k].astype(np.int64)
  emb["caption_id"] = metrics.caption_ids(emb["text"])
  return emb


# --- Prompts ------------------------------------------------------------------

def encode_texts(model: nnx.Module, tokenizer, texts: Sequence[str], max_len: int) -> np.ndarray:
  """Texts -> [n, d] L2-normalised embeddings (one jitted call; prompt sets are small)."""
  tokens = np.asarray(tokenizer.encode_batch(list(texts), max_len), np.int32)
  graphdef, state = nnx.split(_eval_view(model))
  return to_host(_encode_text(graphdef, state, tokens)).astype(np.float32)


def prompt_embeddings(model: nnx.Module, tokenizer, max_len: int,
                      view_prompts: Mapping[str, Sequence[str]] | None = None,
                      label_prompts: Mapping[str, Mapping[str, Sequence[str]]] | None = None
                      ) -> dict[str, np.ndarray]:
  """Zero-shot class embeddings, encoded once per evaluation.

  Defaults to `echo/prompts.py`. Returns views [V, d] (schema.KNOWN_VIEWS order),
  label_pos [K, d] and label_neg [K, d] (schema.LABELS order).
  """
  if view_prompts is None or label_prompts is None:
    from echovlm_jax.echo import prompts
    view_prompts = prompts.VIEW_PROMPTS if view_prompts is None else view_prompts
    label_prompts = prompts.LABEL_PROMPTS if label_prompts is None else label_prompts
  missing = [v for v in schema.KNOWN_VIEWS if not view_prompts.get(v)]
  missing += [l for l in schema.LABELS if not label_prompts.get(l, {}).get("positive")
              or not label_prompts.get(l, {}).get("negative")]
  if missing:
    raise ValueError(f"echo/prompts.py: no prompts for {missing}; every known view needs "
                     "VIEW_PROMPTS and every label LABEL_PROMPTS positive and negative.")
  groups: list[list[str]] = [list(view_prompts[v]) for v in schema.KNOWN_VIEWS]
  groups += [list(label_prompts[l]["positive"]) for l in schema.LABELS]
  groups += [list(label_prompts[l]["negative"]) for l in schema.LABELS]
  flat = [t for g in groups for t in g]
  pooled = average_prompts(encode_texts(model, tokenizer, flat, max_len), [len(g) for g in groups])
  v, k = len(schema.KNOWN_VIEWS), len(schema.LABELS)
  return dict(views=pooled[:v], label_pos=pooled[v:v + k], label_neg=pooled[v + k:])
