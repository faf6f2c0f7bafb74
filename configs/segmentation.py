r"""Chamber segmentation trained by the one trainer (config.task = "segmentation"): EchoVLM's
image tower and a light decoder (models/dense.py), cross-entropy + soft Dice over
schema.STRUCTURES on the synthetic frames at end-diastole and end-systole, evaluated by Dice,
HD95 and mean surface distance per structure on held-out patients.

  python -m echovlm_jax.main --config configs/segmentation.py --workdir RUN
  python -m echovlm_jax.main --config configs/segmentation.py --workdir RUN \
      --config.dense.init_artifact=artifacts/echovlm-ti     # from an exported EchoVLM
  ... --config.lr_mult.image=0                              # frozen tower (probe-style)

The arg string is configs/echovlm.py's (size, res, runlocal, seed); frames is 2 here: each
example is an ED and an ES frame of one view (input.frames_at="ed_es", as CAMUS's pairs).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import echovlm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, **dict(echovlm.ARG_SPEC, frames=2))
  if a.frames != 2:
    raise ValueError(f"configs/segmentation.py:frames={a.frames}: each example is an ED and an "
                     "ES frame; leave frames out (it is 2).")
  c = echovlm.get_config(f"size={a.size},res={a.res},frames=2,objective={a.objective},"
                         f"seed={a.seed}" + (",runlocal" if a.runlocal else ""))
  runlocal = a.runlocal
  with c.unlocked():
    c.task = "segmentation"
    c.input.frames_at = "ed_es"
    # The decoders read each frame's patch tokens: an ED / ES pair is two images, not a clip,
    # and a temporal encoder would be parameters no loss reaches.
    c.model.image.temporal = "mean"
    c.dense = dict(
        init_artifact="",          # an exported EchoVLM (python -m echovlm_jax.tools.export); or
                                   # config.model_init (CLIP/SigLIP towers); "" = scratch
        decoder_features=32,       # the decoder's channels (models/dense.py)
        dice_weight=1.0,           # loss = cross-entropy + dice_weight x (1 - soft Dice)
        labelled_patient_fraction=1.0,  # < 1: train on this share of the patients' masks
                                        # (by a hash of the id); evaluation reads all held-out
    )
    c.model_init_skip = common.IMAGE_TOWER_ONLY
    c.total_steps = 10 if runlocal else 1000
    c.batch_size = 8 if runlocal else 16
    c.lr = 5e-4
    c.warmup_steps = 2 if runlocal else 50
    c.input.caption_subsample = 0.0
    c.evals = ml_collections.ConfigDict()
    every = 5 if runlocal else 250
    c.evals.validation_segmentation = dict(type="segmentation", split="validation", every=every)
    c.evals.test_segmentation = dict(type="segmentation", split="test", every=0)
  return c
