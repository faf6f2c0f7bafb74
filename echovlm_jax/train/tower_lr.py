"""Per-tower learning-rate multipliers and freezing, for fine-tuning from a checkpoint
(e.g. a pretrained text tower beside a fresh image tower).

config.lr_mult = {image: m, text: m}: the image tower with image_proj, the text tower with
text_proj; everything else (temperature, bias, measurement head) keeps the base rate. m = 0
freezes the tower (no update, no weight decay, no optimizer state); other m scale its updates,
which for AdamW is exactly lr * m (the decoupled weight decay is scaled with it). All 1 (the
default) is the plain optimizer, with the same state as before.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

TOWERS = {"image": ("image", "image_proj"), "text": ("text", "text_proj")}


def _label(path) -> str:
  first = path[0]
  key = getattr(first, "key", getattr(first, "name", first))
  for tower, roots in TOWERS.items():
    if key in roots:
      return tower
  return "rest"


def labels(params: Any) -> Any:
  """The tree of "image" | "text" | "rest" over params (by their top-level name)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _label(path), params)


def multipliers(config: Any) -> dict[str, float]:
  mult = dict(config.lr_mult)
  unknown = sorted(set(mult) - set(TOWERS))
  if unknown:
    raise ValueError(f"config.lr_mult has {unknown}: expected keys {sorted(TOWERS)}.")
  missing = sorted(set(TOWERS) - set(mult))
  if missing:
    raise ValueError(f"config.lr_mult lacks {missing}: configs/echovlm.py declares "
                     f"{sorted(TOWERS)}.")
  out = {t: float(mult[t]) for t in TOWERS}
  if any(v < 0 for v in out.values()):
    raise ValueError(f"config.lr_mult={out}: multipliers must be >= 0 (0 freezes a tower).")
  return out


def per_tower(config: Any, make_tx: Callable[[], optax.GradientTransformation]
              ) -> optax.GradientTransformation:
  """make_tx() for every parameter, scaled or frozen per tower by config.lr_mult."""
  mult = multipliers(config)
  if all(v == 1.0 for v in mult.values()):
    return make_tx()

  def one(m: float) -> optax.GradientTransformation:
    if m == 0.0:
      return optax.set_to_zero()
    return make_tx() if m == 1.0 else optax.chain(make_tx(), optax.scale(m))

  return optax.multi_transform({"rest": make_tx(), **{t: one(m) for t, m in mult.items()}},
                               labels)
