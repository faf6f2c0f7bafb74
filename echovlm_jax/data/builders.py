"""config.input -> the `echoground` BuilderConfig and builder it names (not prepared: that is
data/build.py). Every dataset's directory name comes from here: a config equal to a registered
one keeps its name, any other spells out its parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping

import tensorflow_datasets as tfds
from etils import epath

from echovlm_jax.data import fileio
from echovlm_jax.data import reader_options
from echovlm_jax.echo import schema
from tfds_builders.echoground import Builder, EchogroundConfig


def registered(name: str) -> EchogroundConfig:
  return next(c for c in Builder.BUILDER_CONFIGS if c.name == name)


def builder_config_for(input_config: Mapping[str, Any]) -> EchogroundConfig:
  """The BuilderConfig a config.input asks for.

  The stored image size is `input.image_size`: the pipeline crops and resizes from it. A
  config equal to a registered one keeps its
  name (`synthetic`, `mimic`); any other gets a name spelling out its parameters,
  so two differently-sized datasets never share a directory.
  """
  kind = input_config["builder_config"]
  if kind not in schema.SOURCES:
    raise ValueError(f"config.input.builder_config={kind!r}: expected one of {schema.SOURCES}.")
  image_size = int(input_config["image_size"])
  params = dict(image_size=image_size, num_frames=int(input_config["num_frames"]),
                vocab_size=int(input_config["vocab_size"]), num_shards=int(input_config["num_shards"]))
  if kind in schema.DENSE_RELEASES:
    return _dense_release_config(kind, input_config, params)
  params["clip_fps"] = _clip_fps(input_config)
  if kind == "synthetic":
    from echovlm_jax.data import synthetic_sites  # pylint: disable=g-import-not-at-top
    synthetic_sites.get(str(input_config["synthetic"]["site"]))  # ValueError naming the key
    params.update(num_patients=int(input_config["synthetic_patients"]),
                  seed=int(input_config["synthetic_seed"]),
                  frames_at=_checked_frames_at(input_config),
                  synthetic=_normalised(reader_options.from_config(
                      reader_options.SyntheticViewOptions, input_config["synthetic"], "synthetic")))
  else:
    if input_config["frames_at"] != "cycle":
      raise ValueError(f"config.input.frames_at={input_config['frames_at']!r} is for synthetic "
                       "data (the renderer knows each frame's phase); a mimic build takes "
                       "frames_at='cycle'.")
    params.update(mimic=_normalised(reader_options.from_config(
        reader_options.MimicOptions, input_config["mimic"], "mimic")))
  base = registered(kind)
  cfg = dataclasses.replace(base, **params)
  # num_shards is how the data is laid out, and the other source's options are not read:
  # neither is part of the name.
  ignored = {"num_shards", "mimic" if kind == "synthetic" else "synthetic"}
  if all(getattr(cfg, k) == getattr(base, k) for k in params if k not in ignored):
    return base  # TFDS accepts a registered config only as itself; shards go via DownloadConfig
  options = cfg.synthetic if kind == "synthetic" else cfg.mimic
  if kind == "synthetic":
    name = f"{kind}_p{cfg.num_patients}_s{cfg.seed}_i{cfg.image_size}_t{cfg.num_frames}_v{cfg.vocab_size}"
    if cfg.frames_at != "cycle":
      name += f"_{cfg.frames_at}"
    if cfg.synthetic.site != "a":
      name += f"_site{cfg.synthetic.site}"
  else:
    name = f"{kind}_i{cfg.image_size}_t{cfg.num_frames}_v{cfg.vocab_size}"
  if cfg.clip_fps:
    name += f"_f{cfg.clip_fps:g}"
  fingerprint = _options_fingerprint(options, kind)
  if fingerprint:
    # Options change what the dataset holds: a short fingerprint keeps them apart.
    name += ("_h" if kind == "synthetic" else "_r") + fingerprint
  description = f"{base.description.split(',')[0]}: {name}." if kind == "synthetic" else f"{base.description} ({name})"
  return dataclasses.replace(cfg, name=name, description=description)


def _dense_release_config(kind: str, input_config: Mapping[str, Any], params: dict
                          ) -> EchogroundConfig:
  """camus / echonet_dynamic / echonet_lvh: ED and ES pairs, named by size and vocabulary;
  EchoNet-Dynamic also as clips (frames_at "cycle"), named by T and frame rate too."""
  from echovlm_jax.data import dense_records  # pylint: disable=g-import-not-at-top
  if kind in dense_records.CLIP_READERS and input_config["frames_at"] == "cycle":
    cfg = dataclasses.replace(registered(kind), **params, frames_at="cycle",
                              clip_fps=_clip_fps(input_config))
    name = f"{kind}_i{cfg.image_size}_t{cfg.num_frames}_v{cfg.vocab_size}"
    name += f"_f{cfg.clip_fps:g}" if cfg.clip_fps else ""
    return dataclasses.replace(cfg, name=name, description=f"{cfg.description} ({name}, clips)")
  if int(input_config["num_frames"]) != 2 or input_config["frames_at"] != "ed_es":
    raise ValueError(f"config.input.builder_config={kind!r} gives an ED and an ES frame per "
                     "example: set config.input.num_frames=2 and config.input.frames_at='ed_es' "
                     "(configs/segmentation.py and configs/landmarks.py do)"
                     + ("; or frames_at='cycle' for clips." if kind in dense_records.CLIP_READERS
                        else "."))
  base = registered(kind)
  cfg = dataclasses.replace(base, **params)
  if (cfg.image_size, cfg.vocab_size) == (base.image_size, base.vocab_size):
    return base
  name = f"{kind}_i{cfg.image_size}_v{cfg.vocab_size}"
  return dataclasses.replace(cfg, name=name, description=f"{base.description} ({name})")


def _clip_fps(input_config: Mapping[str, Any]) -> float:
  """config.input.clip_fps as the builder takes it: 0 where it changes nothing (a still, or
  frames at given phases), so it names no other dataset there."""
  fps = float(input_config["clip_fps"])
  if fps < 0:
    raise ValueError(f"config.input.clip_fps={fps}: expected >= 0 (0 = frames over one cycle "
                     "or the whole file).")
  if int(input_config["num_frames"]) == 1 or input_config["frames_at"] != "cycle":
    return 0.0
  return fps


def _checked_frames_at(input_config: Mapping[str, Any]) -> str:
  from echovlm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  frames_at = str(input_config["frames_at"])
  synthetic.phases_for(frames_at, int(input_config["num_frames"]))  # ValueError naming the key
  return frames_at


def _normalised(options):
  """The predictions' threshold matters only with predictions: without them it is reset, so
  it alone never names another dataset."""
  if options.view_predictions:
    return options
  return dataclasses.replace(options, view_predictions_min_prob=type(options)().view_predictions_min_prob)


def _options_fingerprint(options: reader_options.MimicOptions | reader_options.SyntheticViewOptions,
                         kind: str) -> str:
  """8 hex digits naming non-default reader options, "" when every option is the default.

  The view predictions count by content, not path (relabelling makes another dataset), and
  their threshold only with them. The hashed keys are those of the names datasets had before
  the options were one dataclass, so existing builds keep their directory: mimic hashes its
  five reader options whenever one differs, link_tolerance_h only when not the default.
  """
  default = type(options)()
  # The synthetic site is spelled out in the name (`_siteb`), not hashed.
  changed = {f.name for f in dataclasses.fields(options)
             if getattr(options, f.name) != getattr(default, f.name) and f.name != "site"}
  if not changed:
    return ""
  if kind == "synthetic":
    keys = {"hidden_view_fraction": options.hidden_view_fraction}
  else:
    keys = {k: getattr(options, k) for k in ("test_type", "echoview_csv", "view_csv",
                                             "view_min_prob", "allow_unknown_views")}
    if "link_tolerance_h" in changed:
      keys["link_tolerance_h"] = options.link_tolerance_h
  if options.view_predictions:
    keys.update(view_predictions=_file_sha256(options.view_predictions, kind),
                view_predictions_min_prob=options.view_predictions_min_prob)
  return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:8]


def _file_sha256(path: str, kind: str) -> str:
  """sha256 of a file's bytes; a missing file is a setup error naming the config key."""
  if not fileio.isfile(path):
    how = ("python -m echovlm_jax.tools.label_views (docs/mimic.md)" if kind == "mimic" else
           "python -m echovlm_jax.tools.label_views --synthetic (docs/results.md)")
    raise FileNotFoundError(f"config.input.{kind}.view_predictions={path}: no such file; write it "
                            f"with {how}.")
  # read_bytes, not hashlib.file_digest: a remote (gs://) file object has no readinto. A
  # predictions CSV is a few MB at most.
  return hashlib.sha256(epath.Path(path).read_bytes()).hexdigest()


def get_builder(input_config: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
  """The builder for config.input (not prepared: see `ensure_dataset`); data_dir may be gs://."""
  data_dir = str(input_config["data_dir"])
  if not fileio.is_remote(data_dir):
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return Builder(config=builder_config_for(input_config), data_dir=data_dir)
