"""Clips end to end: synthetic cines at a stated frame rate without the M-mode strip, DICOM
cines at a fixed time step, random training windows and averaged evaluation windows
(data/clip_windows.py), configs/echovlm.py's video tower trained on clips and exported,
`load_pretrained(...).classify_views` on clips, `predict` on a multi-frame DICOM, and the LVEF
task (configs/lvef.py) initialised from the exported video tower."""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from echovlm_jax.data import clip_windows
from echovlm_jax.data import synthetic_layout
from echovlm_jax.data import synthetic_render
from echovlm_jax.echo import schema

T = 4             # frames stored per clip in this module's dataset
WINDOW = 2        # frames the model reads at once
FPS = 8.0


def test_window_starts_cover_the_clip_evenly():
  assert clip_windows.starts(16, 8, 3).tolist() == [0, 4, 8]
  assert clip_windows.starts(16, 8, 100).tolist() == list(range(9))   # at most every position
  assert clip_windows.starts(10, 4, 1).tolist() == [3]                # one window: the middle
  assert clip_windows.starts(8, 8, 3).tolist() == [0]
  clip = np.arange(2 * 6).reshape(2, 6)
  np.testing.assert_array_equal(clip_windows.take(clip, 2, 3),
                                [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]])
  assert clip_windows.resolve(16, 0) == 16
  with pytest.raises(ValueError, match="config.input.window"):
    clip_windows.resolve(4, 5)


def test_synthetic_cines_run_at_the_stated_frame_rate_and_show_the_ef():
  """Phases advance by (heart rate / 60) / fps per frame; clips drop the M-mode strip; the LV
  cavity's area change over a cycle follows the EF."""
  assert synthetic_layout.layout_for("a4c", 64, 1).kind == "sector_mmode"
  assert synthetic_layout.layout_for("a4c", 64, 16).kind == "sector"
  lv = schema.STRUCTURES.index("lv_cavity")
  fac = {}
  for ef in (25.0, 65.0):
    r = synthetic_render.render("a4c", {"lvef": ef}, "F", np.random.default_rng(3), 64, 40,
                                fps=30.0)
    steps = np.diff(r.phases)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-5)           # a constant time step
    assert 55.0 <= steps[0] * 30.0 * 60.0 <= 100.0                   # = the heart rate in bpm
    area = (r.labels == lv).sum(axis=(1, 2)).astype(float)            # 40 frames > one cycle
    fac[ef] = (area.max() - area.min()) / area.max()
  assert fac[65.0] > fac[25.0] + 0.15, fac


def test_dicom_cines_are_sampled_at_a_fixed_time_step(tmp_path):
  from echovlm_jax.data import dicom
  from tests import dicom_fixtures
  frames = np.repeat(np.repeat((np.arange(60) * 4).astype(np.uint8)[:, None, None], 16, 1), 16, 2)
  path = dicom_fixtures.write_dicom(tmp_path / "cine.dcm", frames, mode="mono", phi=False,
                                    frame_time_ms=20.0)                # 50 frames / s
  got = dicom.load_frames(path, num_frames=4, fps=25.0, mask=False)[:, 8, 8] // 4
  # Every second stored frame (40 ms), centred in the 60-frame cine.
  assert got.tolist() == dicom.indices_at_rate(60, 4, 20.0, 25.0).tolist() == [26, 28, 30, 32]
  # Without a rate: evenly over the whole file, as before.
  assert (dicom.load_frames(path, num_frames=4, mask=False)[:, 8, 8] // 4).tolist() == [7, 22, 37, 52]
  # A cine shorter than the window repeats its ends; no frame time falls back to even spacing.
  assert dicom.indices_at_rate(3, 5, 20.0, 50.0).tolist() == [0, 0, 1, 2, 2]
  assert dicom.indices_at_rate(60, 4, None, 25.0).tolist() == dicom.sample_indices(60, 4).tolist()


# ----------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def clip_data(tmp_path_factory):
  """(input_config, builder) of a tiny synthetic dataset of 4-frame clips at 8 frames / s."""
  from echovlm_jax.data import build
  from tests.echoground_fixtures import tiny_input_config
  ic = tiny_input_config(tmp_path_factory.mktemp("tfds_clips"), num_frames=T, clip_fps=FPS,
                         res=32, window=WINDOW, eval_windows=3, augment=False)
  return ic, build.ensure_dataset(ic)


def _raw(builder, split):
  from echovlm_jax.data import input_pipeline  # noqa: F401  (TensorFlow set up as the pipeline)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return [ex["frames"][..., 0].astype(np.float32) / 127.5 - 1.0 for ex in ds.as_numpy_iterator()]


def test_training_reads_random_windows_and_evaluation_fixed_ones(clip_data):
  from echovlm_jax import distributed
  from echovlm_jax.data import input_pipeline
  ic, builder = clip_data
  assert builder.builder_config.name.endswith("_t4_v256_f8")
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  train = input_pipeline.make_train_iterator(ic, 8, mesh, seed=0)
  raw = _raw(builder, "train")
  starts = []
  for _ in range(2):
    frames = np.asarray(next(train)["frames"])[..., 0]                 # [8, WINDOW, 32, 32]
    assert frames.shape == (8, WINDOW, 32, 32)
    for clip in frames:   # each is WINDOW consecutive frames of a stored training clip
      found = [s for r in raw for s in range(T - WINDOW + 1)
               if np.allclose(r[s:s + WINDOW], clip, atol=1e-5)]
      assert found, "a training window that is no stored clip's consecutive frames"
      starts.append(found[0])
  assert len(set(starts)) > 1                                           # the start varies
  batch = next(iter(input_pipeline.make_eval_iterator(ic, "test", 8, mesh)))
  frames = np.asarray(batch["frames"])[..., 0]                          # [8, K, WINDOW, 32, 32]
  assert frames.shape == (8, 3, WINDOW, 32, 32)
  first = _raw(builder, "test")[0]
  for k, s in enumerate(clip_windows.starts(T, WINDOW, 3)):
    np.testing.assert_allclose(frames[0, k], first[s:s + WINDOW], atol=1e-5)


def test_the_image_tower_averages_evaluation_windows():
  from tests.test_model import make_batch, make_model, tiny_config
  model = make_model(tiny_config(image=dict(temporal="factorised", frames=T)))
  clips = np.stack([make_batch(n=2, t=WINDOW, seed=s)["frames"] for s in range(3)], axis=1)
  enc = nnx.jit(lambda m, x: m.image(x))
  per_window = np.stack([enc(model, clips[:, k]) for k in range(3)], axis=1)
  np.testing.assert_allclose(enc(model, clips), per_window.mean(axis=1), atol=1e-5)


# ----------------------------------------------------------------------------- end to end
def _use_input(c: ml_collections.ConfigDict, ic: ml_collections.ConfigDict) -> None:
  """c.input takes the clip dataset's values (the model's references to it stay)."""
  for k, v in ic.items():
    c.input[k] = v


def _video_config(ic) -> ml_collections.ConfigDict:
  """configs/echovlm.py with frames=4 (its video tower: temporal "factorised"), tiny towers."""
  from configs import echovlm
  from tests import train_tiny_config
  c = echovlm.get_config("frames=4,res=32,runlocal")
  assert c.model.image.temporal == "factorised"                         # clips: the video tower
  assert echovlm.get_config("res=32").model.image.temporal == "mean"   # stills: frame average
  c = train_tiny_config.shrink(c)
  _use_input(c, ic)
  c.input.augment = True
  c.model.image.temporal = "factorised"      # shrink keeps other tests on the frame average
  c.model.meas_hidden = 8
  c.total_steps, c.batch_size, c.ckpt_every, c.log_every = 6, 8, 6, 1
  c.evals = ml_collections.ConfigDict()
  c.evals.test_views = dict(type="zero_shot_views", split="test", every=0)
  c.evals.test_findings = dict(type="zero_shot_findings", split="test", every=0)
  c.evals.test_study = dict(type="study_pooling", split="test", every=0, train_split="train",
                            train_max_batches=0)
  return c


@pytest.fixture(scope="module")
def video_artifact(clip_data, tmp_path_factory):
  """(workdir, artifact) of configs/echovlm.py's video tower trained 6 steps on the clips and
  exported."""
  from echovlm_jax.tools import export
  from echovlm_jax.train import loop
  ic, builder = clip_data
  root = tmp_path_factory.mktemp("video_run")
  workdir = str(root / "run")
  loop.train_and_evaluate(_video_config(ic), workdir)
  return workdir, export.export(workdir, str(root / "artifact"), data_dir=builder.data_dir)


def test_the_video_tower_trains_end_to_end_and_exports(video_artifact):
  workdir, art = video_artifact
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 6 and np.isfinite(losses).all()
  merged = {k: v for r in rows for k, v in r.items()}
  assert np.isfinite(merged["test/zero_shot_views/accuracy"])
  assert np.isfinite(merged["test/zero_shot_findings/macro_auc"])
  cfg = json.load(open(os.path.join(art, "config.json")))
  assert cfg["input"]["num_frames"] == T and cfg["input"]["window"] == WINDOW
  assert cfg["input"]["clip_fps"] == FPS and cfg["model"]["image"]["temporal"] == "factorised"
  # The study pooling fitted at the last step travels with the artifact.
  assert np.isfinite(merged["test/study_pooling/attention/macro_auc"])
  assert os.path.exists(os.path.join(art, "study_pooling.npz"))


def test_a_video_artifact_classifies_clips_and_dicom_cines(video_artifact, clip_data, tmp_path,
                                                           capsys):
  from echovlm_jax.inference.load import load_pretrained
  from echovlm_jax.tools import predict
  from tests import dicom_fixtures
  _, art = video_artifact
  model = load_pretrained(art)
  raw = np.stack(_raw(clip_data[1], "test")[:3])                           # [3, T, 32, 32]
  clips = np.clip(np.rint((raw + 1.0) * 127.5), 0, 255).astype(np.uint8)   # [3, T, 32, 32]
  out = model.classify_views(clips)
  assert out["probs"].shape == (3, len(model.views))
  np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, atol=1e-5)
  # A clip of T frames is read as the evaluation reads it: its windows [N, K, W], averaged by
  # the tower; not as one T-frame clip.
  from echovlm_jax.inference import frames as frames_lib
  net = nnx.merge(model.graphdef, model.params)
  x = frames_lib.prepare_frames(clips, model.res)                           # [3, T, 32, 32, 1]
  windows = clip_windows.take(x, WINDOW, 3)                                 # [3, K, W, 32, 32, 1]
  emb = model.encode_images(clips)
  encode = nnx.jit(lambda m, v: m.encode_image(v))  # one compile per shape, not per eager op
  np.testing.assert_allclose(emb, np.asarray(encode(net, windows)), atol=1e-5)
  assert np.abs(emb - np.asarray(encode(net, x))).max() > 1e-4
  # Studies: the artifact's fitted pooling over each study's clips.
  studies = model.classify_study_findings(clips, ["s1", "s2", "s1"])
  assert studies["pooling"] == "attention" and list(studies["studies"]) == ["s1", "s2"]
  assert studies["probs"].shape == (2, len(model.labels))
  enc = model.encode_studies(clips, ["s1", "s2", "s1"])
  assert enc["study_emb"].shape == (2, emb.shape[1])
  np.testing.assert_allclose(np.linalg.norm(enc["study_emb"], axis=1), 1.0, rtol=1e-5)
  # predict on a multi-frame DICOM cine (50 frames / s): frames at the artifact's 8 / s.
  cine = np.repeat(np.repeat(clips[0], 4, axis=1), 4, axis=2)               # [T, 128, 128]
  cine = np.repeat(cine, 13, axis=0)                                         # ~1 s at 50 / s
  path = dicom_fixtures.write_dicom(tmp_path / "cine.dcm", cine, mode="mono", frame_time_ms=20.0)
  assert predict.main(["--artifact", art, "--json", path]) == 0
  result = json.loads(capsys.readouterr().out)
  rows = result["results"] if isinstance(result, dict) else result
  assert rows[0]["view"] in model.views


def test_lvef_regression_from_the_exported_video_tower(video_artifact, clip_data, tmp_path):
  """configs/lvef.py initialised from the exported video tower (its image tower, temporal
  encoder included, reused exactly), trained and evaluated on the clips' LVEF views."""
  from configs import lvef as lvef_config
  from echovlm_jax import distributed
  from echovlm_jax.inference import artifact
  from echovlm_jax.train import checkpointing, loop, workdir_config
  from echovlm_jax.train.tasks import lvef
  from tests import train_tiny_config
  _, art = video_artifact
  ic, builder = clip_data
  c = train_tiny_config.shrink(lvef_config.get_config("frames=4,res=32,runlocal"))
  _use_input(c, ic)
  c.model.image.temporal = "factorised"
  c.lvef.init_artifact = art
  c.total_steps, c.batch_size, c.ckpt_every = 4, 8, 4
  # Before training: the tower is the artifact's.
  task = lvef.TASK
  model = task.model(c, 0)()
  params = task.init_params(nnx.state(model, nnx.Param), c, None)
  ours = nnx.to_pure_dict(params)["image"]
  theirs = nnx.to_pure_dict(nnx.state(artifact.restore_model(art, artifact.verify_artifact(art))
                                       .image, nnx.Param))
  for (k, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(ours),
                            jax.tree_util.tree_leaves_with_path(theirs)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(k))
  # The examples it reads: a reported LVEF in a view that shows it.
  n_lvef = sum(1 for ex in builder.as_dataset(split="test").as_numpy_iterator()
               if np.isfinite(ex["measurements"][lvef.LVEF])
               and schema.VIEWS[ex["view"]] in lvef.LVEF_VIEWS)
  workdir = str(tmp_path / "lvef")
  loop.train_and_evaluate(c, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  merged = {k: v for r in rows for k, v in r.items()}
  assert 0.0 < merged["test/lvef_regression/mae"] < 60.0
  report = json.load(open(os.path.join(workdir, "report", "metrics.json")))
  assert report["test_lvef"]["n"] == n_lvef > 0
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  trained, step = checkpointing.restore_params(workdir_config.load(workdir), workdir, mesh)
  assert step == 4 and np.abs(np.asarray(trained.head.kernel[...])).max() > 0


def test_echonet_dynamic_videos_as_clips_train_configs_echonet_ef(tmp_path):
  """The echonet_dynamic builder config read as clips (frames_at="cycle"): T frames at the
  stated rate from FileList's FPS, centred in the video, FileList's EF as the LVEF, the
  release's split; configs/echonet_ef.py trains on it end to end."""
  import tensorflow_datasets as tfds
  from configs import echonet_ef
  from echovlm_jax.data import build, dense_records
  from echovlm_jax.train import loop
  from tests import dense_release_trees, echonet_dynamic_tree, train_tiny_config
  from tfds_builders.echoground import records
  root = str(tmp_path / "echonet")
  expected = dense_release_trees.write_echonet_dynamic(root)
  c = train_tiny_config.shrink(echonet_ef.get_config("size=ti,res=32,runlocal"),
                               tmp_path / "tfds")
  assert (c.task, c.input.builder_config, c.input.frames_at) == ("lvef", "echonet_dynamic", "cycle")
  c.input.update(manual_dir=root, num_frames=T, clip_fps=25.0, num_shards=1)
  c.model.image.temporal = "factorised"
  c.total_steps, c.batch_size, c.log_every = 3, 8, 1
  builder = build.ensure_dataset(c.input)
  assert builder.builder_config.name == "echonet_dynamic_i32_t4_v256_f25"
  t = echonet_dynamic_tree
  # 50 frames / s stored, 25 / s wanted: every second frame, centred in the 24-frame video.
  idx = clip_windows.indices_at_rate(t.NUM_FRAMES, T, 1000.0 / t.FPS, 25.0)
  assert idx.tolist() == [8, 10, 12, 14]
  grid = dense_records.SquareGrid((t.HEIGHT, t.WIDTH), (1.0, 1.0), 32)
  ids = {records.stable_int64("patient", "echonet_dynamic", k): k for k in expected}
  n = 0
  for split in ("train", "validation", "test"):
    for ex in tfds.as_numpy(builder.as_dataset(split=split)):
      want = expected[ids[ex["patient_id"]]]
      assert split == want["split"] and schema.VIEWS[ex["view"]] == "a4c"
      assert ex["measurements"][schema.MEASUREMENTS.index("lvef")] == pytest.approx(want["ef"])
      np.testing.assert_array_equal(ex["frames"][..., 0],
                                    np.stack([grid.image(want["frames"][i]) for i in idx]))
      n += 1
  assert n == len(expected)
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(c, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  merged = {k: v for r in rows for k, v in r.items()}
  assert len([r for r in rows if "train/loss" in r]) == 3
  assert np.isfinite(merged["test/lvef_regression/mae"])
  # A release without a clip reader refuses clips, naming the setting that fits it.
  with pytest.raises(ValueError, match="frames_at='ed_es'"):
    build.builder_config_for(dict(c.input.to_dict(), builder_config="camus", num_frames=4))


def test_mimic_cines_at_the_clip_rate_and_stills_counted(release_tree):
  """A mimic build with clips reads each cine at clip_fps (here 15 / s from the tree's 30 / s
  cines: every second frame, centred) and counts the stills whose one frame is repeated."""
  import collections
  from echovlm_jax.data import dicom, mimic, reader_options
  root = release_tree["root"]
  stats = collections.Counter()
  items = mimic.plan(root, reader_options.MimicOptions(), stats)[:5]       # one study's files
  records = dict(mimic.read_items(root, items, 32, T, stats, clip_fps=15.0))
  assert len(records) == 5
  kinds = collections.Counter(r["image_kind"] for r in records.values())
  assert stats["frames:still_repeated"] == kinds["spectral"] >= 1
  for item in items:
    r = records[item.key]
    if r["image_kind"] != "2d":
      continue
    path = os.path.join(root, item.rel)
    np.testing.assert_array_equal(r["frames"], dicom.load_frames(path, T, 32, fps=15.0))
    assert not np.array_equal(r["frames"], dicom.load_frames(path, T, 32))   # not even bins


def test_a_video_tower_from_a_frame_artifact_starts_as_the_frame_model(tmp_path_factory):
  """configs/lvef.py's video tower initialised from an exported frame model (no temporal
  encoder in it): the spatial weights are the artifact's and the new temporal encoder the
  identity, so a clip's features are the frame model's mean frame features."""
  from configs import lvef as lvef_config
  from echovlm_jax.train.tasks import lvef
  from tests import test_export
  art = test_export.make_artifact(tmp_path_factory)
  frame_image = art["config"].model.image
  assert frame_image.temporal == "mean"
  c = lvef_config.get_config("frames=3,res=32,runlocal")
  for k in ("width", "depth", "heads", "mlp_ratio", "patch"):
    c.model.image[k] = frame_image[k]
  assert c.model.image.temporal == "factorised" and c.model.image.frames == 3
  c.lvef.init_artifact = art["artifact"]
  model = lvef.TASK.model(c, 0)()
  nnx.update(model, lvef.TASK.init_params(nnx.state(model, nnx.Param), c, None))
  clip = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32, 1)).astype(np.float32)
  enc = nnx.jit(lambda m, x: m.image(x))
  np.testing.assert_allclose(enc(model, clip), enc(art["reference"], clip), atol=1e-5)
