r"""What a clip costs the video tower: train-step time, FLOPs and peak memory per clip for
T = 1, 8, 16, 32 frames (model.image.temporal="factorised" for T > 1, the frame average for
T = 1) at each size, with and without remat, through benchmarks/train_step.py's real step
(one child process per row, random batches of the training shapes; full objective).

  .venv/bin/python benchmarks/clip_cost.py --sizes ti,s --frames 1,8,16,32 --batch 4   # CPU
  .venv/bin/python benchmarks/clip_cost.py --sizes s,b --frames 1,16,32 --batch 64 \
      --dtype bfloat16 --set model.attention_impl=cudnn                              # GPU

Prints a markdown table (docs/performance.md) and, with --json, writes every row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from benchmarks import train_step  # noqa: E402 - after the repository root is on sys.path

HEADER = ("| size | T | remat | batch | compile s | s/step min | ms per clip | CPU s/step min | "
          "GFLOPs per clip | host peak GiB | device peak GiB |\n" + "|---" * 11 + "|")


def row(r: dict, frames: int, remat: bool) -> str:
  t, c, b = min(r["step_times"]), min(r["cpu_times"]), r["batch"]
  gib = lambda x: f"{x / 2**30:.2f}" if x else "n/a"
  flops = f"{r['flops_per_step'] / 1e9 / b:.1f}" if r["flops_per_step"] else "n/a"
  return (f"| {r['size']} | {frames} | {'yes' if remat else 'no'} | {b} | {r['compile_s']:.0f} | "
          f"{t:.3f} | {1000 * t / b:.0f} | {c:.2f} | {flops} | {gib(r['host_peak_bytes'])} | "
          f"{gib(r['device_peak_bytes'])} |")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", default="ti,s")
  p.add_argument("--frames", default="1,8,16,32")
  p.add_argument("--remat", default="0,1", help="comma list of 0 / 1")
  p.add_argument("--batch", type=int, default=4, help="global batch (clips)")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--res", type=int, default=None)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  rows, lines = [], [HEADER]
  for size in args.sizes.split(","):
    for frames in (int(f) for f in args.frames.split(",")):
      for remat in (bool(int(r)) for r in args.remat.split(",")):
        child = argparse.Namespace(
            batch=args.batch, steps=args.steps, warmup=args.warmup, objective="echovlm",
            dtype=args.dtype, torch=False, peak_flops=None, text_len=None, res=args.res,
            set=[*args.set, f"input.num_frames={frames}", f"model.remat={int(remat)}",
                 f"model.image.temporal={'factorised' if frames > 1 else 'mean'}"])
        r = train_step._child(child, size)[0]    # pylint: disable=protected-access
        rows.append(dict(r, frames=frames, remat=remat))
        lines.append(row(r, frames, remat))
        print(lines[-1], flush=True)
  print("\n".join(lines))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
