"""Source record -> `echoground` example: validation, measurement clean-up, hashed ids,
captions / negations / labels from `echovlm_jax.echo`, and the patient split.

Pure Python + numpy (no TFDS), so the rules a record must pass are testable alone.
A record either becomes a complete example or raises `SkipRecord(reason)`: nothing
half-built ever reaches the writer.
"""

from __future__ import annotations

import collections
import hashlib
import random
from typing import Any, Iterable, Mapping

import numpy as np

from echovlm_jax.data import bug_guard
from echovlm_jax.echo import schema

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"validation": 0.1, "test": 0.1}  # train gets the rest


class SkipRecord(Exception):
  """A record that cannot become an example; `reason` is the report's counter key."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def stable_int64(kind: str, source: str, raw: str) -> int:
  """A signed int64 from sha256: the only form in which a raw source id is stored."""
  digest = hashlib.sha256(f"echoground/{kind}/{source}/{raw}".encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big", signed=True)


def example_key(source: str, key: str) -> str:
  """TFDS example key: a hash of the source key, so raw file / study names stay out."""
  return hashlib.sha256(f"echoground/key/{source}/{key}".encode("utf-8")).hexdigest()[:32]


def clean_measurements(measurements: Mapping[str, Any], counts: collections.Counter) -> dict[str, float]:
  """Keeps canonical, finite, plausible values; every dropped value is counted by reason.

  Absent keys stay absent. NaN / None mean "not measured" (counted, not an error);
  unknown names and values outside the plausible range are data errors and are
  dropped (recorded as absent), never guessed.
  """
  if not isinstance(measurements, Mapping):
    raise SkipRecord("bad_measurements_type")
  clean = {}
  for name, value in measurements.items():
    if name not in schema.MEASUREMENT_INFO:
      counts["unknown_measurement_name"] += 1
    elif not schema.is_present(value):
      counts[f"absent_value:{name}"] += 1
    elif not schema.is_plausible(name, value):
      counts[f"implausible_value:{name}"] += 1
    else:
      clean[name] = float(value)
  return clean


def _frames(frames: Any, num_frames: int, image_size: int) -> np.ndarray:
  if not isinstance(frames, np.ndarray):
    raise SkipRecord("frames_not_an_array")
  if frames.ndim == 4 and frames.shape[-1] == 1:
    frames = frames[..., 0]
  if frames.dtype != np.uint8:
    raise SkipRecord("frames_not_uint8")
  if frames.shape != (num_frames, image_size, image_size):
    raise SkipRecord("frames_wrong_shape")
  if not frames.any():
    raise SkipRecord("frames_blank")
  return np.ascontiguousarray(frames)[..., None]


def _dense_truth(record: Mapping[str, Any], num_frames: int, image_size: int) -> dict[str, Any]:
  """The record's segmentation masks, landmarks, phases and pixel spacing, checked; a record
  without them (MIMIC) gets empty ones with dense_truth False. A present but misshapen
  field skips the record: a wrong mask is never stored."""
  t, s, k = num_frames, image_size, len(schema.LANDMARKS)
  if not record.get("dense_truth"):
    return {"dense_truth": False, "masks": np.zeros((t, s, s, 1), np.uint8),
            "landmarks": np.full((t, k, 2), np.nan, np.float32),
            "phases": np.full((t,), np.nan, np.float32), "pixel_spacing_mm": np.float32(np.nan)}
  masks, points = record.get("masks"), record.get("landmarks")
  phases, spacing = record.get("phases"), record.get("pixel_spacing_mm")
  if (not isinstance(masks, np.ndarray) or masks.dtype != np.uint8 or masks.shape != (t, s, s)
      or masks.max(initial=0) >= len(schema.STRUCTURES)):
    raise SkipRecord("masks_invalid")
  points = np.asarray(points, np.float32) if points is not None else None
  # Points may lie outside the frame (a structure the sector cuts off): only the shape is checked.
  if points is None or points.shape != (t, k, 2) or np.isinf(points).any():
    raise SkipRecord("landmarks_invalid")
  phases = np.asarray(phases, np.float32) if phases is not None else None
  if phases is None or phases.shape != (t,):
    raise SkipRecord("phases_invalid")
  if spacing is None or not (np.isnan(spacing) or 0 < float(spacing) < np.inf):
    raise SkipRecord("pixel_spacing_invalid")
  return {"dense_truth": True, "masks": np.ascontiguousarray(masks)[..., None],
          "landmarks": points, "phases": phases, "pixel_spacing_mm": np.float32(spacing)}


def clean_grades(grades: Any, counts: collections.Counter) -> dict[str, str]:
  """Keeps grades with a known name and level (echo/grades.py); others are counted."""
  from echovlm_jax.echo import grades as grades_lib  # pylint: disable=g-import-not-at-top
  if grades is None:
    return {}
  if not isinstance(grades, Mapping):
    raise SkipRecord("bad_grades_type")
  clean = {}
  for name, level in grades.items():
    try:
      grades_lib.check_level(name, level)
    except ValueError:
      counts[f"invalid_grade:{name}"] += 1
      continue
    clean[name] = level
  return clean


def statement_structure(statements) -> str:
  """What each caption sentence states, space-separated: a measurement name, `grade:<name>`,
  or `-` (the view / study sentence). The negated caption has the same structure."""
  return " ".join("-" if s.states is None else (s.states if s.kind == "measurement"
                                                else f"grade:{s.states}") for s in statements)


def caption_rng(source: str, key: str) -> random.Random:
  """The caption phrasing rng, seeded from the example key: same source, same text."""
  digest = hashlib.sha256(f"echoground/caption/{source}/{key}".encode("utf-8")).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def make_example(key: str, record: Mapping[str, Any], *, num_frames: int, image_size: int,
                 value_counts: collections.Counter) -> dict[str, Any]:
  """One source record -> the example dict of the `echoground` features.

  Raises SkipRecord for a record that fails validation. Measurement clean-up
  counts go to `value_counts`; they are only committed by the caller once the
  whole record has passed (see `ExampleMaker`).
  """
  from echovlm_jax.data import caption_augment  # pylint: disable=g-import-not-at-top
  from echovlm_jax.echo import captions, grades as grades_lib, guidelines, negation  # pylint: disable=g-import-not-at-top

  if not isinstance(record, Mapping):
    raise SkipRecord("record_not_a_mapping")
  source = str(record.get("source") or "")
  if source not in schema.SOURCES:
    raise SkipRecord("unknown_source")
  patient_key, study_key = record.get("patient_key"), record.get("study_key")
  if not patient_key or not study_key:
    raise SkipRecord("missing_patient_or_study_key")
  view = record.get("view")
  if view not in schema.VIEW_INFO:
    raise SkipRecord("invalid_view_name")
  sex = record.get("sex")
  if sex not in (None, "", *schema.SEXES):
    value_counts["invalid_sex_recorded_unknown"] += 1
    sex = None
  sex = sex or None
  frames = _frames(record.get("frames"), num_frames, image_size)
  dense = _dense_truth(record, num_frames, image_size)
  measurements = clean_measurements(record.get("measurements") or {}, value_counts)
  grades = clean_grades(record.get("grades"), value_counts)
  if not measurements and not grades:
    raise SkipRecord("study_without_valid_measurements")
  view_source = record.get("view_source") or (source if view != schema.UNKNOWN_VIEW else "none")
  if view_source not in schema.VIEW_SOURCES:
    raise SkipRecord("invalid_view_source")
  image_kind = record.get("image_kind") or "unknown"
  if image_kind not in schema.IMAGE_KINDS:
    raise SkipRecord("invalid_image_kind")

  stmts = captions.caption_statements(view, measurements, sex, rng=caption_rng(source, key),
                                      grades=grades, image_kind=image_kind)
  caption = " ".join(st.text for st in stmts)
  if not caption.strip():
    raise SkipRecord("empty_caption")
  if len(caption_augment.split_statements(caption)) != len(stmts):
    raise SkipRecord("caption_sentences_do_not_split")
  negated = negation.negate(caption)
  if negated is not None and (not isinstance(negated, str) or negated == caption):
    raise SkipRecord("invalid_negation")
  # How often grades and numbers disagree is reported per study (data/build_report.py).
  label_map = grades_lib.combine_labels(guidelines.derive_labels(measurements, sex), grades)
  labels = np.array([label_map.get(l, -1) for l in schema.LABELS], np.int8)
  if not np.isin(labels, (-1, 0, 1)).all():
    raise SkipRecord("invalid_label_value")
  meas = np.full((len(schema.MEASUREMENTS),), np.nan, np.float32)
  for i, name in enumerate(schema.MEASUREMENTS):
    if name in measurements:
      meas[i] = measurements[name]
  return {
      "frames": frames,
      "view": view,
      "caption": caption,
      "negated_caption": negated or "",
      "has_negation": negated is not None,
      "measurements": meas,
      "grades": np.array(grades_lib.severities(grades), np.int8),
      "statements": statement_structure(stmts),
      "view_source": view_source,
      "view_confidence": np.float32(record.get("view_confidence", 1.0 if view_source != "none" else 0.0)),
      "image_kind": image_kind,
      "labels": labels,
      "sex": sex or "",
      "patient_id": stable_int64("patient", source, str(patient_key)),
      "study_id": stable_int64("study", source, str(study_key)),
      "source": source,
      **dense,
  }


class ExampleMaker:
  """Turns a stream of source records into examples, counting every skip by reason.

  A record's value-level counts are merged only if the record is kept, so the
  report's numbers describe what the dataset actually contains.
  """

  def __init__(self, num_frames: int, image_size: int):
    self.num_frames, self.image_size = num_frames, image_size
    self.skipped: collections.Counter = collections.Counter()
    self.values_dropped: collections.Counter = collections.Counter()
    self.read = 0
    self._seen_keys: set[str] = set()
    self._guard = bug_guard.BugGuard(self.skipped)

  def __call__(self, key: str, record: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    self.read += 1
    local = collections.Counter()
    try:
      ex_key = example_key(str(record.get("source", "")) if isinstance(record, Mapping) else "", str(key))
      if ex_key in self._seen_keys:
        raise SkipRecord("duplicate_key")
      example = make_example(key, record, num_frames=self.num_frames, image_size=self.image_size,
                             value_counts=local)
    except SkipRecord as e:
      self.skipped[e.reason] += 1
      return None
    except Exception as e:  # pylint: disable=broad-except
      # A record that breaks caption / label code is counted (the report names the exception
      # type); a few bug-type errors stop the build with the traceback.
      self._guard(e, f"record {key}")
      return None
    self._seen_keys.add(ex_key)
    self.values_dropped.update(local)
    return ex_key, example


def split_fraction(patient_id: int) -> float:
  """A patient's place in [0, 1): the first 8 bytes of sha256("echoground/split/<id>")."""
  digest = hashlib.sha256(f"echoground/split/{int(patient_id)}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_patients(patient_ids: Iterable[int]) -> dict[int, str]:
  """Patient -> split by a threshold on a hash of its id: test below 0.1, validation below
  0.2, train above. A patient's split depends on its id only, so adding patients, studies or
  a mapping, or rebuilding, never moves one to another split.

  Only a dataset so small that validation or test would be empty (fewer than ~30 patients)
  borrows the train patients nearest the thresholds, so the three splits exist whenever there
  are at least 3 patients.
  """
  ids = sorted(set(int(p) for p in patient_ids), key=split_fraction)
  out = {p: ("test" if split_fraction(p) < SPLIT_FRACTIONS["test"] else
             "validation" if split_fraction(p) < SPLIT_FRACTIONS["test"] + SPLIT_FRACTIONS["validation"]
             else "train") for p in ids}
  if len(ids) >= 3:
    for split in ("test", "validation"):
      if split not in out.values():
        train = [p for p in ids if out[p] == "train"]
        out[train[0]] = split  # the lowest hash still in train
  return out
