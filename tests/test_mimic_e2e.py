"""End to end on a MIMIC-IV-ECHO v1.0-layout tree: the built dataset trains with the full
EchoVLM objective (every term finite and non-zero) and evaluates with defined view and finding
metrics. Before the v1.0 reader every view was unknown and the same run became CLIP over a few
identical sentences with NaN evaluations."""

import json
import math
import os

import pytest

from echovlm_jax.train import loop
from tests import train_tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]
TERMS = ("contrastive", "view", "negation", "meas", "meas_text")


def test_train_and_evaluate_on_the_release_layout(release_tree, release_dataset, tmp_path):
  ic, _ = release_dataset
  config = train_tiny_config.get_config("size=ti,res=32,frames=1,objective=echovlm")
  for k in ("builder_config", "manual_dir", "data_dir", "num_frames", "image_size", "num_shards"):
    config.input[k] = ic[k]
  config.total_steps = 6
  with config.unlocked():
    # The tree's 8 patients give the test split one patient; the evaluators run on the train
    # split, where both classes of several labels occur.
    config.evals.train_views = dict(type="zero_shot_views", split="train", every=0)
    config.evals.train_findings = dict(type="zero_shot_findings", split="train", every=0)
  loop.train_and_evaluate(config, str(tmp_path))
  records = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
  for term in TERMS:
    values = [r[f"train/loss/{term}"] for r in records if f"train/loss/{term}" in r]
    assert len(values) == 6 and all(math.isfinite(v) for v in values), term
    assert max(values) > 0, term
  final = {k: v for r in records for k, v in r.items()}
  for key in ("train/zero_shot_views/accuracy", "train/zero_shot_findings/macro_auc"):
    assert key in final and math.isfinite(final[key]), (key, sorted(final))
  # No header PHI in anything the run wrote: checkpoints, metrics, events, the report.
  phi = [p.encode().lower() for p in release_tree["phi_strings"]]
  for dirpath, _, files in os.walk(tmp_path):
    for f in files:
      blob = open(os.path.join(dirpath, f), "rb").read().lower()
      assert not any(p in blob for p in phi), f
