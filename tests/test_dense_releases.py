"""CAMUS, EchoNet-Dynamic and EchoNet-LVH as `echoground` builder configs: built from
fixtures in their published layouts (tests/dense_release_trees.py), checked against the
fixtures' geometry computed here, and trained end to end by the one trainer."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import landmarks as lm_config
from echovlm_jax.data import build, dense_records
from echovlm_jax.echo import schema
from echovlm_jax.train import loop
from tests import camus_tree, dense_release_trees, echonet_dynamic_tree, echonet_lvh_tree
from tests import test_segmentation
from tfds_builders.echoground import records

WRITERS = {"camus": dense_release_trees.write_camus,
           "echonet_dynamic": dense_release_trees.write_echonet_dynamic,
           "echonet_lvh": dense_release_trees.write_echonet_lvh}
CAVITY = schema.STRUCTURES.index("lv_cavity")
P = {n: i for i, n in enumerate(schema.LANDMARKS)}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
  """release -> (manual_dir, expected): each written once."""
  out = {}
  for name, write in WRITERS.items():
    root = str(tmp_path_factory.mktemp(name))
    out[name] = (root, write(root))
  return out


def _config(release: str, manual_dir: str, data_dir, config_module=None):
  """The shrunk dense config (test_segmentation.tiny_config) reading `release`."""
  c = test_segmentation.tiny_config(str(data_dir), *(config_module,) if config_module else ())
  c.input.builder_config = release
  c.input.manual_dir = manual_dir
  c.input.num_shards = 1
  return c


def _examples(c) -> dict[str, list[dict]]:
  builder = build.ensure_dataset(c.input)
  return {s: list(tfds.as_numpy(builder.as_dataset(split=s))) for s in ("train", "validation", "test")}


def test_the_square_grid_keeps_millimetres_and_points():
  """A disc drawn on an anisotropic grid is a disc of the same area in mm on the square
  grid, and its centre maps where the mask's centroid lands."""
  shape, spacing = (60, 40), (0.2, 0.45)           # 12 mm x 18 mm
  rr, cc = np.mgrid[:60, :40]
  centre = (24.0, 22.0)
  disc = (((rr - centre[0]) * spacing[0]) ** 2 + ((cc - centre[1]) * spacing[1]) ** 2) <= 4.0 ** 2
  grid = dense_records.SquareGrid(shape, spacing, 90)
  assert grid.spacing_mm == pytest.approx(18.0 / 90)
  out = grid.mask(disc.astype(np.uint8))
  assert out.sum() * grid.spacing_mm ** 2 == pytest.approx(np.pi * 16.0, rel=0.03)
  want = grid.points(np.array(centre))
  got = np.argwhere(out == 1).mean(axis=0)
  np.testing.assert_allclose(got, want, atol=0.3)
  assert out[:grid.out_h].any() and not out[grid.out_h:].any()    # padding below, not above
  img = grid.image((disc * 200).astype(np.uint8))
  assert img.shape == (90, 90) and abs(int(img[tuple(np.rint(want).astype(int))]) - 200) <= 1


def test_camus_builds_ed_es_pairs_with_masks_in_millimetres(releases, tmp_path):
  root, expected = releases["camus"]
  c = _config("camus", root, tmp_path)
  c.input.image_size = 64
  assert build.builder_config_for(c.input).name == "camus_i64_v256"
  by_split = _examples(c)
  ids = {records.stable_int64("patient", "camus", k.rsplit("_", 1)[0]): k.rsplit("_", 1)[0]
         for k in expected}
  seen = set()
  for split, exs in by_split.items():
    for ex in exs:
      view = schema.VIEWS[ex["view"]]
      key = f"{ids[ex['patient_id']]}_{'2CH' if view == 'a2c' else '4CH'}"
      want = expected[key]
      seen.add(key)
      assert split == want["split"] and ex["source"] == b"camus" and ex["dense_truth"]
      np.testing.assert_allclose(ex["phases"], [schema.ED_PHASE, schema.ES_PHASE], atol=1e-7)
      assert np.isnan(ex["landmarks"]).all()
      assert ex["measurements"][schema.MEASUREMENTS.index("lvef")] == pytest.approx(want["ef"])
      h, w = camus_tree.VIEWS[want["view"]]["shape"]
      sr, sc = want["spacing_mm"]
      assert ex["pixel_spacing_mm"] == pytest.approx(max(h * sr, w * sc) / 64, rel=1e-6)
      for t, phase in enumerate(("ED", "ES")):
        mask = ex["masks"][t, ..., 0]
        assert set(np.unique(mask)) == {0, 1, 2, 3}
        # The cavity's area in mm^2 is the fixture's ellipse's, whatever the resampling.
        _, (a, b) = camus_tree.cavity_geometry(want["view"], phase)
        got_mm2 = (mask == CAVITY).sum() * float(ex["pixel_spacing_mm"]) ** 2
        assert got_mm2 == pytest.approx(np.pi * a * b * sr * sc, rel=0.12), (key, phase)
        # The apex marker (the brightest pixel) stays at the top centre: no transpose or flip.
        frame = ex["frames"][t, ..., 0]
        r, col = np.unravel_index(np.argmax(frame), frame.shape)
        assert r <= 2 and abs(col - 31.5) <= 2, (key, phase, r, col)
      assert (ex["masks"][0] == CAVITY).sum() > (ex["masks"][1] == CAVITY).sum()  # ED > ES
  assert seen == set(expected)


def test_echonet_dynamic_builds_the_traced_frames_lv_only(releases, tmp_path):
  root, expected = releases["echonet_dynamic"]
  by_split = _examples(_config("echonet_dynamic", root, tmp_path))
  t = echonet_dynamic_tree
  scale = 32 / max(t.HEIGHT, t.WIDTH)
  ids = {records.stable_int64("patient", "echonet_dynamic", k): k for k in expected}
  assert sum(len(v) for v in by_split.values()) == len(expected)
  for split, exs in by_split.items():
    for ex in exs:
      name = ids[ex["patient_id"]]
      want = expected[name]
      assert split == want["split"] and schema.VIEWS[ex["view"]] == "a4c"
      assert np.isnan(ex["pixel_spacing_mm"])           # the release states none
      assert ex["measurements"][schema.MEASUREMENTS.index("lvef")] == pytest.approx(want["ef"])
      grid = dense_records.SquareGrid((t.HEIGHT, t.WIDTH), (1.0, 1.0), 32)
      for k, (frame, (_, (a, b))) in enumerate((want["ed"], want["es"])):
        # The listed-last tracing is ED: its video frame, its ellipse's area.
        np.testing.assert_array_equal(ex["frames"][k, ..., 0], grid.image(want["frames"][frame]))
        mask = ex["masks"][k, ..., 0]
        assert set(np.unique(mask)) == {0, CAVITY}
        assert mask.sum() / scale ** 2 == pytest.approx(np.pi * a * b, rel=0.15), (name, k)


def test_echonet_lvh_builds_caliper_points_and_their_spacing(releases, tmp_path):
  root, expected = releases["echonet_lvh"]
  by_split = _examples(_config("echonet_lvh", root, tmp_path))
  t = echonet_lvh_tree
  scale = 32 / max(t.HEIGHT, t.WIDTH)
  top = 0
  left = (32 - round(t.WIDTH * scale)) // 2
  ids = {records.stable_int64("patient", "echonet_lvh", k): k for k in expected}
  for split, exs in by_split.items():
    for ex in exs:
      want = expected[ids[ex["patient_id"]]]
      assert split == want["split"] and schema.VIEWS[ex["view"]] == "plax"
      assert not ex["masks"].any()
      rows = {calc: (v, f, (x1, y1), (x2, y2)) for calc, v, f, x1, y1, x2, y2 in want["rows"]}
      for calc, name in (("ivsd", "IVSd"), ("lvidd", "LVIDd"), ("lvpwd", "LVPWd"), ("lvids", "LVIDs")):
        assert ex["measurements"][schema.MEASUREMENTS.index(calc)] == pytest.approx(rows[name][0])

      def px(xy):   # (x, y) of the release -> (row, col) of the 32 px grid
        return np.array([(xy[1] + 0.5) * scale - 0.5 + top, (xy[0] + 0.5) * scale - 0.5 + left])

      lm = ex["landmarks"]
      np.testing.assert_allclose(lm[0, P["ivs_anterior"]], px(rows["IVSd"][2]), atol=1e-4)
      np.testing.assert_allclose(lm[0, P["lv_septal_endocardium"]], px(rows["LVIDd"][2]), atol=1e-4)
      np.testing.assert_allclose(lm[0, P["lvpw_epicardium"]], px(rows["LVPWd"][3]), atol=1e-4)
      np.testing.assert_allclose(lm[1, P["lv_posterior_endocardium"]], px(rows["LVIDs"][3]), atol=1e-4)
      assert np.isnan(lm[:, :3]).all() and np.isnan(lm[1, [P["ivs_anterior"], P["lvpw_epicardium"]]]).all()
      np.testing.assert_allclose(ex["phases"], [schema.ED_PHASE, schema.ES_PHASE], atol=1e-7)
      # mm per pixel: the calipers' median of value / length, over the grid's scale.
      per_px = [10 * v / np.hypot(p2[0] - p1[0], p2[1] - p1[1]) for v, _, p1, p2 in rows.values()]
      assert ex["pixel_spacing_mm"] == pytest.approx(np.median(per_px) / scale, rel=1e-5)


def test_segmentation_trains_on_camus_and_scores_its_structures(releases, tmp_path, num_devices):
  root, _ = releases["camus"]
  last = loop.train_and_evaluate(_config("camus", root, tmp_path / "tfds"), str(tmp_path / "run"))
  for s in ("lv_cavity", "lv_myocardium", "left_atrium"):
    for phase in ("ed", "es"):
      assert 0.0 <= last[f"test/segmentation/dice/{s}/{phase}"] <= 1.0
  assert not any("right_ventricle" in k for k in last)          # CAMUS does not label it
  assert last["test/segmentation/lvef/studies_biplane"] == dense_release_trees.CAMUS_SPLITS["test"]


def test_segmentation_trains_on_echonet_dynamic_lv_only(releases, tmp_path, num_devices):
  root, _ = releases["echonet_dynamic"]
  workdir = str(tmp_path / "run")
  last = loop.train_and_evaluate(_config("echonet_dynamic", root, tmp_path / "tfds"), workdir)
  assert 0.0 <= last["test/segmentation/dice/lv_cavity/ed"] <= 1.0
  assert not any(k.startswith("test/segmentation/dice/lv_myocardium") for k in last)
  assert not any(k.startswith("test/segmentation/hd95") for k in last)   # no spacing, no mm
  assert last["test/segmentation/lvef/studies_monoplane"] == dense_release_trees.ECHONET_SPLITS["test"]
  assert np.isfinite(last["test/segmentation/lvef/true_masks_mae_vs_reported"])
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  ce = [r["train/loss/ce"] for r in rows if "train/loss/ce" in r]
  # Partial labels: at a uniform start, a background pixel may be any of 5 classes.
  assert ce[0] < np.log(len(schema.STRUCTURES)) and np.isfinite(ce).all()


def test_landmarks_train_on_echonet_lvh_and_report_calipers(releases, tmp_path, num_devices):
  root, _ = releases["echonet_lvh"]
  c = _config("echonet_lvh", root, tmp_path / "tfds", lm_config)
  last = loop.train_and_evaluate(c, str(tmp_path / "run"))
  for point in ("ivs_anterior", "lv_septal_endocardium", "lvpw_epicardium"):
    assert np.isfinite(last[f"test/landmarks/error_mm/{point}/ed"]), point
  assert not any("lv_apex" in k for k in last)                 # PLAX only: no apical points
  for meas in ("ivsd", "lvidd", "lvpwd", "lvids"):      # LVIDs: at the ES frame
    assert np.isfinite(last[f"test/landmarks/{meas}/mae_mm"]), meas
