"""The EchoNet-LVH reader on a tree laid out as the release (tests/echonet_lvh_tree.py): frames
from Batch*/, each measurement's Calc, value, frame and two points (x, y) read from the
X1, X2, Y1, Y2 columns, splits, and every bad video or measurement counted by reason."""

import collections

import numpy as np
import pytest

from echovlm_jax.data import echonet_lvh
from tests import echonet_lvh_tree as tree_mod


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("lvh")
  return root, tree_mod.write_tree(str(root))


@pytest.fixture(scope="module")
def read(tree):
  root, _ = tree
  stats = collections.Counter()
  return dict(echonet_lvh.generate_records(root, stats)), stats


def test_every_usable_video_is_a_record_in_csv_order(tree, read):
  _, expected = tree
  records, _ = read
  assert list(records) == list(expected) == ["0X1A", "0X2B", "0X3C", "0X4D", "0XBK"]


def test_frames_come_from_the_first_batch_holding_the_video(tree, read):
  _, expected = tree
  records, _ = read
  for name, r in records.items():
    assert r["frames"].dtype == np.uint8
    assert r["frames"].shape == (tree_mod.NUM_FRAMES, tree_mod.HEIGHT, tree_mod.WIDTH)
    np.testing.assert_array_equal(r["frames"], expected[name]["frames"], err_msg=name)
    assert r["fps"] == tree_mod.FPS and r["view"] == "plax" and r["source"] == "echonet_lvh"


def test_measurements_are_calc_value_frame_and_two_points(tree, read):
  _, expected = tree
  records, _ = read
  for name, r in records.items():
    rows = expected[name]["rows"]
    assert r["calc"] == tuple(row[0] for row in rows), name
    np.testing.assert_allclose(r["value_cm"], [row[1] for row in rows], rtol=1e-6)
    np.testing.assert_array_equal(r["frame"], [row[2] for row in rows])
    assert r["points"].dtype == np.float32 and r["points"].shape == (len(rows), 2, 2)
    np.testing.assert_allclose(r["points"], [[row[3:5], row[5:7]] for row in rows])
  first = records["0X1A"]
  assert first["calc"][0] == "IVSd" and first["points"][0].tolist() == [[20.5, 8.25], [21.0, 12.75]]


def test_points_land_on_their_landmarks_in_the_frames(read):
  """Independently of the CSV: the dot burned at each landmark is where (x, y) points."""
  records, _ = read
  for name, r in records.items():
    for frame, pair in zip(r["frame"], r["points"]):
      for x, y in pair:
        row, col = int(np.rint(y)), int(np.rint(x))
        if row < tree_mod.HEIGHT and col < tree_mod.WIDTH:
          assert r["frames"][frame, row, col] == tree_mod.DOT, (name, x, y)


def test_splits_are_mapped(read):
  records, _ = read
  assert {n: r["split"] for n, r in records.items()} == {
      "0X1A": "train", "0X2B": "validation", "0X3C": "test", "0X4D": "train", "0XBK": "test"}


def test_each_bad_video_and_measurement_is_counted_by_reason(read):
  _, stats = read
  by = lambda prefix: collections.Counter({k: v for k, v in stats.items() if k.startswith(prefix)})
  assert by("skip:") == tree_mod.SKIPS
  assert by("measurement:") == tree_mod.DROPS
  assert by("note:") == tree_mod.NOTES


def test_missing_csv_is_a_setup_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no MeasurementsList.csv in it"):
    list(echonet_lvh.generate_records(tmp_path))
