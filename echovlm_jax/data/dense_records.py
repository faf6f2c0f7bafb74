"""CAMUS, EchoNet-Dynamic and EchoNet-LVH as echoground records: an end-diastole and an
end-systole frame (T = 2, input.frames_at="ed_es", as the synthetic dense build), resampled
to the builder's square grid, with their masks, points, phases and pixel spacing; or, for
EchoNet-Dynamic with frames_at="cycle", clips of T frames at a stated frame rate with the EF.

The readers (camus.py, echonet_dynamic.py, echonet_lvh.py) keep each release's own pixel
grid; here every frame goes onto an S x S grid of square pixels: the physical extent (rows x
row spacing, columns x column spacing) is scaled so its longer side fills S, the shorter side
is centred (columns) or padded below (rows: the sector's apex stays at the top, as in the
renderer's frames). Images are resized by area averaging, masks by area-weighted vote per
label (a thin myocardium survives better than by nearest neighbour), points by the same
affine map (pixel i's centre at i).

What each release labels (schema.LABELLED_STRUCTURES) is the record's `source`: CAMUS 0-3,
EchoNet-Dynamic the LV cavity only, EchoNet-LVH no mask (its calipers are points).
"""

from __future__ import annotations

import collections
import itertools
from typing import Any, Iterator

import cv2
import numpy as np

from echovlm_jax.data import clip_windows
from echovlm_jax.data import dense_skips
from echovlm_jax.echo import schema

SOURCES = ("camus", "echonet_dynamic", "echonet_lvh")
_PHASES = np.array([schema.ED_PHASE, schema.ES_PHASE], np.float32)
_POINT = {n: i for i, n in enumerate(schema.LANDMARKS)}
# EchoNet-LVH's segments as (first, second) schema point, ordered from the transducer down
# (smaller row first): IVSd ivs_anterior..septal endocardium, LVID septal..posterior
# endocardium, LVPWd posterior endocardium..epicardium.
LVH_SEGMENTS = {"IVSd": ("ivs_anterior", "lv_septal_endocardium"),
                "LVIDd": ("lv_septal_endocardium", "lv_posterior_endocardium"),
                "LVPWd": ("lv_posterior_endocardium", "lvpw_epicardium"),
                "LVIDs": ("lv_septal_endocardium", "lv_posterior_endocardium")}
LVH_MEASUREMENT = {"IVSd": "ivsd", "LVIDd": "lvidd", "LVPWd": "lvpwd", "LVIDs": "lvids"}


class SquareGrid:
  """The map from a release's [H, W] grid with spacing (row, col) mm onto S x S square pixels."""

  def __init__(self, shape: tuple[int, int], spacing_mm: tuple[float, float], size: int):
    h, w = shape
    sr, sc = spacing_mm
    extent = max(h * sr, w * sc)
    self.size = size
    self.spacing_mm = extent / size               # mm per output pixel, both axes
    self.out_h = max(1, min(size, round(h * sr / self.spacing_mm)))
    self.out_w = max(1, min(size, round(w * sc / self.spacing_mm)))
    self.top, self.left = 0, (size - self.out_w) // 2
    self.scale = (self.out_h / h, self.out_w / w)

  def _place(self, resized: np.ndarray) -> np.ndarray:
    out = np.zeros((self.size, self.size) + resized.shape[2:], resized.dtype)
    out[self.top:self.top + self.out_h, self.left:self.left + self.out_w] = resized
    return out

  def image(self, image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] -> uint8 [S, S] by area averaging."""
    return self._place(cv2.resize(image, (self.out_w, self.out_h), interpolation=cv2.INTER_AREA))

  def mask(self, mask: np.ndarray) -> np.ndarray:
    """uint8 labels [H, W] -> [S, S]: each output pixel takes the label covering most of it."""
    onehot = (mask[..., None] == np.arange(len(schema.STRUCTURES))).astype(np.float32)
    area = np.stack([cv2.resize(onehot[..., c], (self.out_w, self.out_h),
                                interpolation=cv2.INTER_AREA) for c in range(onehot.shape[-1])],
                    axis=-1)
    return self._place(np.argmax(area, axis=-1).astype(np.uint8))

  def points(self, points: np.ndarray) -> np.ndarray:
    """(row, col) px [..., 2] of the release's grid -> of the S x S grid (NaN stays NaN)."""
    row = (points[..., 0] + 0.5) * self.scale[0] - 0.5 + self.top
    col = (points[..., 1] + 0.5) * self.scale[1] - 0.5 + self.left
    return np.stack([row, col], axis=-1).astype(np.float32)


def _record(source: str, key: str, grid: SquareGrid, frames: list[np.ndarray],
            masks: list[np.ndarray] | None, points: np.ndarray | None, phases: np.ndarray,
            spacing_mm: float, measurements: dict[str, float], **fields) -> dict[str, Any]:
  """The echoground record (records.make_example's input) of two frames on `grid`."""
  s, k = grid.size, len(schema.LANDMARKS)
  return dict(
      source=source, patient_key=fields.pop("patient_key", key), study_key=fields.pop("study_key", key),
      frames=np.stack([grid.image(f) for f in frames]),
      masks=(np.stack([grid.mask(m) for m in masks]) if masks is not None
             else np.zeros((2, s, s), np.uint8)),
      landmarks=(grid.points(points) if points is not None else np.full((2, k, 2), np.nan, np.float32)),
      phases=phases, pixel_spacing_mm=np.float32(spacing_mm),
      dense_truth=True, measurements=measurements, image_kind="2d", view_source="dataset",
      view_confidence=1.0, **fields)


def camus_records(manual_dir: str, image_size: int, stats: collections.Counter
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
  """One record per (patient, view): its ED and ES images and expert masks."""
  from echovlm_jax.data import camus  # pylint: disable=g-import-not-at-top  (nibabel)
  by_view = itertools.groupby(camus.generate_records(manual_dir, stats),
                              key=lambda kr: kr[0].rsplit("_", 1)[0])
  for key, group in by_view:
    phases = {r["phase"]: r for _, r in group}
    if set(phases) != {"ED", "ES"}:
      stats["skip:camus_view_without_ed_and_es"] += 1   # its other phase was skipped above
      continue
    ed, es = phases["ED"], phases["ES"]
    if ed["image"].shape != es["image"].shape or ed["spacing_mm"] != es["spacing_mm"]:
      stats["skip:camus_ed_es_grids_differ"] += 1
      continue
    grid = SquareGrid(ed["image"].shape, ed["spacing_mm"], image_size)
    yield key, _record("camus", key, grid, [ed["image"], es["image"]], [ed["mask"], es["mask"]],
                       None, _PHASES, grid.spacing_mm, {"lvef": ed["ef"]}, patient_key=ed["patient_key"],
                       study_key=ed["patient_key"], view=ed["view"], sex=ed["sex"],
                       split=ed["split"])


def echonet_dynamic_records(manual_dir: str, image_size: int, stats: collections.Counter
                            ) -> Iterator[tuple[str, dict[str, Any]]]:
  """One record per video: its traced ED and ES frames and LV cavity masks. The release
  gives no pixel spacing: the grid is taken as square pixels and the spacing left NaN (no mm
  metrics; LVEF, a ratio of volumes, does not need it)."""
  from echovlm_jax.data import echonet_dynamic  # pylint: disable=g-import-not-at-top
  for key, r in echonet_dynamic.generate_records(manual_dir, stats):
    grid = SquareGrid(r["frames"].shape[1:], (1.0, 1.0), image_size)
    yield key, _record("echonet_dynamic", key, grid,
                       [r["frames"][r["ed_frame"]], r["frames"][r["es_frame"]]],
                       [r["ed_mask"], r["es_mask"]], None, _PHASES, float("nan"), {"lvef": r["ef"]},
                       view="a4c", split=r["split"])


def echonet_dynamic_clips(manual_dir: str, image_size: int, stats: collections.Counter,
                          num_frames: int, clip_fps: float) -> Iterator[tuple[str, dict[str, Any]]]:
  """One record per video as a clip (input.frames_at="cycle"): `num_frames` frames at
  `clip_fps` from FileList's FPS, centred in the video (clip_windows.indices_at_rate; 0 =
  evenly over the video), with FileList's EF as the LVEF. No masks: EF from motion is
  configs/echonet_ef.py's task (the tracings stay in the ED / ES build)."""
  from echovlm_jax.data import echonet_dynamic  # pylint: disable=g-import-not-at-top
  for key, r in echonet_dynamic.generate_records(manual_dir, stats):
    grid = SquareGrid(r["frames"].shape[1:], (1.0, 1.0), image_size)
    idx = clip_windows.indices_at_rate(len(r["frames"]), num_frames, 1000.0 / r["fps"], clip_fps)
    yield key, dict(
        source="echonet_dynamic", patient_key=key, study_key=key,
        frames=np.stack([grid.image(r["frames"][i]) for i in idx]), dense_truth=False,
        measurements={"lvef": r["ef"]}, image_kind="2d", view="a4c", view_source="dataset",
        view_confidence=1.0, split=r["split"])


def lvh_spacing_mm(record: dict[str, Any]) -> float:
  """mm per pixel from the calipers themselves (value in cm over length in px; the release
  states no spacing), the median over the video's measurements; NaN when none has length."""
  lengths = np.linalg.norm(record["points"][:, 1] - record["points"][:, 0], axis=-1)
  ok = lengths > 0
  return float(np.median(10.0 * record["value_cm"][ok] / lengths[ok])) if ok.any() else float("nan")


def lvh_points(record: dict[str, Any], stats: collections.Counter
               ) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
  """(points (row, col) [2, K, 2] at ED and ES, NaN where unmeasured; (ED, ES) frame indices;
  phases [2], ES NaN without an LVIDs). ED is the LVIDd's frame (else the first diastolic
  caliper's); a diastolic caliper on another frame keeps its value for the caption but not
  its points (counted). A point two segments share is their mean."""
  calc, frame = list(record["calc"]), record["frame"]
  diastolic = [i for i, c in enumerate(calc) if c != "LVIDs"]
  systolic = [i for i, c in enumerate(calc) if c == "LVIDs"]
  ed = int(frame[calc.index("LVIDd")] if "LVIDd" in calc else frame[diastolic[0]]) if diastolic \
      else int(frame[systolic[0]])
  es = int(frame[systolic[0]]) if systolic else ed
  sums = np.zeros((2, len(schema.LANDMARKS), 2), np.float64)
  counts = np.zeros((2, len(schema.LANDMARKS), 1), np.float64)
  for i, c in enumerate(calc):
    t, at = (1, es) if c == "LVIDs" else (0, ed)
    if int(frame[i]) != at:
      stats["note:lvh_caliper_off_the_ed_or_es_frame"] += 1
      continue
    (x1, y1), (x2, y2) = record["points"][i]
    ends = sorted([(y1, x1), (y2, x2)])             # (row, col), the transducer's side first
    for name, point in zip(LVH_SEGMENTS[c], ends):
      sums[t, _POINT[name]] += point
      counts[t, _POINT[name]] += 1
  with np.errstate(invalid="ignore", divide="ignore"):
    points = (sums / counts).astype(np.float32)     # 0 / 0: NaN, unmeasured
  phases = np.array([schema.ED_PHASE, schema.ES_PHASE if systolic else np.nan], np.float32)
  return points, (ed, es), phases


def echonet_lvh_records(manual_dir: str, image_size: int, stats: collections.Counter
                        ) -> Iterator[tuple[str, dict[str, Any]]]:
  """One record per video: the ED frame with IVSd / LVIDd / LVPWd's points, the ES frame
  with LVIDs's; the four values (cm) for the caption; no mask."""
  from echovlm_jax.data import echonet_lvh  # pylint: disable=g-import-not-at-top
  for key, r in echonet_lvh.generate_records(manual_dir, stats):
    points, (ed, es), phases = lvh_points(r, stats)
    spacing = lvh_spacing_mm(r)
    grid = SquareGrid(r["frames"].shape[1:], (1.0, 1.0), image_size)
    measurements = {LVH_MEASUREMENT[c]: float(v) for c, v in zip(r["calc"], r["value_cm"])}
    if not np.isfinite(spacing):
      dense_skips.note(stats, "lvh_spacing_unknown")
    # Square pixels in and out: an output pixel spans 1 / scale input pixels.
    yield key, _record("echonet_lvh", key, grid, [r["frames"][ed], r["frames"][es]], None,
                       points, phases, spacing / grid.scale[0], measurements, view="plax",
                       split=r["split"])


READERS = {"camus": camus_records, "echonet_dynamic": echonet_dynamic_records,
           "echonet_lvh": echonet_lvh_records}


# The releases whose videos can be read as clips (frames_at="cycle") instead of ED / ES pairs.
CLIP_READERS = {"echonet_dynamic": echonet_dynamic_clips}


def generate_records(source: str, manual_dir: str, image_size: int, stats: collections.Counter,
                     num_frames: int = 2, frames_at: str = "ed_es", clip_fps: float = 0.0
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key, echoground record) of a dense release; `split` is the release's own. frames_at
  "cycle" (CLIP_READERS only): clips of num_frames frames at clip_fps instead."""
  if source not in READERS:
    raise ValueError(f"dense source {source!r}: expected one of {SOURCES}.")
  if frames_at == "cycle":
    if source not in CLIP_READERS:
      raise ValueError(f"config.input.frames_at='cycle' reads clips of {sorted(CLIP_READERS)}; "
                       f"{source} gives an ED and an ES frame: set frames_at='ed_es'.")
    return CLIP_READERS[source](manual_dir, image_size, stats, num_frames, clip_fps)
  return READERS[source](manual_dir, image_size, stats)
