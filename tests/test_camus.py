"""The CAMUS reader on a NIfTI tree laid out as the release (tests/camus_tree.py): images and
masks in (rows, columns) with the apex at the top, spacing from the header, the cfg's info,
the official split, the half sequence, and every bad input skipped and counted by reason."""

import collections
import logging
import os

import nibabel
import numpy as np
import pytest

from echovlm_jax.data import camus, dense_skips
from tests import camus_tree, dense_fixtures


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("camus") / "CAMUS_public")
  return root, camus_tree.write_tree(root)


@pytest.fixture(scope="module")
def read(tree):
  root, _ = tree
  stats = collections.Counter()
  # The manual_dir may be the folder above CAMUS_public/, as the zip unpacks.
  records = dict(camus.generate_records(os.path.dirname(root), stats))
  return records, stats


def test_every_usable_patient_view_phase_is_a_record(tree, read):
  _, expected = tree
  records, _ = read
  assert sorted(records) == sorted(expected)
  assert len(records) == 4 * 4   # patients 1, 2, 3, 6 x (2CH, 4CH) x (ED, ES)


def test_written_file_holds_columns_then_rows(tree):
  """What the reader undoes: nibabel's voxel array is (x, y) = (columns, rows)."""
  root, _ = tree
  path = os.path.join(root, "database_nifti", "patient0001", "patient0001_2CH_ED.nii.gz")
  raw = np.asarray(nibabel.load(path).dataobj)
  h, w = camus_tree.VIEWS["2CH"]["shape"]
  assert raw.shape == (w, h)
  assert raw[w // 2, 1] == camus_tree.APEX_VALUE


def test_apex_comes_out_at_the_top_and_left_stays_left(read):
  records, _ = read
  for key, r in records.items():
    view = key.split("_")[1]
    h, w = camus_tree.VIEWS[view]["shape"]
    assert r["image"].dtype == np.uint8 and r["image"].shape == (h, w), key
    assert r["image"][1, w // 2] == camus_tree.APEX_VALUE, key       # apex: row 1, centre
    assert r["image"][3, 2] == camus_tree.LEFT_MARK_VALUE, key        # not mirrored
    assert np.argwhere(r["image"] == camus_tree.APEX_VALUE).tolist() == [[1, w // 2]]
    rows = {label: np.argwhere(r["mask"] == label)[:, 0].mean() for label in (1, 2, 3)}
    assert rows[1] < rows[3], key                                     # cavity above the atrium


def test_images_and_masks_are_the_written_pixels(tree, read):
  _, expected = tree
  records, _ = read
  for key, r in records.items():
    np.testing.assert_array_equal(r["image"], expected[key]["image"], err_msg=key)
    np.testing.assert_array_equal(r["mask"], expected[key]["mask"], err_msg=key)
    assert r["mask"].dtype == np.uint8 and set(np.unique(r["mask"])) == {0, 1, 2, 3}


def test_mask_geometry_matches_the_ellipses(read):
  """Cavity area and centroid against the ellipse's closed form, not the fixture's pixels."""
  records, _ = read
  for key, r in records.items():
    view, phase = key.split("_")[1:]
    (r0, c0), (a, b) = camus_tree.cavity_geometry(view, phase)
    cavity = r["mask"] == 1
    assert abs(cavity.sum() - np.pi * a * b) / (np.pi * a * b) < 0.06, key
    cr, cc = np.argwhere(cavity).mean(0)
    assert abs(cr - r0) < 0.5 and abs(cc - (c0 - 0.5)) < 0.6, key   # pixel centres, even width


def test_spacing_is_row_then_column_from_the_header(read):
  records, _ = read
  for key, r in records.items():
    row_mm, col_mm = camus_tree.VIEWS[key.split("_")[1]]["spacing"]
    assert r["spacing_mm"] == pytest.approx((row_mm, col_mm), rel=1e-6), key


def test_info_phase_and_split_come_from_cfg_and_split_files(tree, read):
  _, expected = tree
  records, stats = read
  for key, r in records.items():
    want = expected[key]
    for field in ("view", "phase", "sex", "age", "image_quality", "sequence_index"):
      assert r[field] == want[field], (key, field)
    assert r["patient_key"] == want["patient"] and r["num_frames"] == camus_tree.NUM_FRAMES
    assert r["ef"] == pytest.approx(want["ef"])
    assert r["frame_rate"] == pytest.approx(want["frame_rate"])
    assert r["split"] == want["split"] and r["source"] == "camus"
  assert records["patient0002_2CH_ED"]["sequence_index"] == 4      # ED after ES in its cfg
  assert {r["split"] for r in records.values()} == {"train", "validation", "test", None}
  assert stats["note:patient_not_in_split_files"] == 1
  assert stats["note:split_patient_without_folder"] == 1


def test_each_bad_input_is_skipped_and_counted_by_reason(read):
  _, stats = read
  skips = collections.Counter({k: v for k, v in stats.items() if k.startswith("skip:")})
  assert skips == camus_tree.SKIPS


def test_skip_message_names_file_field_and_fix(tree, caplog):
  root, _ = tree
  with caplog.at_level(logging.WARNING, logger=dense_skips.__name__):
    list(camus.generate_records(root))
  text = caplog.text
  assert "patient0005/Info_2CH.cfg: EF: missing. Add the line 'EF: <value>'" in text
  assert "patient0004_2CH_ES_gt.nii.gz: shape: (38, 30) where the image is (40, 30)" in text


def test_without_split_folder_every_split_is_none(tmp_path):
  expected = camus_tree.write_tree(str(tmp_path), with_split=False)
  stats = collections.Counter()
  records = dict(camus.generate_records(tmp_path, stats))
  assert sorted(records) == sorted(expected)
  assert all(r["split"] is None for r in records.values())
  assert not any(k.startswith("note:") for k in stats)


def test_half_sequence_frames_masks_and_ed_es(tree):
  root, expected = tree
  seq = camus.read_half_sequence(root, "patient0002", "4CH")
  h, w = camus_tree.VIEWS["4CH"]["shape"]
  assert seq["frames"].shape == seq["masks"].shape == (camus_tree.NUM_FRAMES, h, w)
  assert [seq["frames"][t, -2, 1] for t in range(camus_tree.NUM_FRAMES)] == [
      camus_tree.sequence_marker(t) for t in range(camus_tree.NUM_FRAMES)]
  assert (seq["ed"], seq["es"]) == (4, 0)
  np.testing.assert_array_equal(seq["masks"][seq["ed"]], expected["patient0002_4CH_ED"]["mask"])
  np.testing.assert_array_equal(seq["masks"][seq["es"]], expected["patient0002_4CH_ES"]["mask"])
  assert seq["frames"][seq["ed"], 1, w // 2] == camus_tree.APEX_VALUE
  with pytest.raises(dense_skips.Skip, match="4 frames where Info_2CH.cfg says NbFrame 5") as e:
    camus.read_half_sequence(root, "patient0003", "2CH")
  assert e.value.reason == "sequence_length_differs_from_cfg"


def test_setup_errors_name_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="no database_nifti in it"):
    list(camus.generate_records(tmp_path))
  camus_tree.write_tree(str(tmp_path))
  os.remove(tmp_path / "database_split" / "subgroup_testing.txt")
  with pytest.raises(FileNotFoundError, match="put all three there, or remove the folder"):
    list(camus.generate_records(tmp_path))


def test_empty_mask_and_non_8_bit_image_are_skips(tmp_path):
  with pytest.raises(dense_skips.Skip) as e:
    camus.check_mask(np.zeros((4, 3), np.uint8), (4, 3), "m.nii.gz")
  assert e.value.reason == "mask_empty"
  path = str(tmp_path / "x.nii.gz")
  dense_fixtures.write_nifti(path, np.full((4, 3), 0.5, np.float32), (0.3, 0.2))
  with pytest.raises(dense_skips.Skip, match="values outside whole numbers 0..255") as e:
    camus.load_nifti(path, "image")
  assert e.value.reason == "image_not_8_bit"
