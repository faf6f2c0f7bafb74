r"""EchoNet-Dynamic's task, LVEF from an apical four-chamber video, with EchoVLM's video tower
(configs/lvef.py's task on the `echonet_dynamic` builder config read as clips).

  python -m echovlm_jax.main --config configs/echonet_ef.py --workdir RUN \
      --config.input.manual_dir=/data/EchoNet-Dynamic         # FileList.csv, Videos/, ...
  ... --config.lvef.init_artifact=artifacts/echovlm-ti         # from an exported EchoVLM

The first run builds the dataset from manual_dir (10,030 videos: each read once, 16 frames
kept) and trains on FileList's TRAIN split; evaluation reads VAL and TEST. Each clip holds
16 frames at 12.5 frames per second, 1.28 s, the span of EchoNet-Dynamic's 32 frames at a
period of 2 from its ~50 frames per second videos, at 112 x 112 as the release stores them.
Compare the test MAE with EchoNet-Dynamic's 4.1 points (R(2+1)D, one clip; 4.05 with all
beats averaged; Ouyang et al., Nature 2020). The arg string is configs/lvef.py's.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import lvef

ARG_SPEC = dict(lvef.ARG_SPEC, frames=16, res=112, size="s")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, **ARG_SPEC)
  c = lvef.get_config(",".join(f"{k}={v}" for k, v in a.items() if k != "runlocal")
                      + (",runlocal" if a.runlocal else ""))
  with c.unlocked():
    c.input.builder_config = "echonet_dynamic"
    c.input.frames_at = "cycle"        # clips, not the ED / ES pairs of configs/segmentation.py
    c.input.clip_fps = 12.5
    c.input.image_size = a.res
    c.input.num_shards = 16
    if not a.runlocal:
      c.total_steps = 20000           # ~45 epochs of 7,465 training videos at batch 16
      c.batch_size = 16
      c.lr = 1e-4
      c.warmup_steps = 500
      c.evals.validation_lvef.every = 2000
  return c
