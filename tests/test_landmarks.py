"""Landmark detection through the one trainer (configs/landmarks.py, tiny model): the
soft-argmax reads a heatmap's peak, the loss asks only for the points a frame shows, and a
run trains, evaluates on held-out patients and reports point errors and PLAX calipers."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import echovlm_jax
from configs import landmarks as lm_config
from echovlm_jax.tools import export
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import landmarks as lm_eval
from echovlm_jax.models import dense
from echovlm_jax.train import loop
from echovlm_jax.train.tasks import landmarks
from tests.test_segmentation import tiny_config


def test_soft_argmax_finds_a_sharp_peak_to_sub_pixel():
  h = np.full((1, 1, 20, 30, 2), -50.0, np.float32)
  h[0, 0, 5, 7, 0] = 50.0
  h[0, 0, 12, 20, 1] = h[0, 0, 12, 21, 1] = 50.0     # two equal peaks: their midpoint
  pts = np.asarray(dense.soft_argmax(jnp.asarray(h)))
  np.testing.assert_allclose(pts[0, 0], [[5, 7], [12, 20.5]], atol=1e-3)


def test_the_loss_asks_only_for_the_points_a_frame_shows():
  h = np.full((2, 1, 16, 16, len(schema.LANDMARKS)), -50.0, np.float32)
  h[..., 4, 6, :] = 50.0                               # every map peaks at (4, 6)
  pts = np.full((2, 1, len(schema.LANDMARKS), 2), np.nan, np.float32)
  pts[0, 0, 0] = (4, 9)                                # 3 px off
  pts[0, 0, 1] = (40, 9)                               # outside the frame: not asked for
  pts[1, 0, 2] = (0, 0)                                # a padding row's point
  loss, _ = landmarks.landmark_loss(jnp.asarray(h), jnp.asarray(pts), jnp.array([1.0, 0.0]))
  assert float(loss) == pytest.approx(3.0, abs=1e-3)


def test_the_heatmap_term_is_a_kl_to_a_gaussian_at_the_point():
  pts = np.full((1, 1, len(schema.LANDMARKS), 2), np.nan, np.float32)
  pts[0, 0, 0] = (5.0, 9.5)
  target = landmarks.gaussian_targets(jnp.asarray(pts), 16, 20, 1.5)
  assert float(target[0, 0, ..., 0].sum()) == pytest.approx(1.0, rel=1e-5)
  own = jnp.log(jnp.maximum(target, 1e-30))        # finite, as a network's heatmap is
  np.testing.assert_allclose(dense.soft_argmax(own)[0, 0, 0], (5.0, 9.5), atol=1e-3)
  # The Gaussian's own log as heatmap: KL 0; a flat map: KL log(H W) - the Gaussian's entropy.
  _, terms = landmarks.landmark_loss(own, jnp.asarray(pts), jnp.ones(1), 1.5, 1.0)
  assert float(terms["heatmap_kl"]) == pytest.approx(0.0, abs=1e-4)
  flat = jnp.zeros_like(target)
  _, terms = landmarks.landmark_loss(flat, jnp.asarray(pts), jnp.ones(1), 1.5, 1.0)
  q = np.asarray(target[0, 0, ..., 0]).ravel()
  entropy = -np.sum(q * np.log(np.maximum(q, 1e-30)))
  assert float(terms["heatmap_kl"]) == pytest.approx(np.log(16 * 20) - entropy, rel=1e-4)


def test_the_config_trains_and_reports_point_errors(tiny_dense_echoground, tmp_path, num_devices):
  c = tiny_config(tiny_dense_echoground[0].data_dir, lm_config)
  assert c.task == "landmarks"
  workdir = str(tmp_path / "run")
  last = loop.train_and_evaluate(c, workdir)
  for split in ("val", "test"):
    err = last[f"{split}/landmarks/error_mm/mean"]
    assert np.isfinite(err) and err > 0, split
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  l1 = [r["train/loss/l1_px"] for r in rows if "train/loss/l1_px" in r]
  assert len(l1) == 8 and np.isfinite(l1).all() and len(set(l1[2:])) > 1
  report = open(os.path.join(workdir, "report.md")).read()
  assert "Landmark report" in report and "| lv_apex |" in report and "PLAX at end-diastole" in report
  assert "![points](report/points_test.png)" in report
  png = np.asarray(Image.open(os.path.join(workdir, "report", "points_test.png")))
  # Rows of (frame, frame with points) at 3x: the marked half differs from the plain one.
  assert png.shape[1] == 2 * 3 * 32 and png.shape[0] % (3 * 32) == 0
  assert (png[:, 96:] != png[:, :96]).any()
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))["metrics"]
  assert "test/landmarks/error_px/lv_apex/ed" in metrics
  assert set(lm_eval.EVAL_TYPES) == {c.evals.test_landmarks.type}
  # Exported, it reads points back in the caller's pixel grid.
  model = echovlm_jax.load_pretrained(export.export(workdir, str(tmp_path / "art")))
  frames = np.random.default_rng(0).integers(0, 255, (2, 1, 32, 32), dtype=np.uint8)
  pts = model.landmarks(frames)
  big = model.landmarks(np.repeat(np.repeat(frames, 3, axis=2), 3, axis=3))
  assert pts.shape == (2, 1, len(schema.LANDMARKS), 2) and (pts >= 0).all() and (pts <= 31).all()
  # The same frames at 96 px (each pixel 3 x 3) go to the model as nearly the same 32 px
  # frames: the same points, scaled by 95 / 31 to the bigger grid.
  assert big.shape == pts.shape and np.abs(big / (95 / 31) - pts).max() < 1.5


def test_the_direct_regression_head_trains_exports_and_predicts(tiny_dense_echoground, tmp_path,
                                                               num_devices):
  """config.dense.landmark_head="regression" (the comparison the heatmap head is measured
  against): points from pooled tokens, starting at the frame's centre; the same evaluator,
  export and load_pretrained(...).landmarks."""
  c = tiny_config(tiny_dense_echoground[0].data_dir, lm_config)
  c.dense.landmark_head = "regression"
  with pytest.raises(ValueError, match="heatmap_weight=0"):
    landmarks.TASK.check_config(c)
  c.dense.heatmap_weight = 0.0
  c.evals = {"test_landmarks": dict(type="landmarks", split="test", every=0)}
  workdir = str(tmp_path / "run")
  last = loop.train_and_evaluate(c, workdir)
  assert np.isfinite(last["test/landmarks/error_px/lv_apex/ed"])
  model = echovlm_jax.load_pretrained(export.export(workdir, str(tmp_path / "art")))
  assert model.config["landmark_head"] == "regression"
  pts = model.landmarks(np.zeros((2, 2, 32, 32), np.uint8))
  assert pts.shape == (2, 2, len(schema.LANDMARKS), 2) and np.isfinite(pts).all()
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  l1 = [r["train/loss/l1_px"] for r in rows if "train/loss/l1_px" in r]
  assert len(l1) == 8 and "train/loss/heatmap_kl" not in rows[0] and len(set(l1)) > 1
