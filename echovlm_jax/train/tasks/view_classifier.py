"""config.task = "view_classifier": EchoVLM's image tower and a linear head (models/vit_classifier.py)
initialised from an exported EchoVLM artifact, pretrained CLIP / SigLIP towers or scratch,
trained with class-weighted cross-entropy on the examples whose view came from a trusted
source, evaluated by evaluation/view_classification.py. Its predictions label views
(tools/label_views.py); it does not export as an artifact.
"""

from __future__ import annotations

import logging
from typing import Callable

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from echovlm_jax.models import factory
from echovlm_jax.models import vit_classifier
from echovlm_jax.train.tasks import image_tower
from echovlm_jax.train.tasks.task import Task

NUM_CLASSES = vit_classifier.NUM_CLASSES
CLASS_BALANCE = ("balanced", "none")


def _model(config, vocab_size: int) -> factory.Builder:
  del vocab_size  # no text tower
  return factory.view_classifier(config.model, seed=config.seed)


def init_params(params: nnx.State, config, init_checkpoint=None) -> nnx.State:
  """The image tower from config.view_classifier.init_artifact, config.model_init or scratch
  (image_tower.py); the head keeps its (zero) initialisation."""
  return image_tower.init_image_tower(params, config, init_checkpoint,
                                      "view_classifier.init_artifact")


# ----------------------------------------------------------------------------
# Data and loss
# ----------------------------------------------------------------------------
def keep_fn(config) -> Callable:
  """The predicate the train / eval iterators read with: a known view from a trusted source."""
  from echovlm_jax.data import labelled  # pylint: disable=g-import-not-at-top  (TensorFlow)
  vc = config.view_classifier
  return labelled.keep_labelled(tuple(vc.trusted_sources), float(vc.labelled_patient_fraction))


def check_class_balance(mode: str) -> None:
  """ValueError unless mode (config.view_classifier.class_balance) is one of CLASS_BALANCE."""
  if mode not in CLASS_BALANCE:
    raise ValueError(f"config.view_classifier.class_balance={mode!r}: expected one of "
                     f"{CLASS_BALANCE}.")


def class_weights(view_counts: np.ndarray, mode: str) -> np.ndarray:
  """float32 [NUM_CLASSES] from training examples by view id ([len(VIEWS)]): "balanced" gives
  each class present the same total weight (n / (classes present * n_c)), absent classes 0;
  "none" gives 1 everywhere."""
  check_class_balance(mode)
  counts = np.zeros(NUM_CLASSES, np.float64)
  for vid, k in enumerate(vit_classifier.known_index()):
    if k >= 0:
      counts[k] += view_counts[vid]
  if mode == "none":
    return np.ones(NUM_CLASSES, np.float32)
  present = counts > 0
  w = np.where(present, counts.sum() / (max(present.sum(), 1) * np.maximum(counts, 1)), 0.0)
  return w.astype(np.float32)


def make_loss_fn(graphdef, weights: np.ndarray) -> Callable:
  """loss_fn(params, batch) -> (loss, (terms, None)) for the trainer's step: class-weighted
  cross-entropy of frames [B, T, H, W, C] against view [B] (VIEWS ids), over rows with
  valid [B] > 0 and a known view; normalised by the batch's total weight. The None stands
  where the contrastive loss returns its temperature."""
  to_known = jnp.asarray(vit_classifier.known_index())
  w_class = jnp.asarray(weights, jnp.float32)

  def loss_fn(params, batch):
    logits = nnx.merge(graphdef, params)(batch["frames"])  # [B, V]
    y = to_known[batch["view"]]
    w = jnp.where(y >= 0, w_class[jnp.maximum(y, 0)], 0.0) * batch["valid"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
    loss = jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-6)
    return loss, ({}, None)
  return loss_fn


def _make_loss_fn(config, graphdef, mesh, train_iter) -> Callable:
  """The cross-entropy weighted by config.view_classifier.class_balance over the views the
  train iterator reads."""
  del mesh  # per-example: under jit the mean is global on any sharding
  weights = class_weights(train_iter.view_counts, config.view_classifier.class_balance)
  logging.info("View classifier: %d training examples; class weights %s.",
               int(train_iter.view_counts.sum()), np.round(weights, 3).tolist())
  return make_loss_fn(graphdef, weights)


def _check_config(config) -> None:
  check_class_balance(config.view_classifier.class_balance)
  if config.evals:
    from echovlm_jax.evaluation import view_classification  # pylint: disable=g-import-not-at-top
    view_classification.check_evals_config(config.evals)


def _make_evaluator(config, mesh, tokenizer):
  del tokenizer  # no text
  from echovlm_jax.evaluation import view_classification  # pylint: disable=g-import-not-at-top
  return view_classification.Evaluator(config, mesh, keep_fn(config))


TASK = Task(name="view_classifier", model=_model, init_params=init_params, keep=keep_fn,
            make_loss_fn=_make_loss_fn, check_config=_check_config,
            make_evaluator=_make_evaluator, exports_artifact=False)
