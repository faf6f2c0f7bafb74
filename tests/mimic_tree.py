"""A miniature MIMIC-IV-ECHO v1.0 tree, laid out as the release (shared/REAL_DATA.md): the three
CSVs (the measurements gzipped, long format, release codes and grade strings), DICOMs under
files/pNN/p<subject>/s<study>/, ECHOVIEW's per-DICOM probabilities and MIMIC-IV's patients.csv.

`write_tree` returns what it wrote and what a correct reader must make of it (values in
canonical units computed here by hand, grades, views, skip reasons), so tests compare
against an independent expectation. Every bad-input class of issue 13 is in it once.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import os
from typing import Any

import numpy as np

from tests import dicom_fixtures as dfx

SUBJECT0, STUDY0 = 10002000, 91000000
ECHOVIEW_CLASSES = (
    "plax_far", "plax_plax", "plax_laz", "psax_az", "psax_mv", "psax_pap", "a2c_lvocc_s",
    "a2c_laocc", "a2c", "a3c_lvocc_s", "a3c_laocc", "a3c", "a4c_lvocc_s", "a4c_laocc", "a4c",
    "a5c", "other", "rvinf", "psax_avz", "suprasternal", "subcostal", "plax_lac", "psax_apex")
# Per study: (file number, echocv class labelled by ECHOVIEW or None, our expected view, kind).
FILES = ((1, "a4c", "a4c", "cine"), (2, "plax_plax", "plax", "cine"), (3, "a2c_laocc", "a2c", "cine"),
         (4, None, "unknown", "cine"), (5, None, "unknown", "spectral"))


def _csv(path: str, header, rows) -> None:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wt", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _report(s: int, rng: np.random.Generator) -> tuple[list[tuple], dict[str, float], dict[str, str]]:
  """Subject s's TTE rows (code, result, unit), the canonical values a reader must find and
  the grades. Subjects differ in how values are recorded, so every rule is exercised."""
  r = lambda lo, hi, d=1: round(float(rng.uniform(lo, hi)), d)
  rows, want, grades = [], {}, {}
  if s == 3:  # a report of grades only: labels come from them
    rows += [("rv_function", "Moderate global RV hypo", ""), ("pericardial_effusion", "Small (<1.0cm)", ""),
             ("tricuspid_regurg", "Mod [2+]", ""), ("resting_hr", "71", "bpm")]
    return rows, want, {"rv_function": "moderate", "pericardial_effusion": "mild",
                        "tricuspid_regurgitation": "moderate"}
  # LVEF: biplane, else 3D, else the middle of the reported range.
  lo = r(25, 60, 0)
  if s % 3 == 0:
    rows += [("biplane_lvef", f"{lo + 2:.0f}", "%"), ("lvef", f"{lo:.0f}", "%"), ("lvef_upper", f"{lo + 5:.0f}", "%")]
    want["lvef"] = lo + 2
  elif s % 3 == 1:
    rows += [("lvef_3d", f"{lo:.0f}", "%"), ("lvef", f"{lo + 10:.0f}", "%")]
    want["lvef"] = lo
  else:
    rows += [("lvef", f"{lo:.0f}", "%"), ("lvef_upper", f"{lo + 5:.0f}", "%")]
    want["lvef"] = lo + 2.5
  d, sep, pw = r(4.0, 6.5), r(0.7, 1.5), r(0.7, 1.4)
  if s == 1:
    rows.append(("lvedd", "see report", "cm"))          # non-numeric result
  else:
    rows.append(("lvedd", f"{d}", "cm"))
    want["lvidd"] = d
  if s == 2:
    rows.append(("septal_thickness", "", "cm"))          # empty result
  else:
    rows.append(("septal_thickness", f"{sep}", "cm"))
    want["ivsd"] = sep
  rows.append(("inf_lat_thickness", f"{pw * 10:.0f}", "mm"))  # in mm
  want["lvpwd"] = round(pw * 10) / 10
  la, bsa = r(40, 110, 0), r(1.5, 2.3, 2)
  rows.append(("la_vol", f"{la:.0f}", "mL"))
  if s != 4:                                              # subject 4: LA volume without BSA
    rows.append(("body_surface_area", f"{bsa}", "m2"))
    want["lavi"] = la / bsa
  tapse = r(1.2, 2.8)
  rows.append(("tapse", f"{tapse * 10:.0f}", "") if s % 2 else ("tapse", f"{tapse}", "cm"))
  want["tapse"] = round(tapse * 10) / 10 if s % 2 else tapse    # empty unit, 21 -> mm -> 2.1 cm
  rv, root = r(2.8, 4.6), r(2.6, 4.0)
  rows += [("rv_diam", f"{rv}", "cm"), ("sinus_diam", f"{root}", "cm")]
  want.update(rvd_basal=rv, aortic_root=root)
  vmax, grad = r(1.0, 4.5, 2), r(3, 50, 0)
  if s == 5:
    rows.append(("av_pk_vel", f"{vmax}", "furlong/s"))    # unknown unit: dropped, never guessed
  else:
    rows.append(("av_pk_vel", f"{vmax * 100:.0f}", "cm/s"))
    want["av_vmax"] = round(vmax * 100) / 100
  rows.append(("av_mean_grad", f"{grad:.0f}", "mmHg"))
  want["av_mean_gradient"] = grad
  trv = r(1.8, 3.8, 2)
  ivc = ("NL IVC <2.2 cm", 3.0) if s % 2 else ("IVC<=2.1cm, <50% collapse (5-10mmHg)", 8.0)
  rows += [("tr_velocity", f"{trv}", "m/s"), ("tr_mmhg", f"{4 * trv * trv:.0f}", "mmHg"), ("ivc", ivc[0], "")]
  want.update(tr_vmax=trv, rvsp=round(4 * trv * trv) + ivc[1])
  if s % 3 == 0:
    ee = r(6, 20)
    rows += [("mean_E_to_eprime", f"{ee}", ""), ("e_e_prime", f"{ee + 3}", "")]
    want["e_e_prime"] = ee
  elif s % 3 == 1:
    e, sept, lat = r(0.5, 1.2, 2), r(5, 10, 0), r(7, 14, 0)
    rows += [("mv_peak_e", f"{e}", "m/s"), ("sept_e_prime", f"{sept:.0f}", "cm/s"),
             ("lat_e_prime", f"{lat:.0f}", "cm/s")]
    want["e_e_prime"] = e / ((sept + lat) / 200)
  rv_fn = ("Nl RV function", "normal") if s % 2 == 0 else ("Mild global RV hypo", "mild")
  eff = ("Trivial", "normal") if s % 2 == 0 else ("Moderate (1.0-2.0cm)", "moderate")
  rows += [("rv_function", rv_fn[0] if s != 6 else "Somewhat peculiar", ""),  # unknown grade
           ("pericardial_effusion", eff[0], ""), ("la_size", "Mild LAVI (34-41ml/m2) ", ""),
           ("phtn_severity", "HIgh normal (TR 21-25 mmHg)", ""), ("mitral_regurg", "Mild-mod [1-2+]", ""),
           ("diastolic_grade", "II", ""), ("aortic_stenosis", "Cannot exclude", ""),
           ("fs", "30", "%"), ("lvot_diam", "2.1", "cm"), ("lv_sparkle_index", "3", "")]  # unmapped
  if s != 6:
    grades["rv_function"] = rv_fn[1]
  grades.update(pericardial_effusion=eff[1], la_size="mild", pa_pressure="normal",
                mitral_regurgitation="mild_to_moderate", diastolic_function="grade_2")
  return rows, want, grades


def write_tree(root: str | os.PathLike, num_subjects: int = 8, *, hw: tuple[int, int] = (708, 1016),
               cine_frames: int = 12, seed: int = 0, v01: bool = False,
               repeated_rows: int = 0) -> dict[str, Any]:
  """Writes the tree under `root`; v01=True writes v0.1's study list (no measurement_id);
  repeated_rows=n lists the first n files' record rows twice, as the release repeats 103 rows.

  Each subject has one TTE study with five DICOMs (FILES: three ECHOVIEW-labelled cines, an
  unlabelled cine and an unlabelled spectral still; YBR_FULL_422 JPEG with PHI in the headers),
  a TEE report and a stress report. Subject 0 also has a second study without a report and a
  truncated DICOM, a text file named .dcm and a listed file that is missing.
  Returns dict(root, files [dict(rel, study, subject, view, kind, expected)], measurements
  {study: {key: value}}, grades {study: {grade: level}}, sex {subject: sex|None},
  phi_strings, expected_skips).
  """
  root = os.fspath(root)
  rng = np.random.default_rng(seed)
  h, w = hw
  t0 = datetime.datetime(2181, 3, 2, 9, 0, 0)
  fmt = lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
  records, studies, meas, views, patients, files = [], [], [], [], [], []
  out_meas, out_grades, out_sex = {}, {}, {}
  mid = 50000000
  for s in range(num_subjects):
    subject, study = str(SUBJECT0 + 37 * s), str(STUDY0 + 101 * s)
    when = t0 + datetime.timedelta(days=11 * s)
    sex = None if s == 2 else "MF"[s % 2]
    out_sex[subject] = sex
    if sex:
      patients.append([subject, sex, 50 + s, 2181, "2017 - 2019", ""])
    rows, want, grades = _report(s, rng)
    mid += 1
    for code, result, unit in rows:
      meas.append([subject, mid, fmt(when + datetime.timedelta(hours=2)), "tte", code,
                   code.replace("_", " "), result, unit])
    # The same patient's TEE (two days later) and stress test (a week later) must never leak.
    for k, (tt, days) in enumerate((("tee", 2), ("stress", 7))):
      meas += [[subject, mid + 1 + k, fmt(when + datetime.timedelta(days=days)), tt, "lvef", "99", "%"],
               [subject, mid + 1 + k, fmt(when + datetime.timedelta(days=days)), tt, "rv_diam", "6.9", "cm"]]
    report_id = mid
    mid += 2
    out_meas[study], out_grades[study] = want, grades
    studies.append([subject, study, fmt(when), report_id, fmt(when + datetime.timedelta(hours=2)),
                    "", "", ""])
    sdir = os.path.join(root, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}")
    os.makedirs(sdir, exist_ok=True)
    for n, cls, view, kind in FILES:
      name = f"{study}_{n:04d}.dcm"
      rel = f"files/p{subject[:2]}/p{subject}/s{study}/{name}"
      if kind == "cine":
        frames, _, _ = dfx.cine_frames(cine_frames, h, w, seed=int(rng.integers(1 << 30)))
        regions = [dfx.tissue_region(8, 40, w - 9, h - 60), dfx.ecg_region(0, h - 50, w - 1, h - 1)]
        dfx.write_dicom(os.path.join(root, rel), frames, regions=regions if n % 2 else [])
      else:
        img, (x0, y0, x1, y1), _ = dfx.doppler_still(h, w, seed=int(rng.integers(1 << 30)))
        dfx.write_dicom(os.path.join(root, rel), img[None],
                        regions=[dfx.spectral_region(x0, y0, x1, y1)])
      records.append([subject, study, fmt(when + datetime.timedelta(minutes=n)), rel])
      low = s == 1 and n == 3   # ECHOVIEW unsure (top class 0.4): no view is taken
      files.append(dict(rel=rel, study=study, subject=subject, view="unknown" if low else view,
                        kind="spectral" if kind == "spectral" else ("2d" if n % 2 else "unknown"),
                        expected="ok"))
      if cls is not None:
        p = rng.dirichlet(np.full(len(ECHOVIEW_CLASSES), 0.3)) * (0.6 if low else 0.1)
        p[ECHOVIEW_CLASSES.index(cls)] += 0.4 if low else 0.9
        p[ECHOVIEW_CLASSES.index(cls)] = max(p[ECHOVIEW_CLASSES.index(cls)], p.max() + 1e-3)
        views.append([study, name, *np.round(p / p.sum(), 4)])
    if s == 0:
      views.append([study, f"{study}_0099.dcm", *np.round(np.eye(len(ECHOVIEW_CLASSES))[
          ECHOVIEW_CLASSES.index("other")], 4)])  # a DICOM outside the record list
  # Subject 0: a second study with no report, and bad files in the first.
  subject, study = str(SUBJECT0), str(STUDY0)
  extra = str(STUDY0 + 50)
  studies.append([subject, extra, fmt(t0 + datetime.timedelta(days=300)), "", "", "", "", ""])
  rel = f"files/p{subject[:2]}/p{subject}/s{extra}/{extra}_0001.dcm"
  os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
  dfx.write_dicom(os.path.join(root, rel), dfx.cine_frames(2, 64, 96, seed=1)[0])
  records.append([subject, extra, fmt(t0), rel])
  files.append(dict(rel=rel, study=extra, subject=subject, view="unknown", kind="2d", expected="no_report"))
  good = open(os.path.join(root, files[0]["rel"]), "rb").read()
  for n, payload, why in ((6, good[:len(good) // 3], "unreadable"),
                          (7, b"not a DICOM, just text\n" * 8, "unreadable"), (8, None, "missing")):
    rel = f"files/p{subject[:2]}/p{subject}/s{study}/{study}_{n:04d}.dcm"
    if payload is not None:
      with open(os.path.join(root, rel), "wb") as f:
        f.write(payload)
    records.append([subject, study, fmt(t0), rel])
    files.append(dict(rel=rel, study=study, subject=subject, view="unknown", kind="", expected=why))

  records += records[:repeated_rows]
  _csv(os.path.join(root, "echo-record-list.csv"),
       ["subject_id", "study_id", "acquisition_datetime", "dicom_filepath"], records)
  study_cols = ["subject_id", "study_id", "study_datetime", "measurement_id", "measurement_datetime",
                "note_id", "note_seq", "note_charttime"]
  if v01:
    study_cols, studies = (["subject_id", "study_id", "study_datetime", "note_id", "note_seq",
                            "note_charttime"], [r[:3] + r[5:] for r in studies])
  _csv(os.path.join(root, "echo-study-list.csv"), study_cols, studies)
  _csv(os.path.join(root, "structured-measurement.csv.gz"),
       ["subject_id", "measurement_id", "measurement_datetime", "test_type", "measurement",
        "measurement_description", "result", "unit"], meas)
  _csv(os.path.join(root, "MIMIC_ECHO_View_Classifications.csv"),
       ["study", "image"] + [f"prob_{c}" for c in ECHOVIEW_CLASSES], views)
  _csv(os.path.join(root, "patients.csv"),
       ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"], patients)
  return dict(root=root, files=files, measurements=out_meas, grades=out_grades, sex=out_sex,
              phi_strings=list(dfx.PHI.values()) + [dfx.BURNED_IN_TEXT])
