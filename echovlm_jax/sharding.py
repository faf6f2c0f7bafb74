"""Logical axis names -> mesh axes -> NamedShardings, for parameters and batches.

Parameters carry logical names (`embed`, `mlp`, ...) as `out_sharding` metadata; the rules in
config.sharding_rules map them to the mesh axes `data`, `fsdp`, `tensor`. The batch axis of every
activation goes over ("data", "fsdp"). A rule's mesh axis that does not divide a dim is
dropped there (that dim is replicated); `check_divisible` says so at start, or fails when
config.sharding_strict asks for it.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Rules = Sequence[tuple[str, str | Sequence[str] | None]]


class ShardingError(ValueError):
  """The rules cannot shard a parameter as asked and the caller asked for strict."""

BATCH_AXES = ("data", "fsdp")


def _as_tuple(axes: str | Sequence[str] | None) -> tuple[str, ...]:
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(names: Sequence[str | None], rules: Rules, mesh: Mesh,
                    shape: Sequence[int] | None = None, dropped: list[str] | None = None) -> P:
  """PartitionSpec for an array whose dims have logical `names`.

  A name without a rule is replicated. A mesh axis is used at most once per array (first dim
  wins), axes the mesh lacks are skipped, and with `shape` an axis is dropped where it does
  not divide the dim (e.g. 3 heads on tensor=2), so every rule set gives a valid sharding.
  Each such drop is appended to `dropped` (when given) as "dim i (name=size) not over axis=n".
  """
  table = {name: _as_tuple(axes) for name, axes in rules}
  used: set[str] = set()
  spec = []
  for i, name in enumerate(names):
    kept, size = [], 1
    for axis in table.get(name, ()) if name is not None else ():
      if axis in used or axis not in mesh.shape:
        continue
      if shape is not None and shape[i] % (size * mesh.shape[axis]):
        if dropped is not None and mesh.shape[axis] > 1:  # a size-1 axis changes nothing
          dropped.append(f"dim {i} ({name}={shape[i]}) not over {axis}={mesh.shape[axis]}")
        continue
      kept.append(axis)
      size *= mesh.shape[axis]
    used.update(kept)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def get_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of nnx Variables (model or optimizer state, abstract or not).

  Variables with `out_sharding` metadata follow the rules; anything else is replicated.
  """
  def one(x):
    if isinstance(x, nnx.Variable):
      names = x.get_metadata().get("out_sharding") or ()
      shape = getattr(x.get_value(), "shape", ())
      spec = logical_to_spec(names, rules, mesh, shape) if names else P()
      return x.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def undivided(tree: Any, mesh: Mesh, rules: Rules) -> dict[str, list[str]]:
  """Parameters (path -> reasons) where a rule's mesh axis was dropped because it does not
  divide the dim: those parameters are partly replicated on `mesh`."""
  found = {}
  for path, x in jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda v: isinstance(v, nnx.Variable)):
    names = x.get_metadata().get("out_sharding") if isinstance(x, nnx.Variable) else None
    if not names:
      continue
    dropped: list[str] = []
    logical_to_spec(names, rules, mesh, getattr(x.get_value(), "shape", ()), dropped)
    if dropped:
      found[jax.tree_util.keystr(path, simple=True, separator="/")] = dropped
  return found


def check_divisible(tree: Any, mesh: Mesh, rules: Rules, strict: bool = False
                    ) -> dict[str, list[str]]:
  """Warns (or with `strict` raises ShardingError) listing the parameters of `tree` that the
  rules cannot fully shard on `mesh`, e.g. 3 heads on tensor=2: a tensor-parallel run would
  otherwise hold full copies silently. Returns what `undivided` found."""
  found = undivided(tree, mesh, rules)
  if found:
    listing = "; ".join(f"{p}: {', '.join(r)}" for p, r in sorted(found.items()))
    message = (f"{len(found)} parameter(s) are partly replicated on mesh {dict(mesh.shape)} "
               f"because a mesh axis does not divide their dim: {listing}. Pick sizes the mesh "
               "divides (width, heads, mlp, vocab) or another config.mesh")
    if strict:
      raise ShardingError(message + "; or set config.sharding_strict=False to run anyway.")
    logging.warning("%s (config.sharding_strict=True makes this an error).", message)
  return found


def create_sharded(init: Callable[[], nnx.Module], mesh: Mesh, rules: Rules,
                   strict: bool = False) -> nnx.Module:
  """Runs `init` under jit with out_shardings from the rules: no parameter ever exists
  unsharded (a model too big for one device can be created). Partly replicated
  parameters are reported first (`check_divisible`), before anything is allocated."""
  graphdef, abstract_state = nnx.split(nnx.eval_shape(init))
  check_divisible(abstract_state, mesh, rules, strict)
  shardings = get_shardings(abstract_state, mesh, rules)

  @jax.jit(out_shardings=shardings)
  def init_state():
    return nnx.split(init())[1]

  return nnx.merge(graphdef, init_state())


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the batch dim is split over: ("data", "fsdp") where present."""
  return tuple(a for a in BATCH_AXES if a in mesh.shape)


def batch_spec(mesh: Mesh) -> P:
  """PartitionSpec with the leading (batch) dim over ("data", "fsdp"), the rest replicated."""
  return P(batch_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """NamedSharding for any [B, ...] array of a global batch."""
  return NamedSharding(mesh, batch_spec(mesh))


def num_batch_shards(mesh: Mesh) -> int:
  """How many ways the global batch is split (its size must be a multiple of this)."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size",
                     micro_batches: int = 1) -> int:
  """The per-process batch of a global `batch_size`; ValueError (naming `what`) unless every
  micro-batch splits evenly over the batch axes and the batch over the processes."""
  shards, pc = num_batch_shards(mesh), jax.process_count()
  if batch_size < 1 or batch_size % (shards * micro_batches) or batch_size % pc:
    accum = f" times config.grad_accum_steps={micro_batches}" if micro_batches > 1 else ""
    raise ValueError(f"{what}={batch_size} must be divisible by the mesh's batch axes "
                     f"data*fsdp={shards}{accum}, and by the process count {pc}; pick a "
                     f"multiple of {math.lcm(shards * micro_batches, pc)}.")
  return batch_size // pc


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local [B_local, ...] numpy arrays -> global [B, ...] jax.Arrays on the batch sharding.

  On one host the local batch is the global batch; on many, each host passes its own slice
  and the global array is assembled from them.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
