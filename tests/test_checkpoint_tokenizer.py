"""CheckpointTokenizer under tf.data's parallel map: threads calling `encode` (no truncation)
and `encode_batch` (truncated, padded) at once get what one thread gets (issue 20, item 6:
HF fast tokenizers keep padding / truncation on the shared Rust backend)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

pytest.importorskip("transformers")

from echovlm_jax.interop.checkpoint_tokenizer import CheckpointTokenizer  # noqa: E402
from tests import hf_fixtures as F  # noqa: E402

THREADS, ROUNDS = 4, 150


def _texts(seed: int) -> list[str]:
  """Captions of many lengths, most longer than TEXT_LEN ids (truncation matters)."""
  rng = np.random.default_rng(seed)
  words = " ".join(F.CORPUS[:10]).split()
  return [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(8)]


def test_concurrent_encode_and_encode_batch_equal_one_thread(tmp_path):
  F.write_clip_tokenizer(str(tmp_path))
  tok = CheckpointTokenizer.load(str(tmp_path))
  batches = [_texts(i) for i in range(ROUNDS)]
  want_batch = [tok.encode_batch(b, F.TEXT_LEN) for b in batches]
  want_ids = [[tok.encode(t) for t in b] for b in batches]
  assert max(len(i) for ids in want_ids for i in ids) > F.TEXT_LEN   # long texts present
  errors: list[str] = []
  start = threading.Barrier(THREADS)

  def work(k: int) -> None:
    start.wait()
    for r in range(ROUNDS):
      i = (r + k * 37) % ROUNDS
      try:
        if (r + k) % 2:                                  # half the threads' calls: encode
          got = [tok.encode(t) for t in batches[i]]
          if got != want_ids[i]:
            errors.append(f"thread {k} encode round {r}: lengths {[len(g) for g in got]}")
        else:
          got = tok.encode_batch(batches[i], F.TEXT_LEN)
          if got.shape != (8, F.TEXT_LEN) or not np.array_equal(got, want_batch[i]):
            errors.append(f"thread {k} encode_batch round {r}: shape {got.shape}")
      except Exception as e:  # noqa: BLE001 - a ragged batch raises in np.asarray
        errors.append(f"thread {k} round {r}: {type(e).__name__}: {e}")

  threads = [threading.Thread(target=work, args=(k,)) for k in range(THREADS)]
  interval = sys.getswitchinterval()
  sys.setswitchinterval(1e-5)          # switch threads often: races show on every run
  try:
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  finally:
    sys.setswitchinterval(interval)
  assert not errors, f"{len(errors)} of {THREADS * ROUNDS} calls differ: {errors[:3]}"
