"""The objectives equal plain loop-by-loop references (values and gradients), give the same
numbers on every mesh as on one device, and never hold a [B_global, B_global] logits array."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from echovlm_jax import distributed, losses
from echovlm_jax.echo.schema import UNKNOWN_VIEW_ID

UNK = UNKNOWN_VIEW_ID
MESHES = [(8, 1, 1), (2, 2, 2), (4, 1, 2)]


# --- References: one example, one pair at a time --------------------------------------------

def _lse(xp, terms):
  return xp.log(sum(xp.exp(x) for x in terms))


def _same_view(view, i, j):
  return view[i] == view[j] or view[i] == UNK or view[j] == UNK


def _duplicate(cid, i, j):
  """Identical captions (same caption id) are not each other's negatives."""
  return cid is not None and j != i and cid[i] == cid[j]


def ref_clip(xp, img, txt, t, neg, *, view, valid, has_neg, same_view, negation, cid=None):
  s, n = xp.exp(t), len(img)
  total, count = 0.0, 0
  for i in range(n):
    if not valid[i]:
      continue
    cols = [j for j in range(n) if j == i or (valid[j] and not _duplicate(cid, i, j)
                                              and (not same_view or _same_view(view, i, j)))]
    i2t = [s * xp.dot(img[i], txt[j]) for j in cols]
    if negation:
      i2t += [s * xp.dot(img[i], neg[j]) for j in range(n)
              if valid[j] and has_neg[j] and (not same_view or _same_view(view, i, j))]
    t2i = [s * xp.dot(txt[i], img[j]) for j in cols]
    pos = s * xp.dot(img[i], txt[i])
    total = total + 0.5 * ((_lse(xp, i2t) - pos) + (_lse(xp, t2i) - pos))
    count += 1
  return total / max(count, 1)


def ref_sigmoid(xp, img, txt, t, bias, neg, *, view, valid, has_neg, same_view, negation,
                cid=None):
  s, n = xp.exp(t), len(img)
  log_sig = lambda x: -xp.log(1 + xp.exp(-x))
  total, count = 0.0, 0
  for i in range(n):
    if not valid[i]:
      continue
    count += 1
    for j in range(n):
      if j == i:
        total = total - log_sig(s * xp.dot(img[i], txt[j]) + bias)
      elif valid[j] and not _duplicate(cid, i, j) and (not same_view or _same_view(view, i, j)):
        total = total - log_sig(-(s * xp.dot(img[i], txt[j]) + bias))
      if negation and valid[j] and has_neg[j] and (not same_view or _same_view(view, i, j)):
        total = total - log_sig(-(s * xp.dot(img[i], neg[j]) + bias))
  return total / max(count, 1)


def ref_supcon(xp, img, t, *, view, valid):
  s, n = xp.exp(t), len(img)
  total, count = 0.0, 0
  for i in range(n):
    others = [a for a in range(n) if a != i and valid[a]]
    positives = [p for p in others if view[p] == view[i] and view[i] != UNK]
    if not valid[i] or not positives:
      continue
    den = _lse(xp, [s * xp.dot(img[i], img[a]) for a in others])
    total = total - sum(s * xp.dot(img[i], img[p]) - den for p in positives) / len(positives)
    count += 1
  return total / max(count, 1)


def ref_negation(xp, img, txt, t, neg, *, valid, has_neg):
  s = xp.exp(t)
  terms = []
  for i in range(len(img)):
    if valid[i] and has_neg[i]:
      a, b = s * xp.dot(img[i], txt[i]), s * xp.dot(img[i], neg[i])
      terms.append(-(a - xp.log(xp.exp(a) + xp.exp(b))))
  return sum(terms) / max(len(terms), 1)


def ref_meas(pred, target, mask, delta):
  total, count = 0.0, 0
  for i in range(pred.shape[0]):
    for m in range(pred.shape[1]):
      if mask[i, m]:
        x = abs(pred[i, m] - target[i, m])
        total += 0.5 * x * x if x <= delta else delta * (x - 0.5 * delta)
        count += 1
  return total / max(count, 1)


# --- Data -----------------------------------------------------------------------------------

def make_case(name: str, n: int = 8, d: int = 6, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  img, txt, neg = (unit(rng.normal(size=(n, d))) for _ in range(3))
  txt = unit(txt + 1.5 * img)   # matched pairs closer than random ones
  view = rng.choice([0, 3, 5, UNK], size=n)
  has_neg = (rng.random(n) < 0.6).astype(np.float32)
  valid = np.ones(n, np.float32)
  if name == "one_view":
    view[:] = 3
  elif name == "all_unknown":
    view[:] = UNK
  elif name == "nothing_negated":
    has_neg[:] = 0
  elif name == "padding":
    valid[-3:] = 0
  elif name != "random":
    raise ValueError(name)
  return dict(img=img, txt=txt, neg=neg, view=view.astype(np.int32), has_neg=has_neg,
              valid=valid, t=np.float64(np.log(7.0)), bias=np.float64(-2.0))


CASES = ["random", "one_view", "all_unknown", "nothing_negated", "padding"]
CASE_PARAMS = [(c, 8) for c in CASES] + [("random", 1)]


def _case(name, n):
  c = make_case(name, n=n)
  if n == 1:
    c["has_neg"][:] = 1
  return c


def _check(ours, ref, c, argnums, rtol=2e-5, atol=2e-6):
  """Value (float64 numpy reference) and gradient (jax.grad of the jnp reference)."""
  args = [c[k] for k in argnums]
  np.testing.assert_allclose(float(ours(*map(jnp.asarray, args))), ref(np, *args),
                             rtol=rtol, atol=atol)
  g_ours = jax.grad(ours, argnums=range(len(args)))(*[jnp.asarray(a, jnp.float32) for a in args])
  g_ref = jax.grad(functools.partial(ref, jnp), argnums=range(len(args)))(
      *[jnp.asarray(a, jnp.float32) for a in args])
  for name, a, b in zip(argnums, g_ours, g_ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=name)


# --- Values and gradients against the references --------------------------------------------

@pytest.mark.parametrize("case,n", CASE_PARAMS)
@pytest.mark.parametrize("same_view", [False, True])
@pytest.mark.parametrize("negation", [False, True])
def test_clip_matches_reference(case, n, same_view, negation):
  c = _case(case, n)
  kw = dict(view=c["view"], valid=c["valid"], has_neg=c["has_neg"], same_view=same_view,
            negation=negation)
  ref = lambda xp, img, txt, t, neg: ref_clip(xp, img, txt, t, neg, **kw)
  ours = lambda img, txt, t, neg: losses.clip_loss(
      img, txt, t, view=c["view"], same_view_negatives=same_view, valid=c["valid"],
      neg_text_emb=neg if negation else None, has_negation=c["has_neg"])
  _check(ours, ref, c, ("img", "txt", "t", "neg"))


@pytest.mark.parametrize("case,n", CASE_PARAMS)
@pytest.mark.parametrize("same_view", [False, True])
@pytest.mark.parametrize("negation", [False, True])
def test_sigmoid_matches_reference(case, n, same_view, negation):
  c = _case(case, n)
  kw = dict(view=c["view"], valid=c["valid"], has_neg=c["has_neg"], same_view=same_view,
            negation=negation)
  ref = lambda xp, img, txt, t, b, neg: ref_sigmoid(xp, img, txt, t, b, neg, **kw)
  ours = lambda img, txt, t, b, neg: losses.sigmoid_loss(
      img, txt, t, b, view=c["view"], same_view_negatives=same_view, valid=c["valid"],
      neg_text_emb=neg if negation else None, has_negation=c["has_neg"])
  _check(ours, ref, c, ("img", "txt", "t", "bias", "neg"))


@pytest.mark.parametrize("case,n", CASE_PARAMS)
def test_view_supcon_matches_reference(case, n):
  c = _case(case, n)
  ref = lambda xp, img, t: ref_supcon(xp, img, t, view=c["view"], valid=c["valid"])
  ours = lambda img, t: losses.view_supcon_loss(img, t, c["view"], valid=c["valid"])
  _check(ours, ref, c, ("img", "t"))


def test_view_supcon_counts_only_anchors_with_a_positive():
  c = make_case("random")
  c["view"] = np.array([1, 1, 2, UNK, UNK, 4, 5, 6], np.int32)   # positives only for 0 and 1
  ours = float(losses.view_supcon_loss(jnp.asarray(c["img"]), c["t"], c["view"]))
  assert ours == pytest.approx(ref_supcon(np, c["img"], c["t"], view=c["view"],
                                          valid=c["valid"]), rel=1e-5)
  assert ours > 0
  lone = np.array([0, 1, 2, UNK, UNK, 4, 5, 6], np.int32)        # nobody has a positive
  assert float(losses.view_supcon_loss(jnp.asarray(c["img"]), c["t"], lone)) == 0.0


@pytest.mark.parametrize("case,n", CASE_PARAMS)
def test_negation_pair_matches_reference(case, n):
  c = _case(case, n)
  ref = lambda xp, img, txt, t, neg: ref_negation(xp, img, txt, t, neg, valid=c["valid"],
                                                  has_neg=c["has_neg"])
  ours = lambda img, txt, t, neg: losses.negation_pair_loss(img, txt, neg, t, c["has_neg"],
                                                            valid=c["valid"])
  _check(ours, ref, c, ("img", "txt", "t", "neg"))


def test_measurement_loss_matches_reference():
  rng = np.random.default_rng(1)
  pred, target = rng.normal(size=(6, 15)) * 2, rng.normal(size=(6, 15))
  mask = (rng.random((6, 15)) < 0.4).astype(np.float32)
  target_nan = np.where(mask > 0, target, np.nan)                  # absent values may be NaN
  ours = losses.measurement_loss(jnp.asarray(pred), jnp.asarray(target_nan), mask, delta=0.7)
  assert float(ours) == pytest.approx(ref_meas(pred, target, mask, 0.7), rel=1e-5)
  g = jax.grad(lambda p: losses.measurement_loss(p, jnp.asarray(target_nan), mask, delta=0.7))(
      jnp.asarray(pred, jnp.float32))
  assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[mask == 0] == 0)
  diff = np.clip(pred - target, -0.7, 0.7)                          # Huber's derivative
  np.testing.assert_allclose(np.asarray(g), np.where(mask > 0, diff / mask.sum(), 0), rtol=1e-5,
                             atol=1e-7)
  assert float(losses.measurement_loss(jnp.asarray(pred), jnp.asarray(target), 0 * mask)) == 0.0


@pytest.mark.parametrize("kind", ["clip", "sigmoid"])
def test_identical_captions_are_not_each_others_negatives(kind):
  """A batch whose examples 0-2 share one caption (one study's report, or "normal study"):
  with caption ids the duplicates leave the denominators, so the loss equals the reference
  without those pairs and differs from the loss that treats them as negatives."""
  c = make_case("random", n=8)
  c["txt"][1] = c["txt"][2] = c["txt"][0]
  cid = np.array([5, 5, 5, 1, 2, 3, 4, 6], np.int32)
  kw = dict(view=c["view"], valid=c["valid"], has_neg=c["has_neg"], same_view=False, negation=True)
  args = [jnp.asarray(c[k]) for k in ("img", "txt", "t")]
  if kind == "clip":
    ours = lambda ids: losses.clip_loss(*args, view=c["view"], valid=c["valid"], caption_id=ids,
                                        neg_text_emb=jnp.asarray(c["neg"]), has_negation=c["has_neg"])
    ref = lambda ids: ref_clip(np, c["img"], c["txt"], c["t"], c["neg"], cid=ids, **kw)
  else:
    ours = lambda ids: losses.sigmoid_loss(*args, c["bias"], view=c["view"], valid=c["valid"],
                                           caption_id=ids, neg_text_emb=jnp.asarray(c["neg"]),
                                           has_negation=c["has_neg"])
    ref = lambda ids: ref_sigmoid(np, c["img"], c["txt"], c["t"], c["bias"], c["neg"], cid=ids, **kw)
  np.testing.assert_allclose(float(ours(jnp.asarray(cid))), ref(cid), rtol=2e-5)
  np.testing.assert_allclose(float(ours(None)), ref(None), rtol=2e-5)
  assert abs(float(ours(jnp.asarray(cid))) - float(ours(None))) > 1e-3


def test_view_mask_definition():
  m = np.asarray(losses.view_mask(jnp.array([0, 0, UNK]), jnp.array([0, 1, UNK])))
  np.testing.assert_array_equal(m, [[1, 0, 1], [1, 0, 1], [1, 1, 1]])


def test_same_view_negatives_changes_the_loss_only_across_views():
  c = make_case("random")
  args = (jnp.asarray(c["img"]), jnp.asarray(c["txt"]), c["t"])
  plain = float(losses.clip_loss(*args))
  one_view = float(losses.clip_loss(*args, view=jnp.zeros(8, jnp.int32), same_view_negatives=True))
  masked = float(losses.clip_loss(*args, view=jnp.arange(8), same_view_negatives=True))
  assert one_view == pytest.approx(plain, rel=1e-6)
  assert masked == pytest.approx(0.0, abs=1e-6)  # every caption alone in its view: nothing to tell apart


# --- compute_losses on meshes ---------------------------------------------------------------

def loss_config(**kw) -> ml_collections.ConfigDict:
  base = dict(kind="clip", view_mode="none", negation=False, meas_weight=0.0, view_weight=0.5,
              negation_weight=0.5, huber_delta=1.0, sigmoid_ring=False, meas_text_weight=0.0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


CONFIGS = {
    "echovlm": loss_config(view_mode="same_view_negatives", negation=True, meas_weight=0.2,
                           meas_text_weight=0.7),
    "supcon": loss_config(view_mode="view_supcon"),
    "sigmoid_ring": loss_config(kind="sigmoid", view_mode="same_view_negatives", negation=True,
                                sigmoid_ring=True),
    "sigmoid": loss_config(kind="sigmoid", negation=True),
}


def make_outputs_batch(n=16, d=6, m=5, seed=3):
  c = make_case("padding", n=n, d=d, seed=seed)
  rng = np.random.default_rng(seed)
  outputs = dict(image_emb=c["img"], text_emb=c["txt"], neg_text_emb=c["neg"],
                 meas_pred=rng.normal(size=(n, m)), text_meas_pred=rng.normal(size=(n, m)),
                 logit_scale=c["t"], logit_bias=c["bias"])
  meas_mask = (rng.random((n, m)) < 0.5).astype(np.float32)
  # Caption ids with repeats: a study's report shared by several images (losses.py).
  batch = dict(view=c["view"], has_negation=c["has_neg"], valid=c["valid"],
               caption_id=rng.integers(0, n // 2, n),
               measurements=rng.normal(size=(n, m)), meas_mask=meas_mask,
               text_meas_mask=meas_mask * (rng.random((n, m)) < 0.5))
  cast = lambda x: jnp.asarray(x, jnp.int32 if x.dtype.kind == "i" else jnp.float32)
  return jax.tree.map(cast, outputs), jax.tree.map(cast, batch)


_DIFF = ("image_emb", "text_emb", "neg_text_emb", "meas_pred", "text_meas_pred", "logit_scale",
         "logit_bias")


@functools.lru_cache(maxsize=None)
def loss_and_grad(config_name: str, mesh_shape: tuple[int, ...] | None):
  mesh = None if mesh_shape is None else distributed.create_mesh(
      dict(zip(distributed.MESH_AXES, mesh_shape)))
  cfg = CONFIGS[config_name]

  def f(diff, rest, batch):
    total, terms = losses.compute_losses({**diff, **rest}, batch, cfg, mesh=mesh)
    return total, terms
  return jax.jit(jax.value_and_grad(f, has_aux=True)), mesh


def _split(outputs):
  return ({k: v for k, v in outputs.items() if k in _DIFF},
          {k: v for k, v in outputs.items() if k not in _DIFF})


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_compute_losses_equals_sum_of_reference_terms(config_name):
  outputs, batch = make_outputs_batch()
  cfg = CONFIGS[config_name]
  (total, terms), _ = loss_and_grad(config_name, None)[0](*_split(outputs), batch)
  o = {k: np.asarray(v, np.float64) for k, v in outputs.items()}
  b = {k: np.asarray(v) for k, v in batch.items()}
  kw = dict(view=b["view"], valid=b["valid"], has_neg=b["has_negation"])
  same_view = cfg.view_mode == "same_view_negatives"
  assert len(set(b["caption_id"].tolist())) < len(b["caption_id"])  # duplicates present
  if cfg.kind == "clip":
    expect = {"contrastive": ref_clip(np, o["image_emb"], o["text_emb"], o["logit_scale"],
                                      o["neg_text_emb"], same_view=same_view,
                                      negation=cfg.negation, cid=b["caption_id"], **kw)}
  else:
    expect = {"contrastive": ref_sigmoid(np, o["image_emb"], o["text_emb"], o["logit_scale"],
                                         o["logit_bias"], o["neg_text_emb"], same_view=same_view,
                                         negation=cfg.negation, cid=b["caption_id"], **kw)}
  weights = {"contrastive": 1.0}
  if cfg.view_mode == "view_supcon":
    expect["view"] = ref_supcon(np, o["image_emb"], o["logit_scale"], view=b["view"],
                                valid=b["valid"])
    weights["view"] = cfg.view_weight
  if cfg.negation:
    expect["negation"] = ref_negation(np, o["image_emb"], o["text_emb"], o["logit_scale"],
                                      o["neg_text_emb"], **{k: kw[k] for k in ("valid", "has_neg")})
    weights["negation"] = cfg.negation_weight
  if cfg.meas_weight:
    expect["meas"] = ref_meas(o["meas_pred"], b["measurements"],
                              b["meas_mask"] * b["valid"][:, None], cfg.huber_delta)
    weights["meas"] = cfg.meas_weight
  if cfg.meas_text_weight:
    # Only what the caption states, a subset of what the image shows.
    expect["meas_text"] = ref_meas(o["text_meas_pred"], b["measurements"],
                                   b["text_meas_mask"] * b["valid"][:, None], cfg.huber_delta)
    assert expect["meas_text"] != pytest.approx(
        ref_meas(o["text_meas_pred"], b["measurements"], b["meas_mask"] * b["valid"][:, None],
                 cfg.huber_delta))
    weights["meas_text"] = cfg.meas_text_weight
  assert set(terms) == set(expect)
  for k in expect:
    assert float(terms[k]) == pytest.approx(expect[k], rel=2e-5), k
  assert float(total) == pytest.approx(sum(weights[k] * expect[k] for k in expect), rel=2e-5)


@pytest.mark.parametrize("mesh_shape", MESHES)
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_compute_losses_on_mesh_equals_single_device(config_name, mesh_shape, num_devices):
  outputs, batch = make_outputs_batch()
  diff, rest = _split(outputs)
  (total1, terms1), grads1 = loss_and_grad(config_name, None)[0](diff, rest, batch)
  fn, mesh = loss_and_grad(config_name, mesh_shape)
  from echovlm_jax import sharding
  put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh) if x.ndim else
                                 jax.sharding.NamedSharding(mesh, jax.P()))
  (total, terms), grads = fn(jax.tree.map(put, diff), jax.tree.map(put, rest),
                             jax.tree.map(put, batch))
  assert float(total) == pytest.approx(float(total1), rel=1e-5)
  for k in terms1:
    assert float(terms[k]) == pytest.approx(float(terms1[k]), rel=1e-5, abs=1e-7), k
  for k in grads1:
    np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(grads1[k]), rtol=1e-4,
                               atol=1e-6, err_msg=k)


def test_ring_sigmoid_on_mesh_equals_dense(num_devices):
  outputs, batch = make_outputs_batch(n=32, seed=5)
  mesh = distributed.create_mesh(dict(data=4, fsdp=2, tensor=1))
  args = (outputs["image_emb"], outputs["text_emb"], outputs["logit_scale"],
          outputs["logit_bias"])
  kw = dict(view=batch["view"], same_view_negatives=True, neg_text_emb=outputs["neg_text_emb"],
            has_negation=batch["has_negation"], valid=batch["valid"])
  f = lambda ring, mesh: jax.jit(jax.value_and_grad(
      lambda i, t, s, b: losses.sigmoid_loss(i, t, s, b, mesh=mesh, ring=ring, **kw),
      argnums=(0, 1, 2, 3)))(*args)
  (v_dense, g_dense), (v_ring, g_ring) = f(False, None), f(True, mesh)
  assert float(v_ring) == pytest.approx(float(v_dense), rel=1e-5)
  for a, b in zip(g_ring, g_dense):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# --- Memory at a global batch of 4096 -------------------------------------------------------

def _compiled(config_name: str, mesh, n: int = 4096, d: int = 8):
  cfg = CONFIGS[config_name]
  outputs = dict(image_emb=jax.ShapeDtypeStruct((n, d), jnp.float32),
                 text_emb=jax.ShapeDtypeStruct((n, d), jnp.float32),
                 neg_text_emb=jax.ShapeDtypeStruct((n, d), jnp.float32),
                 meas_pred=jax.ShapeDtypeStruct((n, 15), jnp.float32),
                 text_meas_pred=jax.ShapeDtypeStruct((n, 15), jnp.float32),
                 logit_scale=jax.ShapeDtypeStruct((), jnp.float32),
                 logit_bias=jax.ShapeDtypeStruct((), jnp.float32))
  batch = dict(view=jax.ShapeDtypeStruct((n,), jnp.int32),
               has_negation=jax.ShapeDtypeStruct((n,), jnp.float32),
               measurements=jax.ShapeDtypeStruct((n, 15), jnp.float32),
               meas_mask=jax.ShapeDtypeStruct((n, 15), jnp.float32),
               text_meas_mask=jax.ShapeDtypeStruct((n, 15), jnp.float32))
  if mesh is not None:
    from echovlm_jax import sharding
    shard = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=(
        sharding.batch_sharding(mesh) if x.shape else jax.sharding.NamedSharding(mesh, jax.P())))
    outputs, batch = jax.tree.map(shard, outputs), jax.tree.map(shard, batch)
  step = jax.jit(jax.grad(lambda o, b: losses.compute_losses(o, b, cfg, mesh=mesh)[0]))
  return step.lower(outputs, batch)


@pytest.mark.parametrize("config_name", ["echovlm", "sigmoid_ring", "supcon"])
def test_global_batch_4096_never_holds_full_logits(config_name, num_devices):
  mesh = distributed.create_mesh(dict(data=4, fsdp=2, tensor=1))
  compiled = _compiled(config_name, mesh).compile()
  hlo = compiled.as_text()
  for shape in ("[4096,4096]", "[4096,8192]", "[8192,4096]"):
    assert shape not in hlo, f"{config_name}: a {shape} array on one device"
  # The local rows against the gathered columns are what each device holds instead.
  local = "[512,512]" if config_name == "sigmoid_ring" else "[512,4096]"
  assert f"f32{local}" in hlo
  full_logits = 4096 * 4096 * 4
  assert compiled.memory_analysis().temp_size_in_bytes < full_logits
  # The check can fail: without a mesh the same loss does build the full logits.
  assert "f32[4096,4096]" in _compiled(config_name, None).compile().as_text()
