"""Our parameters as the name tables see them: flat host arrays by "tower/.../name" with scanned
encoders unstacked to ".../encoder/blocks/<i>/...", and the write-back that restacks them and
keeps every array's dtype and sharding.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx

from echovlm_jax.interop.weights import Flat


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  """A nested dict (nnx.to_pure_dict) -> {"a/b/c": leaf}."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(flatten(v, name + "/"))
    else:
      out[name] = v
  return out


def set_leaf(tree: dict, keys: list[str], value: Any) -> None:
  """tree[k0][k1]... = value; a key that is not in the dict is a layer index."""
  for k in keys[:-1]:
    tree = tree[k if k in tree else int(k)]
  last = keys[-1]
  tree[last if last in tree else int(last)] = value


def _depths(model_config: Any) -> dict[str, int]:
  return {"image": int(model_config.image.depth), "text": int(model_config.text.depth)}


def _scanned(name: str, model_config: Any) -> bool:
  """Whether `name` is a stacked [depth, ...] encoder array of a scan_layers model."""
  return (bool(model_config.scan_layers) and "/encoder/blocks/" in name
          and name.split("/")[0] in _depths(model_config))


def per_layer(params: nnx.State, model_config: Any) -> Flat:
  """params (our nnx.State, sharded or not) as host arrays by name, one entry per layer."""
  out, depths = {}, _depths(model_config)
  for name, v in flatten(nnx.to_pure_dict(params)).items():
    v = np.asarray(jax.device_get(v))
    if _scanned(name, model_config):
      head, rest = name.split("/encoder/blocks/")
      for i in range(depths[name.split("/")[0]]):
        out[f"{head}/encoder/blocks/{i}/{rest}"] = v[i]
    else:
      out[name] = v
  return out


def write_back(params: nnx.State, model_config: Any, arrays: Flat) -> nnx.State:
  """params with every array replaced by arrays[name] (the names of `per_layer`), restacked
  where scanned, in the old dtype and sharding."""
  pure, depths = nnx.to_pure_dict(params), _depths(model_config)
  for name, old in flatten(pure).items():
    if _scanned(name, model_config):
      head, rest = name.split("/encoder/blocks/")
      value = np.stack([arrays[f"{head}/encoder/blocks/{i}/{rest}"]
                        for i in range(depths[name.split("/")[0]])])
    else:
      value = arrays[name]
    value = value.astype(old.dtype)
    if isinstance(old, jax.Array):
      value = jax.make_array_from_callback(value.shape, old.sharding, lambda idx, v=value: v[idx])
    set_leaf(pure, name.split("/"), value)
  nnx.replace_by_pure_dict(params, pure)
  return params
