"""Graded findings: a cardiologist's grade (no number) -> stored severity, caption words, labels.

A source reader maps its own grade strings to one of `LEVELS` (data/mimic_grades.py for
MIMIC-IV-ECHO); this module owns what a level means everywhere else: the ordinal stored in
the dataset, the sentence a caption states (worded so negation.py flips it like a numeric
statement), and the label it gives where no measurement decides that label.
"""

from __future__ import annotations

from typing import Mapping

from echovlm_jax.echo import schema

# Level -> stored ordinal (schema.SEVERITIES). In-between grades take the lower severity, so
# "mild to moderate" is not counted as moderate (clinically "significant"); an abnormal grade
# without a stated severity ("Dilated - no qualifier") is stored as at least mild.
LEVELS: dict[str, int] = {
    "normal": 0, "mild": 1, "mild_to_moderate": 1, "moderate": 2, "moderate_to_severe": 2,
    "severe": 3, "abnormal": 1,
}
# Diastolic function is graded 0 / I / II / III(-IV), not by adjectives.
DIASTOLIC_LEVELS: dict[str, int] = {"grade_0": 0, "grade_1": 1, "grade_2": 2, "grade_3": 3}

_ADVERB = {"mild": "mildly", "mild_to_moderate": "mildly to moderately", "moderate": "moderately",
           "moderate_to_severe": "moderately to severely", "severe": "severely", "abnormal": ""}
_ABNORMAL_WORD = {"function": "reduced", "size": "dilated", "wall": "increased",
                  "pressure": "elevated"}
_NORMAL_WORD = {"function": "normal", "size": "normal in size", "wall": "normal",
                "pressure": "normal", "filling": "normal"}
_DISEASE_ADJ = {"mild": "mild", "mild_to_moderate": "mild to moderate", "moderate": "moderate",
                "moderate_to_severe": "moderate to severe", "severe": "severe", "abnormal": ""}
# Effusions are graded by size.
_EFFUSION_ADJ = {"mild": "small", "mild_to_moderate": "small to moderate", "moderate": "moderate",
                 "moderate_to_severe": "moderate to large", "severe": "large", "abnormal": ""}


def check_level(name: str, level: str) -> int:
  """The stored ordinal of `level` for grade `name`; raises ValueError on a bad pair."""
  if name not in schema.GRADE_INFO:
    raise ValueError(f"Unknown grade {name!r}; grades are {', '.join(schema.GRADES)} "
                     "(echovlm_jax/echo/schema.py).")
  table = DIASTOLIC_LEVELS if schema.GRADE_INFO[name].kind == "filling" else LEVELS
  if level not in table:
    raise ValueError(f"Grade {name!r}: unknown level {level!r}; expected one of {', '.join(table)}.")
  return table[level]


def severity(name: str, level: str) -> int:
  """Stored ordinal (0 normal .. 3 severe) of a grade level."""
  return check_level(name, level)


def is_abnormal(name: str, level: str) -> bool:
  return severity(name, level) >= schema.GRADE_INFO[name].threshold


def sentence(name: str, level: str) -> str:
  """The caption statement of one grade, e.g. ("rv_function", "mild") -> "Right ventricular
  systolic function is mildly reduced."; ("pericardial_effusion", "moderate") -> "There is a
  moderate pericardial effusion."; a normal level -> "... is normal." / "There is no
  significant ...". negation.negate flips every one of them."""
  info = schema.GRADE_INFO[name]
  abnormal = is_abnormal(name, level)
  if info.kind == "disease":
    if not abnormal:
      return f"There is no significant {info.subject}."
    adj = (_EFFUSION_ADJ if name == "pericardial_effusion" else _DISEASE_ADJ)[level]
    article = "a " if name == "pericardial_effusion" else ""
    return f"There is {article}{adj + ' ' if adj else ''}{info.subject}."
  if info.kind == "filling":
    words = "elevated" if abnormal else "normal"
  elif not abnormal:
    words = _NORMAL_WORD[info.kind]
  else:
    words = f"{_ADVERB[level]} {_ABNORMAL_WORD[info.kind]}".strip()
  subject = f"The {info.subject}" if info.kind == "size" else info.subject[:1].upper() + info.subject[1:]
  return f"{subject} is {words}."


def grade_labels(grades: Mapping[str, str]) -> dict[str, int]:
  """{label: 1 / 0} for every label (schema.LABELS or a grade-only finding) a grade decides."""
  out: dict[str, int] = {}
  for name, level in grades.items():
    label = schema.GRADE_INFO[name].label
    out[label] = max(out.get(label, 0), int(is_abnormal(name, level)))
  return out


def numeric_label_stated(name: str, measurements: Mapping[str, float]) -> bool:
  """Whether a measurement decides grade `name`'s label: then the number speaks, not the grade."""
  inputs = schema.LABEL_INPUTS.get(schema.GRADE_INFO[name].label, ())
  return any(schema.is_present(measurements.get(m)) for m in inputs)


def combine_labels(numeric: Mapping[str, int], grades: Mapping[str, str],
                   counts: dict | None = None) -> dict[str, int]:
  """Labels from numbers, with grades filling those no number decides (schema.LABELS only).

  A guideline cut-off applied to a measured value is the label's definition (docs/design.md), so a
  number wins over a grade of the same finding; `counts` (a Counter) gets
  `grade_agrees:<label>` / `grade_disagrees:<label>` where both exist and `label_from_grade:<label>`
  where the grade alone decides.
  """
  graded = grade_labels(grades)
  out = dict(numeric)
  for label in schema.LABELS:
    if label not in graded:
      continue
    if out.get(label, -1) == -1:
      out[label] = graded[label]
      if counts is not None:
        counts[f"label_from_grade:{label}"] += 1
    elif counts is not None:
      counts[f"grade_{'agrees' if out[label] == graded[label] else 'disagrees'}:{label}"] += 1
  return out


def severities(grades: Mapping[str, str]) -> list[int]:
  """The stored vector: int [len(schema.GRADES)], -1 where a grade is absent."""
  return [severity(g, grades[g]) if g in grades else -1 for g in schema.GRADES]
