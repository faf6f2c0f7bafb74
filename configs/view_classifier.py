r"""A view classifier trained by the one trainer (config.task = "view_classifier"): EchoVLM's
image tower and a linear head, class-weighted cross-entropy over schema.KNOWN_VIEWS on the
examples whose view came from a trusted source, evaluated on held-out patients.

  python -m echovlm_jax.main --config configs/view_classifier.py:size=ti --workdir RUN \
      --config.input.builder_config=mimic --config.input.manual_dir=MIMIC \
      --config.view_classifier.init_artifact=artifacts/echovlm-ti      # optional

The arg string is configs/echovlm.py's (size, res, frames, runlocal, seed); everything else
(data, model sizes, mesh, sharding) is that config's, so a classifier and an EchoVLM trained
on the same data read the same dataset and share the tower's shapes.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import echovlm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = echovlm.get_config(arg)
  runlocal = common.parse_arg(arg, **echovlm.ARG_SPEC).runlocal
  with c.unlocked():
    c.task = "view_classifier"
    c.view_classifier = dict(
        # view_source values whose views the classifier learns from (schema.VIEW_SOURCES):
        # ECHOVIEW's cardiologist-reviewed labels and hand labels; "synthetic" for the
        # synthetic data. Never "classifier": it would learn its own mistakes.
        trusted_sources=["echoview", "view_csv", "synthetic"],
        # < 1: only this share of the patients (by a hash of the id) counts as labelled; the
        # benchmark (benchmarks/view_labelling.py) hides the views of the rest.
        labelled_patient_fraction=1.0,
        class_balance="balanced",   # "balanced": class-weighted loss (views are skewed); "none"
        init_artifact="",           # an exported EchoVLM (python -m echovlm_jax.tools.export); or
                                    # config.model_init (CLIP/SigLIP towers); "" = scratch
        confidence_threshold=0.9,   # the report's coverage / accuracy point (use the same as
                                    # input.mimic.view_predictions_min_prob when building)
    )
    c.model_init_skip = common.IMAGE_TOWER_ONLY
    # A linear head on a small tower: a larger lr than the contrastive run's, shorter schedule.
    c.total_steps = 10 if runlocal else 1000
    c.lr = 1e-3
    c.warmup_steps = 2 if runlocal else 50
    # The text side is unused: keep the pipeline's caption work small.
    c.input.caption_subsample = 0.0
    c.evals = ml_collections.ConfigDict()
    every = 5 if runlocal else 250
    c.evals.validation_views = dict(type="view_classification", split="validation", every=every)
    c.evals.test_views = dict(type="view_classification", split="test", every=0)
    c.report_targets = dict(synthetic=dict(view_classification=dict(accuracy=0.95)))
  return c
