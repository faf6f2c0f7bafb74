"""A CAMUS NIfTI release in miniature: database_nifti/patientNNNN/ and database_split/.

Each view has its own non-square frame and anisotropic spacing, so a missing transpose or
swapped spacing shows. Every image has the apex marker (255) at the top centre of the sector
and a second marker (254) near the top left, so a vertical or horizontal flip shows. Masks are
ellipses of known centre and radii: LV cavity (1) inside a 3-pixel myocardium (2), the left
atrium (3) below. `write_tree` returns what each record must hold and what each bad input must
count.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from echovlm_jax.data import camus
from tests import dense_fixtures

VIEWS = {"2CH": dict(shape=(40, 30), spacing=(0.31, 0.154)),
         "4CH": dict(shape=(44, 34), spacing=(0.28, 0.19))}
NUM_FRAMES = 5
APEX_VALUE, LEFT_MARK_VALUE = 255, 254
LEFT_MARK = (3, 2)
WALL_PX = 3
# name: split, Sex, Age, ImageQuality, EF, FrameRate, (ED, ES) as the cfg numbers them (1-based)
PATIENTS = {
    "patient0001": ("train", "F", 61, "Good", 55.4, 50.0, (1, NUM_FRAMES)),
    "patient0002": ("validation", "M", 47, "Medium", 38.0, 33.3, (NUM_FRAMES, 1)),  # ES before ED
    "patient0003": ("test", "F", 72, "Poor", 61.2, 25.0, (1, NUM_FRAMES)),
    "patient0004": ("train", "M", 55, "Good", 50.0, 40.0, (1, NUM_FRAMES)),  # bad files
    "patient0005": ("train", "F", 66, "Good", 52.0, 40.0, (1, NUM_FRAMES)),  # bad cfgs
    "patient0006": (None, "M", 80, "Medium", 45.5, 30.0, (1, NUM_FRAMES)),  # in no split file
}
ON_SPLIT_LIST_ONLY = "patient0007"   # listed in the split files, no folder


def apex(view: str) -> tuple[int, int]:
  return (1, VIEWS[view]["shape"][1] // 2)


def cavity_geometry(view: str, phase: str) -> tuple[tuple[float, float], tuple[float, float]]:
  """(centre, radii) of the LV cavity ellipse, (row, col) in pixels."""
  h, w = VIEWS[view]["shape"]
  radii = (0.28 * h, 0.16 * w) if phase == "ED" else (0.22 * h, 0.12 * w)
  return (0.36 * h, w / 2), radii


def la_geometry(view: str) -> tuple[tuple[float, float], tuple[float, float]]:
  h, w = VIEWS[view]["shape"]
  return (0.82 * h, w / 2), (0.09 * h, 0.15 * w)


def label_map(view: str, phase: str) -> np.ndarray:
  """uint8 [H, W]: 0 background, 1 cavity, 2 myocardium, 3 left atrium."""
  shape = VIEWS[view]["shape"]
  centre, radii = cavity_geometry(view, phase)
  cavity = dense_fixtures.ellipse(shape, centre, radii)
  wall = dense_fixtures.ellipse(shape, centre, (radii[0] + WALL_PX, radii[1] + WALL_PX))
  la = dense_fixtures.ellipse(shape, *la_geometry(view))
  out = np.zeros(shape, np.uint8)
  out[wall] = 2
  out[cavity] = 1
  out[la & ~wall] = 3
  return out


def image(view: str, labels: np.ndarray, seed: int) -> np.ndarray:
  """uint8 [H, W]: tissue speckle, a dark cavity and atrium, bright wall, the two markers."""
  rng = np.random.default_rng(seed)
  img = rng.integers(50, 90, labels.shape).astype(np.uint8)
  img[labels == 1] = 12
  img[labels == 2] = 170
  img[labels == 3] = 22
  img[apex(view)] = APEX_VALUE
  img[LEFT_MARK] = LEFT_MARK_VALUE
  return img


def _cfg(path: str, values: dict[str, object]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(f"{k}: {v}\n" for k, v in values.items())


def _cfg_values(name: str) -> dict[str, object]:
  _, sex, age, quality, ef, rate, (ed, es) = PATIENTS[name]
  return {"ED": ed, "ES": es, "NbFrame": NUM_FRAMES, "Sex": sex, "Age": age,
          "ImageQuality": quality, "EF": ef, "FrameRate": rate}


def sequence_marker(t: int) -> int:
  """Intensity of the marker pixel (H - 2, 1) in frame t of a half sequence."""
  return 10 * t + 5


def _write_view(folder: str, name: str, view: str, seed: int) -> dict[str, dict]:
  spacing = VIEWS[view]["spacing"]
  _, _, _, _, _, _, (ed, es) = PATIENTS[name]
  out = {}
  for phase in ("ED", "ES"):
    labels = label_map(view, phase)
    img = image(view, labels, seed + (phase == "ES"))
    stem = os.path.join(folder, f"{name}_{view}_{phase}")
    # patient0003's 4CH images are float32 (whole numbers): still 8-bit data.
    dtype = np.float32 if (name, view) == ("patient0003", "4CH") else np.uint8
    dense_fixtures.write_nifti(stem + ".nii.gz", img.astype(dtype), spacing)
    dense_fixtures.write_nifti(stem + "_gt.nii.gz", labels, spacing)
    out[phase] = dict(image=img, mask=labels)
  # Half sequence: the ED frame at cfg index ED - 1, the ES frame at ES - 1, ED elsewhere.
  frames = np.stack([out["ES"]["image"] if t == es - 1 else out["ED"]["image"]
                     for t in range(NUM_FRAMES)])
  masks = np.stack([out["ES"]["mask"] if t == es - 1 else out["ED"]["mask"]
                    for t in range(NUM_FRAMES)])
  frames[:, -2, 1] = [sequence_marker(t) for t in range(NUM_FRAMES)]
  if (name, view) == ("patient0003", "2CH"):     # one frame short of the cfg's NbFrame
    frames, masks = frames[:-1], masks[:-1]
  stem = os.path.join(folder, f"{name}_{view}_half_sequence")
  dense_fixtures.write_nifti(stem + ".nii.gz", frames, spacing)
  dense_fixtures.write_nifti(stem + "_gt.nii.gz", masks, spacing)
  return out


def _break_patient0004(folder: str) -> None:
  p = os.path.join(folder, "patient0004_")
  os.remove(p + "2CH_ED_gt.nii.gz")                                         # missing mask
  dense_fixtures.write_nifti(p + "2CH_ES_gt.nii.gz", label_map("2CH", "ES")[:-2],
                             VIEWS["2CH"]["spacing"])                       # misshapen mask
  dense_fixtures.truncate(p + "4CH_ED.nii.gz", 0.6)                         # truncated image
  bad = label_map("4CH", "ES")
  bad[bad == 3] = 7                                                         # unknown label
  dense_fixtures.write_nifti(p + "4CH_ES_gt.nii.gz", bad, VIEWS["4CH"]["spacing"])


def _break_patient0005(folder: str) -> None:
  values = _cfg_values("patient0005")
  del values["EF"]
  _cfg(os.path.join(folder, "Info_2CH.cfg"), values)                        # missing key
  os.remove(os.path.join(folder, "Info_4CH.cfg"))                           # missing cfg


SKIPS = collections.Counter({
    "skip:missing_mask": 1, "skip:mask_shape_differs": 1, "skip:nifti_unreadable": 1,
    "skip:mask_bad_labels": 1, "skip:cfg_missing_key": 2, "skip:missing_cfg": 2})


def write_tree(root: str, with_split: bool = True) -> dict[str, dict]:
  """Writes root/database_nifti/ (and database_split/); returns {record key: expected values}
  for the items that must come through."""
  expected = {}
  for i, name in enumerate(PATIENTS):
    folder = os.path.join(root, "database_nifti", name)
    os.makedirs(folder)
    split, sex, age, quality, ef, rate, (ed, es) = PATIENTS[name]
    for view in VIEWS:
      _cfg(os.path.join(folder, f"Info_{view}.cfg"), _cfg_values(name))
      written = _write_view(folder, name, view, seed=100 * i + 10 * (view == "4CH"))
      for phase, arrays in written.items():
        expected[f"{name}_{view}_{phase}"] = dict(
            arrays, view={"2CH": "a2c", "4CH": "a4c"}[view], phase=phase, patient=name,
            spacing_mm=VIEWS[view]["spacing"], split=split if with_split else None, sex=sex,
            age=age, image_quality=quality, ef=ef, frame_rate=rate,
            sequence_index=(ed if phase == "ED" else es) - 1)
  _break_patient0004(os.path.join(root, "database_nifti", "patient0004"))
  _break_patient0005(os.path.join(root, "database_nifti", "patient0005"))
  for name in ("patient0004", "patient0005"):
    for key in [k for k in expected if k.startswith(name)]:
      del expected[key]
  if with_split:
    os.makedirs(os.path.join(root, "database_split"))
    lists = collections.defaultdict(list, {"train": [ON_SPLIT_LIST_ONLY]})
    for name, (split, *_) in PATIENTS.items():
      if split:
        lists[split].append(name)
    for split, file in camus.SPLIT_FILES.items():
      with open(os.path.join(root, "database_split", file), "w", encoding="utf-8") as f:
        f.write("\n".join(lists[split]) + "\n")
  return expected
