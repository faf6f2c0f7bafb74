"""WORKDIR/config.json: the run's config as the trainer started it (after config.model_init's
architecture was applied), written by process 0 and read back by the tools that work on a
training workdir (export, view labelling).
"""

from __future__ import annotations

import json
import os

import ml_collections

from configs import echovlm

CONFIG_FILE = "config.json"


def write(config: ml_collections.ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json from config (values JSON cannot hold are written as strings)."""
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def load(workdir: str) -> ml_collections.ConfigDict:
  """The config a training workdir was run with; FileNotFoundError naming the fix. Keys added
  to configs/echovlm.py after the run started take their defaults (configs.echovlm.with_defaults),
  so an older workdir stays exportable."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: --workdir must be a training workdir "
                            "(python -m echovlm_jax.main ... --workdir DIR writes it).")
  with open(path) as f:
    return ml_collections.ConfigDict(echovlm.with_defaults(json.load(f)))
