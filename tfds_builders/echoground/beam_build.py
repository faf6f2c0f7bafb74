"""The `mimic` build on Apache Beam: what `tfds build --beam_pipeline_options=...` runs.

The driver reads the CSVs once and joins them (mimic.plan: a few hundred MB of text for the
whole release, no pixels), so every DICOM becomes a work item that already knows its study's
values, grades, view and patient split (a threshold on a hash of the patient id: no global
ranking needed). Each split is then a Beam branch: items -> decode the sampled frames and
make the example (records.make_example) in parallel -> TFDS's writer. A side branch per split
collects what the artifacts need (no frames) into a small file; once the pipeline has run,
`finish` reads those files and the pipeline's counters (Beam metrics) and writes the same
tokenizer, statistics and build report as the single-process build (split_artifacts.py).
"""

from __future__ import annotations

import collections
import pickle
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
from etils import epath

from echovlm_jax.data import bug_guard
from echovlm_jax.data import mimic
from tfds_builders.echoground import records as records_lib
from tfds_builders.echoground import split_artifacts

# Beam metric namespaces -> the build report's counters.
SOURCE_NS, RECORDS_NS, VALUES_NS, READ_NS = ("echoground/source", "echoground/records_skipped",
                                             "echoground/values_dropped", "echoground/read")
_INFO_FILE = "_beam_infos_{split}.pkl"


class _ReadAndMake(beam.DoFn):
  """WorkItem -> (example key, example), counting every skip as a Beam counter."""

  def __init__(self, manual_dir: str, image_size: int, num_frames: int):
    super().__init__()
    self.manual_dir, self.image_size, self.num_frames = manual_dir, image_size, num_frames

  def setup(self):
    # The guards count here (and stop the worker after a few bug-type errors, as a
    # single-process build stops); flushed into Beam counters after each item.
    self._pending = collections.Counter()
    self._source_guard = bug_guard.BugGuard(self._pending, "skip:decoder_")
    self._record_guard = bug_guard.BugGuard(self._pending, "records:")

  def process(self, item: mimic.WorkItem) -> Iterator[tuple[str, dict[str, Any]]]:
    count = lambda ns, name, n=1: beam.metrics.Metrics.counter(ns, name).inc(n)
    stats, values = collections.Counter(), collections.Counter()
    record = mimic.read_item(self.manual_dir, item, self.image_size, self.num_frames, stats,
                             self._source_guard)
    made = None
    if record is not None:
      count(READ_NS, "records_read")
      ex_key = records_lib.example_key("mimic", item.key)
      try:
        made = (ex_key, records_lib.make_example(item.key, record, num_frames=self.num_frames,
                                                 image_size=self.image_size, value_counts=values))
      except records_lib.SkipRecord as e:
        count(RECORDS_NS, e.reason)
      except Exception as e:  # pylint: disable=broad-except
        self._record_guard(e, f"record {ex_key}")
    for k, v in self._pending.items():
      if k.startswith("records:"):
        count(RECORDS_NS, k[len("records:"):], v)
      else:
        count(SOURCE_NS, k, v)
    self._pending.clear()
    for k, v in stats.items():
      count(SOURCE_NS, k, v)
    if made is not None:
      for k, v in values.items():  # committed only for kept records, as ExampleMaker does
        count(VALUES_NS, k, v)
      yield made


def _write_infos(infos: Sequence[split_artifacts.ExampleInfo], path: str) -> None:
  epath.Path(path).write_bytes(pickle.dumps(list(infos), protocol=pickle.HIGHEST_PROTOCOL))


def split_transform(split: str, items: Sequence[mimic.WorkItem], manual_dir: str,
                    image_size: int, num_frames: int, data_dir: str) -> beam.PTransform:
  """The PTransform TFDS applies to its pipeline for one split: (key, example) pairs."""

  @beam.ptransform_fn
  def _expand(pipeline):
    examples = (pipeline
                | f"{split}/items" >> beam.Create(list(items), reshuffle=True)
                | f"{split}/read" >> beam.ParDo(_ReadAndMake(manual_dir, image_size, num_frames)))
    _ = (examples
         | f"{split}/info" >> beam.MapTuple(split_artifacts.info_of)
         | f"{split}/collect" >> beam.combiners.ToList()
         | f"{split}/write_infos" >> beam.Map(
             _write_infos, str(epath.Path(data_dir) / _INFO_FILE.format(split=split))))
    return examples
  return _expand()  # pylint: disable=no-value-for-parameter


def items_by_split(items: Iterable[mimic.WorkItem]) -> tuple[dict[str, list[mimic.WorkItem]], dict[int, str]]:
  """Work items per split and the patient split, from the planned patients' hashed ids."""
  items = list(items)
  pid = {i.subject: records_lib.stable_int64("patient", "mimic", i.subject) for i in items}
  split_of = records_lib.split_patients(pid.values())
  out = {s: [] for s in records_lib.SPLITS}
  for i in items:
    out[split_of[pid[i.subject]]].append(i)
  return out, split_of


def _counters(result, namespace: str) -> dict[str, int]:
  query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(namespace))
  out = collections.Counter()
  for c in query["counters"]:
    out[c.key.metric.name] += int(c.committed if c.committed is not None else c.attempted)
  return dict(out)


def finish(result, data_dir: str, cfg, split_of: Mapping[int, str],
           plan_stats: Mapping[str, int]) -> dict[str, int]:
  """After the pipeline ran: artifacts and report from the info files and Beam's counters."""
  infos = []
  for split in records_lib.SPLITS:
    path = epath.Path(data_dir) / _INFO_FILE.format(split=split)
    if path.exists():
      infos += pickle.loads(path.read_bytes())
      path.unlink()
  source = collections.Counter(plan_stats)
  source.update(_counters(result, SOURCE_NS))
  return split_artifacts.write(
      data_dir, cfg, infos, split_of, source_stats=source,
      records_read=_counters(result, READ_NS).get("records_read", 0),
      records_skipped=_counters(result, RECORDS_NS), values_dropped=_counters(result, VALUES_NS))
