"""The CSV side of a MIMIC-IV-ECHO v1.0 tree at any size, without DICOMs: what `mimic.plan`
and the Beam build's driver read. RELEASE holds the release's sizes (shared/REAL_DATA.md);
benchmarks/mimic_plan_scale.py writes a tree of those, tests write tiny ones.

Reports reuse the rows of tests/mimic_tree.py (release codes, units and grade strings), so
the measurement table maps as the release's does.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import os

import numpy as np

from echovlm_jax.data import echoview
from tests import mimic_tree

# Record-list rows (103 of them repeats, in 4 studies), DICOM studies and patients, reports
# in the measurement table (5.6 M rows) and their patients, ECHOVIEW rows.
RELEASE = dict(record_rows=525_422, repeated_rows=103, studies=7_243, patients=4_579,
               reports=206_488, report_patients=91_372, echoview_rows=29_196)
_TEMPLATES = 16      # distinct report bodies, cycled (writing 5.6 M rows must stay quick)
_SUBJECT0, _STUDY0, _MID0 = 10_000_000, 90_000_000, 50_000_000


def _write(path: str, header, rows) -> None:
  opener = (lambda p: gzip.open(p, "wt", newline="", compresslevel=1)) if path.endswith(".gz") \
      else (lambda p: open(p, "w", newline=""))
  with opener(path) as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def write_csvs(root: str | os.PathLike, *, record_rows: int, repeated_rows: int, studies: int,
               patients: int, reports: int, report_patients: int, echoview_rows: int,
               seed: int = 0) -> dict[str, int]:
  """Writes echo-record-list.csv, echo-study-list.csv, structured-measurement.csv.gz and
  ECHOVIEW's CSV under root. Study j (patient j % patients) owns report j (tte); the other
  reports (tte, tee, stress in the release's shares) belong to random patients of
  report_patients. The last `repeated_rows` record rows repeat rows of up to 4 studies.
  Returns the row counts written."""
  root = os.fspath(root)
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(seed)
  t0 = datetime.datetime(2180, 1, 1, 9)
  fmt = lambda d: d.strftime("%Y-%m-%d %H:%M:%S")
  subject = lambda p: str(_SUBJECT0 + p)
  study_of = lambda j: str(_STUDY0 + j)
  when = [t0 + datetime.timedelta(hours=7 * j) for j in range(studies)]

  distinct = record_rows - repeated_rows
  per_study = np.full(studies, distinct // studies)
  per_study[:distinct % studies] += 1
  records = []
  for j in range(studies):
    s, sid = subject(j % patients), study_of(j)
    for n in range(1, int(per_study[j]) + 1):
      records.append([s, sid, fmt(when[j] + datetime.timedelta(seconds=20 * n)),
                      f"files/p{s[:2]}/p{s}/s{sid}/{sid}_{n:04d}.dcm"])
  heads = np.cumsum(np.concatenate([[0], per_study]))[:4]      # the first rows of 4 studies
  for k in range(repeated_rows):
    records.append(list(records[int(heads[k % 4]) + k // 4]))
  _write(os.path.join(root, "echo-record-list.csv"),
         ["subject_id", "study_id", "acquisition_datetime", "dicom_filepath"], records)

  _write(os.path.join(root, "echo-study-list.csv"),
         ["subject_id", "study_id", "study_datetime", "measurement_id", "measurement_datetime",
          "note_id", "note_seq", "note_charttime"],
         ([subject(j % patients), study_of(j), fmt(when[j]), _MID0 + j,
           fmt(when[j] + datetime.timedelta(hours=2)), "", "", ""] for j in range(studies)))

  # mimic_tree's reports have ~25 rows; vitals bring them to the release's ~27 per report.
  templates = [mimic_tree._report(s, rng)[0] + [("resting_hr", "72", "bpm"), ("resting_sbp", "121", "mmHg")]  # pylint: disable=protected-access
               for s in range(_TEMPLATES)]
  # The release's 179,928 tte / 16,389 stress / 10,171 tee reports.
  kinds = rng.choice(["tte", "stress", "tee"], size=reports, p=[0.8714, 0.0793, 0.0493])
  owners = rng.integers(0, report_patients, size=reports)
  counts = {"measurement_rows": 0}

  def meas_rows():
    for r in range(reports):
      linked = r < studies
      s = subject(r % patients if linked else int(owners[r]))
      t = fmt((when[r] if linked else t0 + datetime.timedelta(hours=3 * r))
              + datetime.timedelta(hours=2))
      kind = "tte" if linked else kinds[r]
      for code, result, unit in templates[r % _TEMPLATES]:
        counts["measurement_rows"] += 1
        yield [s, _MID0 + r, t, kind, code, code.replace("_", " "), result, unit]
  _write(os.path.join(root, "structured-measurement.csv.gz"),
         ["subject_id", "measurement_id", "measurement_datetime", "test_type", "measurement",
          "measurement_description", "result", "unit"], meas_rows())

  probs = np.round(np.eye(len(mimic_tree.ECHOVIEW_CLASSES))[mimic_tree.ECHOVIEW_CLASSES.index("a4c")]
                   * 0.9 + 0.1 / len(mimic_tree.ECHOVIEW_CLASSES), 4).tolist()
  _write(os.path.join(root, echoview.ECHOVIEW_FILENAME),
         ["study", "image"] + [f"prob_{c}" for c in mimic_tree.ECHOVIEW_CLASSES],
         ([r[1], os.path.basename(r[3]), *probs] for r in records[:echoview_rows]))
  return dict(record_rows=len(records), echoview_rows=min(echoview_rows, len(records)),
              studies=studies, reports=reports, **counts)
