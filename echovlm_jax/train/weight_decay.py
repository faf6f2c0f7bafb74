"""Which parameters weight decay reaches: decided by what a leaf is (its name), not its rank.

Rank is a poor proxy: q/k/v biases are [heads, head_dim] and, with `model.scan_layers`, every
stacked LayerNorm scale and bias is [depth, width], so `ndim >= 2` decays them. As big_vision
decays `.*/kernel$`, a leaf here is classified by its name into one of KINDS, and
`config.wd_kinds` lists the kinds that are decayed:

  kernel     weight matrices: dense kernels and the attention query / key / value / out
             projections
  embedding  learned tables: token embedding, position embeddings, class token, MAP probe
  norm       LayerNorm scales and biases
  bias       every other bias (dense, attention, q/k/v)
  scalar     the learned temperature (logit_scale) and the sigmoid loss's logit_bias

A parameter whose name fits no kind is an error at start, so a new module cannot slip in
decayed (or not) by accident.
"""

from __future__ import annotations

from typing import Any

import jax

KINDS = ("kernel", "embedding", "norm", "bias", "scalar")

_KERNELS = frozenset({"kernel", "query", "key", "value", "out"})
_EMBEDDINGS = frozenset({"token_embedding", "posemb", "cls", "probe"})
_SCALARS = frozenset({"logit_scale", "logit_bias"})
# Modules whose scale / bias are a normalisation's (models/layers.LayerNorm attributes).
_NORM_MODULES = ("ln", "norm")


def _names(path) -> list[str]:
  """Path entries as strings, the trailing `.value` of an nnx.Param dropped."""
  out = []
  for entry in path:
    name = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
    out.append(str(name))
  return out[:-1] if out and out[-1] == "value" else out


def leaf_kind(path) -> str:
  """The kind (one of KINDS) of the parameter at `path` (a jax tree path). Raises ValueError
  for a name no rule covers."""
  names = _names(path)
  leaf = names[-1]
  parent = names[-2] if len(names) > 1 else ""
  if leaf in _SCALARS:
    return "scalar"
  if leaf == "scale" or (leaf == "bias" and parent.startswith(_NORM_MODULES)):
    if not parent.startswith(_NORM_MODULES):
      raise ValueError(f"parameter {'/'.join(names)}: a scale outside a norm module.")
    return "norm"
  if leaf == "bias" or leaf.endswith("_bias"):
    return "bias"
  if leaf in _KERNELS:
    return "kernel"
  if leaf in _EMBEDDINGS:
    return "embedding"
  raise ValueError(f"parameter {'/'.join(names)}: no weight-decay kind for the name "
                   f"{leaf!r}; add it to echovlm_jax/train/weight_decay.py (kinds {KINDS}).")


def parse_kinds(spec: str) -> frozenset[str]:
  """"kernel,embedding" -> {"kernel", "embedding"}; raises ValueError naming the bad kind."""
  kinds = frozenset(k.strip() for k in str(spec).split(",") if k.strip())
  unknown = sorted(kinds - set(KINDS))
  if unknown:
    raise ValueError(f"config.wd_kinds={spec!r}: unknown kind(s) {unknown}; expected a "
                     f"comma-separated subset of {', '.join(KINDS)}.")
  return kinds


def decay_mask(params: Any, spec: str) -> Any:
  """Bool tree over params: True where weight decay applies (the leaf's kind is in spec)."""
  kinds = parse_kinds(spec)
  return jax.tree_util.tree_map_with_path(lambda path, _: leaf_kind(path) in kinds, params)
