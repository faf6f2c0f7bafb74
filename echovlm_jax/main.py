"""Command line: parse flags, set up distribution, call the trainer or the evaluator.

  python -m echovlm_jax.main --config configs/echovlm.py[:ARG] --workdir DIR [--config.KEY=VALUE ...]
  python -m echovlm_jax.main --mode=evaluate --config ... --workdir DIR [--step N]

Errors a user can fix (an unknown config key, a bad value, a non-finite loss, a
missing checkpoint) end with one paragraph on stderr and exit code 1.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import re
import sys
from typing import Any, Sequence

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/echovlm.py:size=ti,runlocal.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the report go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                          "train (resumes if the workdir has checkpoints) or evaluate a checkpoint.")
_STEP = flags.DEFINE_integer("step", None, "With --mode=evaluate: the checkpoint step (default latest).")
flags.mark_flags_as_required(["config", "workdir"])

_OVERRIDE = re.compile(r"^--?config\.([A-Za-z0-9_.]+)(=.*)?$")


def fail(message: str) -> None:
  """Prints `message` as one paragraph on stderr and exits with code 1."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
  sys.exit(1)


def unknown_config_key(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str | None:
  """A message for the first `--config.a.b=...` of argv naming no field of `config`, else None."""
  for arg in argv[1:]:
    m = _OVERRIDE.match(arg)
    if not m:
      continue
    node: Any = config
    parts = m.group(1).split(".")
    for i, part in enumerate(parts):
      if isinstance(node, (ml_collections.ConfigDict, dict)) and part in node:
        node = node[part]
        continue
      parent = ".".join(["config", *parts[:i]])
      known = sorted(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
      close = difflib.get_close_matches(part, known, n=1)
      hint = (f"did you mean {parent}.{close[0]}?" if close else
              f"{parent} has: {', '.join(known)}." if known else f"{parent} is not a group.")
      return (f"Unknown config key in {arg.split('=')[0]}: {parent} has no field {part!r}; "
              f"{hint} The config is locked so that a typo fails here instead of being ignored.")
  return None


def _load_config_arg(argv: Sequence[str]) -> ml_collections.ConfigDict | None:
  """The config `--config FILE[:ARG]` of argv names, loaded without any override."""
  value = None
  for i, arg in enumerate(argv):
    if arg in ("--config", "-config") and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith(("--config=", "-config=")):
      value = arg.split("=", 1)[1]
  if value is None:
    return None
  path, _, config_arg = value.partition(":")
  spec = importlib.util.spec_from_file_location("_echovlm_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(config_arg) if config_arg else module.get_config()


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an unknown `--config.KEY` reported in one clear line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    # ml_collections raises AttributeError / KeyError (or absl an unknown-flag error) for an
    # override naming no field. Load the config alone to say which key and what was meant.
    message = None
    try:
      config = _load_config_arg(argv)
      message = unknown_config_key(config, argv) if config is not None else None
    except Exception as diag:  # pylint: disable=broad-except
      logging.debug("Could not load the config to diagnose the flags: %r", diag)
    fail(message or (str(e) if isinstance(e, flags.Error) else f"Bad --config override: {e!r}."))
  return []  # unreachable: fail() exits


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TF is only the input pipeline here: keep it quiet and off accelerators (before clu's
  # summary writer initialises its devices).
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from echovlm_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  input_pipeline.keep_tf_off_accelerators()

  from echovlm_jax import distributed  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import loop  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import run_config  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train.step import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  distributed.maybe_initialize()
  logging.getLogger().setLevel(logging.INFO)

  try:
    if _MODE.value == "train":
      loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      from echovlm_jax.train import evaluate  # pylint: disable=g-import-not-at-top
      evaluate.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, step=_STEP.value)
  except NonFiniteLossError as e:
    fail(f"Training stopped: {e}")
  except (run_config.ConfigError, FileNotFoundError) as e:
    fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
