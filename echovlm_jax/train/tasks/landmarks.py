"""config.task = "landmarks": EchoVLM's image tower and the dense decoder (models/dense.py)
with one heatmap per schema.LANDMARKS point, read out by a soft-argmax (models/dense.soft_argmax:
the softmax-weighted mean pixel, differentiable, sub-pixel) and trained with an L1 loss in
pixels on the points a frame has (the others are NaN and masked). Evaluated by
evaluation/landmarks.py: point error in px and mm, and PLAX's IVSd / LVIDd / LVPWd in mm.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.models import dense
from echovlm_jax.models import factory
from echovlm_jax.train.tasks import image_tower
from echovlm_jax.train.tasks import segmentation
from echovlm_jax.train.tasks.task import Task

NUM_POINTS = len(schema.LANDMARKS)


def _model(config, vocab_size: int) -> factory.Builder:
  del vocab_size
  return factory.dense_model(config.model, num_outputs=NUM_POINTS,
                             decoder_features=config.dense.decoder_features, seed=config.seed)


def init_params(params: nnx.State, config, init_checkpoint=None) -> nnx.State:
  return image_tower.init_image_tower(params, config, init_checkpoint, "dense.init_artifact")


def landmark_loss(heatmaps: jax.Array, points: jax.Array, weight: jax.Array
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """heatmaps [B, T, H, W, K], true points [B, T, K, 2] (NaN absent), weight [B] -> (mean L1
  distance in pixels over the present points inside the frame, terms). A point the crop cut
  off (outside [0, H) x [0, W)) is not asked for: a soft-argmax cannot reach it."""
  h, w = heatmaps.shape[2:4]
  pred = dense.soft_argmax(heatmaps)                                          # [B, T, K, 2]
  present = jnp.all(jnp.isfinite(points), axis=-1)
  inside = ((points[..., 0] >= 0) & (points[..., 0] <= h - 1) &
            (points[..., 1] >= 0) & (points[..., 1] <= w - 1))
  m = (present & inside).astype(jnp.float32) * weight[:, None, None]
  err = jnp.sum(jnp.abs(pred - jnp.nan_to_num(points)), axis=-1)         # [B, T, K]
  loss = jnp.sum(m * err) / jnp.maximum(jnp.sum(m), 1.0)
  return loss, {"l1_px": loss}


def _make_loss_fn(config, graphdef, mesh, train_iter) -> Callable:
  del config, mesh, train_iter

  def loss_fn(params, batch):
    heatmaps = nnx.merge(graphdef, params)(batch["frames"])
    loss, terms = landmark_loss(heatmaps, batch["landmarks"], batch["valid"] * batch["dense_truth"])
    return loss, (terms, None)
  return loss_fn


def _check_config(config) -> None:
  segmentation.check_dense_config(config)
  if config.evals:
    from echovlm_jax.evaluation import landmarks  # pylint: disable=g-import-not-at-top
    landmarks.check_evals_config(config.evals)


def _make_evaluator(config, mesh, tokenizer):
  del tokenizer
  from echovlm_jax.evaluation import landmarks  # pylint: disable=g-import-not-at-top
  return landmarks.Evaluator(config, mesh, segmentation.has_truth)


TASK = Task(name="landmarks", model=_model, init_params=init_params, keep=segmentation.keep_fn,
            make_loss_fn=_make_loss_fn, check_config=_check_config,
            make_evaluator=_make_evaluator, exports_artifact=True, batch_kind="dense")
