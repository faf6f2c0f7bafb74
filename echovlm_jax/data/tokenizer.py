"""The caption tokenizer: train a sentencepiece model on captions, load it by path,
and turn text into fixed-length int32 id arrays (pad 0, EOS 1, unk 2, no BOS).

The model is trained when the dataset is built and stored next to it
(`TOKENIZER_FILENAME` in the builder's data_dir), so a checkpoint, an evaluator
and the input pipeline all read the same vocabulary.
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from echovlm_jax.data import fileio

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
TOKENIZER_FILENAME = "echoground.spm.model"


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_type: str = "bpe") -> bytes:
  """Trains a sentencepiece model on `texts`; returns the serialized model proto.

  Deterministic for the same texts in the same order: one thread, no input
  sampling or shuffling. `hard_vocab_limit=False` because a small caption
  corpus has fewer distinct pieces than `vocab_size`; the real vocabulary may
  then be smaller, never larger. Digits are split so numbers ("LVEF 45 %")
  share pieces, and text is case-folded so user prompts match any casing.
  BPE by default: on templated captions unigram stalls near character level
  (~190 pieces, a PLAX caption ~210 tokens) while BPE learns whole words
  (~900 pieces, the same caption ~110 tokens).
  """
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("train_tokenizer: no non-empty text to train on (empty train split?).")
  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=proto,
      vocab_size=int(vocab_size),
      hard_vocab_limit=False,
      model_type=model_type,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      split_digits=True,
      normalization_rule_name="nmt_nfkc_cf",
      character_coverage=1.0,
      num_threads=1,
      shuffle_input_sentence=False,
      input_sentence_size=0,
      minloglevel=2,
  )
  return proto.getvalue()


class Tokenizer:
  """A loaded sentencepiece model with fixed-length batch encoding."""

  def __init__(self, model_proto: bytes):
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    if self._sp.pad_id() != PAD_ID or self._sp.eos_id() != EOS_ID:
      raise ValueError(f"sentencepiece model has pad_id={self._sp.pad_id()}, eos_id={self._sp.eos_id()}; "
                       f"expected pad={PAD_ID}, eos={EOS_ID} (train it with train_tokenizer).")

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Tokenizer":
    """Loads a model written by `save` / the dataset build (a `.model` file)."""
    return cls(fileio.read_bytes(os.fspath(path)))

  def save(self, path: str | os.PathLike) -> None:
    fileio.write_bytes(os.fspath(path), self._proto)  # whole: a reader never sees half a model

  @property
  def model_proto(self) -> bytes:
    return self._proto

  @property
  def vocab_size(self) -> int:
    """Number of ids the model can emit (may be below the requested vocab_size)."""
    return self._sp.vocab_size()

  def encode(self, text: str) -> list[int]:
    """Ids of one text, without EOS or padding."""
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ids; padding and EOS are dropped."""
    return self._sp.decode([int(i) for i in ids if int(i) not in (PAD_ID, EOS_ID)])

  def encode_batch(self, texts: Sequence[str | bytes], max_len: int) -> np.ndarray:
    """Encodes texts into int32 [N, max_len]: ids, then EOS, then PAD (0).

    Too-long texts are truncated to max_len - 1 ids and still end with EOS, so a
    text tower that pools at EOS always finds one. An empty string gives an
    all-pad row (used for "no negated caption").
    """
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1, got {max_len}.")
    texts = [t.decode("utf-8") if isinstance(t, (bytes, np.bytes_)) else str(t) for t in texts]
    out = np.full((len(texts), max_len), PAD_ID, dtype=np.int32)
    if not texts:
      return out
    for row, (text, ids) in enumerate(zip(texts, self._sp.encode(texts))):
      if not text:
        continue
      ids = ids[:max_len - 1] + [EOS_ID]
      out[row, :len(ids)] = ids
    return out

  def tf_encode_batch(self, texts, max_len: int):
    """Graph version of encode_batch for tf.data: string [N] -> int32 [N, max_len].

    Runs sentencepiece through tf.numpy_function; call it on batched strings so
    the Python hop is paid once per batch, not once per example.
    """
    import tensorflow as tf  # only the input pipeline needs tf; keep eval / export light
    ids = tf.numpy_function(lambda t: self.encode_batch(list(t), max_len), [texts], tf.int32,
                            stateful=False)
    return tf.ensure_shape(ids, [None, max_len])
