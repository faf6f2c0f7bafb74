"""What a build leaves next to the prepared dataset besides the TFRecords: the
sentencepiece tokenizer, train-split measurement statistics and the build report
(its contents: data/build_report.py).

Writers run during the build (inside TFDS's temporary directory, so they appear
atomically with the dataset); readers are what the input pipeline uses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from typing import Any, Iterable, Mapping

import numpy as np

from echovlm_jax.data import fileio
from echovlm_jax.data import tokenizer as tokenizer_lib
from echovlm_jax.echo import schema

TOKENIZER_FILENAME = tokenizer_lib.TOKENIZER_FILENAME
STATS_FILENAME = "measurement_stats.json"
REPORT_FILENAME = "build_report.json"
# The modules that decide what an example holds: an edit to any of them makes a dataset built
# before it stale (build.ensure_dataset compares the fingerprint stored in the build report).
CONTENT_MODULES = (
    "echovlm_jax.echo.schema", "echovlm_jax.echo.guidelines", "echovlm_jax.echo.captions",
    "echovlm_jax.echo.negation", "echovlm_jax.echo.grades", "echovlm_jax.data.synthetic",
    "echovlm_jax.data.synthetic_anatomy", "echovlm_jax.data.synthetic_render",
    "echovlm_jax.data.synthetic_layout", "echovlm_jax.data.synthetic_views",
    "echovlm_jax.data.synthetic_sites",
    "echovlm_jax.data.labelled", "echovlm_jax.data.mimic", "echovlm_jax.data.mimic_mapping",
    "echovlm_jax.data.mimic_grades", "echovlm_jax.data.echoview", "echovlm_jax.data.dicom",
    "tfds_builders.echoground.records",
)


def code_fingerprint() -> str:
  """sha256 (16 hex digits) of the source of CONTENT_MODULES."""
  h = hashlib.sha256()
  for name in CONTENT_MODULES:
    with open(importlib.util.find_spec(name).origin, "rb") as f:
      h.update(name.encode() + b"\0" + f.read())
  return h.hexdigest()[:16]


def _write_json(path: str, obj: Any) -> None:
  fileio.write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def write_tokenizer(data_dir: str, texts: Iterable[str], vocab_size: int) -> tokenizer_lib.Tokenizer:
  tok = tokenizer_lib.Tokenizer(tokenizer_lib.train_tokenizer(texts, vocab_size))
  tok.save(fileio.join(data_dir, TOKENIZER_FILENAME))
  return tok


def measurement_stats(study_measurements: Iterable[np.ndarray]) -> dict[str, Any]:
  """Mean / std per measurement over studies (one vector [M] per study, NaN = absent).

  Per study, not per image: a study contributes one value however many views it has.
  A measurement with fewer than 2 values gets std 1 (and mean 0 when none), so
  z-scoring never divides by zero.
  """
  rows = [np.asarray(r, np.float64) for r in study_measurements]
  m = np.stack(rows) if rows else np.full((0, len(schema.MEASUREMENTS)), np.nan)
  out = {"measurements": list(schema.MEASUREMENTS), "mean": {}, "std": {}, "count": {},
         "unit": {n: schema.MEASUREMENT_INFO[n].unit for n in schema.MEASUREMENTS},
         "computed_over": "train split, one value per study"}
  for i, name in enumerate(schema.MEASUREMENTS):
    v = m[:, i][np.isfinite(m[:, i])]
    out["count"][name] = int(v.size)
    out["mean"][name] = float(v.mean()) if v.size else 0.0
    std = float(v.std()) if v.size >= 2 else 1.0
    out["std"][name] = std if std > 1e-6 else 1.0
  return out


def write_stats(data_dir: str, stats: Mapping[str, Any]) -> None:
  _write_json(fileio.join(data_dir, STATS_FILENAME), dict(stats))


def write_report(data_dir: str, report: Mapping[str, Any]) -> None:
  _write_json(fileio.join(data_dir, REPORT_FILENAME), dict(report))


def load_stats(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(mean [M], std [M]) float32 in schema.MEASUREMENTS order."""
  path = fileio.join(data_dir, STATS_FILENAME)
  if not fileio.exists(path):
    raise FileNotFoundError(f"{path} is missing: the dataset was not built by this builder "
                            "(rebuild it with echovlm_jax.data.build.ensure_dataset).")
  stats = json.loads(fileio.read_bytes(path))
  mean = np.array([stats["mean"][n] for n in schema.MEASUREMENTS], np.float32)
  std = np.array([stats["std"][n] for n in schema.MEASUREMENTS], np.float32)
  return mean, std


def load_report(data_dir: str) -> dict[str, Any]:
  return json.loads(fileio.read_bytes(fileio.join(data_dir, REPORT_FILENAME)))
