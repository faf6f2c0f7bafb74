r"""Landmark detection trained by the one trainer (config.task = "landmarks"): EchoVLM's image
tower and the dense decoder with one heatmap per schema.LANDMARKS point, read out by a
soft-argmax and trained with its L1 error in pixels plus a KL term pulling each heatmap
towards a Gaussian at the true point (docs/results.md measures this against L1 alone and a
direct-regression head); evaluated by the point error in px and mm and PLAX's IVSd / LVIDd /
LVPWd in mm on held-out patients. Everything else (data: ED + ES
pairs, tower sources, freezing, the labelled share) is configs/segmentation.py's.

  python -m echovlm_jax.main --config configs/landmarks.py --workdir RUN
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import echovlm
from configs import segmentation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = segmentation.get_config(arg)
  runlocal = common.parse_arg(arg, **dict(echovlm.ARG_SPEC, frames=2)).runlocal
  with c.unlocked():
    c.task = "landmarks"
    c.dense.heatmap_sigma = 2.0    # px at input.res: the Gaussian the heatmap is pulled towards
    c.dense.heatmap_weight = 1.0   # loss = soft-argmax L1 (px) + this x heatmap KL; 0 = L1 only
    c.dense.landmark_head = "heatmap"   # or "regression": points from the pooled tokens
                                        # (models/dense.PointRegressor; set heatmap_weight=0)
    c.evals = ml_collections.ConfigDict()
    # 2000 steps: the PLAX calipers reach their 1.5 mm target at 2000, not at 1000
    # (docs/results.md, "Landmarks").
    c.total_steps = 10 if runlocal else 2000
    every = 5 if runlocal else 250
    c.evals.validation_landmarks = dict(type="landmarks", split="validation", every=every)
    c.evals.test_landmarks = dict(type="landmarks", split="test", every=0)
  return c
