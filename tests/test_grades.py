"""Grades: every level's sentence says what its label says, and negation flips it."""

import collections

import pytest

from echovlm_jax.data import mimic_grades
from echovlm_jax.echo import grades, negation, schema


def _levels(name):
  return grades.DIASTOLIC_LEVELS if schema.GRADE_INFO[name].kind == "filling" else grades.LEVELS


@pytest.mark.parametrize("name", schema.GRADES)
def test_every_sentence_reads_back_as_its_label_and_flips(name):
  label = schema.GRADE_INFO[name].label
  for level in _levels(name):
    text = grades.sentence(name, level)
    found = negation.findings(text)
    assert len(found) == 1 and found[0].labels == (label,), text
    assert found[0].abnormal == grades.is_abnormal(name, level), text
    neg = negation.negate(text)
    (flipped,) = negation.findings(neg)
    assert flipped.abnormal != found[0].abnormal, (text, neg)
    if label in schema.LABELS:
      assert negation.caption_labels(text)[label] == int(grades.is_abnormal(name, level))


def test_severities_are_ordinal_and_in_between_grades_round_down():
  assert [grades.severity("rv_function", l) for l in
          ("normal", "mild", "mild_to_moderate", "moderate", "moderate_to_severe", "severe")] == [
              0, 1, 1, 2, 2, 3]
  assert grades.severity("la_size", "abnormal") == 1  # "Dilated - no qualifier": at least mild
  # Grade I diastolic dysfunction: filling pressure normal; II and up: elevated.
  assert not grades.is_abnormal("diastolic_function", "grade_1")
  assert grades.is_abnormal("diastolic_function", "grade_2")
  assert grades.severities({"la_size": "moderate"})[schema.GRADES.index("la_size")] == 2
  assert grades.severities({}) == [-1] * len(schema.GRADES)
  with pytest.raises(ValueError, match="unknown level"):
    grades.check_level("la_size", "grade_2")


def test_a_number_wins_over_a_grade_and_disagreements_are_counted():
  counts = collections.Counter()
  numeric = {l: -1 for l in schema.LABELS}
  numeric["la_enlargement"] = 0            # LAVI 30: normal
  out = grades.combine_labels(numeric, {"la_size": "moderate", "rv_function": "severe",
                                        "tricuspid_regurgitation": "severe"}, counts)
  assert out["la_enlargement"] == 0 and out["rv_dysfunction"] == 1
  assert "tricuspid_regurgitation" not in out  # a grade-only finding is no label
  assert counts == {"grade_disagrees:la_enlargement": 1, "label_from_grade:rv_dysfunction": 1}


@pytest.mark.parametrize("code", sorted(mimic_grades.GRADE_CODES))
def test_every_mimic_grade_string_maps_to_a_valid_level(code):
  grade, table = mimic_grades.GRADE_CODES[code]
  assert grade in schema.GRADES
  for value, level in table.items():
    assert mimic_grades.lookup(code, value) == (grade, level)
    assert mimic_grades.lookup(code, "  " + value.upper() + " ") == (grade, level)
    if level is not None:
      grades.check_level(grade, level)
  with pytest.raises(LookupError):
    mimic_grades.lookup(code, "Somewhat peculiar")


def test_the_release_strings_as_stored():
  # Exactly as REAL_DATA lists them, typos and trailing spaces included.
  assert mimic_grades.lookup("phtn_severity", "HIgh normal (TR 21-25 mmHg)") == ("pa_pressure", "normal")
  assert mimic_grades.lookup("la_size", "Mild LAVI (34-41ml/m2) ") == ("la_size", "mild")
  assert mimic_grades.lookup("rv_function", "Cannot assess RV function") == ("rv_function", None)
  assert mimic_grades.lookup("pericardial_effusion", "Moderate-large") == (
      "pericardial_effusion", "moderate_to_severe")
  assert mimic_grades.ra_pressure("IVC<=2.1cm, <50% collapse (5-10mmHg)") == 8.0
  assert mimic_grades.ra_pressure("Intubated - cannot assess RA pressure") is None
