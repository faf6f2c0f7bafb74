"""The MIMIC-IV-ECHO v1.0 reader on a tree laid out as the release (tests/mimic_tree.py): files,
the measurement_id link, test types, every value in its canonical unit, grades, ECHOVIEW
views, image kinds, and every bad input counted by reason."""

import collections
import csv
import os
import shutil

import numpy as np
import pytest

from echovlm_jax.data import dicom, echoview, mimic, reader_options
from echovlm_jax.echo import schema
from tests import mimic_csv_tree, mimic_tree

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the truncated file


def _by_key(tree):
  return {mimic.record_key(f["rel"]): f for f in tree["files"]}


def test_every_readable_file_of_a_linked_tte_study_is_a_record(release_tree, release_records):
  records, _ = release_records
  files = _by_key(release_tree)
  assert sorted(k for k, _ in records) == sorted(k for k, f in files.items() if f["expected"] == "ok")
  assert len(records) == 8 * len(mimic_tree.FILES)
  for _, r in records:
    assert r["frames"].dtype == np.uint8 and r["frames"].shape == (1, 32, 32) and r["frames"].any()
    assert r["source"] == "mimic" and r["sex"] == release_tree["sex"][r["patient_key"]]


def test_values_come_through_in_canonical_units_from_the_linked_report(release_tree, release_records):
  """Exactly the tree's hand-computed values: biplane > 3D > range middle for LVEF, LAVI =
  volume / BSA, RVSP = TR gradient + RA pressure, E/e' by its priority, mm and cm/s converted,
  TAPSE without a unit read by magnitude; the TEE and stress reports (LVEF 99 %) never leak."""
  records, _ = release_records
  for _, r in records:
    want = release_tree["measurements"][r["study_key"]]
    assert r["measurements"].keys() == want.keys(), r["study_key"]
    for k, v in want.items():
      assert r["measurements"][k] == pytest.approx(v, rel=1e-9), (r["study_key"], k)
    assert r["grades"] == release_tree["grades"][r["study_key"]]


def test_views_come_from_echoview_with_their_confidence(release_tree, release_records):
  records, _ = release_records
  files = _by_key(release_tree)
  for key, r in records:
    f = files[key]
    assert r["view"] == f["view"], f["rel"]
    if f["view"] == "unknown":
      assert (r["view_source"], r["view_confidence"]) == ("none", 0.0)
    else:
      assert r["view_source"] == "echoview" and 0.5 <= r["view_confidence"] <= 1.0
    assert r["image_kind"] == f["kind"], f["rel"]   # spectral stills told apart by their regions
  assert {r["view"] for _, r in records} == {"a4c", "plax", "a2c", "unknown"}


def test_every_bad_input_is_counted_by_reason(release_records):
  _, stats = release_records
  sections = ("skip:", "link:", "value:", "unmapped_code:")
  got = {k: v for k, v in stats.items() if k.startswith(sections)}
  assert got == {
      "skip:unreadable_dicom": 2,                 # the truncated file and the text file
      "skip:missing_file": 1,
      "skip:file_of_study_without_report": 1,     # the study with an empty measurement_id
      "link:by_measurement_id": 8,
      "link:study_without_report": 1,
      "value:value_not_numeric:lvedd": 1,         # "see report"
      "value:value_empty:septal_thickness": 1,
      "value:unit_unknown:av_pk_vel": 1,          # "furlong/s": dropped, never guessed
      "value:unit_inferred:tapse": 3,             # no unit, 21 -> mm
      "value:lavi_missing_bsa": 1,
      "value:grade_unmapped:rv_function": 1,      # "Somewhat peculiar"
      "value:grade_not_assessable:aortic_stenosis": 7,   # "Cannot exclude"
      "value:lvef_from:biplane_lvef": 2, "value:lvef_from:lvef_3d": 3, "value:lvef_from:lvef_range": 2,
      "unmapped_code:lv_sparkle_index": 7,
  }
  assert stats["view:echoview_low_confidence"] == 1
  assert stats["view:echoview_class_without_view:other"] == 1
  assert stats["rows:unmapped"] == 7 and stats["rows:ignored"] > 0


def test_records_hold_no_header_phi(release_tree, release_records):
  records, _ = release_records
  text = repr([{k: v for k, v in r.items() if k != "frames"} for _, r in records])
  for s in release_tree["phi_strings"]:
    assert s.lower() not in text.lower()


def _small_tree(tmp_path, **kw):
  return mimic_tree.write_tree(tmp_path / "tree", num_subjects=3, hw=(64, 96), cine_frames=2, **kw)


def test_v01_study_list_links_by_nearest_time_to_the_same_reports(tmp_path):
  v1 = _small_tree(tmp_path)
  root01 = str(tmp_path / "v01")
  shutil.copytree(v1["root"], root01)
  rows = list(csv.DictReader(open(os.path.join(root01, "echo-study-list.csv"))))
  assert "measurement_id" in rows[0]
  with open(os.path.join(root01, "echo-study-list.csv"), "w", newline="") as f:
    cols = ["subject_id", "study_id", "study_datetime", "note_id", "note_seq", "note_charttime"]
    w = csv.DictWriter(f, cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)

  def link(root, test_type="tte"):
    stats = collections.Counter()
    studies = mimic.read_study_list(mimic.find(root, mimic.STUDY_LIST), stats)
    reports = mimic.read_reports(mimic.find(root, mimic.MEASUREMENTS), {s.subject for s in studies.values()}, stats)
    linked = mimic.link_studies(studies, reports, set(studies), reader_options.MimicOptions(test_type=test_type), stats)
    return mimic.study_values(linked, stats), stats

  (a, sa), (b, sb) = link(v1["root"]), link(root01)
  assert a == b and len(a) == 3
  assert sa["link:by_measurement_id"] == 3 and sb["link:by_time"] == 3
  assert sb["link:nearest_report_too_far"] == 1  # the report-less study, 300 days away
  # test_type is a filter: asked for TEE, the TTE-linked studies are left out (v1.0), and by
  # time the TEE of two days later is beyond the 24 h tolerance (v0.1).
  tee, stats = link(v1["root"], "tee")
  assert not tee and stats["link:report_is_tte"] == 3


def test_no_view_source_fails_at_start_unless_allowed(tmp_path):
  tree = _small_tree(tmp_path)
  os.remove(os.path.join(tree["root"], echoview.ECHOVIEW_FILENAME))
  with pytest.raises(FileNotFoundError, match="MIMIC_ECHO_View_Classifications.csv.*allow_unknown_views"):
    next(mimic.generate_records(tree["root"], image_size=16))
  records = list(mimic.generate_records(tree["root"], image_size=16,
                                        options=reader_options.MimicOptions(allow_unknown_views=True)))
  assert records and {r["view"] for _, r in records} == {"unknown"}


def test_a_table_of_unknown_codes_fails_with_the_fix(tmp_path):
  tree = _small_tree(tmp_path)
  path = os.path.join(tree["root"], "structured-measurement.csv.gz")
  import gzip  # pylint: disable=g-import-not-at-top
  with gzip.open(path, "rt") as f:
    rows = list(csv.reader(f))
  for r in rows[1:]:
    r[4] = "LEGACY_" + r[4].upper()   # codes of some other export
  with gzip.open(path, "wt", newline="") as f:
    csv.writer(f).writerows(rows)
  with pytest.raises(ValueError, match=r"do(es)? not know.*LEGACY_|mimic_mapping"):
    next(mimic.generate_records(tree["root"], image_size=16))


def test_old_file_names_are_a_setup_error_naming_the_release_file(tmp_path):
  tree = _small_tree(tmp_path)
  os.remove(os.path.join(tree["root"], "structured-measurement.csv.gz"))
  with pytest.raises(FileNotFoundError, match="structured-measurement.csv"):
    next(mimic.generate_records(tree["root"], image_size=16))


def test_bug_type_errors_stop_the_build_and_bad_files_do_not(tmp_path, monkeypatch):
  tree = _small_tree(tmp_path)
  real = dicom.load_clip

  def odd_decoder(path, *a, **k):  # a decoder that fails on bad data: counted, build goes on
    if path.endswith("_0002.dcm"):
      raise OSError("broken JPEG stream")
    return real(path, *a, **k)
  monkeypatch.setattr(dicom, "load_clip", odd_decoder)
  stats = collections.Counter()
  records = list(mimic.generate_records(tree["root"], image_size=16, stats=stats))
  assert stats["skip:decoder_error:OSError"] == 3 and len(records) == 3 * (len(mimic_tree.FILES) - 1)

  def buggy(path, *a, **k):         # a bug in our code: stops after MAX_BUGS, with the cause
    raise TypeError("unsupported operand")
  monkeypatch.setattr(dicom, "load_clip", buggy)
  with pytest.raises(RuntimeError, match="bug") as e:
    list(mimic.generate_records(tree["root"], image_size=16))
  assert isinstance(e.value.__cause__, TypeError)


def test_a_repeated_record_row_is_planned_once_and_counted(tmp_path):
  """The published record list repeats 103 whole rows: each DICOM is one work item (a second
  would be a second example with the same key), and the repeats are counted."""
  mimic_csv_tree.write_csvs(tmp_path, record_rows=40, repeated_rows=3, studies=4, patients=3,
                            reports=8, report_patients=6, echoview_rows=5)
  stats = collections.Counter()
  items = mimic.plan(tmp_path, stats=stats)
  assert len(items) == 37 == len({i.key for i in items}) == len({i.rel for i in items})
  assert stats["skip:repeated_dicom_filepath"] == 3
