r"""Label efficiency of chamber segmentation (issue 22): does the EchoVLM tower segment the LV
better, with fewer labels, than starting from scratch? The segmentation recipe
(configs/segmentation.py) from each start, with a share of the labelled training patients,
same steps, same seed; scored on the test split.

  .venv/bin/python benchmarks/segmentation_label_efficiency.py --workdir workdir/seg_labels \
      --artifact artifacts/echovlm-ti         # the demo's tower (python -m echovlm_jax.tools.export)

Starts: `echovlm` (--artifact, config.dense.init_artifact), `scratch`, and with --clip_control
`clip_random` (a CLIP-shaped random tower through config.model_init, written by
benchmarks/clip_shaped_init.py: the architecture without pretraining); `--fractions` of the
training patients keep their masks (config.dense.labelled_patient_fraction; evaluation reads
every held-out frame). Each run is a subprocess whose command is printed first and skipped
when its workdir already has metrics.json (a killed benchmark resumes). Prints a table and
writes WORKDIR/label_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

METRICS = (  # (column, metric under test/segmentation/)
    ("LV cavity Dice ED", "dice/lv_cavity/ed"), ("LV cavity Dice ES", "dice/lv_cavity/es"),
    ("myocardium Dice ED", "dice/lv_myocardium/ed"), ("LA Dice ED", "dice/left_atrium/ed"),
    ("LV cavity HD95 ED (mm)", "hd95/lv_cavity/ed"),
    ("LVEF MAE vs true masks", "lvef/mae_vs_true_masks"), ("LVEF MAE vs reported", "lvef/mae_vs_reported"),
)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="workdir/seg_labels")
  p.add_argument("--artifact", default="", help="an exported EchoVLM; without it only scratch runs")
  p.add_argument("--fractions", default="0.01,0.1,1.0")
  p.add_argument("--clip_control", action="store_true",
                 help="also start from a CLIP-shaped random tower (needs torch, transformers)")
  p.add_argument("--starts", default="", help="comma-separated subset of the starts to run")
  p.add_argument("--steps", type=int, default=0, help="0 = configs/segmentation.py's")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--override", action="append", default=[],
                 help="extra --config.KEY=VALUE for every run (repeatable)")
  return p.parse_args(argv)


def run(name: str, args, extra: list[str]) -> dict:
  workdir = os.path.join(args.workdir, name)
  metrics = os.path.join(workdir, "metrics.json")
  if not os.path.exists(metrics):
    cmd = [sys.executable, "-m", "echovlm_jax.main", "--config", "configs/segmentation.py",
           "--workdir", workdir, f"--config.seed={args.seed}", *extra,
           *(["--config.total_steps=%d" % args.steps] if args.steps else []),
           *args.override]
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.time()
    with open(os.path.join(args.workdir, f"{name}.log"), "w") as log:
      subprocess.run(cmd, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"  {name}: {time.time() - t0:.0f} s", flush=True)
  with open(metrics) as f:
    return json.load(f)["metrics"]


def main(argv=None) -> None:
  args = parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  starts = {"scratch": []}
  if args.artifact:
    starts = {"echovlm": [f"--config.dense.init_artifact={os.path.abspath(args.artifact)}"], **starts}
  if args.clip_control:
    import clip_shaped_init  # pylint: disable=g-import-not-at-top  (benchmarks/, torch)
    clip_dir = os.path.join(os.path.abspath(args.workdir), "clip_ti_random")
    if not os.path.exists(os.path.join(clip_dir, "config.json")):
      clip_shaped_init.write(clip_dir, seed=args.seed)
    starts["clip_random"] = [f"--config.model_init={clip_dir}"]
  if args.starts:
    starts = {k: v for k, v in starts.items() if k in args.starts.split(",")}
  results = {}
  for fraction in [float(f) for f in args.fractions.split(",")]:
    for start, extra in starts.items():
      name = f"{start}_f{fraction:g}"
      m = run(name, args, [*extra, f"--config.dense.labelled_patient_fraction={fraction}"])
      results[name] = {"start": start, "fraction": fraction,
                       **{k: m.get(f"test/segmentation/{k}") for _, k in METRICS}}
  header = "| start | labelled patients | " + " | ".join(c for c, _ in METRICS) + " |"
  print(header)
  print("|" + "---|" * (len(METRICS) + 2))
  for r in results.values():
    cells = ["n/a" if r[k] is None else f"{r[k]:.3f}" for _, k in METRICS]
    print(f"| {r['start']} | {r['fraction']:.0%} | " + " | ".join(cells) + " |")
  with open(os.path.join(args.workdir, "label_efficiency.json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
