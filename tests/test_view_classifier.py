"""The view classifier through the one trainer (configs/view_classifier.py, tiny model): it
trains on trusted views only, with class weights, evaluates on held-out patients and writes
its report; the class weights, calibration and coverage are what their docstrings say."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs import view_classifier as vc_config
from echovlm_jax import distributed
from echovlm_jax.data import input_pipeline
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import view_classification as view_eval
from echovlm_jax.train import loop, run_config, state as train_state
from echovlm_jax.train.tasks import view_classifier
from tests import train_tiny_config


def tiny_config(data_dir: str, **overrides):
  """configs/view_classifier.py shrunk as tests/train_tiny_config.py shrinks echovlm."""
  c = train_tiny_config.shrink(vc_config.get_config("size=ti,res=32,frames=2"), data_dir)
  c.total_steps, c.batch_size, c.warmup_steps, c.log_every, c.ckpt_every = 8, 8, 1, 1, 4
  c.lr = 3e-3
  c.evals.validation_views.every = 4
  for k, v in overrides.items():
    c[k] = v
  return c


def test_runlocal_comes_from_the_arg_string():
  """Read from the arg, not guessed from echovlm's runlocal step count."""
  local, full = vc_config.get_config("size=ti,runlocal"), vc_config.get_config("size=ti")
  assert (local.total_steps, local.warmup_steps, local.evals.validation_views.every) == (10, 2, 5)
  assert (full.total_steps, full.warmup_steps, full.evals.validation_views.every) == (1000, 50, 250)
  assert vc_config.get_config("runlocal=false").total_steps == 1000


def test_the_config_trains_and_reports_held_out_metrics(tiny_echoground, tmp_path, num_devices):
  ic, _ = tiny_echoground
  c = tiny_config(ic.data_dir)
  workdir = str(tmp_path / "run")
  last = loop.train_and_evaluate(c, workdir)
  for split in ("val", "test"):
    for k in ("accuracy", "balanced_accuracy", "coverage"):
      assert 0.0 <= last[f"{split}/view_classification/{k}"] <= 1.0, (split, k)
    assert 0.0 <= last[f"{split}/view_classification/ece"] <= 1.0
  assert "temperature" not in last and np.isfinite(last["loss"])
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  # A zero head starts at uniform probabilities, log(11); then the weights move. (Learning
  # to tell views apart takes longer: benchmarks/view_labelling.py.)
  assert losses[0] == pytest.approx(np.log(len(schema.KNOWN_VIEWS)), rel=1e-3)
  assert len(losses) == 8 and np.isfinite(losses).all() and len(set(losses[2:])) > 1
  assert any("val/view_classification/accuracy" in r and r["step"] == 4 for r in rows)
  report = open(os.path.join(workdir, "report.md")).read()
  assert "View classifier report" in report and "coverage" in report
  for name in ("confusion_test.png", "reliability_test.png", "coverage_test.png",
               "confusion_validation.png", "training_curves.png"):
    assert os.path.getsize(os.path.join(workdir, "report", name)) > 0, name
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  test = metrics["evals"]["test_views"]
  n_test = int(np.asarray(test["confusion"]).sum())
  assert n_test == test["n"] > 0
  # Held out by patient: the test split's labelled images, every one scored once.
  want = input_pipeline.num_examples(c.input, "test")  # synthetic: every view is known
  assert n_test == want


def test_only_trusted_views_are_read_and_counted(tiny_echoground, num_devices):
  ic, _ = tiny_echoground
  c = tiny_config(ic.data_dir)
  mesh = distributed.create_mesh(c.mesh)
  it = input_pipeline.make_train_iterator(c.input, 8, mesh, seed=0, keep=view_classifier.keep_fn(c))
  n_train = input_pipeline.num_examples(c.input, "train")
  assert it.view_counts.sum() == n_train and it.view_counts[schema.UNKNOWN_VIEW_ID] == 0
  c.view_classifier.labelled_patient_fraction = 0.5
  half = input_pipeline.make_train_iterator(c.input, 8, mesh, seed=0, keep=view_classifier.keep_fn(c))
  assert 0 < half.view_counts.sum() < n_train
  batch = next(half)
  assert (np.asarray(jax.device_get(batch["view"])) != schema.UNKNOWN_VIEW_ID).all()
  c.view_classifier.labelled_patient_fraction = 1.0
  c.view_classifier.trusted_sources = ["echoview"]  # synthetic data has none: nothing to learn
  with pytest.raises(ValueError, match="too few"):
    input_pipeline.make_train_iterator(c.input, 8, mesh, seed=0, keep=view_classifier.keep_fn(c))


def test_balanced_weights_give_every_present_view_the_same_total():
  counts = np.zeros(len(schema.VIEWS))
  counts[schema.VIEWS.index("a4c")], counts[schema.VIEWS.index("plax")] = 90, 10
  counts[schema.UNKNOWN_VIEW_ID] = 1000  # never a class
  w = view_classifier.class_weights(counts, "balanced")
  a4c, plax = schema.KNOWN_VIEWS.index("a4c"), schema.KNOWN_VIEWS.index("plax")
  assert w[a4c] * 90 == pytest.approx(w[plax] * 10) == pytest.approx(50)
  assert np.count_nonzero(w) == 2
  assert (view_classifier.class_weights(counts, "none") == 1).all()


def test_calibration_and_coverage_by_hand():
  # Two images at 0.95 (one right), two at 0.55 (both right): ECE = .5*|.5-.95| + .5*|1-.55|.
  probs = np.zeros((4, view_classifier.NUM_CLASSES), np.float32)
  probs[:, 0] = [0.95, 0.95, 0.55, 0.55]
  probs[:, 1] = 1 - probs[:, 0]
  y = np.array([0, 1, 0, 0])
  res = view_eval.classification_metrics(probs, y, threshold=0.9)
  assert res["accuracy"] == 0.75
  assert res["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
  assert (res["coverage"], res["accuracy_at_threshold"]) == (0.5, 0.5)
  assert res["per_view_recall"][schema.KNOWN_VIEWS[0]] == 1.0
  assert res["per_view_recall"][schema.KNOWN_VIEWS[1]] == 0.0


def test_a_contrastive_evaluator_in_a_classifier_config_fails_at_start(tiny_echoground, tmp_path):
  ic, _ = tiny_echoground
  c = tiny_config(ic.data_dir)
  c.evals.validation_views.type = "zero_shot_views"
  with pytest.raises(run_config.ConfigError, match="view_classification"):
    loop.train_and_evaluate(c, str(tmp_path / "bad"))


def _artifact_sized(data_dir):
  """A classifier config whose image tower has tests/test_export.py's artifact shapes."""
  c = tiny_config(data_dir)
  c.model.image.update(width=32, depth=1, heads=2, mlp_ratio=2, patch=8)
  return c


def _image_leaves(params):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  pure = nnx.to_pure_dict(params)
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(pure["image"])}


def test_the_tower_comes_from_an_exported_echovlm_or_pretrained_towers(tmp_path_factory, tmp_path,
                                                                       num_devices):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from echovlm_jax.interop import layout_writers  # pylint: disable=g-import-not-at-top
  from tests import test_export  # pylint: disable=g-import-not-at-top
  art = test_export.make_artifact(tmp_path_factory)
  want = _image_leaves(nnx.state(art["reference"], nnx.Param))
  c = _artifact_sized(art["data_dir"])
  c.seed = 1  # the artifact was initialised with seed 0: scratch must differ from it
  mesh = distributed.create_mesh(c.mesh)
  scratch = _image_leaves(train_state.create_state(c, mesh, 128)[1]["params"])
  c.view_classifier.init_artifact = art["artifact"]
  graphdef, state, _, _ = train_state.create_state(c, mesh, 128)
  got = _image_leaves(state["params"])
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  assert any(not np.array_equal(scratch[k], want[k]) for k in want)  # not a coincidence
  # Pretrained two-tower weights (big_vision layout): the image tower is taken, the rest skipped.
  npz = str(tmp_path / "bv.npz")
  flat = layout_writers.to_big_vision(nnx.state(art["reference"], nnx.Param), art["config"].model)
  np.savez(npz, **{f"params/{k}": v for k, v in flat.items()})
  c.view_classifier.init_artifact = ""
  c.model_init = npz
  got = _image_leaves(train_state.create_state(c, mesh, 128)[1]["params"])
  for k in want:
    np.testing.assert_allclose(got[k], want[k], atol=1e-6, err_msg=k)
  # A tower of other shapes is refused at start, naming the key.
  c.model_init = ""
  c.view_classifier.init_artifact = art["artifact"]
  c.model.image.width = 64
  with pytest.raises(run_config.ConfigError, match="init_artifact"):
    train_state.create_state(c, mesh, 128)


def test_mode_evaluate_scores_a_classifier_checkpoint(tiny_echoground, tmp_path, num_devices):
  from echovlm_jax.train import evaluate  # pylint: disable=g-import-not-at-top
  ic, _ = tiny_echoground
  c = tiny_config(ic.data_dir, total_steps=2, ckpt_every=2)
  c.evals.validation_views.every = 0
  workdir = str(tmp_path / "run")
  trained = loop.train_and_evaluate(c, workdir)
  again = evaluate.evaluate_checkpoint(c, workdir)
  for k in ("val/view_classification/accuracy", "test/view_classification/ece"):
    assert again[k] == pytest.approx(trained[k])  # the same checkpoint, the same numbers
