"""Programmatic dataset build: config.input -> the `echoground` builder, prepared on first use.

The trainer calls `ensure_dataset(config.input)`; the same code is a CLI:

  python -m echovlm_jax.data.build --config configs/echovlm.py:runlocal
  python -m echovlm_jax.data.build --config configs/echovlm.py --config.input.builder_config=mimic \
      --config.input.manual_dir=/data/mimic-iv-echo \
      --beam_pipeline_options="runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"
"""

from __future__ import annotations

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
from echovlm_jax.data import builders
from echovlm_jax.data import fileio
from echovlm_jax.echo import schema

# What config.input names (data/builders.py); here too, as the public API always had them.
builder_config_for = builders.builder_config_for
get_builder = builders.get_builder


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
    default = builders.registered("mimic").mimic
    flags += [f"--config.input.mimic.{k}={v}" for k, v in ic["mimic"].items()
              if getattr(default, k) != v]
  elif ic["builder_config"] == "synthetic":
    default = builders.registered("synthetic").synthetic
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
  A mixture (config.input.data, data/mixture.py) builds each source, then the files they share
  (one tokenizer over their captions, pooled stats), and returns the first source's builder.
  """
  from echovlm_jax.data import mixture  # pylint: disable=g-import-not-at-top
  if mixture.is_mixture(input_config):
    builders = [ensure_dataset(s.input_config, build_real=build_real, beam_options=beam_options)
                for s in mixture.sources(input_config)]
    mixture.ensure_artifacts(input_config)
    return builders[0]
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
  from echovlm_jax.data import mixture  # pylint: disable=g-import-not-at-top
  ic = _CONFIG.value.input
  ensure_dataset(ic, beam_options=_BEAM.value)
  for s in mixture.sources(ic):
    builder = get_builder(s.input_config)
    print(build_report.format_report(artifacts.load_report(builder.data_dir)))
    print(f"Dataset{f' {s.name}' if s.name else ''}: {builder.data_dir}")
  if mixture.is_mixture(ic):
    print(f"Mixture tokenizer and stats: {mixture.mixture_dir(ic)}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/echovlm.py", "Training config file.")
  _BEAM = flags.DEFINE_string(
      "beam_pipeline_options", "", "Beam options for a mimic build, as tfds build takes them: "
      "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing")
  app.run(main)
