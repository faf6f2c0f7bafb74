"""Weight decay reaches weight matrices only (issue 20): with zero gradients the optimizer
moves every kernel, q/k/v/out projection and embedding table, and no norm, bias, temperature or
sigmoid bias; on the default model with q/k/v biases, with scan_layers (stacked [depth, ...]
norms and biases) and on models built from HF CLIP / SigLIP directories
(tests/test_hf_checkpoints.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import echovlm
from echovlm_jax import distributed
from echovlm_jax.train import checkpointing, optimizer, run_config, weight_decay

# What the contract says by name, written independently of weight_decay.py's rules.
MATRICES = ("kernel", "query", "key", "value", "out", "token_embedding", "posemb", "probe", "cls")
NEVER = ("bias", "scale", "logit_scale", "logit_bias")


def leaf_name(path) -> str:
  names = [str(getattr(e, "key", getattr(e, "name", e))) for e in path]
  return names[-2] if names[-1] == "value" else names[-1]


def moved_by_decay(config, vocab_size: int) -> dict[str, tuple[str, bool]]:
  """Leaf path -> (leaf name, whether one optimizer update with zero gradients changes it),
  params all 1."""
  mesh = distributed.create_mesh(config.mesh, devices=jax.devices()[:1])
  _, abstract = checkpointing.abstract_params(config, mesh, vocab_size)
  tx = optimizer.make_optimizer(config)

  @jax.jit  # one compile; eager, every leaf's shape and op compiled on its own (10-15 s)
  def zero_grad_updates():
    params = jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), abstract)
    zeros = jax.tree.map(jnp.zeros_like, params)
    return tx.update(zeros, tx.init(params), params)[0]

  updates = zero_grad_updates()
  return {jax.tree_util.keystr(p): (leaf_name(p), bool(np.any(np.asarray(u) != 0)))
          for p, u in jax.tree_util.tree_leaves_with_path(updates)}


def assert_matrices_only(config, vocab_size: int) -> None:
  """Every leaf named as a matrix moves, every bias / norm / scalar stays."""
  result = moved_by_decay(config, vocab_size)
  names = {p: n for p, (n, _) in result.items()}
  moved = {p: m for p, (_, m) in result.items()}
  wrong_still = [p for p, n in names.items() if n in MATRICES and not moved[p]]
  wrong_moved = [p for p, n in names.items()
                 if (n in NEVER or n.endswith("_bias")) and moved[p]]
  assert not wrong_still, f"matrices not decayed: {wrong_still}"
  assert not wrong_moved, f"decayed but must not be: {wrong_moved}"
  assert set(names.values()) <= set(MATRICES) | set(NEVER) | {
      n for n in names.values() if n.endswith("_bias")}, sorted(set(names.values()))


def _config(arg: str = "size=ti,res=32", **model):
  c = echovlm.get_config(arg)
  c.warmup_steps = 0                  # lr > 0 at the first update
  for tower in ("image", "text"):
    c.model[tower].update(model)
  return c


def test_default_model_decays_matrices_only():
  assert_matrices_only(_config(), 64)


def test_qkv_biases_are_not_decayed():
  """The [heads, head_dim] q/k/v biases every CLIP / SigLIP checkpoint sets (rank 2)."""
  assert_matrices_only(_config(qkv_bias=True), 64)


def test_scanned_layers_norms_and_biases_are_not_decayed():
  """scan_layers stacks every block leaf to [depth, ...]: norms and biases become rank 2-3."""
  c = _config(qkv_bias=True)
  c.model.scan_layers = True
  assert_matrices_only(c, 64)


def test_wd_kinds_choose_what_is_decayed():
  c = _config()
  c.wd_kinds = "kernel"
  moved = {p: m for p, (_, m) in moved_by_decay(c, 64).items()}
  assert not any(v for p, v in moved.items() if "posemb" in p or "token_embedding" in p)
  assert any(v for p, v in moved.items() if "kernel" in p)
  c.wd_kinds = "kernel,norm"
  moved = {p: m for p, (_, m) in moved_by_decay(c, 64).items()}
  assert all(v for p, v in moved.items() if "['scale']" in p)


def test_unknown_kind_fails_at_start():
  c = _config()
  c.wd_kinds = "kernel,biases"
  mesh = distributed.create_mesh(c.mesh, devices=jax.devices()[:1])
  with pytest.raises(run_config.ConfigError, match="biases.*kernel, embedding, norm, bias, scalar"):
    run_config.validate_config(c, mesh)


def test_a_parameter_of_no_kind_is_an_error():
  path = (jax.tree_util.DictKey("image"), jax.tree_util.DictKey("gamma"))
  with pytest.raises(ValueError, match="image/gamma.*weight_decay.py"):
    weight_decay.leaf_kind(path)
