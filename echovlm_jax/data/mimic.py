"""Reads a MIMIC-IV-ECHO v1.0 manual_dir into source records (one per DICOM file).

echo-record-list.csv (files) -> echo-study-list.csv (study -> `measurement_id`, the report)
-> structured-measurement.csv.gz (long format, one row per value, filtered by `test_type`)
-> mimic_mapping (codes -> measurements and grades) ; views from ECHOVIEW or a view CSV
(data/echoview.py); frames from dicom.py. v0.1's study list (no measurement_id) links by
nearest time instead. Every input that is skipped is counted in `stats` under a section prefix
("skip:", "link:", "value:", "rows:", "unmapped_code:", "view:"); the builder reports them.
"""

from __future__ import annotations

import bisect
import collections
import csv
import dataclasses
import datetime
import hashlib
import logging
import os
from typing import Any, Iterator, NamedTuple

import numpy as np

from echovlm_jax.data import bug_guard
from echovlm_jax.data import dicom
from echovlm_jax.data import echoview
from echovlm_jax.data import fileio
from echovlm_jax.data import mimic_mapping
from echovlm_jax.data import reader_options
from echovlm_jax.echo import schema

RECORD_LIST = "echo-record-list.csv"
STUDY_LIST = "echo-study-list.csv"
MEASUREMENTS = "structured-measurement.csv"   # shipped gzipped: structured-measurement.csv.gz
PATIENTS = "patients.csv"
# The build fails when more than this share of the measurement rows of the linked reports
# has codes the mapping does not know: the file is not the release, or the release changed.
MAX_UNMAPPED_SHARE = 0.5

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- CSV helpers


def find(manual_dir: str, name: str) -> str | None:
  """`name` or `name`.gz in manual_dir (hyphenated release name or its underscore twin)."""
  for n in (name, name.replace("-", "_")):
    for ext in (".gz", ""):
      p = fileio.join(manual_dir, n + ext)
      if fileio.isfile(p):
        return p
  return None


def _required(manual_dir: str, name: str) -> str:
  p = find(manual_dir, name)
  if p is None:
    raise FileNotFoundError(f"{fileio.join(manual_dir, name)}[.gz] not found: put MIMIC-IV-ECHO "
                            f"v1.0's {name} in the manual_dir (see docs/mimic.md).")
  return p


def rows(path: str, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
  """Streams a CSV (optionally gzipped) as dicts of stripped strings; a missing column is a
  setup error naming the file."""
  with fileio.open_text(path) as f:
    reader = csv.DictReader(f)
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in cols]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; found {cols}. See docs/mimic.md "
                       "for the MIMIC-IV-ECHO v1.0 layout.")
    reader.fieldnames = cols
    for row in reader:
      yield {k: (v or "").strip() for k, v in row.items() if k is not None}


def _time(s: str) -> datetime.datetime | None:
  try:
    return datetime.datetime.fromisoformat(s)
  except (TypeError, ValueError):
    return None


def read_sex(manual_dir: str) -> dict[str, str]:
  """subject_id -> "M" / "F" from MIMIC-IV hosp `patients.csv[.gz]` when it is provided."""
  path = find(manual_dir, PATIENTS) or find(fileio.join(manual_dir, "hosp"), PATIENTS)
  if path is None:
    return {}
  return {r["subject_id"]: r["gender"] for r in rows(path, ("subject_id", "gender"))
          if r["gender"] in schema.SEXES}


# ----------------------------------------------------------------------------- reports


@dataclasses.dataclass
class Study:
  subject: str
  when: datetime.datetime | None
  measurement_id: str | None     # None: v0.1 list, link by time


def read_study_list(path: str, stats: collections.Counter) -> dict[str, Study]:
  """study_id -> Study. v1.0 repeats a study once per note row: the first non-empty
  measurement_id wins."""
  studies: dict[str, Study] = {}
  for r in rows(path, ("subject_id", "study_id", "study_datetime")):
    mid = r.get("measurement_id")  # None in v0.1
    s = studies.get(r["study_id"])
    if s is None:
      studies[r["study_id"]] = Study(r["subject_id"], _time(r["study_datetime"]), mid)
    elif mid and not s.measurement_id:
      s.measurement_id = mid
  return studies


@dataclasses.dataclass
class Report:
  subject: str
  when: datetime.datetime | None
  test_type: str
  rows: dict[str, tuple[str, str]]   # code -> (result, unit)


def read_reports(path: str, subjects: set[str], stats: collections.Counter) -> dict[str, Report]:
  """measurement_id -> Report, for the subjects that have DICOMs (the table covers ~91k
  patients, the DICOMs ~4.6k)."""
  reports: dict[str, Report] = {}
  for r in rows(path, ("subject_id", "measurement_id", "measurement_datetime", "test_type",
                       "measurement", "result", "unit")):
    if r["subject_id"] not in subjects:
      continue
    rep = reports.get(r["measurement_id"])
    if rep is None:
      rep = reports[r["measurement_id"]] = Report(
          r["subject_id"], _time(r["measurement_datetime"]), r["test_type"].lower(), {})
    code = mimic_mapping.normalise_code(r["measurement"])
    if code in rep.rows:
      stats["value:duplicate_code_in_report"] += 1
      continue
    rep.rows[code] = (r["result"], r["unit"])
  return reports


def link_studies(studies: dict[str, Study], reports: dict[str, Report], wanted: set[str],
                 options: reader_options.MimicOptions, stats: collections.Counter) -> dict[str, Report]:
  """study_id -> its report of options.test_type: by measurement_id (v1.0), else (v0.1) the
  same subject's report nearest in time within the tolerance."""
  by_subject: dict[str, list[tuple[datetime.datetime, str]]] = collections.defaultdict(list)
  for mid, rep in reports.items():
    if rep.test_type == options.test_type and rep.when is not None:
      by_subject[rep.subject].append((rep.when, mid))
  for v in by_subject.values():
    v.sort()
  linked = {}
  for sid in sorted(wanted):
    s = studies[sid]
    if s.measurement_id is not None:
      rep = reports.get(s.measurement_id) if s.measurement_id else None
      if rep is None:
        stats["link:study_without_report" if not s.measurement_id else "link:report_id_not_in_table"] += 1
        continue
      if rep.test_type != options.test_type:
        stats[f"link:report_is_{rep.test_type or 'untyped'}"] += 1
        continue
      linked[sid] = rep
      stats["link:by_measurement_id"] += 1
      continue
    cands = by_subject.get(s.subject, [])
    if s.when is None or not cands:
      stats["link:study_without_report"] += 1
      continue
    i = bisect.bisect_left(cands, (s.when, ""))
    near = min(cands[max(0, i - 1):i + 1], key=lambda c: abs((c[0] - s.when).total_seconds()))
    if abs((near[0] - s.when).total_seconds()) > options.link_tolerance_h * 3600:
      stats["link:nearest_report_too_far"] += 1
      continue
    linked[sid] = reports[near[1]]
    stats["link:by_time"] += 1
  return linked


def study_values(linked: dict[str, Report], stats: collections.Counter
                 ) -> dict[str, tuple[dict[str, float], dict[str, str]]]:
  """study_id -> (measurements, grades) of its report; counts every row by code class."""
  out = {}
  for sid, rep in linked.items():
    for code in rep.rows:
      kind = mimic_mapping.classify_code(code)
      stats[f"rows:{kind}"] += 1
      if kind == "unmapped":
        stats[f"unmapped_code:{code}"] += 1
    value_counts: collections.Counter = collections.Counter()
    out[sid] = mimic_mapping.report_values(rep.rows, value_counts)
    stats.update({f"value:{k}": v for k, v in value_counts.items()})
  return out


def check_mapping_coverage(stats: collections.Counter, path: str) -> None:
  """Fails when most rows of the linked reports have codes nobody mapped."""
  total = sum(stats[f"rows:{k}"] for k in ("numeric", "grade", "ignored", "unmapped"))
  if total and stats["rows:unmapped"] > MAX_UNMAPPED_SHARE * total:
    top = sorted(((k.split(":", 1)[1], v) for k, v in stats.items()
                  if k.startswith("unmapped_code:")), key=lambda kv: -kv[1])[:15]
    raise ValueError(
        f"{path}: {stats['rows:unmapped']} of {total} measurement rows of the linked reports have "
        f"codes echovlm_jax/data/mimic_mapping.py does not know (most common: {top}). Is this "
        "MIMIC-IV-ECHO v1.0's structured-measurement.csv.gz? If the release renamed its codes, "
        "add them to mimic_mapping.DIRECT / mimic_grades.GRADE_CODES (docs/mimic.md).")


# ----------------------------------------------------------------------------- records


def record_key(dicom_filepath: str) -> str:
  """Stable example key that does not reveal the raw subject / study ids in the path."""
  return hashlib.sha256(dicom_filepath.encode()).hexdigest()[:24]


class WorkItem(NamedTuple):
  """One DICOM to read, with everything the CSVs say about it (no pixels yet)."""
  key: str
  rel: str                     # dicom_filepath, relative to the manual_dir
  subject: str
  study: str
  measurements: dict[str, float]
  grades: dict[str, str]
  view: echoview.ViewLabel
  sex: str | None


def plan(manual_dir: str | os.PathLike,
         options: reader_options.MimicOptions = reader_options.MimicOptions(),
         stats: collections.Counter | None = None) -> list[WorkItem]:
  """Every DICOM of a TTE study linked to a report, in record-list order: the CSVs read once
  and joined (record list -> study list -> report -> values; views; sex). Setup errors
  (missing files or columns, an unmapped table, no view source without
  options.allow_unknown_views) raise here, before any DICOM is decoded."""
  manual_dir = os.fspath(manual_dir)
  stats = collections.Counter() if stats is None else stats
  records = list(rows(_required(manual_dir, RECORD_LIST), ("subject_id", "study_id", "dicom_filepath")))
  studies = read_study_list(_required(manual_dir, STUDY_LIST), stats)
  meas_path = _required(manual_dir, MEASUREMENTS)
  reports = read_reports(meas_path, {r["subject_id"] for r in records}, stats)
  wanted = {r["study_id"] for r in records if r["study_id"] in studies}
  linked = link_studies(studies, reports, wanted, options, stats)
  values = study_values(linked, stats)
  check_mapping_coverage(stats, meas_path)
  views, view_files = echoview.load_views(manual_dir, stats, options)
  if not view_files and not options.allow_unknown_views:
    raise FileNotFoundError(
        f"No view labels in {manual_dir}: put ECHOVIEW's {echoview.ECHOVIEW_FILENAME} there (or set "
        "config.input.echoview_csv / view_csv). Without views every caption is a study caption "
        "and the view-informed objective and evaluators have nothing to work with; set "
        "config.input.allow_unknown_views=True to build anyway.")
  for name in view_files:
    stats[f"view:source_file:{name}"] += 1
  sex = read_sex(manual_dir)
  items, seen = [], set()
  for r in records:
    rel, study, subject = r["dicom_filepath"], r["study_id"], r["subject_id"]
    if not rel or not study or not subject:
      stats["skip:bad_record_row"] += 1
      continue
    if rel in seen:
      # The published list repeats 103 whole rows; a second item would be a second example
      # with the same key (TFDS's Beam writer stops on it at the very end of a build).
      stats["skip:repeated_dicom_filepath"] += 1
      continue
    seen.add(rel)
    if study not in studies:
      stats["skip:study_not_in_study_list"] += 1
    elif study not in values:
      stats["skip:file_of_study_without_report"] += 1
    elif not values[study][0] and not values[study][1]:
      stats["skip:file_of_study_with_empty_report"] += 1
    else:
      label = views.get(fileio.basename(rel), echoview.ViewLabel(schema.UNKNOWN_VIEW, "none", 0.0))
      # A study's value dicts are shared by its items (read only; read_item copies them):
      # a copy per DICOM is half a million dicts on the release.
      items.append(WorkItem(record_key(rel), rel, subject, study, values[study][0],
                            values[study][1], label, sex.get(subject)))
  return items


def read_item(manual_dir: str, item: WorkItem, image_size: int, num_frames: int,
              stats: collections.Counter, guard: bug_guard.BugGuard, clip_fps: float = 0.0
              ) -> dict[str, Any] | None:
  """The source record of one work item (see `generate_records`), or None (counted in stats).
  clip_fps > 0: a cine's frames at that rate (dicom.indices_at_rate); stills repeat their frame
  and are counted (frames:still_repeated)."""
  path = fileio.join(os.fspath(manual_dir), item.rel)
  if not fileio.isfile(path):
    stats["skip:missing_file"] += 1
    return None
  try:
    frames, kind = dicom.load_clip(path, num_frames=num_frames, size=image_size, fps=clip_fps)
  except dicom.DicomError as e:
    _log.info("skipping %s", e)
    stats["skip:unreadable_dicom"] += 1
    return None
  except Exception as e:  # noqa: BLE001 - a decoder may raise anything on a bad file
    guard(e, path)
    return None
  if num_frames > 1 and not np.any(frames != frames[:1]):
    stats["frames:still_repeated"] += 1
  return dict(
      frames=frames, view=item.view.view, view_source=item.view.source,
      view_confidence=float(item.view.confidence), image_kind=kind,
      measurements=dict(item.measurements), grades=dict(item.grades), sex=item.sex,
      patient_key=item.subject, study_key=item.study, source="mimic")


def generate_records(manual_dir: str | os.PathLike, image_size: int = 128, num_frames: int = 1,
                     stats: collections.Counter | None = None,
                     options: reader_options.MimicOptions = reader_options.MimicOptions()
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key, record) per readable DICOM of a study linked to a report, in record-list order.

  record: frames uint8 [num_frames, image_size, image_size]; view, view_source,
  view_confidence (data/echoview.py; "unknown" / "none" / 0.0 without a label); image_kind
  (dicom.image_kind); measurements {key: float}; grades {grade: level}; sex ("M"/"F" from
  patients.csv, else None); patient_key / study_key (raw MIMIC ids: the builder hashes them);
  source "mimic". Setup errors raise before any DICOM is decoded (`plan`); bad files are
  skipped and counted (`read_item`). The Beam build runs the same two steps (beam_build.py).
  """
  stats = collections.Counter() if stats is None else stats
  yield from read_items(manual_dir, plan(manual_dir, options, stats), image_size, num_frames, stats)


def read_items(manual_dir: str | os.PathLike, items: list[WorkItem], image_size: int,
               num_frames: int, stats: collections.Counter, clip_fps: float = 0.0
               ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key, record) per planned item that reads; the others are counted in `stats`."""
  guard = bug_guard.BugGuard(stats, "skip:decoder_")
  for item in items:
    record = read_item(os.fspath(manual_dir), item, image_size, num_frames, stats, guard,
                       clip_fps)
    if record is not None:
      yield item.key, record
