"""The MIMIC-IV-ECHO reader on a fake tree: shapes, the mapping table, unit conversion,
study linking, view labels, skip counting and the absence of header PHI in records."""

import collections
import csv
import os

import numpy as np
import pytest

from echovlm_jax.data import dicom, fake_mimic, mimic, mimic_mapping
from echovlm_jax.echo import schema

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the truncated file


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  return fake_mimic.write_fake_mimic_tree(tmp_path_factory.mktemp("mimic"), num_subjects=4, seed=0)


@pytest.fixture(scope="module")
def read(tree):
  stats = collections.Counter()
  records = list(mimic.generate_records(tree["root"], image_size=32, num_frames=3, stats=stats))
  return records, stats


def test_records_have_contract_shapes_and_fields(tree, read):
  records, _ = read
  assert len(records) == tree["expected_records"] == 12
  keys = [k for k, _ in records]
  assert len(set(keys)) == len(keys)
  for _, r in records:
    assert set(r) == {"frames", "view", "measurements", "sex", "patient_key", "study_key", "source"}
    assert r["frames"].dtype == np.uint8 and r["frames"].shape == (3, 32, 32)
    assert r["frames"].max() > 0
    assert r["view"] in schema.VIEWS and r["source"] == "mimic"
    assert r["sex"] in ("M", "F", None)
    assert all(schema.is_plausible(k, v) for k, v in r["measurements"].items())


def test_views_sex_and_ids_follow_the_csvs(tree, read):
  records, _ = read
  ok_files = [f for f in tree["files"] if f["expected"] == "ok"]
  by_key = {mimic.record_key(f["rel"]): f for f in ok_files}
  assert set(by_key) == {k for k, _ in records}
  for key, r in records:
    f = by_key[key]
    assert r["view"] == f["view"]
    assert (r["patient_key"], r["study_key"]) == (f["subject_id"], f["study_id"])
    assert r["sex"] == tree["expected_sex"][f["subject_id"]]
    # Raw ids reach the builder only through patient_key / study_key, never the example key.
    assert f["subject_id"] not in key and f["study_id"] not in key
  assert {r["view"] for _, r in records} >= {"a4c", "plax", "cw_av", "unknown"}
  assert None in {r["sex"] for _, r in records}


def test_mapping_prefers_biplane_and_converts_units(tree, read):
  records, _ = read
  for _, r in records:
    expected = tree["expected_measurements"][r["study_key"]]
    assert r["measurements"].keys() == expected.keys()
    for k, v in expected.items():
      assert r["measurements"][k] == pytest.approx(v), k
  # Spelled out: the Teichholz EF (biplane + 9, listed first) lost; mm and cm/s converted.
  one = dict(records)[mimic.record_key(tree["files"][0]["rel"])]["measurements"]
  assert 2.0 < one["lvidd"] < 9.0 and 1.0 < one["av_vmax"] < 7.0 and one["tapse"] == pytest.approx(2.1)


def test_bad_inputs_are_counted_by_reason_not_fatal(tree, read):
  _, stats = read
  assert dict(stats) == tree["expected_stats"]
  for reason in ("missing_file", "unreadable_dicom", "study_without_measurements",
                 "measurement_value_missing", "measurement_out_of_range",
                 "measurement_name_unmapped", "measurement_unit_unknown"):
    assert stats[reason] > 0, reason
  assert stats["unreadable_dicom"] == 2  # the truncated file and the text file named .dcm


def test_no_header_phi_or_burned_in_text_in_records(tree):
  records = list(mimic.generate_records(tree["root"], image_size=16, num_frames=1))
  for _, r in records:
    text = repr({k: v for k, v in r.items() if k != "frames"})
    for s in tree["phi_strings"]:
      assert s.lower() not in text.lower()
  # The tree's own files (with and without ultrasound regions): burned-in name masked away.
  checked = collections.Counter()
  for f in tree["files"]:
    if f["expected"] != "ok":
      continue
    frames = dicom.load_frames(f["path"])
    for x0, y0, x1, y1 in f["text_boxes"]:
      assert frames[:, y0:y1 + 1, x0:x1 + 1].max() == 0, f["rel"]
    checked[(f["kind"], f["has_regions"])] += 1
  assert set(checked) == {("cine", True), ("cine", False), ("doppler", True)}


def test_explicit_view_csv_and_invalid_labels(tree, tmp_path):
  f = tree["files"][0]
  path = tmp_path / "views.csv"
  with open(path, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["study_id", "file", "view"])
    w.writerow([f["study_id"], f["rel"], "a2c"])  # a path works as well as a basename
    w.writerow([f["study_id"], "nonsense.dcm", "left_elbow"])
  stats = collections.Counter()
  recs = dict(mimic.generate_records(tree["root"], image_size=16, stats=stats, view_csv=path))
  assert recs[mimic.record_key(f["rel"])]["view"] == "a2c"
  assert stats["view_label_invalid"] == 1
  assert stats["view_unlabelled"] == len(recs) - 1


def _write_csv(path, header, rows):
  with open(path, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def test_measurements_link_to_the_nearest_study_within_tolerance(tmp_path):
  studies = {"s1": ("p1", mimic._time("2180-01-01 10:00:00")),
             "s2": ("p1", mimic._time("2180-01-11 10:00:00"))}
  header = ["subject_id", "measurement_id", "measurement_datetime", "test_type", "measurement",
            "measurement_description", "result", "unit"]
  rows = [
      ["p1", 1, "2180-01-01 13:00:00", "TTE", "LVEF", "", "60", "%"],        # -> s1 (visual)
      ["p1", 2, "2180-01-01 14:00:00", "TTE", "LVEF_MMODE", "", "70", "%"],  # worse method
      ["p1", 3, "2180-01-11 09:00:00", "TTE", "IVSd", "", "12", "mm"],       # -> s2, mm -> cm
      ["p1", 4, "2180-01-05 09:00:00", "TTE", "TAPSE", "", "2", "cm"],       # 4 days away
      ["p1", 5, "2180-01-11 09:30:00", "TTE", "xx", "LV ejection fraction (biplane)", "41", "%"],
      ["p2", 6, "2180-01-11 09:30:00", "TTE", "LVEF", "", "50", "%"],        # other subject
      ["p1", 7, "2180-01-11 09:30:00", "TTE", "RVSP", "", "abc", "mmHg"],
  ]
  path = _write_csv(tmp_path / "m.csv", header, rows)
  stats = collections.Counter()
  out = mimic.read_measurements(path, studies, {"p1"}, stats, tolerance_h=24)
  assert out == {"s1": {"lvef": 60.0}, "s2": {"ivsd": pytest.approx(1.2), "lvef": 41.0}}
  assert stats == {"measurement_row_unlinked": 1, "measurement_value_not_numeric": 1}


def test_mapping_table_lookups():
  assert mimic_mapping.normalise_name("LVEF (Biplane)") == "lvef biplane"
  assert mimic_mapping.normalise_unit("mL/m²") == "ml/m2" == mimic_mapping.normalise_unit("ml/m^2")
  assert mimic_mapping.lookup("LVIDd").key == "lvidd"
  assert mimic_mapping.lookup("E/e' (average)").key == "e_e_prime"
  assert mimic_mapping.lookup("LVEF_BIPLANE").priority < mimic_mapping.lookup("LVEF").priority
  assert mimic_mapping.lookup("LVEF").priority < mimic_mapping.lookup("LVEF (Teichholz)").priority
  assert mimic_mapping.lookup("mystery", "unknown thing") is None
  assert mimic_mapping.convert("lvidd", 48.0, "mm") == pytest.approx(4.8)
  assert mimic_mapping.convert("tr_vmax", 280.0, "cm/s") == pytest.approx(2.8)
  assert mimic_mapping.convert("lvidd", 4.8, "inches") is None
  assert {s.key for s in mimic_mapping.MAPPING} == set(schema.MEASUREMENTS)


def test_missing_csv_is_a_clear_setup_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="echo-record-list.csv"):
    list(mimic.generate_records(tmp_path))
  assert os.listdir(tmp_path) == []


def test_docs_list_every_mapping_name():
  doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "mimic.md")).read()
  for src in mimic_mapping.MAPPING:
    for name in src.names:
      assert f"`{name}`" in doc, f"{name!r} ({src.key}) is missing from docs/mimic.md's table"
