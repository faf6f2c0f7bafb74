r"""Examples per second of the `mimic` build on release-sized DICOMs, single process and on
Beam (DirectRunner, 1 and 2 worker processes), for 1 and 16 sampled frames; the scaling
efficiency and the workers the full release (525,422 DICOMs) needs to build in an hour.

  .venv/bin/python benchmarks/mimic_build_speed.py --subjects 12 --cine_frames 75 --out /tmp/mbs

Writes a v1.0-layout tree (tests/mimic_tree.py: 708 x 1016 YBR_FULL_422 JPEG cines of
`cine_frames` frames and single-frame spectral stills, 5 DICOMs per study, one in five a
still) once, then times each build from an empty data_dir. Wall time includes everything a
build does (CSV join, decode, mask, resize, TFRecord writing, tokenizer), and for Beam the
start of its worker processes, so small trees understate Beam's steady rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RELEASE_DICOMS = 525_422


def _build(root: str, data_dir: str, frames: int, workers: int | None) -> tuple[float, int]:
  from echovlm_jax.data import build  # pylint: disable=g-import-not-at-top
  from tests.echoground_fixtures import tiny_input_config  # pylint: disable=g-import-not-at-top
  ic = tiny_input_config(data_dir, builder_config="mimic", manual_dir=root, image_size=128,
                         res=112, num_frames=frames, vocab_size=256, num_shards=2)
  beam = "" if workers is None else (f"runner=DirectRunner,direct_num_workers={workers},"
                                     "direct_running_mode=multi_processing")
  t0 = time.perf_counter()
  builder = build.ensure_dataset(ic, beam_options=beam)
  wall = time.perf_counter() - t0
  return wall, sum(s.num_examples for s in builder.info.splits.values())


def _decode_rates(root: str, frames: int) -> dict[str, float]:
  """DICOMs / s of the per-file work alone (decode the sampled frames, mask, resize, make the
  example), by kind: what a Beam worker does per element once it runs, without a build's
  fixed costs (worker start, CSV join, tokenizer, TFRecord writing)."""
  import collections  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import bug_guard, mimic, reader_options  # pylint: disable=g-import-not-at-top
  from tfds_builders.echoground import records  # pylint: disable=g-import-not-at-top
  stats = collections.Counter()
  items = mimic.plan(root, reader_options.MimicOptions(), stats)
  guard = bug_guard.BugGuard(stats)
  spent = collections.defaultdict(float)
  count = collections.Counter()
  for item in items:
    t0 = time.perf_counter()
    record = mimic.read_item(root, item, 128, frames, stats, guard)
    if record is None:
      continue
    records.make_example(item.key, record, num_frames=frames, image_size=128,
                         value_counts=collections.Counter())
    kind = "still" if record["image_kind"] == "spectral" else "cine"
    spent[kind] += time.perf_counter() - t0
    count[kind] += 1
  return {k: count[k] / spent[k] for k in count}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--subjects", type=int, default=12)
  p.add_argument("--cine_frames", type=int, default=75)
  p.add_argument("--out", default="/tmp/mimic_build_speed")
  p.add_argument("--frames", default="1,16")
  p.add_argument("--decode_only", action="store_true", help="only the per-file rates")
  args = p.parse_args()
  from tests import mimic_tree  # pylint: disable=g-import-not-at-top
  root = os.path.join(args.out, "tree")
  if not os.path.exists(os.path.join(root, "echo-record-list.csv")):
    t0 = time.perf_counter()
    mimic_tree.write_tree(root, num_subjects=args.subjects, cine_frames=args.cine_frames)
    print(f"wrote the tree in {time.perf_counter() - t0:.0f} s", flush=True)
  # Per-file work alone, and the release's mix (~45 % single-frame stills, REAL_DATA).
  print("\n| sampled frames | cines / s | stills / s | release mix, DICOMs / s / worker | "
        "workers for 525,422 DICOMs in 1 h |\n|---|---|---|---|---|")
  for frames in (int(f) for f in args.frames.split(",")):
    r = _decode_rates(root, frames)
    mix = 1.0 / (0.55 / r["cine"] + 0.45 / r["still"])
    print(f"| {frames} | {r['cine']:.2f} | {r['still']:.2f} | {mix:.2f} | "
          f"{RELEASE_DICOMS / 3600 / mix:.0f} |", flush=True)
  if args.decode_only:
    return
  rows = []
  for frames in (int(f) for f in args.frames.split(",")):
    for name, workers in (("single process", None), ("Beam, 1 worker", 1), ("Beam, 2 workers", 2)):
      data_dir = os.path.join(args.out, f"tfds_{frames}_{workers}")
      wall, n = _build(root, data_dir, frames, workers)
      rows.append(dict(frames=frames, build=name, workers=workers or 1, examples=n, wall_s=wall,
                       examples_per_s=n / wall))
      print(json.dumps(rows[-1]), flush=True)
  print("\n| sampled frames | build | examples | wall (s) | examples/s | 2-worker efficiency | "
        "workers for the release in 1 h |\n|---|---|---|---|---|---|---|")
  for r in rows:
    one = next(x for x in rows if x["frames"] == r["frames"] and x["build"] == "Beam, 1 worker")
    eff = (r["examples_per_s"] / (2 * one["examples_per_s"])) if r["workers"] == 2 else None
    per_worker = r["examples_per_s"] / r["workers"]
    need = RELEASE_DICOMS / 3600 / per_worker
    print(f"| {r['frames']} | {r['build']} | {r['examples']} | {r['wall_s']:.1f} | "
          f"{r['examples_per_s']:.2f} | {'' if eff is None else f'{eff:.2f}'} | {need:.0f} |")


if __name__ == "__main__":
  main()
