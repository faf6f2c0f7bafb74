"""The `mimic` build on Apache Beam: what `tfds build --beam_pipeline_options=...` runs.

The driver reads the CSVs once and joins them (mimic.plan: a few hundred MB of text for the
whole release, no pixels), so every DICOM becomes a work item that already knows its study's
values, grades, view and patient split (a threshold on a hash of the patient id: no global
ranking needed). The items go to sharded files under the data_dir (beam_plan.py), not into the
job graph, which so stays the same size whatever the release's size. Each split is then a
Beam branch: plan files -> items -> decode the sampled frames and make the example
(records.make_example) in parallel -> TFDS's writer. A side branch per split writes what the
artifacts need (no frames) into a file per bundle; once the pipeline has run, `finish` reads
those files and the pipeline's counters (Beam metrics) and writes the same tokenizer,
statistics and build report as the single-process build (split_artifacts.py).
"""

from __future__ import annotations

import collections
import pickle
from typing import Any, Iterable, Iterator, Mapping

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.options.value_provider import StaticValueProvider
from etils import epath

from echovlm_jax.data import bug_guard
from echovlm_jax.data import mimic
from tfds_builders.echoground import beam_plan
from tfds_builders.echoground import records as records_lib
from tfds_builders.echoground import split_artifacts

# Beam metric namespaces -> the build report's counters.
SOURCE_NS, RECORDS_NS, VALUES_NS, READ_NS = ("echoground/source", "echoground/records_skipped",
                                             "echoground/values_dropped", "echoground/read")
WORK_DIR = "_beam_work"   # under the (incomplete) data_dir: the plan and the infos


class _ReadAndMake(beam.DoFn):
  """WorkItem -> (example key, example), counting every skip as a Beam counter."""

  def __init__(self, manual_dir: str, image_size: int, num_frames: int, clip_fps: float = 0.0):
    super().__init__()
    self.manual_dir, self.image_size, self.num_frames = manual_dir, image_size, num_frames
    self.clip_fps = clip_fps

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
                             self._source_guard, self.clip_fps)
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


class _PickleSink(fileio.FileSink):
  """Infos one pickle after another (the single-process build's spill format): a file per
  bundle, so no worker ever holds a whole split's infos."""

  def open(self, fh):
    self._fh = fh

  def write(self, record):
    pickle.dump(record, self._fh, protocol=pickle.HIGHEST_PROTOCOL)

  def flush(self):
    self._fh.flush()


def _infos_dir(work_dir: str, split: str) -> str:
  return str(epath.Path(work_dir) / "infos" / split)


def split_transform(split: str, plan_pattern: str, manual_dir: str, image_size: int,
                    num_frames: int, work_dir: str, clip_fps: float = 0.0) -> beam.PTransform:
  """The PTransform TFDS applies to its pipeline for one split: (key, example) pairs.

  plan_pattern: the split's work items on disk (beam_plan.write); work_dir: where the
  artifacts' facts go until `finish` reads them (a folder every worker can write).
  """

  @beam.ptransform_fn
  def _expand(pipeline):
    examples = (pipeline
                | f"{split}/plan" >> beam.io.ReadFromText(plan_pattern)
                # A gzipped plan file is read as one bundle: spread its items over all workers.
                # Reshuffled as lines (plain strings), decoded after.
                | f"{split}/spread" >> beam.Reshuffle()
                | f"{split}/items" >> beam.Map(beam_plan.decode)
                | f"{split}/read" >> beam.ParDo(_ReadAndMake(manual_dir, image_size, num_frames,
                                                                   clip_fps)))
    _ = (examples
         | f"{split}/info" >> beam.MapTuple(split_artifacts.info_of)
         | f"{split}/write_infos" >> fileio.WriteToFiles(
             path=_infos_dir(work_dir, split), sink=_PickleSink,
             file_naming=fileio.default_file_naming("infos", ".pkl"),
             # A ValueProvider: WriteToFiles calls .get() on it (a str fails on the workers).
             temp_directory=StaticValueProvider(str, str(epath.Path(work_dir) / "infos_tmp" / split))))
    return examples
  return _expand()  # pylint: disable=no-value-for-parameter


def _read_infos(work_dir: str) -> Iterator[split_artifacts.ExampleInfo]:
  for path in sorted(epath.Path(work_dir).glob("infos/*/*.pkl")):
    with path.open("rb") as f:
      while True:
        try:
          yield pickle.load(f)
        except EOFError:
          break


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


def finish(result, work_dir: str, data_dir: str, cfg, split_of: Mapping[int, str],
           plan_stats: Mapping[str, int]) -> dict[str, int]:
  """After the pipeline ran: artifacts and report from the info files and Beam's counters;
  work_dir (plan and info files) is removed."""
  infos = list(_read_infos(work_dir))
  epath.Path(work_dir).rmtree(missing_ok=True)
  source = collections.Counter(plan_stats)
  source.update(_counters(result, SOURCE_NS))
  return split_artifacts.write(
      data_dir, cfg, infos, split_of, source_stats=source,
      records_read=_counters(result, READ_NS).get("records_read", 0),
      records_skipped=_counters(result, RECORDS_NS), values_dropped=_counters(result, VALUES_NS))
