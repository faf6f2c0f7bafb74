"""Export -> load_pretrained: the artifact's embeddings equal the training checkpoint's, the
zero-shot helpers work without training code, and corrupt / incomplete / other-version
artifacts fail with ArtifactError naming the path and the problem."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE: dict = {}


def tiny_train_config(workdir_data: str) -> ml_collections.ConfigDict:
  """The real config shrunk to width 32, depth 1, 32 px, 16 tokens."""
  from configs import echovlm
  c = echovlm.get_config("runlocal")
  c.unlock()
  c.input.res, c.input.max_text_len, c.input.data_dir = 32, 16, workdir_data
  for tower in (c.model.image, c.model.text):
    tower.width, tower.depth, tower.heads, tower.mlp_ratio = 32, 1, 2, 2
  c.model.image.patch, c.model.embed_dim, c.model.meas_hidden = 8, 16, 8
  c.lock()
  return c


def make_artifact(tmp_path_factory) -> dict:
  """A tiny model initialised, saved through the real Checkpointer at step 2, and exported.
  Built once per session; returns paths and the reference (training-state) model."""
  if "art" in _CACHE:
    return _CACHE["art"]
  import jax
  from flax import nnx
  from echovlm_jax import distributed
  from echovlm_jax.data import tokenizer as tokenizer_lib
  from echovlm_jax.echo import prompts, schema
  from echovlm_jax.tools import export
  from echovlm_jax.train import checkpointing, state as train_state

  root = tmp_path_factory.mktemp("export")
  workdir, data_dir = str(root / "work"), str(root / "data")
  os.makedirs(workdir)
  os.makedirs(data_dir)
  texts = [t for ps in prompts.VIEW_PROMPTS.values() for t in ps]
  texts += [t for p in prompts.LABEL_PROMPTS.values() for t in p["positive"] + p["negative"]]
  tok = tokenizer_lib.Tokenizer(tokenizer_lib.train_tokenizer(texts, 128))
  tok.save(os.path.join(data_dir, tokenizer_lib.TOKENIZER_FILENAME))
  stats = {"measurements": list(schema.MEASUREMENTS),
           "mean": {m: float(i) for i, m in enumerate(schema.MEASUREMENTS)},
           "std": {m: 2.0 for m in schema.MEASUREMENTS},
           "unit": {m: schema.MEASUREMENT_INFO[m].unit for m in schema.MEASUREMENTS}}
  with open(os.path.join(data_dir, "measurement_stats.json"), "w") as f:
    json.dump(stats, f)

  config = tiny_train_config(data_dir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump({"metrics": {"test/zero_shot_views/accuracy": 0.25}, "evals": {}}, f)
  mesh = distributed.create_mesh(config.mesh)
  graphdef, state, _, _ = train_state.create_state(config, mesh, tok.vocab_size)
  with checkpointing.Checkpointer(workdir) as ckpt:
    ckpt.save(2, state, {"data_position": 2}, force=True)
  artifact = export.export(workdir, str(root / "artifact"), data_dir=data_dir)
  reference = nnx.merge(graphdef, jax.device_get(state["params"]))
  _CACHE["art"] = dict(artifact=artifact, workdir=workdir, data_dir=data_dir, tokenizer=tok,
                       reference=reference, config=config, stats=stats)
  return _CACHE["art"]


@pytest.fixture(scope="module")
def art(tmp_path_factory):
  return make_artifact(tmp_path_factory)


@pytest.fixture(scope="module")
def model(art):
  from echovlm_jax.inference import load
  return load.load_pretrained(art["artifact"], batch_size=4)


def _copy(art, tmp_path):
  dst = str(tmp_path / "copy")
  shutil.copytree(art["artifact"], dst)
  return dst


def test_artifact_layout_and_card(art):
  files = set(os.listdir(art["artifact"]))
  assert {"config.json", "params", "tokenizer.model", "measurement_stats.json", "prompts.json",
          "README.md", "MANIFEST.json"} <= files
  cfg = json.load(open(os.path.join(art["artifact"], "config.json")))
  assert cfg["format_version"] == 1 and cfg["step"] == 2
  assert cfg["input"]["res"] == 32 and cfg["input"]["max_text_len"] == 16
  assert cfg["model"]["image"]["width"] == 32
  card = open(os.path.join(art["artifact"], "README.md")).read()
  assert "Not a medical device" in card and "test/zero_shot_views/accuracy" in card
  assert "synthetic" in card


def test_manifest_records_each_files_size_and_sha256(art):
  manifest = json.load(open(os.path.join(art["artifact"], "MANIFEST.json")))
  for rel, info in manifest["files"].items():
    data = open(os.path.join(art["artifact"], rel), "rb").read()
    assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_embeddings_match_the_training_checkpoint(art, model):
  rng = np.random.RandomState(0)
  frames = rng.randint(0, 256, (5, 32, 32), np.uint8)           # [N, H, W], batched 4 + 1
  ref_in = (frames.astype(np.float32) / 255.0 * 2 - 1)[:, None, ..., None]
  ref = np.asarray(art["reference"].encode_image(ref_in))
  np.testing.assert_allclose(model.encode_images(frames), ref, atol=1e-5)
  np.testing.assert_allclose(model.encode_images(frames[..., None]), ref, atol=1e-5)
  np.testing.assert_allclose(model.encode_images(frames[:, None] / np.float32(255.0)), ref,
                             atol=1e-5)
  texts = ["Severe aortic stenosis.", "The left ventricle is dilated.", "apical four-chamber view"]
  tokens = art["tokenizer"].encode_batch(texts, 16)
  np.testing.assert_allclose(model.encode_texts(texts),
                             np.asarray(art["reference"].encode_text(tokens)), atol=1e-5)


def test_resize_matches_the_input_pipeline():
  """prepare_frames (NumPy, for inference) against the input pipeline's own evaluation frames."""
  from echovlm_jax.data import input_pipeline
  from echovlm_jax.inference import frames as frames_lib
  frames = np.random.RandomState(1).randint(0, 256, (2, 3, 48, 48), np.uint8)  # [N, T, S, S]
  ours = frames_lib.prepare_frames(frames, 32)
  theirs = np.stack([input_pipeline.model_frames(clip[..., None], 32, seed=None).numpy()
                     for clip in frames])
  assert ours.shape == theirs.shape == (2, 3, 32, 32, 1)
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_zero_shot_probabilities(model):
  frames = np.random.RandomState(2).randint(0, 256, (3, 1, 40, 40), np.uint8)
  views = model.classify_views(frames)
  assert views["probs"].shape == (3, len(model.views))
  np.testing.assert_allclose(views["probs"].sum(1), 1.0, rtol=1e-5)
  assert set(views["predicted"]) <= set(model.views) and views["prompts"] == model.view_prompts
  findings = model.classify_findings(frames)
  assert findings["probs"].shape == (3, len(model.labels))
  # p = softmax([s cos_pos, s cos_neg])[0], recomputed from the embeddings.
  pe, emb = model.prompt_embeddings(), model.encode_images(frames)
  z = model.logit_scale * np.stack([emb @ pe["label_pos"].T, emb @ pe["label_neg"].T])
  np.testing.assert_allclose(findings["probs"], np.exp(z[0]) / np.exp(z).sum(0), rtol=1e-4)
  # Pinned to the hand-written NumPy they replaced: softmax bit for bit, sigmoid within one
  # float32 ulp (scipy.special.expit rounds more accurately than 1 / (1 + exp(-x))).
  logits = model.logit_scale * (emb @ pe["views"].T)
  logits = np.exp(logits - logits.max(-1, keepdims=True))
  np.testing.assert_array_equal(views["probs"], logits / logits.sum(-1, keepdims=True))
  from echovlm_jax import scoring
  diff = scoring.finding_scores(emb, pe["label_pos"], pe["label_neg"])
  np.testing.assert_array_max_ulp(findings["probs"], 1.0 / (1.0 + np.exp(-model.logit_scale * diff)),
                                  1)
  meas = model.predict_measurements(frames)
  assert meas["values"].shape == (3, len(model.measurements))


def test_load_needs_no_training_code(art):
  code = textwrap.dedent(f"""
      import sys
      import echovlm_jax
      assert "jax" not in sys.modules, "import echovlm_jax must stay light"
      m = echovlm_jax.load_pretrained({art['artifact']!r})
      m.classify_views(__import__("numpy").zeros((1, 32, 32), "uint8"))
      bad = [n for n in ("tensorflow", "tensorflow_datasets", "echovlm_jax.train",
                         "echovlm_jax.losses", "echovlm_jax.data.input_pipeline") if n in sys.modules]
      assert not bad, bad
      """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]


def test_corrupt_and_incomplete_artifacts_are_rejected(art, tmp_path):
  from echovlm_jax.inference import artifact, load
  with pytest.raises(artifact.ArtifactError, match="not a directory"):
    load.load_pretrained(str(tmp_path / "nowhere"))

  path = _copy(art, tmp_path)
  os.remove(os.path.join(path, "MANIFEST.json"))
  with pytest.raises(artifact.ArtifactError, match="MANIFEST.json is missing"):
    load.load_pretrained(path)
  shutil.rmtree(path)

  path = _copy(art, tmp_path)
  params_files = [f for f in artifact.list_files(path) if f.startswith("params/")]
  victim = max(params_files, key=lambda f: os.path.getsize(os.path.join(path, f)))
  with open(os.path.join(path, victim), "r+b") as f:
    f.seek(os.path.getsize(os.path.join(path, victim)) // 2)
    f.write(b"\xff\x00\xff\x00")
  os.remove(os.path.join(path, "tokenizer.model"))
  with pytest.raises(artifact.ArtifactError) as e:
    load.load_pretrained(path)
  msg = str(e.value)
  assert path in msg and victim in msg and "corrupt" in msg and "tokenizer.model: missing" in msg
  shutil.rmtree(path)


def test_other_format_version_is_rejected(art, tmp_path):
  from echovlm_jax.inference import artifact, load
  path = _copy(art, tmp_path)
  cfg_path = os.path.join(path, "config.json")
  cfg = json.load(open(cfg_path))
  cfg["format_version"] = 99
  json.dump(cfg, open(cfg_path, "w"))
  artifact.write_manifest(path)  # a consistent artifact, just from another version
  with pytest.raises(artifact.ArtifactError, match="format_version=99"):
    load.load_pretrained(path)


# config.model keys added after the first exports (their defaults are what older code assumed).
_NEWER_MODEL_KEYS = dict(image=("act", "ln_eps", "qkv_bias", "mlp_dim", "proj", "ln_pre"),
                         text=("act", "ln_eps", "qkv_bias", "mlp_dim", "proj", "pad_mask",
                               "pad_id", "eos_id"), model=("attention_impl",))


def _drop_newer_keys(cfg: dict) -> dict:
  for tower in ("image", "text"):
    for k in _NEWER_MODEL_KEYS[tower]:
      del cfg["model"][tower][k]
  for k in _NEWER_MODEL_KEYS["model"]:
    del cfg["model"][k]
  return cfg


def test_artifacts_and_workdirs_from_before_newer_keys_still_load(art, model, tmp_path):
  """A stored config.json that lacks newer config.model keys (and, for a workdir, the input's
  synthetic options and loss.meas_text_weight) is filled once where it is read."""
  from echovlm_jax.inference import artifact, load
  from echovlm_jax.train import workdir_config
  path = _copy(art, tmp_path)
  cfg_path = os.path.join(path, "config.json")
  json.dump(_drop_newer_keys(json.load(open(cfg_path))), open(cfg_path, "w"))
  artifact.write_manifest(path)
  old = load.load_pretrained(path, batch_size=4)
  frames = np.random.RandomState(0).randint(0, 256, (3, 32, 32), np.uint8)
  np.testing.assert_array_equal(old.encode_images(frames), model.encode_images(frames))
  texts = ["Severe aortic stenosis.", "apical four-chamber view"]
  np.testing.assert_array_equal(old.encode_texts(texts), model.encode_texts(texts))

  workdir = str(tmp_path / "work")
  os.makedirs(workdir)
  current = json.load(open(os.path.join(art["workdir"], "config.json")))
  stored = _drop_newer_keys(json.loads(json.dumps(current)))
  del stored["input"]["synthetic"], stored["loss"]["meas_text_weight"]
  json.dump(stored, open(os.path.join(workdir, "config.json"), "w"))
  current["loss"]["meas_text_weight"] = 0.0  # such runs trained without the text side
  assert workdir_config.load(workdir).to_dict() == current


def test_sentencepiece_artifacts_stay_format_1_and_a_checkpoint_tokenizer_must_be_there(
    art, tmp_path):
  """Readers of format 1 still read a sentencepiece artifact; an artifact whose config.json
  names a checkpoint tokenizer (format 2) without its tokenizer/ files is incomplete."""
  from echovlm_jax.inference import artifact, load
  cfg = json.load(open(os.path.join(art["artifact"], "config.json")))
  assert cfg["format_version"] == 1 and cfg["tokenizer"]["kind"] == "sentencepiece"
  path = _copy(art, tmp_path)
  cfg.update(format_version=2, tokenizer={"kind": "checkpoint", "path": "tokenizer"})
  json.dump(cfg, open(os.path.join(path, "config.json"), "w"))
  artifact.write_manifest(path)
  with pytest.raises(artifact.ArtifactError, match="tokenizer/: required"):
    load.load_pretrained(path)


def test_export_cli_errors(art, tmp_path):
  from echovlm_jax.tools import export
  with pytest.raises(FileExistsError):
    export.export(art["workdir"], art["artifact"], data_dir=art["data_dir"])
  with pytest.raises(FileNotFoundError, match="available"):
    export.export(art["workdir"], str(tmp_path / "a"), step=7, data_dir=art["data_dir"])
