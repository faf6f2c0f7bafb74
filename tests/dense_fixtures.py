"""Files as the dense echo datasets ship them: NIfTI written with nibabel, AVI with OpenCV.

`write_nifti` stores a (rows, columns) array the way CAMUS's files hold it (voxel axes x =
columns, y = rows; an ITK-style affine with the pixel spacing); `write_avi` writes gray frames
as the 3-channel AVI EchoNet ships; `ellipse` draws known geometry; `truncate` cuts a file.
tests/camus_tree.py, echonet_dynamic_tree.py and echonet_lvh_tree.py lay trees out of them.
"""

from __future__ import annotations

import csv
import os

import cv2
import nibabel
import numpy as np

# Lossless, so a test can compare pixels exactly; MJPG (what EchoNet ships) is lossy.
LOSSLESS = "FFV1"


def write_nifti(path: str, array: np.ndarray, spacing_mm: tuple[float, float]) -> None:
  """array [H, W] or [T, H, W] in (rows, columns); spacing_mm (row, col). On disk the voxel
  array is (x, y[, t]) = (columns, rows[, frames]), as ITK writes CAMUS's files: the affine
  flips x and y (LPS -> RAS) and carries the spacing, the header says mm."""
  row_mm, col_mm = spacing_mm
  affine = np.diag([-col_mm, -row_mm, 1.0, 1.0])
  img = nibabel.Nifti1Image(np.ascontiguousarray(array.T), affine)
  img.header.set_xyzt_units("mm", "sec")
  nibabel.save(img, path)


def write_avi(path: str, frames: np.ndarray, fps: float, codec: str = LOSSLESS) -> None:
  """frames uint8 [T, H, W] -> a 3-channel AVI (gray in B, G and R)."""
  t, h, w = frames.shape
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), float(fps), (w, h), True)
  assert writer.isOpened(), f"OpenCV cannot write {codec} here"
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
  writer.release()
  assert os.path.getsize(path) > 0


def ellipse(shape: tuple[int, int], center: tuple[float, float],
            radii: tuple[float, float]) -> np.ndarray:
  """bool [H, W]: pixel centres inside the ellipse ((r - r0) / a)^2 + ((c - c0) / b)^2 <= 1."""
  rr, cc = np.mgrid[:shape[0], :shape[1]]
  return ((rr - center[0]) / radii[0]) ** 2 + ((cc - center[1]) / radii[1]) ** 2 <= 1.0


def truncate(path: str, keep: float) -> None:
  """Cuts the file to `keep` of its bytes, as an interrupted copy leaves it."""
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * keep)])


def write_csv(path: str, header: list[str], rows: list) -> None:
  """A release's CSV: header, then rows, as Python's csv module writes them."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
