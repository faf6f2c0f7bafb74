"""The one trainer: state creation, the sharded train step, and the loop with
periodic metrics, checkpoints and evaluation.

`train_and_evaluate(config, workdir)` is what `main.py` calls. Every
experiment (the paper's ablations included) is a config, never a fork.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers
from flax import nnx

from echovlm_jax import checkpointing
from echovlm_jax import distributed
from echovlm_jax import losses
from echovlm_jax import sharding
from echovlm_jax.data import build as data_build
from echovlm_jax.data import input_pipeline
from echovlm_jax.echo import schema


class NonFiniteLossError(RuntimeError):
  """The loss or one of its terms became NaN/inf; the run stopped before saving it."""


# ----------------------------------------------------------------------------
# Optimiser
# ----------------------------------------------------------------------------
def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to config.lr, then cosine decay to 0 at total_steps."""
  warmup = min(config.warmup_steps, max(config.total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=warmup,
      decay_steps=max(config.total_steps, warmup + 1), end_value=0.0)


def decay_mask(params) -> Any:
  """Weight decay on matrices only: no decay on norms, biases, temperature and bias scalars."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2,
                  weight_decay=config.wd, mask=decay_mask),
  )


# ----------------------------------------------------------------------------
# State: a plain pytree so Orbax saves it and jit shards it.
# ----------------------------------------------------------------------------
def create_state(config, mesh, vocab_size: int):
  """Returns (graphdef, state, state_shardings, tx).

  state = {"params": nnx.State, "opt_state": optax state, "step": int32 []},
  created already sharded (jit with out_shardings), never materialised on one device.
  """
  model = sharding.create_sharded_model(
      config.model, vocab_size=vocab_size, num_measurements=len(schema.MEASUREMENTS),
      mesh=mesh, rules=config.sharding_rules, seed=config.seed)
  graphdef, params = nnx.split(model, nnx.Param)
  tx = make_optimizer(config)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Optimizer state mirrors the params' shardings (moments); scalars are replicated.
  opt_shapes = jax.eval_shape(tx.init, params)
  opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, opt_shapes, param_shardings,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: x is None)
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  state = {"params": params, "opt_state": opt_state,
           "step": jax.device_put(jnp.zeros((), jnp.int32), replicated)}
  shardings = {"params": param_shardings, "opt_state": opt_shardings, "step": replicated}
  return graphdef, state, shardings, tx


# ----------------------------------------------------------------------------
# The train step
# ----------------------------------------------------------------------------
def make_train_step(config, graphdef, tx, mesh, state_shardings, batch_sharding) -> Callable:
  """Returns jitted step(state, batch) -> (state, metrics); the state is donated.

  With grad_accum_steps = k the global batch is split into k micro-batches whose
  gradients are averaged (contrastive negatives then come from one micro-batch).
  A non-finite loss leaves the state unchanged, so nothing bad is ever saved.
  """
  loss_config = config.loss
  k = int(config.grad_accum_steps)
  if config.batch_size % k:
    raise ValueError(f"config.batch_size={config.batch_size} is not divisible by "
                     f"config.grad_accum_steps={k}.")
  schedule = make_schedule(config)

  def loss_fn(params, batch):
    model = nnx.merge(graphdef, params)
    outputs = model(batch)
    total, terms = losses.compute_losses(outputs, batch, loss_config, mesh=mesh)
    return total, (terms, outputs["logit_scale"])

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step_fn(state, batch):
    params = state["params"]
    if k == 1:
      (total, (terms, log_scale)), grads = grad_fn(params, batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)

      def body(carry, mb):
        (t, (tm, ls)), g = grad_fn(params, mb)
        return jax.tree.map(jnp.add, carry, (t, tm, ls, g)), None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
          lambda: (lambda r: (r[0][0], r[0][1][0], r[0][1][1], r[1]))(
              grad_fn(params, jax.tree.map(lambda x: x[0], micro)))))
      (total, terms, log_scale, grads), _ = jax.lax.scan(body, zeros, micro)
      total, terms, log_scale, grads = jax.tree.map(lambda x: x / k, (total, terms, log_scale, grads))

    updates, new_opt = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(total)
    # Keep the old state when the loss is not finite: the host stops the run.
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = {"params": keep(new_params, params), "opt_state": keep(new_opt, state["opt_state"]),
                 "step": state["step"] + 1}
    metrics = {"loss": total, **{f"loss/{n}": v for n, v in terms.items()},
               "grad_norm": optax.global_norm(grads),
               "temperature": jnp.exp(log_scale), "lr": schedule(state["step"])}
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def check_finite(step: int, metrics: dict[str, float]) -> None:
  bad = sorted(n for n, v in metrics.items() if not math.isfinite(v))
  if bad:
    raise NonFiniteLossError(
        f"Non-finite value at step {step} in {', '.join(bad)} "
        f"({', '.join(f'{n}={metrics[n]}' for n in bad)}). The run stopped without saving; "
        "the last good checkpoint is intact. Lower config.lr, check the input data, or resume "
        "with a different config.seed.")


# ----------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------
class JsonlWriter:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl (process 0 only)."""

  def __init__(self, path: str, enabled: bool):
    self.path, self.enabled = path, enabled

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")


def read_metrics_history(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from the latest checkpoint in workdir) and evaluates.

  Returns the last logged training metrics and evaluation results.
  """
  # --- Setup ---------------------------------------------------------------
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), is_main)
  mesh = distributed.create_mesh(config.mesh)
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), mesh.size,
               jax.process_count())
  if config.batch_size % (mesh.shape["data"] * mesh.shape["fsdp"]):
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the batch "
                     f"axes data*fsdp={mesh.shape['data'] * mesh.shape['fsdp']}.")
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # --- Data ----------------------------------------------------------------
  data_info = data_build.ensure_dataset(config.input)
  tokenizer = input_pipeline.load_tokenizer(config.input)
  vocab_size = tokenizer.vocab_size

  # --- Model and state -----------------------------------------------------
  graphdef, state, state_shardings, tx = create_state(config, mesh, vocab_size)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  logging.info("Model: %.2fM parameters.", n_params / 1e6)

  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_ckpts, every=config.ckpt_every)
  start_step, extra = 0, {}
  if ckpt.latest_step() is not None:
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings)
    state, extra = ckpt.restore(None, abstract)
    start_step = int(state["step"])
    logging.info("Resumed from step %d.", start_step)

  batch_sharding = sharding.batch_sharding(mesh)
  train_step = make_train_step(config, graphdef, tx, mesh, state_shardings, batch_sharding)
  train_iter = input_pipeline.make_train_iterator(
      config.input, config.batch_size, mesh, seed=config.seed, start_step=start_step)

  evaluator = None
  if config.evals:
    from echovlm_jax import evaluation  # imported lazily: sklearn/matplotlib cost start-up time
    evaluator = evaluation.Evaluator(config, mesh, tokenizer)

  # --- Loop ----------------------------------------------------------------
  checkpointing.install_sigterm_handler()
  last = {}
  t0, s0 = time.time(), start_step
  pending = None  # metrics of the previous step, checked one step late so dispatch never stalls
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      batch = next(train_iter)
      state, metrics = train_step(state, batch)
      if pending is not None:
        _check_pending(*pending)
      pending = (step, metrics)

      if step % config.log_every == 0 or step == config.total_steps:
        _check_pending(*pending)
        pending = None
        dt = time.time() - t0
        steps_per_s = (step - s0) / max(dt, 1e-9)
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        scalars.update({"steps_per_s": steps_per_s,
                        "examples_per_s": steps_per_s * config.batch_size})
        eta = (config.total_steps - step) / max(steps_per_s, 1e-9)
        writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
        jsonl.write(step, {f"train/{k}": v for k, v in scalars.items()})
        if is_main:
          print(f"step {step:>6}/{config.total_steps}  loss {scalars['loss']:.4f}  "
                f"lr {scalars['lr']:.2e}  {scalars['examples_per_s']:.1f} ex/s  "
                f"ETA {_fmt_seconds(eta)}", flush=True)
        last = scalars
        t0, s0 = time.time(), step

      if evaluator is not None:
        results = evaluator.maybe_run(nnx.merge(graphdef, state["params"]), step,
                                      last_step=step == config.total_steps)
        if results:
          writer.write_scalars(step, results)
          jsonl.write(step, results)
          last.update(results)

      # should_stop is a sync point on multi-host runs: every process calls it every step.
      preempted = ckpt.should_stop(step)
      if ckpt.should_save(step) or step == config.total_steps or preempted:
        if pending is not None:
          _check_pending(*pending)
          pending = None
        ckpt.save(step, state, {"data_position": step, "seed": config.seed},
                  force=preempted or step == config.total_steps)
      if preempted:
        logging.warning("Preemption signal received: saved step %d and stopping.", step)
        break
  finally:
    ckpt.wait()
    ckpt.close()
    writer.flush()
    checkpointing.uninstall_sigterm_handler()

  if evaluator is not None and is_main:
    report = evaluator.write_report(workdir, read_metrics_history(workdir))
    if report:
      print(f"Report: {report}", flush=True)
  return last


def _check_pending(step: int, metrics) -> None:
  check_finite(step, {k: float(v) for k, v in jax.device_get(metrics).items()
                      if k == "loss" or k.startswith("loss/")})


def _fmt_seconds(s: float) -> str:
  s = int(s)
  return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"
