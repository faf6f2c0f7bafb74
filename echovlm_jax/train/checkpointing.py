"""Training checkpoints: Orbax CheckpointManager in WORKDIR/checkpoints, async
saves, keep-N, resume (onto any mesh) with a JSON side-car (data iterator
position, RNG, ...), the SIGTERM / preemption stop signal the loop polls, and the
params-only restore that evaluation and export use (beside the manager, as MaxText
keeps `load_state_if_possible`, because it reads the same item names).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Mapping

from absl import logging
from etils import epath
from flax import nnx
import jax
import ml_collections
import orbax.checkpoint as ocp

from echovlm_jax import sharding
from echovlm_jax.train import tasks

CHECKPOINT_SUBDIR = "checkpoints"
# The two items of every step directory: the train state pytree and the JSON side-car.
STATE_ITEM, EXTRA_ITEM = "state", "extra"
_ITEMS = (STATE_ITEM, EXTRA_ITEM)


def _save_replicas_whole_on_cpu() -> None:
  """On the CPU backend, save each replicated array from one replica, not in slices.

  Orbax's default "replica parallel" save cuts a replicated array into one slice per
  replica so that accelerators copy them to the host in parallel. On CPU the devices are
  host memory: the slices copy nothing faster, and each (shape, device) pair costs an XLA
  compile on the first save (120 of them, 4.4 s of compiling, for the tests' tiny model on
  8 fake devices). Accelerator backends keep Orbax's default.
  """
  if jax.default_backend() != "cpu":
    return
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(handler, "_use_replica_parallel", False):
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            use_replica_parallel=False, array_metadata_store=handler._array_metadata_store),
        override=True)


# --- Preemption ----------------------------------------------------------------
# A SIGTERM (what TPU VMs, GKE, SLURM and `kill` send before eviction) only sets
# a flag: the train loop sees it in `Checkpointer.should_stop`, saves and returns,
# so a checkpoint is never cut mid-write by our own handler.
_sigterm = threading.Event()
_previous_handler: Any = None
_installed = False


def install_sigterm_handler() -> bool:
  """Makes SIGTERM set the flag `sigterm_received()` reads instead of killing.

  Main thread only (Python's rule for signal handlers). Not installed in a
  multi-process run with jax's preemption service: that service owns SIGTERM
  (a C++ handler we must not replace) and syncs the stop step across hosts,
  which `Checkpointer.should_stop` polls. Returns whether it was installed.
  """
  global _previous_handler, _installed
  if _installed:
    return True
  if jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service:
    logging.info("SIGTERM is handled by jax's preemption service (multi-process run).")
    return False
  _sigterm.clear()
  _previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
  _installed = True
  return True


def uninstall_sigterm_handler() -> None:
  """Restores the SIGTERM handler that was there before `install_sigterm_handler`."""
  global _previous_handler, _installed
  if not _installed:
    return
  signal.signal(signal.SIGTERM,
                _previous_handler if _previous_handler is not None else signal.SIG_DFL)
  _previous_handler, _installed = None, False
  _sigterm.clear()


def sigterm_received() -> bool:
  """True once a SIGTERM arrived while our handler was installed."""
  return _sigterm.is_set()


def _on_sigterm(signum: int, frame: Any) -> None:
  del frame
  logging.warning("Received signal %d: will save a checkpoint and stop after this step.", signum)
  _sigterm.set()


# --- Checkpoints ---------------------------------------------------------------
def abstract_like(tree: Any) -> Any:
  """[...] arrays -> jax.ShapeDtypeStruct with the same shape, dtype and sharding.

  Turns a freshly initialised (sharded) state into the restore target; build
  it on the NEW mesh to restore onto another mesh or device count.
  """
  def leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x
  return jax.tree.map(leaf, tree)


class Checkpointer:
  """Saves and restores (state, extra) in WORKDIR/checkpoints.

  `state` is a pytree of (sharded) jax.Arrays; `extra` a JSON-able dict (the
  data iterator position, host RNG, ...). Saves are asynchronous: `save`
  returns once the arrays are copied off the devices (so the state may be
  donated to the next step) and the files are written in the background.
  Orbax writes each step to `<step>.orbax-checkpoint-tmp*` and renames it
  when complete, so a run killed mid-save (kill -9 included) never restores
  a partial step; the next Checkpointer deletes such leftovers (in the
  background, done before its first save).

  All processes of a multi-host run must call every method (collective).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, every: int = 1,
               async_save: bool = True):
    """keep: newest checkpoints kept (None = all); every: `save` writes only at
    steps divisible by it unless forced."""
    self.directory = epath.Path(workdir) / CHECKPOINT_SUBDIR
    # Orbax's default policy also saves the very first step it sees; we save
    # exactly at multiples of `every`, plus the preemption sync step.
    policy = ocp.checkpoint_managers.AnySavePolicy([
        ocp.checkpoint_managers.FixedIntervalPolicy(every),
        ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),
    ])
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        save_decision_policy=policy,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
    )
    _save_replicas_whole_on_cpu()
    self._manager = ocp.CheckpointManager(self.directory, item_names=_ITEMS, options=options)

  # -- saving --
  def should_save(self, step: int) -> bool:
    """Whether `save(step, ...)` without force would write (interval, preemption)."""
    return self._manager.should_save(step)

  def save(self, step: int, state: Any, extra: Mapping[str, Any] | None = None, *,
           force: bool = False) -> bool:
    """Starts saving `state` and `extra` as `step`; returns whether a save started.

    Without force, writes only when `step % every == 0` (or at the preemption
    sync step). force=True writes now (end of training, SIGTERM), unless this
    step is already saved.
    """
    if force and step in self._manager.all_steps():
      return False
    args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardSave(state),
                                 EXTRA_ITEM: ocp.args.JsonSave(dict(extra or {}))})
    saved = self._manager.save(step, args=args, force=force)
    if saved:
      logging.info("Saving checkpoint for step %d to %s.", step, self.directory)
    return saved

  def should_stop(self, step: int) -> bool:
    """True when the loop should save `step` and exit (preemption / SIGTERM).

    Call it at EVERY step on every process: on multi-host runs it is jax's
    preemption sync point, where all hosts agree on the same stop step.
    A local SIGTERM flag alone decides only single-process runs (a lone host
    stopping would leave the others hanging in the next collective).
    """
    if self._manager.reached_preemption(step):
      return True
    return jax.process_count() == 1 and sigterm_received()

  def wait(self) -> None:
    """Blocks until a pending asynchronous save is on disk (and finalized)."""
    self._manager.wait_until_finished()

  # -- restoring --
  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores (state, extra) of `step` (None = latest).

    abstract_state: the state's structure with jax.ShapeDtypeStruct leaves
    carrying the TARGET sharding (see `abstract_like`, or `jax.eval_shape` of
    the sharded init); arrays are resharded onto it, so the mesh or device
    count may differ from the one that saved.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"No checkpoint for step {step} in {self.directory}; "
                              f"available steps: {self.all_steps()}.")
    abstract_state = abstract_like(abstract_state)
    unsharded = [jax.tree_util.keystr(path) for path, x
                 in jax.tree_util.tree_leaves_with_path(abstract_state)
                 if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None]
    if unsharded:
      raise ValueError(f"Checkpointer.restore: abstract_state leaves {unsharded[:5]} have no "
                       "sharding; build them on the target mesh (e.g. `abstract_like` of a "
                       "sharded init, or ShapeDtypeStruct(..., sharding=NamedSharding(...))).")
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_state), EXTRA_ITEM: ocp.args.JsonRestore()}))
    logging.info("Restored checkpoint for step %d from %s.", step, self.directory)
    return restored[STATE_ITEM], dict(restored[EXTRA_ITEM] or {})

  # -- lifetime --
  def close(self) -> None:
    """Waits for pending saves and releases the manager's threads."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


# --- Params-only restore (evaluation, export) -------------------------------------
def abstract_params(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, vocab_size: int):
  """(graphdef, params) of config.task's model where params holds jax.ShapeDtypeStructs
  carrying the rules' shardings on `mesh`: a restore target that allocates nothing."""
  model = nnx.eval_shape(tasks.from_config(config).model(config, vocab_size))
  graphdef, params = nnx.split(model, nnx.Param)
  shardings = sharding.get_shardings(params, mesh, config.sharding_rules)
  return graphdef, jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shardings)


def checkpoint_steps(workdir: str) -> list[int]:
  """Steps of the complete checkpoints in WORKDIR/checkpoints, ascending (read-only)."""
  directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
  return sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def restore_params(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
                   step: int | None = None, vocab_size: int | None = None
                   ) -> tuple[nnx.Module, int]:
  """(model, step): config.task's model of a workdir's checkpoint (latest when step is None),
  sharded on `mesh` by config.sharding_rules (any mesh or device count).

  Reads only the parameters (the optimizer state is never allocated) and never
  writes to the workdir, so it is safe while a run is still training there.
  vocab_size: default from the checkpoint's side-car (written there since 2026-11-23; an older
  checkpoint needs it passed, as export does with the tokenizer's length).
  """
  workdir = os.path.abspath(workdir)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"No complete checkpoint in {workdir}/{CHECKPOINT_SUBDIR}: "
                            "train first, or check --workdir.")
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise FileNotFoundError(f"No checkpoint for step {step} in {workdir}; available: {steps}.")
  step_dir = os.path.join(workdir, CHECKPOINT_SUBDIR, str(step))
  if vocab_size is None:
    extra = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        os.path.join(step_dir, EXTRA_ITEM))
    vocab_size = (extra or {}).get("vocab_size")
    if vocab_size is None:
      raise FileNotFoundError(f"{os.path.join(step_dir, EXTRA_ITEM)} has no vocab_size; pass "
                              "restore_params(..., vocab_size=) (the tokenizer's length).")
  graphdef, target = abstract_params(config, mesh, int(vocab_size))
  item = {"params": target}
  restored = ocp.PyTreeCheckpointer().restore(
      os.path.join(step_dir, STATE_ITEM),
      args=ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(item)))
  logging.info("Restored the parameters of step %d from %s.", step, step_dir)
  return nnx.merge(graphdef, restored["params"]), step
