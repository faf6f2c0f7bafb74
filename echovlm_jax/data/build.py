"""Programmatic dataset build: config.input -> the `echoground` builder, prepared on first use.

The trainer calls `ensure_dataset(config.input)`; the same code is a CLI:

  python -m echovlm_jax.data.build --config configs/echovlm.py:runlocal
  python -m echovlm_jax.data.build --config configs/echovlm.py --config.input.builder_config=mimic \
      --config.input.manual_dir=/data/mimic-iv-echo \
      --beam_pipeline_options="runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Mapping

import jax
import tensorflow_datasets as tfds
from etils import epath

from echovlm_jax.data import artifacts
from echovlm_jax.data import build_report
from echovlm_jax.data import fileio
from echovlm_jax.data import reader_options
from echovlm_jax.echo import schema
from tfds_builders.echoground import Builder, EchogroundConfig

def _registered(name: str) -> EchogroundConfig:
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
  base = _registered(kind)
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
    cfg = dataclasses.replace(_registered(kind), **params, frames_at="cycle",
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
  base = _registered(kind)
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
  changed = {f.name for f in dataclasses.fields(options)
             if getattr(options, f.name) != getattr(default, f.name)}
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


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  d = builder.data_dir
  return all(fileio.exists(fileio.join(d, f)) for f in
             ("dataset_info.json", artifacts.TOKENIZER_FILENAME, artifacts.STATS_FILENAME))


def _stale(builder: tfds.core.DatasetBuilder) -> str | None:
  """The fingerprint a prepared dataset was built with, when it is not the current code's."""
  path = fileio.join(builder.data_dir, artifacts.REPORT_FILENAME)
  built = artifacts.load_report(builder.data_dir).get("code_fingerprint") if fileio.exists(path) else None
  return None if built == artifacts.code_fingerprint() else str(built)


def _drop_if_stale(builder: tfds.core.DatasetBuilder) -> bool:
  """A dataset built by other caption / label / reader code is never used: a synthetic one is
  deleted for a rebuild (about a minute; by process 0, True when it was), a real one stops the
  run, on every host, with the command that rebuilds it."""
  built = _stale(builder)
  if built is None:
    return False
  msg = (f"{builder.data_dir} was built by other caption / label / reader code (fingerprint "
         f"{built}, now {artifacts.code_fingerprint()}; artifacts.CONTENT_MODULES).")
  if builder.builder_config.source != "synthetic":
    raise RuntimeError(msg + f" Remove it and rebuild: rm -r {builder.data_dir} && python -m "
                       "echovlm_jax.data.build --config <your config> (see docs/mimic.md).")
  if jax.process_index() == 0:
    print(msg + " Rebuilding it.", flush=True)
    if fileio.is_remote(builder.data_dir):
      epath.Path(builder.data_dir).rmtree()
    else:
      shutil.rmtree(builder.data_dir)
  return True


def build_commands(input_config: Mapping[str, Any]) -> list[str]:
  """The commands that build config.input's dataset outside a training job: ours (any config)
  and, for the registered `mimic` config, plain `tfds build`; both take Beam options."""
  ic = input_config
  flags = [f"--config.input.{k}={ic[k]}" for k in ("builder_config", "manual_dir", "data_dir",
                                                   "image_size", "num_frames", "clip_fps",
                                                   "vocab_size", "num_shards")]
  if ic["builder_config"] == "mimic":
    default = _registered("mimic").mimic
    flags += [f"--config.input.mimic.{k}={v}" for k, v in ic["mimic"].items()
              if getattr(default, k) != v]
  elif ic["builder_config"] == "synthetic":
    default = _registered("synthetic").synthetic
    flags += [f"--config.input.synthetic.{k}={v}" for k, v in ic["synthetic"].items()
              if getattr(default, k) != v]
  else:
    flags += [f"--config.input.{k}={ic[k]}" for k in ("frames_at",)]
  beam = ('--beam_pipeline_options="runner=DirectRunner,direct_num_workers=8,'
          'direct_running_mode=multi_processing"')
  out = [" ".join(["python -m echovlm_jax.data.build --config configs/echovlm.py", *flags, beam])]
  name = builder_config_for(ic).name
  if name in ("mimic", *schema.DENSE_RELEASES):
    out.append(f"tfds build tfds_builders/echoground --config {name} --manual_dir {ic['manual_dir']} "
               f"--data_dir {os.path.abspath(os.path.expanduser(ic['data_dir']))} {beam}")
  return out


def ensure_dataset(input_config: Mapping[str, Any], *, build_real: bool = True,
                   beam_options: str = "") -> tfds.core.DatasetBuilder:
  """Returns the prepared builder for config.input, building it first if missing.

  build_real=False (training and evaluation jobs): a missing real (`mimic`) dataset stops the
  job on every host, before any device work, with the command that builds it; building it
  is a job of its own (hours on one core for the release; Beam spreads it over workers).
  The synthetic dataset and the dense releases (CAMUS, EchoNet: minutes) are still built on
  first use. beam_options: "k=v,k=v" Beam pipeline
  options for a `mimic` build (as `tfds build --beam_pipeline_options`).
  Multi-host: process 0 builds (data_dir must be shared, e.g. GCS or NFS) and
  the others wait at a barrier. TFDS shows progress bars; the build report is
  printed at the end and kept as build_report.json in builder.data_dir, beside
  the tokenizer and measurement_stats.json.
  """
  builder = get_builder(input_config)
  if not build_real and builder.builder_config.source == "mimic" and not _is_prepared(builder):
    raise FileNotFoundError(
        f"The {builder.builder_config.name} dataset is not built in {builder.data_dir}. A training "
        "job never builds real data; build it first (once, on a machine or cluster of its own):\n  "
        + "\n  ".join(build_commands(input_config)))
  if _is_prepared(builder) and _drop_if_stale(builder):
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("echoground_stale_dropped")
    builder = get_builder(input_config)
  if not _is_prepared(builder):
    if jax.process_index() == 0:
      cfg = builder.builder_config
      logging.info("Building echoground/%s into %s (first use).", cfg.name, builder.data_dir)
      print(f"Building dataset echoground/{cfg.name} into {builder.data_dir} (first use) ...", flush=True)
      if not sys.stderr.isatty():
        # Progress bars redraw with carriage returns: in a log file (a training job's, CI's)
        # they are megabytes of one line. The report printed at the end says what was built.
        tfds.disable_progress_bar()
      t0 = time.time()
      dl_config = tfds.download.DownloadConfig(
          num_shards=int(input_config["num_shards"]),
          manual_dir=os.path.expanduser(input_config["manual_dir"]) or None,
          beam_options=_beam_options(beam_options))
      builder.download_and_prepare(download_config=dl_config)
      print(f"Built echoground/{cfg.name} in {time.time() - t0:.1f} s.", flush=True)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("echoground_build")
    builder = get_builder(input_config)  # re-read the info written by the build
    if not _is_prepared(builder):
      raise FileNotFoundError(
          f"echoground not found in {builder.data_dir} on process {jax.process_index()} after the "
          "build: config.input.data_dir must be a directory every host can read.")
  return builder


def _beam_options(spec: str):
  """"runner=DirectRunner,direct_num_workers=2" -> PipelineOptions (None when empty)."""
  if not spec:
    return None
  from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  return pipeline_options.PipelineOptions(flags=[f"--{kv.strip()}" for kv in spec.split(",")])


def main(argv) -> None:
  del argv
  builder = ensure_dataset(_CONFIG.value.input, beam_options=_BEAM.value)
  print(build_report.format_report(artifacts.load_report(builder.data_dir)))
  print(f"Dataset: {builder.data_dir}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/echovlm.py", "Training config file.")
  _BEAM = flags.DEFINE_string(
      "beam_pipeline_options", "", "Beam options for a mimic build, as tfds build takes them: "
      "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing")
  app.run(main)
