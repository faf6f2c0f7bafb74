"""Outside checkpoints against the peer implementation: tiny random transformers CLIPModel and
SiglipModel directories (tests/hf_fixtures.py) load through `load_pretrained` with the
checkpoint's own embeddings and token ids; the same weights in open_clip's and big_vision's
layouts give the same embeddings; `--config.model_init` trains from them (one finite step, a
frozen tower stays put) and an export of such a run carries the checkpoint tokenizer; a misfit
lists every problem at once."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import echovlm_jax  # noqa: E402
from configs import echovlm  # noqa: E402
from echovlm_jax.interop import architecture, conversion, init_from_checkpoint, weights  # noqa: E402
from tests import hf_fixtures as F  # noqa: E402

COS = 0.9999


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  """kind -> (directory, HF image embeddings, HF text embeddings, HF token ids)."""
  out = {}
  for kind, write in (("clip", F.write_clip), ("siglip", F.write_siglip),
                      ("siglip_36px", functools.partial(F.write_siglip, image_size=F.RES + 4))):
    d = write(str(tmp_path_factory.mktemp(kind)))
    out[kind] = (d, *F.hf_embeddings(d, kind.split("_")[0], F.frames(), F.TEXTS))
  return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@functools.lru_cache(maxsize=None)
def _loaded(path: str, tokenizer: str | None = None):
  return echovlm_jax.load_pretrained(path, tokenizer=tokenizer)


@pytest.mark.parametrize("kind", ["clip", "siglip", "siglip_36px"])
def test_embeddings_and_tokens_equal_transformers(ckpt, kind):
  d, hf_img, hf_txt, hf_ids = ckpt[kind]
  ours = _loaded(d)
  # The checkpoint's own tokenizer, padded as its processor pads (full length).
  np.testing.assert_array_equal(ours.tokenizer.encode_batch(F.TEXTS, F.TEXT_LEN), hf_ids)
  img, txt = ours.encode_images(F.frames()), ours.encode_texts(F.TEXTS)
  assert img.shape == hf_img.shape and txt.shape == hf_txt.shape
  assert _cos(img, hf_img).min() >= COS, _cos(img, hf_img)
  assert _cos(txt, hf_txt).min() >= COS, _cos(txt, hf_txt)
  # Not trivially equal: different inputs give clearly different embeddings.
  assert _cos(img[0], img[1]) < 0.99 and _cos(txt[0], txt[1]) < 0.99
  assert ours.config["source"]["layout"] == f"hf_{kind.split('_')[0]}"
  with pytest.raises(ValueError, match="no measurement head"):
    ours.predict_measurements(F.frames(1))


def test_one_wrong_array_breaks_the_match(ckpt):
  """The comparison can fail: CLIP without its query biases is no longer CLIP."""
  d, hf_img, _, _ = ckpt["clip"]
  flat, layout, hf = weights.read_weights(d)
  arch = architecture.architecture(flat, layout, hf)
  cfg = architecture.model_config(arch)
  flat = {k: (np.zeros_like(v) if "q_proj.bias" in k else v) for k, v in flat.items()}
  from echovlm_jax.models.dual_encoder import DualEncoder
  from flax import nnx
  graphdef, params = nnx.split(DualEncoder(cfg, vocab_size=arch["vocab_size"], num_measurements=1,
                                           rngs=nnx.Rngs(0)), nnx.Param)
  params, _ = conversion.convert_into(params, cfg, flat, layout, d)
  x = _loaded(d)._prepare(F.frames())
  img = np.asarray(nnx.merge(graphdef, params).encode_image(x))
  assert _cos(img, hf_img).min() < COS


def _hf_clip_to_open_clip(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers CLIPModel names -> open_clip's (written here, independently of our tables)."""
  out = {}
  for src, dst in (("vision_model.encoder.layers", "visual.transformer.resblocks"),
                   ("text_model.encoder.layers", "transformer.resblocks")):
    for i in range(F.DEPTH):
      s, t = f"{src}.{i}.", f"{dst}.{i}."
      for p in ("weight", "bias"):
        out[t + f"attn.in_proj_{p}"] = np.concatenate(
            [flat[s + f"self_attn.{x}_proj.{p}"] for x in "qkv"])
        out[t + f"attn.out_proj.{p}"] = flat[s + f"self_attn.out_proj.{p}"]
        out[t + f"ln_1.{p}"], out[t + f"ln_2.{p}"] = (flat[s + f"layer_norm1.{p}"],
                                                      flat[s + f"layer_norm2.{p}"])
        out[t + f"mlp.c_fc.{p}"], out[t + f"mlp.c_proj.{p}"] = (flat[s + f"mlp.fc1.{p}"],
                                                                flat[s + f"mlp.fc2.{p}"])
  v, x = "vision_model.", "text_model."
  out["visual.conv1.weight"] = flat[v + "embeddings.patch_embedding.weight"]
  out["visual.class_embedding"] = flat[v + "embeddings.class_embedding"]
  out["visual.positional_embedding"] = flat[v + "embeddings.position_embedding.weight"]
  for p in ("weight", "bias"):
    out[f"visual.ln_pre.{p}"] = flat[v + f"pre_layrnorm.{p}"]
    out[f"visual.ln_post.{p}"] = flat[v + f"post_layernorm.{p}"]
    out[f"ln_final.{p}"] = flat[x + f"final_layer_norm.{p}"]
  out["visual.proj"] = flat["visual_projection.weight"].T
  out["text_projection"] = flat["text_projection.weight"].T
  out["token_embedding.weight"] = flat[x + "embeddings.token_embedding.weight"]
  out["positional_embedding"] = flat[x + "embeddings.position_embedding.weight"]
  out["logit_scale"] = flat["logit_scale"]
  return out


def _hf_siglip_to_big_vision(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers SiglipModel names -> big_vision's, encoders scanned (stacked over depth)."""
  w, h = F.WIDTH, F.HEADS
  heads = lambda m: m.T.reshape(w, h, w // h)
  out = {}

  def attention(dst, q, k, v, o, bq, bk, bv, bo):
    for name, kern, bias in (("query", q, bq), ("key", k, bk), ("value", v, bv)):
      out[f"{dst}/{name}/kernel"], out[f"{dst}/{name}/bias"] = heads(kern), bias.reshape(h, -1)
    out[f"{dst}/out/kernel"], out[f"{dst}/out/bias"] = o.T.reshape(h, -1, w), bo

  for tower, dst in (("vision", "img/Transformer"), ("text", "txt/Encoder_0")):
    blocks = []
    for i in range(F.DEPTH):
      s = f"{tower}_model.encoder.layers.{i}."
      g = lambda n, s=s: flat[s + n]
      b = {}
      for j, ln in enumerate(("layer_norm1", "layer_norm2")):
        b[f"LayerNorm_{j}/scale"], b[f"LayerNorm_{j}/bias"] = g(f"{ln}.weight"), g(f"{ln}.bias")
      for j, fc in enumerate(("fc1", "fc2")):
        b[f"MlpBlock_0/Dense_{j}/kernel"] = g(f"mlp.{fc}.weight").T
        b[f"MlpBlock_0/Dense_{j}/bias"] = g(f"mlp.{fc}.bias")
      a = "MultiHeadDotProductAttention_0"
      for n, x in (("query", "q"), ("key", "k"), ("value", "v")):
        b[f"{a}/{n}/kernel"] = heads(g(f"self_attn.{x}_proj.weight"))
        b[f"{a}/{n}/bias"] = g(f"self_attn.{x}_proj.bias").reshape(h, -1)
      b[f"{a}/out/kernel"] = g("self_attn.out_proj.weight").T.reshape(h, -1, w)
      b[f"{a}/out/bias"] = g("self_attn.out_proj.bias")
      blocks.append(b)
    for n in blocks[0]:
      out[f"{dst}/encoderblock/{n}"] = np.stack([b[n] for b in blocks])
  v = "vision_model."
  out["img/embedding/kernel"] = flat[v + "embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
  out["img/embedding/bias"] = flat[v + "embeddings.patch_embedding.bias"]
  out["img/pos_embedding"] = flat[v + "embeddings.position_embedding.weight"][None]
  out["img/Transformer/encoder_norm/scale"] = flat[v + "post_layernorm.weight"]
  out["img/Transformer/encoder_norm/bias"] = flat[v + "post_layernorm.bias"]
  hd = v + "head."
  out["img/MAPHead_0/probe"] = flat[hd + "probe"]
  ip, ib = flat[hd + "attention.in_proj_weight"], flat[hd + "attention.in_proj_bias"]
  attention("img/MAPHead_0/MultiHeadDotProductAttention_0", ip[:w], ip[w:2 * w], ip[2 * w:],
            flat[hd + "attention.out_proj.weight"], ib[:w], ib[w:2 * w], ib[2 * w:],
            flat[hd + "attention.out_proj.bias"])
  out["img/MAPHead_0/LayerNorm_0/scale"] = flat[hd + "layernorm.weight"]
  out["img/MAPHead_0/LayerNorm_0/bias"] = flat[hd + "layernorm.bias"]
  for j, fc in enumerate(("fc1", "fc2")):
    out[f"img/MAPHead_0/MlpBlock_0/Dense_{j}/kernel"] = flat[hd + f"mlp.{fc}.weight"].T
    out[f"img/MAPHead_0/MlpBlock_0/Dense_{j}/bias"] = flat[hd + f"mlp.{fc}.bias"]
  x = "text_model."
  out["txt/Embed_0/embedding"] = flat[x + "embeddings.token_embedding.weight"]
  out["txt/pos_embedding"] = flat[x + "embeddings.position_embedding.weight"][None]
  out["txt/Encoder_0/encoder_norm/scale"] = flat[x + "final_layer_norm.weight"]
  out["txt/Encoder_0/encoder_norm/bias"] = flat[x + "final_layer_norm.bias"]
  out["txt/head/kernel"], out["txt/head/bias"] = flat[x + "head.weight"].T, flat[x + "head.bias"]
  out["t"], out["b"] = flat["logit_scale"].reshape(1), flat["logit_bias"].reshape(1)
  return {f"params/{k}": v for k, v in out.items()}


def test_open_clip_and_big_vision_layouts_give_the_same_embeddings(ckpt, tmp_path):
  from safetensors.numpy import save_file
  frames = F.frames(h=F.RES, w=F.RES)  # at the model's size: no resize, whose filter differs
  texts = F.TEXTS[:3]
  for kind, write_as, name in (("clip", _hf_clip_to_open_clip, "open_clip.safetensors"),
                               ("siglip", _hf_siglip_to_big_vision, "big_vision.npz")):
    d = ckpt[kind][0]
    flat, _, _ = weights.read_weights(d)
    path = str(tmp_path / name)
    converted = write_as(flat)
    if name.endswith(".npz"):
      np.savez(path, **converted)
    else:
      save_file({k: np.ascontiguousarray(v) for k, v in converted.items()}, path)
    # big_vision ships a bare sentencepiece model: load its tokenizer from the .model file.
    tok = f"{d}/spiece.model" if kind == "siglip" else d
    other = echovlm_jax.load_pretrained(path, tokenizer=tok)
    assert other.config["source"]["layout"] == name.split(".")[0]
    ref = _loaded(d)
    for a, b in ((other.encode_images(frames), ref.encode_images(frames)),
                 (other.encode_texts(texts), ref.encode_texts(texts))):
      np.testing.assert_allclose(a, b, atol=2e-5)


def _finetune_config(path: str, **lr_mult):
  c = echovlm.get_config("size=ti,res=32,objective=clip")  # the full objective: the e2e test
  c.model_init = path
  c.batch_size, c.warmup_steps, c.total_steps = 8, 0, 10
  c.lr_mult.update(lr_mult)
  return init_from_checkpoint.configure(c)


def test_model_init_config_follows_the_checkpoint(ckpt):
  d = ckpt["clip"][0]
  c = _finetune_config(d)
  img, txt = c.model.image, c.model.text
  assert (img.width, img.depth, img.heads, img.patch, img.mlp_dim) == (
      F.WIDTH, F.DEPTH, F.HEADS, F.PATCH, F.MLP)
  assert (img.act, img.ln_eps, img.qkv_bias, img.ln_pre, img.pool, img.proj) == (
      "quick_gelu", 1e-5, True, True, "tok", "linear")
  assert img.channels == 1 and c.input.res == 32                # ours: gray frames
  assert (txt.causal, txt.pad_mask, txt.pool, txt.max_len) == (True, False, "eos", F.TEXT_LEN)
  assert c.input.max_text_len == F.TEXT_LEN and c.input.tokenizer == d
  assert c.model.embed_dim == F.EMBED
  from echovlm_jax.data import input_pipeline
  tok = input_pipeline.load_tokenizer(c.input)
  np.testing.assert_array_equal(tok.encode_batch(F.TEXTS, F.TEXT_LEN), ckpt["clip"][3])


def test_finetuning_starts_from_the_checkpoint(ckpt, num_devices):
  """Gray frames in [-1, 1] through the summed kernel (mean / std folded in) give the
  checkpoint's embeddings; one step is finite; a frozen tower does not move."""
  from flax import nnx
  from echovlm_jax import distributed, sharding
  from echovlm_jax.train import state as train_state
  from tests.test_train import _batch, _make_step
  d, _, _, ids = ckpt["clip"]
  c = _finetune_config(d, image=0.0)
  mesh = distributed.create_mesh(c.mesh)
  graphdef, state, shardings, tx = train_state.create_state(c, mesh, c.model.vocab_size)
  frames = F.frames(h=F.RES, w=F.RES)
  hf_img, _, _ = F.hf_embeddings(d, "clip", frames, F.TEXTS[:1])
  model = nnx.merge(graphdef, jax.device_get(state["params"]))
  x = (frames.astype(np.float32) / 255 * 2 - 1)[:, None, ..., None]
  assert _cos(np.asarray(model.encode_image(x)), hf_img).min() >= COS

  batch = _batch(8, c)
  batch["text"] = ids[np.arange(8) % len(ids)]
  batch["neg_text"] = np.where(batch["has_negation"][:, None] > 0, batch["text"][::-1], 0)
  before = jax.device_get(state["params"])
  step = _make_step(c, graphdef, tx, mesh, shardings)
  state, metrics = step(state, sharding.shard_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"])), metrics
  after = jax.device_get(state["params"])
  moved = lambda tree_a, tree_b: max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                     for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)))
  assert moved(before["image"], after["image"]) == 0.0              # frozen (lr_mult.image = 0)
  assert moved(before["text"], after["text"]) > 0.0


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_weight_decay_reaches_matrices_only(ckpt, kind):
  """Checkpoint towers have q/k/v biases, a class token (CLIP) or MAP head (SigLIP)."""
  from tests.test_weight_decay import assert_matrices_only
  c = _finetune_config(ckpt[kind][0])
  c.warmup_steps = 0
  assert c.model.image.qkv_bias and c.model.text.qkv_bias
  assert_matrices_only(c, c.model.vocab_size)


def test_misfit_lists_every_mismatch(ckpt):
  d = ckpt["siglip"][0]
  flat, layout, hf = weights.read_weights(d)
  arch = architecture.architecture(flat, layout, hf)
  arch["image"]["depth"] = 3                       # a block the checkpoint lacks
  arch["text"]["mlp_dim"] = 48                     # every text MLP mis-shaped
  cfg = architecture.model_config(arch)
  from echovlm_jax.models.dual_encoder import DualEncoder
  from flax import nnx
  _, params = nnx.split(DualEncoder(cfg, vocab_size=arch["vocab_size"], num_measurements=1,
                                    rngs=nnx.Rngs(0)), nnx.Param)
  flat["vision_model.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(conversion.ModelInitError) as e:
    conversion.convert_into(params, cfg, flat, layout, d)
  msg = str(e.value)
  assert "vision_model.extra.weight: no counterpart" in msg
  assert "image/encoder/blocks/2/ln1/scale: ours, but the checkpoint has nothing" in msg
  for i in range(F.DEPTH):
    for fc in ("fc1.weight", "fc1.bias", "fc2.weight"):
      assert f"text_model.encoder.layers.{i}.mlp.{fc}: shape" in msg, msg
  assert len(e.value.problems) >= 1 + 2 * 3 + 1


@pytest.mark.slow
def test_trainer_runs_from_an_hf_directory(ckpt, tiny_echoground, tmp_path, num_devices):
  """The real loop: tf.data tokenizes captions with the checkpoint's tokenizer (caption
  fitting included), the towers start from the checkpoint, two steps train, the evaluators
  embed their prompts with that tokenizer, and the workdir's config.json records the resolved
  architecture."""
  import json
  from echovlm_jax.train import loop
  from tests import train_tiny_config
  input_config, _ = tiny_echoground
  c = train_tiny_config.get_config("evals")
  c.input.data_dir = input_config.data_dir
  c.total_steps, c.ckpt_every, c.log_every = 2, 2, 1
  c.model_init = ckpt["clip"][0]
  metrics = loop.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(metrics["loss"]), metrics
  assert any(k.startswith("test/zero_shot_views/") for k in metrics), sorted(metrics)
  with open(tmp_path / "config.json") as f:
    saved = json.load(f)
  assert saved["input"]["tokenizer"] == ckpt["clip"][0]
  assert saved["input"]["max_text_len"] == saved["model"]["text"]["max_len"] == F.TEXT_LEN
  assert saved["model"]["image"]["qkv_bias"] and saved["model"]["image"]["ln_pre"]
  assert saved["model"]["vocab_size"] == 525
  _export_equals_the_trained_state(str(tmp_path), ckpt["clip"][0], str(tmp_path / "artifact"))


@pytest.mark.slow
def test_export_of_a_big_vision_finetune_carries_its_tokenizer(ckpt, tiny_echoground, tmp_path,
                                                               num_devices):
  """A big_vision .npz with its bare sentencepiece model as config.input.tokenizer: two steps,
  export, and the artifact embeds as the trained state does (issue 20, item 4)."""
  from echovlm_jax.train import loop
  from tests import train_tiny_config
  d = ckpt["siglip"][0]
  flat, _, _ = weights.read_weights(d)
  npz = str(tmp_path / "big_vision.npz")
  np.savez(npz, **_hf_siglip_to_big_vision(flat))
  input_config, _ = tiny_echoground
  c = train_tiny_config.get_config()
  c.input.data_dir = input_config.data_dir
  c.total_steps, c.ckpt_every, c.log_every = 2, 2, 1
  c.model_init = npz
  c.input.tokenizer = f"{d}/spiece.model"
  workdir = str(tmp_path / "run")
  assert np.isfinite(loop.train_and_evaluate(c, workdir)["loss"])
  _export_equals_the_trained_state(workdir, c.input.tokenizer, str(tmp_path / "artifact"))


def _export_equals_the_trained_state(workdir: str, tokenizer: str, out: str):
  """export(workdir) -> load_pretrained: the checkpoint tokenizer's ids, and image and text
  embeddings equal to the workdir's last checkpoint run directly."""
  import os
  from flax import nnx
  from echovlm_jax import distributed
  from echovlm_jax.tools import export
  from echovlm_jax.train import checkpointing, workdir_config
  from echovlm_jax.inference import frames as frames_lib
  from echovlm_jax.interop.checkpoint_tokenizer import CheckpointTokenizer
  export.export(workdir, out)                     # stats from the dataset config.json names
  assert "tokenizer.model" not in os.listdir(out)                  # not the dataset's
  art = echovlm_jax.load_pretrained(out)
  assert art.config["tokenizer"]["kind"] == "checkpoint" and art.config["format_version"] == 2
  cfg = workdir_config.load(workdir)
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  trained, _ = checkpointing.restore_params(cfg, workdir, mesh)
  trained = nnx.merge(*nnx.split(jax.device_get(trained)))
  source = CheckpointTokenizer.load(tokenizer)
  texts = F.TEXTS + [" ".join(F.CORPUS[:6])]                    # one longer than TEXT_LEN
  ids = source.encode_batch(texts, F.TEXT_LEN)
  np.testing.assert_array_equal(art.tokenizer.encode_batch(texts, F.TEXT_LEN), ids)
  np.testing.assert_allclose(art.encode_texts(texts), np.asarray(trained.encode_text(ids)),
                             atol=1e-5)
  frames = np.stack([F.frames(seed=s, h=F.RES, w=F.RES) for s in range(cfg.input.num_frames)], 1)
  ref = np.asarray(trained.encode_image(frames_lib.prepare_frames(frames, cfg.input.res)))
  np.testing.assert_allclose(art.encode_images(frames), ref, atol=1e-5)


@pytest.mark.parametrize("kind,vision,text", [
    ("clip", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, image_size=224, patch_size=14),       # ViT-L/14
     dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    ("siglip", dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16,
                    intermediate_size=4304, image_size=384, patch_size=14),     # So400m/14
     dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304,
          vocab_size=32000, max_position_embeddings=64)),
])
def test_large_shapes_build_towers_with_the_checkpoints_parameter_count(kind, vision, text):
  """Architectures come from shapes: L/14 and So400m give towers with exactly transformers'
  parameter count (built shape-only on both sides; our measurement head aside; CLIP's class
  position lives in our class token, its bias-free patch conv gains our zero bias)."""
  import torch
  import transformers
  from flax import nnx
  from echovlm_jax.models.dual_encoder import DualEncoder
  cls = (transformers.CLIPConfig, transformers.CLIPModel) if kind == "clip" else (
      transformers.SiglipConfig, transformers.SiglipModel)
  config = cls[0](vision_config=vision, text_config=text)
  with torch.device("meta"):
    hf = cls[1](config)
  flat = {k: v for k, v in hf.state_dict().items() if "position_ids" not in k}
  arch = architecture.architecture(flat, f"hf_{kind}", config.to_dict())
  # The patch grid's pixels: So400m/14's 384 px give 27 patches (the conv never reads the rest).
  assert arch["image"]["res"] == vision["image_size"] // 14 * 14 and arch["image"]["patch"] == 14
  cfg = architecture.model_config(arch)
  ours = nnx.eval_shape(lambda: DualEncoder(cfg, vocab_size=arch["vocab_size"],
                                            num_measurements=1, rngs=nnx.Rngs(0)))
  sizes = {"/".join(map(str, p)): int(np.prod(v.shape))
           for p, v in nnx.to_flat_state(nnx.state(ours, nnx.Param))}
  n_ours = sum(n for p, n in sizes.items()
               if not p.startswith("meas_") and not (kind == "clip" and p == "logit_bias"))
  assert n_ours == sum(v.numel() for v in flat.values())


def test_caption_fitting_leaves_room_for_clips_two_special_tokens(ckpt):
  """CLIP adds start and end of text: the input pipeline fits captions into max_len - 2 ids
  (caption_augment budgets our one EOS), so a fitted caption is never cut by truncation."""
  from echovlm_jax.interop.checkpoint_tokenizer import CheckpointTokenizer
  from echovlm_jax.data import caption_augment
  tok = CheckpointTokenizer.load(ckpt["clip"][0])
  assert tok.num_special_tokens == 2
  assert CheckpointTokenizer.load(ckpt["siglip"][0]).num_special_tokens == 1
  caption = "ab. c. d. e. f. g. h."                     # 3 + 6 x 2 = 15 ids before specials
  assert len(tok.encode(caption)) == 15
  fit = lambda max_len: caption_augment.augment_pair(
      caption, "", False, np.random.default_rng(0), tok=tok, max_len=max_len).caption
  assert len(tok.encode(fit(F.TEXT_LEN))) + 2 > F.TEXT_LEN    # one-special budget: overflows
  fit_len = F.TEXT_LEN + 1 - tok.num_special_tokens           # what input_pipeline passes
  fitted = fit(fit_len)
  assert len(tok.encode(fitted)) + 2 <= F.TEXT_LEN and fitted.startswith("ab.")
