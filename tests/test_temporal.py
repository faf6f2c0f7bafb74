"""The factorised space-time tower (config.model.image.temporal="factorised", models/
temporal.py): identity at initialisation, so the clip embedding is the image model's mean
frame embedding exactly; order-aware and trainable once its weights move; sharded by a
logical `time` axis; refused with a clear error for clips longer than its position table."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from echovlm_jax.models import layers
from tests.test_model import make_batch, make_model, tiny_config

T = 3


def _pair(scan: bool = False):
  """(mean-over-frames model, factorised model) with the same spatial weights."""
  with_time = make_model(tiny_config(image=dict(temporal="factorised", frames=T), scan_layers=scan))
  plain = make_model(tiny_config(scan_layers=scan))
  state = nnx.state(with_time)
  flat = dict(nnx.to_flat_state(nnx.state(plain)))
  new = {p: v.replace(flat[p][...]) for p, v in nnx.to_flat_state(state) if p in flat}
  assert len(new) == len(flat)                     # every plain parameter has a twin
  nnx.update(with_time, nnx.from_flat_state(new))
  return plain, with_time


@pytest.mark.parametrize("scan", [False, True])
def test_a_new_temporal_encoder_is_the_identity(scan):
  plain, with_time = _pair(scan)
  frames = make_batch(n=2, t=T)["frames"]
  enc = nnx.jit(lambda m, x: m.image(x))
  np.testing.assert_allclose(enc(with_time, frames), enc(plain, frames), atol=1e-6)
  one = frames[:, :1]                                        # T = 1 too
  np.testing.assert_allclose(enc(with_time, one), enc(plain, one), atol=1e-6)


def test_it_learns_and_then_sees_frame_order():
  _, model = _pair()
  frames = make_batch(n=2, t=T)["frames"]

  def loss(m, x):
    return jnp.sum(m.image(x) * jnp.arange(32.0))

  grads = nnx.jit(nnx.grad(loss))(model, frames)
  g = grads["image"]["temporal"]["time_encoder"]["blocks"][0]
  # The zero-initialised residual outputs get gradients: training moves off the identity.
  assert np.abs(np.asarray(g["attn"]["out"][...])).max() > 0
  assert np.abs(np.asarray(g["mlp"]["fc2"]["kernel"][...])).max() > 0
  # With weights away from the identity the time positions make order matter (a mean cannot).
  state = nnx.state(model, nnx.Param)
  rng = np.random.default_rng(0)
  moved = jax.tree.map(lambda v: v + 0.3 * rng.standard_normal(v.shape).astype(v.dtype)
                       if v.ndim else v, state)
  t = moved["image"]["temporal"]
  nnx.update(model.image.temporal, t)
  enc = nnx.jit(lambda m, x: m.image(x))
  assert np.abs(np.asarray(enc(model, frames) - enc(model, frames[:, ::-1]))).max() > 1e-3


def test_time_has_a_logical_axis_and_long_clips_are_refused():
  model = make_model(tiny_config(image=dict(temporal="factorised", frames=T), scan_layers=True))
  names = {tuple(v.get_metadata()["out_sharding"]) for p, v in
           nnx.to_flat_state(nnx.state(model.image.temporal, nnx.Param)) if p[-1] == "posemb"}
  assert names == {("time", "embed")}
  allowed = {None, "embed", "mlp", "heads", "kv", "time", layers.LAYERS_AXIS}
  for _, v in nnx.to_flat_state(nnx.state(model.image.temporal, nnx.Param)):
    assert set(v.get_metadata()["out_sharding"]) <= allowed
  with pytest.raises(ValueError, match="config.input.num_frames"):
    model.image(make_batch(n=1, t=T + 1)["frames"])
  with pytest.raises(ValueError, match="config.model.image.temporal"):
    make_model(tiny_config(image=dict(temporal="conv3d")))


def test_the_trainer_trains_the_factorised_tower_on_clips(tiny_echoground, tmp_path, num_devices):
  """configs/echovlm.py with temporal="factorised" on 2-frame clips (the tiny dataset's T)
  trains end to end; the temporal blocks leave the identity."""
  from echovlm_jax import distributed  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import checkpointing, loop, workdir_config  # pylint: disable=g-import-not-at-top
  from tests import train_tiny_config  # pylint: disable=g-import-not-at-top
  c = train_tiny_config.get_config()
  c.input.data_dir = tiny_echoground[0].data_dir
  c.model.image.temporal = "factorised"
  c.total_steps, c.ckpt_every = 4, 4
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(c, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 4 and np.isfinite(losses).all()
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  model, step = checkpointing.restore_params(workdir_config.load(workdir), workdir, mesh)
  assert step == 4 and model.image.temporal is not None
  out = np.asarray(model.image.temporal.time_encoder.blocks[0].attn.out[...])
  assert np.abs(out).max() > 0
