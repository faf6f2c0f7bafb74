"""Guideline rules: measurements + sex -> labels, severity grades and the words for them.

ASE 2015 chamber quantification, ASE/EACVI 2017 valve stenosis and 2016 diastology, with
the cut-offs fixed in docs/design.md. Captions, negation and prompts take their interpretation
words from `interpret`, so a caption can never state a finding its labels disagree with.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, NamedTuple

from echovlm_jax.echo import schema


class Grade(NamedTuple):
  """A value past the cut-off gets `word` while it is before `bound` (per sex): for a
  "high" rule v < bound, or v <= bound when `closed`; for a "low" rule v > bound, or
  v >= bound when `closed`. The last grade of a rule has an infinite bound."""
  bound: Mapping[str, float]
  word: str
  closed: bool


@dataclasses.dataclass(frozen=True)
class Rule:
  """One measurement's cut-off and grading.

  direction: "high" (abnormal above the cut-off) or "low" (abnormal below it).
  cutoff: {"M": x, "F": x}; the unknown-sex value is the female one (docs/design.md).
  inclusive: the cut-off value itself is abnormal (">=" / "<=") rather than (">" / "<").
  grades: ordered Grade steps past the cut-off, see `grade`.
  normal_phrase / abnormal_phrase: caption words; "{sev}" / "{sevly}" take the grade.
  generic_abnormal: the abnormal words without a grade (negation of value-less text, prompts).
  """
  label: str
  direction: str
  cutoff: Mapping[str, float]
  inclusive: bool
  grades: tuple[Grade, ...]
  normal_phrase: str
  abnormal_phrase: str
  generic_abnormal: str


def _both(x: float) -> dict[str, float]:
  return {"M": x, "F": x}


# docs/design.md prints grade ranges with integer or one-decimal ends ("moderate 30-40", "mild
# 41-51"); for continuous values a gap between two printed ranges goes to the range whose
# printed limit is the guideline's stated one: LVEF moderate [30, 41), mild [41, cut);
# wall mild (cut, 1.3], moderate (1.3, 1.6]; LAVI mild (34, 41], moderate (41, 48],
# severe > 48; AS Vmax mild [2.6, 3.0), moderate [3.0, 4.0), severe >= 4.0; effusion
# small [0.1, 1.0), moderate [1.0, 2.0], large > 2.0.
_INF = math.inf
RULES: dict[str, Rule] = {
    "lvef": Rule(
        "lv_systolic_dysfunction", "low", {"M": 52.0, "F": 54.0}, False,
        (Grade(_both(41.0), "mild", True), Grade(_both(30.0), "moderate", True),
         Grade(_both(-_INF), "severe", True)),
        "normal", "{sevly} reduced", "reduced"),
    "lvidd": Rule(
        "lv_dilation", "high", {"M": 5.8, "F": 5.2}, False, (),
        "normal in size", "dilated", "dilated"),
    "ivsd": Rule(
        "lv_hypertrophy", "high", {"M": 1.0, "F": 0.9}, False,
        (Grade({"M": 1.3, "F": 1.2}, "mild", True), Grade({"M": 1.6, "F": 1.5}, "moderate", True),
         Grade(_both(_INF), "severe", True)),
        "normal", "{sevly} increased", "increased"),
    "lvpwd": Rule(
        "lv_hypertrophy", "high", {"M": 1.0, "F": 0.9}, False,
        (Grade({"M": 1.3, "F": 1.2}, "mild", True), Grade({"M": 1.6, "F": 1.5}, "moderate", True),
         Grade(_both(_INF), "severe", True)),
        "normal", "{sevly} increased", "increased"),
    "lavi": Rule(
        "la_enlargement", "high", _both(34.0), False,
        (Grade(_both(41.0), "mild", True), Grade(_both(48.0), "moderate", True),
         Grade(_both(_INF), "severe", True)),
        "normal", "consistent with {sev} left atrial enlargement",
        "consistent with left atrial enlargement"),
    "tapse": Rule(
        "rv_dysfunction", "low", _both(1.7), False, (),
        "normal", "reduced", "reduced"),
    "rvd_basal": Rule(
        "rv_dilation", "high", _both(4.1), False, (),
        "normal in size", "dilated", "dilated"),
    "av_vmax": Rule(
        "aortic_stenosis", "high", _both(2.6), True,
        (Grade(_both(3.0), "mild", False), Grade(_both(4.0), "moderate", False),
         Grade(_both(_INF), "severe", False)),
        "normal", "consistent with {sev} aortic stenosis", "consistent with aortic stenosis"),
    # docs/design.md grades AS by Vmax only; the mean gradient uses ASE/EACVI 2017 (moderate
    # 20-39, severe >= 40). Below 20 mmHg the gradient does not indicate AS, but a mild AS
    # (by Vmax) also has a gradient < 20, so its words are "not significantly elevated".
    "av_mean_gradient": Rule(
        "aortic_stenosis", "high", _both(20.0), True,
        (Grade(_both(40.0), "moderate", False), Grade(_both(_INF), "severe", False)),
        "not significantly elevated", "consistent with {sev} aortic stenosis",
        "consistent with aortic stenosis"),
    "tr_vmax": Rule(
        "pulmonary_hypertension", "high", _both(2.8), False, (),
        "normal", "elevated", "elevated"),
    "rvsp": Rule(
        "pulmonary_hypertension", "high", _both(35.0), False, (),
        "normal", "elevated", "elevated"),
    "e_e_prime": Rule(
        "elevated_filling_pressure", "high", _both(14.0), False, (),
        "normal", "elevated", "elevated"),
    # Effusion: small < 1.0, moderate 1.0-2.0, large > 2.0 (cm). Captions word it as a
    # present / absent finding ("a small pericardial effusion" / "no pericardial effusion").
    "pericardial_effusion": Rule(
        "pericardial_effusion", "high", _both(0.1), True,
        (Grade(_both(1.0), "small", False), Grade(_both(2.0), "moderate", True),
         Grade(_both(_INF), "large", False)),
        "no pericardial effusion", "a {sev} pericardial effusion", "a pericardial effusion"),
}

# Measurements the guideline table does not grade (docs/design.md gives them no label): their
# captions state value and unit only.
UNGRADED: tuple[str, ...] = tuple(m for m in schema.MEASUREMENTS if m not in RULES)

_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}


class Interpretation(NamedTuple):
  abnormal: bool | None  # None: no guideline rule for this measurement (lvids, aortic_root)
  phrase: str            # caption words, e.g. "mildly reduced"; "" when abnormal is None


def normalize_sex(sex: str | None) -> str | None:
  """"M" / "F" (any case, surrounding spaces ignored) or None for anything else."""
  if isinstance(sex, str) and sex.strip().upper() in schema.SEXES:
    return sex.strip().upper()
  return None


def _sex_key(sex: str | None) -> str:
  # Unknown sex takes the female cut-offs: the more sensitive ones for "abnormal".
  return normalize_sex(sex) or "F"


def _rule(name: str) -> Rule | None:
  if name not in schema.MEASUREMENT_INFO:
    raise ValueError(f"Unknown measurement {name!r}; canonical names are "
                     f"{', '.join(schema.MEASUREMENTS)} (see echovlm_jax/echo/schema.py).")
  return RULES.get(name)


def _value(name: str, value) -> float:
  if not schema.is_present(value):
    raise ValueError(f"Measurement {name!r} has no value ({value!r}); interpret present values only.")
  # Rounded to 6 decimals so a value that went through float32 (5.8 -> 5.8000002) keeps
  # its side of the cut-off: labels re-derived from a stored dataset match the build.
  return round(float(value), 6)


def is_abnormal(name: str, value: float, sex: str | None) -> bool | None:
  """Whether `value` is on the abnormal side of the cut-off; None for ungraded names."""
  rule = _rule(name)
  v = _value(name, value)
  if rule is None:
    return None
  cut = rule.cutoff[_sex_key(sex)]
  if rule.direction == "high":
    return v >= cut if rule.inclusive else v > cut
  return v <= cut if rule.inclusive else v < cut


def grade(name: str, value: float, sex: str | None) -> str:
  """Severity word: "normal", or "mild" / "moderate" / "severe" ("small" / "moderate" /
  "large" for effusion), or "abnormal" where the guideline gives no grades.
  Ungraded measurements (no rule) give "ungraded"."""
  rule = _rule(name)
  v = _value(name, value)
  if rule is None:
    return "ungraded"
  if not is_abnormal(name, v, sex):
    return "normal"
  if not rule.grades:
    return "abnormal"
  s = _sex_key(sex)
  for g in rule.grades:
    b = g.bound[s]
    if rule.direction == "high":
      inside = v < b or (g.closed and v == b)
    else:
      inside = v > b or (g.closed and v == b)
    if inside:
      return g.word
  return rule.grades[-1].word


def interpret(name: str, value: float, sex: str | None) -> Interpretation:
  """(is_abnormal, caption phrase) of one present measurement, e.g. ("lvef", 45, "M") ->
  (True, "mildly reduced"). Raises ValueError for unknown names or absent values."""
  rule = _rule(name)
  if rule is None:
    _value(name, value)
    return Interpretation(None, "")
  g = grade(name, value, sex)
  if g == "normal":
    return Interpretation(False, rule.normal_phrase)
  if g == "abnormal":
    return Interpretation(True, rule.abnormal_phrase)
  return Interpretation(True, rule.abnormal_phrase.format(sev=g, sevly=_ADVERB.get(g, g)))


def phrases(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """All (normal, abnormal) phrases `interpret` can give for `name` (for parsers, prompts)."""
  rule = _rule(name)
  if rule is None:
    return (), ()
  words = [g.word for g in rule.grades] or [None]
  abnormal = []
  for w in words:
    p = rule.abnormal_phrase if w is None else rule.abnormal_phrase.format(
        sev=w, sevly=_ADVERB.get(w, w))
    if p not in abnormal:
      abnormal.append(p)
  return (rule.normal_phrase,), tuple(abnormal)


def derive_labels(measurements: Mapping[str, float], sex: str | None) -> dict[str, int]:
  """Guideline labels {label: 1 present / 0 absent / -1 unknown} in schema.LABELS order.

  measurements: canonical name -> value; absent keys, None and NaN count as not measured.
  A label is 1 when any of its present inputs is abnormal, 0 when all present inputs are
  normal, -1 when none is present. sex: "M" / "F" (any case); anything else is unknown
  and uses the female cut-offs. Raises ValueError on unknown measurement names.
  """
  schema.check_measurement_names(measurements)
  labels = {}
  for label in schema.LABELS:
    flags = [is_abnormal(m, measurements[m], sex) for m in schema.LABEL_INPUTS[label]
             if schema.is_present(measurements.get(m))]
    labels[label] = -1 if not flags else int(any(flags))
  return labels
