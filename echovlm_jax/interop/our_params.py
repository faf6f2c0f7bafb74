"""Our parameters as the name tables see them: flat host arrays by "tower/.../name" with scanned
encoders unstacked to ".../encoder/blocks/<i>/...", and the write-back that restacks them and
keeps every array's dtype and sharding.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx
from flax import traverse_util

from echovlm_jax.interop.weights import Flat


def _name(path: tuple) -> str:
  return "/".join(map(str, path))  # layer indices are ints in nnx.to_pure_dict


def flatten(tree: Mapping) -> dict[str, Any]:
  """A nested dict (nnx.to_pure_dict) -> {"a/b/c": leaf}, in tree order."""
  return {_name(path): v for path, v in traverse_util.flatten_dict(tree).items()}


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
  depths, new = _depths(model_config), {}
  for path, old in traverse_util.flatten_dict(nnx.to_pure_dict(params)).items():
    name = _name(path)
    if _scanned(name, model_config):
      head, rest = name.split("/encoder/blocks/")
      value = np.stack([arrays[f"{head}/encoder/blocks/{i}/{rest}"]
                        for i in range(depths[name.split("/")[0]])])
    else:
      value = arrays[name]
    value = value.astype(old.dtype)
    if isinstance(old, jax.Array):
      value = jax.make_array_from_callback(value.shape, old.sharding, lambda idx, v=value: v[idx])
    new[path] = value
  nnx.replace_by_pure_dict(params, traverse_util.unflatten_dict(new))
  return params
