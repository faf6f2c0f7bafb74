r"""LVEF from a cine (config.task = "lvef"): EchoVLM's image tower as a video tower (frames
through the spatial ViT, then a transformer over time) and a linear head, trained with an L1
loss on the LVEF of the views that show it, evaluated by MAE in EF points on held-out patients.

  python -m echovlm_jax.main --config configs/lvef.py --workdir RUN
  python -m echovlm_jax.main --config configs/lvef.py:temporal=mean --workdir RUN  # frame average
  ... --config.lvef.init_artifact=artifacts/echovlm-ti    # the tower of an exported EchoVLM

The arg string is configs/echovlm.py's; frames defaults to 8 here, at 8 frames per second
(one second: a whole cycle at 60 bpm and above), and res to 64 so that a clip costs about two
of the demo's frames on a CPU. Synthetic clips have no M-mode strip: the heart's motion is the
only way to LVEF. benchmarks/lvef_from_motion.py runs the video tower against the frame
average (docs/results.md).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import echovlm

ARG_SPEC = dict(echovlm.ARG_SPEC, frames=8, res=64)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, **ARG_SPEC)
  c = echovlm.get_config(",".join(f"{k}={v}" for k, v in a.items() if k != "runlocal")
                         + (",runlocal" if a.runlocal else ""))
  with c.unlocked():
    c.task = "lvef"
    c.input.clip_fps = 8.0
    c.input.image_size = a.res     # stored at the model's size: 8 frames per example to decode
    c.lvef = dict(
        init_artifact="",          # an exported EchoVLM (python -m echovlm_jax.tools.export); or
                                   # config.model_init (CLIP/SigLIP towers); "" = scratch
    )
    c.model_init_skip = common.IMAGE_TOWER_ONLY
    c.total_steps = 10 if a.runlocal else 1500
    c.batch_size = 16 if a.runlocal else 32
    c.lr = 5e-4
    c.warmup_steps = 2 if a.runlocal else 100
    # The text side is unused: keep the pipeline's caption work small.
    c.input.caption_subsample = 0.0
    c.evals = ml_collections.ConfigDict()
    every = 5 if a.runlocal else 500
    c.evals.validation_lvef = dict(type="lvef_regression", split="validation", every=every)
    c.evals.test_lvef = dict(type="lvef_regression", split="test", every=0)
  return c
