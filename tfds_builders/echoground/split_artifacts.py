"""What a build writes once its examples exist: the tokenizer and measurement statistics of
the train split, and the build report. One function for the single-process and the Beam
build, fed the same facts in the same (key) order, so both write the same files."""

from __future__ import annotations

import collections
from typing import Any, Iterable, Mapping, NamedTuple

from echovlm_jax.data import artifacts
from echovlm_jax.data import build_report
from tfds_builders.echoground import records as records_lib


class ExampleInfo(NamedTuple):
  """What the artifacts need of one written example (no frames)."""
  key: str
  patient_id: int
  caption: str
  negated_caption: str
  summary: build_report.ExampleSummary


def info_of(key: str, ex: Mapping[str, Any]) -> ExampleInfo:
  return ExampleInfo(key, int(ex["patient_id"]), ex["caption"], ex["negated_caption"],
                     build_report.ExampleSummary(
                         int(ex["study_id"]), ex["sex"], ex["view"], ex["view_source"],
                         ex["image_kind"], ex["measurements"], ex["grades"], ex["labels"]))


def write(data_dir: str, cfg, infos: Iterable[ExampleInfo], split_of: Mapping[int, str], *,
          source_stats: Mapping[str, int], records_read: int, records_skipped: Mapping[str, int],
          values_dropped: Mapping[str, int]) -> dict[str, int]:
  """Writes tokenizer, stats and report into data_dir; returns the examples per split.

  Infos are sorted by key first: sentencepiece and float sums see the same order whatever
  order the examples were made in.
  """
  infos = sorted(infos, key=lambda i: i.key)
  train = [i for i in infos if split_of[i.patient_id] == "train"]
  artifacts.write_tokenizer(data_dir, [t for i in train for t in (i.caption, i.negated_caption)],
                            cfg.vocab_size)
  train_studies = {i.summary.study_id: i.summary.measurements for i in train}
  artifacts.write_stats(data_dir, artifacts.measurement_stats(
      train_studies[s] for s in sorted(train_studies)))
  sizes = {s: sum(split_of[i.patient_id] == s for i in infos) for s in records_lib.SPLITS}
  patients = {i.patient_id for i in infos}
  report = {
      "config": cfg.name,
      "code_fingerprint": artifacts.code_fingerprint(),
      "source": cfg.source,
      "records_read": int(records_read),
      "examples": sizes,
      "patients": {s: sum(split_of[p] == s for p in patients) for s in records_lib.SPLITS},
      "studies": {s: len({i.summary.study_id for i in infos if split_of[i.patient_id] == s})
                  for s in records_lib.SPLITS},
      "coverage": build_report.coverage(i.summary for i in infos),
      "source_counts": build_report.group_counts(collections.Counter(source_stats)),
      "records_skipped": dict(sorted(records_skipped.items())),
      "values_dropped": dict(sorted(values_dropped.items())),
  }
  artifacts.write_report(data_dir, report)
  return sizes
