"""The view classifier's report: report.md (summary, per-view recall, how to read it),
metrics.json and plots (confusion matrix, reliability diagram, coverage against accuracy,
training and evaluation curves). Input: view_classification.Evaluator.details and the metrics
history, as for the contrastive report (report.py, whose plotting helpers this reuses).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Mapping, Sequence

import numpy as np

from echovlm_jax.evaluation import report

_HOW_TO_READ = """\
## How to read this

- The classifier names the view of each image (schema.KNOWN_VIEWS). It is scored on held-out
  patients (the split's patients were never trained on) and only on images whose view came
  from a trusted source (config.view_classifier.trusted_sources, e.g. ECHOVIEW).
- **Accuracy** is the share of images named correctly; **balanced accuracy** averages the
  per-view recall, so rare views count as much as common ones.
- **Confidence** is the classifier's probability of the view it names. **Expected calibration
  error (ECE)** is the average gap between confidence and accuracy over confidence bins,
  weighted by the images in each bin: 0 means a confidence of 0.9 is right 9 times in 10.
- **Coverage at the threshold** is the share of images whose confidence reaches it; the
  accuracy there is what a dataset built with that threshold
  (`--config.input.mimic.view_predictions_min_prob`) gets on its predicted views. The rest
  stay `unknown`.
"""


def plot_reliability(res: dict, path: str, title: str) -> str:
  """Accuracy against mean confidence per bin (the diagonal is perfect calibration)."""
  plt = report._plt()  # pylint: disable=protected-access
  bins = [b for b in res["calibration"] if b["n"]]
  fig, ax = plt.subplots(figsize=(4.6, 4.2), layout="constrained")
  ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
  width = 1.0 / len(res["calibration"])
  ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
         color="C0", alpha=0.7, edgecolor="C0", label="accuracy")
  ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C3", ms=3,
          label="(mean confidence, accuracy)")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.set_xlabel("confidence (top-class probability)")
  ax.set_ylabel("accuracy")
  ax.legend(fontsize=7, loc="upper left")
  ax.set_title(f"{title}\nECE {report._fmt(res['ece'])}, n {res['n']}", fontsize=10)  # pylint: disable=protected-access
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_coverage(res: dict, path: str, title: str) -> str:
  """Coverage and accuracy on the covered images against the confidence threshold."""
  plt = report._plt()  # pylint: disable=protected-access
  t, cov, acc = (np.array(c, np.float64) for c in zip(*res["coverage_curve"]))
  fig, ax = plt.subplots(figsize=(5.2, 3.6), layout="constrained")
  ax.plot(t, cov, color="C0", lw=2, label="coverage")
  ax.plot(t, acc, color="C2", lw=2, label="accuracy on covered images")
  ax.axvline(res["threshold"], ls="--", color="C3", lw=1, label=f"threshold {res['threshold']:.2f}")
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.set_xlabel("confidence threshold")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="lower left")
  ax.set_title(title, fontsize=10)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def _section(r: dict, plots: Sequence[str]) -> list[str]:
  pct, fmt = report._pct, report._fmt  # pylint: disable=protected-access
  out = [f"## View classification — {r['split']} split (step {r['step']})", "",
         f"On {r['n']} images of held-out patients with a trusted view: accuracy "
         f"**{pct(r['accuracy'])}**, balanced accuracy **{pct(r['balanced_accuracy'])}**, "
         f"expected calibration error **{fmt(r['ece'])}**. At confidence >= {r['threshold']:.2f}: "
         f"coverage **{pct(r['coverage'])}**, accuracy **{pct(r['accuracy_at_threshold'])}**.", ""]
  out += report.per_view_table(r) + [""]
  out += [f"![{os.path.basename(p)}]({p})" for p in plots]
  return out + [""]


def write_report(workdir: str, results: Mapping[str, dict], metrics_history: Sequence[Mapping]) -> str:
  """Writes workdir/report.md, workdir/metrics.json and PNGs under workdir/report/; returns the
  path of report.md. results: entry name -> Evaluator.details[name]."""
  plot_dir = os.path.join(workdir, "report")
  os.makedirs(plot_dir, exist_ok=True)
  rel = lambda p: os.path.relpath(p, workdir)
  order = {"test": 0, "validation": 1, "train": 2}
  md = ["# View classifier report", "",
        f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.", "",
        "> **Not a medical device.** A research model; its views label a research dataset.", "",
        "| split | images | accuracy | balanced accuracy | ECE | threshold | coverage | "
        "accuracy at threshold |", "|---|---|---|---|---|---|---|---|"]
  entries = sorted(results.values(), key=lambda r: (order.get(r["split"], 9), r["split"]))
  for r in entries:
    md.append(f"| {r['split']} | {r['n']} | {report._fmt(r['accuracy'])} | "  # pylint: disable=protected-access
              f"{report._fmt(r['balanced_accuracy'])} | {report._fmt(r['ece'])} | "  # pylint: disable=protected-access
              f"{r['threshold']:.2f} | {report._fmt(r['coverage'])} | "  # pylint: disable=protected-access
              f"{report._fmt(r['accuracy_at_threshold'])} |")  # pylint: disable=protected-access
  md.append("")
  for r in entries:
    split = r["split"]
    what = f"{split}, step {r['step']}"
    plots = [report.plot_confusion(r, os.path.join(plot_dir, f"confusion_{split}.png"),
                                   f"View classifier ({what})", xlabel="predicted view"),
             plot_reliability(r, os.path.join(plot_dir, f"reliability_{split}.png"),
                              f"Calibration ({what})"),
             plot_coverage(r, os.path.join(plot_dir, f"coverage_{split}.png"),
                           f"Coverage and accuracy against the threshold ({what})")]
    md += _section(r, [rel(p) for p in plots])
  curves = report.plot_training_curves(metrics_history, os.path.join(plot_dir, "training_curves.png"))
  if curves:
    md += ["## Training", "", f"![training curves]({rel(curves)})", ""]
  keys = [f"{p}/view_classification/{k}" for p in ("val", "test")
          for k in ("accuracy", "balanced_accuracy", "ece", "coverage")]
  evals = report.plot_training_curves(metrics_history, os.path.join(plot_dir, "eval_curves.png"),
                                      keys=keys, title="Evaluation metrics during training")
  if evals:
    md += [f"![evaluation during training]({rel(evals)})", ""]
  md.append(_HOW_TO_READ)
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(md))
  flat = {k: v for r in results.values() for k, v in r.get("metrics", {}).items()}
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(report._jsonable({"metrics": flat, "evals": dict(results)}), f, indent=1)  # pylint: disable=protected-access
  return path
