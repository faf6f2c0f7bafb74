"""Command line: parse flags, set up distribution, call the trainer.

  python -m echovlm_jax.main --config configs/echovlm.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
"""

from __future__ import annotations

import logging
import os

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/echovlm.py:size=ti,runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the report go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                          "train (resumes if the workdir has checkpoints) or evaluate a checkpoint.")
_STEP = flags.DEFINE_integer("step", None, "With --mode=evaluate: the checkpoint step (default latest).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TF is only the input pipeline here: keep it off accelerators and quiet.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")

  from echovlm_jax import distributed
  distributed.maybe_initialize()
  logging.getLogger().setLevel(logging.INFO)

  if _MODE.value == "train":
    from echovlm_jax import train
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  else:
    from echovlm_jax.evaluation import standalone
    standalone.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, step=_STEP.value)


if __name__ == "__main__":
  app.run(main)
