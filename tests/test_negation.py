"""Negation flips every stated finding, keeps meaning on a double flip, and never lies."""

import random
import re

import pytest

from echovlm_jax.echo import captions
from echovlm_jax.echo import guidelines
from echovlm_jax.echo import negation
from echovlm_jax.echo import schema
from echo_fixtures import random_cases


def stated(text):
  return {l: v for l, v in negation.caption_labels(text).items() if v >= 0}


def flipped(labels):
  return {l: 1 - v for l, v in labels.items()}


# Free-text report sentences: (text, labels it states, its exact negation).
REPORT_SENTENCES = [
    ("There is no pericardial effusion.", {"pericardial_effusion": 0}, None),
    ("Mildly dilated left atrium.", {"la_enlargement": 1}, "Normal-sized left atrium."),
    ("Normal biventricular systolic function.",
     {"lv_systolic_dysfunction": 0, "rv_dysfunction": 0}, "Reduced biventricular systolic function."),
    ("Moderate aortic stenosis is present.", {"aortic_stenosis": 1}, "No aortic stenosis is present."),
    ("Mild aortic stenosis.", {"aortic_stenosis": 1}, "No aortic stenosis."),
    ("No aortic stenosis.", {"aortic_stenosis": 0}, "Aortic stenosis."),
    ("Aortic stenosis is not present.", {"aortic_stenosis": 0}, "Aortic stenosis is present."),
    ("There is no evidence of pulmonary hypertension.", {"pulmonary_hypertension": 0},
     "There is evidence of pulmonary hypertension."),
    ("The left ventricle is mildly dilated with severely reduced systolic function.",
     {"lv_dilation": 1, "lv_systolic_dysfunction": 1},
     "The left ventricle is normal in size with normal systolic function."),
    ("The right ventricle is normal in size and function.",
     {"rv_dilation": 0, "rv_dysfunction": 0},
     "The right ventricle is dilated with reduced systolic function."),
    ("Mild concentric left ventricular hypertrophy.", {"lv_hypertrophy": 1},
     "No left ventricular hypertrophy."),
    ("Left ventricular filling pressures are elevated.", {"elevated_filling_pressure": 1},
     "Left ventricular filling pressures are normal."),
    ("RV systolic function is normal.", {"rv_dysfunction": 0}, "RV systolic function is reduced."),
    ("The left ventricle is dilated, and the right ventricle is normal in size.",
     {"lv_dilation": 1, "rv_dilation": 0},
     "The left ventricle is normal in size, and the right ventricle is dilated."),
    ("Normal LVEF.", {"lv_systolic_dysfunction": 0}, "Reduced LVEF."),
    # Real report wording: a value with what it suggests, a value without words.
    ("Tricuspid regurgitation peak velocity is 3.6 m/s, suggesting pulmonary hypertension.",
     {"pulmonary_hypertension": 1}, None),
    ("Left ventricular systolic function is normal, with an estimated ejection fraction of 60 %.",
     {"lv_systolic_dysfunction": 0}, None),
    ("Severe aortic stenosis with a mean gradient of 45 mmHg.", {"aortic_stenosis": 1}, None),
    ("E/e' is 16, consistent with elevated filling pressures.", {"elevated_filling_pressure": 1},
     None),
    ("Aortic stenosis is mild.", {"aortic_stenosis": 1}, "Aortic stenosis is absent."),
    # Grade statements (echo/grades.py) flip like numeric ones.
    ("There is a small to moderate pericardial effusion.", {"pericardial_effusion": 1},
     "There is no pericardial effusion."),
    ("Pulmonary artery systolic pressure is moderately to severely elevated.",
     {"pulmonary_hypertension": 1}, "Pulmonary artery systolic pressure is normal."),
]


def test_report_values_cross_their_cutoff():
  neg = negation.negate("Tricuspid regurgitation peak velocity is 3.6 m/s, suggesting pulmonary "
                        "hypertension.")
  v = float(re.search(r"(\d+\.\d) m/s", neg).group(1))
  assert v < 2.8 and neg.endswith(", suggesting no pulmonary hypertension.")
  neg = negation.negate("Left ventricular systolic function is normal, with an estimated ejection "
                        "fraction of 60 %.")
  v = float(re.search(r"of (\d+) %", neg).group(1))
  assert v < 52 and neg.startswith("Left ventricular systolic function is reduced")


@pytest.mark.parametrize("text,finding", [
    ("There is moderate to severe tricuspid regurgitation.", "tricuspid_regurgitation"),
    ("There is no significant mitral regurgitation.", "mitral_regurgitation"),
    ("Aortic regurgitation is mild.", "aortic_regurgitation"),
    ("The right atrium is mildly dilated.", "ra_enlargement"),
])
def test_grade_only_findings_flip_both_ways(text, finding):
  """Findings with no label of their own (schema.GRADES) still flip, and flip back."""
  (f,) = negation.findings(text)
  assert f.labels == (finding,)
  neg = negation.negate(text)
  (g,) = negation.findings(neg)
  assert g.labels == (finding,) and g.abnormal != f.abnormal
  (h,) = negation.findings(negation.negate(neg))
  assert h.abnormal == f.abnormal


@pytest.mark.parametrize("text,labels,expected", REPORT_SENTENCES)
def test_report_sentences(text, labels, expected):
  assert stated(text) == labels
  neg = negation.negate(text)
  if expected is not None:
    assert neg == expected
  assert neg != text and stated(neg) == flipped(labels)
  assert stated(negation.negate(neg)) == labels


def test_absent_effusion_gets_a_counterfactual_size():
  neg = negation.negate("There is no pericardial effusion.")
  m = re.fullmatch(r"There is a (small|moderate|large) pericardial effusion of (\d\.\d) cm\.", neg)
  assert m, neg
  assert guidelines.grade("pericardial_effusion", float(m.group(2)), None) == m.group(1)
  assert negation.negate(neg) == "There is no pericardial effusion."


def test_numeric_statement_moves_across_the_cutoff():
  neg = negation.negate("LVEF is 45 %, which is mildly reduced.")
  m = re.fullmatch(r"LVEF is (\d+) %, which is normal\.", neg)
  assert m and float(m.group(1)) >= 54, neg  # normal for either sex
  back = negation.negate(neg)
  m = re.fullmatch(r"LVEF is (\d+) %, which is (\w+ly reduced)\.", back)
  assert m and float(m.group(1)) < 52, back
  assert guidelines.interpret("lvef", float(m.group(1)), None).phrase == m.group(2)


# An absent effusion is stated without a value, so it has no normal counterfactual.
@pytest.mark.parametrize("name,abnormal", [
    (n, a) for n in sorted(negation.COUNTERFACTUAL_RANGES) for a in (False, True)
    if (n, a) != ("pericardial_effusion", False)])
def test_counterfactual_values_read_the_same_for_every_sex(name, abnormal):
  for seed in range(30):
    v = negation.counterfactual_value(name, abnormal, random.Random(seed))
    lo, hi = schema.MEASUREMENT_INFO[name].plausible_range
    assert lo <= v <= hi
    reads = {guidelines.interpret(name, v, s) for s in ("M", "F", None)}
    assert len(reads) == 1 and reads.pop().abnormal is abnormal


def test_mixed_two_input_label_flips_as_a_label():
  # Vmax says mild AS, the gradient is below 20: AS is present; the flip must make it absent.
  text = captions.make_caption("cw_av", {"av_vmax": 2.7, "av_mean_gradient": 15.0}, "M")
  assert stated(text) == {"aortic_stenosis": 1}
  neg = negation.negate(text)
  assert stated(neg) == {"aortic_stenosis": 0}
  assert "15 mmHg, which is not significantly elevated" in neg  # already normal: kept
  assert stated(negation.negate(neg)) == {"aortic_stenosis": 1}


@pytest.mark.parametrize("text", [
    "",
    "This is an apical four-chamber view.",
    "An echocardiographic image.",
    "The left ventricular internal diameter in systole is 4.0 cm.",
    # Unsafe to flip: a number the statement does not account for, another unit, a
    # conjunction sharing one predicate. None, never a wrong caption.
    "Severe aortic stenosis with a peak gradient of 45 mmHg.",
    "LVIDd 61 mm, dilated.",
    "The left ventricle and left atrium are dilated.",
    "LVEF is reduced at 35 %.",
])
def test_nothing_safe_to_flip_gives_none(text):
  assert negation.negate(text) is None


def test_non_text_is_a_clear_error():
  with pytest.raises(TypeError, match="caption text"):
    negation.negate(None)


def test_negation_flips_every_caption_and_double_negation_keeps_meaning():
  """Property test over seeded random captions of every view and sex."""
  n_flipped = 0
  for view, m, sex, rng in random_cases(600, seed=1):
    text = captions.make_caption(view, m, sex, rng)
    labels = stated(text)
    neg = negation.negate(text)
    if not labels:
      assert neg is None, text
      continue
    assert neg is not None and neg != text, text
    assert negation.negate(text) == neg  # deterministic
    assert neg.split(". ")[0] == text.split(". ")[0]  # the view sentence is kept
    assert stated(neg) == flipped(labels), (text, neg)
    assert stated(negation.negate(neg)) == labels, (text, neg)
    n_flipped += 1
  assert n_flipped > 300
