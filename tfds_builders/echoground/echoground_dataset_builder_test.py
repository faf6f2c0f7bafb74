"""tfds.testing.DatasetBuilderTestCase for echoground: a 6-patient synthetic config and
the `mimic` config on dummy_data/ (a MIMIC-IV-ECHO v1.0-layout tree from tests/mimic_tree.py)."""

import collections
import hashlib
import os

import tensorflow_datasets as tfds

from tfds_builders.echoground import echoground_dataset_builder as builder_lib

TINY_SYNTHETIC = builder_lib.EchogroundConfig(
    name="synthetic_test", source="synthetic", num_patients=6, seed=0, image_size=16,
    num_frames=1, num_shards=2, vocab_size=128)
DUMMY_DATA = os.path.join(os.path.dirname(__file__), "dummy_data")


def _expected_splits(source_records) -> dict[str, int]:
  """Examples per split by the documented rule (docs/design.md), written out here rather than
  taken from records.py: a patient's id is sha256("echoground/patient/<source>/<key>")'s first
  8 bytes (signed); patients ordered by sha256("echoground/split/<id>"); the last 10 % (at
  least 1) go to test, the 10 % before to validation."""
  per_patient = collections.Counter()
  for _, r in source_records:
    digest = hashlib.sha256(f"echoground/patient/{r['source']}/{r['patient_key']}".encode()).digest()
    per_patient[int.from_bytes(digest[:8], "big", signed=True)] += 1
  ids = sorted(per_patient, key=lambda p: hashlib.sha256(f"echoground/split/{p}".encode()).digest())
  n = len(ids)
  n_test = n_val = max(1, round(0.1 * n))
  names = ["train"] * (n - n_val - n_test) + ["validation"] * n_val + ["test"] * n_test
  out = collections.Counter()
  for p, split in zip(ids, names):
    out[split] += per_patient[p]
  return dict(out)


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
                                   num_frames=c.num_frames))
    super().setUpClass()


class EchogroundMimicTest(tfds.testing.DatasetBuilderTestCase):
  """The mimic config on dummy_data/ (manual_dir), bad inputs included."""
  DATASET_CLASS = builder_lib.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["mimic"]
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False  # pydicom and the CSV reader use plain file IO
  SKIP_TF1_GRAPH_MODE = True
  # dummy_data: 5 patients with 5 readable DICOMs each in their linked TTE study (the bad
  # files and the report-less study of the first are skipped). 80/10/10 by patient with at
  # least one each: 3 / 1 / 1 patients.
  SPLITS = {"train": 15, "validation": 5, "test": 5}


if __name__ == "__main__":
  tfds.testing.test_main()
