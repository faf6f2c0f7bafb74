"""The dual encoder: embeddings are unit vectors that respect padding, EOS pooling, causal
masking and frame averaging; scanned / rematerialised layers compute the same function; bf16
compute keeps float32 parameters."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import echovlm
from echovlm_jax.models import layers
from echovlm_jax.models.dual_encoder import DualEncoder

VOCAB, MEAS, LEN, RES = 40, 15, 8, 32


def tiny_config(image: dict | None = None, text: dict | None = None, **model):
  """config.model of size ti shrunk to width 32, depth 2, res 32, patch 8."""
  c = echovlm.get_config(f"size=ti,res={RES}")
  with c.unlocked():
    c.input.max_text_len = LEN
    c.model.image.update({**dict(width=32, depth=2, heads=2, patch=8), **(image or {})})
    c.model.text.update({**dict(width=32, depth=2, heads=2), **(text or {})})
    c.model.update(embed_dim=16, meas_hidden=16, **model)
  return c.model


def make_model(cfg, seed=0):
  return DualEncoder(cfg, vocab_size=VOCAB, num_measurements=MEAS, rngs=nnx.Rngs(seed))


def make_batch(n=4, t=1, seed=0):
  rng = np.random.default_rng(seed)
  text = np.zeros((n, LEN), np.int32)
  for i in range(n):
    k = rng.integers(2, LEN - 1)
    text[i, :k] = rng.integers(2, VOCAB, size=k)
    text[i, k] = 1  # EOS
  return dict(frames=jnp.asarray(rng.uniform(-1, 1, (n, t, RES, RES, 1)), jnp.float32),
              text=jnp.asarray(text), neg_text=jnp.asarray(np.roll(text, 1, axis=0)))


@functools.lru_cache(maxsize=None)
def _forward():
  return nnx.jit(lambda m, b: m(b))


def forward(model, batch):
  return _forward()(model, batch)


def test_outputs_are_unit_embeddings_with_initial_scale_and_bias():
  cfg = tiny_config()
  out = forward(make_model(cfg), make_batch())
  for k in ("image_emb", "text_emb", "neg_text_emb"):
    assert out[k].shape == (4, 16) and out[k].dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out[k], axis=-1), 1.0, rtol=1e-5)
  assert out["meas_pred"].shape == out["text_meas_pred"].shape == (4, MEAS)
  assert float(out["logit_scale"]) == pytest.approx(np.log(cfg.init_temperature))
  assert float(out["logit_bias"]) == pytest.approx(cfg.init_bias)
  # Different inputs give different embeddings (the towers are not constant).
  assert np.abs(np.asarray(out["text_emb"][0] - out["text_emb"][1])).max() > 1e-3
  assert np.abs(np.asarray(out["image_emb"][0] - out["image_emb"][1])).max() > 1e-3
  assert "neg_text_emb" not in forward(make_model(cfg), {k: v for k, v in make_batch().items()
                                                          if k != "neg_text"})


def test_text_ignores_padding_and_tokens_after_eos_when_causal():
  model = make_model(tiny_config(text=dict(causal=True)))
  enc = nnx.jit(lambda m, x: m.encode_text(x))
  tokens = jnp.array([[7, 8, 9, 1, 0, 0, 0, 0], [5, 1, 0, 0, 0, 0, 0, 0]], jnp.int32)
  base = enc(model, tokens)
  # Shorter padding: the pad keys were masked, so nothing changes.
  np.testing.assert_allclose(enc(model, tokens[:, :5]), base, atol=1e-5)
  # Causal + EOS pooling: whatever follows the EOS is invisible.
  after = tokens.at[:, 5:].set(jnp.array([11, 12, 13]))
  np.testing.assert_allclose(enc(model, after), base, atol=1e-5)
  # ... but a change before the EOS is seen.
  assert np.abs(np.asarray(enc(model, tokens.at[0, 1].set(20))[0] - base[0])).max() > 1e-4


def test_text_mean_pool_is_not_eos_pool():
  tokens = jnp.array([[7, 8, 9, 1, 0, 0, 0, 0]], jnp.int32)
  eos = make_model(tiny_config()).encode_text(tokens)
  mean = make_model(tiny_config(text=dict(pool="mean"))).encode_text(tokens)
  assert np.abs(np.asarray(eos - mean)).max() > 1e-3


@pytest.mark.parametrize("pool", ["map", "gap", "tok"])
def test_image_mean_over_frames(pool):
  model = make_model(tiny_config(image=dict(pool=pool)))  # T comes from the frames
  enc = nnx.jit(lambda m, x: m.image(x))
  b = make_batch(n=2, t=2)["frames"]
  per_frame = [enc(model, b[:, i:i + 1]) for i in range(2)]
  np.testing.assert_allclose(enc(model, b), (per_frame[0] + per_frame[1]) / 2, atol=1e-5)
  np.testing.assert_allclose(enc(model, b[:, ::-1]), enc(model, b), atol=1e-5)


def _stack_into_scanned(list_model, scan_model):
  """Copies a list-of-blocks model's weights into the stacked layout of a scanned one."""
  flat_list = dict(nnx.to_flat_state(nnx.state(list_model)))
  state = nnx.state(scan_model)
  new = {}
  for path, var in nnx.to_flat_state(state):
    if "blocks" in path:
      i = path.index("blocks")
      depth = var.shape[0]
      new[path] = var.replace(jnp.stack(
          [flat_list[path[:i + 1] + (d,) + path[i + 1:]][...] for d in range(depth)]))
    else:
      new[path] = var.replace(flat_list[path][...])
  nnx.update(scan_model, nnx.from_flat_state(new))


def test_scan_and_remat_compute_the_same_function():
  batch = make_batch()
  plain = make_model(tiny_config())
  scanned = make_model(tiny_config(scan_layers=True, remat=True))
  assert nnx.state(scanned)["image"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"].shape == (
      2, 32, 128)
  _stack_into_scanned(plain, scanned)

  # Gradients through the text tower, values through the image tower (keeps compiles short).
  def loss(m, tokens):
    return jnp.sum(m.encode_text(tokens) * jnp.arange(16.0))

  grad = nnx.jit(nnx.value_and_grad(loss))
  (v1, g1), (v2, g2) = grad(plain, batch["text"]), grad(scanned, batch["text"])
  assert float(v2) == pytest.approx(float(v1), rel=1e-5)
  image = nnx.jit(lambda m, x: m.encode_image(x))
  np.testing.assert_allclose(image(scanned, batch["frames"]), image(plain, batch["frames"]),
                             atol=1e-5)
  k1 = g1["text"]["encoder"]["blocks"][1]["attn"]["query"][...]
  k2 = g2["text"]["encoder"]["blocks"]["attn"]["query"][...][1]
  np.testing.assert_allclose(k2, k1, rtol=1e-4, atol=1e-6)
  assert np.abs(np.asarray(k1)).max() > 0


def test_bfloat16_compute_keeps_float32_params():
  batch = make_batch()
  f32 = make_model(tiny_config())
  bf16 = make_model(tiny_config(dtype="bfloat16"))
  params = nnx.state(bf16, nnx.Param)
  assert {v.dtype for v in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  a, b = forward(f32, batch), forward(bf16, batch)
  assert b["image_emb"].dtype == jnp.float32
  # Same weights (same seed), coarser arithmetic: close, not equal.
  np.testing.assert_allclose(b["image_emb"], a["image_emb"], atol=0.05)
  np.testing.assert_allclose(b["text_emb"], a["text_emb"], atol=0.05)
  assert np.abs(np.asarray(b["text_emb"] - a["text_emb"])).max() > 0


def test_every_parameter_has_one_logical_name_per_dim():
  model = make_model(tiny_config(scan_layers=True))
  known = {None, "embed", "mlp", "heads", "kv", "vocab", "length", "patch", "meas",
           layers.LAYERS_AXIS}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata()["out_sharding"]
    assert len(names) == var.ndim, path
    assert set(names) <= known, (path, names)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="config.model.image.pool"):
    make_model(tiny_config(image=dict(pool="max")))
  with pytest.raises(ValueError, match="config.model.dtype"):
    make_model(tiny_config(dtype="float16"))
  with pytest.raises(ValueError, match="config.model.attention_impl"):
    make_model(tiny_config(attention_impl="flash"))


def _explicit_attention(attn, x_q, x_kv, mask, causal):
  """softmax(q k^T / sqrt(d) masked) v, written out (what dot_product_attention must equal)."""
  p = lambda v: np.asarray(v[...], np.float64)
  q = np.einsum("bqw,whk->bhqk", x_q, p(attn.query)) + p(attn.query_bias)[None, :, None]
  k = np.einsum("bsw,whk->bhsk", x_kv, p(attn.key)) + p(attn.key_bias)[None, :, None]
  v = np.einsum("bsw,whk->bhsk", x_kv, p(attn.value)) + p(attn.value_bias)[None, :, None]
  logits = np.einsum("bhqk,bhsk->bhqs", q, k) / np.sqrt(q.shape[-1])
  allowed = np.broadcast_to(mask, logits.shape).copy()
  if causal:
    allowed &= np.tril(np.ones(logits.shape[-2:], bool))
  logits = np.where(allowed, logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  y = np.einsum("bhqs,bhsk->bqhk", w, v)
  return np.einsum("bqhk,hkw->bqw", y, p(attn.out)) + p(attn.out_bias)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_the_explicit_formula(causal):
  """jax.nn.dot_product_attention (the XLA path on CPU) with q/k/v biases, a padding mask and
  the causal flag computes the textbook formula."""
  rng = np.random.default_rng(0)
  attn = layers.Attention(32, 4, dtype=jnp.float32, rngs=nnx.Rngs(0), qkv_bias=True)
  for name in ("query_bias", "key_bias", "value_bias", "out_bias"):
    var = getattr(attn, name)
    var[...] = jnp.asarray(rng.normal(size=var.shape), jnp.float32)
  x = rng.normal(size=(3, 6, 32)).astype(np.float32)
  lengths = np.array([6, 4, 1])
  mask = (np.arange(6)[None] < lengths[:, None])[:, None, None, :]   # [B, 1, 1, K]
  got = nnx.jit(lambda a, x, m: a(x, x, m, causal))(attn, x, jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), _explicit_attention(attn, x, x, mask, causal),
                             rtol=1e-4, atol=1e-4)
  # A single query (MAP head probe) over all keys, no mask.
  probe = rng.normal(size=(3, 1, 32)).astype(np.float32)
  got = nnx.jit(lambda a, q, x: a(q, x))(attn, probe, x)
  np.testing.assert_allclose(np.asarray(got), _explicit_attention(
      attn, probe, x, np.ones((1, 1, 1, 6), bool), False), rtol=1e-4, atol=1e-4)
