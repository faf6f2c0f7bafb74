r"""LVEF from motion: the test single frames cannot pass. configs/lvef.py (synthetic 2D cines,
no M-mode strip, 8 frames at 8 frames per second) trained twice with the same data, steps and
seed: the video tower (temporal="factorised": a transformer over the frames' features) and
the frame average (temporal="mean", what the image tower did before clips). Then each run's
test-split LVEF MAE in points, beside EchoNet-Dynamic's 4.1 on real video.

  .venv/bin/python benchmarks/lvef_from_motion.py --workdir workdir/lvef_motion
  .venv/bin/python benchmarks/lvef_from_motion.py --workdir wd -- --config.total_steps=500   # extra flags
  .venv/bin/python benchmarks/lvef_from_motion.py --workdir wd --init_artifact ART   # + two runs

--init_artifact adds two runs: both towers fine-tuned from an exported EchoVLM video artifact
(config.lvef.init_artifact; same data, steps, seed and lr as the two from scratch; the frame
average takes its spatial ViT and leaves the temporal transformer out), e.g. the demo recipe
on the same clips, exported:

  .venv/bin/python -m echovlm_jax.main --config configs/echovlm.py:res=64,frames=8 \
      --config.input.image_size=64 --config.input.clip_fps=8 --workdir runs/demo_clips
  .venv/bin/python -m echovlm_jax.tools.export --workdir runs/demo_clips --out runs/demo_clips_art

A run whose workdir already holds test figures is read, not re-run (the trainer resumes an
unfinished one). Prints a markdown table (docs/results.md) and writes WORKDIR/lvef_from_motion.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import common  # noqa: E402 - after the repository root is on sys.path

# (row name, run folder, configs/lvef.py temporal); the pretrained run is added by --init_artifact.
TOWERS = (("video tower (factorised)", "factorised", "factorised"),
          ("frame average (mean)", "mean", "mean"))
# The frame average from a video artifact leaves its temporal arrays out (same spatial ViT).
PRETRAINED = (("video tower (factorised), fine-tuned from --init_artifact", "factorised_pretrained",
               "factorised"),
              ("frame average (mean), fine-tuned from --init_artifact", "mean_pretrained", "mean"))
METRICS = (("test MAE", "test/lvef_regression/mae"), ("test RMSE", "test/lvef_regression/rmse"),
           ("test R^2", "test/lvef_regression/r2"), ("val MAE", "val/lvef_regression/mae"))


def final_metrics(workdir: str) -> dict[str, float] | None:
  return common.final_metrics(workdir, METRICS[0][1])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="workdir/lvef_motion", help="one folder per tower")
  p.add_argument("--arg", default="", help="extra configs/lvef.py arg string items, e.g. seed=1")
  p.add_argument("--init_artifact", default="",
                 help="an exported EchoVLM video artifact: adds the fine-tuned-from-it run")
  p.add_argument("--only", default="",
                 help="comma-separated run folders to run and tabulate (factorised, mean, "
                      "factorised_pretrained, mean_pretrained); default all")
  p.add_argument("extra", nargs="*", help="flags passed to every run (after --)")
  args = p.parse_args(argv)
  runs = TOWERS + (PRETRAINED if args.init_artifact else ())
  if args.only:
    runs = tuple(r for r in runs if r[1] in args.only.split(","))
  rows, walls = {}, {}
  for name, folder, temporal in runs:
    wd = os.path.abspath(os.path.join(args.workdir, folder))
    if final_metrics(wd) is None:
      arg = ",".join(x for x in (f"temporal={temporal}", args.arg) if x)
      init = ([f"--config.lvef.init_artifact={os.path.abspath(args.init_artifact)}"]
              if folder.endswith("_pretrained") else [])
      cmd = [sys.executable, "-m", "echovlm_jax.main", f"--config=configs/lvef.py:{arg}",
             f"--workdir={wd}", *init, *args.extra]
      print("+", " ".join(cmd), flush=True)
      t0 = time.time()
      subprocess.run(cmd, cwd=REPO, check=True)
      walls[folder] = time.time() - t0
    rows[name] = final_metrics(wd)
    if rows[name] is None:
      raise SystemExit(f"{wd}: the run ended without test figures; see its log.")
  lines = ["| image tower | " + " | ".join(n for n, _ in METRICS) + " |",
           "|---" * (len(METRICS) + 1) + "|"]
  for name, m in rows.items():
    lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" if "r2" in k else f"{m[k]:.2f}"
                                            for _, k in METRICS) + " |")
  print("\n".join(lines))
  with open(os.path.join(args.workdir, "lvef_from_motion.json"), "w") as f:
    json.dump({"runs": rows, "wall_s": walls, "arg": args.arg, "extra": args.extra,
               "init_artifact": args.init_artifact}, f, indent=2)


if __name__ == "__main__":
  main()
