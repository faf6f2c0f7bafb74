"""Train-step throughput benchmark: compile time, steps/s, examples/s, peak host / device memory
and MFU of the real `echovlm_jax.train` step per model size, optionally side by side with the
PyTorch reference (`benchmarks/torch_reference.py`) in the same invocation.

  .venv/bin/python benchmarks/train_step.py --sizes ti,s --objective clip --torch
  .venv/bin/python benchmarks/train_step.py --sizes b --res 224 --batch 512 --dtype bfloat16  # GPU

Each size runs in its own child process so peak RSS and compile caches are its own; with --torch
the reference's steps alternate with ours in that process, so both see the same machine load.
Batches are random arrays of the documented "Training batch" shapes (no dataset needed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import common  # noqa: E402 - after the repository root is on sys.path

# Dense peak FLOP/s by device kind substring and compute dtype (vendor datasheets, no sparsity;
# float32 matmuls run as TF32 on these GPUs under jax's default precision).
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float32": 494e12},
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
}


# ----------------------------------------------------------------------------
# Workers (each runs in a child process)
# ----------------------------------------------------------------------------
def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _flops_of(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def measure_cpu_matmul_peak(n: int = 2048, repeats: int = 30) -> float:
  """Best float32 [n, n] @ [n, n] FLOP/s this host reaches under XLA (the CPU's practical peak).

  Best of many repeats, because other processes on a shared machine slow most of them; a
  peak measured under load is too low and inflates MFU (pass --peak_flops to pin it).
  """
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def device_peak_flops(device, dtype: str) -> tuple[float | None, str]:
  """(peak FLOP/s, where the number comes from) for `device` at compute `dtype`."""
  if device.platform == "cpu":
    return measure_cpu_matmul_peak(), "measured f32 matmul"
  for kind, table in PEAK_FLOPS.items():
    if kind.lower() in device.device_kind.lower():
      return table[dtype], f"{kind} datasheet"
  return None, f"unknown device kind {device.device_kind!r}"


def _cpu_seconds() -> float:
  t = os.times()
  return t.user + t.system


def run(size: str, objective: str, dtype: str, batch: int, steps: int, warmup: int,
        peak_flops: float | None, text_len: int | None = None, res: int | None = None,
        with_torch: bool = False, overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Compiles and times the real train step (train/state.create_state + train/step.make_train_step).

  With `with_torch`, the PyTorch reference (objective clip, float32) runs in the same process
  and its steps alternate with the JAX steps, so both see the same machine load. Peak host
  memory of JAX is read before the reference is built. Returns one result dict per framework.
  """
  import jax
  from echovlm_jax import distributed, sharding
  from echovlm_jax.train import state as train_state
  from echovlm_jax.train import step as train_step
  from echovlm_jax.train.tasks import contrastive

  config = common.bench_config(size, objective, dtype, batch, text_len, res, overrides)
  mesh = distributed.create_mesh(config.mesh)
  graphdef, state, shardings, tx = train_state.create_state(config, mesh, config.input.vocab_size)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  step = train_step.make_train_step(config, tx, mesh, shardings, sharding.batch_sharding(mesh),
                                    contrastive.TASK.make_loss_fn(config, graphdef, mesh, None))
  host_batch = common.random_batch(config, batch)
  dev_batch = sharding.shard_batch(host_batch, mesh)

  t0 = time.perf_counter()
  compiled = step.lower(state, dev_batch).compile()
  compile_s = time.perf_counter() - t0
  flops = _flops_of(compiled)
  carry = {"state": state}

  def jax_step() -> float:
    carry["state"], metrics = compiled(carry["state"], dev_batch)
    jax.block_until_ready((carry["state"], metrics))
    return float(metrics["loss"])

  fns = {"jax": jax_step}
  for _ in range(warmup):
    jax_step()
  host_peak = _peak_rss_bytes()
  if with_torch:
    from benchmarks import torch_reference
    fns["torch"], torch_params = torch_reference.make_step(
        common.bench_config(size, "clip", "float32", batch, text_len, res, overrides), host_batch)
    for _ in range(warmup):
      fns["torch"]()
  times = {k: [] for k in fns}
  cpu = {k: [] for k in fns}
  loss = {}
  for _ in range(steps):
    for k, f in fns.items():
      c0, t0 = _cpu_seconds(), time.perf_counter()
      loss[k] = f()
      times[k].append(time.perf_counter() - t0)
      cpu[k].append(_cpu_seconds() - c0)

  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  if peak_flops is None:
    peak_flops, peak_src = device_peak_flops(device, dtype)
  else:
    peak_src = "--peak_flops"
  shared = dict(size=size, batch=batch, text_len=config.input.max_text_len,
                res=config.input.res, image_depth=config.model.image.depth,
                text_depth=config.model.text.depth, overrides=list(overrides),
                flops_per_step=flops, load=os.getloadavg()[0])
  out = [dict(framework="jax", dtype=dtype, objective=objective, params=n_params,
              compile_s=compile_s, step_times=times["jax"], cpu_times=cpu["jax"], loss=loss["jax"],
              peak_flops=peak_flops, peak_src=peak_src, host_peak_bytes=host_peak,
              device_peak_bytes=stats.get("peak_bytes_in_use"),
              device=f"{device.platform}:{device.device_kind}", devices=jax.device_count(),
              versions=f"jax {jax.__version__}", **shared)]
  if with_torch:
    import torch
    out.append(dict(framework="torch", dtype="float32", objective="clip", params=torch_params,
                    compile_s=0.0, step_times=times["torch"], cpu_times=cpu["torch"],
                    loss=loss["torch"], peak_flops=None, peak_src="", host_peak_bytes=None,
                    device_peak_bytes=None, device=f"cpu ({torch.get_num_threads()} threads)",
                    devices=1, versions=f"torch {torch.__version__}", **shared))
  return out


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------
def _child(args: argparse.Namespace, size: str) -> list[dict[str, Any]]:
  cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "--sizes", size,
         "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--objective", args.objective, "--dtype", args.dtype]
  cmd += ["--torch"] if args.torch else []
  cmd += ["--peak_flops", str(args.peak_flops)] if args.peak_flops else []
  cmd += ["--text_len", str(args.text_len)] if args.text_len else []
  cmd += ["--res", str(args.res)] if args.res else []
  for item in args.set:
    cmd += ["--set", item]
  out = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True)
  if out.returncode:
    sys.stderr.write(out.stderr[-4000:])
    raise SystemExit(f"benchmark child failed: {' '.join(cmd)}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def format_row(r: dict[str, Any], ratio: str = "") -> str:
  t, c = r["step_times"], r["cpu_times"]
  med = statistics.median(t)
  mfu = "n/a"
  if r["framework"] == "jax" and r["flops_per_step"] and r["peak_flops"]:
    mfu = f"{100 * r['flops_per_step'] / min(t) / r['peak_flops']:.1f}%"
  gib = lambda b: f"{b / 2**30:.2f}" if b else "n/a"
  flops = f"{r['flops_per_step'] / 1e9:.1f}" if r["flops_per_step"] else "n/a"
  return (f"| {r['framework']} | {r['size']} | {r['params'] / 1e6:.2f}M | {r['batch']} | "
          f"{r['text_len']} | {r['dtype']} | {r['objective']} | {r['compile_s']:.1f} | "
          f"{min(t):.3f} | {med:.3f} | {min(c):.2f} | {1 / min(t):.2f} | {r['batch'] / min(t):.1f} | "
          f"{flops} | {mfu} | {gib(r['host_peak_bytes'])} | {gib(r['device_peak_bytes'])} | "
          f"{ratio} |")


HEADER = ("| framework | size | params | batch | text len | dtype | objective | compile s | "
          "s/step min | s/step median | CPU s/step min | steps/s | examples/s | GFLOPs/step | MFU | "
          "host peak GiB | device peak GiB | torch/jax (min; median; CPU) |\n" + "|---" * 18 + "|")


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--sizes", default=None, help="comma list of ti,s,b,l (default: ti,s on CPU, "
                 "b on an accelerator)")
  p.add_argument("--batch", type=int, default=64, help="global batch")
  p.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--objective", default="clip", help="configs/echovlm.py OBJECTIVES key; 'clip' "
                 "is what the PyTorch reference runs")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--text_len", type=int, default=None, help="override config.input.max_text_len")
  p.add_argument("--res", type=int, default=None, help="override config.input.res (e.g. 224)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override any config value, e.g. --set model.text.depth=4 (repeatable)")
  p.add_argument("--torch", action="store_true", help="also run the PyTorch reference, its steps "
                 "alternating with ours in one process, and print torch s/step over jax s/step "
                 "(> 1 means JAX is faster)")
  p.add_argument("--peak_flops", type=float, default=None, help="device peak FLOP/s for MFU "
                 "(default: datasheet table for GPUs/TPUs, a measured matmul on CPU)")
  p.add_argument("--json", default=None, help="also write all results to this JSON file")
  p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.torch and (args.objective != "clip" or args.dtype != "float32"):
    print("note: the PyTorch reference runs objective=clip in float32; the ratio compares "
          f"it with objective={args.objective}, dtype={args.dtype}.", file=sys.stderr)

  if args._worker:
    r = run(args.sizes, args.objective, args.dtype, args.batch, args.steps, args.warmup,
            args.peak_flops, args.text_len, args.res, with_torch=args.torch, overrides=args.set)
    print(json.dumps(r))
    return

  if args.sizes is None:
    import jax
    args.sizes = "ti,s" if jax.default_backend() == "cpu" else "b"
  print(HEADER, flush=True)
  results = []
  for size in args.sizes.split(","):
    rs = _child(args, size)
    ratio = ""
    if len(rs) == 2:
      j, t = rs
      ratio = (f"{min(t['step_times']) / min(j['step_times']):.2f}; "
               f"{statistics.median(t['step_times']) / statistics.median(j['step_times']):.2f}; "
               f"{min(t['cpu_times']) / min(j['cpu_times']):.2f}")
      print(format_row(t), flush=True)
    print(format_row(rs[0], ratio), flush=True)
    results += rs
  r = results[0]
  print(f"\n{r['device']} x{r['devices']}, {r['versions']}"
        f"{', ' + results[1]['versions'] if len(results) > 1 and results[1]['framework'] == 'torch' else ''}; "
        f"res {r['res']}, image depth {r['image_depth']}, text depth {r['text_depth']}"
        f"{' (first size)' if len(args.sizes.split(',')) > 1 else ''}; 1-min load average at the end {r['load']:.1f}. MFU = XLA cost-analysis "
        f"FLOPs / min step time / peak ({r['peak_src']}: {r['peak_flops'] or 0:.3g} FLOP/s).")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
