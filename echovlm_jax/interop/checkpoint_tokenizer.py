"""An outside checkpoint's own tokenizer class, loaded by transformers (CLIP's byte-level BPE,
SigLIP's sentencepiece), padded to the full length as the model expects, with the interface
of data/tokenizer.Tokenizer so the input pipeline can use it.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Sequence

import numpy as np

from echovlm_jax.interop import optional_deps


class CheckpointTokenizer:
  """A checkpoint's tokenizer with data/tokenizer.Tokenizer's interface: `vocab_size`,
  `encode` (ids without special tokens), `encode_batch(texts, max_len)` (int32 [N, max_len],
  special tokens added, truncated, padded to max_len), `tf_encode_batch`, `decode`.

  Safe to call from several threads (tf.data's parallel map does): every call into the
  transformers tokenizer holds one lock. A fast tokenizer keeps padding and truncation on its
  shared Rust backend and each call re-sets them, so an `encode` (no truncation) racing an
  `encode_batch` (max_length) gave ragged or untruncated ids (34 of 600 batches, 2 + 2
  threads). A lock, not our own padding and truncation: it covers whatever state a tokenizer
  class or transformers version keeps between calls. Its price is serialised tokenizing:
  the pipeline tokenizes once per batch, ~4 ms for 64 captions on one CPU core."""

  def __init__(self, tok: Any, source: str):
    self._tok, self.source = tok, source
    self._lock = threading.Lock()

  @classmethod
  def load(cls, path: str) -> "CheckpointTokenizer":
    """An HF model / tokenizer directory, or a sentencepiece .model file (SigLIP's)."""
    transformers = optional_deps.require("transformers", f"the checkpoint tokenizer {path}")
    if os.path.isfile(path) and path.endswith(".model"):
      tok = transformers.SiglipTokenizer(vocab_file=path)
    else:
      tok = transformers.AutoTokenizer.from_pretrained(path)
    return cls(tok, path)

  def save(self, directory: str) -> None:
    """The tokenizer's files (transformers' save_pretrained) in directory, which `load` reads."""
    with self._lock:
      self._tok.save_pretrained(directory)

  @property
  def vocab_size(self) -> int:
    return len(self._tok)

  @property
  def num_special_tokens(self) -> int:
    """Ids encode_batch adds to a text (CLIP: start and end of text; SigLIP: end)."""
    return int(self._tok.num_special_tokens_to_add())

  def encode(self, text: str) -> list[int]:
    # verbose=False: lengths beyond the model's are expected here (caption fitting measures them).
    with self._lock:
      return list(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

  def decode(self, ids: Sequence[int]) -> str:
    with self._lock:
      return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def encode_batch(self, texts: Sequence[str | bytes], max_len: int) -> np.ndarray:
    texts = [t.decode("utf-8") if isinstance(t, (bytes, np.bytes_)) else str(t) for t in texts]
    if not texts:
      return np.zeros((0, max_len), np.int32)
    with self._lock:
      ids = self._tok(texts, padding="max_length", truncation=True, max_length=max_len)
    return np.asarray(ids["input_ids"], np.int32)

  def tf_encode_batch(self, texts, max_len: int):
    """Graph version for tf.data: string [N] -> int32 [N, max_len]."""
    import tensorflow as tf  # noqa: PLC0415
    ids = tf.numpy_function(lambda t: self.encode_batch(list(t), max_len), [texts], tf.int32,
                            stateful=False)
    return tf.ensure_shape(ids, [None, max_len])
