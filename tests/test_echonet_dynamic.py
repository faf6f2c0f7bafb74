"""The EchoNet-Dynamic reader on a tree laid out as the release (tests/echonet_dynamic_tree.py):
frames, EF / ESV / EDV, splits, ED / ES chosen by listing order as echonet/dynamic's echo.py
does, LV masks by its polygon convention, and every bad input skipped and counted by reason."""

import collections
import logging

import numpy as np
import pytest
import skimage.draw

from echovlm_jax.data import avi, dense_skips, echonet_dynamic
from tests import dense_fixtures, echonet_dynamic_tree as tree_mod


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("echonet") / "EchoNet-Dynamic"
  return root, tree_mod.write_tree(str(root))


@pytest.fixture(scope="module")
def read(tree):
  root, _ = tree
  stats = collections.Counter()
  return dict(echonet_dynamic.generate_records(root.parent, stats)), stats   # zip's parent


def _outline_mask(ellipse, shape):
  """The outline walked as echo.py walks it: down the chords' left ends, back up their right
  ends (the long axis, row 0, is no part of it), vertices rounded, filled by skimage."""
  chords = tree_mod.tracing(ellipse)[1:]
  walk = [(x1, y1) for x1, y1, _, _ in chords] + [(x2, y2) for _, _, x2, y2 in chords[::-1]]
  cols, rows = np.rint(np.array(walk)).astype(int).T
  filled = np.zeros(shape, np.uint8)
  filled[skimage.draw.polygon(rows, cols, shape)] = 1
  return filled


def test_every_usable_video_is_a_record_in_filelist_order(tree, read):
  _, expected = tree
  records, _ = read
  assert list(records) == list(expected)


def test_frames_values_and_split(tree, read):
  _, expected = tree
  records, _ = read
  for name, r in records.items():
    want = expected[name]
    shape = (tree_mod.NUM_FRAMES, tree_mod.HEIGHT, tree_mod.WIDTH)
    assert r["frames"].dtype == np.uint8 and r["frames"].shape == shape, name
    if name == tree_mod.MJPG:   # lossy: close, and the frame markers still in order
      assert np.abs(r["frames"].astype(int) - want["frames"]).mean() < 3.0
      assert np.all(np.diff(r["frames"][:, 0, 0].astype(int)) > 0)
    else:
      np.testing.assert_array_equal(r["frames"], want["frames"], err_msg=name)
    assert (r["ef"], r["esv"], r["edv"]) == pytest.approx((want["ef"], want["esv"], want["edv"]))
    assert r["fps"] == tree_mod.FPS and r["split"] == want["split"] and r["view"] == "a4c"
  assert [records[n]["split"] for n in ("0XA0", "0XB1", "0XC2", "0XD3", "0XE4")] == [
      "train", "validation", "test", "train", "validation"]


def test_ed_is_the_frame_listed_last_and_es_the_first_whatever_their_numbers(read):
  records, _ = read
  assert {n: (r["ed_frame"], r["es_frame"]) for n, r in records.items()} == {
      "0XA0": (5, 17), "0XB1": (20, 8), "0XC2": (15, 3), "0XD3": (9, 4), "0XE4": (12, 2),
      "0XF5": (14, 6)}
  r = records["0XA0"]
  assert r["frames"][r["ed_frame"], 0, 0] == tree_mod.frame_marker(5)    # indices into frames


def test_masks_follow_the_reference_polygon(tree, read):
  _, expected = tree
  records, _ = read
  shape = (tree_mod.HEIGHT, tree_mod.WIDTH)
  for name, r in records.items():
    for phase in ("ed", "es"):
      _, ellipse = expected[name][phase]
      want = _outline_mask(ellipse, shape)
      assert r[f"{phase}_mask"].dtype == np.uint8
      np.testing.assert_array_equal(r[f"{phase}_mask"], want, err_msg=f"{name} {phase}")


def test_masks_are_the_traced_ellipse_without_the_long_axis(tree, read):
  """Against the ellipse's own equation: pixels well inside are LV, pixels well outside (the
  long axis overshoots 4 px at both ends) are not, and the area is pi * a * b."""
  _, expected = tree
  records, _ = read
  rr, cc = np.mgrid[:tree_mod.HEIGHT, :tree_mod.WIDTH]
  for name, r in records.items():
    for phase in ("ed", "es"):
      (r0, c0), (a, b) = expected[name][phase][1]
      level = ((rr - r0) / a) ** 2 + ((cc - c0) / b) ** 2
      mask = r[f"{phase}_mask"].astype(bool)
      assert mask[level < 0.7].all() and not mask[level > 1.4].any(), f"{name} {phase}"
      assert abs(mask.sum() - np.pi * a * b) / (np.pi * a * b) < 0.15, f"{name} {phase}"
  d3 = records["0XD3"]   # listed large first: ED is the smaller outline, as echo.py has it
  assert d3["ed_mask"].sum() < d3["es_mask"].sum()


def test_each_bad_input_is_skipped_and_counted_by_reason(read):
  _, stats = read
  assert collections.Counter({k: v for k, v in stats.items() if k.startswith("skip:")}) == \
      tree_mod.SKIPS
  assert collections.Counter({k: v for k, v in stats.items() if k.startswith("note:")}) == \
      tree_mod.NOTES
  assert stats["rows:bad_tracing_row"] == 1


def test_truncated_mjpg_that_decodes_every_frame_is_still_refused(tree):
  """Cut 3 % short, OpenCV decodes all 24 frames (the last half written) without an error;
  the RIFF size in the header shows the cut."""
  root, _ = tree
  path = str(root / "Videos" / "0XL2.avi")
  import cv2
  capture = cv2.VideoCapture(path)
  decoded = sum(1 for _ in iter(lambda: capture.read()[0], False))
  assert decoded == tree_mod.NUM_FRAMES
  with pytest.raises(dense_skips.Skip, match="the header declares") as e:
    avi.read_gray(path)
  assert e.value.reason == "avi_truncated"


def test_missing_csv_or_column_is_a_setup_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no FileList.csv in it"):
    list(echonet_dynamic.generate_records(tmp_path))
  (tmp_path / "FileList.csv").write_text("FileName,EF\n0XA,50\n")
  with pytest.raises(ValueError, match=r"missing column\(s\) \['ESV'"):
    list(echonet_dynamic.generate_records(tmp_path))


def test_lossless_codec_round_trips_here(tmp_path):
  frames = tree_mod.video(3)
  dense_fixtures.write_avi(str(tmp_path / "v.avi"), frames, 30.0)
  np.testing.assert_array_equal(avi.read_gray(str(tmp_path / "v.avi")), frames)


def test_skip_message_names_file_field_and_fix(tree, caplog):
  root, _ = tree
  with caplog.at_level(logging.WARNING, logger=dense_skips.__name__):
    list(echonet_dynamic.generate_records(root))
  want = (f"{root / 'VolumeTracings.csv'} (0XI8.avi, frame 50): Frame: the video has frames "
          "0..23. Restore the release's video")
  assert want in caplog.text
