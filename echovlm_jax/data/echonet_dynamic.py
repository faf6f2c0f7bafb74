"""Reads EchoNet-Dynamic: one record per A4C video with its ED and ES LV masks.

Layout (`manual_dir` holds these, or its EchoNet-Dynamic/ does, as the zip unpacks):
  FileList.csv        FileName, EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split
  VolumeTracings.csv  FileName, X1, Y1, X2, Y2, Frame
  Videos/<FileName>.avi

Masks follow the dataset's reference loader, echonet/dynamic `echonet/datasets/echo.py`, class
`Echo` (`__init__` reads VolumeTracings.csv; `__getitem__` builds the "LargeTrace" /
"SmallTrace" / "LargeIndex" / "SmallIndex" targets):
- a video's traced frames are kept in the order they first appear in VolumeTracings.csv;
- the first row of a frame's tracing is the long axis, not part of the outline;
- the outline runs through (X1, Y1) of the other rows, then their (X2, Y2) in reverse order,
  rounded with np.rint and filled with skimage.draw.polygon, clipped to the frame;
- the frame listed last is the large (diastolic) one, the first the small (systolic) one,
  whatever their frame numbers ("Traces are sorted by cross-sectional area"): ED and ES here;
- videos with fewer than two traced frames are dropped.
Frame numbers index the decoded video from 0, as `__getitem__` indexes it. FileList.csv names
a video without ".avi", VolumeTracings.csv with it: both are matched on the bare name. Split
TRAIN / VAL / TEST -> train / validation / test, in any case (the reference upper-cases it,
but discards the result, so it only matches upper case). Unusable videos are skipped and
counted (dense_skips.py).
"""

from __future__ import annotations

import collections
import functools
import math
import os
from typing import Any, Iterator, NamedTuple

import numpy as np
import skimage.draw

from echovlm_jax.data import avi
from echovlm_jax.data import dense_layout
from echovlm_jax.data import dense_skips

DATASET = "EchoNet-Dynamic"
FILE_LIST, TRACINGS, VIDEOS = "FileList.csv", "VolumeTracings.csv", "Videos"
FILE_LIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                     "NumberOfFrames", "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = {"TRAIN": "train", "VAL": "validation", "TEST": "test"}
_FIX_ROW = f"Restore the release's row of {FILE_LIST}."
_FIX_TRACE = f"Restore the release's {TRACINGS} rows of this video."


class Item(NamedTuple):
  name: str                    # FileName without ".avi"
  path: str                    # Videos/<name>.avi
  ef: float
  esv: float
  edv: float
  fps: float
  shape: tuple[int, int]       # (FrameHeight, FrameWidth): the tracings' pixel grid
  num_frames: int
  split: str
  es: tuple[int, np.ndarray]   # (frame, tracing float [N, 4]): the first frame listed
  ed: tuple[int, np.ndarray]   # the last frame listed


def bare_name(file_name: str) -> str:
  return file_name[:-4] if file_name.lower().endswith(".avi") else file_name


def read_tracings(path: str, stats: collections.Counter
                  ) -> tuple[dict[str, dict[int, list]], set[str]]:
  """({video: {frame: [(x1, y1, x2, y2), ...]}}, frames in first-appearance order; the set of
  videos with a row that does not parse: their outline would silently lose a point)."""
  traces: dict[str, dict[int, list]] = collections.defaultdict(dict)
  bad = set()
  for row in dense_layout.csv_rows(path, TRACING_COLUMNS, DATASET):
    name = bare_name(row["FileName"])
    try:
      point = tuple(float(row[k]) for k in ("X1", "Y1", "X2", "Y2"))
      frame = float(row["Frame"])
      if not (frame.is_integer() and all(map(math.isfinite, point))):
        raise ValueError(row)
    except ValueError:
      bad.add(name)
      stats["rows:bad_tracing_row"] += 1
      continue
    traces[name].setdefault(int(frame), []).append(point)
  return traces, bad


def lv_mask(trace: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """echo.py's LargeTrace / SmallTrace: uint8 [H, W], 1 inside the LV. trace float [N, 4]
  rows (X1, Y1, X2, Y2), row 0 the long axis (left out)."""
  x1, y1, x2, y2 = trace[:, 0], trace[:, 1], trace[:, 2], trace[:, 3]
  x = np.concatenate((x1[1:], np.flip(x2[1:])))
  y = np.concatenate((y1[1:], np.flip(y2[1:])))
  r, c = skimage.draw.polygon(np.rint(y).astype(int), np.rint(x).astype(int), shape)
  mask = np.zeros(shape, np.uint8)
  mask[r, c] = 1
  return mask


def _item(row: dict[str, str], root: str, traces: dict, bad: set[str], seen: set[str]) -> Item:
  """One FileList.csv row -> Item; raises dense_skips.Skip for a row that cannot be one."""
  where = f"{os.path.join(root, FILE_LIST)} ({row['FileName']})"
  name = bare_name(row["FileName"])
  if name in seen:
    raise dense_skips.Skip("repeated_filename", where, "FileName", "listed again", _FIX_ROW)
  seen.add(name)
  split = SPLITS.get(row["Split"].upper())
  if split is None:
    raise dense_skips.Skip("unknown_split", where, "Split", f"{row['Split']!r}",
                           f"Split is one of {sorted(SPLITS)}. " + _FIX_ROW)
  try:
    ef, esv, edv, fps = (float(row[k]) for k in ("EF", "ESV", "EDV", "FPS"))
    shape = (int(row["FrameHeight"]), int(row["FrameWidth"]))
    num_frames = int(row["NumberOfFrames"])
    if not all(map(math.isfinite, (ef, esv, edv, fps))):
      raise ValueError(row)
  except ValueError:
    raise dense_skips.Skip("filelist_bad_value", where, "EF / ESV / EDV / FPS / FrameHeight / "
                           "FrameWidth / NumberOfFrames", "a value does not parse",
                           _FIX_ROW) from None
  where = f"{os.path.join(root, TRACINGS)} ({name}.avi)"
  if name in bad:
    raise dense_skips.Skip("tracing_bad_row", where, "X1 / Y1 / X2 / Y2 / Frame",
                           "a row does not parse", _FIX_TRACE)
  frames = list(traces.get(name, {}).items())
  if len(frames) < 2:
    raise dense_skips.Skip("fewer_than_two_traced_frames", where, "Frame",
                           f"{len(frames)} traced frame(s)",
                           "The reference loader drops such videos too; nothing to fix.")
  es, ed = ((f, np.asarray(t, np.float64)) for f, t in (frames[0], frames[-1]))
  return Item(name, os.path.join(root, VIDEOS, name + ".avi"), ef, esv, edv, fps, shape,
              num_frames, split, es, ed)


def plan(root: str, stats: collections.Counter) -> list[Item]:
  """The FileList.csv rows that have two traced frames, in FileList order."""
  rows = dense_layout.csv_rows(os.path.join(root, FILE_LIST), FILE_LIST_COLUMNS, DATASET)
  traces, bad = read_tracings(os.path.join(root, TRACINGS), stats)
  seen: set[str] = set()
  make = functools.partial(_item, root=root, traces=traces, bad=bad, seen=seen)
  items = list(dense_skips.read_each(rows, make, stats, lambda r: r.get("FileName", "?")))
  more = sum(len(traces[i.name]) > 2 for i in items)   # the first and last are used, as in echo.py
  dense_skips.note(stats, "more_than_two_traced_frames", more)
  dense_skips.note(stats, "tracings_of_video_not_in_filelist", len(set(traces) - seen))
  return items


def _mask(item: Item, which: str, num_frames: int, stats: collections.Counter) -> np.ndarray:
  frame, trace = item.ed if which == "ED" else item.es
  tracings = os.path.join(os.path.dirname(os.path.dirname(item.path)), TRACINGS)
  where = f"{tracings} ({item.name}.avi, frame {frame})"
  if not 0 <= frame < num_frames:
    raise dense_skips.Skip("traced_frame_not_in_video", where, "Frame",
                           f"the video has frames 0..{num_frames - 1}",
                           "Restore the release's video (it may be cut short) or tracing.")
  if len(trace) < 3:
    raise dense_skips.Skip("tracing_too_few_rows", where, "X1 / Y1 / X2 / Y2",
                           f"{len(trace)} rows: a long axis and under two chords", _FIX_TRACE)
  h, w = item.shape
  xs, ys = trace[1:, 0::2], trace[1:, 1::2]
  if np.rint(xs).min() < 0 or np.rint(xs).max() > w - 1 or np.rint(ys).min() < 0 \
      or np.rint(ys).max() > h - 1:
    dense_skips.note(stats, "tracing_clipped_to_frame")    # as the reference clips it
  mask = lv_mask(trace, item.shape)
  if not mask.any():
    raise dense_skips.Skip("empty_mask", where, "X1 / Y1 / X2 / Y2",
                           "the outline covers no pixel of the frame", _FIX_TRACE)
  return mask


def read_item(item: Item, stats: collections.Counter) -> tuple[str, dict[str, Any]]:
  """(key, record) of one video; see `generate_records`."""
  if not os.path.isfile(item.path):
    raise dense_skips.Skip("missing_video", item.path, "file", f"not found, {FILE_LIST} lists it",
                           f"Copy {VIDEOS}/ again from the release.")
  frames = avi.read_gray(item.path)
  if frames.shape[1:] != item.shape:
    raise dense_skips.Skip("video_size_differs_from_filelist", item.path,
                           "FrameHeight / FrameWidth",
                           f"frames are {frames.shape[1:]}, {FILE_LIST} says {item.shape}",
                           "The tracings are drawn in FileList's pixel grid; restore the "
                           "release's video.")
  if len(frames) != item.num_frames:
    dense_skips.note(stats, "frame_count_differs_from_filelist")
  ed_mask, es_mask = (_mask(item, w, len(frames), stats) for w in ("ED", "ES"))
  if ed_mask.sum() < es_mask.sum():
    # The listing order decides, as in echo.py; a report should show where it disagrees.
    dense_skips.note(stats, "ed_trace_smaller_than_es_trace")
  return item.name, dict(
      frames=frames, ef=item.ef, esv=item.esv, edv=item.edv, fps=item.fps, split=item.split,
      ed_frame=item.ed[0], es_frame=item.es[0], ed_mask=ed_mask, es_mask=es_mask, view="a4c",
      source="echonet_dynamic")


def generate_records(manual_dir: str | os.PathLike, stats: collections.Counter | None = None
                     ) -> Iterator[tuple[str, dict[str, Any]]]:
  """(FileName without ".avi", record) per usable video, in FileList.csv order.

  record: frames uint8 [T, H, W] (grayscale); ef (%), esv, edv (mL); fps; split ("train" /
  "validation" / "test"); ed_frame / es_frame (0-based indices into frames) and ed_mask /
  es_mask uint8 [H, W] (1 = LV cavity, CAMUS's label); view "a4c"; source "echonet_dynamic".
  Skipped videos are counted in `stats` under "skip:<reason>", oddities kept under "note:".
  """
  stats = collections.Counter() if stats is None else stats
  root = dense_layout.find_root(manual_dir, FILE_LIST, DATASET, DATASET)
  items = plan(root, stats)
  read = functools.partial(read_item, stats=stats)
  yield from dense_skips.read_each(items, read, stats, lambda i: i.path)
