"""The labelling CLI (python -m echovlm_jax.tools.label_views) on a v1.0-layout tree with a
tiny trained classifier: one row per readable DICOM with the model's probabilities, bad files
skipped and counted, a rerun resumes (torn last line included), shares split the files across
processes, two processes write what one does, and the builder takes the CSV as a view source."""

from __future__ import annotations

import collections
import csv
import os
import shutil

import numpy as np
import pytest

from echovlm_jax import distributed
from echovlm_jax.tools import label_views
from echovlm_jax.train import checkpointing, loop
from echovlm_jax.data import dicom, mimic, reader_options
from echovlm_jax.echo import schema
from echovlm_jax.inference.frames import prepare_frames
from tests import mimic_tree, multiprocess_utils
from tests.test_view_classifier import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the truncated file


@pytest.fixture(scope="module")
def run(tiny_echoground, tmp_path_factory):
  """A view classifier workdir: the tiny config, 2 steps, no evals."""
  ic, _ = tiny_echoground
  c = tiny_config(ic.data_dir, total_steps=2, ckpt_every=2)
  c.evals = {}
  workdir = str(tmp_path_factory.mktemp("vc_run"))
  loop.train_and_evaluate(c, workdir)
  return workdir, c


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  return mimic_tree.write_tree(tmp_path_factory.mktemp("mimic_views"), num_subjects=3,
                               hw=(96, 128), cine_frames=3)


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


@pytest.fixture(scope="module")
def labelled(run, tree, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("views_out") / "view_predictions.csv")
  counts = label_views.label_tree(run[0], tree["root"], out, batch_size=8, workers=2)
  return out, counts


def test_one_row_per_readable_dicom_with_the_models_probabilities(run, tree, labelled, num_devices):
  out, counts = labelled
  rows = _rows(out)
  assert tuple(rows[0]) == label_views.COLUMNS
  readable = [f for f in tree["files"] if f["expected"] in ("ok", "no_report")]
  assert sorted(r[1] for r in rows[1:]) == sorted(os.path.basename(f["rel"]) for f in readable)
  assert counts["predicted"] == counts["rows"] == len(readable) and counts["already_done"] == 0
  for r in rows[1:]:
    probs = np.array(r[4:], float)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert r[2] == schema.KNOWN_VIEWS[int(probs.argmax())] and float(r[3]) == pytest.approx(probs.max())
    assert r[0] == r[1].split("_")[0]  # the study id, from the record list
  # The row is the model's output for that file (rows are not shuffled between files).
  workdir, c = run
  model, _ = checkpointing.restore_params(c, workdir, distributed.create_mesh(c.mesh))
  f = readable[-1]
  frames = dicom.load_frames(os.path.join(tree["root"], f["rel"]), num_frames=c.input.num_frames,
                             size=c.input.image_size)
  want = np.asarray(model(prepare_frames(frames[None], c.input.res)))
  want = np.exp(want - want.max()) / np.exp(want - want.max()).sum()
  got = next(r for r in rows if r[1] == os.path.basename(f["rel"]))
  np.testing.assert_allclose(np.array(got[4:], float), want[0], atol=2e-5)


def test_bad_files_are_skipped_and_counted(tree, labelled):
  _, counts = labelled
  expected = collections.Counter(f["expected"] for f in tree["files"])
  assert counts["skipped:missing"] == expected["missing"] == 1
  assert counts["skipped:unreadable"] == expected["unreadable"] == 2
  assert counts["files"] == len(tree["files"])


def test_a_rerun_skips_what_is_written_and_survives_a_torn_line(run, tree, labelled, tmp_path):
  full, _ = labelled
  out = str(tmp_path / "again.csv")
  rows = _rows(full)
  # A killed run: its part file holds four complete rows and half of a fifth.
  with open(label_views.part_path(out, 0, 2), "w", newline="") as f:
    csv.writer(f).writerows(rows[1:5])
    f.write(",".join(rows[5])[:20])
  counts = label_views.label_tree(run[0], tree["root"], out, batch_size=8, workers=2)
  assert counts["already_done"] == 4 and counts["predicted"] == len(rows) - 1 - 4
  assert open(out).read() == open(full).read()
  assert not [p for p in os.listdir(tmp_path) if ".part-" in p]  # merged away
  again = label_views.label_tree(run[0], tree["root"], out, batch_size=8, workers=2)
  assert again["predicted"] == 0 and again["already_done"] == len(rows) - 1
  assert open(out).read() == open(full).read()


def test_shares_cover_every_file_once():
  files = list(range(23))
  shares = [label_views.host_share(files, i, 4) for i in range(4)]
  assert sorted(x for s in shares for x in s) == files
  assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.slow
def test_two_processes_write_what_one_does(run, tree, labelled, tmp_path):
  full, _ = labelled
  out = str(tmp_path / "two.csv")
  outs = multiprocess_utils.run_workers(
      ["-m", "echovlm_jax.tools.label_views", "--workdir", run[0], "--manual_dir", tree["root"],
       "--out", out, "--batch_size", "8", "--workers", "2"], num_processes=2, devices_per_process=4, timeout=300)
  import re  # pylint: disable=g-import-not-at-top
  predicted = [int(re.search(r"Process (\d): (\d+) predicted", o).group(2)) for o in outs]
  assert min(predicted) > 0 and sum(predicted) == len(_rows(full)) - 1  # each did its share
  got = {r[1]: np.array(r[3:], float) for r in _rows(out)[1:]}
  want = {r[1]: np.array(r[3:], float) for r in _rows(full)[1:]}
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_allclose(got[k], want[k], atol=2e-5)


def test_the_builder_reads_the_cli_output_as_a_view_source(tree, labelled):
  out, _ = labelled
  stats = collections.Counter()
  options = reader_options.MimicOptions(view_predictions=out, view_predictions_min_prob=0.0)
  records = list(mimic.generate_records(tree["root"], image_size=32, stats=stats, options=options))
  by_key = {mimic.record_key(f["rel"]): f for f in tree["files"]}
  sources = collections.Counter(r["view_source"] for _, r in records)
  assert sources["classifier"] == sum(by_key[k]["view"] == "unknown" for k, _ in records)
  assert sources["echoview"] == sum(by_key[k]["view"] != "unknown" for k, _ in records)
