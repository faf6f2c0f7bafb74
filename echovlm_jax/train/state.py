"""The train state: config.task's model created already sharded, its initialisation, and the
optimizer state with the parameters' shardings. A plain pytree, so Orbax saves it and jit
shards it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from echovlm_jax import sharding
from echovlm_jax.train import optimizer
from echovlm_jax.train import tasks
from echovlm_jax.train.run_config import ConfigError


def create_state(config, mesh: jax.sharding.Mesh, vocab_size: int, init_checkpoint=None):
  """Returns (graphdef, state, state_shardings, tx).

  state = {"params": nnx.State, "opt_state": optax state, "step": int32 []},
  created already sharded (jit with out_shardings), never materialised on one device.
  The model and its initialisation are config.task's (tasks/). init_checkpoint:
  config.model_init already read (run_config.configure_from_checkpoint), else it is read here.
  Raises ConfigError for parameters the mesh cannot shard (config.sharding_strict) or
  pretrained weights that do not fit.
  """
  task = tasks.from_config(config)
  try:  # warns (or fails with config.sharding_strict) on partly replicated parameters
    model = sharding.create_sharded(task.model(config, vocab_size), mesh, config.sharding_rules,
                                    config.sharding_strict)
  except sharding.ShardingError as e:
    raise ConfigError(str(e)) from None
  graphdef, params = nnx.split(model, nnx.Param)
  # Pretrained weights, if the config names them; on resume the checkpoint overwrites them.
  try:
    params = task.init_params(params, config, init_checkpoint)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  tx = optimizer.make_optimizer(config)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Optimizer state mirrors the params' shardings (moments); scalars are replicated.
  opt_shapes = jax.eval_shape(tx.init, params)
  # A per-tower optimizer (config.lr_mult) holds MaskedNode where another tower's state is.
  masked = lambda x: isinstance(x, optax.MaskedNode)
  opt_shardings = optax.tree_map_params(
      tx, lambda p, s: p if masked(p) else s, opt_shapes, param_shardings,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: x is None or masked(x))
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  state = {"params": params, "opt_state": opt_state,
           "step": jax.device_put(jnp.zeros((), jnp.int32), replicated)}
  shardings = {"params": param_shardings, "opt_state": opt_shardings, "step": replicated}
  return graphdef, state, shardings, tx
