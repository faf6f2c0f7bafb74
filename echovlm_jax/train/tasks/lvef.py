"""config.task = "lvef": LVEF regressed from a clip (models/vit_regressor.py), EchoNet-Dynamic's
task: EchoVLM's image tower (a video tower when config.model.image.temporal="factorised")
and a linear head, initialised from an exported EchoVLM artifact, CLIP / SigLIP towers or
scratch, trained with an L1 loss on the z-scored LVEF of the views that show it, evaluated by
evaluation/lvef.py (MAE in EF points). It does not export as an artifact.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.models import factory
from echovlm_jax.train.tasks import image_tower
from echovlm_jax.train.tasks.task import Task

LVEF = schema.MEASUREMENTS.index("lvef")
# The views whose images show LVEF (schema: the LV in long axis, short axis or apical).
LVEF_VIEWS = tuple(v for v in schema.VIEWS if v != schema.UNKNOWN_VIEW
                   and "lvef" in schema.view_measurements(v))


def _model(config, vocab_size: int) -> factory.Builder:
  del vocab_size  # no text tower
  return factory.clip_regressor(config.model, seed=config.seed)


def init_params(params: nnx.State, config, init_checkpoint=None) -> nnx.State:
  """The image tower from config.lvef.init_artifact, config.model_init or scratch
  (image_tower.py); the head keeps its (zero) initialisation."""
  return image_tower.init_image_tower(params, config, init_checkpoint, "lvef.init_artifact")


def keep_fn(config) -> Callable:
  """The predicate the iterators read with: LVEF reported and the view shows it."""
  del config
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shows = tf.constant([v in LVEF_VIEWS for v in schema.VIEWS])

  def keep(ex):
    return tf.logical_and(tf.math.is_finite(ex["measurements"][LVEF]),
                          tf.gather(shows, tf.cast(ex["view"], tf.int32)))
  return keep


def make_loss_fn(graphdef) -> Callable:
  """loss_fn(params, batch) -> (loss, ({"mae_z": ()}, None)): mean absolute error of the
  prediction [B] against the z-scored LVEF over rows with valid > 0 and an LVEF the view
  shows (meas_mask)."""

  def loss_fn(params, batch):
    pred = nnx.merge(graphdef, params)(batch["frames"])                  # [B]
    w = batch["meas_mask"][:, LVEF] * batch["valid"]
    err = jnp.abs(pred - batch["measurements"][:, LVEF])
    loss = jnp.sum(w * err) / jnp.maximum(jnp.sum(w), 1e-6)
    return loss, ({}, None)
  return loss_fn


def _make_loss_fn(config, graphdef, mesh, train_iter) -> Callable:
  del config, mesh, train_iter  # per-example: under jit the mean is global on any sharding
  return make_loss_fn(graphdef)


def _check_config(config) -> None:
  from echovlm_jax.evaluation import lvef as lvef_eval  # pylint: disable=g-import-not-at-top
  lvef_eval.check_evals_config(config.evals)


def _make_evaluator(config, mesh, tokenizer):
  del tokenizer  # no text
  from echovlm_jax.evaluation import lvef as lvef_eval  # pylint: disable=g-import-not-at-top
  return lvef_eval.Evaluator(config, mesh, keep_fn(config))


TASK = Task(name="lvef", model=_model, init_params=init_params, keep=keep_fn,
            make_loss_fn=_make_loss_fn, check_config=_check_config,
            make_evaluator=_make_evaluator, exports_artifact=False)
