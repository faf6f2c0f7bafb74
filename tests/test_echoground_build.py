"""Building `echoground`: the tiny synthetic config and a fake MIMIC-IV-ECHO tree.

Pins: patient-disjoint splits, several shards, artifacts next to the data, text from
`echo/` (never the builder), no header PHI in any written byte, burned-in text
masked, and every bad input counted instead of crashing the build.
"""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from echovlm_jax.data import build
from echovlm_jax.data import tokenizer as tok_lib
from echovlm_jax.echo import guidelines, negation, schema
from tests.echoground_fixtures import tiny_input_config
from echovlm_jax.data import artifacts
from tfds_builders.echoground import records


def _examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split)))


def _meas_dict(vec):
  return {n: float(v) for n, v in zip(schema.MEASUREMENTS, vec) if np.isfinite(v)}


# ----------------------------------------------------------------------------- synthetic


def test_splits_are_patient_disjoint_and_sharded(tiny_echoground):
  ic, builder = tiny_echoground
  patients = {}
  for split in records.SPLITS:
    info = builder.info.splits[split]
    assert info.num_examples > 0 and info.num_shards == ic.num_shards
    patients[split] = {int(e["patient_id"]) for e in _examples(builder, split)}
  assert not patients["train"] & patients["validation"]
  assert not patients["train"] & patients["test"]
  assert not patients["validation"] & patients["test"]
  assert sum(map(len, patients.values())) == ic.synthetic_patients
  assert len(patients["train"]) == ic.synthetic_patients - 2


def test_features_labels_and_negations_come_from_echo(tiny_echoground):
  ic, builder = tiny_echoground
  exs = _examples(builder, "train")
  assert exs[0]["frames"].shape == (ic.num_frames, ic.image_size, ic.image_size, 1)
  assert exs[0]["frames"].dtype == np.uint8
  for e in exs:
    sex = e["sex"].decode() or None
    meas = _meas_dict(e["measurements"])
    assert meas and all(schema.is_plausible(n, v) for n, v in meas.items())
    want = guidelines.derive_labels(meas, sex)
    np.testing.assert_array_equal(e["labels"], [want[l] for l in schema.LABELS])
    neg = negation.negate(e["caption"].decode())
    assert e["has_negation"] == (neg is not None)
    assert e["negated_caption"].decode() == (neg or "")
    assert e["source"] == b"synthetic" and e["sex"] in (b"M", b"F", b"")
  assert any(e["has_negation"] for e in exs)


def test_artifacts_next_to_the_dataset(tiny_echoground):
  ic, builder = tiny_echoground
  d = builder.data_dir
  tok = tok_lib.Tokenizer.load(os.path.join(d, artifacts.TOKENIZER_FILENAME))
  assert 10 < tok.vocab_size <= ic.vocab_size
  caption = _examples(builder, "validation")[0]["caption"].decode()
  assert tok_lib.UNK_ID not in tok.encode(caption)  # trained on the captions' language
  mean, std = artifacts.load_stats(d)
  assert mean.shape == std.shape == (len(schema.MEASUREMENTS),) and (std > 0).all()
  # Stats are over train studies, one value per study.
  studies = {}
  for e in _examples(builder, "train"):
    studies[int(e["study_id"])] = e["measurements"]
  lvef = np.array([m[0] for m in studies.values()])
  lvef = lvef[np.isfinite(lvef)]
  np.testing.assert_allclose(mean[0], lvef.mean(), rtol=1e-5)
  report = artifacts.load_report(d)
  assert report["examples"] == {s: builder.info.splits[s].num_examples for s in records.SPLITS}
  assert report["patients"]["validation"] == report["patients"]["test"] == 1
  assert not os.path.exists(os.path.join(d, "_source_records.spill"))


def test_ensure_dataset_reuses_a_prepared_dataset(tiny_echoground):
  ic, builder = tiny_echoground
  mtime = os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json"))
  again = build.ensure_dataset(ic)
  assert again.data_dir == builder.data_dir
  assert os.path.getmtime(os.path.join(builder.data_dir, "dataset_info.json")) == mtime


def test_config_names_spell_out_non_default_parameters(tmp_path):
  ic = tiny_input_config(tmp_path)
  cfg = build.builder_config_for(ic)
  assert cfg.name == "synthetic_p12_s0_i32_t2_v256"
  assert (cfg.num_patients, cfg.image_size, cfg.num_frames, cfg.num_shards) == (12, 32, 2, 3)
  default = tiny_input_config(tmp_path, synthetic_patients=2000, image_size=0, res=112, num_frames=1,
                              vocab_size=1024)
  assert build.builder_config_for(default).name == "synthetic"
  assert build.get_builder(default).builder_config.name == "synthetic"  # the registered one
  mimic = tiny_input_config(tmp_path, builder_config="mimic", image_size=0, res=112, num_frames=1,
                            vocab_size=1024)
  assert build.get_builder(mimic).builder_config.name == "mimic"


# ----------------------------------------------------------------------------- records


def _good_record(**over):
  rec = dict(frames=np.full((1, 8, 8), 7, np.uint8), view="a4c",
             measurements={"lvef": 40.0, "tapse": 1.5}, sex="F",
             patient_key="P1", study_key="S1", source="synthetic")
  rec.update(over)
  return rec


def test_bad_records_are_skipped_and_counted_never_fatal():
  maker = records.ExampleMaker(num_frames=1, image_size=8)
  bad = {
      "frames_wrong_shape": _good_record(frames=np.zeros((1, 9, 8), np.uint8)),
      "frames_not_uint8": _good_record(frames=np.zeros((1, 8, 8), np.float32)),
      "frames_blank": _good_record(frames=np.zeros((1, 8, 8), np.uint8)),
      "invalid_view_name": _good_record(view="apical-ish"),
      "missing_patient_or_study_key": _good_record(patient_key=""),
      "study_without_valid_measurements": _good_record(measurements={"lvef": float("nan"), "lvidd": 45.0}),
      "record_not_a_mapping": None,
  }
  for reason, rec in bad.items():
    assert maker(f"k-{reason}", rec) is None
  assert dict(maker.skipped) == {r: 1 for r in bad}
  assert not maker.values_dropped  # counts of skipped records are not committed
  key, ex = maker("ok", _good_record(measurements={"lvef": 40.0, "lvidd": 45.0, "bogus": 1.0,
                                                   "tapse": float("nan")}, sex="X"))
  assert maker("ok", _good_record()) is None and maker.skipped["duplicate_key"] == 1
  assert dict(maker.values_dropped) == {"implausible_value:lvidd": 1, "unknown_measurement_name": 1,
                                        "absent_value:tapse": 1, "invalid_sex_recorded_unknown": 1}
  assert ex["sex"] == "" and np.isnan(ex["measurements"][schema.MEASUREMENTS.index("lvidd")])
  assert ex["frames"].shape == (1, 8, 8, 1)
  assert isinstance(ex["patient_id"], int) and "P1" not in json.dumps(
      {k: v for k, v in ex.items() if k not in ("frames", "measurements", "labels")})


def test_caption_code_errors_are_counted(monkeypatch):
  from echovlm_jax.echo import captions
  monkeypatch.setattr(captions, "make_caption", lambda *a, **k: 1 / 0)
  maker = records.ExampleMaker(num_frames=1, image_size=8)
  assert maker("k", _good_record()) is None
  assert maker.skipped == {"error:ZeroDivisionError": 1}


def test_patient_split_is_deterministic_exact_and_non_empty():
  ids = [records.stable_int64("patient", "synthetic", f"p{i}") for i in range(600)]
  a, b = records.split_patients(ids), records.split_patients(reversed(ids))
  assert a == b
  assert collections.Counter(a.values()) == {"train": 480, "validation": 60, "test": 60}
  small = collections.Counter(records.split_patients(ids[:4]).values())
  assert small == {"train": 2, "validation": 1, "test": 1}


# ----------------------------------------------------------------------------- mimic


@pytest.fixture(scope="module")
def fake_mimic(tmp_path_factory):
  from echovlm_jax.data import fake_mimic as fm
  root = tmp_path_factory.mktemp("mimic_manual")
  tree = fm.write_fake_mimic_tree(root)
  data_dir = tmp_path_factory.mktemp("tfds_mimic")
  ic = tiny_input_config(data_dir, builder_config="mimic", manual_dir=str(root), image_size=32,
                         num_frames=1, num_shards=2)
  return tree, ic, build.ensure_dataset(ic)


def test_mimic_build_counts_every_bad_input(fake_mimic):
  tree, _, builder = fake_mimic
  report = artifacts.load_report(builder.data_dir)
  assert report["source_skipped"] == tree["expected_stats"]
  assert sum(report["examples"].values()) == tree["expected_records"]
  assert report["records_skipped"] == {}
  patients = {s: {int(e["patient_id"]) for e in _examples(builder, s)} for s in records.SPLITS}
  assert all(patients.values())
  assert not (patients["train"] & patients["validation"] or patients["train"] & patients["test"]
              or patients["validation"] & patients["test"])


def test_no_header_phi_anywhere_in_the_written_files(fake_mimic):
  tree, ic, _ = fake_mimic
  phi = [s.encode() for s in tree["phi_strings"]]
  phi += [p.split(b"^")[0] for p in phi if b"^" in p]  # name parts on their own
  checked = 0
  for dirpath, _, files in os.walk(ic.data_dir):
    for f in files:
      with open(os.path.join(dirpath, f), "rb") as fh:
        blob = fh.read()
      checked += 1
      for s in phi:
        assert s.lower() not in blob.lower(), f"{s!r} leaked into {f}"
  assert checked >= 8


def test_stored_frames_are_the_masked_frames(fake_mimic):
  from echovlm_jax.data import dicom
  tree, ic, builder = fake_mimic
  stored = {}
  for split in records.SPLITS:
    for e in _examples(builder, split):
      stored[(int(e["study_id"]), int(e["view"]))] = e["frames"][..., 0]
  checked = 0
  for f in tree["files"]:
    if f["expected"] != "ok":
      continue
    key = (records.stable_int64("study", "mimic", f["study_id"]), schema.VIEWS.index(f["view"]))
    ds = dicom.read_dataset(f["path"])
    raw = dicom.decode_frames(ds, range(dicom._num_frames(ds)), f["path"])  # pylint: disable=protected-access
    mask = dicom.ultrasound_mask(ds, raw)
    for (x0, y0, x1, y1) in f["text_boxes"]:  # burned-in text lies outside what is kept
      assert not mask[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1].any()
    np.testing.assert_array_equal(stored[key], dicom.load_frames(f["path"], num_frames=1, size=32))
    checked += 1
  assert checked == tree["expected_records"]
