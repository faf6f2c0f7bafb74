"""An EchoNet-LVH release in miniature: MeasurementsList.csv and Batch1..4/*.avi.

The CSV has the release's columns in its order (X1, X2, Y1, Y2) after an unnamed index column.
Frames are (HEIGHT, WIDTH) = (36, 48) and some points have x beyond HEIGHT, so swapping x and
y shows; each landmark is also burned into its frame as a bright dot (DOT) at its rounded
pixel, so a test can find the points in the image. `write_tree` returns what each record must
hold; SKIPS / DROPS / NOTES what the bad inputs must count.
"""

from __future__ import annotations

import collections
import csv
import os

import numpy as np

from tests import dense_fixtures

HEIGHT, WIDTH, NUM_FRAMES, FPS = 36, 48, 10, 30.0
DOT = 250
HEADER = ["", "HashedFileName", "Calc", "CalcValue", "Frame", "X1", "X2", "Y1", "Y2", "Frames",
          "FPS", "Width", "Height", "split"]


def _calipers(dx: float) -> list[tuple]:
  """(Calc, cm, frame, x1, y1, x2, y2): a PLAX's four calipers, shifted right by dx."""
  return [("IVSd", 1.12, 2, 20.5 + dx, 8.25, 21.0 + dx, 12.75),
          ("LVIDd", 4.87, 2, 21.0 + dx, 12.75, 22.5 + dx, 27.5),
          ("LVPWd", 0.93, 2, 22.5 + dx, 27.5, 23.0 + dx, 31.0),
          ("LVIDs", 3.21, 7, 21.25 + dx, 14.0, 22.0 + dx, 25.5)]


# name: (batch, split as written, rows, how many of the rows are kept)
VIDEOS = {
    "0X1A": ("Batch1", "train", _calipers(0.0), 4),
    "0X2B": ("Batch2", "val", _calipers(9.0) + [("LVOTd", 2.0, 2, 10.0, 5.0, 12.0, 9.0)], 4),
    "0X3C": ("Batch4", "test", _calipers(21.0) + [("IVSd", 1.3, 9, 47.5, 0.0, 40.0, 35.5)], 5),
    "0X4D": ("Batch3", "train",
             _calipers(5.0)[:3] + [("LVIDs", 3.0, NUM_FRAMES, 20, 14, 21, 25)], 3),  # no frame 10
    "0XBK": ("Batch2", "test", _calipers(2.0) + [("LVIDd", 5.0, 2, WIDTH + 3.0, 12, 22, 27),
                                                 ("LVPWd", "", 2, 22.0, 27.0, 23.0, 31.0)], 4),
}
SPLITS = {"train": "train", "val": "validation", "test": "test"}
SKIPS = collections.Counter({
    "skip:no_usable_measurement": 1, "skip:video_size_differs_from_csv": 1,
    "skip:missing_video": 1, "skip:avi_truncated": 1, "skip:unknown_split": 1,
    "skip:inconsistent_video_rows": 1})
DROPS = collections.Counter({
    "measurement:unknown_calc:LVOTd": 1, "measurement:frame_not_in_video": 1 + 4,
    "measurement:point_outside_frame": 1, "measurement:bad_value": 1})
NOTES = collections.Counter({"note:video_in_two_batches": 1})


def video(seed: int, rows: list[tuple]) -> np.ndarray:
  """uint8 [NUM_FRAMES, HEIGHT, WIDTH]: speckle below DOT, each landmark a DOT pixel."""
  rng = np.random.default_rng(seed)
  frames = rng.integers(30, 200, (NUM_FRAMES, HEIGHT, WIDTH)).astype(np.uint8)
  for calc, _, frame, x1, y1, x2, y2 in rows:
    for x, y in ((x1, y1), (x2, y2)):
      if 0 <= frame < NUM_FRAMES and 0 <= x < WIDTH - 0.5 and 0 <= y < HEIGHT - 0.5:
        frames[int(frame), int(np.rint(y)), int(np.rint(x))] = DOT
  return frames


def write_tree(root: str) -> dict[str, dict]:
  """Writes root/{MeasurementsList.csv, Batch1..4/}; returns {name: expected}."""
  for b in range(1, 5):
    os.makedirs(os.path.join(root, f"Batch{b}"))
  table, expected = [], {}

  def add(name, split, rows, batch=None, seed=0, size=(NUM_FRAMES, FPS, WIDTH, HEIGHT)):
    for calc, value, frame, x1, y1, x2, y2 in rows:
      table.append([name, calc, value, frame, x1, x2, y1, y2, *size, split])   # X1, X2, Y1, Y2
    if batch:
      frames = video(seed, rows)
      dense_fixtures.write_avi(os.path.join(root, batch, name + ".avi"), frames, FPS)
      return frames

  for i, (name, (batch, split, rows, kept)) in enumerate(VIDEOS.items()):
    frames = add(name, split, rows, batch, seed=i)
    good = [r for r in rows if r[0] in ("IVSd", "LVIDd", "LVIDs", "LVPWd") and r[1] != ""
            and 0 <= r[2] < NUM_FRAMES and r[3] <= WIDTH - 0.5]
    assert len(good) == kept
    expected[name] = dict(frames=frames, split=SPLITS[split], rows=good)
  # A second copy of 0X1A in a later batch, other pixels: the first batch's is read.
  dense_fixtures.write_avi(os.path.join(root, "Batch3", "0X1A.avi"), video(99, []), FPS)
  rows = _calipers(0.0)
  add("0X5E", "train", [r[:2] + (40,) + r[3:] for r in rows], "Batch1", seed=5)  # frames beyond
  # Shifted columns, as the release's faulty rows: Width holds the FPS, FPS the frame count.
  add("0X6F", "train", rows, "Batch2", seed=6, size=(NUM_FRAMES, NUM_FRAMES, int(FPS), 17))
  add("0X7G", "train", rows)                                                  # no video
  add("0X8H", "test", rows, "Batch4", seed=8)
  dense_fixtures.truncate(os.path.join(root, "Batch4", "0X8H.avi"), 0.5)
  add("0X9I", "holdout", rows, "Batch1", seed=9)
  add("0XAJ", "train", rows[:2], "Batch1", seed=10)
  add("0XAJ", "test", rows[2:])                                               # split disagrees
  with open(os.path.join(root, "MeasurementsList.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(HEADER)
    w.writerows([i] + row for i, row in enumerate(table))
  return expected
