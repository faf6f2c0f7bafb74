"""One process of the multi-host preemption test: a train-loop skeleton that
polls `Checkpointer.should_stop` every step, saves and exits when it says so.

  python tests/preemption_worker.py WORKDIR   (env from multiprocess_utils)
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from echovlm_jax import distributed
from echovlm_jax.train import checkpointing


def main() -> None:
  distributed.maybe_initialize()
  installed = checkpointing.install_sigterm_handler()
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  x = jax.device_put(jnp.zeros((8,)), NamedSharding(mesh, P("data")))
  step_fn = jax.jit(lambda x: x + 1)
  ckpt = checkpointing.Checkpointer(sys.argv[1], every=1000)
  for step in range(1, 3000):
    x = step_fn(x)
    stop = ckpt.should_stop(step)
    ckpt.save(step, {"x": x}, {"step": step}, force=stop)
    if stop:
      break
    print("STEP", step, flush=True)
    time.sleep(0.02)
  ckpt.close()
  print(json.dumps(dict(stopped=step, steps=ckpt.all_steps(), own_handler=installed)), flush=True)


if __name__ == "__main__":
  main()
