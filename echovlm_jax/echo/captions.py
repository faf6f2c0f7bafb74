"""Measurement-grounded captions: one view + the measurements that view shows.

Each statement gives value, unit and the guideline words from `guidelines.interpret`, in
one of several phrasings chosen by an rng. `negation.py` parses and flips these sentences.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

from echovlm_jax.echo import grades as grades_lib
from echovlm_jax.echo import guidelines
from echovlm_jax.echo import schema

# Short names used by one phrasing per statement (also read back by negation.py).
ABBREVIATIONS: dict[str, str] = {
    "lvef": "LVEF", "lvidd": "LVIDd", "lvids": "LVIDs", "ivsd": "IVSd", "lvpwd": "LVPWd",
    "lavi": "LAVI", "tapse": "TAPSE", "rvd_basal": "RV basal diameter",
    "aortic_root": "Aortic root diameter", "av_vmax": "AV Vmax",
    "av_mean_gradient": "AV mean gradient", "tr_vmax": "TR Vmax", "rvsp": "RVSP",
    "e_e_prime": "E/e'", "pericardial_effusion": "Pericardial effusion",
}
# Decimals a value is printed with (more are added when rounding would cross a cut-off).
DECIMALS: dict[str, int] = {m: 1 for m in schema.MEASUREMENTS}
DECIMALS.update(lvef=0, lavi=0, av_mean_gradient=0, rvsp=0)

VIEW_TEMPLATES = (
    "This is {a} {desc}.",
    "The image shows {a} {desc}.",
    "{A} {desc}.",
    "Echocardiogram, {desc}.",
)
# The unknown view makes no view claim: its caption opens with a study sentence.
UNKNOWN_VIEW_TEMPLATES = (
    "An echocardiographic image.",
    "An echocardiogram of the heart.",
    "Echocardiographic image of the heart.",
)
GRADED_TEMPLATES = (
    "The {desc} is {val}, which is {phrase}.",
    "The {desc} measures {val} ({phrase}).",
    "{Desc} of {val}, {phrase}.",
    "{abbr} {val}, {phrase}.",
)
UNGRADED_TEMPLATES = (
    "The {desc} is {val}.",
    "The {desc} measures {val}.",
    "{Desc} of {val}.",
    "{abbr} {val}.",
)
# Effusion is worded as a present / absent finding; the absent form states no value.
EFFUSION_PRESENT_TEMPLATES = (
    "There is {phrase} of {val}.",
    "{Phrase} measuring {val} is seen.",
    "{Phrase} of {val} is present.",
)
EFFUSION_ABSENT_TEMPLATES = (
    "There is {phrase}.",
    "{Phrase} is seen.",
    "{Phrase}.",
)


def _cap(s: str) -> str:
  return s[:1].upper() + s[1:]


def _article(word: str) -> str:
  return "an" if word[:1].lower() in "aeiou" else "a"


def _pick(rng, n: int) -> int:
  """Index in [0, n): 0 without an rng; random.Random or numpy Generator otherwise."""
  if rng is None:
    return 0
  if hasattr(rng, "integers"):
    return int(rng.integers(n))
  return rng.randrange(n)


def format_number(name: str, value: float, sex: str | None) -> str:
  """The value as printed, with enough decimals that the printed number has the same
  guideline interpretation as the raw one (LVEF 51.7 in a man stays "51.7", not "52")."""
  target = guidelines.interpret(name, value, sex)
  v = float(value)
  for d in range(DECIMALS[name], DECIMALS[name] + 4):
    text = f"{v:.{d}f}"
    if guidelines.interpret(name, float(text), sex) == target:
      break
  return text.lstrip("-") if float(text) == 0 else text


def format_value(name: str, value: float, sex: str | None) -> str:
  """Number and unit as captions print them, e.g. "45 %", "6.1 cm", "15.2" (E/e')."""
  unit = schema.MEASUREMENT_INFO[name].unit
  number = format_number(name, value, sex)
  return f"{number} {unit}" if unit else number


def measurement_sentence(name: str, value: float, sex: str | None, rng=None) -> str:
  """One statement about one present measurement, e.g. "The left ventricular internal
  diameter in diastole is 6.1 cm, which is dilated."."""
  info = schema.MEASUREMENT_INFO[name]
  abnormal, phrase = guidelines.interpret(name, value, sex)
  fields = dict(desc=info.description, Desc=_cap(info.description), abbr=ABBREVIATIONS[name],
                val=format_value(name, value, sex), phrase=phrase, Phrase=_cap(phrase))
  if name == "pericardial_effusion":
    templates = EFFUSION_PRESENT_TEMPLATES if abnormal else EFFUSION_ABSENT_TEMPLATES
  elif abnormal is None:
    templates = UNGRADED_TEMPLATES
  else:
    templates = GRADED_TEMPLATES
  return templates[_pick(rng, len(templates))].format(**fields)


def view_sentence(view: str, rng=None) -> str:
  """The sentence naming the view; a generic one (no view claim) for "unknown"."""
  info = schema.VIEW_INFO[schema.check_view(view)]
  if info.kind == "unknown":
    return UNKNOWN_VIEW_TEMPLATES[_pick(rng, len(UNKNOWN_VIEW_TEMPLATES))]
  a = _article(info.description)
  return VIEW_TEMPLATES[_pick(rng, len(VIEW_TEMPLATES))].format(
      a=a, A=_cap(a), desc=info.description)


class Statement(NamedTuple):
  """One sentence of a caption and what it states: `kind` "measurement" or "grade" with the
  name in `states`, or "view" (states None) for the view / study sentence."""
  text: str
  states: str | None
  kind: str


# An image of unknown view speaks for its whole study, as EchoCLIP pairs a study's report with
# each of its videos; a spectral Doppler still (known from its ultrasound regions) states the
# Doppler findings only.
SPECTRAL_TEMPLATES = (
    "A spectral Doppler recording.",
    "A Doppler spectral display.",
)
_DOPPLER_VIEWS = tuple(v for v in schema.VIEWS if schema.VIEW_INFO[v].kind == "doppler")


def _shown(view: str, image_kind: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(measurements, grades) a caption of this image states, in schema order."""
  if view != schema.UNKNOWN_VIEW:
    return schema.view_measurements(view), schema.view_grades(view)
  if image_kind == "spectral":
    meas = tuple(m for m in schema.MEASUREMENTS
                 if set(schema.MEASUREMENT_INFO[m].views) & set(_DOPPLER_VIEWS))
    grades = tuple(g for g in schema.GRADES if set(schema.GRADE_INFO[g].views) & set(_DOPPLER_VIEWS))
    return meas, grades
  return schema.MEASUREMENTS, schema.GRADES


def caption_statements(view: str, measurements: Mapping[str, float], sex: str | None, rng=None,
                       *, grades: Mapping[str, str] | None = None,
                       image_kind: str | None = None) -> list[Statement]:
  """The caption of one image as statements: the view (or study) sentence, each present
  measurement the image shows, then each grade it shows whose label no stated number
  decides (a number wins over a grade of the same finding).

  view "unknown": the whole study (every measurement and grade), or with image_kind
  "spectral" its Doppler findings. grades: grade name -> level (echo/grades.py).
  """
  schema.check_view(view)
  schema.check_measurement_names(measurements)
  grades = dict(grades or {})
  for g, level in grades.items():
    grades_lib.check_level(g, level)
  meas_names, grade_names = _shown(view, image_kind)
  if view != schema.UNKNOWN_VIEW:
    first = view_sentence(view, rng)
  else:
    t = SPECTRAL_TEMPLATES if image_kind == "spectral" else UNKNOWN_VIEW_TEMPLATES
    first = t[_pick(rng, len(t))]
  out = [Statement(first, None, "view")]
  for name in meas_names:
    value = measurements.get(name)
    if schema.is_present(value):
      out.append(Statement(measurement_sentence(name, value, sex, rng), name, "measurement"))
  for name in grade_names:
    if name in grades and not grades_lib.numeric_label_stated(name, measurements):
      out.append(Statement(grades_lib.sentence(name, grades[name]), name, "grade"))
  return out


def make_caption(view: str, measurements: Mapping[str, float], sex: str | None,
                 rng=None, *, grades: Mapping[str, str] | None = None,
                 image_kind: str | None = None) -> str:
  """Caption of one image: the view, then each present measurement (and grade) it shows.

  view: a name in schema.VIEWS ("unknown": the study's whole report, see
  `caption_statements`). measurements: canonical name -> value (absent / None / NaN are
  skipped; values are taken as given, the reader filters implausible ones). sex: "M" / "F" /
  other = unknown (female cut-offs). rng: None for the first phrasing of every sentence, or
  random.Random / numpy Generator to vary them. grades, image_kind: see `caption_statements`.
  Raises ValueError on an unknown view, measurement or grade name.
  """
  return " ".join(s.text for s in caption_statements(view, measurements, sex, rng, grades=grades,
                                                     image_kind=image_kind))
