"""Reads CAMUS's NIfTI release: one record per (patient, view, phase) with its expert mask.

Layout (`manual_dir` holds database_nifti/, or CAMUS_public/ that holds it):
  database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.nii.gz      image
  database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}_gt.nii.gz   mask
  database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_half_sequence[_gt].nii.gz   ED..ES frames
  database_nifti/patientNNNN/Info_{2CH,4CH}.cfg   "Key: value" lines: ED, ES (1-based frame
      numbers in the half sequence), NbFrame, Sex, Age, ImageQuality, EF, FrameRate
  database_split/subgroup_{training,validation,testing}.txt   the official split (optional)

Labels: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium [vitalab/vital
data/camus/config.py]. Orientation: nibabel gives the voxel array as (x, y) = (columns, rows);
SimpleITK, which vital's and zea's CAMUS loaders use, gives (rows, columns). The array is
transposed, so row 0 is the top of the sector, where the apex is, as the dataset's viewers
show it. The affine's signs are not applied (ITK writes LPS as a negative x / y): the dataset's
convention is the voxel order. Spacing (row, col) in mm from the header's zooms (x = column
spacing, y = row spacing). Unusable items are skipped and counted (dense_skips.py).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import zlib
from typing import Any, Iterator, NamedTuple

import nibabel
import numpy as np

from echovlm_jax.data import dense_layout
from echovlm_jax.data import dense_skips
from echovlm_jax.echo import schema

VIEWS = {"2CH": "a2c", "4CH": "a4c"}       # file tag -> schema view
PHASES = ("ED", "ES")
LABELS = ("background", "lv_cavity", "myocardium", "left_atrium")
SPLIT_FILES = {"train": "subgroup_training.txt", "validation": "subgroup_validation.txt",
               "test": "subgroup_testing.txt"}
# Info_*.cfg keys and how each parses; Age goes through float ("56.0" is an age too).
CFG_KEYS = {"ED": int, "ES": int, "NbFrame": int, "Sex": str, "Age": lambda v: int(float(v)),
            "ImageQuality": str, "EF": float, "FrameRate": float}
_PATIENT = re.compile(r"patient\d{4}$")
_UNIT_TO_MM = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 1e-3}
_NIFTI_ERRORS = (EOFError, OSError, ValueError, zlib.error, nibabel.filebasedimages.ImageFileError)
_FIX_FILE = "Copy this file again from the CAMUS release (a download or unzip was cut short)."


@dataclasses.dataclass(frozen=True)
class ViewInfo:
  """One Info_{2CH,4CH}.cfg. ed / es: 0-based frame indices in the half sequence."""
  ed: int
  es: int
  num_frames: int
  sex: str
  age: int
  image_quality: str
  ef: float
  frame_rate: float


class Item(NamedTuple):
  folder: str      # database_nifti/patientNNNN
  patient: str
  view: str        # "2CH" / "4CH"
  phase: str       # "ED" / "ES"
  split: str | None


def find_root(manual_dir: str | os.PathLike) -> str:
  """The folder that holds database_nifti/ (manual_dir itself or its CAMUS_public/)."""
  return dense_layout.find_root(manual_dir, "database_nifti", "CAMUS_public", "CAMUS's NIfTI")


def read_cfg(path: str) -> ViewInfo:
  """Info_{2CH,4CH}.cfg -> ViewInfo; raises dense_skips.Skip on a missing file, key or value."""
  if not os.path.isfile(path):
    raise dense_skips.Skip("missing_cfg", path, "file", "not found",
                           "Every patient folder of the release has Info_2CH.cfg and Info_4CH.cfg; "
                           "copy it again.")
  with open(path, encoding="utf-8") as f:
    pairs = [line.partition(":") for line in f]
  raw = {k.strip(): v.strip() for k, sep, v in pairs if sep}
  values: dict[str, Any] = {}
  for key, parse in CFG_KEYS.items():
    if not raw.get(key):
      raise dense_skips.Skip("cfg_missing_key", path, key, "missing",
                             f"Add the line '{key}: <value>' from the release's copy of this file.")
    try:
      values[key] = parse(raw[key])
    except ValueError:
      raise dense_skips.Skip("cfg_bad_value", path, key, f"{raw[key]!r} does not parse",
                             "Restore the release's value.") from None
  if not 1 <= values["ED"] <= values["NbFrame"] or not 1 <= values["ES"] <= values["NbFrame"]:
    raise dense_skips.Skip("cfg_bad_value", path, "ED / ES",
                           f"frames {values['ED']} / {values['ES']} outside 1..NbFrame "
                           f"({values['NbFrame']})", "Restore the release's values.")
  if values["Sex"] not in schema.SEXES:
    raise dense_skips.Skip("cfg_bad_value", path, "Sex", f"{values['Sex']!r} is not M or F",
                           "Restore the release's value.")
  return ViewInfo(values["ED"] - 1, values["ES"] - 1, values["NbFrame"], values["Sex"],
                  values["Age"], values["ImageQuality"], values["EF"], values["FrameRate"])


def read_splits(root: str) -> dict[str, str] | None:
  """patient -> "train" / "validation" / "test" from database_split/, or None without it."""
  folder = os.path.join(root, "database_split")
  if not os.path.isdir(folder):
    return None
  out: dict[str, str] = {}
  for split, name in SPLIT_FILES.items():
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found: database_split/ holds the official split as "
                              f"{sorted(SPLIT_FILES.values())}; put all three there, or remove the "
                              "folder to build without the official split.")
    with open(path, encoding="utf-8") as f:
      for patient in filter(None, (line.strip() for line in f)):
        if out.setdefault(patient, split) != split:
          raise ValueError(f"{path}: {patient} is also in the {out[patient]} list; one patient, "
                           "one split (restore the release's split files).")
  return out


def load_nifti(path: str, what: str) -> tuple[np.ndarray, tuple[float, float]]:
  """(array, spacing_mm): uint8 [H, W], or [T, H, W] for a sequence, in (rows, columns) order;
  spacing (row, col) in mm. Raises dense_skips.Skip ("missing_<what>", "nifti_unreadable", ...)."""
  if not os.path.isfile(path):
    raise dense_skips.Skip(f"missing_{what}", path, "file", "not found",
                           "Copy the patient's folder again from the CAMUS release.")
  try:
    img = nibabel.load(path)
    raw = np.asanyarray(img.dataobj)
  except _NIFTI_ERRORS as e:
    raise dense_skips.Skip("nifti_unreadable", path, "data", f"{type(e).__name__}: {e}",
                           _FIX_FILE) from e
  # Drop trailing singleton axes ((x, y, 1) is a 2-D image), keep x and y even if 1 wide.
  raw = raw.reshape(raw.shape[:2] + tuple(d for d in raw.shape[2:] if d != 1))
  if raw.ndim not in (2, 3):
    raise dense_skips.Skip(f"{what}_bad_shape", path, "dim", f"shape {raw.shape}", _FIX_FILE)
  arr = raw.T        # (x, y[, t]) -> ([t,] y, x): (columns, rows) -> (rows, columns)
  if arr.dtype != np.uint8:
    ok = arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) \
        and arr.min() >= 0 and arr.max() <= 255
    if not ok:
      raise dense_skips.Skip(f"{what}_not_8_bit", path, "data",
                             f"{arr.dtype} values outside whole numbers 0..255", _FIX_FILE)
    arr = arr.astype(np.uint8)
  unit = img.header.get_xyzt_units()[0]
  sx, sy = (float(z) * _UNIT_TO_MM.get(unit, np.nan) for z in img.header.get_zooms()[:2])
  if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
    raise dense_skips.Skip("bad_spacing", path, "pixdim / xyzt_units",
                           f"zooms {img.header.get_zooms()[:2]} in unit {unit!r}", _FIX_FILE)
  return np.ascontiguousarray(arr), (sy, sx)


def check_mask(mask: np.ndarray, image_shape: tuple[int, ...], path: str) -> None:
  """A mask that cannot be trusted is skipped, never passed on: shape and labels 0..3."""
  if mask.shape != image_shape:
    raise dense_skips.Skip("mask_shape_differs", path, "shape",
                           f"{mask.shape} where the image is {image_shape}", _FIX_FILE)
  bad = sorted(set(np.unique(mask).tolist()) - set(range(len(LABELS))))
  if bad:
    raise dense_skips.Skip("mask_bad_labels", path, "labels", f"values {bad} beyond 0..3",
                           "CAMUS masks label 0 background, 1 LV cavity, 2 myocardium, 3 left "
                           "atrium; restore the release's file.")
  if not mask.any():
    raise dense_skips.Skip("mask_empty", path, "labels", "only background", _FIX_FILE)


def read_item(item: Item) -> tuple[str, dict[str, Any]]:
  """(key, record) of one (patient, view, phase); see `generate_records`."""
  info = read_cfg(os.path.join(item.folder, f"Info_{item.view}.cfg"))
  stem = os.path.join(item.folder, f"{item.patient}_{item.view}_{item.phase}")
  image, spacing = load_nifti(stem + ".nii.gz", "image")
  if image.ndim != 2:
    raise dense_skips.Skip("image_bad_shape", stem + ".nii.gz", "dim",
                           f"shape {image.shape}, not one frame", _FIX_FILE)
  mask, _ = load_nifti(stem + "_gt.nii.gz", "mask")
  check_mask(mask, image.shape, stem + "_gt.nii.gz")
  record = dict(
      image=image, mask=mask, view=VIEWS[item.view], phase=item.phase, spacing_mm=spacing,
      patient_key=item.patient, split=item.split, ef=info.ef, sex=info.sex, age=info.age,
      image_quality=info.image_quality, frame_rate=info.frame_rate, num_frames=info.num_frames,
      sequence_index=info.ed if item.phase == "ED" else info.es, source="camus")
  return f"{item.patient}_{item.view}_{item.phase}", record


def plan(root: str, stats: collections.Counter) -> list[Item]:
  """Every (patient, view, phase) of database_nifti/, patients in name order."""
  nifti = os.path.join(root, "database_nifti")
  patients = sorted(d for d in os.listdir(nifti)
                    if _PATIENT.match(d) and os.path.isdir(os.path.join(nifti, d)))
  if not patients:
    raise FileNotFoundError(f"{nifti}: no patientNNNN/ folders (see {dense_layout.DOC}).")
  splits = read_splits(root)
  if splits is not None:
    dense_skips.note(stats, "split_patient_without_folder", len(set(splits) - set(patients)))
    dense_skips.note(stats, "patient_not_in_split_files", len(set(patients) - set(splits)))
  return [Item(os.path.join(nifti, p), p, view, phase, None if splits is None else splits.get(p))
          for p in patients for view in VIEWS for phase in PHASES]


def generate_records(manual_dir: str | os.PathLike, stats: collections.Counter | None = None
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key "patientNNNN_4CH_ED", record) per usable (patient, view, phase).

  record: image uint8 [H, W] and mask uint8 [H, W] (labels 0..3, LABELS), apex at row 0;
  view "a2c" / "a4c"; phase "ED" / "ES"; spacing_mm (row, col); patient_key; split ("train" /
  "validation" / "test" from database_split/, None without it or for an unlisted patient);
  ef (%), sex, age, image_quality, frame_rate (the view's Info cfg); num_frames and
  sequence_index (0-based, of this phase in the half sequence); source "camus". Skipped items
  are counted in `stats` under "skip:<reason>".
  """
  stats = collections.Counter() if stats is None else stats
  items = plan(find_root(manual_dir), stats)
  yield from dense_skips.read_each(items, read_item, stats,
                                   lambda i: f"{i.patient} {i.view} {i.phase}")


def read_half_sequence(manual_dir: str | os.PathLike, patient: str, view: str) -> dict[str, Any]:
  """One view's half sequence: frames and masks uint8 [T, H, W] (T = NbFrame, ED..ES as the
  cfg's ed / es indices say), spacing_mm (row, col), ed, es. Raises dense_skips.Skip."""
  folder = os.path.join(find_root(manual_dir), "database_nifti", patient)
  info = read_cfg(os.path.join(folder, f"Info_{view}.cfg"))
  stem = os.path.join(folder, f"{patient}_{view}_half_sequence")
  frames, spacing = load_nifti(stem + ".nii.gz", "sequence")
  masks, _ = load_nifti(stem + "_gt.nii.gz", "sequence_mask")
  if frames.ndim == 2:     # a one-frame sequence: its trailing axis was dropped
    frames, masks = frames[None], masks[None]
  if frames.shape[0] != info.num_frames:
    raise dense_skips.Skip("sequence_length_differs_from_cfg", stem + ".nii.gz", "frames",
                           f"{frames.shape[0]} frames where Info_{view}.cfg says NbFrame "
                           f"{info.num_frames}", _FIX_FILE)
  check_mask(masks, frames.shape, stem + "_gt.nii.gz")
  return dict(frames=frames, masks=masks, spacing_mm=spacing, ed=info.ed, es=info.es)
