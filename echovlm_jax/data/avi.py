"""Reads an AVI as grayscale frames with OpenCV, the library EchoNet's own loader uses.

`read_gray(path)` -> uint8 [T, H, W]. A truncated file is refused, never read short: OpenCV
decodes what is there and stops, and a cut MJPG file can even decode its last, half-written
frame without an error (so the frame count alone does not show it). The RIFF chunk size in the
header is therefore checked against the file's size first, then the decoded frame count
against the container's.
"""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from echovlm_jax.data import dense_skips

_FIX = "Copy the file again from the release (a download or unzip was cut short)."


def _check_riff(path: str) -> None:
  with open(path, "rb") as f:
    head = f.read(12)
  if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
    raise dense_skips.Skip("avi_unreadable", path, "header", "not a RIFF AVI file", _FIX)
  # An OpenDML file (> 1 GB) goes on in further RIFF chunks, so the first one's size is a
  # lower bound on the file's, not its exact size.
  declared = struct.unpack("<I", head[4:8])[0] + 8
  size = os.path.getsize(path)
  if size < declared:
    raise dense_skips.Skip("avi_truncated", path, "RIFF size",
                           f"the header declares {declared} bytes, the file has {size}", _FIX)


def read_gray(path: str) -> np.ndarray:
  """All frames of the AVI at `path`, grayscale: uint8 [T, H, W]. Raises dense_skips.Skip."""
  _check_riff(path)
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise dense_skips.Skip("avi_unreadable", path, "video stream", "OpenCV cannot open it", _FIX)
    expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      # EchoNet's videos are gray stored as BGR (equal channels); a 1-channel decode is kept.
      frames.append(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
  finally:
    capture.release()
  if not frames:
    raise dense_skips.Skip("avi_unreadable", path, "frames", "no frame decodes", _FIX)
  if len(frames) < expected:
    raise dense_skips.Skip("avi_truncated", path, "frames",
                           f"decoded {len(frames)} of the {expected} frames the container lists",
                           _FIX)
  return np.stack(frames).astype(np.uint8, copy=False)
