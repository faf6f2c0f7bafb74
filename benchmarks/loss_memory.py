"""Per-device memory of the contrastive losses (forward + backward) against the global batch, on
fake CPU devices, from XLA's compiled memory analysis (nothing is executed, so it is fast).

  .venv/bin/python benchmarks/loss_memory.py                      # both tables, 8 fake devices
  .venv/bin/python benchmarks/loss_memory.py --batches 512,1024,2048,4096,8192 --dim 512

Table 1: 8 devices, global batch B grows. Table 2: weak scaling, a fixed local batch on 1, 2, 4,
8 devices. "dense" runs unsharded on one device (the [B, B] logits of a naive implementation);
"local x global" is our clip / sigmoid loss under shard_map ([B/n, B] logits per device);
"ring" is the ppermute sigmoid loss ([B/n, B/n] blocks per device).
"""

from __future__ import annotations

import argparse
import os
import sys

_DEVICES = 8
# Fake CPU devices must be requested before jax is imported.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={_DEVICES}").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from echovlm_jax import distributed, losses  # noqa: E402

VARIANTS = ("clip dense", "clip local x global", "sigmoid dense", "sigmoid local x global",
            "sigmoid ring")


def loss_fn(variant: str, mesh):
  """(img [B, d], txt [B, d], t (), b ()) -> scalar loss for `variant`; mesh None = unsharded."""
  kind, mode = variant.split(" ", 1)

  def f(img, txt, t, b):
    m = None if mode == "dense" else mesh
    if kind == "clip":
      return losses.clip_loss(img, txt, t, mesh=m)
    return losses.sigmoid_loss(img, txt, t, b, mesh=m, ring=mode == "ring")
  return f


def temp_bytes(variant: str, batch: int, dim: int, num_devices: int) -> int:
  """XLA temp bytes per device of value_and_grad of the loss (w.r.t. both embeddings and t, b)."""
  devices = jax.devices()[:num_devices]
  dense = variant.endswith("dense")
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1},
                                 devices=devices[:1] if dense else devices)
  rows = NamedSharding(mesh, P() if dense else P(("data", "fsdp")))
  scalar = NamedSharding(mesh, P())
  args = (jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=rows),
          jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=rows),
          jax.ShapeDtypeStruct((), jnp.float32, sharding=scalar),
          jax.ShapeDtypeStruct((), jnp.float32, sharding=scalar))
  grad = jax.value_and_grad(loss_fn(variant, mesh), argnums=(0, 1, 2, 3))
  compiled = jax.jit(grad).lower(*args).compile()
  return int(compiled.memory_analysis().temp_size_in_bytes)


def _mib(b: int) -> str:
  return f"{b / 2**20:.1f}"


def table(rows: list[tuple[str, dict[str, int]]], first_col: str) -> str:
  """Markdown: one row per batch, MiB per variant plus the growth factor vs the previous row."""
  head = f"| {first_col} | " + " | ".join(f"{v} MiB (x)" for v in VARIANTS) + " |"
  lines = [head, "|---" * (len(VARIANTS) + 1) + "|"]
  prev = None
  for label, mem in rows:
    cells = []
    for v in VARIANTS:
      growth = f" ({mem[v] / prev[v]:.1f}x)" if prev and prev[v] else ""
      cells.append(_mib(mem[v]) + growth)
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
    prev = mem
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batches", default="512,1024,2048,4096,8192", help="global batches, table 1")
  p.add_argument("--local_batch", type=int, default=1024, help="per-device batch, table 2")
  p.add_argument("--dim", type=int, default=512, help="embedding size d")
  args = p.parse_args(argv)
  if jax.device_count() < _DEVICES:
    raise SystemExit(f"loss_memory needs {_DEVICES} devices; XLA_FLAGS={os.environ.get('XLA_FLAGS')}")

  print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} devices, d={args.dim}, "
        "float32; XLA temp bytes per device of value_and_grad(loss)\n")
  rows = [(f"{b}", {v: temp_bytes(v, b, args.dim, _DEVICES) for v in VARIANTS})
          for b in map(int, args.batches.split(","))]
  print(f"Table 1: {_DEVICES} devices, global batch B grows (x = growth over the previous row; "
        "B doubles, so 4x is quadratic, 2x linear)\n")
  print(table(rows, "global B"), flush=True)

  rows = []
  n = 1
  while n <= _DEVICES:
    b = args.local_batch * n
    rows.append((f"{n} x {args.local_batch} = {b}",
                 {v: temp_bytes(v, b, args.dim, n) for v in VARIANTS}))
    n *= 2
  print(f"\nTable 2: weak scaling, {args.local_batch} examples per device on 1..{_DEVICES} devices "
        "(dense: the whole global batch on one device)\n")
  print(table(rows, "devices x local = global B"), flush=True)


if __name__ == "__main__":
  main()
