"""Procedural synthetic echo dataset: patients -> studies -> views -> frames.

Owns the patient model (sex, body size, correlated phenotypes, measurements
consistent with them) and the study sampler; images come from
synthetic_render. Deterministic: every patient draws from its own
SeedSequence((seed, index)), so a patient's records never depend on how many
others are generated.

How a single frame (num_frames=1, the paper's setting) still shows LVEF and
TAPSE: the views whose captions state them (plax, psax_mid, a4c, a2c, a3c)
are drawn in the scanner's "2D + M-mode" display, the 2D sector at
end-diastole above an M-mode strip that records ~2.5 s of wall motion along a
cursor through the LV (a4c: beside a second one through the lateral tricuspid
annulus). LV wall excursion in the strip follows the Teichholz diameters that
give the stated EF; the annulus excursion is the TAPSE. Clips (num_frames > 1)
instead show the 2D sector alone (no M-mode strip: motion is the only source of LVEF), over
one cardiac cycle or at a stated frame rate (clip_fps), and the LV area change follows the EF.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from echovlm_jax.data import synthetic_anatomy as anat
from echovlm_jax.data import synthetic_render
from echovlm_jax.data import synthetic_sites
from echovlm_jax.data.synthetic_layout import sector_mask  # noqa: F401  (public re-export)
from echovlm_jax.echo import schema

render_view = synthetic_render.render_view

# How often a sonographer records each view (a study samples 4-7 of them).
_VIEW_WEIGHTS = {
    "plax": 1.0, "psax_av": 0.6, "psax_mid": 0.8, "a4c": 1.0, "a2c": 0.7, "a3c": 0.6,
    "a5c": 0.5, "subcostal": 0.6, "suprasternal": 0.35, "cw_av": 0.65, "cw_tr": 0.65,
}
MISSING_RATE = 0.10      # each measurement is absent from a study's report this often
UNKNOWN_RATE = 0.03      # images whose view label was never recorded
_DECIMALS = {"lvef": 0, "lavi": 0, "av_mean_gradient": 0, "rvsp": 0, "e_e_prime": 1}


def _u(rng, lo, hi):
  return float(rng.uniform(lo, hi))


def sample_patient(rng: np.random.Generator, site: str = "a") -> dict:
  """One patient: sex, age, height/weight/BSA, phenotype flags and true measurements.

  Phenotypes are drawn so each guideline label has both classes often (roughly
  25-50 % positive): healthy, dilated cardiomyopathy (low EF, large LV),
  ischaemic dysfunction, hypertrophy, LA enlargement, RV disease, aortic
  stenosis, pulmonary hypertension, diastolic dysfunction, effusion, and their
  combinations (AS brings hypertrophy, DCM brings LA enlargement and PH, ...). `site`
  (synthetic_sites) shifts the population: more disease, other body sizes; the random draws
  are the same, so site "a" is the default population exactly.
  """
  lab = synthetic_sites.get(site)
  sex = "M" if rng.random() < 0.5 else "F"
  male = sex == "M"
  age = int(rng.integers(20, 91))
  height = rng.normal((176 if male else 163) + lab.height_shift_cm, 7)
  weight = float(np.clip(rng.normal((82 if male else 68) + lab.weight_shift_kg, 14), 42, 160))
  bsa = math.sqrt(height * weight / 3600.0)
  healthy = rng.random() < lab.healthy_rate
  p = (lambda q: (not healthy) and rng.random() < min(1.0, q * lab.disease_scale))
  old = age > 65
  f = {"dcm": p(0.3), "ischaemic": p(0.15), "as": p(0.42 if old else 0.28)}
  f["hypertrophy"] = p(0.3) or (f["as"] and rng.random() < 0.6)
  f["ph"] = p(0.25) or (f["dcm"] and rng.random() < 0.4)
  f["rv"] = p(0.15) or (f["ph"] and rng.random() < 0.6)
  f["la"] = p(0.2) or ((f["dcm"] or f["hypertrophy"] or f["as"]) and rng.random() < 0.7)
  f["diastolic"] = p(0.15) or ((f["dcm"] or f["hypertrophy"] or f["la"]) and rng.random() < 0.5)
  f["effusion"] = p(0.35)

  m: dict[str, float] = {}
  lvidd_cut = 5.8 if male else 5.2
  m["lvidd"] = (lvidd_cut + 0.2 + rng.exponential(0.6) if f["dcm"]
                else float(np.clip(rng.normal(4.8 if male else 4.45, 0.35), 3.6, lvidd_cut + 0.3)))
  if f["dcm"]:
    m["lvef"] = _u(rng, 15, 45)
  elif f["ischaemic"]:
    m["lvef"] = _u(rng, 28, 50)
  else:
    m["lvef"] = float(np.clip(rng.normal(62, 4.5), 52, 75))
  wall_cut = 1.0 if male else 0.9
  if f["hypertrophy"]:
    m["ivsd"] = wall_cut + 0.1 + rng.exponential(0.35)
    m["lvpwd"] = float(np.clip(m["ivsd"] * rng.uniform(0.75, 1.0), 0.7, 2.4))
  else:
    m["ivsd"] = float(np.clip(rng.normal(wall_cut - 0.12, 0.07), 0.6, wall_cut + 0.05))
    m["lvpwd"] = float(np.clip(m["ivsd"] + rng.normal(0, 0.05), 0.55, wall_cut + 0.05))
  if f["dcm"]:
    m["ivsd"] *= 0.9
    m["lvpwd"] *= 0.9
  m["lavi"] = _u(rng, 36, 70) if f["la"] else float(np.clip(rng.normal(26, 4), 16, 35))
  m["tapse"] = _u(rng, 0.9, 1.65) if f["rv"] else float(np.clip(rng.normal(2.3, 0.3), 1.65, 3.2))
  m["rvd_basal"] = (_u(rng, 4.3, 6.0) if (f["rv"] and rng.random() < 0.85) or f["ph"] and rng.random() < 0.5
                    else float(np.clip(rng.normal(3.5, 0.35), 2.5, 4.2)))
  m["aortic_root"] = float(np.clip(rng.normal(3.3 if male else 3.0, 0.3) + 0.006 * (age - 50), 2.2, 4.6))
  m["av_vmax"] = _u(rng, 2.7, 5.2) if f["as"] else float(np.clip(rng.normal(1.3, 0.22), 0.8, 2.4))
  m["tr_vmax"] = _u(rng, 2.95, 4.6) if f["ph"] else float(np.clip(rng.normal(2.3, 0.22), 1.6, 2.75))
  rap = 15.0 if f["rv"] and rng.random() < 0.5 else (8.0 if f["ph"] or rng.random() < 0.15 else 3.0)
  m["rap"] = rap
  m["e_e_prime"] = _u(rng, 14.5, 26) if f["diastolic"] else float(np.clip(rng.normal(8.5, 2), 4, 13.5))
  if f["effusion"]:
    size = rng.random()
    m["pericardial_effusion"] = _u(rng, 0.3, 0.95) if size < 0.6 else (
        _u(rng, 1.0, 2.0) if size < 0.9 else _u(rng, 2.0, 3.0))
  else:
    m["pericardial_effusion"] = 0.0 if rng.random() < 0.8 else _u(rng, 0.02, 0.08)
  return {"sex": sex, "age": age, "height_cm": float(height), "weight_kg": weight, "bsa": bsa,
          "phenotypes": sorted(k for k, v in f.items() if v) or ["healthy"], "true": m}


def _study_measurements(true: dict[str, float], rng: np.random.Generator, first: bool) -> dict:
  """Full canonical measurement set for one study: re-measured (a later study drifts a
  little), derived quantities made consistent, rounded as a report would and clipped to
  schema plausible ranges."""
  m = dict(true)
  noise = 0.02 if first else 0.05
  for k in ("lvidd", "ivsd", "lvpwd", "lavi", "tapse", "rvd_basal", "aortic_root", "av_vmax",
            "tr_vmax", "e_e_prime", "pericardial_effusion"):
    m[k] = m[k] * (1.0 + rng.normal(0, noise))
  m["lvef"] = m["lvef"] + rng.normal(0, 1.5 if first else 3.0)
  m["lvef"] = float(np.clip(m["lvef"], 8, 80))
  m["lvids"] = anat.lvids_from_ef(m["lvidd"], m["lvef"])
  m["av_mean_gradient"] = synthetic_render.mean_gradient("cw_av", m["av_vmax"]) * (1 + rng.normal(0, 0.05))
  m["rvsp"] = 4.0 * m["tr_vmax"] ** 2 + m.pop("rap")
  out = {}
  for k in schema.MEASUREMENTS:
    lo, hi = schema.MEASUREMENT_INFO[k].plausible_range
    out[k] = round(float(np.clip(m[k], lo, hi)), _DECIMALS.get(k, 2))
  return out


def patient_key(seed: int, index: int) -> str:
  return f"synth{seed}-p{index:06d}"


# What the T frames of a B-mode example show (config.input.frames_at): "cycle" (a still at
# end-diastole for T = 1, else T frames over one cycle from a random phase) or "ed_es" (T = 2:
# end-diastole then end-systole, as CAMUS's image pairs; the dense tasks' data).
FRAMES_AT = ("cycle", "ed_es")


def phases_for(frames_at: str, num_frames: int) -> np.ndarray | None:
  """The phases render() draws for `frames_at` (None = its own); ValueError on a bad pair."""
  if frames_at not in FRAMES_AT:
    raise ValueError(f"config.input.frames_at={frames_at!r}: expected one of {FRAMES_AT}.")
  if frames_at == "cycle":
    return None
  if num_frames != 2:
    raise ValueError(f"config.input.frames_at='ed_es' draws 2 frames (end-diastole, end-systole); "
                     f"config.input.num_frames={num_frames}: set it to 2.")
  return np.array([schema.ED_PHASE, schema.ES_PHASE])


def patient_records(seed: int, index: int, image_size: int = 128, num_frames: int = 1,
                    frames_at: str = "cycle", clip_fps: float = 0.0, site: str = "a"
                    ) -> Iterator[tuple[str, dict]]:
  """All records of patient `index` (1-2 studies, 4-7 views each); see generate_records."""
  phases = phases_for(frames_at, num_frames)
  lab = synthetic_sites.get(site)
  rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
  patient = sample_patient(rng, site)
  pkey = patient_key(seed, index)
  names = list(_VIEW_WEIGHTS)
  weights = np.array([_VIEW_WEIGHTS[v] for v in names])
  n_studies = 1 + int(rng.random() < 0.35)
  for j in range(n_studies):
    true = _study_measurements(patient["true"], rng, first=j == 0)
    # The report omits some measurements; the heart in the images still has them.
    reported = {k: v for k, v in true.items() if rng.random() >= MISSING_RATE}
    reported = {k: v for k, v in reported.items() if k not in lab.unreported}
    skey = f"{pkey}-s{j}"
    n_views = int(rng.integers(4, 8))
    views = rng.choice(len(names), size=n_views, replace=False, p=weights / weights.sum())
    for i, vi in enumerate(sorted(views)):
      view = names[vi]
      shown = synthetic_render.render(view, true, patient["sex"], rng, image_size, num_frames,
                                      bsa=patient["bsa"], phases=phases, fps=clip_fps,
                                      site=site)
      label = schema.UNKNOWN_VIEW if rng.random() < UNKNOWN_RATE else view
      # A Doppler display is told apart by its layout even when its view was not recorded,
      # as a real DICOM's ultrasound regions tell.
      kind = "spectral" if schema.VIEW_INFO[view].kind == "doppler" else "2d"
      yield f"{skey}-i{i:02d}", {
          "frames": shown.frames, "view": label, "drawn_view": view, "measurements": dict(reported),
          "dense_truth": kind == "2d", "masks": shown.labels, "landmarks": shown.landmarks,
          "phases": shown.phases, "pixel_spacing_mm": shown.pixel_spacing_mm,
          "view_source": "synthetic" if label != schema.UNKNOWN_VIEW else "none",
          "view_confidence": 1.0 if label != schema.UNKNOWN_VIEW else 0.0, "image_kind": kind,
          "sex": patient["sex"], "patient_key": pkey, "study_key": skey, "source": "synthetic"}


def generate_records(num_patients: int, seed: int, image_size: int = 128,
                     num_frames: int = 1, frames_at: str = "cycle", clip_fps: float = 0.0,
                     site: str = "a") -> Iterator[tuple[str, dict]]:
  """Yields (key, record) for patients 0..num_patients-1 (see tfds_builders/echoground/records.py).

  record: frames uint8 [T, H, W] (T = num_frames, H = W = image_size; a clip spans one cycle,
  or T / clip_fps seconds when clip_fps > 0: synthetic_render.render), view (in
  schema.VIEWS; ~3 % 'unknown', drawn as a real view), view_source / view_confidence
  ("synthetic" / 1.0, or "none" / 0.0 when unknown), drawn_view (the view rendered, also when
  its label is unknown: not stored, the truth synthetic_views scores predictions against),
  image_kind ("spectral" for Doppler
  views, else "2d"); the renderer's ground truth (dense_truth True for B-mode; masks uint8 [T, H, W],
  landmarks float32 [T, K, 2], phases float32 [T], pixel_spacing_mm: synthetic_render.Rendered);
  measurements (study-level, canonical names, ~10 % absent), sex,
  patient_key, study_key, source='synthetic'.
  site: the simulated lab (synthetic_sites; "a" = the default dataset).
  The builder owns the split (by patient_key); `patient_records` renders one patient.
  """
  for index in range(num_patients):
    yield from patient_records(seed, index, image_size, num_frames, frames_at, clip_fps, site)
