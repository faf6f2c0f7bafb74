"""Dataset build and input-pipeline throughput against what the train step consumes.

  .venv/bin/python benchmarks/input_speed.py --data_dir /tmp/bench_tfds            # default dataset
  .venv/bin/python benchmarks/input_speed.py --data_dir /tmp/bench_tfds --batches 200
  .venv/bin/python benchmarks/input_speed.py --data_dir /tmp/bench_t16 --arg frames=16 \
      --set input.window=8 --set input.synthetic_patients=300          # 16-frame clips

Builds the default synthetic `echoground` dataset into --data_dir (timed; skipped when it is
already there), then times the training iterator (decode, augment, tokenise, batch, global
jax.Array assembly) on one CPU device. Compare with `train/examples_per_s` of a run.
"""

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from configs import echovlm
from echovlm_jax import distributed
from echovlm_jax.data import build
from echovlm_jax.data import input_pipeline
from echovlm_jax.data import mixture_iterator


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--batches", type=int, default=100)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--arg", default="", help="configs/echovlm.py arg string, e.g. frames=16")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  args = parser.parse_args()
  input_pipeline.keep_tf_off_accelerators()

  config = echovlm.get_config(args.arg or None)
  with config.unlocked():
    config.input.data_dir = args.data_dir
    common.apply_overrides(config, args.set)
  t0 = time.perf_counter()
  builder = build.ensure_dataset(config.input)
  build_s = time.perf_counter() - t0
  n = sum(builder.info.splits[s].num_examples for s in builder.info.splits)
  print(f"build (or reuse): {build_s:.1f} s for {n} examples = {n / build_s:.0f} examples/s")

  mesh = distributed.create_mesh(config.mesh)
  # One build or a mixture of several (--arg data=site_b:0.5+synthetic:0.5).
  it = mixture_iterator.make_train_iterator(config.input, args.batch_size, mesh, seed=0)
  jax.block_until_ready(next(it))  # warm-up: opens the files, fills the shuffle buffer
  t0 = time.perf_counter()
  for _ in range(args.batches):
    batch = next(it)
  jax.block_until_ready(batch)
  dt = time.perf_counter() - t0
  print(f"train iterator: {args.batches} batches of {args.batch_size} in {dt:.1f} s = "
        f"{args.batches * args.batch_size / dt:.0f} examples/s (res {config.input.res}, frames "
        f"{tuple(batch['frames'].shape[1:-3])} of {config.input.num_frames} stored)")


if __name__ == "__main__":
  main()
