"""Reads EchoNet-LVH: one record per PLAX video with its caliper measurements as point pairs.

Layout (`manual_dir` holds these, or its EchoNet-LVH/ does):
  MeasurementsList.csv  HashedFileName, Calc, CalcValue, Frame, X1, X2, Y1, Y2, Frames, FPS,
                        Width, Height, split (and a leading unnamed index column, ignored)
  Batch1/ .. Batch4/<HashedFileName>.avi

A row is one measurement: Calc (IVSd, LVIDd, LVIDs or LVPWd), CalcValue in cm, drawn on one
frame as a segment from (X1, Y1) to (X2, Y2) in the video's pixels; mind the column order
X1, X2, Y1, Y2. Frame is taken as a 0-based index into the decoded video, as EchoNet-Dynamic's
Frame is (the release does not say). split train / val / test -> train / validation / test.
The release's own code (echonet/lvh) ships inference only, no loader; a few rows are known to
have FPS, Frames and Width shifted by a column (tue-bmd/zea `data/convert/echonetlvh`,
`_fix_faulty_entry`): their Width / Height disagree with the video, which is skipped here.
A measurement that cannot be placed (a frame the video lacks, a point off the frame, an
unknown Calc) is dropped and counted under "measurement:"; a video left with none, or that
cannot be read, is skipped and counted under "skip:" (dense_skips.py).
"""

from __future__ import annotations

import collections
import functools
import glob
import math
import os
from typing import Any, Iterator, NamedTuple

import numpy as np

from echovlm_jax.data import avi
from echovlm_jax.data import dense_layout
from echovlm_jax.data import dense_skips

DATASET = "EchoNet-LVH"
MEASUREMENTS = "MeasurementsList.csv"
COLUMNS = ("HashedFileName", "Calc", "CalcValue", "Frame", "X1", "X2", "Y1", "Y2", "Frames",
           "FPS", "Width", "Height", "split")
CALCS = ("IVSd", "LVIDd", "LVIDs", "LVPWd")
SPLITS = {"train": "train", "val": "validation", "test": "test"}
_PER_VIDEO = ("split", "Frames", "FPS", "Width", "Height")   # must agree across a video's rows
_FIX_ROWS = f"Restore the release's {MEASUREMENTS} rows of this video."


class Measurement(NamedTuple):
  calc: str
  value_cm: float
  frame: int
  points: tuple[tuple[float, float], tuple[float, float]]   # ((X1, Y1), (X2, Y2)), pixels


class Item(NamedTuple):
  name: str                  # HashedFileName
  path: str                  # BatchN/<name>.avi
  split: str
  fps: float
  num_frames: int
  shape: tuple[int, int]     # (Height, Width): the points' pixel grid
  measurements: list[Measurement]


def index_videos(root: str, stats: collections.Counter) -> dict[str, str]:
  """HashedFileName -> path of its AVI under Batch*/ (the first batch in name order wins)."""
  out: dict[str, str] = {}
  for path in sorted(glob.glob(os.path.join(root, "Batch*", "*.avi"))):
    name = os.path.basename(path)[:-4]
    if name in out:
      dense_skips.note(stats, "video_in_two_batches")
    out.setdefault(name, path)
  return out


def _measurement(row: dict[str, str], stats: collections.Counter) -> Measurement | None:
  if row["Calc"] not in CALCS:
    stats[f"measurement:unknown_calc:{row['Calc'] or 'empty'}"] += 1
    return None
  try:
    value, frame, x1, x2, y1, y2 = (float(row[k]) for k in
                                    ("CalcValue", "Frame", "X1", "X2", "Y1", "Y2"))
  except ValueError:
    stats["measurement:bad_value"] += 1
    return None
  if not (frame.is_integer() and all(map(math.isfinite, (value, x1, x2, y1, y2)))):
    stats["measurement:bad_value"] += 1
    return None
  return Measurement(row["Calc"], value, int(frame), ((x1, y1), (x2, y2)))


def _item(group: tuple[str, list[dict[str, str]]], root: str, videos: dict[str, str],
          stats: collections.Counter) -> Item:
  """One video's rows -> Item; raises dense_skips.Skip for a video that cannot be one."""
  name, rows = group
  where = f"{os.path.join(root, MEASUREMENTS)} ({name})"
  differ = [k for k in _PER_VIDEO if len({r[k] for r in rows}) > 1]
  if differ:
    raise dense_skips.Skip("inconsistent_video_rows", where, " / ".join(differ),
                           "the video's rows disagree", _FIX_ROWS)
  first = rows[0]
  split = SPLITS.get(first["split"].lower())
  if split is None:
    raise dense_skips.Skip("unknown_split", where, "split", f"{first['split']!r}",
                           f"split is one of {sorted(SPLITS)}. " + _FIX_ROWS)
  try:
    fps, num_frames = float(first["FPS"]), int(first["Frames"])
    shape = (int(first["Height"]), int(first["Width"]))
  except ValueError:
    raise dense_skips.Skip("csv_bad_value", where, "FPS / Frames / Width / Height",
                           "a value does not parse", _FIX_ROWS) from None
  if name not in videos:
    raise dense_skips.Skip("missing_video", where, "HashedFileName",
                           f"no {name}.avi in any Batch*/ folder",
                           "Copy the Batch folders again from the release.")
  measurements = [m for m in (_measurement(r, stats) for r in rows) if m is not None]
  return Item(name, videos[name], split, fps, num_frames, shape, measurements)


def plan(root: str, stats: collections.Counter) -> list[Item]:
  """One Item per HashedFileName, in first-appearance order in MeasurementsList.csv."""
  groups: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
  for row in dense_layout.csv_rows(os.path.join(root, MEASUREMENTS), COLUMNS, DATASET):
    groups[row["HashedFileName"]].append(row)
  videos = index_videos(root, stats)
  make = functools.partial(_item, root=root, videos=videos, stats=stats)
  return list(dense_skips.read_each(groups.items(), make, stats, lambda g: g[0]))


def _placed(m: Measurement, num_frames: int, shape: tuple[int, int],
            stats: collections.Counter) -> bool:
  """Whether a measurement lies on the video: its frame exists, both points on the frame
  (pixel centres run 0..W-1, so a point may reach half a pixel beyond them)."""
  if not 0 <= m.frame < num_frames:
    stats["measurement:frame_not_in_video"] += 1
    return False
  h, w = shape
  if not all(-0.5 <= x <= w - 0.5 and -0.5 <= y <= h - 0.5 for x, y in m.points):
    stats["measurement:point_outside_frame"] += 1
    return False
  return True


def read_item(item: Item, stats: collections.Counter) -> tuple[str, dict[str, Any]]:
  """(key, record) of one video; see `generate_records`."""
  frames = avi.read_gray(item.path)
  if frames.shape[1:] != item.shape:
    raise dense_skips.Skip("video_size_differs_from_csv", item.path, "Height / Width",
                           f"frames are {frames.shape[1:]}, {MEASUREMENTS} says {item.shape}",
                           "The points are in the CSV's pixel grid; restore the release's "
                           f"video, or fix the row's shifted columns ({dense_layout.DOC}).")
  if len(frames) != item.num_frames:
    dense_skips.note(stats, "frame_count_differs_from_csv")
  kept = [m for m in item.measurements if _placed(m, len(frames), frames.shape[1:], stats)]
  if not kept:
    raise dense_skips.Skip("no_usable_measurement", item.path, "Calc / Frame / X1 / Y1 / X2 / Y2",
                           "no measurement lies on this video (counted under measurement:)",
                           _FIX_ROWS)
  return item.name, dict(
      frames=frames, fps=item.fps, split=item.split,
      calc=tuple(m.calc for m in kept),
      value_cm=np.array([m.value_cm for m in kept], np.float32),
      frame=np.array([m.frame for m in kept], np.int32),
      points=np.array([m.points for m in kept], np.float32),
      view="plax", source="echonet_lvh")


def generate_records(manual_dir: str | os.PathLike, stats: collections.Counter | None = None
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(HashedFileName, record) per usable video, in MeasurementsList.csv order.

  record: frames uint8 [T, H, W] (grayscale); fps; split ("train" / "validation" / "test");
  per measurement m (aligned arrays): calc[m] (IVSd / LVIDd / LVIDs / LVPWd), value_cm float32
  [M], frame int32 [M] (0-based into frames), points float32 [M, 2, 2] = ((x1, y1), (x2, y2))
  in pixels of frames; view "plax"; source "echonet_lvh". Skips are counted in `stats`.
  """
  stats = collections.Counter() if stats is None else stats
  root = dense_layout.find_root(manual_dir, MEASUREMENTS, DATASET, DATASET)
  items = plan(root, stats)
  read = functools.partial(read_item, stats=stats)
  yield from dense_skips.read_each(items, read, stats, lambda i: i.path)
