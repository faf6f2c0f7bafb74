"""Helpers shared by config files: parsing `--config file.py:ARG` strings."""

from __future__ import annotations

import ml_collections


def _cast(key: str, raw: str, default):
  if isinstance(default, bool):
    if raw.lower() in ("1", "true", "yes", ""):
      return True
    if raw.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"Config arg {key}={raw!r}: expected a boolean (true/false).")
  if isinstance(default, int):
    return int(raw)
  if isinstance(default, float):
    return float(raw)
  return raw


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """Parses "size=ti,res=112,runlocal" against `spec` (name -> default).

  A bare name sets a boolean to True. Values are cast to the default's type.
  An unknown name fails with the list of known ones.
  """
  out = dict(spec)
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, _, raw = item.partition("=")
    key = key.strip()
    if key not in spec:
      raise ValueError(f"Unknown config arg {key!r} in {arg!r}; known: {', '.join(sorted(spec))}.")
    if "=" not in item and not isinstance(spec[key], bool):
      raise ValueError(f"Config arg {key!r} needs a value, e.g. {key}={spec[key]}.")
    out[key] = _cast(key, raw.strip(), spec[key])
  return ml_collections.ConfigDict(out)


# config.model_init_skip of a task that keeps only a checkpoint's image tower (the view
# classifier, the dense tasks): a CLIP/SigLIP checkpoint's text tower, temperature and
# projections have no place there (big_vision names, open_clip's, then Hugging Face's; only
# big_vision's is tested).
IMAGE_TOWER_ONLY = ",".join((
    r"^txt/", r"^t$", r"^b$", r"^img/head/",
    r"^transformer\.", r"^token_embedding\.", r"^positional_embedding$", r"^ln_final\.",
    r"^text_projection", r"^logit_scale$", r"^logit_bias$", r"^visual\.proj$",
    r"^text_model\.", r"^visual_projection\."))
