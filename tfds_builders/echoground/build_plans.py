"""The two ways an echoground build runs, each as one typed plan made once before TFDS writes.

`read_source` (every synthetic build, and a mimic build without Beam options): one pass over
the source writes each valid example to a spill file and remembers where; the patients are
split, the tokenizer / statistics / report written; each split then reads only its own
examples back, by byte offset. `plan_beam` (a mimic build with Beam options): the CSVs are
joined on the driver into per-split work-item files, and each split is a Beam branch
(beam_build.py); the artifacts come after the pipeline ran (`finish`).

Both plans answer the same three calls the builder makes: `sizes` (examples per split, an
upper bound for Beam), `split_generators()` and `finish(pipeline_result)`, then `cleanup()`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
from typing import Any, Iterator, Mapping

import tensorflow_datasets as tfds
from etils import epath

from echovlm_jax.data import reader_options
from echovlm_jax.echo import schema
from tfds_builders.echoground import records as records_lib
from tfds_builders.echoground import split_artifacts

SPILL_FILENAME = "_source_records.spill"
MIN_PATIENTS = 3  # one each for train / validation / test


@dataclasses.dataclass(frozen=True)
class LocalPlan:
  """The source, read once: examples in `spill_path`, each split's at its byte offsets."""
  spill_path: str
  offsets: Mapping[str, tuple[int, ...]]   # split -> offsets of its pickled (key, example)

  @property
  def sizes(self) -> dict[str, int]:
    return {s: len(o) for s, o in self.offsets.items()}

  def examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    # Offsets ascend, so one split's read is one forward pass over the file with skips.
    with epath.Path(self.spill_path).open("rb") as f:
      for offset in self.offsets[split]:
        f.seek(offset)
        yield pickle.load(f)

  def split_generators(self) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
    return {s: self.examples(s) for s in records_lib.SPLITS}

  def finish(self, pipeline_result) -> None:
    raise RuntimeError("echoground: a plain (non-Beam) build has no pipeline result; the "
                       "artifacts were written when the source was read.")

  def cleanup(self) -> None:
    epath.Path(self.spill_path).unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class BeamPlan:
  """A Beam build: each split's work items in files (not on the driver: the job graph stays
  small), the patient split, the CSV-stage counts, and what the workers need."""
  plan_files: Mapping[str, str]    # split -> file pattern of its work items (beam_plan.py)
  sizes: Mapping[str, int]         # split -> work items: an upper bound on its examples
  split_of: Mapping[int, str]
  plan_stats: collections.Counter
  work_dir: str
  manual_dir: str
  data_dir: str
  builder_config: Any              # EchogroundConfig

  def split_generators(self) -> dict[str, Any]:
    from tfds_builders.echoground import beam_build  # pylint: disable=g-import-not-at-top
    cfg = self.builder_config
    return {s: beam_build.split_transform(s, self.plan_files[s], self.manual_dir, cfg.image_size,
                                          cfg.num_frames, self.work_dir, cfg.clip_fps)
            for s in records_lib.SPLITS}

  def finish(self, pipeline_result) -> None:
    """The tokenizer, statistics and report, once the examples exist."""
    from tfds_builders.echoground import beam_build  # pylint: disable=g-import-not-at-top
    beam_build.finish(pipeline_result, self.work_dir, self.data_dir, self.builder_config,
                      self.split_of, self.plan_stats)

  def cleanup(self) -> None:
    pass  # `finish` removes work_dir; after a failure it stays, to be looked at


def _check_patients(cfg, n: int, detail: str) -> None:
  if n < MIN_PATIENTS:
    raise ValueError(
        f"echoground/{cfg.name}: only {n} patient(s) with records ({detail}); at least "
        f"{MIN_PATIENTS} are needed for train / validation / test splits. Check the source "
        "(manual_dir) or num_patients.")


def _source_records(cfg, manual_dir: str, source_stats: collections.Counter
                    ) -> tuple[Iterator[tuple[str, dict]], set[int] | None]:
  """(key, record) stream of the source, and the patients it lists (mimic: every planned
  patient, so the split does not depend on which files decode; synthetic with hidden views:
  every patient, as synthetic_views split them; plain synthetic: None)."""
  # pylint: disable=g-import-not-at-top
  site_only = reader_options.SyntheticViewOptions(site=cfg.synthetic.site)
  if cfg.source == "synthetic" and cfg.synthetic != site_only:
    if cfg.frames_at != "cycle":
      raise ValueError("config.input.frames_at='ed_es' with hidden or predicted views: the view "
                       "labelling experiment renders cycles only.")
    from echovlm_jax.data import synthetic_views
    return synthetic_views.generate_records(cfg.num_patients, cfg.seed, cfg.image_size,
                                            cfg.num_frames, cfg.synthetic, counts=source_stats,
                                            clip_fps=cfg.clip_fps)
  if cfg.source == "synthetic":
    from echovlm_jax.data import synthetic
    return synthetic.generate_records(cfg.num_patients, cfg.seed, image_size=cfg.image_size,
                                      num_frames=cfg.num_frames, frames_at=cfg.frames_at,
                                      clip_fps=cfg.clip_fps, site=cfg.synthetic.site), None
  if cfg.source in schema.DENSE_RELEASES:
    from echovlm_jax.data import dense_records
    if cfg.frames_at == "ed_es" and cfg.num_frames != 2:
      raise ValueError(f"echoground/{cfg.name}: the dense releases give an ED and an ES frame: "
                       "set config.input.num_frames=2 and config.input.frames_at='ed_es' "
                       "(configs/segmentation.py does).")
    return dense_records.generate_records(cfg.source, manual_dir, cfg.image_size, source_stats,
                                          cfg.num_frames, cfg.frames_at, cfg.clip_fps), None
  if cfg.source == "mimic":
    from echovlm_jax.data import mimic
    items = mimic.plan(manual_dir, cfg.mimic, source_stats)
    patients = {records_lib.stable_int64("patient", "mimic", i.subject) for i in items}
    return (mimic.read_items(manual_dir, items, cfg.image_size, cfg.num_frames, source_stats,
                             clip_fps=cfg.clip_fps),
            patients)
  raise ValueError(f"EchogroundConfig.source={cfg.source!r}: expected one of {schema.SOURCES}.")


def read_source(cfg, manual_dir: str, data_dir: str) -> LocalPlan:
  """One pass over the source: valid examples to the spill, patients split, artifacts written."""
  source_stats: collections.Counter = collections.Counter()
  maker = records_lib.ExampleMaker(cfg.num_frames, cfg.image_size)
  spill_path = os.fspath(epath.Path(data_dir) / SPILL_FILENAME)
  infos, offsets = [], []  # what the artifacts and the splits need: no frames in memory
  written = 0  # counted, not spill.tell(): a gfile-backed writer's tell() is not the offset
  stream, planned = _source_records(cfg, manual_dir, source_stats)
  official: dict[int, str] = {}   # patient -> the release's own split (the dense releases)
  with epath.Path(spill_path).open("wb") as spill:
    for key, record in tfds.core.utils.tqdm(stream, desc="Reading source records",
                                            unit=" records", leave=False):
      made = maker(key, record)
      if made is None:
        continue
      if record.get("split") in records_lib.SPLITS:
        official[made[1]["patient_id"]] = record["split"]
      # Serialise first, then write: a record is in the spill whole or not at all.
      blob = pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL)
      offsets.append(written)
      spill.write(blob)
      written += len(blob)
      infos.append(split_artifacts.info_of(*made))
  patients = planned if planned is not None else {i.patient_id for i in infos}
  _check_patients(cfg, len({i.patient_id for i in infos}), f"{maker.read} source records read, "
                  f"skipped: {dict(maker.skipped)}, source skips: {dict(source_stats)}")
  split_of = records_lib.split_patients(patients)
  if official:
    # The release's split wins, so results compare with the papers'; a patient it does not
    # list keeps its hash split. A split the release leaves empty cannot be written.
    split_of.update(official)
    empty = [s for s in records_lib.SPLITS if s not in split_of.values()]
    if empty:
      raise ValueError(f"echoground/{cfg.name}: the release's split lists no patient with "
                       f"usable records for {empty} (source skips: {dict(source_stats)}). "
                       "Check the split column / files in manual_dir.")
  split_artifacts.write(data_dir, cfg, infos, split_of, source_stats=source_stats,
                        records_read=maker.read, records_skipped=maker.skipped,
                        values_dropped=maker.values_dropped)
  by_split = {s: [] for s in records_lib.SPLITS}
  for info, offset in zip(infos, offsets):
    by_split[split_of[info.patient_id]].append(offset)
  return LocalPlan(spill_path, {s: tuple(o) for s, o in by_split.items()})


def plan_beam(cfg, manual_dir: str, data_dir: str) -> BeamPlan:
  """The CSV stage on the driver; the work items to files under data_dir."""
  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import mimic
  from tfds_builders.echoground import beam_build, beam_plan
  stats: collections.Counter = collections.Counter()
  items = mimic.plan(manual_dir, cfg.mimic, stats)
  by_split, split_of = beam_build.items_by_split(items)
  _check_patients(cfg, len(split_of), f"{len(items)} DICOMs planned, skips: {dict(stats)}")
  work_dir = os.fspath(epath.Path(data_dir) / beam_build.WORK_DIR)
  plan_files = beam_plan.write(by_split, os.fspath(epath.Path(work_dir) / "plan"))
  return BeamPlan(plan_files, {s: len(v) for s, v in by_split.items()}, split_of, stats,
                  work_dir, manual_dir, data_dir, cfg)
