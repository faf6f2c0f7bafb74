"""Real ultrasound DICOMs for tests, written with pydicom: echo-like frames, PHI in the headers.

`write_dicom` writes one ultrasound DICOM in any colour model / transfer syntax we read;
`cine_frames` / `doppler_still` draw what a scanner shows (a fan with burned-in text and an
ECG trace, a spectral strip); tests/mimic_tree.py lays a MIMIC-IV-ECHO v1.0 tree out of them.
"""

from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, generate_uid

# Distinctive strings: tests search every written artifact for them.
PHI = dict(
    patient_name="Zephyrinequux^Obadiahxyz",
    patient_id="PHIMRN8675309",
    birth_date="19230405",
    institution="Quuxington Memorial Infirmary",
    physician="Drphiwaldo^Hortensia",
    accession="ACCPHI424242",
)
BURNED_IN_TEXT = "ZEPHYRINE"  # the patient's name, as scanners burn it in
_US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"        # Ultrasound Image Storage
_US_MF_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"     # Ultrasound Multi-frame Image Storage


# ----------------------------------------------------------------------------- images


def sector_mask(h: int, w: int, apex_y: int | None = None, radius: float | None = None,
                half_angle_deg: float = 38.0) -> np.ndarray:
  """The fan of a phased-array probe: bool [H, W], apex at the top centre."""
  apex_y = int(0.08 * h) if apex_y is None else apex_y
  radius = 0.7 * h if radius is None else radius
  yy, xx = np.mgrid[:h, :w].astype(np.float32)
  dy, dx = yy - apex_y, xx - (w - 1) / 2
  r = np.hypot(dx, dy)
  ang = np.degrees(np.arctan2(dx, np.maximum(dy, 1e-6)))
  return (dy > 0) & (r <= radius) & (np.abs(ang) <= half_angle_deg)


def _draw_text(img: np.ndarray, text: str, xy: tuple[int, int]) -> tuple[int, int, int, int]:
  """Burns `text` into uint8 [H, W] in place; returns its box (x0, y0, x1, y1), inclusive."""
  pil = Image.fromarray(img)
  d = ImageDraw.Draw(pil)
  d.text(xy, text, fill=255)
  box = d.textbbox(xy, text)
  img[...] = np.asarray(pil)
  return (box[0], box[1], box[2] - 1, box[3] - 1)


def cine_frames(num_frames: int, h: int, w: int, seed: int, text: str = BURNED_IN_TEXT
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
  """A B-mode cine: speckle + a beating chamber inside the fan, static burned-in text and a
  sweeping ECG trace outside it. Returns (uint8 [T, H, W], fan bool [H, W], text boxes)."""
  rng = np.random.default_rng(seed)
  fan = sector_mask(h, w)
  yy, xx = np.mgrid[:h, :w]
  frames = np.zeros((num_frames, h, w), np.uint8)
  boxes: list[tuple[int, int, int, int]] = []
  for t in range(num_frames):
    r = 0.16 * h * (1.0 + 0.25 * np.sin(2 * np.pi * t / max(num_frames, 1)))
    cavity = np.hypot(yy - 0.5 * h, xx - w / 2) < r
    tissue = rng.gamma(2.0, 45.0, (h, w)) * np.where(cavity, 0.15, 1.0)
    f = np.where(fan, np.clip(tissue + 20, 0, 255), 0).astype(np.uint8)
    boxes = [_draw_text(f, text, (2, 1)), _draw_text(f, "HR 72", (w - 34, 1))]
    # ECG trace along the bottom: a moving sweep, i.e. it varies over time like the fan.
    xs = np.arange(4, min(w - 4, 4 + 2 * (t + 1) * w // max(num_frames, 1)))
    ys = (h - 6 - 3 * np.sin(xs / 3.0)).astype(int)
    f[ys, xs] = 230
    frames[t] = f
  return frames, fan, boxes


def doppler_still(h: int, w: int, seed: int, text: str = BURNED_IN_TEXT
                  ) -> tuple[np.ndarray, tuple[int, int, int, int], list[tuple[int, int, int, int]]]:
  """A continuous-wave Doppler spectral display: uint8 [H, W], the strip's box, text boxes."""
  rng = np.random.default_rng(seed)
  img = np.zeros((h, w), np.uint8)
  x0, y0, x1, y1 = w // 8, h // 3, w - w // 8, h - 8
  base = y0 + (y1 - y0) // 4
  xx = np.arange(x0, x1 + 1)
  env = base + ((y1 - base) * np.abs(np.sin((xx - x0) / (x1 - x0) * 3 * np.pi))).astype(int)
  strip = np.full((y1 - y0 + 1, x1 - x0 + 1), 25, np.float32) + rng.normal(0, 4, (y1 - y0 + 1, x1 - x0 + 1))
  for j, e in enumerate(env):
    strip[base - y0:e - y0 + 1, j] += 120 + rng.normal(0, 25, e - base + 1)
  img[y0:y1 + 1, x0:x1 + 1] = np.clip(strip, 0, 255).astype(np.uint8)
  boxes = [_draw_text(img, text, (2, 1)), _draw_text(img, "AV Vmax", (2, 12))]
  return img, (x0, y0, x1, y1), boxes


# ----------------------------------------------------------------------------- DICOM writing


def _region(x0: int, y0: int, x1: int, y1: int, spatial_format: int, data_type: int,
            delta_x: float, delta_y: float, units_x: int = 3, units_y: int = 3) -> Dataset:
  r = Dataset()
  r.RegionSpatialFormat = spatial_format
  r.RegionDataType = data_type
  r.RegionFlags = 0
  r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
  r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
  r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units_x, units_y
  r.PhysicalDeltaX, r.PhysicalDeltaY = delta_x, delta_y
  return r


def tissue_region(x0: int, y0: int, x1: int, y1: int, cm_per_pixel: float = 0.03) -> Dataset:
  """A 2D tissue region (RegionSpatialFormat 1, data type 1), units cm."""
  return _region(x0, y0, x1, y1, 1, 1, cm_per_pixel, cm_per_pixel)


def spectral_region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
  """A CW spectral Doppler region (format 3, data type 4); x in seconds (4), y in cm/s (7)."""
  return _region(x0, y0, x1, y1, 3, 4, 0.01, 2.5, units_x=4, units_y=7)


def ecg_region(x0: int, y0: int, x1: int, y1: int) -> Dataset:
  """A waveform region holding the ECG trace (format 4, data type 9): never image data."""
  return _region(x0, y0, x1, y1, 4, 9, 0.01, 0.1, units_x=4, units_y=0)


def _rgb_to_ybr_full(rgb: np.ndarray) -> np.ndarray:
  rgb = rgb.astype(np.float32)
  y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
  cb = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
  cr = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
  return np.clip(np.rint(np.stack([y, cb, cr], -1)), 0, 255).astype(np.uint8)


def write_dicom(path: str | os.PathLike, frames: np.ndarray, *, mode: str = "ybr_jpeg",
                regions: Sequence[Dataset] = (), phi: bool = True, frame_time_ms: float = 33.3,
                model: str = "FakeVivid E95") -> str:
  """Writes an ultrasound DICOM; frames: uint8 [T, H, W] (gray) or [T, H, W, 3] (RGB).

  mode (colour model / transfer syntax):
    "ybr_jpeg"    YBR_FULL_422, JPEG baseline (1.2.840.10008.1.2.4.50), as in MIMIC-IV-ECHO
    "rgb"         RGB, explicit VR little endian, native
    "ybr_full"    YBR_FULL, native (colour planes stored as Y, Cb, Cr)
    "palette"     PALETTE COLOR, 8-bit indices with 16-bit LUTs
    "mono"        MONOCHROME2, 8 bit, explicit VR little endian
    "mono1_j2k"   MONOCHROME1 (inverted), JPEG 2000 lossless (1.2.840.10008.1.2.4.90)
    "rgb_j2k"     RGB, JPEG 2000 lossless
    "big_endian"  MONOCHROME2, 12 bits stored in 16, explicit VR big endian
    "implicit"    MONOCHROME2, implicit VR little endian, written without the DICM preamble
    "rle"         MONOCHROME2, RLE lossless
  Returns the path written.
  """
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.ndim == 2:
    frames = frames[None]
  rgb = frames if frames.ndim == 4 else np.repeat(frames[..., None], 3, -1)
  gray = frames if frames.ndim == 3 else np.rint(
      frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
  t, h, w = gray.shape

  ds = Dataset()
  ds.file_meta = FileMetaDataset()
  ds.file_meta.MediaStorageSOPClassUID = UID(_US_MF_STORAGE if t > 1 else _US_STORAGE)
  ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
  ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
  ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
  ds.Modality = "US"
  ds.Manufacturer = "FakeCo"
  ds.ManufacturerModelName = model
  if phi:
    ds.PatientName = PHI["patient_name"]
    ds.PatientID = PHI["patient_id"]
    ds.PatientBirthDate = PHI["birth_date"]
    ds.InstitutionName = PHI["institution"]
    ds.ReferringPhysicianName = PHI["physician"]
    ds.AccessionNumber = PHI["accession"]
    ds.StudyDate = ds.ContentDate = "21800723"
    ds.StudyTime = "101500"
  ds.Rows, ds.Columns = h, w
  if t > 1:
    ds.NumberOfFrames = t
    ds.FrameTime = frame_time_ms
    ds.CineRate = int(round(1000.0 / frame_time_ms))
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
  if regions:
    ds.SequenceOfUltrasoundRegions = DicomSequence(list(regions))
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
  ts = pydicom.uid.ExplicitVRLittleEndian
  write_kwargs: dict[str, Any] = dict(enforce_file_format=True)

  if mode == "ybr_jpeg":
    ts = pydicom.uid.JPEGBaseline8Bit
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    encoded = []
    for f in rgb:
      buf = io.BytesIO()
      # subsampling=1 is 4:2:2 (horizontal chroma halving), what YBR_FULL_422 declares.
      Image.fromarray(f, "RGB").save(buf, format="JPEG", quality=92, subsampling=1)
      encoded.append(buf.getvalue())
    ds.PixelData = pydicom.encaps.encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
  elif mode in ("rgb", "ybr_full", "rgb_j2k"):
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PhotometricInterpretation = "YBR_FULL" if mode == "ybr_full" else "RGB"
    data = _rgb_to_ybr_full(rgb) if mode == "ybr_full" else rgb
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    if mode == "rgb_j2k":
      ds.compress(pydicom.uid.JPEG2000Lossless, np.ascontiguousarray(rgb if t > 1 else rgb[0]),
                  generate_instance_uid=False)
      ts = pydicom.uid.JPEG2000Lossless
  elif mode == "palette":
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    # A warm ("hot") LUT: index i -> (r, g, b); luminance is monotonic in i, as on real scanners.
    i = np.arange(256, dtype=np.float64)
    lut = np.stack([np.clip(i * 1.5, 0, 255), np.clip(i * 1.0, 0, 255), np.clip(i * 0.6, 0, 255)])
    lut16 = np.rint(lut * 257).astype("<u2")
    for c, name in enumerate(("Red", "Green", "Blue")):
      setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
      setattr(ds, f"{name}PaletteColorLookupTableData", lut16[c].tobytes())
    ds.PixelData = np.ascontiguousarray(gray).tobytes()
  elif mode in ("mono", "implicit", "rle", "mono1_j2k"):
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(gray).tobytes()
    if mode == "implicit":
      ts = pydicom.uid.ImplicitVRLittleEndian
    elif mode == "rle":
      ds.compress(pydicom.uid.RLELossless, np.ascontiguousarray(gray if t > 1 else gray[0]),
                  generate_instance_uid=False)
      ts = pydicom.uid.RLELossless
    elif mode == "mono1_j2k":
      ds.PhotometricInterpretation = "MONOCHROME1"
      inv = np.ascontiguousarray(255 - gray)
      ds.PixelData = inv.tobytes()
      ds.compress(pydicom.uid.JPEG2000Lossless, inv if t > 1 else inv[0], generate_instance_uid=False)
      ts = pydicom.uid.JPEG2000Lossless
  elif mode == "big_endian":
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    vals = np.rint(gray.astype(np.float64) * 4095 / 255).astype(">u2")
    ds.PixelData = vals.tobytes()
    ds["PixelData"].VR = "OW"
    ts = pydicom.uid.ExplicitVRBigEndian
  else:
    raise ValueError(f"unknown mode {mode!r}")

  ds.file_meta.TransferSyntaxUID = ts
  if mode == "implicit":
    # Some old archives hold bare datasets: no preamble, no file meta. The reader must cope.
    del ds.file_meta
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
  else:
    pydicom.dcmwrite(path, ds, **write_kwargs)
  return path
