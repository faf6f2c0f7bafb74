"""Building `echoground`: the tiny synthetic config and a fake MIMIC-IV-ECHO tree.

Pins: patient-disjoint splits, several shards, artifacts next to the data, text from
`echo/` (never the builder), no header PHI in any written byte, burned-in text
masked, and every bad input counted instead of crashing the build.
"""

import collections
import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import echovlm
from echovlm_jax.data import build, reader_options, synthetic
from echovlm_jax.data import tokenizer as tok_lib
from echovlm_jax.data.caption_augment import split_statements
from echovlm_jax.echo import grades as grades_lib
from echovlm_jax.echo import guidelines, negation, schema
from tests import mimic_tree
from tests.echoground_fixtures import tiny_input_config
from echovlm_jax.data import artifacts
from tfds_builders.echoground import build_plans, records


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
  assert cfg.name == "synthetic_p12_s0_i32_t2_v256_f15"           # clips at 15 frames / s
  assert (cfg.num_patients, cfg.image_size, cfg.num_frames, cfg.num_shards) == (12, 32, 2, 3)
  assert cfg.clip_fps == 15.0
  # A clip over one cycle (clip_fps 0) keeps the name it had before clips had a rate; a still
  # has no rate at all, so the default config's frame rate names nothing there.
  assert build.builder_config_for(tiny_input_config(tmp_path, clip_fps=0.0)).name == (
      "synthetic_p12_s0_i32_t2_v256")
  still = build.builder_config_for(tiny_input_config(tmp_path, num_frames=1))
  assert (still.name, still.clip_fps) == ("synthetic_p12_s0_i32_t1_v256", 0.0)
  with pytest.raises(ValueError, match="config.input.clip_fps"):
    build.builder_config_for(tiny_input_config(tmp_path, clip_fps=-1.0))
  default = tiny_input_config(tmp_path, synthetic_patients=2000, image_size=128, res=112, num_frames=1,
                              vocab_size=1024)
  assert build.builder_config_for(default).name == "synthetic"
  assert build.get_builder(default).builder_config.name == "synthetic"  # the registered one
  mimic = tiny_input_config(tmp_path, builder_config="mimic", image_size=128, res=112, num_frames=1,
                            vocab_size=1024)
  assert build.get_builder(mimic).builder_config.name == "mimic"


def test_reader_options_are_one_dataclass_from_config_to_reader(tmp_path):
  # config.input.mimic / .synthetic hold exactly the dataclasses' fields, and a config value
  # reaches the builder config's nested options unchanged.
  c = echovlm.get_config()
  assert dict(c.input.mimic) == dataclasses.asdict(reader_options.MimicOptions())
  assert dict(c.input.synthetic) == dataclasses.asdict(reader_options.SyntheticViewOptions())
  ic = tiny_input_config(tmp_path, builder_config="mimic")
  ic.mimic.view_min_prob, ic.mimic.test_type, ic.mimic.link_tolerance_h = 0.7, "TEE", 6.0
  got = build.builder_config_for(ic).mimic
  assert got == reader_options.MimicOptions(view_min_prob=0.7, test_type="tee", link_tolerance_h=6.0)
  with pytest.raises(ValueError, match=r"config.input.mimic: unknown option\(s\) \['view_min_p'\]"):
    reader_options.from_config(reader_options.MimicOptions, {"view_min_p": 0.3}, "mimic")


def test_dataset_names_did_not_move_when_the_options_became_one_dataclass(tmp_path):
  # Names of the version that copied the options field by field (a rename would rebuild a
  # user's MIMIC dataset, hours of decoding); the threshold alone never names a dataset.
  def name(**over):
    c = echovlm.get_config()
    for key, v in over.items():
      for k, vv in v.items():
        c.input[key][k] = vv
    return build.builder_config_for(c.input).name
  assert name(mimic=dict(view_predictions_min_prob=0.5)) == "synthetic"
  assert name(synthetic=dict(hidden_view_fraction=0.9)) == "synthetic_p2000_s0_i128_t1_v1024_ha1a1ddc9"
  assert name(synthetic=dict(view_predictions_min_prob=0.5)) == "synthetic"
  c = echovlm.get_config()
  c.input.builder_config = "mimic"
  for over, want in ((dict(test_type="TEE"), "mimic_i128_t1_v1024_rd227ba55"),
                     (dict(view_min_prob=0.7, allow_unknown_views=True), "mimic_i128_t1_v1024_r46767b80"),
                     (dict(view_predictions_min_prob=0.5), "mimic")):
    m = c.copy_and_resolve_references()
    m.input.mimic.update(over)
    assert build.builder_config_for(m.input).name == want, over


def test_each_split_reads_only_its_own_examples_from_the_spill(tmp_path):
  ic = tiny_input_config(tmp_path)
  cfg = build.builder_config_for(ic)
  os.makedirs(tmp_path / "d")
  plan = build_plans.read_source(cfg, "", str(tmp_path / "d"))
  split_of = {}
  for split in records.SPLITS:
    for _, ex in plan.examples(split):
      split_of.setdefault(ex["patient_id"], set()).add(split)
  assert all(len(s) == 1 for s in split_of.values()) and len(split_of) == ic.synthetic_patients
  assert sorted(o for offs in plan.offsets.values() for o in offs) == sorted(
      set(o for offs in plan.offsets.values() for o in offs))   # each example in one split
  plan.cleanup()
  assert not (tmp_path / "d" / build_plans.SPILL_FILENAME).exists()
  # TFDS's hooks outside download_and_prepare have no plan to read: an error, not a re-read.
  with pytest.raises(RuntimeError, match="download_and_prepare"):
    build.get_builder(ic)._split_generators(None)  # pylint: disable=protected-access


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
      {k: v for k, v in ex.items() if k not in ("frames", "measurements", "labels", "grades",
                                                "view_confidence", "masks", "landmarks",
                                                "phases", "pixel_spacing_mm")})


def test_dense_truth_is_checked_and_a_misshapen_one_skips_the_record():
  maker = records.ExampleMaker(num_frames=1, image_size=8)
  k = len(schema.LANDMARKS)
  good = dict(dense_truth=True, masks=np.zeros((1, 8, 8), np.uint8),
              landmarks=np.full((1, k, 2), np.nan, np.float32), phases=np.zeros(1, np.float32),
              pixel_spacing_mm=0.5)
  bad = {"masks_invalid": dict(good, masks=np.full((1, 8, 8), len(schema.STRUCTURES), np.uint8)),
         "landmarks_invalid": dict(good, landmarks=np.zeros((1, k + 1, 2), np.float32)),
         "phases_invalid": dict(good, phases=np.zeros(2, np.float32)),
         "pixel_spacing_invalid": dict(good, pixel_spacing_mm=-1.0)}  # NaN (unknown) or > 0
  for reason, truth in bad.items():
    assert maker(f"k-{reason}", _good_record(**truth)) is None, reason
  assert dict(maker.skipped) == {r: 1 for r in bad}
  _, ex = maker("ok", _good_record(**good))
  assert ex["dense_truth"] and ex["masks"].shape == (1, 8, 8, 1) and ex["pixel_spacing_mm"] == 0.5
  _, none = maker("none", _good_record())          # a source without truth (MIMIC)
  assert not none["dense_truth"] and not none["masks"].any() and np.isnan(none["landmarks"]).all()


def test_the_stored_truth_is_the_renderers(tiny_echoground):
  ic, builder = tiny_echoground
  by_frames = {e["frames"].tobytes(): e for e in _all(builder)}
  for index in range(3):
    for _, rec in synthetic.patient_records(ic.synthetic_seed, index, ic.image_size, ic.num_frames,
                                            clip_fps=ic.clip_fps):
      e = by_frames[rec["frames"][..., None].tobytes()]
      assert e["dense_truth"] == (rec["image_kind"] == "2d")   # Doppler strips have none
      if not e["dense_truth"]:
        assert not e["masks"].any() and np.isnan(e["landmarks"]).all()
        continue
      np.testing.assert_array_equal(e["masks"][..., 0], rec["masks"])
      np.testing.assert_array_equal(e["landmarks"], rec["landmarks"])
      np.testing.assert_array_equal(e["phases"], rec["phases"])
      np.testing.assert_array_equal(e["pixel_spacing_mm"], np.float32(rec["pixel_spacing_mm"]))


def test_caption_code_errors_are_counted_and_a_repeated_bug_stops_the_build(monkeypatch):
  from echovlm_jax.echo import captions
  monkeypatch.setattr(captions, "caption_statements", lambda *a, **k: 1 / 0)
  maker = records.ExampleMaker(num_frames=1, image_size=8)
  assert maker("k1", _good_record()) is None and maker("k2", _good_record()) is None
  assert maker.skipped == {"bug:ZeroDivisionError": 2}
  with pytest.raises(RuntimeError, match="bug"):
    maker("k3", _good_record())


def test_patient_split_is_a_threshold_on_a_hash_and_stable_when_patients_are_added():
  ids = [records.stable_int64("patient", "synthetic", f"p{i}") for i in range(600)]
  a, b = records.split_patients(ids), records.split_patients(reversed(ids))
  assert a == b
  for p, split in a.items():
    h = hashlib.sha256(f"echoground/split/{p}".encode()).digest()
    f = int.from_bytes(h[:8], "big") / 2 ** 64
    assert split == ("test" if f < 0.1 else "validation" if f < 0.2 else "train")
  counts = collections.Counter(a.values())
  assert 45 <= counts["test"] <= 75 and 45 <= counts["validation"] <= 75
  # Adding patients (another study set, a new mapping) never moves a patient.
  more = records.split_patients(ids + [records.stable_int64("patient", "mimic", f"q{i}") for i in range(300)])
  assert all(more[p] == a[p] for p in ids)
  fewer = records.split_patients(ids[:200])
  assert all(fewer[p] == a[p] for p in ids[:200])
  # A tiny dataset still gets all three splits.
  small = collections.Counter(records.split_patients(ids[:4]).values())
  assert set(small) == {"train", "validation", "test"} and sum(small.values()) == 4


# ----------------------------------------------------------------------------- mimic


@pytest.fixture(scope="module")
def mimic_build(release_tree, release_dataset):
  """The `mimic` config built from the v1.0-layout tree (708 x 1016 DICOMs) at 32 px."""
  return (release_tree, *release_dataset)


def _all(builder):
  return [e for s in records.SPLITS for e in _examples(builder, s)]


def test_mimic_build_report_gives_the_coverage(mimic_build):
  tree, _, builder = mimic_build
  assert not any(e["dense_truth"] or e["masks"].any() for e in _all(builder))  # no truth in DICOMs
  report = artifacts.load_report(builder.data_dir)
  cov = report["coverage"]
  ok = [f for f in tree["files"] if f["expected"] == "ok"]
  assert sum(report["examples"].values()) == len(ok) == 40 and report["records_skipped"] == {}
  assert report["examples"] == {"train": 25, "validation": 5, "test": 10}  # split hashes: 5 / 1 / 2
  # Per canonical key and per grade: the studies whose report has it (hand-computed in the tree).
  want = collections.Counter(k for m in tree["measurements"].values() for k in m)
  assert cov["studies"] == 8
  assert cov["studies_with_measurement"] == {k: want.get(k, 0) for k in schema.MEASUREMENTS}
  graded = collections.Counter(g for gr in tree["grades"].values() for g in gr)
  assert {g: c["total"] for g, c in cov["studies_with_grade"].items()} == {
      g: graded.get(g, 0) for g in schema.GRADES}
  assert cov["views_by_source"] == {"echoview": sum(f["view"] != "unknown" for f in ok),
                                    "none": sum(f["view"] == "unknown" for f in ok)}
  assert cov["unknown_view_share"] == pytest.approx(17 / 40)
  assert cov["image_kinds"] == dict(collections.Counter(f["kind"] for f in ok))
  assert report["source_counts"]["skip"] == {"file_of_study_without_report": 1, "missing_file": 1,
                                             "unreadable_dicom": 2}
  assert report["source_counts"]["unmapped_code"] == {"lv_sparkle_index": 7}
  # Grade and number of one finding: every study with both is counted once, agreeing or not.
  both = sum(cov["grade_vs_number"]["studies"].values())
  assert both > 0 and all(k.endswith((":agree", ":disagree")) for k in cov["grade_vs_number"]["studies"])
  patients = {s: {int(e["patient_id"]) for e in _examples(builder, s)} for s in records.SPLITS}
  assert all(patients.values())
  assert not (patients["train"] & patients["validation"] or patients["train"] & patients["test"]
              or patients["validation"] & patients["test"])


def test_every_caption_states_what_its_study_report_says(mimic_build):
  tree, _, builder = mimic_build
  by_study = {records.stable_int64("study", "mimic", s): s for s in tree["measurements"]}
  grade_only = 0
  for e in _all(builder):
    study = by_study[int(e["study_id"])]
    meas, grades = tree["measurements"][study], tree["grades"][study]
    view = schema.VIEWS[e["view"]]
    kind = e["image_kind"].decode()
    caption, structure = e["caption"].decode(), e["statements"].decode().split()
    assert len(structure) == len(split_statements(caption)) and structure[0] == "-"
    stated = {t for t in structure[1:] if not t.startswith("grade:")}
    if view != "unknown":
      shown = schema.view_measurements(view)
    elif kind == "spectral":
      shown = ("av_vmax", "av_mean_gradient", "tr_vmax", "rvsp")
    else:
      shown = schema.MEASUREMENTS       # the whole report
    assert stated == {m for m in meas if m in shown}, (view, kind, caption)
    np.testing.assert_array_equal(e["grades"], grades_lib.severities(grades))
    labels = dict(zip(schema.LABELS, e["labels"].tolist()))
    if not meas:   # the report of grades only: its labels come from them
      grade_only += 1
      assert labels["rv_dysfunction"] == 1 and labels["pericardial_effusion"] == 1
    neg = negation.negate(caption)
    assert e["negated_caption"].decode() == (neg or "")
  assert grade_only == len(mimic_tree.FILES)


def test_no_header_phi_anywhere_in_the_written_files(mimic_build):
  tree, ic, _ = mimic_build
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


def test_stored_frames_are_the_masked_frames(mimic_build):
  from echovlm_jax.data import dicom
  tree, _, builder = mimic_build
  stored = collections.defaultdict(list)
  for e in _all(builder):
    stored[int(e["study_id"])].append(e["frames"][..., 0].tobytes())
  want = collections.defaultdict(list)
  for f in tree["files"]:
    if f["expected"] == "ok":
      frames = dicom.load_frames(os.path.join(tree["root"], f["rel"]), num_frames=1, size=32)
      want[records.stable_int64("study", "mimic", f["study"])].append(frames.tobytes())
  assert {k: sorted(v) for k, v in stored.items()} == {k: sorted(v) for k, v in want.items()}


def test_a_dataset_built_by_other_caption_code_is_never_used(tmp_path, release_dataset):
  """The build report stores a fingerprint of the code that decides example content; after an
  edit a synthetic dataset is rebuilt and a real one stops with the rebuild command."""
  ic = tiny_input_config(tmp_path, synthetic_patients=4, image_size=16, res=16, num_frames=1)
  builder = build.ensure_dataset(ic)
  report_path = os.path.join(builder.data_dir, artifacts.REPORT_FILENAME)
  assert artifacts.load_report(builder.data_dir)["code_fingerprint"] == artifacts.code_fingerprint()
  report = artifacts.load_report(builder.data_dir)
  report["code_fingerprint"] = "0" * 16      # as if captions.py had changed since
  artifacts.write_report(builder.data_dir, report)
  again = build.ensure_dataset(ic)
  assert artifacts.load_report(again.data_dir)["code_fingerprint"] == artifacts.code_fingerprint()
  mic, mimic_builder = release_dataset
  report = artifacts.load_report(mimic_builder.data_dir)
  saved = dict(report)
  report["code_fingerprint"] = "0" * 16
  artifacts.write_report(mimic_builder.data_dir, report)
  try:
    with pytest.raises(RuntimeError, match="rm -r .*echovlm_jax.data.build"):
      build.ensure_dataset(mic)
  finally:
    artifacts.write_report(mimic_builder.data_dir, saved)
  assert os.path.exists(report_path)
