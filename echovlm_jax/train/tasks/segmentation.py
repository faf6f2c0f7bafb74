"""config.task = "segmentation": EchoVLM's image tower and a light decoder (models/dense.py)
initialised from an exported EchoVLM artifact, CLIP / SigLIP towers or scratch, trained with
cross-entropy + soft Dice on the frames with ground truth (schema.STRUCTURES), evaluated by
evaluation/segmentation.py. `--config.lr_mult.image=0` freezes the tower (a linear-probe style
evaluation of its features, ETAB's protocol); the default fine-tunes it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.models import factory
from echovlm_jax.train.tasks import image_tower
from echovlm_jax.train.tasks.task import Task

NUM_CLASSES = len(schema.STRUCTURES)
DICE_EPS = 1.0   # pixels: keeps the Dice of a structure absent from the batch finite


def _model(config, vocab_size: int) -> factory.Builder:
  del vocab_size  # no text tower
  return factory.dense_model(config.model, num_outputs=NUM_CLASSES,
                             decoder_features=config.dense.decoder_features, seed=config.seed)


def init_params(params: nnx.State, config, init_checkpoint=None) -> nnx.State:
  """The image tower from config.dense.init_artifact, config.model_init or scratch; the
  decoder keeps its initialisation."""
  return image_tower.init_image_tower(params, config, init_checkpoint, "dense.init_artifact")


def has_truth(ex):
  """tf predicate: the example's frames have ground truth (the renderer's B-mode frames)."""
  return ex["dense_truth"]


def keep_fn(config) -> Callable:
  """What training reads: the frames with ground truth, of config.dense.labelled_patient_fraction
  of the patients (by a hash of the id: the label-efficiency benchmark's 1 % / 10 %).
  Evaluation reads every held-out frame with truth (has_truth)."""
  fraction = float(config.dense.labelled_patient_fraction)
  if fraction >= 1.0:
    return has_truth
  from echovlm_jax.data import labelled  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return lambda ex: has_truth(ex) & labelled.in_patient_share(ex["patient_id"], fraction)


def segmentation_loss(logits: jax.Array, masks: jax.Array, weight: jax.Array,
                      dice_weight: float, labelled: jax.Array | None = None
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """logits float32 [B, T, H, W, C], masks int32 [B, T, H, W], weight [B] (valid rows),
  labelled [B, C] (1 where the row's source labels structure c; None: all) ->
  (cross-entropy + dice_weight x (1 - mean soft Dice), terms).

  Cross-entropy is the mean over the weighted rows' pixels. A background pixel of a source
  that does not label every structure (EchoNet-Dynamic labels the LV only) may be any
  unlabelled one: its term is -log of the summed probability of background and the
  unlabelled structures (partial-label cross-entropy; with every structure labelled it is
  the plain cross-entropy). The soft Dice is nnU-Net's batch Dice: per foreground structure,
  sums over the weighted pixels of the rows that label it, so a structure absent from one
  frame does not count as a perfect or a failed match there; averaged over the structures
  some row labels, each kept finite by DICE_EPS.
  """
  if labelled is None:
    labelled = jnp.ones((logits.shape[0], NUM_CLASSES), logits.dtype)
  w = weight[:, None, None, None]                                     # [B, 1, 1, 1]
  onehot = jax.nn.one_hot(masks, NUM_CLASSES, dtype=logits.dtype)     # [B, T, H, W, C]
  unlabelled = (1.0 - labelled)[:, None, None, None, :]
  allowed = jnp.maximum(onehot, onehot[..., :1] * unlabelled) > 0     # label 0: any unlabelled
  ce = (jax.nn.logsumexp(logits, axis=-1)
        - jax.nn.logsumexp(jnp.where(allowed, logits, -jnp.inf), axis=-1))  # [B, T, H, W]
  n_pix = jnp.maximum(jnp.sum(w * jnp.ones_like(ce)), 1.0)
  ce = jnp.sum(w * ce) / n_pix
  probs = jax.nn.softmax(logits, axis=-1)[..., 1:]                     # foreground
  ww = w[..., None] * labelled[:, None, None, None, 1:]                # [B, 1, 1, 1, C-1]
  inter = jnp.sum(ww * probs * onehot[..., 1:], axis=(0, 1, 2, 3))    # [C-1]
  total = jnp.sum(ww * (probs + onehot[..., 1:]), axis=(0, 1, 2, 3))
  dice = (2.0 * inter + DICE_EPS) / (total + DICE_EPS)
  scored = (jnp.sum(weight[:, None] * labelled[:, 1:], axis=0) > 0).astype(dice.dtype)  # [C-1]
  soft_dice = jnp.sum(dice * scored) / jnp.maximum(jnp.sum(scored), 1.0)
  return ce + dice_weight * (1.0 - soft_dice), {"ce": ce, "soft_dice": soft_dice}


def _make_loss_fn(config, graphdef, mesh, train_iter) -> Callable:
  del mesh, train_iter  # per-pixel terms: under jit the sums are global on any sharding
  dice_weight = float(config.dense.dice_weight)

  def loss_fn(params, batch):
    logits = nnx.merge(graphdef, params)(batch["frames"])
    loss, terms = segmentation_loss(logits, batch["masks"], batch["valid"] * batch["dense_truth"],
                                    dice_weight, batch["labelled"])
    return loss, (terms, None)
  return loss_fn


def check_dense_config(config) -> None:
  """What both dense tasks need of config.dense and config.input; ValueError naming the key."""
  if "dense" not in config:
    raise ValueError(f"config.task={config.task!r} reads config.dense, which this config lacks: "
                     f"start from configs/{'segmentation' if config.task == 'segmentation' else 'landmarks'}.py.")
  if config.dense.dice_weight < 0:
    raise ValueError(f"config.dense.dice_weight={config.dense.dice_weight}: expected >= 0.")
  if config.dense.decoder_features < 1:
    raise ValueError(f"config.dense.decoder_features={config.dense.decoder_features}: expected >= 1.")
  if not 0.0 < config.dense.labelled_patient_fraction <= 1.0:
    raise ValueError(f"config.dense.labelled_patient_fraction={config.dense.labelled_patient_fraction}: "
                     "expected a share in (0, 1].")
  if config.input.builder_config not in ("synthetic", *schema.DENSE_RELEASES):
    raise ValueError(f"config.input.builder_config={config.input.builder_config!r}: the dense "
                     "tasks need masks and points: the synthetic build or one of "
                     f"{schema.DENSE_RELEASES} (docs/dense_datasets.md).")


def _check_config(config) -> None:
  check_dense_config(config)
  if config.evals:
    from echovlm_jax.evaluation import segmentation  # pylint: disable=g-import-not-at-top
    segmentation.check_evals_config(config.evals)


def _make_evaluator(config, mesh, tokenizer):
  del tokenizer  # no text
  from echovlm_jax.evaluation import segmentation  # pylint: disable=g-import-not-at-top
  return segmentation.Evaluator(config, mesh, has_truth)


TASK = Task(name="segmentation", model=_model, init_params=init_params, keep=keep_fn,
            make_loss_fn=_make_loss_fn, check_config=_check_config,
            make_evaluator=_make_evaluator, exports_artifact=True, batch_kind="dense")
