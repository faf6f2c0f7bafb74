"""Session-scoped tiny `echoground` datasets, built once per test session.

Loaded as a pytest plugin from the root conftest.py, so every test module that
asks for `tiny_echoground` shares one build (a few seconds on 2 cores).
"""

from __future__ import annotations

import ml_collections
import pytest

TINY = dict(synthetic_patients=12, synthetic_seed=0, image_size=32, res=24, num_frames=2,
            vocab_size=256, num_shards=3, max_text_len=48, shuffle_buffer=64, prefetch=1)


def tiny_input_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """config.input of the real config, shrunk: 12 patients, 32 px, 2-frame clips, 3 shards."""
  from configs import echovlm  # pylint: disable=g-import-not-at-top
  ic = ml_collections.ConfigDict(echovlm.get_config("runlocal").input.to_dict())
  ic.data_dir = str(data_dir)
  for k, v in {**TINY, **overrides}.items():
    ic[k] = v
  return ic


@pytest.fixture(scope="session")
def tiny_echoground(tmp_path_factory):
  """(input_config, prepared builder) of the tiny synthetic dataset."""
  from echovlm_jax.data import build  # pylint: disable=g-import-not-at-top
  ic = tiny_input_config(tmp_path_factory.mktemp("tfds"))
  return ic, build.ensure_dataset(ic)


@pytest.fixture(scope="session")
def tiny_dense_echoground(tmp_path_factory):
  """(input_config, prepared builder) of the tiny synthetic dataset as ED + ES pairs (the
  dense tasks' data, input.frames_at="ed_es")."""
  from echovlm_jax.data import build  # pylint: disable=g-import-not-at-top
  ic = tiny_input_config(tmp_path_factory.mktemp("tfds_dense"), frames_at="ed_es")
  return ic, build.ensure_dataset(ic)


@pytest.fixture(scope="session")
def release_tree(tmp_path_factory):
  """A MIMIC-IV-ECHO v1.0-layout tree at the release's geometry (708 x 1016 YBR_FULL_422 JPEG
  cines and spectral stills, PHI in the headers; tests/mimic_tree.py), written once."""
  from tests import mimic_tree  # pylint: disable=g-import-not-at-top
  return mimic_tree.write_tree(tmp_path_factory.mktemp("mimic_v1"), num_subjects=8)


@pytest.fixture(scope="session")
def release_records(release_tree):
  """(records, stats) of mimic.generate_records on `release_tree` (32 px, 1 frame)."""
  import collections  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import mimic  # pylint: disable=g-import-not-at-top
  stats = collections.Counter()
  records = list(mimic.generate_records(release_tree["root"], image_size=32, num_frames=1,
                                        stats=stats))
  return records, stats


@pytest.fixture(scope="session")
def release_dataset(release_tree, tmp_path_factory):
  """(input_config, prepared builder): the `mimic` config built from `release_tree` at 32 px."""
  from echovlm_jax.data import build  # pylint: disable=g-import-not-at-top
  ic = tiny_input_config(tmp_path_factory.mktemp("tfds_mimic"), builder_config="mimic",
                         manual_dir=release_tree["root"], image_size=32, num_frames=1, num_shards=2)
  return ic, build.ensure_dataset(ic)
