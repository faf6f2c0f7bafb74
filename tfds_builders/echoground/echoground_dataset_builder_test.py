"""tfds.testing.DatasetBuilderTestCase for echoground: a 6-patient synthetic config and
the `mimic` config on dummy_data/ (a fake MIMIC-IV-ECHO tree from data/fake_mimic.py)."""

import collections
import os

import tensorflow_datasets as tfds

from tfds_builders.echoground import echoground_dataset_builder as builder_lib
from tfds_builders.echoground import records

TINY_SYNTHETIC = builder_lib.EchogroundConfig(
    name="synthetic_test", source="synthetic", num_patients=6, seed=0, image_size=16,
    num_frames=1, num_shards=2, vocab_size=128)
DUMMY_DATA = os.path.join(os.path.dirname(__file__), "dummy_data")


def _expected_splits(source_records, cfg) -> dict[str, int]:
  """Examples per split, derived independently of the TFDS writer (records + patient split)."""
  maker = records.ExampleMaker(cfg.num_frames, cfg.image_size)
  patients = [ex["patient_id"] for made in (maker(k, r) for k, r in source_records) if made
              for ex in [made[1]]]
  split_of = records.split_patients(patients)
  return dict(collections.Counter(split_of[p] for p in patients))


class EchogroundSyntheticTest(tfds.testing.DatasetBuilderTestCase):
  """The synthetic source, no downloads (dummy_data is not read)."""
  DATASET_CLASS = builder_lib.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = [TINY_SYNTHETIC]
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # artifacts and the spill use plain file IO
  SKIP_TF1_GRAPH_MODE = True

  @classmethod
  def setUpClass(cls):
    from echovlm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    c = TINY_SYNTHETIC
    cls.SPLITS = _expected_splits(
        synthetic.generate_records(c.num_patients, c.seed, image_size=c.image_size,
                                   num_frames=c.num_frames), c)
    super().setUpClass()


class EchogroundMimicTest(tfds.testing.DatasetBuilderTestCase):
  """The mimic config on dummy_data/ (manual_dir), bad inputs included."""
  DATASET_CLASS = builder_lib.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["mimic"]
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # pydicom and the CSV reader use plain file IO
  SKIP_TF1_GRAPH_MODE = True

  @classmethod
  def setUpClass(cls):
    from echovlm_jax.data import mimic  # pylint: disable=g-import-not-at-top
    c = next(c for c in builder_lib.Builder.BUILDER_CONFIGS if c.name == "mimic")
    cls.SPLITS = _expected_splits(
        mimic.generate_records(DUMMY_DATA, image_size=c.image_size, num_frames=c.num_frames), c)
    super().setUpClass()


if __name__ == "__main__":
  tfds.testing.test_main()
