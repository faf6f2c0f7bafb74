"""The report: report.md, metrics.json and readable, non-empty PNG plots from synthetic results."""

import json
import os

import numpy as np
from PIL import Image

from echovlm_jax import scoring
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import probes, report, retrieval, zero_shot


def _synthetic_embeddings(rng, n=240, d=16):
  """Embeddings that carry some view / label signal, so plots have non-trivial content."""
  view = rng.integers(0, len(schema.VIEWS), size=n)
  labels = rng.integers(-1, 2, size=(n, len(schema.LABELS)))
  image = rng.normal(size=(n, d)).astype(np.float32)
  image[np.arange(n), view % d] += 2.5
  image[:, 0] += 1.5 * (labels[:, 0] == 1)
  text = image + rng.normal(scale=0.5, size=(n, d)).astype(np.float32)
  meas = rng.normal(size=(n, len(schema.MEASUREMENTS))).astype(np.float32)
  return dict(image_emb=scoring.l2_normalize(image), text_emb=scoring.l2_normalize(text),
              neg_text_emb=scoring.l2_normalize(rng.normal(size=(n, d))), view=view,
              labels=labels, measurements=meas, meas_mask=(rng.random(meas.shape) < 0.5) * 1.0,
              has_negation=(rng.random(n) < 0.7) * 1.0, study_id=rng.integers(0, 40, size=n),
              caption_id=rng.integers(0, 60, size=n))


def synthetic_results(seed=0):
  rng = np.random.default_rng(seed)
  test, train = _synthetic_embeddings(rng), _synthetic_embeddings(rng)
  d = test["image_emb"].shape[1]
  views = scoring.l2_normalize(np.eye(d)[np.arange(len(schema.KNOWN_VIEWS)) % d])
  pos = scoring.l2_normalize(np.eye(d)[[0] * len(schema.LABELS)] + 0.1)
  neg = scoring.l2_normalize(np.eye(d)[[1] * len(schema.LABELS)])
  res = {
      "zero_shot_views": zero_shot.zero_shot_views(test, views),
      "zero_shot_findings": zero_shot.zero_shot_findings(test, pos, neg),
      "retrieval": retrieval.retrieval(test),
      "negation": retrieval.negation(test),
      "probes": dict(views=probes.view_probe(train, test), labels=probes.label_probes(train, test),
                     measurements=probes.measurement_probes(
                         train, test, np.full(len(schema.MEASUREMENTS), 2.0))),
  }
  return {name: dict(type=name, split="test", step=100, metrics={f"test/{name}/x": 0.5}, **r)
          for name, r in res.items()}


def _history():
  out = []
  for step in range(10, 110, 10):
    out.append({"step": step, "train/loss": 5.0 / step ** 0.3, "train/loss/clip": 4.0 / step ** 0.3,
                "train/loss/negation": 0.7 - step / 1000, "train/loss/meas": 1.0 / step,
                "train/lr": 1e-3, "train/steps_per_s": 2.0})
    if step % 50 == 0:
      out.append({"step": step, "val/zero_shot_views/accuracy": step / 200,
                  "val/negation/sensitivity": 0.5 + step / 400})
  return out


def _check_png(path, min_side=300, max_side=4000):
  assert os.path.getsize(path) > 5000, path
  with Image.open(path) as im:
    w, h = im.size
    assert min_side <= w <= max_side and min_side <= h <= max_side, (path, im.size)
    px = np.asarray(im.convert("L"), np.float32)
  assert px.std() > 5, f"{path} looks blank"


def test_report_writes_markdown_json_and_plots(tmp_path):
  results = synthetic_results()
  path = report.write_report(str(tmp_path), results, _history())
  assert path == str(tmp_path / "report.md")
  md = open(path).read()
  for needle in ("Not a medical device", "How to read this", "apical four-chamber view",
                 "aortic stenosis", "R@1", "Negation sensitivity", "mL/m²",
                 "left ventricular ejection fraction", "confusion_test.png", "roc_test.png",
                 "training_curves.png"):
    assert needle in md, needle
  data = json.load(open(tmp_path / "metrics.json"))
  assert data["metrics"]["test/retrieval/x"] == 0.5
  assert len(data["evals"]["zero_shot_views"]["confusion"]) == len(schema.KNOWN_VIEWS)
  for name in ("confusion_test.png", "roc_test.png", "training_curves.png", "eval_curves.png"):
    _check_png(tmp_path / "report" / name)


def test_training_curves_cover_every_loss_term_but_not_throughput():
  keys = report.training_curve_keys(_history())
  assert keys[0] == "train/loss"
  assert set(keys) == {"train/loss", "train/loss/clip", "train/loss/negation", "train/loss/meas"}


def _summary(md: str) -> list[str]:
  start = md.index("## Summary")
  return [l for l in md[start:md.index("\n## ", start + 1)].splitlines() if l.startswith("|")]


def test_targets_come_from_the_config_and_only_for_its_data(tmp_path):
  from configs import echovlm  # pylint: disable=g-import-not-at-top
  config = echovlm.get_config()
  targets = report.config_targets(config)
  assert targets == {"zero_shot_views/accuracy": 0.95, "zero_shot_findings/macro_auc": 0.90,
                     "negation/sensitivity": 0.90}
  results = synthetic_results()
  views_acc = results["zero_shot_views"]["accuracy"]
  md = open(report.write_report(str(tmp_path / "syn"), results, _history(), targets=targets)).read()
  rows = _summary(md)
  assert rows[0] == "| metric | split | value | target |"
  views = next(r for r in rows if r.startswith("| zero-shot view accuracy"))
  assert views.endswith(f">= 0.95 {'(met)' if views_acc >= 0.95 else '(not met)'} |"), views
  # A MIMIC run: the synthetic targets do not apply, so there is no targets column at all.
  config.input.builder_config = "mimic"
  assert report.config_targets(config) == {}
  md = open(report.write_report(str(tmp_path / "mimic"), results, _history(),
                                targets=report.config_targets(config))).read()
  rows = _summary(md)
  assert rows[0] == "| metric | split | value |" and not any("met)" in r for r in rows)
  assert len(rows) == 2 + 3  # header, rule, the three headline metrics
