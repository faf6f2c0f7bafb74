r"""The trainer tests' config: the real configs/echovlm.py shrunk to a model that
compiles in seconds (width 32, depth 1, 32 px, patch 16, text length 32), 8-example
batches on the tiny `echoground` of tests/echoground_fixtures.py, evals off.

  python -m echovlm_jax.main --config tests/train_tiny_config.py[:evals] \
      --config.input.data_dir=DIR --workdir W
"""

from __future__ import annotations

import ml_collections

from configs import echovlm


def shrink(c: ml_collections.ConfigDict, data_dir: str | None = None) -> ml_collections.ConfigDict:
  """Any task's config with the tiny dataset (tests/echoground_fixtures.TINY) and towers of
  width 32, depth 1; data_dir sets config.input.data_dir."""
  from tests import echoground_fixtures  # pylint: disable=g-import-not-at-top
  for k in ("synthetic_patients", "synthetic_seed", "image_size", "num_frames", "vocab_size",
            "num_shards", "shuffle_buffer", "prefetch"):
    c.input[k] = echoground_fixtures.TINY[k]
  if data_dir is not None:
    c.input.data_dir = str(data_dir)
  c.input.max_text_len = 32
  c.model.image.update(width=32, depth=1, heads=2)
  c.model.text.update(width=32, depth=1, heads=2)
  c.model.embed_dim = 16
  # The tiny dataset holds 2-frame clips; tests of other things keep the frame average (the
  # video tower has its own tests: test_temporal.py, test_clips.py).
  c.model.image.temporal = "mean"
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: "evals" adds three cheap test-split evaluators (views, retrieval, negation);
  any other items are an echovlm arg string (default "size=ti,res=32,frames=2")."""
  items = [a for a in (arg or "").split(",") if a.strip()]
  with_evals = "evals" in items
  c = shrink(echovlm.get_config(",".join(a for a in items if a != "evals") or "size=ti,res=32,frames=2"))
  c.model.meas_hidden = 8
  c.total_steps = 8
  c.batch_size = 8
  c.warmup_steps = 2
  c.log_every = 1
  c.ckpt_every = 2
  c.keep_ckpts = 10
  with c.unlocked():
    c.evals = ml_collections.ConfigDict()  # evals off: each test that wants one adds it
    if with_evals:
      c.evals.test_views = dict(type="zero_shot_views", split="test", every=0)
      c.evals.test_retrieval = dict(type="retrieval", split="test", every=0)
      c.evals.test_negation = dict(type="negation", split="test", every=0)
  return c
