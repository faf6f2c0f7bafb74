"""The `echoground` TFDS builder: synthetic or MIMIC-IV-ECHO echo images with
measurement-grounded captions, negated captions and guideline labels.

A plan made once before TFDS writes (build_plans.py) reads the source: in one pass into a
temporary spill file (so a slow source, DICOM decoding or rendering, is read once), or on
Beam. The patients are split by a hash of their id, the tokenizer / measurement stats /
build report are written next to the dataset, and TFDS writes each split from the plan.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from echovlm_jax.echo import schema
from echovlm_jax.data import artifacts
from echovlm_jax.data import build_report
from echovlm_jax.data import reader_options
from tfds_builders.echoground import build_plans



@dataclasses.dataclass
class EchogroundConfig(tfds.core.BuilderConfig):
  """BuilderConfig for echoground.

  Attributes:
    source: "synthetic" (rendered by echovlm_jax.data.synthetic), "mimic" (manual_dir), or a
      dense release in manual_dir: "camus", "echonet_dynamic", "echonet_lvh"
      (data/dense_records.py; T = 2, ED and ES, their official splits).
    num_patients, seed: size and seed of the synthetic dataset (ignored for mimic).
    image_size: stored H = W in pixels (the input pipeline crops and resizes from it).
    num_frames: frames per example, T (1 = still images, the paper's setting).
    frames_at: "cycle" (frames over a cycle; a still at end-diastole) or "ed_es" (T = 2:
      end-diastole, end-systole; synthetic.FRAMES_AT); the dense releases are "ed_es".
    clip_fps: the frame rate of a clip (T > 1, frames_at "cycle"): synthetic cines are drawn
      at it (T / clip_fps seconds, one or more cycles at the patient's heart rate), MIMIC
      cines are sampled at its time step from the DICOM's frame time. 0: T frames spread over
      one cycle (synthetic) or over the whole file (MIMIC), as before clips had a rate.
    num_shards: shards per split unless the DownloadConfig forces a number; several
      even for small data so per-host reading is exercised.
    vocab_size: requested sentencepiece vocabulary (a small corpus may give fewer).
    mimic: what a `mimic` build reads (reader_options.MimicOptions, docs/mimic.md).
    synthetic: a `synthetic` build's simulated view labelling (reader_options.SyntheticViewOptions).
  """
  source: str = "synthetic"
  num_patients: int = 2000
  seed: int = 0
  image_size: int = 128
  num_frames: int = 1
  frames_at: str = "cycle"
  clip_fps: float = 0.0
  num_shards: int = 4
  vocab_size: int = 1024
  mimic: reader_options.MimicOptions = reader_options.MimicOptions()
  synthetic: reader_options.SyntheticViewOptions = reader_options.SyntheticViewOptions()


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

The `camus`, `echonet_dynamic` and `echonet_lvh` configs read those releases as published
(docs/dense_datasets.md): `manual_dir` holds CAMUS's database_nifti/ (and database_split/),
EchoNet-Dynamic's FileList.csv, VolumeTracings.csv and Videos/, or EchoNet-LVH's
MeasurementsList.csv and Batch1..4/.
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
      # Dense ground truth (the renderer's; dense_truth False and empty for MIMIC): structure
      # per pixel (schema.STRUCTURES), named points (row, col) px (schema.LANDMARKS, NaN where
      # absent), cardiac phase per frame in cycles (schema.ED_PHASE / ES_PHASE), mm per pixel.
      "dense_truth": tfds.features.Scalar(dtype=np.bool_),
      "masks": tfds.features.Tensor(shape=(t, s, s, 1), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.ZLIB),
      "landmarks": tfds.features.Tensor(shape=(t, len(schema.LANDMARKS), 2), dtype=np.float32),
      "phases": tfds.features.Tensor(shape=(t,), dtype=np.float32),
      "pixel_spacing_mm": tfds.features.Scalar(dtype=np.float32),
  })


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for echoground."""

  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: synthetic and MIMIC-IV-ECHO configs.",
      "1.1.0": "The default synthetic config has 2000 patients (was 600).",
      "2.0.0": "MIMIC-IV-ECHO v1.0 layout, codes and grades; ECHOVIEW views. New features "
               "grades, statements, view_source, view_confidence, image_kind; unknown-view "
               "images get their study's whole report as caption. Patient splits by a "
               "threshold on a hash of the id (stable when patients are added).",
      "2.1.0": "Dense ground truth: features dense_truth, masks (LV cavity, myocardium, LA, "
               "RV, RA), landmarks (mitral annulus, LV apex, PLAX calipers), phases and "
               "pixel_spacing_mm; the synthetic renderer's exact geometry, empty for MIMIC. "
               "Frames, captions and splits unchanged.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      EchogroundConfig(name="synthetic", source="synthetic",
                       description="Procedurally rendered echo studies (no download), 2000 patients."),
      EchogroundConfig(name="mimic", source="mimic",
                       description="MIMIC-IV-ECHO DICOMs + structured measurements (manual_dir)."),
      EchogroundConfig(name="camus", source="camus", num_frames=2, frames_at="ed_es",
                       description="CAMUS's NIfTI release: A2C / A4C ED and ES with expert masks (manual_dir)."),
      EchogroundConfig(name="echonet_dynamic", source="echonet_dynamic", num_frames=2,
                       frames_at="ed_es",
                       description="EchoNet-Dynamic: A4C ED and ES frames, traced LV (manual_dir)."),
      EchogroundConfig(name="echonet_lvh", source="echonet_lvh", num_frames=2, frames_at="ed_es",
                       description="EchoNet-LVH: PLAX ED and ES frames with caliper points (manual_dir)."),
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
    # The one TFDS internal overridden, because only it sees the DownloadConfig: whether Beam
    # options were given (`tfds build --beam_pipeline_options=...` runs the mimic source on
    # Beam; the synthetic source is a plain generator either way), and how many shards were
    # asked for, which a split smaller than that cannot have (TFDS refuses it). The plan is
    # made here once; _split_generators and _process_pipeline_result read it.
    cfg = self.builder_config
    beam = cfg.source == "mimic" and bool(download_config.beam_options or download_config.beam_runner)
    self.built_with_beam = beam  # which path this builder's last build took (tests read it)
    manual_dir = os.fspath(dl_manager.manual_dir) if cfg.source != "synthetic" else ""
    make = build_plans.plan_beam if beam else build_plans.read_source
    self._plan = make(cfg, manual_dir, os.fspath(self.data_dir))
    try:
      smallest = min(self._plan.sizes.values())
      wanted = download_config.num_shards or cfg.num_shards
      if wanted > smallest:
        logging.warning("echoground: %d shards requested but the smallest split has %d examples; "
                        "writing %d shards per split.", wanted, smallest, smallest)
      download_config = dataclasses.replace(download_config, num_shards=min(wanted, smallest))
      super()._download_and_prepare(dl_manager, download_config)
    finally:
      self._plan.cleanup()
      self._plan = None

  def _current_plan(self) -> build_plans.LocalPlan | build_plans.BeamPlan:
    plan = getattr(self, "_plan", None)
    if plan is None:
      raise RuntimeError("echoground is built through download_and_prepare (python -m "
                         "echovlm_jax.data.build, or tfds build); its splits come from the plan "
                         "that makes.")
    return plan

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the plan already read what it needs
    return self._current_plan().split_generators()

  def _generate_examples(self, *args):
    # Each plan yields its splits' examples itself (split_generators); TFDS declares this
    # method abstract, and nothing calls it.
    raise NotImplementedError("echoground's splits come from build_plans")

  def _process_pipeline_result(self, pipeline_result) -> None:
    """Beam build: the tokenizer, statistics and report, once the examples exist."""
    self._current_plan().finish(pipeline_result)

  def _post_download_and_prepare_hook(self) -> None:
    if (epath.Path(self.data_dir) / artifacts.REPORT_FILENAME).exists():
      print(build_report.format_report(artifacts.load_report(self.data_dir)), flush=True)
