"""Reads a MIMIC-IV-ECHO manual_dir into source records (one per DICOM file).

Joins echo-record-list.csv (files) -> echo-study-list.csv (study time) -> v1.0's long-format
structured_measurement.csv (linked by subject and nearest time), maps measurements through
`mimic_mapping`, decodes frames with `dicom`, and counts every skipped input by reason.
"""

from __future__ import annotations

import bisect
import collections
import csv
import datetime
import gzip
import hashlib
import logging
import math
import os
from typing import Any, Iterator

from echovlm_jax.data import dicom
from echovlm_jax.data import mimic_mapping
from echovlm_jax.echo import schema

RECORD_LIST = "echo-record-list.csv"
STUDY_LIST = "echo-study-list.csv"
MEASUREMENTS = "structured_measurement.csv"
VIEW_CSV = "view_labels.csv"
PATIENTS = "patients.csv"
# A report's measurements are charted after the images are acquired, sometimes hours later;
# two echo exams of one patient within a day are rare. Measured in hours.
DEFAULT_LINK_TOLERANCE_H = 24.0

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- CSV helpers


def _find(manual_dir: str, name: str, *subdirs: str) -> str | None:
  for sub in ("",) + subdirs:
    for ext in ("", ".gz"):
      p = os.path.join(manual_dir, sub, name + ext)
      if os.path.isfile(p):
        return p
  return None


def _rows(path: str, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
  """Streams a CSV (optionally gzipped) as dicts; a missing column is a setup error."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", newline="") as f:
    reader = csv.DictReader(f)
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in cols]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; found {cols}. See docs/mimic.md "
                       "for the expected MIMIC-IV-ECHO layout.")
    reader.fieldnames = cols
    for row in reader:
      yield {k: (v or "").strip() for k, v in row.items() if k is not None}


def _time(s: str) -> datetime.datetime | None:
  try:
    return datetime.datetime.fromisoformat(s)
  except (TypeError, ValueError):
    return None


def _required(manual_dir: str, name: str) -> str:
  p = _find(manual_dir, name)
  if p is None:
    raise FileNotFoundError(f"{os.path.join(manual_dir, name)} not found: put MIMIC-IV-ECHO's "
                            f"{name} in the manual_dir (see docs/mimic.md).")
  return p


# ----------------------------------------------------------------------------- tables


def read_study_list(path: str, stats: collections.Counter) -> dict[str, tuple[str, datetime.datetime | None]]:
  """study_id -> (subject_id, study_datetime). Several note rows of one study: first wins."""
  studies: dict[str, tuple[str, datetime.datetime | None]] = {}
  for r in _rows(path, ("subject_id", "study_id", "study_datetime")):
    if r["study_id"] in studies:
      continue
    when = _time(r["study_datetime"])
    if when is None:
      stats["study_datetime_unparseable"] += 1
    studies[r["study_id"]] = (r["subject_id"], when)
  return studies


def read_sex(manual_dir: str) -> dict[str, str]:
  """subject_id -> "M" / "F" from MIMIC-IV hosp `patients.csv[.gz]` when it is provided."""
  path = _find(manual_dir, PATIENTS, "hosp")
  if path is None:
    return {}
  return {r["subject_id"]: r["gender"] for r in _rows(path, ("subject_id", "gender"))
          if r["gender"] in schema.SEXES}


def read_views(path: str | None, stats: collections.Counter) -> dict[tuple[str, str], str]:
  """(study_id, file basename) -> view from a CSV with columns study_id, file, view."""
  if path is None:
    return {}
  views = {}
  for r in _rows(path, ("study_id", "file", "view")):
    v = r["view"].lower()
    if v not in schema.VIEW_INFO:
      stats["view_label_invalid"] += 1
      continue
    views[(r["study_id"], os.path.basename(r["file"]))] = v
  return views


def read_measurements(path: str, studies: dict[str, tuple[str, datetime.datetime | None]],
                      subjects: set[str], stats: collections.Counter,
                      tolerance_h: float = DEFAULT_LINK_TOLERANCE_H) -> dict[str, dict[str, float]]:
  """study_id -> {canonical key: value in canonical unit} for the studies of `subjects`.

  v1.0's table has no study_id, so each row goes to the same subject's study (from the study
  list) nearest in time to measurement_datetime, if within `tolerance_h` hours. Per key the
  value from the best-priority source wins (see mimic_mapping.MAPPING), then the row nearest
  in time, then the first in the file. Dropped rows are counted in `stats` by reason.
  """
  by_subject: dict[str, list[tuple[datetime.datetime, str]]] = collections.defaultdict(list)
  for study, (subject, when) in studies.items():
    if subject in subjects and when is not None:
      by_subject[subject].append((when, study))
  for v in by_subject.values():
    v.sort()
  best: dict[str, dict[str, tuple[int, float, float]]] = collections.defaultdict(dict)
  for r in _rows(path, ("subject_id", "measurement_datetime", "measurement", "result", "unit")):
    if r["subject_id"] not in subjects:
      continue  # the measurement table covers ~91k patients, the DICOMs ~4.6k
    src = mimic_mapping.lookup(r["measurement"], r.get("measurement_description", ""))
    if src is None:
      stats["measurement_name_unmapped"] += 1
      stats[f"unmapped_name:{r['measurement']}"] += 1
      continue
    try:
      value = float(r["result"]) if r["result"] else math.nan
    except ValueError:
      stats["measurement_value_not_numeric"] += 1
      continue
    if not schema.is_present(value):
      stats["measurement_value_missing"] += 1
      continue
    value = mimic_mapping.convert(src.key, value, r["unit"])
    if value is None:
      stats["measurement_unit_unknown"] += 1
      continue
    if not schema.is_plausible(src.key, value):
      stats["measurement_out_of_range"] += 1
      continue
    when = _time(r["measurement_datetime"])
    cands = by_subject.get(r["subject_id"], [])
    if when is None or not cands:
      stats["measurement_row_unlinked"] += 1
      continue
    i = bisect.bisect_left(cands, (when, ""))
    near = min(cands[max(0, i - 1):i + 1], key=lambda c: abs((c[0] - when).total_seconds()))
    gap_h = abs((near[0] - when).total_seconds()) / 3600.0
    if gap_h > tolerance_h:
      stats["measurement_row_unlinked"] += 1
      continue
    cur = best[near[1]].get(src.key)
    if cur is None or (src.priority, gap_h) < cur[:2]:
      best[near[1]][src.key] = (src.priority, gap_h, value)
  return {study: {k: v[2] for k, v in keys.items()} for study, keys in best.items()}


# ----------------------------------------------------------------------------- records


def record_key(dicom_filepath: str) -> str:
  """Stable example key that does not reveal the raw subject / study ids in the path."""
  return hashlib.sha256(dicom_filepath.encode()).hexdigest()[:24]


def generate_records(manual_dir: str | os.PathLike, image_size: int = 128, num_frames: int = 1,
                     stats: collections.Counter | None = None, view_csv: str | os.PathLike | None = None,
                     *, link_tolerance_h: float = DEFAULT_LINK_TOLERANCE_H
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key, record) per readable DICOM of a study with measurements, in record-list order.

  record: frames uint8 [num_frames, image_size, image_size], view (from `view_csv`, default
  manual_dir/view_labels.csv if present, else "unknown"), measurements {key: float} (only
  present, plausible, canonical-unit values), sex ("M"/"F" from patients.csv, else None),
  patient_key / study_key (raw MIMIC ids: the builder hashes them), source "mimic".
  Bad inputs are skipped and counted in `stats` by reason (docs/mimic.md lists them).
  Missing CSVs or columns raise: that is a setup error, not bad data.
  """
  manual_dir = os.fspath(manual_dir)
  stats = collections.Counter() if stats is None else stats
  record_list = _required(manual_dir, RECORD_LIST)
  studies = read_study_list(_required(manual_dir, STUDY_LIST), stats)
  records = list(_rows(record_list, ("subject_id", "study_id", "dicom_filepath")))
  subjects = {r["subject_id"] for r in records}
  meas = read_measurements(_required(manual_dir, MEASUREMENTS), studies, subjects, stats,
                           link_tolerance_h)
  if view_csv is None:
    view_csv = _find(manual_dir, VIEW_CSV)
  views = read_views(os.fspath(view_csv) if view_csv else None, stats)
  sex = read_sex(manual_dir)
  unmapped = {k.split(":", 1)[1]: v for k, v in stats.items() if k.startswith("unmapped_name:")}
  if unmapped:
    top = sorted(unmapped.items(), key=lambda kv: -kv[1])[:20]
    _log.warning("%d measurement rows have names not in mimic_mapping.MAPPING (most common: %s)",
                 sum(unmapped.values()), top)

  seen_no_meas: set[str] = set()
  for r in records:
    rel, study, subject = r["dicom_filepath"], r["study_id"], r["subject_id"]
    if not rel or not study or not subject:
      stats["bad_record_row"] += 1
      continue
    if study not in studies:
      stats["study_not_in_study_list"] += 1
      continue
    if not meas.get(study):
      if study not in seen_no_meas:
        seen_no_meas.add(study)
        stats["study_without_measurements"] += 1
      stats["file_skipped_study_without_measurements"] += 1
      continue
    path = os.path.join(manual_dir, rel)
    if not os.path.isfile(path):
      stats["missing_file"] += 1
      continue
    try:
      frames = dicom.load_frames(path, num_frames=num_frames, size=image_size)
    except dicom.DicomError as e:
      _log.info("skipping %s", e)
      stats["unreadable_dicom"] += 1
      continue
    except Exception:  # noqa: BLE001 - a build must survive a decoder bug; counted, logged
      _log.exception("unexpected error decoding %s", path)
      stats["dicom_unexpected_error"] += 1
      continue
    view = views.get((study, os.path.basename(rel)))
    if view is None:
      stats["view_unlabelled"] += 1
      view = schema.UNKNOWN_VIEW
    yield record_key(rel), dict(
        frames=frames, view=view, measurements=dict(meas[study]), sex=sex.get(subject),
        patient_key=subject, study_key=study, source="mimic")
