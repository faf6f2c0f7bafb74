"""DICOM decoding: every colour model / compression / byte order, sampling, resize, masking,
de-identified metadata and the one error type. All files are written here with pydicom."""

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from echovlm_jax.data import dicom
from tests import dicom_fixtures as fm

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on truncated files

H, W = 80, 144

# mode -> (transfer syntax, photometric interpretation, max mean abs error vs the gray source)
MODES = {
    "ybr_jpeg": (pydicom.uid.JPEGBaseline8Bit, "YBR_FULL_422", 3.0),  # lossy
    "rgb": (pydicom.uid.ExplicitVRLittleEndian, "RGB", 0.0),
    "ybr_full": (pydicom.uid.ExplicitVRLittleEndian, "YBR_FULL", 1.0),  # 8-bit YCbCr rounding
    "palette": (pydicom.uid.ExplicitVRLittleEndian, "PALETTE COLOR", None),
    "mono": (pydicom.uid.ExplicitVRLittleEndian, "MONOCHROME2", 0.0),
    "mono1_j2k": (pydicom.uid.JPEG2000Lossless, "MONOCHROME1", 0.0),
    "rgb_j2k": (pydicom.uid.JPEG2000Lossless, "RGB", 0.0),
    "big_endian": (pydicom.uid.ExplicitVRBigEndian, "MONOCHROME2", 0.0),
    "implicit": (pydicom.uid.ImplicitVRLittleEndian, "MONOCHROME2", 0.0),
    "rle": (pydicom.uid.RLELossless, "MONOCHROME2", 0.0),
}
RGB_MODES = ("ybr_jpeg", "rgb", "ybr_full", "rgb_j2k")


@pytest.fixture(scope="module")
def cine():
  return fm.cine_frames(6, H, W, seed=1)  # frames [T,H,W], fan [H,W], text boxes


def _write(path, gray, mode, **kw):
  data = np.repeat(gray[..., None], 3, -1) if mode in RGB_MODES else gray
  return fm.write_dicom(path, data, mode=mode, **kw)


def _palette_expected(gray):
  i = gray.astype(np.float64)
  rgb = np.stack([np.clip(i * 1.5, 0, 255), i, i * 0.6], -1)
  rgb = np.rint(rgb * 257) / 65535 * 255
  return np.clip(np.rint(rgb @ [0.299, 0.587, 0.114]), 0, 255)


@pytest.mark.parametrize("num_frames", [1, 6])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_encoding_decodes_to_the_gray_source(tmp_path, cine, mode, num_frames):
  frames = cine[0][:num_frames]
  path = _write(tmp_path / f"{mode}.dcm", frames, mode)
  ts, pi, tol = MODES[mode]
  meta = dicom.deidentified_metadata(path)
  assert meta["photometric_interpretation"] == pi
  if mode == "implicit":  # a bare dataset: no preamble, no file meta; still read
    with open(path, "rb") as f:
      assert f.read(132)[128:132] != b"DICM"
  else:
    assert meta["transfer_syntax_uid"] == ts
  out = dicom.load_frames(path, mask=False)
  assert out.dtype == np.uint8 and out.shape == (num_frames, H, W)
  expected = _palette_expected(frames) if mode == "palette" else frames.astype(np.float64)
  err = np.abs(out - expected).mean()
  assert err <= (tol if tol is not None else 0.5), (mode, err)


def test_even_frame_sampling(tmp_path):
  assert dicom.sample_indices(90, 3).tolist() == [15, 45, 75]
  assert dicom.sample_indices(90, 1).tolist() == [45]       # the middle frame
  assert dicom.sample_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # repeats
  assert dicom.sample_indices(5, None).tolist() == [0, 1, 2, 3, 4]
  frames = (np.arange(20, dtype=np.uint8) * 10)[:, None, None] * np.ones((1, 8, 8), np.uint8)
  path = fm.write_dicom(tmp_path / "ramp.dcm", frames, mode="mono")
  out = dicom.load_frames(path, num_frames=4, mask=False)
  assert out[:, 0, 0].tolist() == [20, 70, 120, 170]  # frames 2, 7, 12, 17
  still = fm.write_dicom(tmp_path / "still.dcm", frames[5:6], mode="mono")
  assert dicom.load_frames(still, num_frames=3, mask=False).shape == (3, 8, 8)


def test_resize_keeps_aspect_ratio_and_pads_to_square(tmp_path):
  img = np.full((1, 40, 100), 200, np.uint8)  # 2.5 : 1, wider than tall
  path = fm.write_dicom(tmp_path / "wide.dcm", img, mode="mono")
  out = dicom.load_frames(path, size=50, mask=False)
  assert out.shape == (1, 50, 50)
  rows = out[0].mean(1)
  assert np.all(rows[:15] == 0) and np.all(rows[35:] == 0)  # 20 content rows, centred
  assert np.all(out[0, 15:35] == 200)


def test_resize_crops_to_the_ultrasound_region(tmp_path, cine):
  frames, fan, _ = cine
  path = _write(tmp_path / "c.dcm", frames, "mono")
  out = dicom.load_frames(path, num_frames=2, size=64)
  assert out.shape == (2, 64, 64)
  ys, xs = np.nonzero(fan)
  fan_h, fan_w = np.ptp(ys) + 1, np.ptp(xs) + 1
  # The fan's bounding box now spans the full side along its longer axis.
  long_axis = 1 if fan_w >= fan_h else 0
  extent = np.nonzero(out.max(0).max(1 - long_axis))[0]
  assert extent.min() <= 1 and extent.max() >= 62


@pytest.mark.parametrize("regions", [False, True])
@pytest.mark.parametrize("num_frames", [6, 1])
@pytest.mark.parametrize("mode", ["ybr_jpeg", "mono"])
def test_mask_removes_burned_in_text_and_ecg_keeps_the_sector(tmp_path, cine, regions, num_frames, mode):
  frames, fan, boxes = cine
  regs = [fm.tissue_region(4, 2, W - 5, H - 14), fm.ecg_region(0, H - 13, W - 1, H - 1)] if regions else []
  path = _write(tmp_path / "m.dcm", frames[:num_frames], mode, regions=regs)
  out = dicom.load_frames(path)
  assert out.shape == (num_frames, H, W)
  for x0, y0, x1, y1 in boxes:
    assert frames[0, y0:y1 + 1, x0:x1 + 1].max() > 200  # the text is really there ...
    assert out[:, y0:y1 + 1, x0:x1 + 1].max() == 0       # ... and masked away
  assert out[:, H - 12:].max() == 0                      # ECG trace rows
  kept = (out[:, fan] > 0).mean()
  assert kept > 0.97, kept


@pytest.mark.parametrize("regions", [False, True])
def test_mask_on_a_doppler_still(tmp_path, regions):
  img, (x0, y0, x1, y1), boxes = fm.doppler_still(H, W, seed=3)
  regs = [fm.spectral_region(x0, y0, x1, y1)] if regions else []
  path = _write(tmp_path / "d.dcm", img[None], "ybr_jpeg", regions=regs)
  out = dicom.load_frames(path)[0]
  for bx0, by0, bx1, by1 in boxes:
    assert out[by0:by1 + 1, bx0:bx1 + 1].max() == 0
  assert (out[y0:y1 + 1, x0:x1 + 1] > 0).mean() > 0.97


def test_ultrasound_mask_uses_regions_and_drops_waveform_regions(cine):
  frames, _, _ = cine
  ds = Dataset()
  ds.SequenceOfUltrasoundRegions = [fm.spectral_region(10, 20, 60, 70), fm.ecg_region(0, 72, W - 1, H - 1)]
  m = dicom.ultrasound_mask(ds, frames)
  expected = np.zeros((H, W), bool)
  expected[20:71, 10:61] = True
  np.testing.assert_array_equal(m, expected)


def test_deidentified_metadata_has_technical_fields_and_no_phi(tmp_path, cine):
  frames, _, _ = cine
  path = _write(tmp_path / "p.dcm", frames, "ybr_jpeg",
                regions=[fm.tissue_region(4, 2, W - 5, H - 14)])
  ds = pydicom.dcmread(path)
  assert str(ds.PatientName) == fm.PHI["patient_name"]  # the header really carries PHI
  meta = dicom.deidentified_metadata(path)
  text = json.dumps(meta)  # also proves it is JSON-serialisable
  for s in list(fm.PHI.values()) + ["2180", "Quuxington"]:
    assert s.lower() not in text.lower(), s
  assert meta["number_of_frames"] == 6 and meta["rows"] == H and meta["columns"] == W
  assert meta["frame_rate_hz"] == pytest.approx(30.0)
  assert meta["manufacturer_model_name"] == "FakeVivid E95"
  assert meta["regions"][0]["x1"] == W - 5 and meta["regions"][0]["physical_delta_x"] == pytest.approx(0.03)
  assert not {"patient_name", "institution", "study_date"} & set(meta)


def _bad_files(tmp_path, cine):
  good = _write(tmp_path / "good.dcm", cine[0], "ybr_jpeg")
  raw = open(good, "rb").read()
  native = _write(tmp_path / "native.dcm", cine[0], "mono")
  nraw = open(native, "rb").read()
  bad = {
      "truncated_jpeg.dcm": raw[: len(raw) // 2],
      "truncated_native.dcm": nraw[:-500],
      "truncated_header.dcm": raw[:200],
      "text.dcm": b"not a dicom file at all\n" * 10,
      "empty.dcm": b"",
  }
  for name, payload in bad.items():
    (tmp_path / name).write_bytes(payload)
  # A valid DICOM without pixel data (like a structured report) and an unsupported colour model.
  ds = Dataset()
  ds.file_meta = FileMetaDataset()
  ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
  ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.88.11")
  ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
  ds.Rows, ds.Columns = 4, 4
  ds.save_as(tmp_path / "no_pixels.dcm", enforce_file_format=True)
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "HSV"
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.PlanarConfiguration = 8, 8, 7, 0, 0
  ds.PixelData = bytes(48)
  ds.save_as(tmp_path / "hsv.dcm", enforce_file_format=True)
  return list(bad) + ["no_pixels.dcm", "hsv.dcm", "does_not_exist.dcm"]


def test_bad_files_raise_one_error_type_naming_the_file(tmp_path, cine):
  for name in _bad_files(tmp_path, cine):
    with pytest.raises(dicom.DicomError) as e:
      dicom.load_frames(tmp_path / name, num_frames=2, size=32)
    assert isinstance(e.value, ValueError)
    assert name in str(e.value) and e.value.reason, str(e.value)
  with pytest.raises(dicom.DicomError, match="text.dcm: not a DICOM file"):
    dicom.deidentified_metadata(tmp_path / "text.dcm")
  with pytest.raises(dicom.DicomError, match="PhotometricInterpretation 'HSV'"):
    dicom.load_frames(tmp_path / "hsv.dcm")


def test_rescale_and_window_the_file_declares_are_applied(tmp_path, cine):
  # 12-bit MONOCHROME2 with a rescale and a window narrower than the data: pixels below the
  # window go black, above it white, inside it follow DICOM's linear window (PS3.3
  # C.11.2.1.2.1), written out here, mapped from the rescaled range to 0..255.
  gray = cine[0][:2]
  path = _write(tmp_path / "window.dcm", gray, "big_endian")
  ds = pydicom.dcmread(path)
  slope, intercept, center, width = 2.0, -1000.0, 3000.0, 2001.0
  ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
  ds.WindowCenter, ds.WindowWidth = center, width
  ds.save_as(path)
  stored = np.rint(gray.astype(np.float64) * 4095 / 255)
  x = stored * slope + intercept
  lo, hi = intercept, 4095 * slope + intercept
  y = ((x - (center - 0.5)) / (width - 1) + 0.5) * (hi - lo) + lo
  y = np.where(x <= center - 0.5 - (width - 1) / 2, lo, np.where(x > center - 0.5 + (width - 1) / 2, hi, y))
  expected = np.clip(np.rint((y - lo) * 255 / (hi - lo)), 0, 255)
  out = dicom.load_frames(path, mask=False)
  assert np.abs(out - expected).max() <= 1
  assert (out == 0).any() and (out == 255).any()   # the window clips: it was applied
  # Without the window and the rescale, the same file reads as the stored 12-bit values.
  del ds.WindowCenter, ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept
  ds.save_as(path)
  np.testing.assert_array_equal(dicom.load_frames(path, mask=False), gray)


def test_signed_data_is_centred_on_zero(tmp_path, cine):
  gray = cine[0][:1]
  path = _write(tmp_path / "signed.dcm", gray, "big_endian")
  ds = pydicom.dcmread(path)
  ds.PixelRepresentation = 1
  ds.PixelData = (np.rint(gray.astype(np.float64) * 4095 / 255) - 2048).astype(">i2").tobytes()
  ds.save_as(path)
  np.testing.assert_array_equal(dicom.load_frames(path, mask=False), gray)
