"""The dense tasks' train step beside the contrastive one (issue 22): compile time, step time,
examples/s, XLA's temporary memory of the compiled step and the process's peak RSS, per task,
each in its own child process. Batches are random arrays of each task's batch shapes.

  .venv/bin/python benchmarks/dense_step.py --batch 16 --steps 10

The contrastive step reads T = 1 frames (the demo); the dense steps read an ED + ES pair
(T = 2), as configs/segmentation.py.
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

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import common  # noqa: E402 - after the repository root is on sys.path

TASKS = ("contrastive", "segmentation", "landmarks")


def _config(task: str, batch: int):
  from configs import echovlm, landmarks, segmentation  # pylint: disable=g-import-not-at-top
  if task == "contrastive":
    c = echovlm.get_config()
  else:
    c = (segmentation if task == "segmentation" else landmarks).get_config()
  c.batch_size = batch
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  return c


def _dense_batch(config, batch: int) -> dict[str, np.ndarray]:
  from echovlm_jax.echo import schema  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  t, r = config.input.num_frames, config.input.res
  pts = rng.uniform(0, r - 1, (batch, t, len(schema.LANDMARKS), 2)).astype(np.float32)
  return {"frames": rng.uniform(-1, 1, (batch, t, r, r, 1)).astype(np.float32),
          "masks": rng.integers(0, len(schema.STRUCTURES), (batch, t, r, r)).astype(np.int32),
          "landmarks": pts, "phases": np.zeros((batch, t), np.float32),
          "pixel_spacing_mm": np.ones(batch, np.float32), "dense_truth": np.ones(batch, np.float32),
          "view": np.zeros(batch, np.int32), "study_id": np.arange(batch, dtype=np.int32),
          "lvef": np.full(batch, 60.0, np.float32),
          "labelled": np.ones((batch, len(schema.STRUCTURES)), np.float32),
          "valid": np.ones(batch, np.float32)}


def run(task: str, batch: int, steps: int, warmup: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from echovlm_jax import distributed, sharding  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import state as train_state, step as train_step, tasks  # pylint: disable=g-import-not-at-top
  config = _config(task, batch)
  mesh = distributed.create_mesh(config.mesh)
  t = tasks.from_config(config)
  graphdef, state, shardings, tx = train_state.create_state(config, mesh, config.input.vocab_size)
  loss_fn = t.make_loss_fn(config, graphdef, mesh, None)
  step = train_step.make_train_step(config, tx, mesh, shardings, sharding.batch_sharding(mesh), loss_fn)
  host = common.random_batch(config, batch) if task == "contrastive" else _dense_batch(config, batch)
  dev = sharding.shard_batch(host, mesh)
  t0 = time.perf_counter()
  compiled = step.lower(state, dev).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  carry = {"state": state}

  def one() -> float:
    t0 = time.perf_counter()
    carry["state"], metrics = compiled(carry["state"], dev)
    jax.block_until_ready((carry["state"], metrics))
    return time.perf_counter() - t0
  for _ in range(warmup):
    one()
  times = [one() for _ in range(steps)]
  frames = batch * config.input.num_frames
  return dict(task=task, batch=batch, frames=frames, res=config.input.res, compile_s=compile_s,
              step_s=statistics.median(times), examples_per_s=batch / statistics.median(times),
              temp_mb=(getattr(mem, "temp_size_in_bytes", 0) or 0) / 2 ** 20,
              peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              load=os.getloadavg()[0])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--tasks", default=",".join(TASKS))
  p.add_argument("--json", default=None)
  p.add_argument("--_worker", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args._worker:  # pylint: disable=protected-access
    print(json.dumps(run(args._worker, args.batch, args.steps, args.warmup)))  # pylint: disable=protected-access
    return
  rows = []
  for task in args.tasks.split(","):
    out = subprocess.run([sys.executable, __file__, "--_worker", task, "--batch", str(args.batch),
                          "--steps", str(args.steps), "--warmup", str(args.warmup)],
                         check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
  print("| task | batch x frames | res | compile s | step s | examples/s | XLA temp MB | peak RSS MB | load |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['task']} | {r['batch']} x {r['frames'] // r['batch']} | {r['res']} | "
          f"{r['compile_s']:.1f} | {r['step_s']:.3f} | {r['examples_per_s']:.1f} | "
          f"{r['temp_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['load']:.1f} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
