"""Chamber segmentation through the one trainer (configs/segmentation.py, tiny model): masks
follow the frames through the pipeline's crop, the loss and metrics are what their docstrings
say, and a run trains, evaluates on held-out patients and writes its report with overlays."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from scipy import ndimage

import echovlm_jax
from configs import segmentation as seg_config
from echovlm_jax import distributed
from echovlm_jax.inference.frames import prepare_frames
from echovlm_jax.tools import export, predict
from echovlm_jax.train import checkpointing, workdir_config
from tests import dicom_fixtures as fm
from echovlm_jax.data import build, dense_transforms, input_pipeline, synthetic_render
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import segmentation as seg_eval
from echovlm_jax.evaluation import segmentation_metrics, simpson
from echovlm_jax.train import loop
from echovlm_jax.train.tasks import segmentation
from tests import train_tiny_config

CAVITY = schema.STRUCTURES.index("lv_cavity")


def tiny_config(data_dir: str, config_module=seg_config):
  """configs/segmentation.py (or landmarks.py) shrunk as tests/train_tiny_config.py shrinks
  echovlm."""
  c = train_tiny_config.shrink(config_module.get_config("size=ti,res=32"), data_dir)
  c.dense.decoder_features = 8
  c.total_steps, c.batch_size, c.warmup_steps, c.log_every, c.ckpt_every = 8, 8, 1, 1, 4
  c.lr = 3e-3
  for cfg in c.evals.values():
    if cfg.split == "validation":
      cfg.every = 4
  return c


def test_the_config_reads_ed_es_pairs_and_refuses_other_frames():
  c = seg_config.get_config("runlocal")
  assert (c.task, c.input.num_frames, c.input.frames_at) == ("segmentation", 2, "ed_es")
  with pytest.raises(ValueError, match="frames=3"):
    seg_config.get_config("frames=3")
  c.input.frames_at = "ed_es"
  c.input.num_frames = 1
  with pytest.raises(ValueError, match="num_frames=1: set it to 2"):
    build.builder_config_for(c.input)


def test_masks_and_points_follow_the_frames_through_the_crop():
  r = synthetic_render.render("a4c", {}, None, np.random.default_rng(0), 96, 2,
                              phases=np.array([schema.ED_PHASE, schema.ES_PHASE]), overlays=False)
  ex = {"frames": tf.constant(r.frames[..., None]), "masks": tf.constant(r.labels[..., None]),
        "landmarks": tf.constant(r.landmarks), "phases": tf.constant(r.phases),
        "pixel_spacing_mm": tf.constant(np.float32(r.pixel_spacing_mm)),
        "dense_truth": tf.constant(True), "view": tf.constant(3, tf.int64),
        "study_id": tf.constant(5, tf.int64), "source": tf.constant("synthetic"),
        "measurements": tf.constant(np.full(len(schema.MEASUREMENTS), 55.0, np.float32))}
  res = 64
  pre = dense_transforms.make_preprocess(res, 96, input_pipeline.model_frames, input_pipeline.crop_box)
  seed = tf.constant([7, 3], tf.int64)
  out = {k: v.numpy() for k, v in pre(ex, seed).items()}
  # The frames are exactly the contrastive pipeline's for the seed.
  np.testing.assert_array_equal(out["frames"], input_pipeline.model_frames(ex["frames"], res, seed).numpy())
  box = input_pipeline.crop_box(seed).numpy()[0]
  assert (box[2] - box[0]) < 1.0            # the seed crops: a real test of following it
  for t in range(2):
    cav = out["masks"][t] == CAVITY
    # The cropped mask is the cavity of the cropped image: dark there, brighter around it.
    img = out["frames"][t, ..., 0]
    assert img[cav].mean() < img[ndimage.binary_dilation(cav, iterations=3) & ~cav].mean() - 0.3
    for name in ("mitral_annulus_1", "mitral_annulus_2", "lv_apex"):
      row, col = out["landmarks"][t, schema.LANDMARKS.index(name)]
      i, j = int(round(row)), int(round(col))
      near = cav[max(i - 2, 0):i + 3, max(j - 2, 0):j + 3]
      assert near.any() and not near.all(), (t, name)    # still on the cavity's border
  # Without a seed: no crop, the stored mask resized, the spacing scaled to the model's pixels.
  plain = {k: v.numpy() for k, v in pre(ex, None).items()}
  assert plain["pixel_spacing_mm"] == pytest.approx(r.pixel_spacing_mm * 95 / 63, rel=1e-5)
  assert set(np.unique(plain["masks"])) == set(np.unique(r.labels))


def test_the_loss_is_cross_entropy_plus_batch_dice():
  masks = jnp.asarray(np.random.default_rng(0).integers(0, 3, (2, 1, 8, 8)), jnp.int32)
  perfect = 50.0 * jnp.asarray(np.eye(segmentation.NUM_CLASSES)[np.asarray(masks)], jnp.float32)
  loss, terms = segmentation.segmentation_loss(perfect, masks, jnp.ones(2), 1.0)
  # Structures 3-5 are absent from truth and prediction: their Dice is 1 by DICE_EPS.
  assert float(terms["ce"]) < 1e-6 and float(terms["soft_dice"]) == pytest.approx(1.0, abs=1e-5)
  uniform = jnp.zeros((2, 1, 8, 8, segmentation.NUM_CLASSES))
  loss, terms = segmentation.segmentation_loss(uniform, masks, jnp.ones(2), 0.0)
  # A float32 mean over 128 pixels: the order XLA's code generator sums them in moves the
  # last digits (1.5e-6 relative with the tests' -O0, conftest.py); a wrong formula is off by %.
  assert float(loss) == pytest.approx(np.log(segmentation.NUM_CLASSES), rel=1e-5)
  # A row of weight 0 (padding) changes nothing.
  bad = perfect.at[1].set(-perfect[1])
  a = segmentation.segmentation_loss(perfect[:1], masks[:1], jnp.ones(1), 1.0)[0]
  b = segmentation.segmentation_loss(bad, masks, jnp.array([1.0, 0.0]), 1.0)[0]
  assert float(a) == pytest.approx(float(b), abs=1e-6)


def test_a_source_labelling_fewer_structures_is_not_taught_they_are_absent():
  """EchoNet-Dynamic labels the LV only: a background pixel may be myocardium, so predicting
  myocardium there costs nothing, while predicting it on a fully labelled source does."""
  rng = np.random.default_rng(1)
  masks = jnp.asarray(rng.integers(0, 2, (2, 1, 8, 8)), jnp.int32)   # background / LV cavity
  logits = jnp.asarray(rng.normal(size=(2, 1, 8, 8, segmentation.NUM_CLASSES)), jnp.float32)
  full = jnp.ones((2, segmentation.NUM_CLASSES))
  lv_only = full.at[:, 2:].set(0.0)
  # With every structure labelled it is exactly the plain cross-entropy.
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, masks).mean()
  _, terms = segmentation.segmentation_loss(logits, masks, jnp.ones(2), 0.0, full)
  assert float(terms["ce"]) == pytest.approx(float(plain), rel=1e-6)
  # LV-only rows: a background pixel's term is -log(p_background + p_of the unlabelled 2..5).
  p = np.asarray(jax.nn.softmax(logits, axis=-1))
  m = np.asarray(masks)
  want = np.where(m == 1, -np.log(p[..., 1]), -np.log(p[..., 0] + p[..., 2:].sum(-1))).mean()
  _, terms = segmentation.segmentation_loss(logits, masks, jnp.ones(2), 0.0, lv_only)
  assert float(terms["ce"]) == pytest.approx(float(want), rel=1e-5)
  # Myocardium predicted on background: free for LV-only rows, costly for fully labelled ones.
  myo_on_bg = 20.0 * jax.nn.one_hot(jnp.where(masks == 1, 1, 2), segmentation.NUM_CLASSES)
  free = segmentation.segmentation_loss(myo_on_bg, masks, jnp.ones(2), 1.0, lv_only)
  costly = segmentation.segmentation_loss(myo_on_bg, masks, jnp.ones(2), 1.0, full)
  assert float(free[0]) < 1e-3 and float(free[1]["soft_dice"]) == pytest.approx(1.0, abs=1e-3)
  assert float(costly[0]) > 5.0


def test_dice_and_surface_distances():
  yy, xx = np.mgrid[:64, :64]
  disk = (yy - 32) ** 2 + (xx - 30) ** 2 <= 12 ** 2
  shifted = np.roll(disk, 3, axis=1)
  assert segmentation_metrics.dice(disk, disk) == 1.0
  assert np.isnan(segmentation_metrics.dice(disk & False, disk & False))
  assert 0.8 < segmentation_metrics.dice(disk, shifted) < 0.9
  hd95, msd = segmentation_metrics.surface_distances(disk, disk, 0.5)
  assert hd95 == msd == 0.0
  hd95, msd = segmentation_metrics.surface_distances(disk, shifted, 0.5)
  # A 3-pixel shift: no boundary point is farther than 3 px (1.5 mm), and the ones on the
  # disk's left and right edges are that far.
  assert 1.0 <= hd95 <= 1.5 + 1e-9 and 0.2 < msd < hd95
  assert np.isnan(segmentation_metrics.surface_distances(disk, disk & False, 0.5)[0])
  assert seg_eval.phase_name(0.0) == "ed" and seg_eval.phase_name(0.35) == "es"
  assert seg_eval.phase_name(0.98) == "ed" and seg_eval.phase_name(float("nan")) == "other"


def test_method_of_discs_matches_the_ellipsoid_and_ignores_rotation():
  # A prolate ellipsoid's mid-plane is an ellipse of semi-axes a (long) and b in both apical
  # views: V = 4/3 pi a b^2, at any angle of the long axis in the image.
  a, b, spacing = 60.0, 25.0, 0.5
  yy, xx = np.mgrid[:300, :300] - 150.0
  for angle in (0.0, 0.6):
    u = np.cos(angle) * yy + np.sin(angle) * xx
    v = -np.sin(angle) * yy + np.cos(angle) * xx
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1
    want = 4.0 / 3.0 * np.pi * (a * spacing) * (b * spacing) ** 2 / 1000.0
    assert simpson.volume_ml(mask, spacing, mask, spacing) == pytest.approx(want, rel=0.03)
    assert simpson.volume_ml(mask, spacing) == pytest.approx(want, rel=0.03)   # monoplane
  small = (yy / (0.8 * a)) ** 2 + (xx / (0.7 * b)) ** 2 <= 1
  ef = simpson.ejection_fraction(simpson.volume_ml(mask, spacing), simpson.volume_ml(small, spacing))
  assert ef == pytest.approx(100 * (1 - 0.8 * 0.7 ** 2), abs=1.5)


def test_the_config_trains_and_reports_held_out_metrics(tiny_dense_echoground, tmp_path, num_devices):
  c = tiny_config(tiny_dense_echoground[0].data_dir)
  workdir = str(tmp_path / "run")
  last = loop.train_and_evaluate(c, workdir)
  for split in ("val", "test"):
    dice = last[f"{split}/segmentation/dice/mean"]
    assert 0.0 <= dice <= 1.0, split
    assert np.isfinite(last[f"{split}/segmentation/hd95/lv_cavity/ed"]) or \
        last[f"{split}/segmentation/missing/lv_cavity/ed"] > 0
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  ce = [r["train/loss/ce"] for r in rows if "train/loss/ce" in r]
  # A zero output layer starts at uniform probabilities: cross-entropy log(6).
  assert ce[0] == pytest.approx(np.log(segmentation.NUM_CLASSES), rel=1e-3)
  assert len(ce) == 8 and np.isfinite(ce).all() and ce[-1] < ce[0]
  report = open(os.path.join(workdir, "report.md")).read()
  assert "Segmentation report" in report and "| lv_cavity |" in report
  assert os.path.getsize(os.path.join(workdir, "report", "overlays_test.png")) > 0
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))["metrics"]
  assert "test/segmentation/dice/lv_myocardium/es" in metrics
  assert "LVEF by the method of discs" in report and "test/segmentation/lvef/mae_vs_reported" in metrics
  _export_and_segment(workdir, tmp_path)


def _export_and_segment(workdir, tmp_path):
  """The run exports as an artifact that load_pretrained reads back as a segmenter: its masks
  are the trained model's argmax in the caller's pixel grid, and predict writes them for a
  DICOM."""
  art = export.export(workdir, str(tmp_path / "art"))
  model = echovlm_jax.load_pretrained(art)
  assert model.task == "segmentation" and model.outputs == list(schema.STRUCTURES)
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 255, (3, 2, 32, 32), dtype=np.uint8)
  masks = model.segment(frames)
  assert masks.shape == (3, 2, 32, 32) and masks.dtype == np.uint8
  restored, _ = checkpointing.restore_params(workdir_config.load(workdir), workdir,
                                             distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1}),
                                             vocab_size=1)
  want = np.asarray(seg_eval.make_predict_fn(restored)(prepare_frames(frames, 32)))
  np.testing.assert_array_equal(masks, want)              # res == frame size: the same grid
  big = model.segment(np.repeat(np.repeat(frames, 2, axis=2), 2, axis=3))
  assert big.shape == (3, 2, 64, 64)
  with pytest.raises(ValueError, match="needs a landmark one"):
    model.landmarks(frames)
  dcm = fm.write_dicom(tmp_path / "clip.dcm", fm.cine_frames(4, 48, 64, seed=2)[0], mode="mono")
  out = tmp_path / "masks"
  assert predict.main(["--artifact", art, "--out", str(out), "--frames", "2", dcm]) == 0
  assert sorted(os.listdir(out)) == ["clip_f0_mask.png", "clip_f0_overlay.png",
                                     "clip_f1_mask.png", "clip_f1_overlay.png"]
  assert predict.main(["--artifact", art, "--task", "views", dcm]) == 2   # not a dual encoder


def test_the_clip_shaped_control_is_a_clip_tower_of_the_config_size(tmp_path):
  """benchmarks/clip_shaped_init.py writes a Hugging Face CLIP whose vision tower model_init
  reads as CLIP's architecture at the `ti` width and depth (the label-efficiency control)."""
  import sys  # pylint: disable=g-import-not-at-top
  from echovlm_jax.interop import init_from_checkpoint  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
  import clip_shaped_init  # pylint: disable=g-import-not-at-top
  d = clip_shaped_init.write(str(tmp_path / "clip"), size="ti", res=32)
  c = seg_config.get_config("size=ti,res=32")
  ti = (c.model.image.width, c.model.image.depth, c.model.image.heads)
  c.model_init = d
  img = init_from_checkpoint.configure(c).model.image
  assert (img.width, img.depth, img.heads) == ti
  assert (img.act, img.qkv_bias, img.ln_pre, img.pool) == ("quick_gelu", True, True, "tok")
