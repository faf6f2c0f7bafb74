"""Synthetic echo generation throughput (examples/s), single process.

  .venv/bin/python benchmarks/synthetic_speed.py --patients 600 --image-size 128 --frames 1
"""

import argparse
import collections
import time

from echovlm_jax.data import synthetic


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--patients", type=int, default=600)
  parser.add_argument("--image-size", type=int, default=128)
  parser.add_argument("--frames", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  start = time.perf_counter()
  views, n = collections.Counter(), 0
  for _, record in synthetic.generate_records(args.patients, args.seed, args.image_size, args.frames):
    views[record["view"]] += 1
    n += 1
  dt = time.perf_counter() - start
  print(f"patients={args.patients} image_size={args.image_size} frames={args.frames}")
  print(f"examples={n} seconds={dt:.1f} examples/s={n / dt:.1f}")
  print("views:", dict(sorted(views.items())))


if __name__ == "__main__":
  main()
