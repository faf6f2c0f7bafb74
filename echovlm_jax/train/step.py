"""The sharded train step: gradients of config.task's loss (averaged over micro-batches with
grad_accum_steps), one optimizer update, and the guard that keeps the old state when the loss
or the gradient norm is not finite, with the host-side check that stops the run.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from echovlm_jax import sharding
from echovlm_jax.train import optimizer
from echovlm_jax.train.tasks.task import LossFn


class NonFiniteLossError(RuntimeError):
  """The loss, one of its terms or the gradient norm became NaN/inf; the run stopped
  before saving that step."""


def make_train_step(config, tx, mesh, state_shardings, batch_sharding, loss_fn: LossFn, *,
                    poison_grads: bool = False) -> Callable:
  """Returns jitted step(state, batch) -> (state, metrics); the state is donated.

  With grad_accum_steps = k the global batch is split into k micro-batches whose
  gradients are averaged (contrastive negatives then come from one micro-batch).
  Micro-batch j takes rows j, j+k, j+2k, ... so every device holds B/(k*shards) rows
  of each one: no resharding, no idle devices.
  A non-finite loss or gradient norm leaves the state unchanged, so nothing bad is ever
  saved (a NaN gradient can come with a finite loss, e.g. from a sqrt at 0).
  loss_fn: config.task's loss (tasks/); poison_grads: fault injection
  (config.debug_nan_target="grads"): one gradient leaf becomes NaN while the loss stays finite.
  """
  k = int(config.grad_accum_steps)
  sharding.check_batch_size(config.batch_size, mesh, "config.batch_size", k)
  schedule = optimizer.make_schedule(config)
  micro_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, sharding.batch_axes(mesh)))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step_fn(state, batch):
    params = state["params"]
    if k == 1:
      (total, (terms, log_scale)), grads = grad_fn(params, batch)
    else:
      micro = jax.tree.map(
          lambda x: jnp.moveaxis(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 1, 0), batch)
      micro = jax.lax.with_sharding_constraint(micro, micro_sharding)

      def body(carry, mb):
        (t, (tm, ls)), g = grad_fn(params, mb)
        return jax.tree.map(jnp.add, carry, (t, tm, ls, g)), None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
          lambda: (lambda r: (r[0][0], r[0][1][0], r[0][1][1], r[1]))(
              grad_fn(params, jax.tree.map(lambda x: x[0], micro)))))
      (total, terms, log_scale, grads), _ = jax.lax.scan(body, zeros, micro)
      total, terms, log_scale, grads = jax.tree.map(lambda x: x / k, (total, terms, log_scale, grads))

    if poison_grads:
      leaves, treedef = jax.tree.flatten(grads)
      grads = jax.tree.unflatten(treedef, [leaves[0] * jnp.nan, *leaves[1:]])
    grad_norm = optax.global_norm(grads)
    updates, new_opt = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    # One NaN/inf anywhere in the gradient makes its global norm non-finite, and clipping
    # by that norm would spread it to every parameter: keep the old state, the host stops.
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = {"params": keep(new_params, params), "opt_state": keep(new_opt, state["opt_state"]),
                 "step": state["step"] + 1}
    metrics = {"loss": total, **{f"loss/{n}": v for n, v in terms.items()},
               "grad_norm": grad_norm,
               **({} if log_scale is None else {"temperature": jnp.exp(log_scale)}),
               "lr": schedule(state["step"])}
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def check_finite(step: int, metrics: dict[str, float]) -> None:
  """Raises NonFiniteLossError naming the step and every non-finite term of `metrics`."""
  bad = sorted(n for n, v in metrics.items() if not math.isfinite(v))
  if bad:
    raise NonFiniteLossError(
        f"Non-finite value at step {step} in {', '.join(bad)} "
        f"({', '.join(f'{n}={metrics[n]}' for n in bad)}). The run stopped without saving "
        "this step. Lower config.lr, check the input data, or resume with a different "
        "config.seed.")


def check_step_metrics(step: int, metrics: dict[str, Any]) -> None:
  """check_finite on a step's device metrics: the loss, its terms and the gradient norm."""
  check_finite(step, {k: float(v) for k, v in jax.device_get(metrics).items()
                      if k in ("loss", "grad_norm") or k.startswith("loss/")})
