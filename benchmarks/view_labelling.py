r"""View labels for the unlabelled majority, shown on data whose truth we know: on the synthetic
dataset, hide the views of 90 % of the patients, train the view classifier on the rest (the
one trainer, configs/view_classifier.py), label the hidden patients' images and score the
labels against the truth at the labelling threshold.

  .venv/bin/python benchmarks/view_labelling.py --workdir workdir/view_labelling

Rerunning resumes the training run in --workdir. Prints a markdown table (docs/results.md)
and writes WORKDIR/view_labelling.json. The goal (issue 14): accuracy >= 0.95 at coverage
>= 0.9 on the hidden patients.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="workdir/view_labelling")
  p.add_argument("--config_arg", default="size=ti,res=64",
                 help="configs/view_classifier.py arg string")
  p.add_argument("--labelled_fraction", type=float, default=0.1,
                 help="share of patients whose views the classifier may see")
  p.add_argument("--threshold", type=float, default=0.9, help="labelling confidence threshold")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--data_dir", default="data/tfds")
  p.add_argument("--override", action="append", default=[],
                 help="extra config override key=value (repeatable)")
  return p.parse_args(argv)


def make_config(args):
  from configs import view_classifier as vc_config  # pylint: disable=g-import-not-at-top
  c = vc_config.get_config(args.config_arg)
  c.input.data_dir = args.data_dir
  c.view_classifier.labelled_patient_fraction = args.labelled_fraction
  c.view_classifier.confidence_threshold = args.threshold
  c.total_steps, c.batch_size, c.lr = args.steps, args.batch_size, args.lr
  c.ckpt_every = c.evals.validation_views.every = max(args.steps // 3, 1)
  for item in args.override:
    key, _, raw = item.partition("=")
    node = c
    *parents, leaf = key.split(".")
    for k in parents:
      node = node[k]
    node[leaf] = type(node[leaf])(json.loads(raw) if not isinstance(node[leaf], str) else raw)
  return c


def score_hidden(config, workdir: str) -> dict:
  """The trained classifier on every image of the patients outside the labelled share (all
  splits): accuracy, coverage and accuracy at the threshold, ECE, per-view recall."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from echovlm_jax import checkpointing, run_config  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import labelled  # pylint: disable=g-import-not-at-top
  from echovlm_jax.evaluation import view_classifier as view_eval  # pylint: disable=g-import-not-at-top
  mesh = run_config.create_mesh(config)
  model, step = checkpointing.restore_params(config, workdir, mesh)
  frac = float(config.view_classifier.labelled_patient_fraction)
  hidden = lambda ex: tf.logical_not(labelled.in_patient_share(ex["patient_id"], frac))
  seen = labelled.keep_labelled(tuple(config.view_classifier.trusted_sources), frac)
  out, n_images = {}, {}
  for name, keep in (("hidden", hidden), ("labelled", seen)):
    probs, ys = [], []
    for split in ("train", "validation", "test"):
      r = view_eval.predict_split(model, config.input, split, run_config.eval_batch_size(config),
                                  mesh, keep)
      probs.append(r["probs"])
      ys.append(r["y"])
    res = view_eval.classification_metrics(np.concatenate(probs), np.concatenate(ys),
                                           float(config.view_classifier.confidence_threshold))
    out[name] = {k: res[k] for k in ("accuracy", "balanced_accuracy", "ece", "coverage",
                                     "accuracy_at_threshold", "n", "per_view_recall")}
    n_images[name] = res["n"]
  out["step"] = step
  return out


def main(argv=None) -> int:
  args = parse_args(argv)
  from echovlm_jax import train  # pylint: disable=g-import-not-at-top
  config = make_config(args)
  t0 = time.time()
  last = train.train_and_evaluate(config, args.workdir)
  train_s = time.time() - t0
  t0 = time.time()
  res = score_hidden(config, args.workdir)
  res.update(train_seconds=round(train_s, 1), score_seconds=round(time.time() - t0, 1),
             args=vars(args), val=({k: v for k, v in last.items() if k.startswith("val/")}))
  with open(os.path.join(args.workdir, "view_labelling.json"), "w") as f:
    json.dump(res, f, indent=1)
  h, l = res["hidden"], res["labelled"]
  print("\n| images | n | accuracy | balanced accuracy | ECE | coverage @ "
        f"{args.threshold:.2f} | accuracy @ {args.threshold:.2f} |\n|---|---|---|---|---|---|---|")
  for name, r in (("hidden patients (labelled by the classifier)", h),
                  ("labelled patients (trained on, all splits)", l)):
    print(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | "
          f"{r['ece']:.3f} | {r['coverage']:.3f} | {r['accuracy_at_threshold']:.3f} |")
  goal = h["accuracy_at_threshold"] >= 0.95 and h["coverage"] >= 0.9
  print(f"\nGoal (accuracy >= 0.95 at coverage >= 0.9 on hidden patients): "
        f"{'met' if goal else 'NOT met'}. Training {res['train_seconds']} s, scoring "
        f"{res['score_seconds']} s, step {res['step']}.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
