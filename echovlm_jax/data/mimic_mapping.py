"""The table from MIMIC-IV-ECHO structured measurement names and units to canonical keys.

Pure data plus two lookups. A name that is not in the table is never guessed: the reader
counts it and reports it, and a user extends `MAPPING` (docs/mimic.md says how).
"""

from __future__ import annotations

import dataclasses
import re

from echovlm_jax.echo import schema


@dataclasses.dataclass(frozen=True)
class Source:
  key: str                # canonical measurement (echovlm_jax.echo.schema.MEASUREMENTS)
  method: str             # how it was measured, for the docs and for debugging
  priority: int           # lower wins when one study has several sources for one key
  names: tuple[str, ...]  # normalised (see `normalise_name`) `measurement` codes or descriptions


# Names are matched after `normalise_name`, first on the `measurement` column, then on
# `measurement_description`. Priorities encode guideline preferences: biplane Simpson LVEF
# (ASE 2015) over single-plane, 3D, visual and M-mode (Teichholz, unreliable with regional
# wall motion); biplane LAVI over single-plane; average E/e' (ASE/EACVI 2016) over one site.
MAPPING: tuple[Source, ...] = (
    Source("lvef", "biplane Simpson", 0, (
        "lvef biplane", "lvef bp", "lvef mod bp", "lvef simpson biplane", "ef biplane",
        "biplane ef", "lv ejection fraction biplane", "ejection fraction biplane",
        "lvef biplane simpson", "lvef mod biplane")),
    Source("lvef", "single-plane Simpson", 1, (
        "lvef a4c", "lvef mod a4c", "lvef 4ch", "lvef a2c", "lvef mod a2c", "lvef 2ch",
        "lv ejection fraction a4c", "lv ejection fraction a2c", "lvef single plane")),
    Source("lvef", "3D volumetric", 2, ("lvef 3d", "lv ejection fraction 3d", "3d lvef")),
    Source("lvef", "visual estimate / reported", 3, (
        "lvef", "ef", "lv ejection fraction", "ejection fraction", "lvef visual",
        "lvef estimated", "lvef reported", "lv ejection fraction visual")),
    Source("lvef", "M-mode Teichholz", 4, (
        "lvef mmode", "lvef m mode", "lvef teichholz", "lvef teich", "ef teich",
        "lv ejection fraction teichholz", "lv ejection fraction m mode")),
    Source("lvidd", "2D / M-mode", 0, (
        "lvidd", "lvid d", "lvid diastole", "lvedd", "lv internal diameter diastole",
        "lv end diastolic dimension", "lv end diastolic diameter", "lvidd 2d", "lvidd mmode")),
    Source("lvids", "2D / M-mode", 0, (
        "lvids", "lvid s", "lvid systole", "lvesd", "lv internal diameter systole",
        "lv end systolic dimension", "lv end systolic diameter", "lvids 2d", "lvids mmode")),
    Source("ivsd", "2D / M-mode", 0, (
        "ivsd", "ivs d", "ivs diastole", "interventricular septum diastole",
        "interventricular septal thickness diastole", "septal wall thickness", "ivs")),
    Source("lvpwd", "2D / M-mode", 0, (
        "lvpwd", "lvpw d", "lvpw diastole", "lv posterior wall diastole",
        "lv posterior wall thickness diastole", "posterior wall thickness", "lvpw",
        "inferolateral wall thickness")),
    Source("lavi", "biplane", 0, (
        "lavi", "lavi biplane", "la vol index", "la volume index", "la volume index biplane",
        "left atrial volume index", "la vol index bp")),
    Source("lavi", "single-plane", 1, (
        "lavi a4c", "la vol index a4c", "lavi a2c", "la vol index a2c", "la volume index a4c")),
    Source("tapse", "M-mode", 0, ("tapse", "tricuspid annular plane systolic excursion")),
    Source("rvd_basal", "2D, RV-focused A4C", 0, (
        "rvd1", "rvd basal", "rv basal diameter", "rv diameter basal", "rv basal dimension",
        "rvd")),
    Source("aortic_root", "2D, sinus of Valsalva", 0, (
        "ao root", "ao root diam", "aortic root", "aortic root diameter", "aortic sinus diameter",
        "aortic root sinus", "ao sinus")),
    Source("av_vmax", "CW Doppler", 0, (
        "av peak vel", "av vmax", "av peak velocity", "av max vel", "av v2 max", "ao v2 max",
        "aortic valve peak velocity")),
    Source("av_mean_gradient", "CW Doppler", 0, (
        "av mean grad", "av mean gradient", "av mean pg", "av pg mean", "ao v2 mean pg",
        "aortic valve mean gradient")),
    Source("tr_vmax", "CW Doppler", 0, (
        "tr peak vel", "tr vmax", "tr max vel", "tr peak velocity",
        "tricuspid regurgitation peak velocity")),
    Source("rvsp", "TR gradient + RA pressure", 0, (
        "rvsp", "rv systolic pressure", "right ventricular systolic pressure", "pasp",
        "pa systolic pressure", "estimated pa systolic pressure")),
    Source("e_e_prime", "average of septal and lateral", 0, (
        "e e", "e e prime", "e e average", "e e avg", "average e e", "e e ratio",
        "mitral e e average")),
    Source("e_e_prime", "one annular site", 1, (
        "e e lateral", "e e lat", "e e septal", "e e medial", "e e sept")),
    Source("pericardial_effusion", "largest diastolic separation", 0, (
        "pericardial effusion", "pericardial effusion size", "pe size",
        "pericardial effusion diastole", "pericardial effusion max")),
)

# Normalised unit -> factor into the canonical unit of schema.MEASUREMENT_INFO[key].unit.
_CM = {"cm": 1.0, "mm": 0.1, "m": 100.0}
_MS = {"m/s": 1.0, "m/sec": 1.0, "cm/s": 0.01, "cm/sec": 0.01, "mm/s": 0.001}
_MMHG = {"mmhg": 1.0}
UNIT_FACTORS: dict[str, dict[str, float]] = {
    # An empty unit is taken as the canonical one only where no other reading is possible
    # (a percentage, a ratio); fractions like 0.55 then fail the plausibility check.
    "lvef": {"%": 1.0, "percent": 1.0, "": 1.0},
    "lvidd": _CM, "lvids": _CM, "ivsd": _CM, "lvpwd": _CM, "tapse": _CM, "rvd_basal": _CM,
    "aortic_root": _CM, "pericardial_effusion": _CM,
    "lavi": {"ml/m2": 1.0, "cc/m2": 1.0, "cm3/m2": 1.0},
    "av_vmax": _MS, "tr_vmax": _MS,
    "av_mean_gradient": _MMHG, "rvsp": _MMHG,
    "e_e_prime": {"": 1.0, "ratio": 1.0, "none": 1.0},
}


def normalise_name(name: str) -> str:
  """'LVEF (Biplane)' -> 'lvef biplane'; "E/e' avg" -> 'e e avg'; 'LVIDd' -> 'lvidd'."""
  return re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()


def normalise_unit(unit: str) -> str:
  """'mL/m²' -> 'ml/m2'; 'mm Hg' -> 'mmhg'; 'cm/sec' -> 'cm/sec'."""
  u = str(unit or "").strip().lower().replace("²", "2").replace("^2", "2").replace(" ", "")
  return "" if u in ("nan", "null") else u


_BY_NAME: dict[str, Source] = {}
for _src in MAPPING:
  assert _src.key in schema.MEASUREMENT_INFO, _src.key
  for _n in _src.names:
    assert _n == normalise_name(_n), f"mapping name {_n!r} is not normalised"
    assert _n not in _BY_NAME, f"mapping name {_n!r} listed twice"
    _BY_NAME[_n] = _src
assert set(UNIT_FACTORS) == set(schema.MEASUREMENTS), "every canonical key needs its units"


def lookup(measurement: str, description: str = "") -> Source | None:
  """The mapping row for a MIMIC measurement (code first, then description), or None."""
  return _BY_NAME.get(normalise_name(measurement)) or _BY_NAME.get(normalise_name(description))


def convert(key: str, value: float, unit: str) -> float | None:
  """`value` in `unit` -> the canonical unit of `key`; None when the unit is not known."""
  factor = UNIT_FACTORS[key].get(normalise_unit(unit))
  return None if factor is None else value * factor
