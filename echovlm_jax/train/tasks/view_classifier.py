"""config.task = "view_classifier": EchoVLM's image tower and a linear head (models/vit_classifier.py)
initialised from an exported EchoVLM artifact, pretrained CLIP / SigLIP towers or scratch,
trained with class-weighted cross-entropy on the examples whose view came from a trusted
source, evaluated by evaluation/view_classification.py. Its predictions label views
(tools/label_views.py); it does not export as an artifact.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from echovlm_jax.models import factory
from echovlm_jax.models import vit_classifier
from echovlm_jax.train.tasks.task import Task

NUM_CLASSES = vit_classifier.NUM_CLASSES
CLASS_BALANCE = ("balanced", "none")


def _model(config, vocab_size: int) -> factory.Builder:
  del vocab_size  # no text tower
  return factory.view_classifier(config.model, seed=config.seed)


# ----------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------
def _put_like(value: Any, old: Any) -> Any:
  value = np.asarray(value).astype(old.dtype)
  if isinstance(old, jax.Array):
    return jax.make_array_from_callback(value.shape, old.sharding, lambda idx: value[idx])
  return value


def tower_from_artifact(params: nnx.State, path: str) -> nnx.State:
  """params with the image tower of an exported EchoVLM artifact (python -m
  echovlm_jax.tools.export); the head keeps its (zero) initialisation. ValueError lists every
  parameter that does not fit."""
  from echovlm_jax.inference import artifact  # pylint: disable=g-import-not-at-top
  art_config = artifact.verify_artifact(path)
  source = nnx.to_pure_dict(nnx.state(artifact.restore_model(path, art_config).image, nnx.Param))
  pure = nnx.to_pure_dict(params)
  ours = pure["image"]
  src_flat = dict(jax.tree_util.tree_leaves_with_path(source))
  our_flat = dict(jax.tree_util.tree_leaves_with_path(ours))
  problems = [f"{jax.tree_util.keystr(k)}: ours {our_flat[k].shape}, artifact "
              f"{np.shape(src_flat[k]) if k in src_flat else 'missing'}"
              for k in our_flat if k not in src_flat or np.shape(src_flat[k]) != our_flat[k].shape]
  if problems:
    raise ValueError(f"config.view_classifier.init_artifact={path}: its image tower does not fit "
                     f"config.model.image ({len(problems)} parameter(s)): " + "; ".join(problems[:10])
                     + ". Use the config size / res / scan_layers the artifact was trained with.")
  pure["image"] = jax.tree.map(_put_like, source, ours)
  nnx.replace_by_pure_dict(params, pure)
  logging.info("view classifier: image tower from %s (%d arrays).", path, len(our_flat))
  return params


def init_params(params: nnx.State, config, init_checkpoint=None) -> nnx.State:
  """From config.view_classifier.init_artifact (an exported EchoVLM), else config.model_init
  (pretrained CLIP/SigLIP towers, init_checkpoint when already read; their text tower is
  dropped), else as initialised."""
  artifact = config.view_classifier.init_artifact
  if artifact and config.model_init:
    raise ValueError("config.view_classifier.init_artifact and config.model_init are both set: "
                     "pick one source for the image tower.")
  if artifact:
    return tower_from_artifact(params, artifact)
  if config.model_init:
    # The trainer's own hook: the checkpoint's input normalisation is folded in as for EchoVLM;
    # config.model_init_skip (configs/view_classifier.py) drops what has no place here.
    from echovlm_jax.interop import init_from_checkpoint  # pylint: disable=g-import-not-at-top
    return init_from_checkpoint.load_towers(params, config, init_checkpoint)
  return params


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
