"""Pins the guideline cut-offs (docs/design.md, "Labels and their cut-offs"), severity grades
and their words."""

import math

import numpy as np
import pytest

from echovlm_jax.echo import guidelines
from echovlm_jax.echo import schema

UNKNOWN_SEXES = (None, "", "x", "unknown", "male")  # anything but M / F is unknown

# (measurement, value, sex, abnormal): at, just inside and just outside every cut-off.
BOUNDARIES = [
    ("lvef", 51.9, "M", True), ("lvef", 52.0, "M", False), ("lvef", 53.9, "F", True),
    ("lvef", 54.0, "F", False), ("lvef", 53.0, "M", False), ("lvef", 53.0, "F", True),
    ("lvidd", 5.8, "M", False), ("lvidd", 5.81, "M", True), ("lvidd", 5.2, "F", False),
    ("lvidd", 5.21, "F", True), ("lvidd", 5.5, "M", False), ("lvidd", 5.5, "F", True),
    ("ivsd", 1.0, "M", False), ("ivsd", 1.01, "M", True), ("ivsd", 0.9, "F", False),
    ("ivsd", 0.91, "F", True), ("lvpwd", 1.0, "M", False), ("lvpwd", 1.01, "M", True),
    ("lvpwd", 0.9, "F", False), ("lvpwd", 0.95, "F", True), ("lvpwd", 0.95, "M", False),
    ("lavi", 34.0, "M", False), ("lavi", 34.1, "F", True), ("lavi", 34.0, "F", False),
    ("tapse", 1.7, "M", False), ("tapse", 1.69, "F", True),
    ("rvd_basal", 4.1, "F", False), ("rvd_basal", 4.11, "M", True),
    ("av_vmax", 2.59, "M", False), ("av_vmax", 2.6, "F", True),
    ("av_mean_gradient", 19.9, "F", False), ("av_mean_gradient", 20.0, "M", True),
    ("tr_vmax", 2.8, "M", False), ("tr_vmax", 2.81, "F", True),
    ("rvsp", 35.0, "F", False), ("rvsp", 35.1, "M", True),
    ("e_e_prime", 14.0, "M", False), ("e_e_prime", 14.1, "F", True),
    ("pericardial_effusion", 0.09, "M", False), ("pericardial_effusion", 0.1, "F", True),
]


@pytest.mark.parametrize("name,value,sex,abnormal", BOUNDARIES)
def test_cutoffs_at_and_around_every_boundary(name, value, sex, abnormal):
  assert guidelines.is_abnormal(name, value, sex) is abnormal
  label = guidelines.RULES[name].label
  assert guidelines.derive_labels({name: value}, sex)[label] == int(abnormal)
  # Sex is read case-insensitively.
  assert guidelines.derive_labels({name: value}, sex.lower())[label] == int(abnormal)


@pytest.mark.parametrize("sex", UNKNOWN_SEXES)
@pytest.mark.parametrize("name,value,abnormal", [
    ("lvef", 53.0, True), ("lvef", 54.0, False), ("lvidd", 5.5, True), ("lvidd", 5.2, False),
    ("ivsd", 0.95, True), ("ivsd", 0.9, False), ("lvpwd", 0.95, True)])
def test_unknown_sex_uses_the_female_cutoff(name, value, abnormal, sex):
  assert guidelines.normalize_sex(sex) is None
  assert guidelines.is_abnormal(name, value, sex) is abnormal
  assert guidelines.interpret(name, value, sex) == guidelines.interpret(name, value, "F")


def test_labels_are_minus_one_without_inputs_and_nan_or_none_is_absent():
  assert guidelines.derive_labels({}, "M") == {l: -1 for l in schema.LABELS}
  labels = guidelines.derive_labels({"lvef": math.nan, "lvidd": None, "tapse": 1.5}, "F")
  assert labels["lv_systolic_dysfunction"] == -1 and labels["lv_dilation"] == -1
  assert labels["rv_dysfunction"] == 1
  assert list(labels) == list(schema.LABELS)


@pytest.mark.parametrize("label,normal,abnormal", [
    ("lv_hypertrophy", {"ivsd": 0.8}, {"lvpwd": 1.2}),
    ("aortic_stenosis", {"av_vmax": 2.0}, {"av_mean_gradient": 25.0}),
    ("aortic_stenosis", {"av_mean_gradient": 10.0}, {"av_vmax": 2.7}),
    ("pulmonary_hypertension", {"tr_vmax": 2.5}, {"rvsp": 40.0}),
    ("pulmonary_hypertension", {"rvsp": 30.0}, {"tr_vmax": 3.0}),
])
def test_two_input_labels_are_present_when_either_input_is_abnormal(label, normal, abnormal):
  assert guidelines.derive_labels(normal, "M")[label] == 0
  assert guidelines.derive_labels({**normal, **abnormal}, "M")[label] == 1
  assert guidelines.derive_labels({**normal, list(abnormal)[0]: math.nan}, "M")[label] == 0


def test_float32_values_keep_their_side_of_the_cutoff():
  # 5.8 stored as float32 is 5.8000002; the label must not change when re-derived.
  assert guidelines.derive_labels({"lvidd": np.float32(5.8)}, "M")["lv_dilation"] == 0
  assert guidelines.derive_labels({"tapse": np.float32(1.7)}, "M")["rv_dysfunction"] == 0
  assert guidelines.derive_labels({"pericardial_effusion": np.float32(0.1)}, "M")[
      "pericardial_effusion"] == 1


# (measurement, value, sex, grade)
GRADES = [
    ("lvef", 55, "M", "normal"), ("lvef", 51.9, "M", "mild"), ("lvef", 53.9, "F", "mild"),
    ("lvef", 41, "M", "mild"), ("lvef", 40.9, "F", "moderate"), ("lvef", 30, "M", "moderate"),
    ("lvef", 29.9, None, "severe"),
    ("ivsd", 1.3, "M", "mild"), ("ivsd", 1.31, "M", "moderate"), ("ivsd", 1.6, "M", "moderate"),
    ("ivsd", 1.61, "M", "severe"), ("ivsd", 1.2, "F", "mild"), ("ivsd", 1.21, "F", "moderate"),
    ("lvpwd", 1.5, "F", "moderate"), ("lvpwd", 1.51, "F", "severe"), ("lvpwd", 1.25, None, "moderate"),
    ("lavi", 35, "M", "mild"), ("lavi", 41, "M", "mild"), ("lavi", 41.5, "F", "moderate"),
    ("lavi", 48, "M", "moderate"), ("lavi", 48.1, "M", "severe"),
    ("av_vmax", 2.6, "M", "mild"), ("av_vmax", 2.99, "M", "mild"), ("av_vmax", 3.0, "M", "moderate"),
    ("av_vmax", 3.99, "F", "moderate"), ("av_vmax", 4.0, "F", "severe"),
    ("av_mean_gradient", 39.9, "M", "moderate"), ("av_mean_gradient", 40, "M", "severe"),
    ("pericardial_effusion", 0.1, "M", "small"), ("pericardial_effusion", 0.99, "M", "small"),
    ("pericardial_effusion", 1.0, "M", "moderate"), ("pericardial_effusion", 2.0, "M", "moderate"),
    ("pericardial_effusion", 2.01, "M", "large"),
    ("lvidd", 6.1, "M", "abnormal"), ("tapse", 1.2, "M", "abnormal"), ("lvids", 4.0, "M", "ungraded"),
]


@pytest.mark.parametrize("name,value,sex,word", GRADES)
def test_severity_grades(name, value, sex, word):
  assert guidelines.grade(name, value, sex) == word


@pytest.mark.parametrize("name,value,sex,expected", [
    ("lvef", 45, "M", (True, "mildly reduced")), ("lvef", 35, "F", (True, "moderately reduced")),
    ("lvef", 60, "F", (False, "normal")),
    ("lvidd", 6.1, "M", (True, "dilated")), ("lvidd", 5.0, "F", (False, "normal in size")),
    ("ivsd", 1.7, "M", (True, "severely increased")),
    ("lavi", 45, None, (True, "consistent with moderate left atrial enlargement")),
    ("av_vmax", 4.2, "M", (True, "consistent with severe aortic stenosis")),
    ("av_mean_gradient", 15, "M", (False, "not significantly elevated")),
    ("tr_vmax", 3.1, "M", (True, "elevated")),
    ("pericardial_effusion", 0.5, "F", (True, "a small pericardial effusion")),
    ("pericardial_effusion", 0.0, "F", (False, "no pericardial effusion")),
    ("aortic_root", 3.4, "M", (None, "")), ("lvids", 3.0, None, (None, "")),
])
def test_interpret_gives_flag_and_caption_words(name, value, sex, expected):
  assert tuple(guidelines.interpret(name, value, sex)) == expected


def test_interpret_agrees_with_labels_everywhere():
  for name, rule in guidelines.RULES.items():
    lo, hi = schema.MEASUREMENT_INFO[name].plausible_range
    for v in np.linspace(lo, hi, 97):
      for sex in ("M", "F", None):
        abnormal, phrase = guidelines.interpret(name, float(v), sex)
        assert guidelines.derive_labels({name: float(v)}, sex)[rule.label] == int(abnormal)
        assert phrase in guidelines.phrases(name)[int(abnormal)]


def test_unknown_names_and_absent_values_raise_clearly():
  with pytest.raises(ValueError, match=r"'lv_ef'.*lvef, lvidd"):
    guidelines.derive_labels({"lv_ef": 50}, "M")
  with pytest.raises(ValueError, match="'ejection'"):
    guidelines.interpret("ejection", 50, "M")
  with pytest.raises(ValueError, match="no value"):
    guidelines.interpret("lvef", math.nan, "M")
