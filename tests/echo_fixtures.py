"""Seeded random measurement sets for the echo property tests (shared by several files)."""

import math
import random

from echovlm_jax.echo import schema


def random_cases(n: int, seed: int):
  """n tuples (view, measurements, sex, rng) covering all views, sexes, NaN and absence."""
  rng = random.Random(seed)
  for i in range(n):
    m = {}
    for name in schema.MEASUREMENTS:
      r = rng.random()
      if r < 0.15:
        continue
      if r < 0.2:
        m[name] = math.nan
        continue
      lo, hi = schema.MEASUREMENT_INFO[name].plausible_range
      m[name] = round(rng.uniform(lo, hi), rng.choice([0, 1, 2, 3]))
    view = schema.VIEWS[i % len(schema.VIEWS)]
    sex = ("M", "F", None, "f", "other")[i % 5]
    yield view, m, sex, rng
