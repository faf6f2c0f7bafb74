"""The one trainer: state creation, the sharded train step, and the loop with
periodic metrics, checkpoints and evaluation.

`train_and_evaluate(config, workdir)` is what `main.py` calls. Every experiment
(the paper's ablations included) is a config, never a fork; config.task picks what is trained:
"contrastive" (the dual encoder) or "view_classifier" (view_classifier.py: the image tower and
a linear head on views from trusted sources). Evaluation and export
restore checkpoints through checkpointing.py, never through this module.

Fault injection (configs/echovlm.py, 0 = off): `config.debug_nan_step` makes that step
non-finite, `config.debug_nan_target` says where: "frames" (NaN inputs, so a NaN loss) or
"grads" (a finite loss with a NaN gradient), so tests can check both stop the run cleanly.
"""

from __future__ import annotations

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
from flax import nnx

from echovlm_jax import checkpointing
from echovlm_jax import losses
from echovlm_jax import metrics_log
from echovlm_jax import run_config
from echovlm_jax import sharding
from echovlm_jax import view_classifier
from echovlm_jax.models import factory
# Start-up checks live beside the evaluator's; imported here under the names callers know.
from echovlm_jax.run_config import ConfigError, create_mesh, validate_config  # noqa: F401

# The data modules (tf.data, TFDS) and clu's writers are imported where the loop needs them, so
# the state and step functions import without TensorFlow (benchmarks on accelerator images).


class NonFiniteLossError(RuntimeError):
  """The loss, one of its terms or the gradient norm became NaN/inf; the run stopped
  before saving that step."""


# ----------------------------------------------------------------------------
# Optimiser
# ----------------------------------------------------------------------------
def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to config.lr, then cosine decay to 0 at total_steps."""
  warmup = min(config.warmup_steps, max(config.total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=warmup,
      decay_steps=max(config.total_steps, warmup + 1), end_value=0.0)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (warm-up + cosine lr, decay on the kinds of parameter
  config.wd_kinds names: weight_decay.py), scaled or frozen per tower by config.lr_mult
  (tower_lr.py)."""
  from echovlm_jax import tower_lr
  from echovlm_jax import weight_decay
  kinds = config.get("wd_kinds", weight_decay.DEFAULT_KINDS)
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      tower_lr.per_tower(config, lambda: optax.adamw(
          make_schedule(config), b1=config.b1, b2=config.b2, weight_decay=config.wd,
          mask=lambda params: weight_decay.decay_mask(params, kinds))),
  )


# ----------------------------------------------------------------------------
# State: a plain pytree so Orbax saves it and jit shards it.
# ----------------------------------------------------------------------------
def create_state(config, mesh, vocab_size: int, init_checkpoint=None):
  """Returns (graphdef, state, state_shardings, tx).

  state = {"params": nnx.State, "opt_state": optax state, "step": int32 []},
  created already sharded (jit with out_shardings), never materialised on one device.
  The model is the DualEncoder, or with config.task = "view_classifier" the ViewClassifier.
  init_checkpoint: config.model_init already read (run_config.configure_from_checkpoint), else
  it is read here.
  """
  try:  # warns (or fails with config.sharding_strict) on partly replicated parameters
    if config.get("task") == "view_classifier":
      model = view_classifier.create_sharded_model(config, mesh)
    else:
      model = sharding.create_sharded(
          factory.dual_encoder(config.model, vocab_size=vocab_size, seed=config.seed),
          mesh, config.sharding_rules, config.sharding_strict)
  except sharding.ShardingError as e:
    raise ConfigError(str(e)) from None
  graphdef, params = nnx.split(model, nnx.Param)
  if config.get("task") == "view_classifier":
    # An exported EchoVLM's tower or pretrained towers; on resume the checkpoint overwrites them.
    try:
      params = view_classifier.init_params(params, config, init_checkpoint)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  elif config.model_init:
    # Pretrained CLIP/SigLIP towers; on resume the checkpoint overwrites these.
    from echovlm_jax.interop import init_from_checkpoint
    params = init_from_checkpoint.load_towers(params, config, init_checkpoint)
  tx = make_optimizer(config)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  # Optimizer state mirrors the params' shardings (moments); scalars are replicated.
  opt_shapes = jax.eval_shape(tx.init, params)
  # A per-tower optimizer (config.lr_mult) holds MaskedNode where another tower's state is.
  masked = lambda x: isinstance(x, optax.MaskedNode)
  opt_shardings = optax.tree_map_params(
      tx, lambda p, s: p if masked(p) else s, opt_shapes, param_shardings,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: x is None or masked(x))
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  state = {"params": params, "opt_state": opt_state,
           "step": jax.device_put(jnp.zeros((), jnp.int32), replicated)}
  shardings = {"params": param_shardings, "opt_state": opt_shardings, "step": replicated}
  return graphdef, state, shardings, tx


# ----------------------------------------------------------------------------
# The train step
# ----------------------------------------------------------------------------
def make_train_step(config, graphdef, tx, mesh, state_shardings, batch_sharding, *,
                    poison_grads: bool = False, loss_fn: Callable | None = None) -> Callable:
  """Returns jitted step(state, batch) -> (state, metrics); the state is donated.

  With grad_accum_steps = k the global batch is split into k micro-batches whose
  gradients are averaged (contrastive negatives then come from one micro-batch).
  Micro-batch j takes rows j, j+k, j+2k, ... so every device holds B/(k*shards) rows
  of each one: no resharding, no idle devices.
  A non-finite loss or gradient norm leaves the state unchanged, so nothing bad is ever
  saved (a NaN gradient can come with a finite loss, e.g. from a sqrt at 0).
  poison_grads: fault injection (config.debug_nan_target="grads"): one gradient leaf
  becomes NaN while the loss stays finite. loss_fn: (params, batch) -> (loss, (terms, log
  temperature or None)) of another task (view_classifier.make_loss_fn); default: the
  contrastive losses of config.loss.
  """
  loss_config = config.loss
  k = int(config.grad_accum_steps)
  sharding.check_batch_size(config.batch_size, mesh, "config.batch_size", k)
  schedule = make_schedule(config)
  micro_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, sharding.batch_axes(mesh)))

  def contrastive_loss_fn(params, batch):
    model = nnx.merge(graphdef, params)
    outputs = model(batch)
    total, terms = losses.compute_losses(outputs, batch, loss_config, mesh=mesh)
    return total, (terms, outputs["logit_scale"])

  loss_fn = loss_fn or contrastive_loss_fn

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


# ----------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------
def progress_line(step: int, total: int, scalars: dict[str, float], eta_s: float) -> str:
  """One readable line: loss and its terms, lr, temperature, grad norm, speed, ETA."""
  terms = " ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(scalars.items()) if k.startswith("loss/"))
  return (f"step {step:>6}/{total}  loss {scalars['loss']:.4f}" + (f" ({terms})" if terms else "")
          + f"  lr {scalars['lr']:.2e}"
          + (f"  T {scalars['temperature']:.2f}" if "temperature" in scalars else "")
          + f"  |g| {scalars['grad_norm']:.3f}  {scalars['steps_per_s']:.2f} steps/s"
          f"  {scalars['examples_per_s']:.1f} ex/s  ETA {_fmt_seconds(eta_s)}")


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from the latest checkpoint in workdir) and evaluates.

  Returns the last logged training metrics and evaluation results. Raises
  ConfigError on a config it cannot run, NonFiniteLossError when the loss or the
  gradient norm stops being finite (the last good checkpoint stays). A SIGTERM saves the
  current step and returns early.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  # Installed before the slow set-up: a SIGTERM while compiling stops at the first step.
  checkpointing.install_sigterm_handler()
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    checkpointing.uninstall_sigterm_handler()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  from clu import metric_writers
  from echovlm_jax.data import build as data_build
  from echovlm_jax.data import input_pipeline

  # --- Setup ---------------------------------------------------------------
  # The checkpoint's architecture, text length and tokenizer (config.model_init).
  config, init_checkpoint = run_config.configure_from_checkpoint(config)
  is_main = jax.process_index() == 0
  mesh = create_mesh(config)
  validate_config(config, mesh)
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), mesh.size,
               jax.process_count())
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  jsonl = metrics_log.JsonlWriter(os.path.join(workdir, metrics_log.METRICS_FILE), is_main)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # --- Data ----------------------------------------------------------------
  data_build.ensure_dataset(config.input, build_real=False)  # real data: built by its own job
  tokenizer = input_pipeline.load_tokenizer(config.input)
  vocab_size = config.model.get("vocab_size") or tokenizer.vocab_size  # a checkpoint's rows

  # --- Model and state -----------------------------------------------------
  graphdef, state, state_shardings, tx = create_state(config, mesh, vocab_size, init_checkpoint)
  del init_checkpoint  # the towers are in the state: free the host copy
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  logging.info("Model: %.2fM parameters.", n_params / 1e6)

  ckpt = checkpointing.Checkpointer(workdir, keep=config.keep_ckpts, every=config.ckpt_every)
  start_step, data_position = 0, 0
  if ckpt.latest_step() is not None:
    state, extra = ckpt.restore(None, checkpointing.abstract_like(state))
    start_step = int(state["step"])
    data_position = int(extra.get("data_position", start_step))
    if extra.get("seed", config.seed) != config.seed:
      logging.warning("Resuming with config.seed=%s, saved with %s: the data order changes.",
                      config.seed, extra["seed"])
    if extra.get("process_count", jax.process_count()) != jax.process_count():
      logging.warning("Resuming on %d processes, saved on %s: each host reads another slice, "
                      "so the data order changes.", jax.process_count(), extra["process_count"])
    logging.info("Resumed from step %d (data position %d).", start_step, data_position)
    if is_main:
      print(f"Resumed from step {start_step} in {ckpt.directory}.", flush=True)
  if start_step >= config.total_steps:
    logging.info("Step %d >= config.total_steps=%d: nothing to train.", start_step,
                 config.total_steps)

  # The stream is deterministic in (seed, position, process count): rebuilding it at the
  # saved position gives exactly the batches an uninterrupted run would have seen.
  # The view classifier reads only examples whose view came from a trusted source.
  classifier = config.get("task") == "view_classifier"
  train_iter = input_pipeline.make_train_iterator(
      config.input, config.batch_size, mesh, seed=config.seed, start_step=data_position,
      keep=view_classifier.keep_fn(config) if classifier else None)
  loss_fn = None
  if classifier:
    weights = view_classifier.class_weights(train_iter.view_counts,
                                            config.view_classifier.class_balance)
    logging.info("View classifier: %d training examples; class weights %s.",
                 int(train_iter.view_counts.sum()), np.round(weights, 3).tolist())
    loss_fn = view_classifier.make_loss_fn(graphdef, weights)

  batch_sharding = sharding.batch_sharding(mesh)
  train_step = make_train_step(config, graphdef, tx, mesh, state_shardings, batch_sharding,
                               loss_fn=loss_fn)
  nan_step, nan_target = int(config.debug_nan_step), config.debug_nan_target
  poisoned_step = (make_train_step(config, graphdef, tx, mesh, state_shardings, batch_sharding,
                                   poison_grads=True, loss_fn=loss_fn)
                   if nan_step and nan_target == "grads" else None)  # compiled only if used

  evaluator = None
  if config.evals and classifier:
    from echovlm_jax.evaluation import view_classifier as view_eval  # lazily, as below
    evaluator = view_eval.Evaluator(config, mesh)
  elif config.evals:
    from echovlm_jax import evaluation  # imported lazily: sklearn/matplotlib cost start-up time
    evaluator = evaluation.Evaluator(config, mesh, tokenizer)

  # --- Loop ----------------------------------------------------------------
  last, preempted = {}, False
  t0, s0 = time.time(), start_step
  pending = None  # metrics of the previous step, checked one step late so dispatch never stalls
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      batch = next(train_iter)
      step_fn = train_step
      if step == nan_step:
        logging.warning("config.debug_nan_step=%d: NaN %s (fault injection).", step, nan_target)
        if nan_target == "frames":
          batch = dict(batch, frames=_poison(batch["frames"]))
        else:
          step_fn = poisoned_step
      state, metrics = step_fn(state, batch)
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
          print(progress_line(step, config.total_steps, scalars, eta), flush=True)
        last = scalars
        t0, s0 = time.time(), step

      # should_stop is a sync point on multi-host runs: every process calls it every step.
      preempted = ckpt.should_stop(step)
      if ckpt.should_save(step) or step == config.total_steps or preempted:
        if pending is not None:
          _check_pending(*pending)
          pending = None
        # The side-car restores the data stream. It is the only randomness after init (the
        # model has no dropout): batches and augmentation are keyed by (seed, epoch, host).
        ckpt.save(step, state, {"data_position": train_iter.position, "seed": config.seed,
                                "process_count": jax.process_count(), "vocab_size": vocab_size},
                  force=preempted or step == config.total_steps)
      if preempted:
        logging.warning("Preemption signal received: saved step %d and stopping.", step)
        if is_main:
          print(f"Stopped by a preemption signal: saved step {step} to {ckpt.directory}; "
                "rerun the same command to resume.", flush=True)
        break

      # After the save: it runs in the background while we evaluate.
      # Asked first so the hot loop does not rebuild the module on steps with no eval.
      if evaluator is not None and evaluator.due(step, last_step=step == config.total_steps):
        results = evaluator.maybe_run(nnx.merge(graphdef, state["params"]), step,
                                      last_step=step == config.total_steps)
        if results:
          writer.write_scalars(step, results)
          jsonl.write(step, results)
          last.update(results)
  except NonFiniteLossError as e:
    ckpt.wait()
    good = ckpt.latest_step()
    raise NonFiniteLossError(
        f"{e} Last good checkpoint: "
        f"{f'step {good} in {ckpt.directory}' if good is not None else 'none yet'}.") from None
  finally:
    ckpt.close()
    writer.flush()

  if evaluator is not None and is_main and not preempted:
    report = evaluator.write_report(workdir, metrics_log.read_metrics_history(workdir))
    if report:
      print(f"Report: {report}", flush=True)
  return last


def _poison(frames: jax.Array) -> jax.Array:
  """NaN frames with the batch's sharding (config.debug_nan_step fault injection)."""
  return jax.jit(lambda f: jnp.full_like(f, jnp.nan), out_shardings=frames.sharding)(frames)


def _check_pending(step: int, metrics) -> None:
  check_finite(step, {k: float(v) for k, v in jax.device_get(metrics).items()
                      if k in ("loss", "grad_norm") or k.startswith("loss/")})


def _fmt_seconds(s: float) -> str:
  s = int(s)
  return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"
