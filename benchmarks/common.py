"""What the benchmarks share: "dotted.key=value" overrides on a config, the config of a model
size (train_step.py and torch_reference.py time the same one) and a random training batch of
the documented shapes.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np


def final_metrics(workdir: str, required: str) -> dict[str, float] | None:
  """A finished run's logged metrics, every step's merged (later steps win); None while the
  key `required` (a test figure the run writes last) is missing."""
  from echovlm_jax.train import metrics_log  # pylint: disable=g-import-not-at-top
  merged: dict[str, float] = {}
  for row in metrics_log.read_metrics_history(workdir):
    merged.update(row)
  return merged if required in merged else None


def apply_overrides(config: Any, items: Sequence[str]) -> None:
  """Sets each "dotted.key=value" of items on config: the value parsed as JSON (booleans also
  as 1 / 0) and cast to the type of the value it replaces; a string is taken as written."""
  for item in items:
    key, _, raw = item.partition("=")
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    old = node[leaf]
    node[leaf] = raw if isinstance(old, str) else type(old)(json.loads(raw.lower()
                                                                       if isinstance(old, bool)
                                                                       else raw))


def random_batch(config: Any, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch of the documented training shapes (docs/design.md, "Batches").

  frames float32 [B, T, H, W, 1] in [-1, 1]; text / neg_text int32 [B, L] with a caption of
  12..L-1 ids in [2, vocab), one EOS (1) and pad (0) after; the other fields as documented.
  """
  from echovlm_jax.echo import schema
  rng = np.random.default_rng(seed)
  b, t, r = batch_size, config.input.num_frames, config.input.res
  length, vocab = config.input.max_text_len, config.input.vocab_size
  m, k = len(schema.MEASUREMENTS), len(schema.LABELS)

  def captions() -> np.ndarray:
    ids = rng.integers(2, vocab, size=(b, length), dtype=np.int32)
    n = rng.integers(12, length, size=(b, 1))
    pos = np.arange(length)[None]
    return np.where(pos < n, ids, np.where(pos == n, 1, 0)).astype(np.int32)

  return dict(
      frames=rng.uniform(-1, 1, size=(b, t, r, r, 1)).astype(np.float32),
      text=captions(),
      neg_text=captions(),
      has_negation=(rng.random(b) < 0.7).astype(np.float32),
      view=rng.integers(0, len(schema.VIEWS), size=b, dtype=np.int32),
      measurements=rng.normal(size=(b, m)).astype(np.float32),
      meas_mask=(rng.random((b, m)) < 0.3).astype(np.float32),
      text_meas_mask=(rng.random((b, m)) < 0.2).astype(np.float32),
      labels=rng.integers(-1, 2, size=(b, k), dtype=np.int32),
      study_id=rng.integers(0, 2**31 - 1, size=b, dtype=np.int32),
      valid=np.ones(b, np.float32),
  )


def bench_config(size: str, objective: str, dtype: str, batch: int, text_len: int | None = None,
                 res: int | None = None, overrides: Sequence[str] = ()):
  """config for `size` / `objective` with the compute dtype, global batch and (optionally) the
  text length, image resolution and any "dotted.key=value" overrides applied (config.model
  follows config.input)."""
  from configs import echovlm
  config = echovlm.get_config(f"size={size},objective={objective}" + (f",res={res}" if res else ""))
  with config.unlocked():
    config.model.dtype = dtype
    config.batch_size = batch
    if text_len:
      config.input.max_text_len = text_len
    apply_overrides(config, overrides)
  if config.model.text.max_len != config.input.max_text_len:
    raise ValueError("bench_config: config.model.text.max_len no longer follows "
                     "config.input.max_text_len; update benchmarks/common.py.")
  return config
