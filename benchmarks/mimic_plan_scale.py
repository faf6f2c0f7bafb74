r"""What the Beam `mimic` build's driver costs on a release-sized tree (CSV side only, no
DICOMs): plan time, plan files, job graph size and serialization time, driver peak memory.

  nice .venv/bin/python benchmarks/mimic_plan_scale.py --out /tmp/mps
  nice .venv/bin/python benchmarks/mimic_plan_scale.py --out /tmp/mps --with_create   # + the old graph

Writes the tree once (tests/mimic_csv_tree.py at mimic_csv_tree.RELEASE sizes times --scale:
525,422 record rows of which 103 repeats, 7,243 studies of 4,579 patients, 206,488 reports
of 91,372 patients, ~5.6 M measurement rows, 29,196 ECHOVIEW rows) and reuses it when it is
there. The driver's work then runs in a child process, so its peak RSS is the driver's own:
the builder's Beam plan (mimic.plan, patient split, plan files), then the job graph of the
three split branches built as TFDS builds them, serialized as a runner submits it
(`pipeline.to_runner_api().SerializeToString()`). TFDS's writer transforms, added after ours,
are not in the measured graph (a fixed few tens of KB). --with_create also measures, in its own
child, the graph the previous design built (every item in `beam.Create`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn, out: dict, name: str):
  def wrapper(*a, **k):
    t0 = time.perf_counter()
    result = fn(*a, **k)
    out[name] = round(time.perf_counter() - t0, 2)
    return result
  return wrapper


def _driver(root: str, data_dir: str, create: bool) -> dict:
  """The Beam build's driver work on the tree at root; runs in a child process."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import build, mimic  # pylint: disable=g-import-not-at-top
  from tests.echoground_fixtures import tiny_input_config  # pylint: disable=g-import-not-at-top
  from tfds_builders.echoground import beam_build, beam_plan, build_plans  # pylint: disable=g-import-not-at-top
  shutil.rmtree(data_dir, ignore_errors=True)  # a previous run's plan files
  out = {"rss_after_imports_mb": round(_rss_mb())}
  builder = build.get_builder(tiny_input_config(data_dir, builder_config="mimic", manual_dir=root,
                                                image_size=128, num_frames=1, num_shards=2))
  pipeline = beam.Pipeline()
  t0 = time.perf_counter()
  if create:  # the previous design: every work item inside the job graph
    items = _timed(mimic.plan, out, "plan_s")(root, builder.builder_config.mimic)
    # As the previous plan made them: value dicts copied per item (shared dicts pickle smaller).
    items = [i._replace(measurements=dict(i.measurements), grades=dict(i.grades)) for i in items]
    by_split, _ = beam_build.items_by_split(items)
    out["items"] = len(items)
    for split, split_items in by_split.items():
      _ = pipeline | split >> beam.Create(split_items, reshuffle=True)
  else:
    mimic.plan = _timed(mimic.plan, out, "plan_s")
    beam_plan.write = _timed(beam_plan.write, out, "plan_files_write_s")
    plan = build_plans.plan_beam(builder.builder_config, root, builder.data_dir)
    out["items"] = sum(plan.sizes.values())
    plan_dir = os.path.join(plan.work_dir, "plan")
    files = [os.path.join(plan_dir, f) for f in os.listdir(plan_dir)]
    out["plan_files"] = len(files)
    out["plan_files_mb"] = round(sum(os.path.getsize(f) for f in files) / 2**20, 1)
    for split, transform in plan.split_generators().items():
      _ = pipeline | split >> transform
  out["driver_before_graph_s"] = round(time.perf_counter() - t0, 2)
  t0 = time.perf_counter()
  proto = pipeline.to_runner_api().SerializeToString()
  out["graph_serialize_s"] = round(time.perf_counter() - t0, 2)
  out["graph_bytes"] = len(proto)
  out["driver_peak_rss_mb"] = round(_rss_mb())
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="folder for the tree and the data_dir")
  parser.add_argument("--scale", type=float, default=1.0, help="fraction of the release's sizes")
  parser.add_argument("--with_create", action="store_true",
                      help="also measure the previous design's graph (items in beam.Create)")
  parser.add_argument("--_child", choices=("files", "create"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  root, data_dir = os.path.join(args.out, f"tree_x{args.scale:g}"), os.path.join(args.out, "data")
  if args._child:  # pylint: disable=protected-access
    print(json.dumps(_driver(root, os.path.join(data_dir, args._child), args._child == "create")))  # pylint: disable=protected-access
    return

  from tests import mimic_csv_tree  # pylint: disable=g-import-not-at-top
  sizes = {k: max(1, round(v * args.scale)) for k, v in mimic_csv_tree.RELEASE.items()}
  sizes["repeated_rows"] = min(sizes["repeated_rows"], mimic_csv_tree.RELEASE["repeated_rows"])
  marker = os.path.join(root, "_written.json")
  if not os.path.exists(marker):
    t0 = time.perf_counter()
    written = mimic_csv_tree.write_csvs(root, **sizes)
    written["write_s"] = round(time.perf_counter() - t0, 1)
    with open(marker, "w") as f:
      json.dump(written, f)
  with open(marker) as f:
    print("tree:", f.read(), flush=True)
  for child in ("files", "create") if args.with_create else ("files",):
    cmd = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--scale", str(args.scale),
           "--_child", child]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"{'items in beam.Create (previous)' if child == 'create' else 'plan files (now)'}:",
          json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
