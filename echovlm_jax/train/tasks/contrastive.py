"""config.task = "contrastive": the EchoVLM dual encoder trained with losses.compute_losses
(CLIP / SigLIP, view masks, negated captions, measurements; docs/design.md "The objectives"),
optionally from pretrained CLIP / SigLIP towers (config.model_init), evaluated zero-shot, by
retrieval and by probes, exported as an artifact.
"""

from __future__ import annotations

import jax
from flax import nnx

from echovlm_jax import losses
from echovlm_jax.data import mixture
from echovlm_jax.models import factory
from echovlm_jax.train.tasks.task import Task


def _model(config, vocab_size: int) -> factory.Builder:
  return factory.dual_encoder(config.model, vocab_size=vocab_size, seed=config.seed)


def _init_params(params: nnx.State, config, init_checkpoint) -> nnx.State:
  """Pretrained CLIP / SigLIP towers when config.model_init names them."""
  if not config.model_init:
    return params
  from echovlm_jax.interop import init_from_checkpoint  # pylint: disable=g-import-not-at-top
  return init_from_checkpoint.load_towers(params, config, init_checkpoint)


def _make_loss_fn(config, graphdef, mesh, train_iter):
  """The contrastive losses of config.loss; the temperature is logged. With several sources
  (config.input.data) each source's losses over its own examples of the batch (its rows and
  columns) are logged too, as "<source>/<term>" (not differentiated: monitoring only)."""
  del train_iter  # every example counts the same
  srcs = mixture.sources(config.input)
  names = [(s.index, s.name) for s in srcs if s.weight > 0] if len(srcs) > 1 else []

  def loss_fn(params, batch):
    outputs = nnx.merge(graphdef, params)(batch)
    total, terms = losses.compute_losses(outputs, batch, config.loss, mesh=mesh)
    if names:
      quiet = jax.tree.map(jax.lax.stop_gradient, outputs)
      for i, name in names:
        mine = (batch["source"] == i).astype(batch["valid"].dtype)
        sub_total, sub = losses.compute_losses(
            quiet, dict(batch, valid=batch["valid"] * mine), config.loss, mesh=mesh)
        terms.update({f"{name}/{k}": v for k, v in sub.items()})
        terms[f"{name}/total"] = sub_total
    return total, (terms, outputs["logit_scale"])
  return loss_fn


def _check_config(config) -> None:
  losses.check_config(config.loss)
  if config.evals:
    # lazily: sklearn/matplotlib cost start-up time
    from echovlm_jax.evaluation import registry  # pylint: disable=g-import-not-at-top
    registry.check_evals_config(config.evals)
    registry.check_eval_sources(config.evals, config.input)
  mixture.sources(config.input)  # ValueError naming config.input.data's bad key


def _make_evaluator(config, mesh, tokenizer):
  from echovlm_jax.evaluation import registry  # pylint: disable=g-import-not-at-top
  return registry.Evaluator(config, mesh, tokenizer)


TASK = Task(name="contrastive", model=_model, init_params=_init_params, keep=lambda config: None,
            make_loss_fn=_make_loss_fn, check_config=_check_config,
            make_evaluator=_make_evaluator, exports_artifact=True)
