"""Logical-name rules give the parameter shardings, the model is created already sharded with the
same numbers as on one device, and a loss + grad step gives the same result on every mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import echovlm
from echovlm_jax import distributed, losses, sharding
from echovlm_jax.models import factory
from test_model import MEAS, VOCAB, make_batch, make_model, tiny_config

RULES = echovlm.get_config().sharding_rules


def mesh_of(data, fsdp, tensor):
  return distributed.create_mesh(dict(data=data, fsdp=fsdp, tensor=tensor))


def test_logical_to_spec(num_devices):
  mesh = mesh_of(2, 2, 2)
  rules = [("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("batch", ("data", "fsdp")),
           ("vocab", "pod")]
  assert sharding.logical_to_spec(("embed", "mlp"), rules, mesh) == P("fsdp", "tensor")
  # A mesh axis is used once per array; names without rules are replicated.
  assert sharding.logical_to_spec(("embed", "embed"), rules, mesh) == P("fsdp")
  assert sharding.logical_to_spec(("kv", "embed"), rules, mesh) == P(None, "fsdp")
  assert sharding.logical_to_spec(("batch", None), rules, mesh) == P(("data", "fsdp"))
  # 3 heads cannot be split 2 ways; an axis the mesh lacks is skipped.
  assert sharding.logical_to_spec(("embed", "heads"), rules, mesh, (8, 3)) == P("fsdp")
  assert sharding.logical_to_spec(("vocab", "embed"), rules, mesh) == P(None, "fsdp")


def test_batch_helpers(num_devices):
  mesh = mesh_of(4, 1, 2)
  assert sharding.num_batch_shards(mesh) == 4
  batch = sharding.shard_batch(dict(view=np.arange(8, dtype=np.int32),
                                    frames=np.zeros((8, 1, 4, 4, 1), np.float32)), mesh)
  assert batch["frames"].shape == (8, 1, 4, 4, 1)
  assert batch["view"].sharding.spec == P(("data", "fsdp"))
  assert batch["frames"].sharding.shard_shape((8, 1, 4, 4, 1)) == (2, 1, 4, 4, 1)
  np.testing.assert_array_equal(np.asarray(batch["view"]), np.arange(8))


def test_created_sharded_with_fsdp_8(num_devices):
  cfg = tiny_config(image=dict(depth=1), text=dict(depth=1), scan_layers=True)
  mesh = mesh_of(1, 8, 1)
  model = sharding.create_sharded(
      factory.dual_encoder(cfg, vocab_size=VOCAB, num_measurements=MEAS), mesh, RULES)
  state = nnx.state(model)
  fc1 = state["image"]["encoder"]["blocks"]["mlp"]["fc1"]["kernel"][...]     # [layers, embed, mlp]
  assert fc1.shape == (1, 32, 128)
  assert fc1.sharding.spec == P(None, "fsdp", "tensor")
  assert fc1.sharding.shard_shape(fc1.shape) == (1, 4, 128)                  # embed split 8 ways
  vocab = state["text"]["token_embedding"][...]
  assert vocab.sharding.shard_shape(vocab.shape) == (VOCAB, 4)
  assert state["logit_scale"][...].sharding.spec == P()
  # Every parameter of the big matrices is split 8 ways: none bigger than 1/8 on a device.
  for path, var in nnx.to_flat_state(state):
    if var.ndim >= 2 and "embed" in var.get_metadata()["out_sharding"]:
      a = var[...]
      assert np.prod(a.sharding.shard_shape(a.shape)) * 8 == a.size, path
  # Same numbers as the model created on one device with the same seed.
  ref = dict(nnx.to_flat_state(nnx.state(make_model(cfg, seed=0))))
  for path, var in nnx.to_flat_state(state):
    np.testing.assert_allclose(np.asarray(var[...]), np.asarray(ref[path][...]), rtol=1e-6,
                               atol=1e-7, err_msg=str(path))


_LOSS = echovlm.get_config("objective=echovlm").loss


def _step(graphdef, mesh):
  def loss_fn(state, batch):
    out = nnx.merge(graphdef, state)(batch)
    return losses.compute_losses(out, batch, _LOSS, mesh=mesh)
  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))


def _train_batch(n=8):
  b = make_batch(n=n, seed=1)
  rng = np.random.default_rng(2)
  return dict(b, view=jnp.asarray(rng.choice([0, 3, 11], n), jnp.int32),
              has_negation=jnp.asarray(rng.random(n) < 0.5, jnp.float32),
              measurements=jnp.asarray(rng.normal(size=(n, MEAS)), jnp.float32),
              meas_mask=jnp.asarray(rng.random((n, MEAS)) < 0.3, jnp.float32),
              text_meas_mask=jnp.asarray(rng.random((n, MEAS)) < 0.2, jnp.float32))


@pytest.fixture(scope="module")
def single_device_step():
  model = make_model(tiny_config(image=dict(depth=1), text=dict(depth=1)), seed=0)
  graphdef, state = nnx.split(model)
  batch = _train_batch()
  return graphdef, state, batch, _step(graphdef, None)(state, batch)


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (4, 1, 2)])
def test_train_step_on_mesh_equals_single_device(shape, single_device_step, num_devices):
  graphdef, state, batch, ((total1, terms1), grads1) = single_device_step
  mesh = mesh_of(*shape)
  state = jax.device_put(state, sharding.get_shardings(state, mesh, RULES))
  batch = sharding.shard_batch(jax.tree.map(np.asarray, batch), mesh)
  (total, terms), grads = _step(graphdef, mesh)(state, batch)
  # The full echovlm objective.
  assert set(terms) == {"contrastive", "view", "negation", "meas", "meas_text"}
  assert float(total) == pytest.approx(float(total1), rel=1e-5)
  for k in terms1:
    assert float(terms[k]) == pytest.approx(float(terms1[k]), rel=1e-5), k
  flat1 = dict(nnx.to_flat_state(grads1))
  nonzero = 0
  for path, g in nnx.to_flat_state(grads):
    a, b = np.asarray(g[...]), np.asarray(flat1[path][...])
    # Sums run in another order across devices: compare relative to the array's scale.
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5 * max(np.abs(b).max(), 1e-3),
                               err_msg=str(path))
    nonzero += bool(np.abs(b).max() > 0)
  assert nonzero > 20   # the gradient reaches both towers, the projections and the head


class _Toy(nnx.Module):
  """Two parameters: 3 heads (tensor=2 cannot split them) and an mlp dim it can."""

  def __init__(self):
    self.qkv = nnx.Param(jnp.zeros((8, 3, 4)), out_sharding=("embed", "heads", "kv"),
                         eager_sharding=False)  # as models/layers.param: placed by sharding.py
    self.fc = nnx.Param(jnp.zeros((8, 16)), out_sharding=("embed", "mlp"), eager_sharding=False)


def test_undivided_axes_warn_at_start_listing_the_parameters(num_devices, caplog):
  mesh = mesh_of(4, 1, 2)
  dropped = []
  assert sharding.logical_to_spec(("embed", "heads"), RULES, mesh, (8, 3), dropped) == P("fsdp")
  assert dropped == ["dim 1 (heads=3) not over tensor=2"]
  with caplog.at_level("WARNING"):
    model = sharding.create_sharded(_Toy, mesh, RULES)
  warned = [r.getMessage() for r in caplog.records if "partly replicated" in r.getMessage()]
  assert len(warned) == 1 and "qkv: dim 1 (heads=3) not over tensor=2" in warned[0], warned
  assert "fc" not in warned[0]
  assert model.qkv[...].sharding.spec == P("fsdp")  # heads replicated over tensor
  assert model.fc[...].sharding.spec == P("fsdp", "tensor")
  # On a mesh every rule divides, nothing is reported.
  caplog.clear()
  with caplog.at_level("WARNING"):
    sharding.create_sharded(_Toy, mesh_of(8, 1, 1), RULES)
  assert not any("partly replicated" in r.getMessage() for r in caplog.records)


def test_strict_sharding_fails_before_allocating(num_devices):
  mesh = mesh_of(4, 1, 2)
  created = []

  def init():
    created.append(1)  # traced once by eval_shape; a second call would be the real init
    return _Toy()

  with pytest.raises(sharding.ShardingError, match=r"qkv: dim 1 \(heads=3\).*sharding_strict"):
    sharding.create_sharded(init, mesh, RULES, strict=True)
  assert len(created) == 1
  assert sharding.undivided(nnx.state(_Toy()), mesh_of(8, 1, 1), RULES) == {}


def test_check_batch_size_names_the_key_and_a_fix(num_devices):
  mesh = mesh_of(4, 2, 1)
  assert sharding.check_batch_size(16, mesh) == 16  # one process: the local batch is global
  with pytest.raises(ValueError, match=r"config.eval_batch_size=12 .*data\*fsdp=8.*multiple of 8"):
    sharding.check_batch_size(12, mesh, "config.eval_batch_size")
  with pytest.raises(ValueError, match="grad_accum_steps=4.*multiple of 32"):
    sharding.check_batch_size(16, mesh, micro_batches=4)
