"""An EchoNet-Dynamic release in miniature: FileList.csv, VolumeTracings.csv, Videos/*.avi.

Frames are (HEIGHT, WIDTH) = (32, 40), not square, so a swapped axis shows; frame t carries
the marker `frame_marker(t)` at pixel (0, 0), so the frame order shows. Each traced frame is an
ellipse in EchoNet's form: a first row for the long axis (its ends well beyond the ellipse, so a
mask that kept it would grow spikes), then chords whose (X1, Y1) run down the left side and
(X2, Y2) the right. The listing order of the traced frames, not their numbers, says which is
ED: the cases below list them in every order. `write_tree` returns what each record must hold.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from tests import dense_fixtures

HEIGHT, WIDTH, NUM_FRAMES, FPS = 32, 40, 24, 50.0
CHORDS = 14
SMALL = ((13.3, 19.6), (8.2, 5.1))    # ((row, col) centre, (long, short) semi-axes), ES-like
LARGE = ((14.1, 20.3), (10.4, 7.3))   # ED-like
MID = ((13.7, 19.9), (9.3, 6.2))

# name: (split as written, EF, ESV, EDV, [(frame, ellipse), ...] in listing order)
GOOD = {
    "0XA0": ("TRAIN", 61.5, 20.0, 52.0, [(17, SMALL), (5, LARGE)]),   # ED number below ES
    "0XB1": ("VAL", 44.0, 35.5, 63.4, [(8, SMALL), (20, LARGE)]),
    "0XC2": ("TEST", 55.2, 30.1, 67.2, [(3, SMALL), (10, MID), (15, LARGE)]),  # three traced
    "0XD3": ("train", 38.9, 41.0, 67.1, [(4, LARGE), (9, SMALL)]),   # listed large first
    "0XE4": ("Val", 70.1, 12.4, 41.5, [(2, SMALL), (12, LARGE)]),
}
MJPG = "0XF5"   # written with MJPG, EchoNet's codec (lossy)
GOOD[MJPG] = ("TRAIN", 58.0, 22.0, 52.4, [(6, SMALL), (14, LARGE)])
SPLITS = {"TRAIN": "train", "VAL": "validation", "TEST": "test"}

SKIPS = collections.Counter({
    "skip:fewer_than_two_traced_frames": 2, "skip:traced_frame_not_in_video": 1,
    "skip:missing_video": 1, "skip:avi_truncated": 2, "skip:avi_unreadable": 1,
    "skip:unknown_split": 1, "skip:filelist_bad_value": 1, "skip:tracing_bad_row": 1,
    "skip:video_size_differs_from_filelist": 1, "skip:tracing_too_few_rows": 1,
    "skip:repeated_filename": 1})
NOTES = collections.Counter({
    "note:more_than_two_traced_frames": 1, "note:ed_trace_smaller_than_es_trace": 1,
    "note:tracings_of_video_not_in_filelist": 1})


def frame_marker(t: int) -> int:
  return 5 + 10 * t


def tracing(ellipse: tuple) -> list[tuple[float, float, float, float]]:
  """EchoNet rows (X1, Y1, X2, Y2) of a vertical ellipse: the long axis, then chords."""
  (r0, c0), (a, b) = ellipse
  rows = [(c0, r0 - a - 4.0, c0, r0 + a + 4.0)]           # long axis, apex to base, overshooting
  for k in range(CHORDS):
    y = r0 - a + (k + 0.5) * 2 * a / CHORDS
    half = b * np.sqrt(max(0.0, 1 - ((y - r0) / a) ** 2))
    rows.append((c0 - half, y, c0 + half, y))
  return rows


def video(seed: int) -> np.ndarray:
  """uint8 [NUM_FRAMES, HEIGHT, WIDTH]: smooth speckle (MJPG keeps it), frame markers."""
  rng = np.random.default_rng(seed)
  base = np.kron(rng.integers(40, 200, (HEIGHT // 4, WIDTH // 4)), np.ones((4, 4)))
  frames = np.repeat(base[None], NUM_FRAMES, 0).astype(np.uint8)
  frames[:, 0, 0] = [frame_marker(t) for t in range(NUM_FRAMES)]
  return frames


def _row(name, split="TRAIN", ef="50.0", esv="30.0", edv="60.0", h=HEIGHT, w=WIDTH,
         n=NUM_FRAMES):
  return dict(FileName=name, EF=ef, ESV=esv, EDV=edv, FrameHeight=h, FrameWidth=w, FPS=FPS,
              NumberOfFrames=n, Split=split)


def write_tree(root: str) -> dict[str, dict]:
  """Writes root/{FileList.csv, VolumeTracings.csv, Videos/}; returns {name: expected}."""
  os.makedirs(os.path.join(root, "Videos"))
  files, traces, expected = [], [], {}

  def add_video(name, seed, codec=dense_fixtures.LOSSLESS):
    frames = video(seed)
    dense_fixtures.write_avi(os.path.join(root, "Videos", name + ".avi"), frames, FPS, codec)
    return frames

  def add_traces(name, listed):
    for frame, ellipse in listed:
      traces.extend((name + ".avi", *xy, frame) for xy in tracing(ellipse))

  for i, (name, (split, ef, esv, edv, listed)) in enumerate(GOOD.items()):
    frames = add_video(name, i, "MJPG" if name == MJPG else dense_fixtures.LOSSLESS)
    # 0XE4 is named with its ".avi" in FileList.csv too (the reference accepts both).
    files.append(_row(name + ".avi" if name == "0XE4" else name, split, ef, esv, edv))
    add_traces(name, listed)
    expected[name] = dict(frames=frames, split=SPLITS[split.upper()], ef=ef, esv=esv, edv=edv,
                          es=listed[0], ed=listed[-1])
  # Bad inputs, one reason each.
  add_video("0XG6", 10); files.append(_row("0XG6")); add_traces("0XG6", [(3, SMALL)])
  add_video("0XH7", 11); files.append(_row("0XH7"))                          # no tracing
  add_video("0XI8", 12); files.append(_row("0XI8"))
  add_traces("0XI8", [(3, SMALL), (NUM_FRAMES + 26, LARGE)])                 # frame 50 of 24
  files.append(_row("0XJ9")); add_traces("0XJ9", [(3, SMALL), (9, LARGE)])   # no video
  for name, codec, keep in (("0XK1", dense_fixtures.LOSSLESS, 0.6), ("0XL2", "MJPG", 0.97)):
    add_video(name, 13, codec)
    dense_fixtures.truncate(os.path.join(root, "Videos", name + ".avi"), keep)
    files.append(_row(name)); add_traces(name, [(3, SMALL), (9, LARGE)])
  with open(os.path.join(root, "Videos", "0XS9.avi"), "wb") as f:
    f.write(b"not a video at all" * 10)
  files.append(_row("0XS9")); add_traces("0XS9", [(3, SMALL), (9, LARGE)])
  add_video("0XM3", 14); files.append(_row("0XM3", split="EXTERNAL"))
  add_traces("0XM3", [(3, SMALL), (9, LARGE)])
  add_video("0XN4", 15); files.append(_row("0XN4", ef="n/a"))
  add_traces("0XN4", [(3, SMALL), (9, LARGE)])
  add_video("0XO5", 16); files.append(_row("0XO5")); add_traces("0XO5", [(3, SMALL), (9, LARGE)])
  traces.append(("0XO5.avi", "abc", 1.0, 2.0, 3.0, 9))                       # unparsable
  add_video("0XP6", 17); files.append(_row("0XP6", h=HEIGHT + 8))
  add_traces("0XP6", [(3, SMALL), (9, LARGE)])
  add_video("0XQ7", 18); files.append(_row("0XQ7")); add_traces("0XQ7", [(3, SMALL)])
  traces.extend([("0XQ7.avi", 20.0, 5.0, 20.0, 25.0, 9), ("0XQ7.avi", 15.0, 9.0, 25.0, 9.0, 9)])
  files.append(_row("0XA0"))                                                 # listed again
  add_traces("0XR8", [(3, SMALL), (9, LARGE)])                               # not in FileList
  dense_fixtures.write_csv(os.path.join(root, "FileList.csv"), list(_row("x")), [list(r.values()) for r in files])
  dense_fixtures.write_csv(os.path.join(root, "VolumeTracings.csv"),
             ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], traces)
  return expected

