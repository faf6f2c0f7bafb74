"""config.model_init (interop): big_vision and open_clip .npz checkpoints built from a tiny
model's own params load back to the same embeddings; bias folding, position resizing, grayscale
adaptation and the one error that lists every mismatch."""

import ml_collections
import numpy as np
import pytest
from flax import nnx
from flax import traverse_util

from configs import echovlm
from echovlm_jax.interop import conversion, init_from_checkpoint, layout_writers, our_params, weights
from echovlm_jax.models.dual_encoder import DualEncoder

VOCAB, M = 40, 15


def _config(pool="map", scan=False, res=32, max_len=12):
  """configs/echovlm.py's config.model, shrunk."""
  c = ml_collections.ConfigDict(echovlm.get_config().model.to_dict())
  c.image.update(patch=8, mlp_ratio=2, pool=pool, channels=1, width=32, depth=1, heads=2, res=res)
  c.text.update(mlp_ratio=2, pool="eos", causal=False, width=32, depth=1, heads=2, max_len=max_len)
  c.update(embed_dim=16, dtype="float32", remat=False, scan_layers=scan, init_temperature=10.0,
           init_bias=-10.0, meas_hidden=8)
  return c


def _params(cfg, seed):
  model = DualEncoder(cfg, vocab_size=VOCAB, num_measurements=M, rngs=nnx.Rngs(seed))
  return nnx.split(model, nnx.Param)


def _embed(graphdef, params, res=32):
  model = nnx.merge(graphdef, params)
  rng = np.random.RandomState(0)
  frames = rng.uniform(-1, 1, (2, 1, res, res, 1)).astype(np.float32)
  tokens = np.array([[5, 6, 7, 1, 0, 0], [9, 3, 1, 0, 0, 0]], np.int32)
  return np.asarray(model.encode_image(frames)), np.asarray(model.encode_text(tokens))


def _randomize(params, seed):
  """Non-zero biases everywhere, so a dropped or misplaced array shows."""
  rng = np.random.RandomState(seed)
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(params))
  nnx.replace_by_pure_dict(params, traverse_util.unflatten_dict(
      {k: (np.asarray(v) + 0.05 * rng.randn(*np.shape(v))).astype(np.float32)
       for k, v in flat.items()}))
  return params


def _init_config(path, model_cfg, fmt="auto", skip=""):
  return ml_collections.ConfigDict(dict(model_init=str(path), model_init_format=fmt,
                                        model_init_skip=skip, model=model_cfg))


def _convert(params, model_cfg, path, skip=""):
  """(params, notes): the checkpoint file at path converted into params as read (no input
  normalisation folded in), the core `load_towers` and `load_pretrained` share."""
  flat, layout, _ = weights.read_weights(path)
  return conversion.convert_into(params, model_cfg, flat, layout, path, skip)


def test_our_names_are_slash_joined_paths_in_tree_order():
  tree = {"image": {"encoder": {"blocks": {0: {"w": 1}, 1: {"w": 2}}, "b": 3}}, "t": 4, "e": {}}
  flat = our_params.flatten(tree)
  assert list(flat.items()) == [("image/encoder/blocks/0/w", 1), ("image/encoder/blocks/1/w", 2),
                                ("image/encoder/b", 3), ("t", 4)]


@pytest.mark.parametrize("scan", [False, True])
def test_big_vision_roundtrip_gives_same_embeddings(tmp_path, scan):
  cfg = _config(pool="map", scan=scan)
  gd, src = _params(cfg, 0)
  src = _randomize(src, 0)
  path = tmp_path / "bv.npz"
  np.savez(path, **{f"params/{k}": v for k, v in layout_writers.to_big_vision(src, cfg).items()})
  _, dst = _params(cfg, 1)
  dst = init_from_checkpoint.load_towers(dst, _init_config(path, cfg))
  for a, b in zip(_embed(gd, src), _embed(gd, dst)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_open_clip_roundtrip_folds_key_and_value_biases(tmp_path):
  cfg = _config(pool="tok")
  gd, src = _params(cfg, 0)
  # open_clip has no biases on the patch conv and the projections: keep those zero.
  src = _randomize(src, 0)
  for tower in ("image_proj", "text_proj"):
    src[tower]["bias"][...] = np.zeros_like(src[tower]["bias"][...])
  src["image"]["embedding"]["bias"][...] = np.zeros_like(src["image"]["embedding"]["bias"][...])
  sd = layout_writers.to_open_clip(src, cfg)
  # Same function, other parameters: a key bias (softmax ignores it) and a value bias whose
  # effect bv @ W_out is taken back out of the output bias; a class-token position.
  rng = np.random.RandomState(1)
  for base in ("visual.transformer.resblocks.0", "transformer.resblocks.0"):
    w = sd[f"{base}.attn.out_proj.bias"].shape[0]
    bk, bv = rng.randn(w).astype(np.float32), rng.randn(w).astype(np.float32)
    sd[f"{base}.attn.in_proj_bias"] = np.concatenate([np.zeros(w, np.float32), bk, bv])
    sd[f"{base}.attn.out_proj.bias"] = sd[f"{base}.attn.out_proj.bias"] - sd[
        f"{base}.attn.out_proj.weight"] @ bv
  pos0 = rng.randn(32).astype(np.float32)
  sd["visual.positional_embedding"][0] = pos0
  sd["visual.class_embedding"] = sd["visual.class_embedding"] - pos0
  sd["attn_mask"] = np.zeros((12, 12), np.float32)  # a buffer some exports carry: ignored
  path = tmp_path / "oc.npz"
  np.savez(path, **sd)
  _, dst = _params(cfg, 1)
  dst = init_from_checkpoint.load_towers(dst, _init_config(path, cfg, fmt="open_clip"))
  for a, b in zip(_embed(gd, src), _embed(gd, dst)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_resize_posemb_is_bilinear_on_the_grid():
  grid = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)          # value = x + 2 y
  out = conversion.resize_posemb(grid.reshape(4, 1), 16).reshape(4, 4)
  # Half-pixel centres: output sample i sits at (i + 0.5) / 2 - 0.5, clamped to [0, 1].
  t = np.clip((np.arange(4) + 0.5) / 2 - 0.5, 0, 1)
  np.testing.assert_allclose(out, t[None, :] + 2 * t[:, None], atol=1e-6)


def test_rgb_kernel_and_position_resizing_on_load(tmp_path):
  cfg = _config(pool="map", res=32)          # 4 x 4 patches
  big = _config(pool="map", res=16)          # checkpoint trained at 2 x 2 patches, RGB
  _, src = _params(big, 0)
  flat = layout_writers.to_big_vision(src, big)
  rgb = np.random.RandomState(0).randn(8, 8, 3, 32).astype(np.float32)
  flat["img/embedding/kernel"] = rgb
  path = tmp_path / "rgb.npz"
  np.savez(path, **flat)
  gd, dst = _params(cfg, 1)
  dst, notes = _convert(dst, cfg, str(path))
  assert any("RGB" in n for n in notes) and any("4 -> 16" in n for n in notes)
  kernel = np.asarray(dst["image"]["embedding"]["kernel"][...])
  np.testing.assert_allclose(kernel, rgb.sum(2).reshape(64, 32), atol=1e-6)
  # A gray patch through the adapted kernel == the same patch in R, G and B through the RGB one.
  patch = np.random.RandomState(1).rand(8, 8).astype(np.float32)
  np.testing.assert_allclose(patch.reshape(-1) @ kernel,
                             np.repeat(patch[..., None], 3, -1).reshape(-1) @ rgb.reshape(-1, 32),
                             rtol=1e-5, atol=1e-5)
  expected = conversion.resize_posemb(flat["img/pos_embedding"][0], 16)
  np.testing.assert_allclose(np.asarray(dst["image"]["posemb"][...]), expected, atol=1e-6)


def test_text_positions_are_truncated_or_padded(tmp_path):
  long_cfg, short_cfg = _config(max_len=12), _config(max_len=6)
  _, src = _params(long_cfg, 0)
  flat = layout_writers.to_big_vision(src, long_cfg)
  path = tmp_path / "t.npz"
  np.savez(path, **flat)
  _, short = _params(short_cfg, 1)
  short, _ = _convert(short, short_cfg, str(path))
  np.testing.assert_allclose(np.asarray(short["text"]["posemb"][...]),
                             flat["txt/pos_embedding"][0][:6])
  _, src_short = _params(short_cfg, 0)
  np.savez(path, **layout_writers.to_big_vision(src_short, short_cfg))
  _, long = _params(long_cfg, 2)
  init_rows = np.asarray(long["text"]["posemb"][...])[6:].copy()
  long, _ = _convert(long, long_cfg, str(path))
  got = np.asarray(long["text"]["posemb"][...])
  np.testing.assert_allclose(got[:6], np.asarray(src_short["text"]["posemb"][...]))
  np.testing.assert_allclose(got[6:], init_rows)


def test_mismatches_are_listed_in_one_error(tmp_path):
  cfg = _config()
  _, src = _params(cfg, 0)
  flat = layout_writers.to_big_vision(src, cfg)
  flat["img/Transformer/encoderblock_1/LayerNorm_0/scale"] = np.ones(32, np.float32)  # depth 2
  flat["txt/head/kernel"] = np.zeros((32, 24), np.float32)                           # width
  flat["img/ln_pre/scale"] = np.ones(32, np.float32)                                 # unknown
  flat["img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/bias"] = np.ones(
      (2, 16), np.float32)                                                           # q bias
  del flat["txt/Encoder_0/encoder_norm/bias"]                                        # missing
  path = tmp_path / "bad.npz"
  np.savez(path, **flat)
  _, dst = _params(cfg, 1)
  with pytest.raises(conversion.ModelInitError) as e:
    _convert(dst, cfg, str(path))
  msg = str(e.value)
  for name in ("encoderblock_1/LayerNorm_0/scale", "txt/head/kernel", "img/ln_pre/scale",
               "query/bias", "text/norm/bias"):
    assert name in msg, (name, msg)
  assert len(e.value.problems) == 5
  # Dropping the unrepresentable names knowingly leaves only the real mismatches.
  with pytest.raises(conversion.ModelInitError) as e:
    _convert(dst, cfg, str(path), skip=r"img/ln_pre/.*,.*query/bias")
  assert len(e.value.problems) == 3


def test_unknown_layout_and_no_init():
  cfg = _config()
  _, params = _params(cfg, 0)
  assert init_from_checkpoint.load_towers(params, _init_config("", cfg)) is params
  with pytest.raises(weights.CheckpointError, match="model_init_format"):
    weights.detect_layout({"foo/bar": np.zeros(1)}, "x.npz")


def test_mistyped_format_fails_before_reading_as_another_layout(tmp_path):
  """A typo in model_init_format used to be read as big_vision and end in a bare KeyError."""
  cfg = _config()
  _, params = _params(cfg, 0)
  path = tmp_path / "bv.npz"
  np.savez(path, **layout_writers.to_big_vision(params, cfg))
  c = _init_config(path, cfg, fmt="hf-clip")
  for fn in (lambda: init_from_checkpoint.configure(c),
             lambda: init_from_checkpoint.load_towers(params, c)):
    with pytest.raises(ValueError,
                       match=r"config.model_init_format='hf-clip': expected one of 'auto', "
                             r"'big_vision', 'open_clip', 'hf_clip', 'hf_siglip'"):
      fn()
