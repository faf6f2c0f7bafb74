r"""Synthetic and real together, measured where the "real" side is scarce: site b (150 patients of
another lab: data/synthetic_sites.py) alone, the default synthetic site a alone, and a + b at
three weights, every run the same recipe and step budget (configs/echovlm.py at 64 px, one
tokenizer over the sites' captions). Each run is scored on site b's test split (~15 patients),
on the test split of 1,000 other patients of site b (`site_b_holdout`, never trained on: the
tight figure) and on site a's.

  .venv/bin/python benchmarks/site_mixture.py --workdir workdir/site_mixture
  .venv/bin/python benchmarks/site_mixture.py --workdir wd --steps 500 -- --config.seed=1

A weight of 0 keeps a source in the run for evaluation only. A run whose workdir already holds
test figures is read, not re-run. Prints markdown tables (docs/results.md) and writes
WORKDIR/site_mixture.json.
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

# (row, data= spec): the share of site b in the batches.
HOLDOUT = "+site_b_holdout:0"
RUNS = (("site b alone", "site_b:1+synthetic:0" + HOLDOUT),
        ("site a alone", "site_b:0+synthetic:1" + HOLDOUT),
        ("a + b, b at 50 %", "site_b:0.5+synthetic:0.5" + HOLDOUT),
        ("a + b, b at 25 %", "site_b:0.25+synthetic:0.75" + HOLDOUT),
        ("a + b, b at 10 %", "site_b:0.1+synthetic:0.9" + HOLDOUT))
SITES = (("b", "site_b"), ("b held out", "site_b_holdout"), ("a", "synthetic"))
HEADLINE = (("views", "zero_shot_views/accuracy"), ("macro AUC", "zero_shot_findings/macro_auc"),
            ("negation", "negation/sensitivity"), ("probe label AUC", "probes/label_macro_auc"))


def final_metrics(workdir: str) -> dict[str, float] | None:
  return common.final_metrics(workdir, "test/site_b_holdout/zero_shot_views/accuracy")


def tables(rows: dict[str, dict[str, float]]) -> str:
  """One headline table per site's test split, and the held-out site b's per-finding AUCs."""
  out = []
  for site, src in SITES:
    out += [f"test split of {site} (`{src}`)", "",
            "| run | " + " | ".join(n for n, _ in HEADLINE) + " |", "|---" * (len(HEADLINE) + 1) + "|"]
    for name, m in rows.items():
      out.append(f"| {name} | " + " | ".join(f"{m.get(f'test/{src}/{k}', float('nan')):.3f}"
                                           for _, k in HEADLINE) + " |")
    out.append("")
  pre = "test/site_b_holdout/zero_shot_findings/auc/"
  labels = sorted({k[len(pre):] for m in rows.values() for k in m if k.startswith(pre)})
  out += ["zero-shot AUC per finding, test split of b held out", "",
          "| run | " + " | ".join(l.replace("_", " ") for l in labels) + " |",
          "|---" * (len(labels) + 1) + "|"]
  for name, m in rows.items():
    out.append(f"| {name} | " + " | ".join(f"{m.get(pre + l, float('nan')):.3f}" for l in labels)
               + " |")
  return "\n".join(out)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="workdir/site_mixture", help="one folder per run")
  p.add_argument("--steps", type=int, default=500, help="the step budget of every run")
  p.add_argument("extra", nargs="*", help="flags passed to every run (after --)")
  args = p.parse_args(argv)
  rows, walls = {}, {}
  for i, (name, spec) in enumerate(RUNS):
    wd = os.path.abspath(os.path.join(args.workdir, f"run{i}"))
    if final_metrics(wd) is None:
      cmd = [sys.executable, "-m", "echovlm_jax.main",
             f"--config=configs/echovlm.py:res=64,data={spec}", "--config.input.image_size=64",
             f"--config.total_steps={args.steps}",
             # Probes fit on 20 batches of the big builds' train splits (site b's whole one).
             "--config.evals.test_probes_synthetic.train_max_batches=20",
             "--config.evals.test_probes_site_b_holdout.train_max_batches=20",
             f"--workdir={wd}", *args.extra]
      print("+", " ".join(cmd), flush=True)
      t0 = time.time()
      subprocess.run(cmd, cwd=REPO, check=True)
      walls[name] = time.time() - t0
    rows[name] = final_metrics(wd)
    if rows[name] is None:
      raise SystemExit(f"{wd}: the run ended without test figures; see its log.")
  print(tables(rows))
  with open(os.path.join(args.workdir, "site_mixture.json"), "w") as f:
    json.dump({"runs": rows, "specs": dict(RUNS), "wall_s": walls, "steps": args.steps,
               "extra": args.extra}, f, indent=2)


if __name__ == "__main__":
  main()
