"""The trainer's pieces in-process: the lr schedule, the weight-decay mask, one train step
giving the same parameters on a (2,2,2) mesh as on one device, gradient accumulation as the
mean of micro-batch gradients, a NaN gradient leaving the state as it was, the non-finite
message, and config errors at start."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from echovlm_jax import distributed, losses, main, sharding
from echovlm_jax.echo import schema
from echovlm_jax.train import optimizer, run_config, state as train_state, step as train_step
from echovlm_jax.train.tasks import contrastive
from tests import multiprocess_utils
from tests import train_tiny_config

VOCAB = 64


def _config(**overrides):
  c = train_tiny_config.get_config()
  c.warmup_steps = 0  # the first step already moves the weights (lr = peak)
  for k, v in overrides.items():
    c[k] = v
  return c


def _batch(batch_size: int, config, seed: int = 0) -> dict[str, np.ndarray]:
  """A training batch of the documented shapes (docs/design.md, "Batches"), host numpy."""
  rng = np.random.default_rng(seed)
  t, res, length = config.input.num_frames, config.input.res, config.input.max_text_len
  m, k = len(schema.MEASUREMENTS), len(schema.LABELS)
  text = rng.integers(2, VOCAB, size=(batch_size, length)).astype(np.int32)
  text[:, length // 2:] = 0
  text[:, length // 2 - 1] = 1  # EOS
  neg = np.where(rng.random((batch_size, 1)) < 0.5, np.roll(text, 1, axis=1), 0).astype(np.int32)
  return dict(
      frames=rng.uniform(-1, 1, size=(batch_size, t, res, res, 1)).astype(np.float32),
      text=text, neg_text=neg, has_negation=(neg[:, 0] > 0).astype(np.float32),
      view=rng.integers(0, len(schema.VIEWS), size=batch_size).astype(np.int32),
      measurements=rng.normal(size=(batch_size, m)).astype(np.float32),
      meas_mask=(rng.random((batch_size, m)) < 0.5).astype(np.float32),
      text_meas_mask=(rng.random((batch_size, m)) < 0.3).astype(np.float32),
      labels=rng.integers(-1, 2, size=(batch_size, k)).astype(np.int32),
      study_id=rng.integers(0, 4, size=batch_size).astype(np.int32),
      valid=np.ones(batch_size, np.float32))


def _make_step(c, graphdef, tx, mesh, shardings, **kwargs):
  """The contrastive task's jitted step, as the loop builds it."""
  loss_fn = contrastive.TASK.make_loss_fn(c, graphdef, mesh, None)
  return train_step.make_train_step(c, tx, mesh, shardings, sharding.batch_sharding(mesh),
                                    loss_fn, **kwargs)


def _host(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_schedule_warms_up_then_decays_to_zero():
  c = train_tiny_config.get_config()
  c.total_steps, c.warmup_steps, c.lr = 100, 10, 0.5
  sched = optimizer.make_schedule(c)
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(0.25)
  assert float(sched(10)) == pytest.approx(0.5)
  assert float(sched(55)) == pytest.approx(0.25, abs=1e-3)  # cosine midpoint
  assert float(sched(100)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.slow
def test_one_step_on_a_2x2x2_mesh_gives_the_single_device_params(num_devices):
  """Issue 4: make_train_step on a (2,2,2) mesh == on one device.

  (2,2,2) shards the batch, the parameters and the optimizer state over all three axes at
  once; the loss and gradients on (8,1,1) and (4,1,2) are compared with one device in
  tests/test_sharding.py (the optimizer's update is elementwise, so it adds no new layout).
  """
  c = _config()
  host_batch = _batch(8, c)
  results = {}
  for shape in ((1, 1, 1), (2, 2, 2)):
    devices = jax.devices()[:int(np.prod(shape))]
    mesh = distributed.create_mesh(dict(zip(distributed.MESH_AXES, shape)), devices=devices)
    graphdef, state, shardings, tx = train_state.create_state(c, mesh, VOCAB)
    init = _host(state["params"])
    step = _make_step(c, graphdef, tx, mesh, shardings)
    state, metrics = step(state, sharding.shard_batch(host_batch, mesh))
    results[shape] = (_host(state["params"]), jax.device_get(metrics), int(state["step"]))
  ref_params, ref_metrics, ref_step = results[(1, 1, 1)]
  assert ref_step == 1 and math.isfinite(ref_metrics["loss"])
  assert max(np.abs(a - b).max() for a, b in zip(ref_params, init)) > 1e-4  # the step moved them
  for shape, (params, metrics, _) in results.items():
    for key in ("loss", "grad_norm"):
      assert metrics[key] == pytest.approx(ref_metrics[key], rel=2e-5), (shape, key)
    # Adam's first update is ~lr * sign(g): where g is ~0, round-off in g moves the update by
    # a fraction of lr (1e-3), hence atol 2 % of lr; everywhere else it is rtol-equal.
    for a, b in zip(params, ref_params):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5, err_msg=str(shape))


@pytest.mark.slow
def test_grad_accumulation_is_the_mean_of_micro_batch_grads(num_devices):
  c = _config(grad_accum_steps=2, batch_size=16)
  mesh = distributed.create_mesh(c.mesh)
  graphdef, state, shardings, tx = train_state.create_state(c, mesh, VOCAB)
  host_batch = _batch(16, c, seed=1)
  params0 = jax.tree.map(jnp.copy, state["params"])
  opt0 = jax.tree.map(jnp.copy, state["opt_state"])

  @jax.jit
  def expected(params, opt_state, micro0, micro1):
    def loss(p, b):
      return losses.compute_losses(nnx.merge(graphdef, p)(b), b, c.loss, mesh=mesh)[0]
    g0, g1 = jax.grad(loss)(params, micro0), jax.grad(loss)(params, micro1)
    grads = jax.tree.map(lambda a, b: (a + b) / 2, g0, g1)
    updates, _ = tx.update(grads, opt_state, params)
    return (loss(params, micro0) + loss(params, micro1)) / 2, optax.apply_updates(params, updates)

  # Micro-batch j holds rows j, j+2, j+4, ... (make_train_step's strided split).
  micro = [sharding.shard_batch({k: v[j::2] for k, v in host_batch.items()}, mesh) for j in (0, 1)]
  want_loss, want_params = expected(params0, opt0, *micro)
  step = _make_step(c, graphdef, tx, mesh, shardings)
  state, metrics = step(state, sharding.shard_batch(host_batch, mesh))
  assert float(metrics["loss"]) == pytest.approx(float(want_loss), rel=1e-5)
  for a, b in zip(_host(state["params"]), _host(want_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


@pytest.mark.slow
def test_nan_gradient_with_a_finite_loss_keeps_the_state(num_devices):
  """A NaN in one gradient leaf (the loss finite) must not reach the params or the moments:
  clipping by a NaN global norm would otherwise spread it to every parameter."""
  c = _config()
  mesh = distributed.create_mesh(c.mesh)
  graphdef, state, shardings, tx = train_state.create_state(c, mesh, VOCAB)
  before = _host((state["params"], state["opt_state"]))
  step = _make_step(c, graphdef, tx, mesh, shardings, poison_grads=True)
  state, metrics = step(state, sharding.shard_batch(_batch(8, c), mesh))
  metrics = jax.device_get(metrics)
  assert math.isfinite(metrics["loss"]) and not math.isfinite(metrics["grad_norm"])
  assert int(state["step"]) == 1  # only the counter moves on
  for a, b in zip(_host((state["params"], state["opt_state"])), before):
    np.testing.assert_array_equal(a, b)
  # The host check the loop runs on these metrics stops the run, naming the gradient.
  with pytest.raises(train_step.NonFiniteLossError, match="grad_norm"):
    train_step.check_step_metrics(1, metrics)


def test_non_finite_message_names_the_step_and_the_terms():
  train_step.check_finite(3, {"loss": 1.0, "loss/contrastive": 0.5, "grad_norm": 2.0})
  with pytest.raises(train_step.NonFiniteLossError) as e:
    train_step.check_finite(7, {"loss": float("nan"), "loss/contrastive": float("inf"), "loss/meas": 0.3})
  msg = str(e.value)
  assert "step 7" in msg and "loss/contrastive" in msg and "loss/meas" not in msg
  with pytest.raises(train_step.NonFiniteLossError, match="step 4 in grad_norm"):
    train_step.check_finite(4, {"loss": 1.0, "grad_norm": float("nan")})


def test_config_errors_name_the_key(num_devices):
  c = _config(batch_size=12)  # not a multiple of the 8-way batch sharding
  mesh = distributed.create_mesh(c.mesh)
  with pytest.raises(run_config.ConfigError, match="config.batch_size=12 .* multiple of 8"):
    run_config.validate_config(c, mesh)
  with pytest.raises(run_config.ConfigError, match="config.eval_batch_size=12"):
    run_config.validate_config(_config(eval_batch_size=12), mesh)
  run_config.validate_config(_config(eval_batch_size=16), mesh)
  with pytest.raises(run_config.ConfigError, match="grad_accum_steps=2"):
    run_config.validate_config(_config(grad_accum_steps=2), mesh)  # 8 / 2 rows on 8 devices
  with pytest.raises(run_config.ConfigError, match="debug_nan_target='loss'"):
    run_config.validate_config(_config(debug_nan_target="loss"), mesh)
  for key, bad in (("kind", "siglip"), ("view_mode", "supcon")):  # at start, not at first trace
    c = _config()
    c.loss[key] = bad
    with pytest.raises(run_config.ConfigError, match=f"config.loss.{key}='{bad}'"):
      run_config.validate_config(c, mesh)
  c = _config()
  with c.unlocked():
    c.task = "detection"
  with pytest.raises(run_config.ConfigError, match="config.task='detection': expected one of"):
    run_config.validate_config(c, mesh)
  c.task = "segmentation"   # a task whose own config keys this config lacks
  with pytest.raises(run_config.ConfigError, match="reads config.dense.*configs/segmentation.py"):
    run_config.validate_config(c, mesh)
  with pytest.raises(run_config.ConfigError,
                     match="model_init_format='bigvision': expected one of 'auto', 'big_vision'"):
    run_config.validate_config(_config(model_init_format="bigvision"), mesh)
  c = _config()
  c.input.res = c.input.image_size + 8  # a lone res override past the stored frames
  with pytest.raises(run_config.ConfigError, match="config.input.image_size=32 < config.input.res"):
    run_config.validate_config(c, mesh)
  c = _config()
  c.mesh.data = 3
  with pytest.raises(run_config.ConfigError, match="needs 3 devices"):
    run_config.create_mesh(c)
  c = _config()
  assert "did you mean config.model.embed_dim" in main.unknown_config_key(
      c, ["x", "--config.model.embed_dmi=3"])
  assert main.unknown_config_key(c, ["x", "--config.model.image.width=3", "--workdir=w"]) is None


@pytest.mark.parametrize("override, expected", [
    ("--config.typo=1", "config has no field 'typo'"),
    ("--config.model.widht=3", "config.model has no field 'widht'"),
])
def test_unknown_config_key_fails_at_start(tmp_path, override, expected):
  env = multiprocess_utils.worker_env(0, 1, 1, 0)
  proc = subprocess.run(
      [sys.executable, "-m", "echovlm_jax.main", "--config",
       os.path.join(multiprocess_utils.REPO, "tests", "train_tiny_config.py"), override,
       f"--workdir={tmp_path}"], cwd=multiprocess_utils.REPO, env=env, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: Unknown config key") and expected in lines[-1], proc.stderr
  assert "Traceback" not in proc.stderr
  assert not os.listdir(tmp_path)  # nothing was started


def test_sharding_strict_stops_a_partly_replicated_run(num_devices, caplog):
  """3 heads on tensor=2: a warning naming the attention kernels, or with
  config.sharding_strict a ConfigError before any parameter is allocated."""
  c = _config()
  c.model.image.update(width=48, heads=3)
  mesh = distributed.create_mesh(dict(data=4, fsdp=1, tensor=2))
  c.sharding_strict = True
  with pytest.raises(run_config.ConfigError, match=r"image/.*query: dim 1 \(heads=3\) not over "
                                                   r"tensor=2"):
    train_state.create_state(c, mesh, VOCAB)
  c.sharding_strict = False
  with caplog.at_level("WARNING"):
    train_state.create_state(c, mesh, VOCAB)
  assert any("partly replicated" in r.getMessage() and "query" in r.getMessage()
             for r in caplog.records)
