"""MIMIC-IV-ECHO v1.0 measurement codes -> canonical measurements and grades, one report at a time.

`report_values(rows, counts)` takes one report's rows of `structured-measurement.csv.gz`
(code -> (result, unit)) and returns ({canonical key: value in canonical unit},
{grade name: level}). Direct codes are converted by unit; LVEF, LAVI, RVSP and E/e' are
derived as clinicians do (each rule below names its source); every value that fails is
counted in `counts` by reason, and codes this table does not know are never guessed.
"""

from __future__ import annotations

import collections
import re
from typing import Mapping

from echovlm_jax.data import mimic_grades
from echovlm_jax.echo import schema

# Release code (lower case) -> canonical key, for values stored as the key itself.
DIRECT: dict[str, str] = {
    "lvedd": "lvidd", "lvesd": "lvids",
    "septal_thickness": "ivsd",
    "inf_lat_thickness": "lvpwd",    # the release has no separate posterior-wall code
    "tapse": "tapse",
    "rv_diam": "rvd_basal",
    "sinus_diam": "aortic_root",     # aortic root at the sinuses of Valsalva
    "av_pk_vel": "av_vmax",
    "av_mean_grad": "av_mean_gradient",
    "tr_velocity": "tr_vmax",
}
# Codes read by the derivations below.
DERIVED_INPUTS = ("biplane_lvef", "lvef_3d", "lvef", "lvef_upper", "la_vol", "body_surface_area",
                  "tr_mmhg", "ivc", "mean_e_to_eprime", "e_e_prime", "mv_peak_e", "sept_e_prime",
                  "lat_e_prime")
# Codes of the release that we know and do not use (stress-test and LVOT values, vitals, ...):
# counted as ignored, not as unmapped.
IGNORED: frozenset[str] = frozenset((
    "rest_lvef", "stress_lvef", "biplane_lvedv", "biplane_lvesv", "fs", "av_pk_grad",
    "av_area_continuity", "av_vti", "lvot_diam", "lvot_vti", "annulus_diam", "ascending_diam",
    "arch_diam", "mv_peak_a", "mv_peak_e_a", "mv_e_decel", "lateral_e_to_eprime",
    "septal_e_to_eprime", "resting_hr", "resting_sbp", "resting_dbp", "diastolic_fcn",
    "tamponade", "septal_motion", "lv_obstruction", "mac_severity", "mitral_stenosis",
))

# Unit families: normalised unit -> factor into the family's canonical unit.
_LENGTH = {"cm": 1.0, "mm": 0.1, "m": 100.0}                        # -> cm
_SPEED = {"m/s": 1.0, "m/sec": 1.0, "cm/s": 0.01, "cm/sec": 0.01, "mm/s": 0.001}  # -> m/s
_PRESSURE = {"mmhg": 1.0}
_PERCENT = {"%": 1.0, "percent": 1.0}
_VOLUME = {"ml": 1.0, "cc": 1.0, "cm3": 1.0}
_AREA = {"m2": 1.0}
_RATIO = {"ratio": 1.0}
UNITS: dict[str, dict[str, float]] = {
    "lvedd": _LENGTH, "lvesd": _LENGTH, "septal_thickness": _LENGTH, "inf_lat_thickness": _LENGTH,
    "tapse": _LENGTH, "rv_diam": _LENGTH, "sinus_diam": _LENGTH,
    "av_pk_vel": _SPEED, "tr_velocity": _SPEED, "mv_peak_e": _SPEED, "sept_e_prime": _SPEED,
    "lat_e_prime": _SPEED,
    "av_mean_grad": _PRESSURE, "tr_mmhg": _PRESSURE,
    "biplane_lvef": _PERCENT, "lvef_3d": _PERCENT, "lvef": _PERCENT, "lvef_upper": _PERCENT,
    "la_vol": _VOLUME, "body_surface_area": _AREA,
    "mean_e_to_eprime": _RATIO, "e_e_prime": _RATIO,
}
# Plausible ranges of the inputs that are not canonical measurements themselves.
_INPUT_RANGES = {"la_vol": (5.0, 400.0), "body_surface_area": (0.8, 3.2), "tr_mmhg": (2.0, 130.0),
                 "mv_peak_e": (0.1, 3.0), "sept_e_prime": (0.01, 0.4), "lat_e_prime": (0.01, 0.4)}


def normalise_unit(unit: str) -> str:
  """'mL/m²' -> 'ml/m2'; 'mm Hg' -> 'mmhg'; 'm^2' -> 'm2'; 'NaN' -> ''."""
  u = str(unit or "").strip().lower().replace("²", "2").replace("³", "3").replace("^", "")
  u = u.replace(" ", "")
  return "" if u in ("nan", "null", "none") else u


def _range(code: str) -> tuple[float, float]:
  return _INPUT_RANGES.get(code) or schema.MEASUREMENT_INFO[
      DIRECT.get(code) or {"biplane_lvef": "lvef", "lvef_3d": "lvef", "lvef": "lvef",
                           "lvef_upper": "lvef", "mean_e_to_eprime": "e_e_prime",
                           "e_e_prime": "e_e_prime"}[code]].plausible_range


def read_number(code: str, result: str, unit: str, counts: collections.Counter) -> float | None:
  """One numeric row in the family's canonical unit (cm, m/s, mmHg, %, mL, m2, ratio).

  A stated unit of the family converts; another stated unit is dropped (counted: never
  guessed). An empty unit is read in the canonical unit when that gives a plausible value,
  else in the one other unit of the family that does (TAPSE 21 -> 2.1 cm, 250 -> 2.5 m/s),
  counted as `unit_inferred:<code>`. Implausible values are dropped and counted.
  """
  try:
    value = float(result)
  except (TypeError, ValueError):
    counts[f"value_not_numeric:{code}" if result.strip() else f"value_empty:{code}"] += 1
    return None
  if value != value or value in (float("inf"), float("-inf")):
    counts[f"value_empty:{code}"] += 1
    return None
  lo, hi = _range(code)
  family, u = UNITS[code], normalise_unit(unit)
  if u:
    if u not in family:
      counts[f"unit_unknown:{code}"] += 1
      return None
    value *= family[u]
  elif not lo <= value <= hi:
    fits = {round(value * f, 9) for f in family.values() if lo <= value * f <= hi}
    if len(fits) == 1:
      counts[f"unit_inferred:{code}"] += 1
      value = fits.pop()
  if not lo <= value <= hi:
    counts[f"value_implausible:{code}"] += 1
    return None
  return value


def _first(values: Mapping[str, float], *codes: str) -> tuple[str, float] | None:
  for c in codes:
    if c in values:
      return c, values[c]
  return None


def report_values(rows: Mapping[str, tuple[str, str]], counts: collections.Counter
                  ) -> tuple[dict[str, float], dict[str, str]]:
  """One report's rows {code: (result, unit)} -> (measurements, grades).

  LVEF: biplane Simpson > 3D > the middle of the reported `lvef`..`lvef_upper` range (the
    release stores a visual estimate as a range; `lvef` alone is its lower bound, counted)
    (ASE 2015: biplane disc summation is the recommended 2D method).
  LAVI: `la_vol` / `body_surface_area` of the same report (ASE 2015 indexes LA volume to BSA).
  RVSP: `tr_mmhg` (the TR pressure gradient, 4v^2) + RA pressure from the `ivc` grade
    (ASE 2010: 3, 8 or 15 mmHg).
  E/e': `mean_E_to_eprime` > `e_e_prime` > `mv_peak_e` over the mean of the septal and lateral
    e' present (ASE/EACVI 2016 uses the average E/e').
  TAPSE and every length: cm or mm by the unit, or by magnitude when the unit is empty.
  """
  nums: dict[str, float] = {}
  grades: dict[str, str] = {}
  ra_text = None
  for code, (result, unit) in rows.items():
    if code == "ivc":
      ra_text = result
    elif code in mimic_grades.GRADE_CODES:
      try:
        grade, level = mimic_grades.lookup(code, result)
      except LookupError:
        counts[f"grade_unmapped:{code}"] += 1
        continue
      if level is None:
        counts[f"grade_not_assessable:{code}"] += 1
      else:
        grades[grade] = level
    elif code in UNITS:
      v = read_number(code, result, unit, counts)
      if v is not None:
        nums[code] = v

  out = {key: nums[code] for code, key in DIRECT.items() if code in nums}
  ef = _first(nums, "biplane_lvef", "lvef_3d")
  if ef is None and "lvef" in nums:
    upper = nums.get("lvef_upper")
    if upper is None or upper < nums["lvef"]:
      counts["lvef_range_without_upper"] += 1
    ef = ("lvef_range", nums["lvef"] if upper is None or upper < nums["lvef"]
          else (nums["lvef"] + upper) / 2)
  if ef is not None:
    out["lvef"] = ef[1]
    counts[f"lvef_from:{ef[0]}"] += 1
  if "la_vol" in nums:
    if "body_surface_area" in nums:
      out["lavi"] = nums["la_vol"] / nums["body_surface_area"]
    else:
      counts["lavi_missing_bsa"] += 1
  if "tr_mmhg" in nums:
    ra = None
    if ra_text is not None:
      try:
        ra = mimic_grades.ra_pressure(ra_text)
      except LookupError:
        counts["grade_unmapped:ivc"] += 1
    if ra is None:
      counts["rvsp_missing_ra_pressure"] += 1
    else:
      out["rvsp"] = nums["tr_mmhg"] + ra
  ee = _first(nums, "mean_e_to_eprime", "e_e_prime")
  if ee is None and "mv_peak_e" in nums:
    eprimes = [nums[c] for c in ("sept_e_prime", "lat_e_prime") if c in nums]
    if eprimes:
      ee = ("e_over_mean_eprime", nums["mv_peak_e"] / (sum(eprimes) / len(eprimes)))
      if len(eprimes) == 1:
        counts["e_e_prime_one_site"] += 1
  if ee is not None:
    out["e_e_prime"] = ee[1]
  for key, value in list(out.items()):
    if not schema.is_plausible(key, value):
      counts[f"derived_implausible:{key}"] += 1
      del out[key]
  return out, grades


def classify_code(code: str) -> str:
  """'numeric', 'grade', 'ignored' or 'unmapped' for a `measurement` code (lower-cased)."""
  if code in UNITS or code in DIRECT:
    return "numeric"
  if code in mimic_grades.GRADE_CODES or code == "ivc":
    return "grade"
  if code in IGNORED:
    return "ignored"
  return "unmapped"


def normalise_code(code: str) -> str:
  """'mean_E_to_eprime' -> 'mean_e_to_eprime': codes are matched case-insensitively."""
  return re.sub(r"\s+", "", str(code or "")).lower()
