"""View labels for MIMIC-IV-ECHO DICOMs: ECHOVIEW's per-DICOM class probabilities, a plain
(study, file, view) CSV, or a view classifier's predictions
(python -m echovlm_jax.tools.label_views).

ECHOVIEW v0.1 (PhysioNet) has one row per DICOM with its basename in an `image` column and
one `prob_<class>` column for each of 23 echocv classes. `CLASS_TO_VIEW` maps each class to a
view of echo/schema.py (or to none); a DICOM gets the view of its most probable class when
that probability reaches the threshold, else it stays unknown (counted by reason).
"""

from __future__ import annotations

import collections
import csv
from typing import NamedTuple

from echovlm_jax.data import fileio
from echovlm_jax.data import reader_options
from echovlm_jax.echo import schema

ECHOVIEW_FILENAME = "MIMIC_ECHO_View_Classifications.csv"
VIEW_CSV_FILENAME = "view_labels.csv"
# A classifier's predictions: one row per DICOM, written by echovlm_jax/tools/label_views.py.
PREDICTION_COLUMNS = ("study", "image", "view", "confidence",
                      *(f"prob_{v}" for v in schema.KNOWN_VIEWS))

# echocv class -> our view. `_lvocc_s` / `_laocc` are the same view with the LV or LA
# foreshortened or cut off: the view is still the view. Classes our schema has no view for
# (apical short axis, RV inflow, "other" = Doppler / contrast / unclassifiable) map to None.
# Mappings marked "approx" put a neighbouring level of the short axis on our one class.
CLASS_TO_VIEW: dict[str, str | None] = {
    "plax_plax": "plax", "plax_far": "plax", "plax_laz": "plax", "plax_lac": "plax",
    "psax_az": "psax_av", "psax_avz": "psax_av",
    "psax_pap": "psax_mid",
    "psax_mv": "psax_mid",           # approx: mitral-valve level, basal to the papillary muscles
    "psax_apex": None,
    "a2c": "a2c", "a2c_lvocc_s": "a2c", "a2c_laocc": "a2c",
    "a3c": "a3c", "a3c_lvocc_s": "a3c", "a3c_laocc": "a3c",
    "a4c": "a4c", "a4c_lvocc_s": "a4c", "a4c_laocc": "a4c",
    "a5c": "a5c",
    "subcostal": "subcostal", "suprasternal": "suprasternal",
    "rvinf": None, "other": None,
}
assert all(v is None or v in schema.KNOWN_VIEWS for v in CLASS_TO_VIEW.values())


class ViewLabel(NamedTuple):
  view: str          # a name in schema.VIEWS
  source: str        # schema.VIEW_SOURCES
  confidence: float  # ECHOVIEW: the class probability; a hand label: 1.0


def _column(cols: list[str], path: str, *candidates: str) -> str:
  low = {c.lower(): c for c in cols}
  for cand in candidates:
    if cand in low:
      return low[cand]
  raise ValueError(f"{path}: none of the columns {list(candidates)} found (columns: {cols}). "
                   "Point config.input.echoview_csv at ECHOVIEW's "
                   f"{ECHOVIEW_FILENAME} (see docs/mimic.md).")


def read_echoview(path: str, min_prob: float, counts: collections.Counter
                  ) -> dict[str, ViewLabel]:
  """DICOM basename -> ViewLabel for every row whose top class maps to a view with
  probability >= min_prob. Other rows are counted: `view:echoview_low_confidence`,
  `view:echoview_class_without_view:<class>`, `view:echoview_bad_row`."""
  out: dict[str, ViewLabel] = {}
  with fileio.open_text(path) as f:
    reader = csv.DictReader(f)
    cols = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = cols
    image = _column(cols, path, "image", "dicom", "file", "filename", "dicom_filepath")
    probs = {c[len("prob_"):].lower(): c for c in cols if c.lower().startswith("prob_")}
    unknown = sorted(set(probs) - set(CLASS_TO_VIEW))
    if not probs or unknown:
      raise ValueError(f"{path}: expected prob_<class> columns of the 23 ECHOVIEW classes "
                       f"({', '.join(CLASS_TO_VIEW)}); unknown: {unknown or 'no prob_ column'}. "
                       "Add new classes to echovlm_jax/data/echoview.py CLASS_TO_VIEW.")
    for row in reader:
      name = fileio.basename((row.get(image) or "").strip())
      try:
        p = {k: float(row[c]) for k, c in probs.items()}
      except (TypeError, ValueError):
        counts["view:echoview_bad_row"] += 1
        continue
      if not name:
        counts["view:echoview_bad_row"] += 1
        continue
      cls = max(p, key=p.get)
      view = CLASS_TO_VIEW[cls]
      if view is None:
        counts[f"view:echoview_class_without_view:{cls}"] += 1
      elif p[cls] < min_prob:
        counts["view:echoview_low_confidence"] += 1
      else:
        out[name] = ViewLabel(view, "echoview", p[cls])
  return out


def read_view_csv(path: str, counts: collections.Counter) -> dict[str, ViewLabel]:
  """DICOM basename -> ViewLabel from a CSV with columns study_id, file, view (our names)."""
  out: dict[str, ViewLabel] = {}
  with fileio.open_text(path) as f:
    reader = csv.DictReader(f)
    cols = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = cols
    file_col = _column(cols, path, "file", "image", "dicom_filepath")
    view_col = _column(cols, path, "view")
    for row in reader:
      view = (row.get(view_col) or "").strip().lower()
      if view not in schema.KNOWN_VIEWS:
        counts["view:view_csv_invalid_view"] += 1
        continue
      out[fileio.basename((row.get(file_col) or "").strip())] = ViewLabel(view, "view_csv", 1.0)
  return out


def read_predictions(path: str, min_prob: float, counts: collections.Counter
                     ) -> dict[str, ViewLabel]:
  """DICOM basename -> ViewLabel(view, "classifier", confidence) for every row of a predictions
  CSV (PREDICTION_COLUMNS) whose confidence reaches min_prob. Other rows are counted:
  `view:classifier_low_confidence`, `view:classifier_bad_row` (no image, no view or no
  confidence); a missing column or a view name outside schema.KNOWN_VIEWS is a ValueError
  naming the file, line and column."""
  out: dict[str, ViewLabel] = {}
  with fileio.open_text(path) as f:
    reader = csv.DictReader(f)
    cols = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ("image", "view", "confidence") if c not in cols]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing} (columns: {cols}); expected the "
                       "CSV of python -m echovlm_jax.tools.label_views (docs/mimic.md).")
    reader.fieldnames = cols
    for line, row in enumerate(reader, start=2):
      name = fileio.basename((row.get("image") or "").strip())
      view = (row.get("view") or "").strip()
      if view and view not in schema.KNOWN_VIEWS:
        # Not a torn row: a classifier of other code (other view names) or a hand edit. Taking
        # none of its rows would silently build a dataset without the classifier's views.
        raise ValueError(f"{path}: line {line}, column 'view': {view!r} is not a view of "
                         f"echovlm_jax/echo/schema.py ({', '.join(schema.KNOWN_VIEWS)}). Rewrite "
                         "the CSV with python -m echovlm_jax.tools.label_views from a classifier of "
                         "this code (docs/mimic.md), or fix the row.")
      try:
        conf = float(row.get("confidence") or "nan")
      except ValueError:
        conf = float("nan")
      if not name or view not in schema.KNOWN_VIEWS or not conf == conf:
        counts["view:classifier_bad_row"] += 1
      elif conf < min_prob:
        counts["view:classifier_low_confidence"] += 1
      else:
        out[name] = ViewLabel(view, "classifier", conf)
  return out


def find(manual_dir: str, given: str, filename: str) -> str | None:
  """`given` (must exist) or `filename` in manual_dir (or its echoview/ folder), else None."""
  if given:
    if not fileio.isfile(given):
      raise FileNotFoundError(f"{given} not found (from the config); fix the path or leave it "
                              f"empty to look for {filename} in the manual_dir.")
    return given
  for sub in ("", "echoview"):
    for ext in ("", ".gz"):
      p = fileio.join(manual_dir, sub, filename + ext) if sub else fileio.join(manual_dir, filename + ext)
      if fileio.isfile(p):
        return p
  return None


def load_views(manual_dir: str, counts: collections.Counter, options: reader_options.MimicOptions
               ) -> tuple[dict[str, ViewLabel], list[str]]:
  """(DICOM basename -> ViewLabel, the files read). ECHOVIEW comes first; a hand-made view
  CSV labels the DICOMs ECHOVIEW leaves without a view; a classifier's predictions (only
  when `predictions_csv` is given, never looked up) label what is left, at or above their
  own threshold (`options.view_predictions`, `options.view_predictions_min_prob`)."""
  predictions_csv = options.view_predictions
  labels: dict[str, ViewLabel] = {}
  used = []
  if predictions_csv:
    if not fileio.isfile(predictions_csv):
      raise FileNotFoundError(f"{predictions_csv} not found (config.input.mimic.view_predictions); "
                              "write it with python -m echovlm_jax.tools.label_views "
                              "(docs/mimic.md).")
    labels.update(read_predictions(predictions_csv, options.view_predictions_min_prob, counts))
    used.append(fileio.basename(predictions_csv))
  p = find(manual_dir, options.view_csv, VIEW_CSV_FILENAME)
  if p:
    labels.update(read_view_csv(p, counts))
    used.append(fileio.basename(p))
  p = find(manual_dir, options.echoview_csv, ECHOVIEW_FILENAME)
  if p:
    labels.update(read_echoview(p, options.view_min_prob, counts))
    used.append(fileio.basename(p))
  return labels, used
