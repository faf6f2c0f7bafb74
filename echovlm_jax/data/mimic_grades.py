"""MIMIC-IV-ECHO's categorical `result` strings -> grade levels (echo/grades.py), one explicit table
per code. Pure data plus a lookup.

Strings are matched after `normalise` (case, surrounding and repeated spaces), exactly, never by
similarity: a string not in a table is counted by the reader as `grade_unmapped:<code>` and
reported. `None` marks a value that says the finding could not be assessed. The strings
are those public readers of the release list (docs/mimic.md says which are confirmed);
tables for codes whose values nobody has published (lv_chamber_size, rv_chamber_size, ra_size)
hold the plain spellings echo labs use and will count anything else.
"""

from __future__ import annotations

import re

_NORMAL, _MILD, _MILD_MOD, _MOD, _MOD_SEV, _SEV, _ABN = (
    "normal", "mild", "mild_to_moderate", "moderate", "moderate_to_severe", "severe", "abnormal")

# REAL_DATA.md: values as stored (sure unless noted there).
RV_FUNCTION = {
    "Nl RV function": _NORMAL, "Low normal function": _NORMAL, "Hyperdynamic": _NORMAL,
    "Mild global RV hypo": _MILD, "Moderate global RV hypo": _MOD, "Severe global hypo": _SEV,
    # Depressed without a severity; regional hypokinesis (McConnell's sign is regional RV
    # dysfunction of acute RV pressure overload) is dysfunction of at least mild degree.
    "RV function depressed": _ABN, "Apical free wall hypo": _ABN,
    "Basal RV hypo (McConnell's sign)": _ABN,
    "RV not well seen": None, "Cannot assess RV function": None,
}
PERICARDIAL_EFFUSION = {
    # A trivial effusion and an anterior fat pad (which mimics one) are not effusions that
    # the >= 0.1 cm rule of docs/design.md would call present.
    "Trivial": _NORMAL, "Anterior fat pad": _NORMAL,
    "Very small (<0.5cm)": _MILD, "Small (<1.0cm)": _MILD, "Small-moderate": _MILD_MOD,
    "Moderate (1.0-2.0cm)": _MOD, "Moderate-large": _MOD_SEV, "Large (>2.0cm)": _SEV,
}
# Pulmonary pressure graded by the TR gradient. "Borderline (TR 26-30mmHg)" is a TR velocity
# of 2.55-2.74 m/s, below the 2.8 m/s cut-off of docs/design.md: normal.
PHTN_SEVERITY = {
    "Normal (TR<26mmHg)": _NORMAL, "HIgh normal (TR 21-25 mmHg)": _NORMAL,
    "PA HTN unlikely": _NORMAL, "Borderline (TR 26-30mmHg)": _NORMAL,
    "Mild (TR 26-36mmHg)": _MILD, "Mild-mod (TR 35-40mmHg)": _MILD_MOD,
    "Mod (TR 37-60mmHg)": _MOD, "Mod-severe (50-60mmHg)": _MOD_SEV, "Severe (TR >60mmHg)": _SEV,
}
LV_WALL_THICKNESS = {
    "Normal": _NORMAL, "Nl": _NORMAL,
    "Mod symmetric LVH (1.5-1.7cm)": _MOD, "Severe symmetric (>1.7cm)": _SEV,
}
AORTIC_STENOSIS = {
    # "Minimal" (sclerosis with a velocity below 2.6 m/s) is not stenosis by docs/design.md's cut-off.
    "None": _NORMAL, "Minimal": _NORMAL, "None, incr vel high output": _NORMAL,
    "Mild (>1.5cm2)": _MILD, "Mod (1.0-1.5cm2)": _MOD, "Severe (<1.0cm2)": _SEV,
    "Severe (<0.6cm2/m2)": _SEV, "Very severe (>5m/s;>60mmHg)": _SEV,
    "Low flow/low gradient severe": _SEV, "Present - not quantified": _ABN,
    "Cannot exclude": None,
}
LA_SIZE = {
    "Normal LAVI (<34ml/m2)": _NORMAL, "Mild LAVI (34-41ml/m2)": _MILD,
    "Mod LAVI (41-48ml/m2)": _MOD, "Severe LAVI(>48ml/m2)": _SEV,
    "Nl (PLA <4.1cm)": _NORMAL, "Mild LAE (PLA 4.1-4.9cm)": _MILD,
    "Mod LAE (PLA 5.0-5.9cm)": _MOD, "Sev LAE (PLA >=6.0cm)": _SEV,
    "Dilated - no qualifier": _ABN, "Not well seen": None,
}
REGURGITATION = {
    # Physiologic and trivial regurgitation are normal findings (ASE 2017).
    "None": _NORMAL, "Physiologic": _NORMAL, "Trivial": _NORMAL, "Trace": _NORMAL,
    "Mild [1+]": _MILD, "Mild-mod [1-2+]": _MILD_MOD, "Mod [2+]": _MOD,
    "Mod-severe [3+]": _MOD_SEV, "Severe [4+]": _SEV,
}
DIASTOLIC_GRADE = {
    "0 (nl)": "grade_0", "I": "grade_1", "II": "grade_2", "III": "grade_3", "IV": "grade_3",
    "Indeterminate": None, "Unable to assess": None,
}
# No published values: the plain words labs use. Anything else is counted, not guessed.
CHAMBER_SIZE = {
    "Normal": _NORMAL, "Nl": _NORMAL, "Normal size": _NORMAL, "Small": _NORMAL,
    "Mildly dilated": _MILD, "Mild": _MILD, "Moderately dilated": _MOD, "Moderate": _MOD,
    "Severely dilated": _SEV, "Severe": _SEV, "Dilated": _ABN, "Not well seen": None,
}

# code -> (grade name in echo/schema.py GRADES, table).
GRADE_CODES: dict[str, tuple[str, dict[str, str | None]]] = {
    "rv_function": ("rv_function", RV_FUNCTION),
    "pericardial_effusion": ("pericardial_effusion", PERICARDIAL_EFFUSION),
    "phtn_severity": ("pa_pressure", PHTN_SEVERITY),
    "lv_wall_thickness": ("lv_wall_thickness", LV_WALL_THICKNESS),
    "aortic_stenosis": ("aortic_stenosis", AORTIC_STENOSIS),
    "la_size": ("la_size", LA_SIZE),
    "tricuspid_regurg": ("tricuspid_regurgitation", REGURGITATION),
    "mitral_regurg": ("mitral_regurgitation", REGURGITATION),
    "aortic_regurg": ("aortic_regurgitation", REGURGITATION),
    "diastolic_grade": ("diastolic_function", DIASTOLIC_GRADE),
    "lv_chamber_size": ("lv_size", CHAMBER_SIZE),
    "rv_chamber_size": ("rv_size", CHAMBER_SIZE),
    "ra_size": ("ra_size", CHAMBER_SIZE),
}

# The IVC grade estimates right atrial pressure (ASE 2010: 3, 8 or 15 mmHg); each string's own
# printed range picks the category that contains it. RVSP = TR gradient + this.
IVC_RA_PRESSURE: dict[str, float | None] = {
    "NL IVC <2.2 cm": 3.0,
    "IVC<=2.1cm, <50% collapse (5-10mmHg)": 8.0,
    ">2.1cm, >50% (10-15mmHg)": 15.0,
    "IVC dilated (>2.5cm)": 15.0,
    "Intubated, IVC<1.5cm, RA <10mmHg": 8.0,
    "Intubated - cannot assess RA pressure": None,
}


def normalise(value: str) -> str:
  """'Mild LAVI (34-41ml/m2) ' -> 'mild lavi (34-41ml/m2)': case and spacing only."""
  return re.sub(r"\s+", " ", str(value or "")).strip().lower()


def _normalised(table):
  out = {}
  for k, v in table.items():
    assert normalise(k) not in out, f"mimic_grades: {k!r} listed twice"
    out[normalise(k)] = v
  return out


_LOOKUP = {code: (grade, _normalised(table)) for code, (grade, table) in GRADE_CODES.items()}
_IVC = _normalised(IVC_RA_PRESSURE)
_MISSING = object()


def lookup(code: str, value: str):
  """(grade name, level or None when not assessable) for a categorical row; raises KeyError
  when the code is not graded here and LookupError when the value is not in its table."""
  grade, table = _LOOKUP[code]
  level = table.get(normalise(value), _MISSING)
  if level is _MISSING:
    raise LookupError(value)
  return grade, level


def ra_pressure(value: str):
  """RA pressure (mmHg) from an `ivc` string; None when not assessable; LookupError if unknown."""
  p = _IVC.get(normalise(value), _MISSING)
  if p is _MISSING:
    raise LookupError(value)
  return p
