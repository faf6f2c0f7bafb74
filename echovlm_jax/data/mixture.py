"""Weighted mixtures of echoground builds: `config.input.data`.

  python -m echovlm_jax.main --config configs/echovlm.py:data=site_b:0.5+synthetic:0.5 --workdir W

config.input.data maps a source name to an entry: its `weight` (0: evaluated, never trained
on), the `split` it trains on ("train", or a TFDS slice such as "train[:25%]") and the config.input keys that choose its
build (SOURCE_KEYS). Every other config.input key (res, frames, augment, vocab_size, ...) is
shared by the sources. Empty (the default): config.input alone is the one source.

What a mixture's sources share lives in DATA_DIR/echoground_mixtures/<name>/, written by
`ensure_artifacts` (which `python -m echovlm_jax.data.build` and a run's start call):
  echoground.spm.model    one sentencepiece trained on the union of the sources' training
                          captions (none with config.input.tokenizer: a checkpoint's)
  measurement_stats.json  the sources' train statistics pooled by count: one z-scoring, so a
                          value means the same whichever site it came from
  mixture.json            the builds (name, split, code fingerprint) they were made from
The name hashes those builds and the vocabulary size, not the weights: every weighting of the
same sources shares one tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Mapping

import numpy as np

from echovlm_jax.data import artifacts
from echovlm_jax.data import fileio
from echovlm_jax.echo import schema

# The config.input keys an entry may set: which build it is.
SOURCE_KEYS = ("builder_config", "manual_dir", "synthetic_patients", "synthetic_seed",
               "synthetic", "mimic", "image_size", "frames_at")
ENTRY_KEYS = ("weight", "split")
MIXTURES_DIR = "echoground_mixtures"
MANIFEST_FILENAME = "mixture.json"
BUILD_COMMAND = "python -m echovlm_jax.data.build --config <your config, with its data= / --config.input.data overrides>"


@dataclasses.dataclass(frozen=True)
class Source:
  """One source of a run's training data."""
  name: str                     # its entry in config.input.data ("" for a plain config.input)
  index: int                    # its position in name order: the batch's `source` value
  weight: float                 # sampling probability (the weights normalised to sum to 1)
  split: str                    # what it trains on
  input_config: dict            # config.input for this source alone (no `data`)


def _plain(x: Any) -> Any:
  return x.to_dict() if hasattr(x, "to_dict") else dict(x) if isinstance(x, Mapping) else x


def entries(input_config: Mapping[str, Any]) -> dict[str, dict]:
  """config.input.data as plain dicts in name order, whatever order they were written in (a
  source's index in the batches; the first is the one the study pooling is fitted on); {} when
  absent or empty."""
  data = _plain(input_config["data"] if "data" in input_config else None) or {}
  return {str(k): _plain(data[k]) for k in sorted(data)}


def is_mixture(input_config: Mapping[str, Any]) -> bool:
  """Whether config.input.data lists sources (one or more)."""
  return bool(entries(input_config))


def sources(input_config: Mapping[str, Any]) -> list[Source]:
  """The run's sources: each entry of config.input.data over config.input (SOURCE_KEYS from the
  entry), or config.input itself. ValueError naming the key on an unknown key or a weight <= 0."""
  base = {k: _plain(v) for k, v in _plain(input_config).items() if k != "data"}
  data = entries(input_config)
  if not data:
    return [Source("", 0, 1.0, "train", base)]
  raw = []
  for name, entry in data.items():
    unknown = sorted(set(entry) - set(SOURCE_KEYS) - set(ENTRY_KEYS))
    if unknown:
      raise ValueError(f"config.input.data.{name}: unknown key(s) {unknown}; an entry takes "
                       f"{', '.join(ENTRY_KEYS)} and config.input's {', '.join(SOURCE_KEYS)}.")
    weight = float(entry.get("weight", 1.0))
    if not weight >= 0 or not np.isfinite(weight):
      raise ValueError(f"config.input.data.{name}.weight={weight}: must be >= 0 (0: evaluated "
                       "on, never trained on).")
    cfg = dict(base)
    cfg.update({k: entry[k] for k in SOURCE_KEYS if k in entry})
    raw.append((name, weight, str(entry.get("split", "train")), cfg))
  total = sum(w for _, w, _, _ in raw)
  if total <= 0:
    raise ValueError(f"config.input.data: every weight is 0 ({list(data)}); train on at least one.")
  return [Source(n, i, w / total, s, c) for i, (n, w, s, c) in enumerate(raw)]


def source(input_config: Mapping[str, Any], name: str | None = None) -> Source:
  """The source called `name` (None: the first, the one a plain config.input is)."""
  all_sources = sources(input_config)
  if name in (None, ""):
    return all_sources[0]
  for s in all_sources:
    if s.name == name:
      return s
  raise ValueError(f"source {name!r}: config.input.data has {[s.name for s in all_sources]}.")


# ----------------------------------------------------------------------------
# What the sources share
# ----------------------------------------------------------------------------
def _by_build(input_config: Mapping[str, Any]) -> list[tuple[str, Source]]:
  """(dataset name, source) of every source, sorted by build: the order the shared files are
  made in, whatever the order of config.input.data."""
  from echovlm_jax.data import builders  # pylint: disable=g-import-not-at-top
  named = [(builders.builder_config_for(s.input_config).name, s) for s in sources(input_config)]
  return sorted(named, key=lambda ns: (ns[0], ns[1].split))


def _builds(input_config: Mapping[str, Any]) -> list[dict]:
  return [dict(dataset=n, split=s.split) for n, s in _by_build(input_config)]


def mixture_dir(input_config: Mapping[str, Any]) -> str:
  """DATA_DIR/echoground_mixtures/mix_<hash of the builds, the vocabulary and tokenizer>."""
  key = json.dumps(dict(builds=_builds(input_config), vocab_size=int(input_config["vocab_size"]),
                        tokenizer=str(input_config["tokenizer"])), sort_keys=True)
  data_dir = str(input_config["data_dir"])
  if not fileio.is_remote(data_dir):
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return fileio.join(data_dir, MIXTURES_DIR, "mix_" + hashlib.sha256(key.encode()).hexdigest()[:10])


def shared_dir(input_config: Mapping[str, Any]) -> str:
  """Where the run's tokenizer and measurement stats live: the mixture's directory, or the
  one build's own."""
  if is_mixture(input_config):
    return mixture_dir(input_config)
  from echovlm_jax.data import builders  # pylint: disable=g-import-not-at-top
  return builders.get_builder(input_config).data_dir


def pooled_stats(per_source: list[Mapping[str, Any]]) -> dict[str, Any]:
  """measurement_stats.json of several builds -> one, as if computed over all their studies:
  count-weighted mean and variance (a source without a measurement adds nothing to it)."""
  out = {"measurements": list(schema.MEASUREMENTS), "mean": {}, "std": {}, "count": {},
         "unit": {n: schema.MEASUREMENT_INFO[n].unit for n in schema.MEASUREMENTS},
         "computed_over": "the sources' train splits, one value per study, pooled"}
  for name in schema.MEASUREMENTS:
    n = np.array([float(s["count"].get(name, 0)) for s in per_source])
    mu = np.array([float(s["mean"][name]) for s in per_source])
    sd = np.array([float(s["std"][name]) for s in per_source])
    total = n.sum()
    out["count"][name] = int(total)
    if total == 0:
      out["mean"][name], out["std"][name] = 0.0, 1.0
      continue
    mean = float((n * mu).sum() / total)
    # A source with < 2 values stored std 1 as a placeholder: it adds no spread of its own.
    var = float((n * (np.where(n >= 2, sd, 0.0) ** 2 + mu ** 2)).sum() / total - mean ** 2)
    std = float(np.sqrt(max(var, 0.0)))
    out["mean"][name], out["std"][name] = mean, std if total >= 2 and std > 1e-6 else 1.0
  return out


def _manifest(input_config: Mapping[str, Any]) -> dict[str, Any]:
  from echovlm_jax.data import builders  # pylint: disable=g-import-not-at-top
  builds = []
  for name, s in _by_build(input_config):
    d = builders.get_builder(s.input_config).data_dir
    report = artifacts.load_report(d) if fileio.exists(fileio.join(d, artifacts.REPORT_FILENAME)) else {}
    builds.append(dict(dataset=name, split=s.split, code_fingerprint=report.get("code_fingerprint")))
  return dict(builds=builds, vocab_size=int(input_config["vocab_size"]),
              tokenizer="checkpoint" if input_config["tokenizer"] else "union")


def _captions(src: Source) -> list[str]:
  """A source's training captions and their negations, in the build's stored order."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import builders  # pylint: disable=g-import-not-at-top
  builder = builders.get_builder(src.input_config)
  ds = builder.as_dataset(split=src.split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k in ("frames", "masks")})
  ds = ds.map(lambda ex: (ex["caption"], ex["negated_caption"]))
  return [t.decode() for pair in ds.as_numpy_iterator() for t in pair]


def write_artifacts(input_config: Mapping[str, Any]) -> str:
  """Writes the mixture's tokenizer, pooled stats and manifest (the sources must be built);
  returns the directory."""
  from echovlm_jax.data import builders  # pylint: disable=g-import-not-at-top
  d = mixture_dir(input_config)
  fileio.makedirs(d)
  all_sources = [s for _, s in _by_build(input_config)]
  if not input_config["tokenizer"]:
    texts = [t for s in all_sources for t in _captions(s)]
    artifacts.write_tokenizer(d, texts, int(input_config["vocab_size"]))
  stats = [json.loads(fileio.read_bytes(fileio.join(builders.get_builder(s.input_config).data_dir,
                                                    artifacts.STATS_FILENAME)))
           for s in all_sources]
  artifacts.write_stats(d, pooled_stats(stats))
  # Last: its presence says the rest is complete.
  fileio.write_bytes(fileio.join(d, MANIFEST_FILENAME),
                     json.dumps(_manifest(input_config), indent=2, sort_keys=True).encode())
  return d


def problem(input_config: Mapping[str, Any]) -> str | None:
  """Why the mixture's shared files cannot be used as they are (missing, or made from other
  builds than the sources' current ones), or None."""
  path = fileio.join(mixture_dir(input_config), MANIFEST_FILENAME)
  if not fileio.exists(path):
    return f"{mixture_dir(input_config)} has no {MANIFEST_FILENAME}: the mixture's tokenizer and stats are not built"
  stored = json.loads(fileio.read_bytes(path))
  now = _manifest(input_config)
  if stored != now:
    return (f"{path} was made from {stored['builds']}, the sources are now {now['builds']}: its "
            "tokenizer was trained on other captions")
  return None


def check_artifacts(input_config: Mapping[str, Any]) -> None:
  """FileNotFoundError naming the command that fixes it when a mixture's sources would be
  tokenized otherwise than with one tokenizer over their union (or their stats not pooled)."""
  if not is_mixture(input_config):
    return
  why = problem(input_config)
  if why:
    raise FileNotFoundError(f"{why}. Training on several sources needs one tokenizer over "
                            f"their union; build it with: {BUILD_COMMAND} (a training run's "
                            "start does the same).")


def ensure_artifacts(input_config: Mapping[str, Any]) -> None:
  """(Re)writes the shared files when missing or stale: process 0 writes, the others wait."""
  import jax  # pylint: disable=g-import-not-at-top
  if not is_mixture(input_config):
    return
  if jax.process_index() == 0:
    why = problem(input_config)
    if why:
      print(f"{why}; writing them.", flush=True)
      logging.info("Mixture: %s", why)
      write_artifacts(input_config)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("echoground_mixture")
  check_artifacts(input_config)
