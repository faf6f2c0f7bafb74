"""DICOM -> grayscale frames: colour models, compression, ultrasound-region masking, safe metadata.

Owns everything that touches a DICOM file: decoding (any transfer syntax pydicom + pylibjpeg
can read), conversion to uint8 grayscale, even frame sampling, masking of everything outside
the ultrasound region, aspect-preserving resize, and a PHI-free allow-list of header fields.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pydicom
import pydicom.errors
import pydicom.pixels
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from echovlm_jax.data import clip_windows
from echovlm_jax.data import fileio


class DicomError(ValueError):
  """A DICOM file is missing, corrupt, truncated or of a kind we cannot decode."""

  def __init__(self, path: str | os.PathLike, reason: str, fix: str | None = None):
    self.path = os.fspath(path)
    self.reason = reason
    msg = f"{self.path}: {reason}"
    if fix:
      msg += f" (fix: {fix})"
    super().__init__(msg)


# RegionSpatialFormat (C.8.5.5.1.1): which regions carry ultrasound image data. 4 = waveform
# (ECG / phono traces) and 5 = graphics are exactly what must not leak into training.
_IMAGE_REGION_FORMATS = {1: "2d", 2: "m_mode", 3: "spectral"}
_TISSUE_2D = 1
# How many frames the temporal-variation heuristic looks at (decoding all 90 is wasted work).
_MASK_FRAMES = 8


# ----------------------------------------------------------------------------- reading


def read_dataset(path: str | os.PathLike, *, pixels: bool = True) -> pydicom.Dataset:
  """Reads a DICOM file; raises DicomError (never another type) when it is not a usable one."""
  path = os.fspath(path)
  if not fileio.isfile(path):
    raise DicomError(path, "file does not exist", "check the path and the manual_dir layout")
  src = fileio.local_or_bytes(path)  # a gs:// file is read whole: pydicom reads it all anyway
  try:
    ds = pydicom.dcmread(src, stop_before_pixels=not pixels)
  except pydicom.errors.InvalidDicomError:
    # Files written without the 128-byte preamble are still DICOM; accept them only if a
    # forced read finds real image attributes, so a text file named .dcm is not "decoded".
    try:
      if not isinstance(src, str):
        src.seek(0)
      ds = pydicom.dcmread(src, force=True, stop_before_pixels=not pixels)
      ok = "Rows" in ds and "Columns" in ds and (not pixels or "PixelData" in ds)
    except Exception:  # noqa: BLE001 - any parse failure of a forced read means "not DICOM"
      ok = False
    if not ok:
      raise DicomError(path, "not a DICOM file (no DICM preamble and no image attributes)") from None
    if "TransferSyntaxUID" not in ds.file_meta:
      # pydicom guessed the encoding while reading; record it so pixel decoding can proceed.
      ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if ds.is_implicit_VR
                                        else pydicom.uid.ExplicitVRLittleEndian)
  except Exception as e:  # noqa: BLE001 - EOF / struct errors of truncated headers
    raise DicomError(path, f"corrupt or truncated header ({type(e).__name__}: {e})") from None
  if pixels and "PixelData" not in ds:
    raise DicomError(path, "no pixel data (not an image, e.g. a structured report)")
  if "Rows" not in ds or "Columns" not in ds:
    raise DicomError(path, "missing Rows / Columns")
  return ds


def _num_frames(ds: pydicom.Dataset) -> int:
  try:
    return max(1, int(ds.get("NumberOfFrames", 1) or 1))
  except (TypeError, ValueError):
    return 1


# Which frames of a file: shared with the other video readers (data/clip_windows.py).
sample_indices = clip_windows.sample_indices
indices_at_rate = clip_windows.indices_at_rate


def frame_time_ms(ds: pydicom.Dataset) -> float | None:
  """Milliseconds between frames: FrameTime, else 1000 / CineRate or
  RecommendedDisplayFrameRate; None when the header states none."""
  ft = _float_or_none(ds.get("FrameTime", None))
  if ft and ft > 0:
    return ft
  for key in ("CineRate", "RecommendedDisplayFrameRate"):
    rate = _float_or_none(ds.get(key, None))
    if rate and rate > 0:
      return 1000.0 / rate
  return None


_VALUE_TRANSFORMS = ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "WindowCenter",
                     "WindowWidth", "VOILUTSequence")


def _has_value_transforms(ds: pydicom.Dataset) -> bool:
  return any(k in ds for k in _VALUE_TRANSFORMS)


def _lut_range(sequence) -> tuple[float, float]:
  """Output range of a LUT sequence's first item: 0 .. 2^bits - 1, bits its descriptor's third."""
  return 0.0, float(2 ** int(sequence[0].LUTDescriptor[2]) - 1)


def _value_range(ds: pydicom.Dataset) -> tuple[float, float]:
  """(lo, hi) of a grayscale frame's values after pydicom's modality and VOI transforms: the
  VOI LUT's range, else the modality LUT's, else the stored range (signed data centred on 0;
  unsigned data of up to 8 bits as 0..255, shown as stored) through the rescale. Windowing
  keeps its input's range (DICOM PS3.3 C.11.2.1.2), so it needs no case of its own."""
  if "VOILUTSequence" in ds:
    return _lut_range(ds.VOILUTSequence)
  if "ModalityLUTSequence" in ds:
    return _lut_range(ds.ModalityLUTSequence)
  bits = int(ds.get("BitsStored", 8))
  if int(ds.get("PixelRepresentation", 0)) == 1:
    lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
  else:
    lo, hi = 0.0, (2.0 ** bits - 1 if bits > 8 else 255.0)
  if "RescaleSlope" in ds or "RescaleIntercept" in ds:
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
  return lo, hi


def _to_gray(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
  """One decoded frame (as pydicom returns it: RGB for colour data) -> uint8 [H, W]."""
  pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
  if pi == "PALETTE COLOR":
    arr = pydicom.pixels.apply_color_lut(arr, ds)
    # LUT entries are 8 or 16 bit (third value of the descriptor).
    desc = ds.get("RedPaletteColorLookupTableDescriptor", [0, 0, 8])
    bits = int(desc[2]) if len(desc) > 2 else 8
    arr = arr.astype(np.float32) / (2.0 ** bits - 1) * 255.0
  if arr.ndim == 3:  # colour: pydicom already converted YBR_* to RGB; take ITU-R BT.601 luma
    arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  elif arr.dtype != np.uint8 or pi == "MONOCHROME1" or _has_value_transforms(ds):
    # pydicom applies the rescale / modality LUT and the window / VOI LUT the file declares
    # (no-ops when it declares none, as most echo files); their output range maps to 0..255.
    a = pydicom.pixels.apply_voi_lut(pydicom.pixels.apply_modality_lut(arr, ds), ds)
    lo, hi = _value_range(ds)
    a = (np.asarray(a, np.float32) - lo) * np.float32(255.0 / (hi - lo))
    if pi == "MONOCHROME1":
      # Not pydicom's apply_presentation_lut: its INVERSE subtracts from the frame's own
      # maximum (the brightest pixel of each frame would move), MONOCHROME1 means the range's.
      a = 255.0 - a
    arr = a
  return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def decode_frames(ds: pydicom.Dataset, indices: Sequence[int], path: str | os.PathLike = "<dataset>"
                  ) -> np.ndarray:
  """Decodes only the requested frames to grayscale. Returns uint8 [len(indices), H, W]."""
  pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
  spp = int(ds.get("SamplesPerPixel", 1))
  if spp not in (1, 3):
    raise DicomError(path, f"unsupported SamplesPerPixel={spp} (expected 1 or 3)")
  if pi not in ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
                "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"):
    raise DicomError(path, f"unsupported PhotometricInterpretation {pi!r}")
  ts = ds.file_meta.get("TransferSyntaxUID", None)
  out, cache = [], {}
  for i in indices:
    i = int(i)
    if i not in cache:
      try:
        arr = pydicom.pixels.pixel_array(ds, index=i if _num_frames(ds) > 1 else None)
        if _num_frames(ds) > 1 and arr.ndim == (4 if spp == 3 else 3):
          arr = arr[0]
        cache[i] = _to_gray(arr, ds)
      except NotImplementedError as e:
        name = getattr(ts, "name", ts)
        raise DicomError(path, f"no decoder for transfer syntax {name} ({e})",
                         "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg") from None
      except Exception as e:  # noqa: BLE001 - truncated / corrupt pixel data raise many types
        raise DicomError(path, f"cannot decode frame {i}: {type(e).__name__}: {e}") from None
    out.append(cache[i])
  return np.stack(out)


# ----------------------------------------------------------------------------- masking


def ultrasound_regions(ds: pydicom.Dataset) -> list[dict[str, Any]]:
  """Image-carrying ultrasound regions (2D, M-mode, spectral) with their pixel rectangles."""
  regions = []
  for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
    fmt = int(r.get("RegionSpatialFormat", 0))
    if fmt not in _IMAGE_REGION_FORMATS:
      continue
    try:
      x0, y0 = int(r.RegionLocationMinX0), int(r.RegionLocationMinY0)
      x1, y1 = int(r.RegionLocationMaxX1), int(r.RegionLocationMaxY1)
    except (AttributeError, TypeError, ValueError):
      continue
    regions.append(dict(spatial_format=fmt, x0=x0, y0=y0, x1=x1, y1=y1))
  return regions


def _fill_convex_hull(component: np.ndarray) -> np.ndarray:
  """Convex hull of a boolean mask, rasterised. An echo sector (fan) is convex, text is not in it."""
  edge = component & ~ndimage.binary_erosion(component)
  ys, xs = np.nonzero(edge)
  if len(xs) < 3:
    return component
  pts = np.stack([xs, ys], 1).astype(np.float64)
  try:
    hull = ConvexHull(pts)
  except QhullError:  # collinear points: a line is its own hull
    return component
  img = Image.new("1", (component.shape[1], component.shape[0]), 0)
  ImageDraw.Draw(img).polygon([tuple(p) for p in pts[hull.vertices]], fill=1, outline=1)
  return np.asarray(img, dtype=bool) | component


def _largest_component(mask: np.ndarray) -> np.ndarray:
  labels, n = ndimage.label(mask)
  if n == 0:
    return mask
  sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
  return labels == (1 + int(np.argmax(sizes)))


def sector_heuristic(frames: np.ndarray) -> np.ndarray:
  """Ultrasound area without header help: bool [H, W] from grayscale uint8 [T, H, W].

  Several frames: the pixels that change over time (burned-in text, scales and labels are
  static); one frame: bright pixels after an opening that erases thin strokes (text, traces).
  Either way the largest connected component is kept, since an ECG trace or a cursor is a
  smaller separate one, and filled to its convex hull, since sectors and spectral strips
  are convex and speckle leaves dark holes inside them.
  """
  f = frames.astype(np.float32)
  h, w = f.shape[1:]
  k = max(3, int(round(min(h, w) / 40)) | 1)  # ~2.5 % of the image, odd
  if f.shape[0] >= 2 and (f.max(0) - f.min(0)).mean() > 0.5:
    activity = ndimage.uniform_filter(f.max(0) - f.min(0), size=k)
  else:
    activity = ndimage.uniform_filter(f.mean(0), size=k)
  mask = activity > 8.0
  # Opening with a k x k square as separable min / max filters (5x faster than binary_opening).
  mask = ndimage.maximum_filter(ndimage.minimum_filter(mask, size=k), size=k)
  if mask.sum() < 0.01 * h * w:
    return np.zeros((h, w), bool)
  comp = _largest_component(mask)
  return _fill_convex_hull(ndimage.binary_fill_holes(comp))


def ultrasound_mask(ds: pydicom.Dataset, frames: np.ndarray) -> np.ndarray:
  """Where the ultrasound data is: bool [H, W]; frames: grayscale uint8 [T, H, W].

  With SequenceOfUltrasoundRegions: the union of the image regions' rectangles (waveform and
  graphics regions, i.e. ECG traces and overlays, are left out); inside a 2D tissue region
  only the sector found by `sector_heuristic` is kept (the rectangle also holds the corners
  beside the fan, where depth scales and labels sit), unless the sector found is implausibly
  small. Without regions: `sector_heuristic` on the whole image. When nothing is found the
  mask is empty: an all-black image is a visible problem, leaked text is a silent one.
  """
  h, w = frames.shape[1:]
  regions = ultrasound_regions(ds)
  if not regions:
    return sector_heuristic(frames)
  mask = np.zeros((h, w), bool)
  for r in regions:
    x0, x1 = max(0, min(r["x0"], r["x1"])), min(w - 1, max(r["x0"], r["x1"]))
    y0, y1 = max(0, min(r["y0"], r["y1"])), min(h - 1, max(r["y0"], r["y1"]))
    if x1 <= x0 or y1 <= y0:
      continue
    rect = np.zeros((h, w), bool)
    rect[y0:y1 + 1, x0:x1 + 1] = True
    if r["spatial_format"] == _TISSUE_2D:
      sector = sector_heuristic(frames[:, y0:y1 + 1, x0:x1 + 1])
      if sector.sum() >= 0.1 * sector.size:
        rect[y0:y1 + 1, x0:x1 + 1] = sector
    mask |= rect
  return mask


# ----------------------------------------------------------------------------- resizing


def resize_square(frames: np.ndarray, size: int, mask: np.ndarray | None = None) -> np.ndarray:
  """Crops to the mask's bounding box, scales the longer side to `size` keeping the aspect
  ratio, and zero-pads the shorter side symmetrically. [T, H, W] -> uint8 [T, size, size]."""
  if mask is not None and mask.any():
    ys, xs = np.nonzero(mask)
    frames = frames[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
  t, h, w = frames.shape
  scale = size / max(h, w)
  nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
  out = np.zeros((t, size, size), np.uint8)
  oy, ox = (size - nh) // 2, (size - nw) // 2
  for i in range(t):
    # Pillow's resize filters are area-aware when shrinking (no aliasing of speckle).
    img = Image.fromarray(frames[i]).resize((nw, nh), Image.Resampling.BILINEAR)
    out[i, oy:oy + nh, ox:ox + nw] = np.asarray(img)
  return out


def image_kind(ds: pydicom.Dataset) -> str:
  """What the image shows, from its ultrasound regions (schema.IMAGE_KINDS): "spectral" when
  any region is a spectral Doppler strip (stills show it under a small 2D preview), else
  "m_mode", else "2d"; "unknown" without regions."""
  formats = {_IMAGE_REGION_FORMATS[r["spatial_format"]] for r in ultrasound_regions(ds)}
  for kind in ("spectral", "m_mode", "2d"):
    if kind in formats:
      return kind
  return "unknown"


def load_clip(path: str | os.PathLike, num_frames: int | None = None, size: int | None = None,
              *, mask: bool = True, fps: float = 0.0) -> tuple[np.ndarray, str]:
  """(`load_frames`'s uint8 [T, H, W], `image_kind`) with one read of the file."""
  ds = read_dataset(path)
  total = _num_frames(ds)
  if fps > 0 and num_frames is not None:
    idx = indices_at_rate(total, num_frames, frame_time_ms(ds), fps)
  else:
    idx = sample_indices(total, num_frames)
  frames = decode_frames(ds, idx, path)
  m = None
  if mask:
    extra = sample_indices(total, min(total, _MASK_FRAMES))
    probe = frames if set(extra.tolist()) <= set(idx.tolist()) else decode_frames(ds, extra, path)
    m = ultrasound_mask(ds, probe)
    frames = frames * m[None].astype(np.uint8)
  if size is not None:
    frames = resize_square(frames, int(size), m)
  return frames, image_kind(ds)


def load_frames(path: str | os.PathLike, num_frames: int | None = None, size: int | None = None,
                *, mask: bool = True, fps: float = 0.0) -> np.ndarray:
  """A DICOM file as masked grayscale frames: uint8 [T, H, W].

  num_frames: T evenly spaced frames (see `sample_indices`); None = every frame; a still
    image with num_frames > 1 repeats its frame.
  fps: > 0 takes the T frames at this frame rate instead, centred in the cine, from the
    header's frame time (`indices_at_rate`: the time step a video model was trained at).
  size: None keeps the stored geometry [T, Rows, Columns]; an int S crops to the ultrasound
    mask's bounding box, resizes keeping the aspect ratio and pads to [T, S, S].
  mask: zero everything outside `ultrasound_mask` (burned-in text, ECG, overlays).
  Raises DicomError for missing, corrupt, truncated or unsupported files.
  """
  return load_clip(path, num_frames, size, mask=mask, fps=fps)[0]


# ----------------------------------------------------------------------------- metadata


def _float_or_none(v) -> float | None:
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def deidentified_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """Technical header fields only (an allow-list; nothing about a patient, date or site).

  Keys: rows, columns, number_of_frames, frame_time_ms, frame_rate_hz, photometric_interpretation,
  samples_per_pixel, bits_stored, transfer_syntax_uid, transfer_syntax_name, modality,
  manufacturer_model_name, pixel_spacing_mm, regions (list of dicts with spatial_format,
  data_type, x0, y0, x1, y1, physical_units_x, physical_units_y, physical_delta_x,
  physical_delta_y). Values are plain Python types (JSON-serialisable).
  """
  ds = read_dataset(path, pixels=False)
  ts = ds.file_meta.get("TransferSyntaxUID", None)
  frame_time = _float_or_none(ds.get("FrameTime", None))
  rate = _float_or_none(ds.get("CineRate", None)) or _float_or_none(
      ds.get("RecommendedDisplayFrameRate", None))
  if rate is None and frame_time:
    rate = 1000.0 / frame_time
  spacing = ds.get("PixelSpacing", None)
  regions = []
  for r in ds.get("SequenceOfUltrasoundRegions", []) or []:
    regions.append(dict(
        spatial_format=int(r.get("RegionSpatialFormat", 0)),
        data_type=int(r.get("RegionDataType", 0)),
        x0=int(r.get("RegionLocationMinX0", 0)), y0=int(r.get("RegionLocationMinY0", 0)),
        x1=int(r.get("RegionLocationMaxX1", 0)), y1=int(r.get("RegionLocationMaxY1", 0)),
        physical_units_x=int(r.get("PhysicalUnitsXDirection", 0)),
        physical_units_y=int(r.get("PhysicalUnitsYDirection", 0)),
        physical_delta_x=_float_or_none(r.get("PhysicalDeltaX", None)),
        physical_delta_y=_float_or_none(r.get("PhysicalDeltaY", None)),
    ))
  return dict(
      rows=int(ds.Rows), columns=int(ds.Columns), number_of_frames=_num_frames(ds),
      frame_time_ms=frame_time, frame_rate_hz=rate,
      photometric_interpretation=str(ds.get("PhotometricInterpretation", "")),
      samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
      bits_stored=int(ds.get("BitsStored", 8)),
      transfer_syntax_uid=str(ts) if ts else None,
      transfer_syntax_name=getattr(ts, "name", None) if ts else None,
      modality=str(ds.get("Modality", "")),
      manufacturer_model_name=str(ds.get("ManufacturerModelName", "")),
      pixel_spacing_mm=[float(s) for s in spacing] if spacing else None,
      regions=regions,
  )
