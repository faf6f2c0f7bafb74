"""One process of the multi-process test: joins the run (maybe_initialize),
builds the global data mesh, feeds it process-local rows and trains a tiny
linear model with SGD on the global-batch mean loss; prints a JSON line and,
given a workdir, checkpoints the final parameters (a collective save).

  python tests/multiprocess_worker.py [num_steps] [workdir]   (env from multiprocess_utils)
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from echovlm_jax import distributed
from echovlm_jax.train import checkpointing

GLOBAL_BATCH, FEATURES, LR = 32, 8, 0.1


def global_data() -> tuple[np.ndarray, np.ndarray]:
  """The whole dataset, identical on every host: x [B, F], y [B]."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(GLOBAL_BATCH, FEATURES)).astype(np.float32)
  y = (x @ np.arange(1, FEATURES + 1, dtype=np.float32) + 0.5).astype(np.float32)
  return x, y


def train_linear(num_steps: int) -> tuple[list[float], dict[str, jax.Array]]:
  """SGD on mean((x w + b - y)^2) over the global batch: (loss per step, params)."""
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  replicated = NamedSharding(mesh, P())
  x, y = global_data()
  # Each host holds only its own contiguous slice of the global batch, as the
  # input pipeline does; jax stitches the slices into one global array.
  n, i = jax.process_count(), jax.process_index()
  rows = slice(i * GLOBAL_BATCH // n, (i + 1) * GLOBAL_BATCH // n)
  gx = jax.make_array_from_process_local_data(batch_sharding, x[rows], x.shape)
  gy = jax.make_array_from_process_local_data(batch_sharding, y[rows], y.shape)
  params = jax.device_put({"w": jnp.zeros((FEATURES,)), "b": jnp.zeros(())}, replicated)

  def loss_fn(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

  @jax.jit
  def step(p, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    return jax.tree.map(lambda a, g: a - LR * g, p, grads), loss

  losses = []
  for _ in range(num_steps):
    params, loss = step(params, gx, gy)
    losses.append(float(loss))  # replicated scalar: readable on every host
  return losses, params


def main() -> None:
  multi = distributed.maybe_initialize()
  info = distributed.host_info()
  num_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
  losses, params = train_linear(num_steps)
  if len(sys.argv) > 2:
    with checkpointing.Checkpointer(sys.argv[2]) as ckpt:
      ckpt.save(num_steps, params, {"losses": losses}, force=True)
  print(json.dumps(dict(multi=multi, losses=losses, **info)), flush=True)


if __name__ == "__main__":
  main()
