"""The sentencepiece tokenizer: special ids, fixed-length batches, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from echovlm_jax.data import tokenizer as tok_lib

CORPUS = [
    "Parasternal long axis view. The left ventricle is severely dilated (LVIDd 6.4 cm).",
    "Apical four-chamber view. Left ventricular ejection fraction is 35 %, moderately reduced.",
    "Apical four-chamber view. No pericardial effusion. TAPSE 2.1 cm, normal RV function.",
    "Continuous-wave Doppler through the aortic valve. Peak velocity 4.2 m/s, severe aortic stenosis.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
  return tok_lib.Tokenizer(tok_lib.train_tokenizer(CORPUS, vocab_size=200))


def test_special_ids_and_small_corpus_vocab(tokenizer):
  # hard_vocab_limit=False: a tiny corpus trains fine and gives fewer pieces than asked.
  assert 3 < tokenizer.vocab_size <= 200
  ids = tokenizer.encode_batch(["no pericardial effusion"], max_len=16)[0]
  n = int(np.argmax(ids == tok_lib.EOS_ID))
  assert n > 0 and (ids[:n] > tok_lib.EOS_ID).all() and (ids[n + 1:] == tok_lib.PAD_ID).all()
  assert tokenizer.decode(ids) == "no pericardial effusion"


def test_encode_batch_truncates_keeping_eos_and_pads_empty(tokenizer):
  long = " ".join(CORPUS[:4])
  out = tokenizer.encode_batch([long, "", b"lvef 35 %"], max_len=8)
  assert out.dtype == np.int32 and out.shape == (3, 8)
  assert out[0, -1] == tok_lib.EOS_ID and (out[0, :-1] > tok_lib.EOS_ID).all()
  assert (out[1] == tok_lib.PAD_ID).all()  # "" = no negated caption: all pad
  assert tok_lib.EOS_ID in out[2]


def test_training_is_deterministic_and_roundtrips_by_path(tmp_path, tokenizer):
  again = tok_lib.train_tokenizer(CORPUS, vocab_size=200)
  assert again == tokenizer.model_proto
  path = tmp_path / tok_lib.TOKENIZER_FILENAME
  tokenizer.save(path)
  loaded = tok_lib.Tokenizer.load(path)
  np.testing.assert_array_equal(loaded.encode_batch(CORPUS[:3], 24), tokenizer.encode_batch(CORPUS[:3], 24))


def test_tf_graph_version_matches_numpy(tokenizer):
  texts = CORPUS[:3] + [""]
  ds = tf.data.Dataset.from_tensor_slices(texts).batch(4).map(lambda t: tokenizer.tf_encode_batch(t, 12))
  (got,) = list(ds.as_numpy_iterator())
  np.testing.assert_array_equal(got, tokenizer.encode_batch(texts, 12))


def test_empty_corpus_is_a_clear_error():
  with pytest.raises(ValueError, match="no non-empty text"):
    tok_lib.train_tokenizer(["", ""], vocab_size=50)
