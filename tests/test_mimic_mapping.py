"""The release's codes -> canonical values, one report at a time: units, derivations, counts;
and ECHOVIEW's classes -> our views."""

import collections
import os

import pytest

from echovlm_jax.data import echoview, mimic_mapping, reader_options
from echovlm_jax.echo import schema
from tests import mimic_tree


def _values(rows):
  counts = collections.Counter()
  meas, grades = mimic_mapping.report_values(
      {mimic_mapping.normalise_code(c): (r, u) for c, r, u in rows}, counts)
  return meas, grades, counts


@pytest.mark.parametrize("rows,want", [
    ([("biplane_lvef", "41", "%"), ("lvef_3d", "50", "%"), ("lvef", "55", "%"), ("lvef_upper", "60", "%")], 41.0),
    ([("lvef_3d", "50", "%"), ("lvef", "55", "%"), ("lvef_upper", "60", "%")], 50.0),
    ([("lvef", "55", "%"), ("lvef_upper", "60", "%")], 57.5),
    ([("lvef", "55", "%")], 55.0),
])
def test_lvef_priority(rows, want):
  meas, _, counts = _values(rows)
  assert meas["lvef"] == want
  assert counts["lvef_range_without_upper"] == (rows == [("lvef", "55", "%")])


def test_lavi_rvsp_and_e_over_e_prime_are_derived_within_one_report():
  meas, grades, counts = _values([
      ("la_vol", "68", "mL"), ("body_surface_area", "2.0", "m²"), ("tr_mmhg", "32", "mm Hg"),
      ("ivc", ">2.1cm, >50% (10-15mmHg)", ""), ("mv_peak_e", "90", "cm/s"),
      ("sept_e_prime", "0.06", "m/s"), ("lat_e_prime", "0.09", "m/s")])
  assert meas == pytest.approx(dict(lavi=34.0, rvsp=47.0, e_e_prime=0.9 / 0.075))
  assert grades == {} and not counts
  meas, _, counts = _values([("la_vol", "68", "mL"), ("tr_mmhg", "32", "mmHg"),
                             ("mean_E_to_eprime", "9.5", ""), ("e_e_prime", "12", ""),
                             ("mv_peak_e", "0.9", "m/s"), ("lat_e_prime", "0.1", "m/s")])
  assert meas == {"e_e_prime": 9.5}
  assert counts == {"lavi_missing_bsa": 1, "rvsp_missing_ra_pressure": 1}
  meas, _, counts = _values([("mv_peak_e", "0.9", "m/s"), ("lat_e_prime", "0.1", "m/s")])
  assert meas == pytest.approx({"e_e_prime": 9.0}) and counts == {"e_e_prime_one_site": 1}


@pytest.mark.parametrize("code,result,unit,want,counted", [
    ("tapse", "2.1", "cm", 2.1, None),
    ("tapse", "21", "mm", 2.1, None),
    ("tapse", "21", "", 2.1, "unit_inferred:tapse"),
    ("tapse", "2.1", "", 2.1, None),
    ("av_pk_vel", "250", "", 2.5, "unit_inferred:av_pk_vel"),
    ("av_pk_vel", "2.5", "m/sec", 2.5, None),
    ("lvedd", "45", "cm", None, "value_implausible:lvedd"),     # a mm value labelled cm
    ("lvedd", "4.5", "inches", None, "unit_unknown:lvedd"),
    ("lvedd", "", "cm", None, "value_empty:lvedd"),
    ("lvedd", "n/a", "cm", None, "value_not_numeric:lvedd"),
    ("biplane_lvef", "0.55", "", None, "value_implausible:biplane_lvef"),  # a fraction
])
def test_units_are_read_defensively(code, result, unit, want, counted):
  counts = collections.Counter()
  got = mimic_mapping.read_number(code, result, unit, counts)
  assert got == (None if want is None else pytest.approx(want))
  assert counts == ({counted: 1} if counted else {})


def test_every_code_is_classified_and_direct_codes_are_canonical():
  assert set(mimic_mapping.DIRECT.values()) <= set(schema.MEASUREMENTS)
  assert mimic_mapping.classify_code("mean_e_to_eprime") == "numeric"
  assert mimic_mapping.classify_code("rv_function") == "grade"
  assert mimic_mapping.classify_code("ivc") == "grade"
  assert mimic_mapping.classify_code("resting_hr") == "ignored"
  assert mimic_mapping.classify_code("lv_sparkle_index") == "unmapped"
  assert mimic_mapping.normalise_code("mean_E_to_eprime") == "mean_e_to_eprime"


def test_every_echoview_class_is_mapped():
  assert set(echoview.CLASS_TO_VIEW) == set(mimic_tree.ECHOVIEW_CLASSES)
  assert echoview.CLASS_TO_VIEW["a4c_lvocc_s"] == "a4c" and echoview.CLASS_TO_VIEW["other"] is None


def test_echoview_wins_over_a_view_csv_and_its_threshold_is_a_knob(tmp_path):
  classes = mimic_tree.ECHOVIEW_CLASSES
  ev = tmp_path / echoview.ECHOVIEW_FILENAME
  probs = lambda cls, p: [f"{p if c == cls else (1 - p) / (len(classes) - 1):.4f}" for c in classes]
  ev.write_text("study,image," + ",".join(f"prob_{c}" for c in classes) + "\n"
                + "1,1_0001.dcm," + ",".join(probs("a4c_laocc", 0.7)) + "\n"
                + "1,1_0002.dcm," + ",".join(probs("plax_plax", 0.45)) + "\n")
  (tmp_path / "view_labels.csv").write_text("study_id,file,view\n1,1_0001.dcm,plax\n1,1_0003.dcm,cw_tr\n")
  counts = collections.Counter()
  labels, used = echoview.load_views(str(tmp_path), counts, reader_options.MimicOptions())
  assert used == ["view_labels.csv", echoview.ECHOVIEW_FILENAME]
  assert labels["1_0001.dcm"] == ("a4c", "echoview", pytest.approx(0.7))
  assert labels["1_0003.dcm"] == ("cw_tr", "view_csv", 1.0)
  assert "1_0002.dcm" not in labels and counts["view:echoview_low_confidence"] == 1
  labels, _ = echoview.load_views(str(tmp_path), collections.Counter(),
                                  reader_options.MimicOptions(view_min_prob=0.4))
  assert labels["1_0002.dcm"].view == "plax"


def test_an_echoview_file_without_its_columns_names_the_fix(tmp_path):
  bad = tmp_path / "ev.csv"
  bad.write_text("image,prob_a4c,prob_hologram\nx.dcm,0.9,0.1\n")
  with pytest.raises(ValueError, match="prob_hologram|hologram"):
    echoview.load_views(str(tmp_path), collections.Counter(),
                        reader_options.MimicOptions(echoview_csv=str(bad)))
  with pytest.raises(FileNotFoundError, match="nowhere.csv"):
    echoview.load_views(str(tmp_path), collections.Counter(),
                        reader_options.MimicOptions(echoview_csv=os.path.join(tmp_path, "nowhere.csv")))
