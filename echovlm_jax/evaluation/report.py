"""The evaluation report: report.md a cardiologist can read, metrics.json, and PNG plots.

Input is the per-entry details of `registry.run_evals_with_details` (or
`Evaluator.details`) plus the training metrics history (JSON lines as dicts).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from echovlm_jax.echo import schema
from echovlm_jax.inference.artifact import STUDY_POOLING_FILE  # what export copies

# The summary table's metrics ("type/metric" of an evaluator); targets come from the config.
HEADLINE = {"zero_shot_views/accuracy": "zero-shot view accuracy",
            "zero_shot_findings/macro_auc": "zero-shot finding macro AUC (image level)",
            "negation/sensitivity": "negation sensitivity"}
# Throughput / schedule scalars are not losses; they get no training-curve panel.
_NOT_CURVES = ("steps_per_s", "examples_per_s", "lr")


def _plt():
  import matplotlib
  matplotlib.use("Agg")  # no display on training machines
  import matplotlib.pyplot as plt
  return plt


def _fmt(x: Any, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  return f"{float(x):.{digits}f}"


def _pct(x: Any) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "n/a"
  return f"{100 * float(x):.1f} %"


def _nice(label: str) -> str:
  return label.replace("_", " ")


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.floating, float)):
    return None if math.isnan(float(x)) else float(x)  # strict JSON has no NaN
  if isinstance(x, np.integer):
    return int(x)
  return x


def _where(r: Mapping[str, Any], short: bool = False) -> str:
  """"test split" / "test split of site_b": what an entry scored (a mixture's source)."""
  src = r.get("source") or ""
  return (r["split"] if short else f"{r['split']} split") + (f" of {src}" if src else "")


def _tag(r: Mapping[str, Any]) -> str:
  """A file-name part for an entry's plots: "test" or "test_site_b"."""
  return r["split"] + (f"_{r['source']}" if r.get("source") else "")


def _by_type(results: Mapping[str, dict], kind: str) -> list[tuple[str, dict]]:
  order = {"test": 0, "validation": 1, "train": 2}
  found = [(n, r) for n, r in results.items() if r.get("type") == kind]
  return sorted(found, key=lambda nr: (order.get(nr[1].get("split"), 9), nr[0]))


# --- Plots --------------------------------------------------------------------

def plot_roc_curves(res: dict, path: str, title: str) -> str:
  """One panel per label: the image-level ROC curve, chance diagonal, AUC and n."""
  plt = _plt()
  labels = list(res["per_label"])
  cols = 5
  rows = max(1, math.ceil(len(labels) / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False,
                           layout="constrained")
  for ax, label in zip(axes.flat, labels):
    r = res["per_label"][label]
    fpr, tpr = (np.asarray(a) for a in r["roc"])
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
    if fpr.size:
      ax.plot(fpr, tpr, color="C0", lw=2)
      ax.set_title(f"{_nice(label)}\nAUC {_fmt(r['auc'], 2)} (n+ {r['n_pos']}, n- {r['n_neg']})",
                   fontsize=9)
    else:
      ax.text(0.5, 0.5, "not enough\npositives and negatives", ha="center", va="center",
              fontsize=9, color="0.4")
      ax.set_title(f"{_nice(label)}\n(n+ {r['n_pos']}, n- {r['n_neg']})", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)", fontsize=7)
    ax.set_ylabel("sensitivity", fontsize=8)
    ax.tick_params(labelsize=7)
  for ax in list(axes.flat)[len(labels):]:
    ax.axis("off")
  fig.suptitle(title, fontsize=12)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_confusion(res: dict, path: str, title: str,
                   xlabel: str = "predicted view (zero-shot)") -> str:
  """Row-normalised confusion matrix (colour) with counts, axes named by view."""
  plt = _plt()
  cm = np.asarray(res["confusion"])
  names = list(res["view_names"])
  support = cm.sum(axis=1, keepdims=True)
  frac = np.divide(cm, np.maximum(support, 1))
  fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(names), 0.8 + 0.55 * len(names)),
                         layout="constrained")
  im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      if cm[i, j]:
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                color="white" if frac[i, j] > 0.6 else "black")
  ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
  ax.set_yticks(range(len(names)), [f"{n} ({int(s)})" for n, s in zip(names, support[:, 0])],
                fontsize=9)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("true view (number of images)")
  ax.set_title(title, fontsize=11)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true view's images")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def _series(history: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(h["step"], h[key]) for h in history
         if key in h and h[key] is not None and "step" in h and math.isfinite(float(h[key]))]
  pts.sort()
  return np.array([p[0] for p in pts]), np.array([float(p[1]) for p in pts])


def training_curve_keys(history: Sequence[Mapping]) -> list[str]:
  """Every train/* scalar except throughput and the learning rate, losses first."""
  keys = sorted({k for h in history for k in h if k.startswith("train/")
                 and k.split("/", 1)[1] not in _NOT_CURVES})
  return sorted(keys, key=lambda k: (k != "train/loss", "loss" not in k, k))


def plot_training_curves(history: Sequence[Mapping], path: str,
                         keys: Sequence[str] | None = None, title: str = "Training curves",
                         targets: Mapping[str, float] | None = None) -> str | None:
  """One panel per key against step (dashed line at `targets[key]`); None when no key has data."""
  keys = list(keys) if keys is not None else training_curve_keys(history)
  keys = [k for k in keys if _series(history, k)[0].size]
  if not keys:
    return None
  plt = _plt()
  cols = min(3, len(keys))
  rows = math.ceil(len(keys) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False,
                           layout="constrained")
  for ax, key in zip(axes.flat, keys):
    steps, vals = _series(history, key)
    ax.plot(steps, vals, marker="o" if len(steps) < 20 else None, ms=3, lw=1.5)
    if targets and key in targets:
      ax.axhline(targets[key], ls="--", color="C3", lw=1, label=f"target {targets[key]:.2f}")
      ax.legend(fontsize=7, loc="lower right")
    ax.set_title(key, fontsize=10)
    ax.ticklabel_format(axis="y", useOffset=False)  # "+1e1" offsets confuse non-ML readers
    ax.set_xlabel("step", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
  for ax in list(axes.flat)[len(keys):]:
    ax.axis("off")
  fig.suptitle(title, fontsize=12)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


# --- Markdown -----------------------------------------------------------------

_HOW_TO_READ = """\
## How to read this

- **Zero-shot** means the model was never trained to classify: it compares an
  image with short sentences ("apical four-chamber view", "the left ventricle
  is dilated" vs "normal left ventricular size") and picks the closer one.
- **View accuracy** is the share of images whose view the model names
  correctly; **balanced accuracy** averages the per-view recall, so rare views
  count as much as common ones. **Recall** for a view is the share of that
  view's images recognised as it.
- **AUC** (area under the ROC curve) is the probability that a randomly
  chosen image *with* the finding scores higher than one *without* it: 0.5 is
  a coin toss, 1.0 is perfect separation. A finding is scored only on images
  whose view can show it (aortic stenosis on the continuous-wave Doppler
  through the aortic valve, not on a subcostal view) and whose label is known
  from the study's measurements. **n+ / n-** are those image counts; "n/a"
  means the split has no such images with both outcomes (elevated filling
  pressure needs E/e' from tissue Doppler, which no view here shows). At
  **study level**, the images of one study that can show the finding are
  combined first, as a reader would combine views.
- **Retrieval R@k** is the share of images whose own report sentence is among
  the k best-matching distinct sentences (and vice versa); identical sentences
  count as matches. **Median rank** 1 is best.
- **Negation sensitivity** is the share of images for which the model prefers
  the true sentence over the same sentence with the finding flipped (e.g.
  "reduced ejection fraction" vs "normal ejection fraction"). 0.5 is chance.
- **Linear probes** train a simple classifier / regressor on top of the frozen
  image embeddings (on the training split) and test it on the held-out split:
  they say how much clinical information the embeddings carry, not how the
  zero-shot model behaves. **MAE** is the mean absolute error in the
  measurement's own unit.
- Labels follow ASE/EACVI guideline cut-offs applied to the study's
  measurements (see docs/design.md); they are derived, not a cardiologist's read.
"""

_NOT_A_DEVICE = """\
> **Not a medical device.** This is a research model evaluated on
> {data}. Its outputs must not be used for diagnosis or patient care.
"""


def config_targets(config) -> dict[str, float]:
  """config.report_targets of config.input.builder_config as {"type/metric": target};
  {} when that data has none (the report then has no targets column)."""
  per_data = config.report_targets.get(config.input.builder_config) or {}
  return {f"{kind}/{metric}": float(v) for kind, metrics in per_data.items()
          for metric, v in metrics.items()}


def _headline(results: Mapping[str, dict], targets: Mapping[str, float]) -> list[str]:
  """The summary table: the headline metrics, and any metric with a target, per split."""
  lines = (["| metric | split | value | target |", "|---|---|---|---|"] if targets else
           ["| metric | split | value |", "|---|---|---|"])
  found = False
  for key in [*HEADLINE, *(k for k in targets if k not in HEADLINE)]:
    kind, metric = key.split("/", 1)
    for _, r in _by_type(results, kind):
      v = r.get(metric)
      row = f"| {HEADLINE.get(key, key)} | {_where(r, short=True)} | {_fmt(v)} |"
      if targets:
        target = targets.get(key)
        status = ("" if target is None else "(not measurable)" if v is None or v != v else
                  "(met)" if v >= target else "(not met)")
        row += f" {'' if target is None else f'>= {target:.2f}'} {status} |"
      lines.append(row)
      found = True
  return lines if found else []


def per_view_table(r: Mapping[str, Any]) -> list[str]:
  """Markdown rows: each view's description, images and recall (from confusion, rows true)."""
  out = ["| view | description | images | recall |", "|---|---|---|---|"]
  cm = np.asarray(r["confusion"])
  for i, v in enumerate(r["view_names"]):
    out.append(f"| {v} | {schema.VIEW_INFO[v].description} | {int(cm[i].sum())} | "
               f"{_pct(r['per_view_recall'][v]) if cm[i].sum() else 'n/a'} |")
  return out


def _views_section(name: str, r: dict, plot: str | None) -> list[str]:
  out = [f"## View classification (zero-shot) — {_where(r)}", "",
         f"Accuracy **{_pct(r['accuracy'])}**, balanced accuracy **{_pct(r['balanced_accuracy'])}** "
         f"on {r['n']} images with a known view.", ""] + per_view_table(r)
  if plot:
    out += ["", f"![view confusion matrix]({plot})"]
  return out + [""]


def _findings_section(name: str, r: dict, plot: str | None) -> list[str]:
  out = [f"## Findings (zero-shot) — {_where(r)}", "",
         f"Macro AUC **{_fmt(r['macro_auc'])}** (image level), **{_fmt(r['study_macro_auc'])}** "
         "(study level), over the findings with both positive and negative cases.", "",
         "| finding | AUC (image) | n+ | n- | AUC (study) | studies + | studies - |",
         "|---|---|---|---|---|---|---|"]
  for label, x in r["per_label"].items():
    out.append(f"| {_nice(label)} | {_fmt(x['auc'])} | {x['n_pos']} | {x['n_neg']} | "
               f"{_fmt(x['study_auc'])} | {x['study_n_pos']} | {x['study_n_neg']} |")
  if plot:
    out += ["", f"![ROC curves]({plot})"]
  return out + [""]


def _retrieval_section(name: str, r: dict) -> list[str]:
  return [f"## Image-report retrieval — {_where(r)}", "",
          f"{r['n']} images, {r['n_captions']} distinct report sentences.", "",
          "| direction | R@1 | R@5 | R@10 | median rank |", "|---|---|---|---|---|",
          f"| image -> report | {_pct(r['i2t_r1'])} | {_pct(r['i2t_r5'])} | {_pct(r['i2t_r10'])} | "
          f"{_fmt(r['i2t_median_rank'], 1)} |",
          f"| report -> image | {_pct(r['t2i_r1'])} | {_pct(r['t2i_r5'])} | {_pct(r['t2i_r10'])} | "
          f"{_fmt(r['t2i_median_rank'], 1)} |", ""]


def _negation_section(name: str, r: dict) -> list[str]:
  return [f"## Negation sensitivity — {_where(r)}", "",
          f"**{_pct(r['sensitivity'])}** of {r['n']} images prefer their report sentence to its "
          f"negated version (chance is 50 %); mean similarity margin {_fmt(r['mean_margin'])}.", ""]


def _probes_section(name: str, r: dict) -> list[str]:
  v = r["views"]
  out = [f"## Linear probes on frozen image embeddings — {_where(r)}", "",
         f"View: accuracy {_pct(v['accuracy'])}, balanced accuracy {_pct(v['balanced_accuracy'])} "
         f"({v['n_train']} training / {v['n_test']} test images).", "",
         "| finding | probe AUC | n+ | n- |", "|---|---|---|---|"]
  for label, x in r["labels"].items():
    out.append(f"| {_nice(label)} | {_fmt(x['auc'])} | {x['n_pos']} | {x['n_neg']} |")
  out += ["", "| measurement | MAE | unit | training values | test values |",
          "|---|---|---|---|---|"]
  for m, x in r["measurements"].items():
    unit = x["unit"] if x["unit"] else "ratio"
    if x["unit"] == "z":
      unit = "standard deviations"
    out.append(f"| {schema.MEASUREMENT_INFO[m].description} | {_fmt(x['mae'], 2)} | {unit} | "
               f"{x['n_train']} | {x['n_test']} |")
  return out + [""]


def _study_section(name: str, r: dict, workdir: str) -> list[str]:
  """The study embedding's table; writes the fitted pooling to report/study_pooling.npz (what
  tools/export puts in an artifact)."""
  np.savez(os.path.join(workdir, "report", STUDY_POOLING_FILE), step=np.int64(r["step"]),
           **r["params"])
  out = [f"## Study embeddings — {_where(r)}", "",
         f"{r['n_studies']} studies; every image of a study, its view as the model predicts it. "
         "`mean`: the average of the image embeddings; `attention`: attention pooling with "
         "per-view weights fitted on the train split (evaluation/study_pooling.py). The zero-shot "
         "findings section's study AUC instead averages only the images whose true view shows "
         "the finding.", "",
         "| pooling | macro AUC | study -> report R@1 | R@5 | report -> study R@1 |",
         "|---|---|---|---|---|"]
  for pool in ("mean", "attention"):
    x = r[pool]
    out.append(f"| {pool} | {_fmt(x['macro_auc'])} | {_pct(x['i2t_r1'])} | {_pct(x['i2t_r5'])} | "
               f"{_pct(x['t2i_r1'])} |")
  out += ["", "Learned view weights (log scale; 0 everywhere is the mean):", "",
          "| row | " + " | ".join(schema.KNOWN_VIEWS) + " |",
          "|---" * (len(schema.KNOWN_VIEWS) + 1) + "|"]
  for row, w in r["view_weights"].items():
    out.append(f"| {_nice(row)} | " + " | ".join(f"{w[v]:+.2f}" for v in schema.KNOWN_VIEWS) + " |")
  return out + [""]


def _source_losses_section(history: Sequence[Mapping]) -> list[str]:
  """A mixture's last logged losses per source ("train/loss/<source>/<term>"); [] otherwise."""
  last: dict[str, float] = {}
  for h in history:
    last.update({k: float(v) for k, v in h.items()
                 if k.startswith("train/loss/") and k.count("/") == 3 and v is not None})
  if not last:
    return []
  sources = sorted({k.split("/")[2] for k in last})
  terms = sorted({k.split("/")[3] for k in last}, key=lambda t: (t != "total", t))
  out = ["## Training losses by source", "",
         "Each source's losses over its own examples of the last logged batch (its rows and "
         "columns of the contrastive matrix).", "",
         "| source | " + " | ".join(terms) + " |", "|---" * (len(terms) + 1) + "|"]
  for src in sources:
    out.append(f"| {src} | " + " | ".join(_fmt(last.get(f"train/loss/{src}/{t}")) for t in terms)
               + " |")
  return out + [""]


def write_report(workdir: str, results: Mapping[str, dict], metrics_history: Sequence[Mapping],
                 data_description: str = "the dataset this run was configured with",
                 targets: Mapping[str, float] | None = None) -> str:
  """Writes workdir/report.md, workdir/metrics.json and PNGs under workdir/report/.

  results: entry name -> details (type, split, step, metrics, structured results)
  as returned by `registry.run_evals_with_details`. metrics_history: dicts with
  "step" and scalar keys ("train/loss", "train/loss/clip", "val/..."). targets:
  {"type/metric": value} (see `config_targets`); None or {} = no targets column.
  Returns the path of report.md.
  """
  targets = dict(targets or {})
  os.makedirs(workdir, exist_ok=True)
  plot_dir = os.path.join(workdir, "report")
  os.makedirs(plot_dir, exist_ok=True)

  def rel(p):
    return os.path.relpath(p, workdir) if p else None

  steps = sorted({int(r["step"]) for r in results.values() if "step" in r})
  md = ["# EchoVLM evaluation report", "",
        f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; evaluated at step(s) "
        f"{', '.join(map(str, steps)) or 'n/a'}.", "",
        _NOT_A_DEVICE.format(data=data_description), ""]
  head = _headline(results, targets)
  if head:
    md += ["## Summary", "", *head, "",
           "The EchoVLM paper reports 95.1 % view accuracy and 86.5 % zero-shot disease AUC on "
           "real MIMIC-IV-ECHO data; numbers on other data are not directly comparable.", ""]

  for name, r in _by_type(results, "zero_shot_views"):
    plot = plot_confusion(r, os.path.join(plot_dir, f"confusion_{_tag(r)}.png"),
                          f"Zero-shot view classification ({r['split']}, step {r['step']})")
    md += _views_section(name, r, rel(plot))
  for name, r in _by_type(results, "zero_shot_findings"):
    plot = plot_roc_curves(r, os.path.join(plot_dir, f"roc_{_tag(r)}.png"),
                           f"Zero-shot findings, image level ({r['split']}, step {r['step']})")
    md += _findings_section(name, r, rel(plot))
  for name, r in _by_type(results, "retrieval"):
    md += _retrieval_section(name, r)
  for name, r in _by_type(results, "negation"):
    md += _negation_section(name, r)
  for name, r in _by_type(results, "probes"):
    md += _probes_section(name, r)
  for name, r in _by_type(results, "study_pooling"):
    md += _study_section(name, r, workdir)

  md += _source_losses_section(metrics_history)
  curves = plot_training_curves(metrics_history, os.path.join(plot_dir, "training_curves.png"))
  if curves:
    md += ["## Training", "", "Every loss term logged during training, against the step.", "",
           f"![training curves]({rel(curves)})", ""]
  eval_keys = [f"{p}/{k}" for p in ("val", "test") for k in dict.fromkeys([*HEADLINE, *targets])]
  eval_targets = {f"{p}/{k}": v for p in ("val", "test") for k, v in targets.items()}
  eval_curves = plot_training_curves(metrics_history, os.path.join(plot_dir, "eval_curves.png"),
                                     keys=eval_keys, targets=eval_targets,
                                     title="Evaluation metrics during training")
  if eval_curves:
    md += [f"![evaluation during training]({rel(eval_curves)})", ""]
  md += [_HOW_TO_READ]

  report_path = os.path.join(workdir, "report.md")
  with open(report_path, "w") as f:
    f.write("\n".join(md))
  flat = {}
  for r in results.values():
    flat.update(r.get("metrics", {}))
  with open(os.path.join(workdir, "metrics.json"), "w") as f:
    json.dump(_jsonable({"metrics": flat, "evals": dict(results)}), f, indent=1)
  return report_path
