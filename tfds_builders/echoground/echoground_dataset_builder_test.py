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
  8 bytes (signed); f = sha256("echoground/split/<id>")'s first 8 bytes / 2^64; test when
  f < 0.1, validation when f < 0.2, else train; an empty validation / test split takes the
  train patient of lowest f."""
  per_patient = collections.Counter()
  for _, r in source_records:
    digest = hashlib.sha256(f"echoground/patient/{r['source']}/{r['patient_key']}".encode()).digest()
    per_patient[int.from_bytes(digest[:8], "big", signed=True)] += 1
  frac = {p: int.from_bytes(hashlib.sha256(f"echoground/split/{p}".encode()).digest()[:8], "big")
          / 2 ** 64 for p in per_patient}
  split = {p: "test" if f < 0.1 else "validation" if f < 0.2 else "train" for p, f in frac.items()}
  for name in ("test", "validation"):
    if name not in split.values():
      split[min((p for p in split if split[p] == "train"), key=frac.get)] = name
  out = collections.Counter()
  for p, n in per_patient.items():
    out[split[p]] += n
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
  # files and the report-less study of the first are skipped). Their split hashes are 0.664,
  # 0.674, 0.925 (train), 0.011 (test) and 0.133 (validation).
  SPLITS = {"train": 15, "validation": 5, "test": 5}


if __name__ == "__main__":
  tfds.testing.test_main()
