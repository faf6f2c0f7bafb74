"""The `echoground` TFDS builder: synthetic or MIMIC-IV-ECHO echo images with
measurement-grounded captions, negated captions and guideline labels.

One pass reads the source into a temporary spill file (so a slow source, DICOM
decoding or rendering, is read once), the patients are split by a hash of their id, the
tokenizer / measurement stats / build report are written next to the dataset,
and TFDS then writes each split from the spill.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pickle
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from echovlm_jax.echo import schema
from echovlm_jax.data import artifacts
from echovlm_jax.data import build_report
from tfds_builders.echoground import records as records_lib
from tfds_builders.echoground import split_artifacts

_SPILL_FILENAME = "_source_records.spill"
MIN_PATIENTS = 3  # one each for train / validation / test


@dataclasses.dataclass(frozen=True)
class _BeamPlan:
  """A Beam build's plan: where each split's work items wait (file patterns; the items are
  not held on the driver), how many, the patient split, the CSV-stage counts."""
  plan_files: dict[str, str]
  sizes: dict[str, int]
  split_of: dict[int, str]
  plan_stats: collections.Counter
  work_dir: str


@dataclasses.dataclass(frozen=True)
class _Prepared:
  """The result of the source pass: where the examples wait, and who is in which split."""
  spill_path: str
  split_of: dict[int, str]       # patient_id -> split
  split_sizes: dict[str, int]    # split -> examples


@dataclasses.dataclass
class EchogroundConfig(tfds.core.BuilderConfig):
  """BuilderConfig for echoground.

  Attributes:
    source: "synthetic" (rendered by echovlm_jax.data.synthetic) or "mimic" (manual_dir).
    num_patients, seed: size and seed of the synthetic dataset (ignored for mimic).
    image_size: stored H = W in pixels (the input pipeline crops and resizes from it).
    num_frames: frames per example, T (1 = still images, the paper's setting).
    num_shards: shards per split unless the DownloadConfig forces a number; several
      even for small data so per-host reading is exercised.
    vocab_size: requested sentencepiece vocabulary (a small corpus may give fewer).
    test_type, echoview_csv, view_csv, view_min_prob, allow_unknown_views, view_predictions,
      view_predictions_min_prob: what a `mimic` build reads (echovlm_jax.data.mimic.ReaderOptions,
      docs/mimic.md).
    hidden_view_fraction: synthetic only: the share of the patients whose train-split views
      are hidden; with view_predictions (a predictions CSV of the synthetic images) and
      view_predictions_min_prob, the classifier labels them (echovlm_jax.data.synthetic_views).
  """
  source: str = "synthetic"
  num_patients: int = 2000
  seed: int = 0
  image_size: int = 128
  num_frames: int = 1
  num_shards: int = 4
  vocab_size: int = 1024
  test_type: str = "tte"
  echoview_csv: str = ""
  view_csv: str = ""
  view_min_prob: float = 0.5
  allow_unknown_views: bool = False
  view_predictions: str = ""
  view_predictions_min_prob: float = 0.9
  hidden_view_fraction: float = 0.0


MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The `mimic` config reads MIMIC-IV-ECHO v1.0 from PhysioNet (credentialed access:
https://physionet.org/content/mimic-iv-echo/) and the view labels of ECHOVIEW
(https://physionet.org/content/echoview/). Put in `manual_dir`
(default ~/tensorflow_datasets/downloads/manual/, or `--manual_dir DIR`) the release as
downloaded, plus ECHOVIEW's CSV:

  manual_dir/
    echo-record-list.csv               # subject_id, study_id, acquisition_datetime, dicom_filepath
    echo-study-list.csv                # subject_id, study_id, study_datetime, measurement_id, ...
    structured-measurement.csv.gz      # subject_id, measurement_id, measurement_datetime, test_type,
                                       #   measurement, measurement_description, result, unit
    files/pNN/p<subject_id>/s<study_id>/<study_id>_<NNNN>.dcm
    MIMIC_ECHO_View_Classifications.csv  # ECHOVIEW: image, prob_<class> x 23 (or set echoview_csv)
    view_labels.csv                    # optional: study_id, file, view (our view names)
    patients.csv (or hosp/patients.csv)  # optional, MIMIC-IV hosp: subject_id, gender -> sex

Each DICOM study is linked to its report by measurement_id (v0.1's study list, without it,
by nearest time); reports of other test types (tee, stress) are left out. docs/mimic.md lists
the codes, grades and derived values read, and every count in build_report.json.
"""


def _features(cfg: EchogroundConfig) -> tfds.features.FeaturesDict:
  t, s = cfg.num_frames, cfg.image_size
  return tfds.features.FeaturesDict({
      # zlib-compressed raw uint8: exact, cheap to decode (no PNG per frame), shape checked.
      "frames": tfds.features.Tensor(shape=(t, s, s, 1), dtype=np.uint8,
                                     encoding=tfds.features.Encoding.ZLIB),
      "view": tfds.features.ClassLabel(names=list(schema.VIEWS)),
      "caption": tfds.features.Text(),
      "negated_caption": tfds.features.Text(),
      "has_negation": tfds.features.Scalar(dtype=np.bool_),
      # What each caption sentence states (records.statement_structure), for the text side.
      "statements": tfds.features.Text(),
      "measurements": tfds.features.Tensor(shape=(len(schema.MEASUREMENTS),), dtype=np.float32),
      # Cardiologist grades, ordinal 0 normal .. 3 severe, -1 absent (schema.GRADES).
      "grades": tfds.features.Tensor(shape=(len(schema.GRADES),), dtype=np.int8),
      "view_source": tfds.features.Text(),       # schema.VIEW_SOURCES
      "view_confidence": tfds.features.Scalar(dtype=np.float32),
      "image_kind": tfds.features.Text(),        # schema.IMAGE_KINDS
      "labels": tfds.features.Tensor(shape=(len(schema.LABELS),), dtype=np.int8),
      "sex": tfds.features.Text(),
      "patient_id": tfds.features.Scalar(dtype=np.int64),
      "study_id": tfds.features.Scalar(dtype=np.int64),
      "source": tfds.features.Text(),
  })


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for echoground."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: synthetic and MIMIC-IV-ECHO configs.",
      "1.1.0": "The default synthetic config has 2000 patients (was 600).",
      "2.0.0": "MIMIC-IV-ECHO v1.0 layout, codes and grades; ECHOVIEW views. New features "
               "grades, statements, view_source, view_confidence, image_kind; unknown-view "
               "images get their study's whole report as caption. Patient splits by a "
               "threshold on a hash of the id (stable when patients are added).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      EchogroundConfig(name="synthetic", source="synthetic",
                       description="Procedurally rendered echo studies (no download), 2000 patients."),
      EchogroundConfig(name="mimic", source="mimic",
                       description="MIMIC-IV-ECHO DICOMs + structured measurements (manual_dir)."),
  ]
  DEFAULT_CONFIG_NAME = "synthetic"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_features(self.builder_config),
        supervised_keys=None,
        homepage="https://physionet.org/content/mimic-iv-echo/",
    )

  # --- Orchestration -------------------------------------------------------
  def _download_and_prepare(self, dl_manager, download_config):  # pytype: disable=signature-mismatch
    # Beam options (`tfds build --beam_pipeline_options=...`) run the mimic source on Beam
    # (beam_build.py); the synthetic source is a plain generator either way.
    self._beam = self.builder_config.source == "mimic" and bool(
        download_config.beam_options or download_config.beam_runner)
    try:
      if self._beam:
        self._prepared = self._plan_beam(dl_manager)
        sizes = self._prepared.sizes  # upper bounds
      else:
        self._prepared = self._read_source(dl_manager)
        sizes = self._prepared.split_sizes
      # The shard count is capped by the smallest split (TFDS refuses a split with fewer
      # examples than shards).
      smallest = min(sizes.values())
      wanted = download_config.num_shards or self.builder_config.num_shards
      if wanted > smallest:
        logging.warning("echoground: %d shards requested but the smallest split has %d examples; "
                        "writing %d shards per split.", wanted, smallest, smallest)
      download_config = dataclasses.replace(download_config, num_shards=min(wanted, smallest))
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._prepared = None
      spill = epath.Path(self.data_dir) / _SPILL_FILENAME
      if spill.exists():
        spill.unlink()

  def _post_download_and_prepare_hook(self) -> None:
    if (epath.Path(self.data_dir) / artifacts.REPORT_FILENAME).exists():
      print(build_report.format_report(artifacts.load_report(self.data_dir)), flush=True)

  def _reader_options(self):
    from echovlm_jax.data import mimic  # pylint: disable=g-import-not-at-top
    cfg = self.builder_config
    return mimic.ReaderOptions(
        test_type=cfg.test_type, echoview_csv=cfg.echoview_csv, view_csv=cfg.view_csv,
        view_min_prob=cfg.view_min_prob, allow_unknown_views=cfg.allow_unknown_views,
        view_predictions=cfg.view_predictions, view_predictions_min_prob=cfg.view_predictions_min_prob)

  def _source_records(self, dl_manager, source_stats: collections.Counter
                      ) -> tuple[Iterator[tuple[str, dict]], set[int] | None]:
    """(key, record) stream of the source, and the patients it lists (mimic: every planned
    patient, so the split does not depend on which files decode; synthetic with hidden views:
    every patient, as synthetic_views split them; plain synthetic: None)."""
    cfg = self.builder_config
    if cfg.source == "synthetic" and (cfg.hidden_view_fraction or cfg.view_predictions):
      from echovlm_jax.data import synthetic_views  # pylint: disable=g-import-not-at-top
      return synthetic_views.generate_records(
          cfg.num_patients, cfg.seed, cfg.image_size, cfg.num_frames,
          hidden_view_fraction=cfg.hidden_view_fraction, view_predictions=cfg.view_predictions,
          view_predictions_min_prob=cfg.view_predictions_min_prob, counts=source_stats)
    if cfg.source == "synthetic":
      from echovlm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
      return synthetic.generate_records(cfg.num_patients, cfg.seed, image_size=cfg.image_size,
                                        num_frames=cfg.num_frames), None
    if cfg.source == "mimic":
      from echovlm_jax.data import bug_guard, mimic  # pylint: disable=g-import-not-at-top
      manual_dir = os.fspath(dl_manager.manual_dir)
      items = mimic.plan(manual_dir, self._reader_options(), source_stats)
      guard = bug_guard.BugGuard(source_stats, "skip:decoder_")

      def stream():
        for item in items:
          record = mimic.read_item(manual_dir, item, cfg.image_size, cfg.num_frames, source_stats,
                                   guard)
          if record is not None:
            yield item.key, record
      patients = {records_lib.stable_int64("patient", "mimic", i.subject) for i in items}
      return stream(), patients
    raise ValueError(f"EchogroundConfig.source={cfg.source!r}: expected 'synthetic' or 'mimic'.")

  def _check_patients(self, n: int, detail: str) -> None:
    if n < MIN_PATIENTS:
      cfg = self.builder_config
      raise ValueError(
          f"echoground/{cfg.name}: only {n} patient(s) with records ({detail}); at least "
          f"{MIN_PATIENTS} are needed for train / validation / test splits. Check the source "
          "(manual_dir) or num_patients.")

  def _read_source(self, dl_manager) -> "_Prepared":
    """One pass over the source: valid examples to the spill, patients split, artifacts written."""
    cfg = self.builder_config
    source_stats: collections.Counter = collections.Counter()
    maker = records_lib.ExampleMaker(cfg.num_frames, cfg.image_size)
    spill_path = os.fspath(epath.Path(self.data_dir) / _SPILL_FILENAME)
    infos = []  # what the split-level artifacts need, kept small: no frames in memory
    stream, planned = self._source_records(dl_manager, source_stats)
    with epath.Path(spill_path).open("wb") as spill:
      for key, record in tfds.core.utils.tqdm(stream, desc="Reading source records",
                                              unit=" records", leave=False):
        made = maker(key, record)
        if made is None:
          continue
        # Serialise first, then write: a record is in the spill whole or not at all.
        spill.write(pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL))
        infos.append(split_artifacts.info_of(*made))
    patients = planned if planned is not None else {i.patient_id for i in infos}
    self._check_patients(len({i.patient_id for i in infos}), f"{maker.read} source records read, "
                         f"skipped: {dict(maker.skipped)}, source skips: {dict(source_stats)}")
    split_of = records_lib.split_patients(patients)
    sizes = split_artifacts.write(
        self.data_dir, cfg, infos, split_of, source_stats=source_stats, records_read=maker.read,
        records_skipped=maker.skipped, values_dropped=maker.values_dropped)
    return _Prepared(spill_path, split_of, sizes)

  def _plan_beam(self, dl_manager) -> "_BeamPlan":
    from tfds_builders.echoground import beam_build, beam_plan  # pylint: disable=g-import-not-at-top
    from echovlm_jax.data import mimic  # pylint: disable=g-import-not-at-top
    stats: collections.Counter = collections.Counter()
    items = mimic.plan(os.fspath(dl_manager.manual_dir), self._reader_options(), stats)
    by_split, split_of = beam_build.items_by_split(items)
    self._check_patients(len(split_of), f"{len(items)} DICOMs planned, skips: {dict(stats)}")
    work_dir = os.fspath(epath.Path(self.data_dir) / beam_build.WORK_DIR)
    plan_files = beam_plan.write(by_split, os.fspath(epath.Path(work_dir) / "plan"))
    return _BeamPlan(plan_files, {s: len(v) for s, v in by_split.items()}, split_of, stats,
                     work_dir)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    prepared = getattr(self, "_prepared", None) or self._read_source(dl_manager)
    if isinstance(prepared, _BeamPlan):
      from tfds_builders.echoground import beam_build  # pylint: disable=g-import-not-at-top
      cfg = self.builder_config
      return {s: beam_build.split_transform(s, prepared.plan_files[s], os.fspath(dl_manager.manual_dir),
                                            cfg.image_size, cfg.num_frames, prepared.work_dir)
              for s in records_lib.SPLITS}
    return {s: self._generate_examples(prepared.spill_path, prepared.split_of, s)
            for s in records_lib.SPLITS}

  def _process_pipeline_result(self, pipeline_result) -> None:
    """Beam build: the tokenizer, statistics and report, once the examples exist."""
    from tfds_builders.echoground import beam_build  # pylint: disable=g-import-not-at-top
    plan = self._prepared
    beam_build.finish(pipeline_result, plan.work_dir, os.fspath(self.data_dir),
                      self.builder_config, plan.split_of, plan.plan_stats)

  def _generate_examples(self, spill_path: str, split_of: dict[int, str], split: str
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    with epath.Path(spill_path).open("rb") as f:
      while True:
        try:
          key, example = pickle.load(f)
        except EOFError:
          return
        if split_of[example["patient_id"]] == split:
          yield key, example
