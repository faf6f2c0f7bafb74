"""Where a task with EchoVLM's image tower (the view classifier, the dense tasks) gets the
tower's weights: an exported EchoVLM artifact, a CLIP / SigLIP checkpoint through
config.model_init, or none (scratch). Everything but `params["image"]` keeps its initialisation.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from flax import nnx


def _put_like(value: Any, old: Any) -> Any:
  value = np.asarray(value).astype(old.dtype)
  if isinstance(old, jax.Array):
    return jax.make_array_from_callback(value.shape, old.sharding, lambda idx: value[idx])
  return value


def _is_temporal(key) -> bool:
  return any(getattr(k, "key", None) == "temporal" for k in key)


def tower_from_artifact(params: nnx.State, path: str, key: str) -> nnx.State:
  """params with the image tower of an exported EchoVLM artifact (python -m
  echovlm_jax.tools.export). ValueError names config.`key` and lists every parameter that
  does not fit."""
  from echovlm_jax.inference import artifact  # pylint: disable=g-import-not-at-top
  art_config = artifact.verify_artifact(path)
  source = nnx.to_pure_dict(nnx.state(artifact.restore_model(path, art_config).image, nnx.Param))
  pure = nnx.to_pure_dict(params)
  ours = pure["image"]
  src_flat = dict(jax.tree_util.tree_leaves_with_path(source))
  our_flat = dict(jax.tree_util.tree_leaves_with_path(ours))
  # A video tower from a frame model's artifact: its temporal encoder keeps its identity
  # initialisation (models/temporal.py), so the clip embedding starts as the frame model's.
  added = [k for k in our_flat if k not in src_flat and _is_temporal(k)]
  problems = [f"{jax.tree_util.keystr(k)}: ours {our_flat[k].shape}, artifact "
              f"{np.shape(src_flat[k]) if k in src_flat else 'missing'}"
              for k in our_flat if k not in added and
              (k not in src_flat or np.shape(src_flat[k]) != our_flat[k].shape)]
  dropped = [k for k in src_flat if k not in our_flat]
  problems += [f"{jax.tree_util.keystr(k)}: not in ours" for k in dropped if not _is_temporal(k)]
  if problems:
    raise ValueError(f"config.{key}={path}: its image tower does not fit "
                     f"config.model.image ({len(problems)} parameter(s)): " + "; ".join(problems[:10])
                     + ". Use the config size / res / scan_layers the artifact was trained with.")
  if dropped:
    logging.warning("Image tower from %s: a video tower's %d temporal arrays are left out (this "
                    "config averages frames: config.model.image.temporal).", path, len(dropped))
  if added:
    src_flat.update({k: our_flat[k] for k in added})
    logging.info("Image tower from %s: its %d temporal arrays start at the identity.", path,
                 len(added))
  treedef = jax.tree_util.tree_structure(ours)
  source = jax.tree_util.tree_unflatten(treedef, [src_flat[k] for k, _ in
                                                  jax.tree_util.tree_leaves_with_path(ours)])
  pure["image"] = jax.tree.map(_put_like, source, ours)
  nnx.replace_by_pure_dict(params, pure)
  logging.info("Image tower from %s (%d arrays).", path, len(our_flat))
  return params


def init_image_tower(params: nnx.State, config, init_checkpoint, artifact_key: str) -> nnx.State:
  """From the artifact at config.`artifact_key` (an exported EchoVLM), else config.model_init
  (pretrained CLIP/SigLIP towers, init_checkpoint when already read; their text tower is
  dropped through config.model_init_skip), else as initialised."""
  section, name = artifact_key.split(".")
  artifact = config[section][name]
  if artifact and config.model_init:
    raise ValueError(f"config.{artifact_key} and config.model_init are both set: pick one "
                     "source for the image tower.")
  if artifact:
    return tower_from_artifact(params, artifact, artifact_key)
  if config.model_init:
    # The trainer's own hook: the checkpoint's input normalisation is folded in as for EchoVLM.
    from echovlm_jax.interop import init_from_checkpoint  # pylint: disable=g-import-not-at-top
    return init_from_checkpoint.load_towers(params, config, init_checkpoint)
  return params
