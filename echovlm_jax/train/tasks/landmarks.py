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
                             decoder_features=config.dense.decoder_features, seed=config.seed,
                             head=config.dense.get("landmark_head", "heatmap"))


def init_params(params: nnx.State, config, init_checkpoint=None) -> nnx.State:
  return image_tower.init_image_tower(params, config, init_checkpoint, "dense.init_artifact")


def gaussian_targets(points: jax.Array, h: int, w: int, sigma: float) -> jax.Array:
  """points [B, T, K, 2] (row, col px; NaN absent) -> target maps [B, T, H, W, K], each a
  Gaussian of `sigma` px at its point, normalised to sum 1 (absent points: anything finite)."""
  p = jnp.nan_to_num(points)
  dr = jnp.arange(h, dtype=jnp.float32)[:, None, None] - p[..., None, None, :, 0]  # [B, T, H, 1, K]
  dc = jnp.arange(w, dtype=jnp.float32)[None, :, None] - p[..., None, None, :, 1]  # [B, T, 1, W, K]
  logits = -(dr ** 2 + dc ** 2) / (2.0 * sigma ** 2)                          # [B, T, H, W, K]
  return jax.nn.softmax(logits.reshape(*logits.shape[:2], h * w, -1), axis=2).reshape(logits.shape)


def landmark_loss(heatmaps: jax.Array, points: jax.Array, weight: jax.Array,
                  heatmap_sigma: float = 0.0, heatmap_weight: float = 0.0,
                  frame_hw: tuple[int, int] | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """heatmaps [B, T, H, W, K] (or a regressor's points [B, T, K, 2], with frame_hw = (H, W)),
  true points [B, T, K, 2] (NaN absent), weight [B] -> (loss, terms), over the present points
  inside the frame. A point the crop cut off (outside [0, H) x [0, W)) is not asked for: a
  soft-argmax cannot reach it (nor, for the comparison to be fair, is a regressor asked).

  loss = mean L1 distance (px) of the soft-argmax point + heatmap_weight x the mean KL
  divergence from a Gaussian of heatmap_sigma px at the true point to the heatmap's softmax
  (0 weight: soft-argmax L1 alone). The L1 is what is measured; the heatmap term gives every
  pixel a gradient from the first step, where the L1's is spread thin over a flat map (the
  heatmap-plus-integral-regression recipe of pose estimation).
  """
  if heatmaps.ndim == 4:           # a regressor's points (dense.PointRegressor): no heatmap
    return _point_l1(heatmaps, points, weight, *frame_hw)
  b, t, h, w, k = heatmaps.shape
  l1, terms, m, n = _point_l1(dense.soft_argmax(heatmaps), points, weight, h, w, parts=True)
  if heatmap_weight <= 0.0:
    return l1, terms
  target = gaussian_targets(points, h, w, heatmap_sigma)
  logp = jax.nn.log_softmax(heatmaps.reshape(b, t, h * w, k), axis=2).reshape(heatmaps.shape)
  kl = jnp.sum(target * (jnp.log(jnp.maximum(target, 1e-30)) - logp), axis=(2, 3))  # [B, T, K]
  terms["heatmap_kl"] = jnp.sum(m * kl) / n
  return l1 + heatmap_weight * terms["heatmap_kl"], terms


def _point_l1(pred: jax.Array, points: jax.Array, weight: jax.Array, h: int, w: int,
              parts: bool = False):
  """Mean L1 (px) of predicted points [B, T, K, 2] over the present points inside an h x w
  frame -> (loss, terms), and with parts also the mask [B, T, K] and its count."""
  present = jnp.all(jnp.isfinite(points), axis=-1)
  inside = ((points[..., 0] >= 0) & (points[..., 0] <= h - 1) &
            (points[..., 1] >= 0) & (points[..., 1] <= w - 1))
  m = (present & inside).astype(jnp.float32) * weight[:, None, None]        # [B, T, K]
  n = jnp.maximum(jnp.sum(m), 1.0)
  err = jnp.sum(jnp.abs(pred - jnp.nan_to_num(points)), axis=-1)         # [B, T, K]
  l1 = jnp.sum(m * err) / n
  return (l1, {"l1_px": l1}, m, n) if parts else (l1, {"l1_px": l1})


def _make_loss_fn(config, graphdef, mesh, train_iter) -> Callable:
  del mesh, train_iter
  sigma = float(config.dense.get("heatmap_sigma", 0.0))
  weight = float(config.dense.get("heatmap_weight", 0.0))

  def loss_fn(params, batch):
    heatmaps = nnx.merge(graphdef, params)(batch["frames"])
    loss, terms = landmark_loss(heatmaps, batch["landmarks"], batch["valid"] * batch["dense_truth"],
                                sigma, weight, batch["frames"].shape[2:4])
    return loss, (terms, None)
  return loss_fn


def _check_config(config) -> None:
  segmentation.check_dense_config(config)
  d = config.dense
  if d.get("landmark_head", "heatmap") not in ("heatmap", "regression"):
    raise ValueError(f"config.dense.landmark_head={d.landmark_head!r}: expected 'heatmap' or "
                     "'regression'.")
  if d.get("landmark_head", "heatmap") == "regression" and d.get("heatmap_weight", 0.0) > 0:
    raise ValueError("config.dense.landmark_head='regression' has no heatmap: set "
                     "config.dense.heatmap_weight=0.")
  if d.get("heatmap_weight", 0.0) < 0 or (d.get("heatmap_weight", 0.0) > 0
                                          and not d.get("heatmap_sigma", 0.0) > 0):
    raise ValueError(f"config.dense.heatmap_weight={d.get('heatmap_weight')}, heatmap_sigma="
                     f"{d.get('heatmap_sigma')}: expected weight >= 0, and sigma > 0 (px) "
                     "with a positive weight.")
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
