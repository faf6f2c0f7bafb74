"""Start-up checks shared by training and standalone evaluation: the mesh of config.mesh,
config.model_init's architecture (read once), and the config values a run would only trip over
later (config.task's included), as ConfigErrors that name the key and the fix.
"""

from __future__ import annotations

import jax
import ml_collections

from echovlm_jax import distributed
from echovlm_jax import sharding
from echovlm_jax.train import tasks
from echovlm_jax.train import weight_decay


# What a training image of unknown view is paired with (data/caption_augment.py).
UNKNOWN_VIEW_TEXTS = ("sentence", "report")


class ConfigError(ValueError):
  """A config value the trainer cannot run with; the message names the key and the fix."""


def create_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The (data, fsdp, tensor) mesh of config.mesh; a bad shape is a ConfigError."""
  try:
    return distributed.create_mesh(config.mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def validate_config(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Fails at start (ConfigError) on values the loop would only trip over later."""
  for key in ("total_steps", "batch_size", "log_every", "ckpt_every", "grad_accum_steps"):
    if int(config[key]) < 1:
      raise ConfigError(f"config.{key}={config[key]}: must be >= 1.")
  if int(config.input.image_size) < int(config.input.res):
    raise ConfigError(
        f"config.input.image_size={config.input.image_size} < config.input.res="
        f"{config.input.res}: the dataset stores frames at image_size and the pipeline crops "
        f"and resizes them to res, so the model would see upsampled frames. Set "
        f"--config.input.image_size={config.input.res} too (the config arg res=N sets both).")
  # lazily: the evaluators' sklearn / matplotlib cost start-up time
  from echovlm_jax.evaluation import registry  # pylint: disable=g-import-not-at-top
  try:
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size",
                              int(config.grad_accum_steps))
    sharding.check_batch_size(registry.eval_batch_size(config), mesh, "config.eval_batch_size")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if config.debug_nan_target not in ("frames", "grads"):
    raise ConfigError(f"config.debug_nan_target={config.debug_nan_target!r}: expected 'frames' "
                      "(NaN inputs) or 'grads' (a NaN gradient with a finite loss).")
  try:
    weight_decay.parse_kinds(config.wd_kinds)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  check_model_init_format(config)
  text = config.input.unknown_view_text
  if text not in UNKNOWN_VIEW_TEXTS:
    raise ConfigError(f"config.input.unknown_view_text={text!r}: expected one of "
                      f"{UNKNOWN_VIEW_TEXTS} (docs/design.md, 'Captions').")
  try:  # the task's own keys (config.loss, config.view_classifier) and evaluators
    tasks.from_config(config).check_config(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def check_model_init_format(config: ml_collections.ConfigDict) -> None:
  """config.model_init_format is one interop reads (a typo would be read as another layout)."""
  from echovlm_jax.interop import init_from_checkpoint  # noqa: PLC0415 - jax / flax only when asked
  try:
    init_from_checkpoint.check_format(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def configure_from_checkpoint(config: ml_collections.ConfigDict):
  """(config, checkpoint): with config.model_init, config.model made the checkpoint's
  (architecture, text length, tokenizer) and the checkpoint as read, so the trainer reads it
  once; else (config, None)."""
  if not config.model_init:
    return config, None
  check_model_init_format(config)
  from echovlm_jax.interop import init_from_checkpoint  # noqa: PLC0415 - jax / flax only when asked
  checkpoint = init_from_checkpoint.read(config.model_init)
  return init_from_checkpoint.configure(config, checkpoint), checkpoint
