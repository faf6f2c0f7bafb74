"""The input pipeline on 8 fake devices: global batch shapes and sharding, batch
contents, determinism, resume from a position, per-host slices, exact-once eval."""

import collections

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from echovlm_jax import distributed, sharding
from echovlm_jax.data import input_pipeline as ip
from echovlm_jax.data import tokenizer as tok_lib
from echovlm_jax.echo import schema

BATCH = 16


@pytest.fixture(scope="module")
def mesh(num_devices):
  return distributed.create_mesh({"data": -1, "fsdp": 2, "tensor": 1})


def _np(batch):
  return {k: np.asarray(v) for k, v in batch.items()}


def _take(it, n):
  return [_np(next(it)) for _ in range(n)]


def test_train_batch_is_global_sharded_and_shaped(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  batch = next(ip.make_train_iterator(ic, BATCH, mesh, seed=0))
  t, r, m, k, l = ic.num_frames, ic.res, len(schema.MEASUREMENTS), len(schema.LABELS), ic.max_text_len
  expected = {"frames": ((BATCH, t, r, r, 1), np.float32), "text": ((BATCH, l), np.int32),
              "neg_text": ((BATCH, l), np.int32), "has_negation": ((BATCH,), np.float32),
              "view": ((BATCH,), np.int32), "measurements": ((BATCH, m), np.float32),
              "meas_mask": ((BATCH, m), np.float32), "text_meas_mask": ((BATCH, m), np.float32),
              "labels": ((BATCH, k), np.int32),
              "study_id": ((BATCH,), np.int32), "caption_id": ((BATCH,), np.int32),
              "valid": ((BATCH,), np.float32), "source": ((BATCH,), np.int32)}
  assert set(batch) == set(expected)
  for key, (shape, dtype) in expected.items():
    x = batch[key]
    assert isinstance(x, jax.Array) and x.shape == shape and x.dtype == dtype, key
    assert x.sharding.is_equivalent_to(sharding.batch_sharding(mesh), x.ndim), key
    assert len(x.addressable_shards) == 8 and x.addressable_shards[0].data.shape[0] == BATCH // 8


def test_train_batch_contents(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  b = _np(next(ip.make_train_iterator(ic, BATCH, mesh, seed=0)))
  assert b["frames"].min() >= -1.0 and b["frames"].max() <= 1.0 and b["frames"].std() > 0.05
  assert (b["valid"] == 1).all()
  # Every caption ends with EOS then padding.
  for row in b["text"]:
    n = int(np.argmax(row == tok_lib.EOS_ID))
    assert row[n] == tok_lib.EOS_ID and (row[:n] > tok_lib.EOS_ID).all() and (row[n + 1:] == 0).all()
  assert ((b["neg_text"] != 0).any(1) == (b["has_negation"] > 0)).all()
  # meas_mask: only measurements the example's view shows; z-scores 0 where masked-absent.
  view_mask = ip.view_measurement_mask()[b["view"]]
  assert (b["meas_mask"] <= view_mask).all()
  assert b["meas_mask"].sum() > 0
  # text_meas_mask: what the (possibly shortened) caption still states, one statement each
  # (a caption of unknown view states its study's values, which the image may not show).
  known = b["view"] != schema.UNKNOWN_VIEW_ID
  assert (b["text_meas_mask"][known] <= b["meas_mask"][known]).all()
  tok = ip.load_tokenizer(ic)
  captions = [tok.decode(row) for row in b["text"]]
  for text, stated in zip(captions, b["text_meas_mask"]):
    assert text.count(". ") == int(stated.sum())
  # caption_id: equal exactly for equal captions (what the losses mask as duplicates).
  for i in range(BATCH):
    for j in range(BATCH):
      assert (b["caption_id"][i] == b["caption_id"][j]) == (captions[i] == captions[j])
  assert np.isfinite(b["measurements"]).all()
  assert set(np.unique(b["labels"])) <= {-1, 0, 1}


def test_meas_mask_and_zscores_match_the_raw_examples(tiny_echoground, mesh):
  ic, builder = tiny_echoground
  data = ip.EchogroundData(ic)
  raw = list(tfds.as_numpy(builder.as_dataset("validation")))
  got = _np(next(ip.make_eval_iterator(ic, "validation", 8, mesh)))
  for i, ex in enumerate(raw[:8]):
    present = np.isfinite(ex["measurements"])
    shown = np.isin(schema.MEASUREMENTS, schema.view_measurements(schema.VIEWS[ex["view"]]))
    np.testing.assert_array_equal(got["meas_mask"][i], (present & shown).astype(np.float32))
    z = np.where(present, (ex["measurements"] - data.mean) / data.std, 0.0)
    np.testing.assert_allclose(got["measurements"][i], z, rtol=1e-5, atol=1e-5)
    assert got["study_id"][i] == ip.fold_study_id(ex["study_id"])


def test_train_iterator_is_deterministic_for_a_seed(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  a = _take(ip.make_train_iterator(ic, BATCH, mesh, seed=3), 2)
  b = _take(ip.make_train_iterator(ic, BATCH, mesh, seed=3), 2)
  c = _take(ip.make_train_iterator(ic, BATCH, mesh, seed=4), 2)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  assert not np.array_equal(a[0]["frames"], c[0]["frames"])


def test_resume_from_a_position_gives_the_same_next_batches(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  it = ip.make_train_iterator(ic, BATCH, mesh, seed=1)
  spe = it.steps_per_epoch
  n = spe + 2  # crosses an epoch boundary
  full = _take(it, n + 1)
  assert it.position == n + 1
  for start in (1, spe, n):
    resumed = ip.make_train_iterator(ic, BATCH, mesh, seed=1, start_step=start)
    nxt = _np(next(resumed))
    for k in nxt:
      np.testing.assert_array_equal(nxt[k], full[start][k], err_msg=f"start={start} {k}")
  # A new epoch is a new order / new augmentation, not a replay of the first.
  assert not np.array_equal(full[0]["frames"], full[spe]["frames"])


def test_host_slices_are_disjoint_and_cover_the_split(tiny_echoground):
  ic, builder = tiny_echoground
  data = ip.EchogroundData(ic)
  n = builder.info.splits["train"].num_examples
  seen = collections.Counter()
  sizes = []
  for pi in range(3):
    sub, n_local, n_max = data.host_split("train", process_index=pi, process_count=3)
    keys = [(int(e["study_id"]), int(e["view"]), e["frames"].tobytes())
            for e in tfds.as_numpy(builder.as_dataset(sub))]
    assert len(keys) == n_local and n_local <= n_max == -(-n // 3)
    seen.update(keys)
    sizes.append(n_local)
  assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
  all_keys = collections.Counter((int(e["study_id"]), int(e["view"]), e["frames"].tobytes())
                                 for e in tfds.as_numpy(builder.as_dataset("train")))
  assert seen == all_keys


@pytest.mark.parametrize("split,batch", [("validation", 8), ("test", 16)])
def test_eval_iterator_sees_every_example_exactly_once(tiny_echoground, mesh, split, batch):
  ic, builder = tiny_echoground
  data = ip.EchogroundData(ic)
  raw = list(tfds.as_numpy(builder.as_dataset(split)))
  want = collections.Counter(
      (int(ip.fold_study_id(e["study_id"])), int(e["view"]),
       tuple(data.tokenizer.encode_batch([e["caption"]], ic.max_text_len)[0])) for e in raw)
  batches = [_np(b) for b in ip.make_eval_iterator(ic, split, batch, mesh)]
  assert len(batches) == ip.eval_num_batches(ic, split, batch) == -(-len(raw) // batch)
  got = collections.Counter()
  for b in batches:
    assert b["frames"].shape[0] == batch
    for i in np.nonzero(b["valid"])[0]:
      got[(int(b["study_id"][i]), int(b["view"][i]), tuple(b["text"][i]))] += 1
    pad = b["valid"] == 0
    assert (b["text"][pad] == 0).all() and (b["frames"][pad] == 0).all()
  assert got == want


def test_eval_frames_are_not_augmented_and_train_ones_are(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  a = _np(next(ip.make_eval_iterator(ic, "validation", 8, mesh)))
  b = _np(next(ip.make_eval_iterator(ic, "validation", 8, mesh)))
  np.testing.assert_array_equal(a["frames"], b["frames"])
  plain = ic.copy_and_resolve_references()
  plain.augment, plain.fit_statements = False, False  # fitting is its own switch
  frames_only = ic.copy_and_resolve_references()
  frames_only.caption_subsample, frames_only.fit_statements = 0.0, False
  x = _np(next(ip.make_train_iterator(plain, BATCH, mesh, seed=0)))
  y = _np(next(ip.make_train_iterator(frames_only, BATCH, mesh, seed=0)))
  np.testing.assert_array_equal(x["text"], y["text"])  # same examples, same order
  assert not np.allclose(x["frames"], y["frames"])      # only the augmentation differs


def test_caption_subsampling_shortens_some_training_captions_only(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  full = ic.copy_and_resolve_references()
  full.caption_subsample = 0.0
  cut = ic.copy_and_resolve_references()
  cut.caption_subsample, cut.statement_keep = 1.0, 0.0  # every caption: its view sentence only
  x = _np(next(ip.make_train_iterator(full, BATCH, mesh, seed=0)))
  y = _np(next(ip.make_train_iterator(cut, BATCH, mesh, seed=0)))
  np.testing.assert_array_equal(x["frames"], y["frames"])  # the image stream is untouched
  tok = ip.load_tokenizer(ic)
  for a, b in zip(x["text"], y["text"]):
    full_text, cut_text = tok.decode(a), tok.decode(b)
    assert full_text.startswith(cut_text.rstrip(".")), (full_text, cut_text)
    assert cut_text.count(". ") == 0 and len(cut_text) <= len(full_text)
  # A bare view sentence states no finding, so no pair keeps a negation.
  assert (y["has_negation"] == 0).all() and (y["neg_text"] == 0).all()
  assert (x["has_negation"] > 0).any()
  # Evaluation never subsamples.
  e1 = _np(next(ip.make_eval_iterator(full, "validation", 8, mesh)))
  e2 = _np(next(ip.make_eval_iterator(cut, "validation", 8, mesh)))
  np.testing.assert_array_equal(e1["text"], e2["text"])


def test_fit_statements_drops_statements_of_long_training_captions_only(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  tail = ic.copy_and_resolve_references()
  tail.caption_subsample, tail.fit_statements = 0.0, False
  fit = ic.copy_and_resolve_references()
  fit.caption_subsample, fit.fit_statements = 0.0, True
  tok = ip.load_tokenizer(ic)
  steps = 4
  x = _take(ip.make_train_iterator(tail, BATCH, mesh, seed=0), steps)
  y = _take(ip.make_train_iterator(fit, BATCH, mesh, seed=0), steps)
  rows = lambda bs, k: np.concatenate([b[k] for b in bs])
  np.testing.assert_array_equal(rows(x, "frames"), rows(y, "frames"))
  long_rows = 0
  for a, b in zip(rows(x, "text"), rows(y, "text")):
    truncated = np.nonzero(a == tok_lib.EOS_ID)[0][0] == ic.max_text_len - 1
    full_text, fitted = tok.decode(a), tok.decode(b)
    sentences = lambda t: [x.rstrip(".") for x in t.split(". ")]
    # Whole statements only, the view sentence first, and nothing cut mid-sentence.
    assert fitted.endswith(".") and sentences(fitted)[0] == sentences(full_text)[0]
    if truncated:
      long_rows += 1
    else:  # it fitted (its negated partner may not have): a subset of its statements
      assert set(sentences(fitted)) <= set(sentences(full_text)), (full_text, fitted)
  assert long_rows > 0, "the tiny dataset should have captions longer than max_text_len"
  # Pairs stay pairs: a negated caption is the same length in sentences as its caption.
  for t, n, h in zip(rows(y, "text"), rows(y, "neg_text"), rows(y, "has_negation")):
    if h > 0:
      assert tok.decode(t).count(". ") == tok.decode(n).count(". ")
  e1 = _np(next(ip.make_eval_iterator(tail, "validation", 8, mesh)))
  e2 = _np(next(ip.make_eval_iterator(fit, "validation", 8, mesh)))
  np.testing.assert_array_equal(e1["text"], e2["text"])  # evaluation reads captions as stored


def test_bad_batch_size_is_a_clear_error(tiny_echoground, mesh):
  ic, _ = tiny_echoground
  with pytest.raises(ValueError, match="divisible"):
    ip.make_train_iterator(ic, 12, mesh, seed=0)


@pytest.mark.parametrize("kind", ip.KINDS)
def test_a_kept_subset_reads_exactly_what_filtering_everything_reads(tiny_dense_echoground, kind):
  """With a keep predicate, frames (and masks) are decoded after the filter: the same
  examples, in the same order, with the same pixels, as decoding first."""
  from echovlm_jax.data import labelled
  ic, builder = tiny_dense_echoground
  data = ip.EchogroundData(ic, kind)
  keep = lambda ex: ex["dense_truth"] & labelled.in_patient_share(ex["patient_id"], 0.5)
  want = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False,
                                               decoders=data.decoders).filter(keep)))
  got = list(tfds.as_numpy(data.read("train", keep, shuffle_files=False)))
  assert 0 < len(got) == len(want) < builder.info.splits["train"].num_examples
  for g, w in zip(got, want):
    assert g["patient_id"] == w["patient_id"] and g["caption"] == w["caption"]
    np.testing.assert_array_equal(g["frames"], w["frames"])
    if kind == "dense":
      np.testing.assert_array_equal(g["masks"], w["masks"])
    else:
      assert g["masks"] == w["masks"]          # still the undecoded bytes, as before
