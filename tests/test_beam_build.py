"""The `mimic` build on Apache Beam (DirectRunner, 2 worker processes) writes exactly what the
single-process build writes, on a tree whose record list repeats a row as the release's does;
its job graph does not grow with the number of files; splits stay put when patients are added;
a training job never builds real data."""

import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_datasets as tfds

from echovlm_jax.data import artifacts, build
from tests import mimic_csv_tree, mimic_tree
from tests.echoground_fixtures import tiny_input_config
from tfds_builders.echoground import build_plans, records

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]
BEAM = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"


def _config(data_dir, root):
  return tiny_input_config(data_dir, builder_config="mimic", manual_dir=str(root), image_size=32,
                           num_frames=1, num_shards=2)


def _examples(builder):
  """split -> examples sorted by (study, frames): the writer's order is not part of the output."""
  out = {}
  for split in records.SPLITS:
    exs = list(tfds.as_numpy(builder.as_dataset(split)))
    out[split] = sorted(exs, key=lambda e: (int(e["study_id"]), e["frames"].tobytes()))
  return out


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
  # One record row listed twice: the release repeats 103 whole rows.
  return mimic_tree.write_tree(tmp_path_factory.mktemp("tree"), num_subjects=6, hw=(64, 96),
                               cine_frames=3, repeated_rows=1)


def test_beam_build_writes_what_the_single_process_build_writes(small_tree, tmp_path):
  single = build.ensure_dataset(_config(tmp_path / "single", small_tree["root"]))
  beam = build.get_builder(_config(tmp_path / "beam", small_tree["root"]))
  beam.download_and_prepare(download_config=tfds.download.DownloadConfig(
      num_shards=2, manual_dir=small_tree["root"], beam_options=build._beam_options(BEAM)))  # pylint: disable=protected-access
  assert beam.built_with_beam  # the Beam path ran, not the generator
  beam = build.get_builder(_config(tmp_path / "beam", small_tree["root"]))
  a, b = _examples(single), _examples(beam)
  assert {s: len(v) for s, v in a.items()} == {s: len(v) for s, v in b.items()}
  assert sum(len(v) for v in a.values()) == 6 * len(mimic_tree.FILES)
  for split in records.SPLITS:
    for x, y in zip(a[split], b[split]):
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=f"{split}/{k}")
  for name in (artifacts.TOKENIZER_FILENAME, artifacts.STATS_FILENAME):
    assert open(os.path.join(single.data_dir, name), "rb").read() == open(
        os.path.join(beam.data_dir, name), "rb").read(), name
  ra, rb = artifacts.load_report(single.data_dir), artifacts.load_report(beam.data_dir)
  assert ra == rb  # every counter, gathered through Beam metrics on the Beam side
  assert ra["source_counts"]["skip"] == {"file_of_study_without_report": 1, "missing_file": 1,
                                         "unreadable_dicom": 2, "repeated_dicom_filepath": 1}
  assert not os.path.exists(os.path.join(beam.data_dir, "_beam_work"))  # plan and infos removed


def _job_graph_bytes(root, data_dir) -> int:
  """Size of the job graph a Beam `mimic` build submits for the tree at root (built, not run)."""
  builder = build.get_builder(_config(data_dir, root))
  plan = build_plans.plan_beam(builder.builder_config, str(root), builder.data_dir)
  pipeline = beam.Pipeline()
  for split, transform in plan.split_generators().items():
    _ = pipeline | split >> transform
  return len(pipeline.to_runner_api().SerializeToString())


def test_the_job_graph_does_not_grow_with_the_number_of_files(tmp_path):
  sizes = {}
  for name, rows in (("small", 60), ("large", 3000)):   # same studies and patients, 50x the files
    root = tmp_path / name / "tree"
    mimic_csv_tree.write_csvs(root, record_rows=rows, repeated_rows=2, studies=12, patients=9,
                              reports=30, report_patients=20, echoview_rows=10)
    sizes[name] = _job_graph_bytes(root, tmp_path / name / "data")
  # Paths of equal length in both: what differs is zlib's packing of pickled DoFns (tens of
  # bytes). Items in the graph (beam.Create) added ~50 bytes per file.
  assert abs(sizes["large"] - sizes["small"]) < 2000, sizes
  assert sizes["large"] < 1 << 20, sizes


def test_adding_patients_never_moves_one_to_another_split(small_tree, tmp_path):
  bigger = mimic_tree.write_tree(tmp_path / "bigger", num_subjects=11, hw=(64, 96), cine_frames=3)
  split_of = {}
  for name, tree in (("small", small_tree), ("bigger", bigger)):
    builder = build.ensure_dataset(_config(tmp_path / name, tree["root"]))
    split_of[name] = {int(e["patient_id"]): s for s in records.SPLITS
                      for e in tfds.as_numpy(builder.as_dataset(s))}
  assert len(split_of["bigger"]) == 11 and len(split_of["small"]) == 6
  assert all(split_of["bigger"][p] == s for p, s in split_of["small"].items())


def test_a_training_job_never_builds_real_data(small_tree, tmp_path):
  ic = _config(tmp_path / "nothing_yet", small_tree["root"])
  with pytest.raises(FileNotFoundError) as e:
    build.ensure_dataset(ic, build_real=False)
  msg = str(e.value)
  assert "python -m echovlm_jax.data.build --config configs/echovlm.py" in msg
  assert f"--config.input.manual_dir={small_tree['root']}" in msg and "--beam_pipeline_options" in msg
  assert not os.path.exists(os.path.join(tmp_path / "nothing_yet", "echoground"))
