"""The echo vocabulary: views, canonical measurements and guideline labels.

Pure Python (no jax / tf). Every other module takes its names from here, so a
dataset record, a caption, a loss mask and an evaluation agree on one order.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class View:
  name: str          # canonical key, stored in the dataset's ClassLabel
  description: str   # how a sonographer would name it, used in captions
  kind: str          # "bmode", "doppler" or "unknown"


# Order matters: it is the ClassLabel order of the `view` feature.
_VIEW_LIST = (
    View("plax", "parasternal long axis view", "bmode"),
    View("psax_av", "parasternal short axis view at the aortic valve level", "bmode"),
    View("psax_mid", "parasternal short axis view at the papillary muscle level", "bmode"),
    View("a4c", "apical four-chamber view", "bmode"),
    View("a2c", "apical two-chamber view", "bmode"),
    View("a3c", "apical three-chamber view", "bmode"),
    View("a5c", "apical five-chamber view", "bmode"),
    View("subcostal", "subcostal four-chamber view", "bmode"),
    View("suprasternal", "suprasternal notch view of the aortic arch", "bmode"),
    View("cw_av", "continuous-wave Doppler through the aortic valve", "doppler"),
    View("cw_tr", "continuous-wave Doppler through the tricuspid valve", "doppler"),
    View("unknown", "echocardiographic image of unknown view", "unknown"),
)
VIEW_INFO: dict[str, View] = {v.name: v for v in _VIEW_LIST}
VIEWS: tuple[str, ...] = tuple(v.name for v in _VIEW_LIST)
UNKNOWN_VIEW = "unknown"
UNKNOWN_VIEW_ID = VIEWS.index(UNKNOWN_VIEW)
KNOWN_VIEWS: tuple[str, ...] = tuple(v for v in VIEWS if v != UNKNOWN_VIEW)


@dataclasses.dataclass(frozen=True)
class Measurement:
  name: str
  unit: str                      # as written in captions
  description: str               # noun phrase used in captions
  plausible_range: tuple[float, float]  # values outside are data errors, not patients
  views: tuple[str, ...]         # views from which this measurement is made


# Units and names exactly as in docs/design.md. Plausible ranges are wide physiological
# bounds used to reject data-entry errors (e.g. LVIDd of 45 means mm, not cm).
_MEASUREMENT_LIST = (
    Measurement("lvef", "%", "left ventricular ejection fraction", (5.0, 85.0),
                ("plax", "psax_mid", "a4c", "a2c", "a3c")),
    Measurement("lvidd", "cm", "left ventricular internal diameter in diastole", (2.0, 9.0),
                ("plax", "psax_mid")),
    Measurement("lvids", "cm", "left ventricular internal diameter in systole", (1.0, 8.0),
                ("plax", "psax_mid")),
    Measurement("ivsd", "cm", "interventricular septal thickness in diastole", (0.4, 2.5),
                ("plax", "psax_mid")),
    Measurement("lvpwd", "cm", "left ventricular posterior wall thickness in diastole", (0.4, 2.5),
                ("plax", "psax_mid")),
    Measurement("lavi", "mL/m²", "left atrial volume index", (10.0, 150.0),
                ("a4c", "a2c")),
    Measurement("tapse", "cm", "tricuspid annular plane systolic excursion", (0.4, 4.0),
                ("a4c",)),
    Measurement("rvd_basal", "cm", "basal right ventricular diameter", (1.5, 7.0),
                ("a4c", "subcostal")),
    Measurement("aortic_root", "cm", "aortic root diameter", (1.5, 6.5),
                ("plax", "psax_av")),
    Measurement("av_vmax", "m/s", "peak aortic valve velocity", (0.5, 7.0),
                ("cw_av",)),
    Measurement("av_mean_gradient", "mmHg", "mean aortic valve gradient", (1.0, 120.0),
                ("cw_av",)),
    Measurement("tr_vmax", "m/s", "peak tricuspid regurgitation velocity", (0.5, 6.0),
                ("cw_tr",)),
    Measurement("rvsp", "mmHg", "right ventricular systolic pressure", (10.0, 130.0),
                ("cw_tr",)),
    # E/e' needs pulsed-wave tissue Doppler, which no view in VIEWS shows; it is kept
    # in the measurement vector and its label, but no image caption states it.
    Measurement("e_e_prime", "", "E/e' ratio", (2.0, 40.0), ()),
    Measurement("pericardial_effusion", "cm", "pericardial effusion", (0.0, 5.0),
                ("plax", "psax_mid", "a4c", "subcostal")),
)
MEASUREMENT_INFO: dict[str, Measurement] = {m.name: m for m in _MEASUREMENT_LIST}
MEASUREMENTS: tuple[str, ...] = tuple(m.name for m in _MEASUREMENT_LIST)

LABELS: tuple[str, ...] = (
    "lv_systolic_dysfunction",
    "lv_dilation",
    "lv_hypertrophy",
    "la_enlargement",
    "rv_dysfunction",
    "rv_dilation",
    "aortic_stenosis",
    "pulmonary_hypertension",
    "elevated_filling_pressure",
    "pericardial_effusion",
)

# Which measurements decide each label (docs/design.md's table).
LABEL_INPUTS: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": ("lvef",),
    "lv_dilation": ("lvidd",),
    "lv_hypertrophy": ("ivsd", "lvpwd"),
    "la_enlargement": ("lavi",),
    "rv_dysfunction": ("tapse",),
    "rv_dilation": ("rvd_basal",),
    "aortic_stenosis": ("av_vmax", "av_mean_gradient"),
    "pulmonary_hypertension": ("tr_vmax", "rvsp"),
    "elevated_filling_pressure": ("e_e_prime",),
    "pericardial_effusion": ("pericardial_effusion",),
}

SEXES = ("M", "F")

# Dense ground truth (the `masks`, `landmarks`, `phases`, `pixel_spacing_mm` features).
# Structures of a segmentation mask, by value: CAMUS's convention (0-3) plus the right heart
# where a view shows it (apical and subcostal views).
STRUCTURES = ("background", "lv_cavity", "lv_myocardium", "left_atrium", "right_ventricle",
              "right_atrium")
# Named points, (row, col) in pixels, NaN where a view has none: the apical views' mitral
# annulus hinge points (1 screen-left, 2 screen-right) and endocardial LV apex; PLAX's
# caliper endpoints (EchoNet-LVH's segments: IVSd = ivs_anterior .. lv_septal_endocardium,
# LVID = lv_septal_endocardium .. lv_posterior_endocardium, LVPWd = lv_posterior_endocardium
# .. lvpw_epicardium, at end-diastole).
LANDMARKS = ("mitral_annulus_1", "mitral_annulus_2", "lv_apex", "ivs_anterior",
             "lv_septal_endocardium", "lv_posterior_endocardium", "lvpw_epicardium")
# Where an example comes from (the `source` feature): the renderer, MIMIC-IV-ECHO, or one of the
# dense releases users hold (data/dense_records.py).
SOURCES = ("synthetic", "mimic", "camus", "echonet_dynamic", "echonet_lvh")
DENSE_RELEASES = ("camus", "echonet_dynamic", "echonet_lvh")
# Which structures each source's masks label. A pixel labelled background in a source that
# does not label, say, the RV may be RV: the segmentation loss treats such a label as "any of
# the unlabelled structures" and scores only the labelled ones.
LABELLED_STRUCTURES = {"synthetic": STRUCTURES, "mimic": (),
                       "camus": STRUCTURES[:4], "echonet_dynamic": STRUCTURES[:2],
                       "echonet_lvh": ()}
# Cardiac phase in cycles: end-diastole at the R wave, end-systole at the end of ejection.
ED_PHASE, ES_PHASE = 0.0, 0.35


@dataclasses.dataclass(frozen=True)
class GradeInfo:
  """A cardiologist's graded finding (no number), stored as an ordinal severity.

  kind: how captions word it (echo/grades.py): "function", "size", "wall", "pressure",
    "filling" (post-nominal: "<subject> is mildly reduced") or "disease" ("There is mild
    <subject>.").
  label: the label it speaks for where no measurement decides that label; a name outside
    LABELS (regurgitation, right atrial size) is a finding captions state and negation
    flips without a label of its own.
  threshold: the lowest severity that makes `label` present.
  views: views that show the finding (like Measurement.views).
  """
  name: str
  kind: str
  subject: str
  label: str
  threshold: int
  views: tuple[str, ...]


# Ordinal severities stored in the dataset's `grades` feature: -1 absent or not assessable.
SEVERITIES: tuple[str, ...] = ("normal", "mild", "moderate", "severe")
_GRADE_LIST = (
    GradeInfo("lv_size", "size", "left ventricle", "lv_dilation", 1, ("plax", "psax_mid", "a4c", "a2c")),
    GradeInfo("lv_wall_thickness", "wall", "left ventricular wall thickness", "lv_hypertrophy", 1,
              ("plax", "psax_mid")),
    GradeInfo("la_size", "size", "left atrium", "la_enlargement", 1, ("plax", "a4c", "a2c")),
    GradeInfo("rv_function", "function", "right ventricular systolic function", "rv_dysfunction", 1,
              ("a4c", "subcostal")),
    GradeInfo("rv_size", "size", "right ventricle", "rv_dilation", 1, ("a4c", "subcostal", "psax_mid")),
    GradeInfo("ra_size", "size", "right atrium", "ra_enlargement", 1, ("a4c", "subcostal")),
    GradeInfo("aortic_stenosis", "disease", "aortic stenosis", "aortic_stenosis", 1,
              ("psax_av", "cw_av")),
    GradeInfo("aortic_regurgitation", "disease", "aortic regurgitation", "aortic_regurgitation", 1,
              ("plax", "psax_av", "a5c")),
    GradeInfo("mitral_regurgitation", "disease", "mitral regurgitation", "mitral_regurgitation", 1,
              ("plax", "a4c", "a2c", "a3c")),
    GradeInfo("tricuspid_regurgitation", "disease", "tricuspid regurgitation",
              "tricuspid_regurgitation", 1, ("a4c", "cw_tr", "psax_av")),
    GradeInfo("pa_pressure", "pressure", "pulmonary artery systolic pressure",
              "pulmonary_hypertension", 1, ("cw_tr",)),
    # Grade I diastolic dysfunction has a normal filling pressure (ASE/EACVI 2016); II and up
    # an elevated one. No view in VIEWS shows tissue Doppler, as for E/e'.
    GradeInfo("diastolic_function", "filling", "left ventricular filling pressure",
              "elevated_filling_pressure", 2, ()),
    GradeInfo("pericardial_effusion", "disease", "pericardial effusion", "pericardial_effusion", 1,
              ("plax", "psax_mid", "a4c", "subcostal")),
)
GRADE_INFO: dict[str, GradeInfo] = {g.name: g for g in _GRADE_LIST}
GRADES: tuple[str, ...] = tuple(g.name for g in _GRADE_LIST)

# Where an example's view came from (the `view_source` feature) and what its image is.
# "classifier": a view predicted by a trained view classifier (python -m echovlm_jax.tools.label_views).
VIEW_SOURCES: tuple[str, ...] = ("synthetic", "echoview", "view_csv", "classifier", "none",
                                 "dataset")   # dataset: the release names its view (CAMUS, EchoNet)
# From the DICOM's ultrasound regions (RegionSpatialFormat): a spectral Doppler still is
# told apart from a B-mode clip even when nobody labelled its view.
IMAGE_KINDS: tuple[str, ...] = ("2d", "m_mode", "spectral", "unknown")


def view_measurements(view: str) -> tuple[str, ...]:
  """Measurements a view shows, in MEASUREMENTS order. Raises on an unknown name."""
  check_view(view)
  return tuple(m.name for m in _MEASUREMENT_LIST if view in m.views)


def view_grades(view: str) -> tuple[str, ...]:
  """Grades a view shows, in GRADES order."""
  check_view(view)
  return tuple(g.name for g in _GRADE_LIST if view in g.views)


def view_labels(view: str) -> tuple[str, ...]:
  """Labels whose findings a view can show (any of their inputs is visible there)."""
  shown = set(view_measurements(view))
  return tuple(l for l in LABELS if shown.intersection(LABEL_INPUTS[l]))


def check_view(view: str) -> str:
  if view not in VIEW_INFO:
    raise ValueError(f"Unknown view {view!r}; expected one of {', '.join(VIEWS)} "
                     "(see echovlm_jax/echo/schema.py).")
  return view


def check_measurement_names(measurements: Mapping[str, float]) -> None:
  unknown = sorted(set(measurements) - set(MEASUREMENTS))
  if unknown:
    raise ValueError(f"Unknown measurement name(s) {unknown}; canonical names are "
                     f"{', '.join(MEASUREMENTS)} (see echovlm_jax/echo/schema.py).")


def is_present(value) -> bool:
  """A measurement counts as present when it is a finite number (NaN / None = absent)."""
  if value is None:
    return False
  try:
    v = float(value)
  except (TypeError, ValueError):
    return False
  return v == v and v not in (float("inf"), float("-inf"))


def is_plausible(name: str, value) -> bool:
  lo, hi = MEASUREMENT_INFO[name].plausible_range
  return is_present(value) and lo <= float(value) <= hi
