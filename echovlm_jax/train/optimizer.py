"""The optimizer: global-norm clipping, then AdamW with linear warm-up and cosine decay, weight
decay on the kinds of parameter config.wd_kinds names (weight_decay.py), scaled or frozen per
tower by config.lr_mult (tower_lr.py).
"""

from __future__ import annotations

import ml_collections
import optax

from echovlm_jax.train import tower_lr
from echovlm_jax.train import weight_decay


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to config.lr, then cosine decay to 0 at total_steps."""
  warmup = min(config.warmup_steps, max(config.total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=warmup,
      decay_steps=max(config.total_steps, warmup + 1), end_value=0.0)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW (warm-up + cosine lr, decay on the kinds of parameter
  config.wd_kinds names), scaled or frozen per tower by config.lr_mult."""
  kinds = config.wd_kinds
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip_norm),
      tower_lr.per_tower(config, lambda: optax.adamw(
          make_schedule(config), b1=config.b1, b2=config.b2, weight_decay=config.wd,
          mask=lambda params: weight_decay.decay_mask(params, kinds))),
  )
