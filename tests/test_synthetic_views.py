"""Hidden views and a classifier's predictions in the synthetic build (issue 20, item 5): the
truth where visible, else a confident prediction, else unknown, in the train split only;
validation and test keep the truth; the options are in the dataset's name; a bad CSV fails
naming the file, the column and the fix; the labelling CLI's --synthetic CSV joins."""

from __future__ import annotations

import collections
import csv

import numpy as np
import pytest
import tensorflow_datasets as tfds

from echovlm_jax.data import artifacts, build, echoview, reader_options, synthetic, synthetic_views
from echovlm_jax.echo import schema
from tests import echoground_fixtures

N, SEED, SIZE, T = 12, 0, 32, 2   # echoground_fixtures.TINY
HIDDEN, THRESHOLD = 0.5, 0.8


def _wrong(view: str) -> str:
  return schema.KNOWN_VIEWS[(schema.KNOWN_VIEWS.index(view) + 1) % len(schema.KNOWN_VIEWS)]


@pytest.fixture(scope="module")
def plain():
  """key -> record of the plain synthetic source at the tiny size."""
  return dict(synthetic.generate_records(N, SEED, SIZE, T))


def write_predictions(path, plain_records, conf_of=lambda i: 0.95 if i % 3 else 0.5,
                      view_of=lambda i, drawn: drawn if i % 4 else _wrong(drawn),
                      size=SIZE, frames=T) -> dict[str, tuple[str, float]]:
  """A row for every image (all splits): image i predicted view_of(i, drawn view) with
  confidence conf_of(i). Returns image_name -> (view, confidence)."""
  want = {}
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(echoview.PREDICTION_COLUMNS)
    for i, (key, rec) in enumerate(sorted(plain_records.items())):
      name = synthetic_views.image_name(key, size, frames)
      view, conf = view_of(i, rec["drawn_view"]), conf_of(i)
      probs = [conf if v == view else (1 - conf) / (len(schema.KNOWN_VIEWS) - 1)
               for v in schema.KNOWN_VIEWS]
      w.writerow([rec["study_key"], name, view, f"{conf:.4f}", *(f"{p:.4f}" for p in probs)])
      want[name] = (view, conf)
  return want


def test_truth_then_confident_predictions_then_unknown_in_train_only(plain, tmp_path):
  pred = tmp_path / "p.csv"
  want = write_predictions(pred, plain)
  counts = collections.Counter()
  stream, planned = synthetic_views.generate_records(
      N, SEED, SIZE, T, reader_options.SyntheticViewOptions(
      hidden_view_fraction=HIDDEN, view_predictions=str(pred),
      view_predictions_min_prob=THRESHOLD), counts=counts)
  got = dict(stream)
  assert got.keys() == plain.keys()
  split_of = synthetic_views.split_of(N, SEED)
  assert planned == set(split_of)
  visible = synthetic_views.labelled_patients(split_of, HIDDEN)
  seen = collections.Counter()
  for key, rec in got.items():
    truth = plain[key]
    np.testing.assert_array_equal(rec["frames"], truth["frames"])
    pid = synthetic_views.patient_id(rec["patient_key"])
    hidden = pid not in visible
    if split_of[pid] != "train" or (not hidden and truth["view"] != "unknown"):
      # validation / test, or a visible recorded label: the truth, untouched
      assert (rec["view"], rec["view_source"]) == (truth["view"], truth["view_source"])
      seen["truth"] += 1
      continue
    pview, pconf = want[synthetic_views.image_name(key, SIZE, T)]
    if pconf >= THRESHOLD:
      assert (rec["view"], rec["view_source"]) == (pview, "classifier")
      assert rec["view_confidence"] == pytest.approx(pconf)
      seen["classifier_right" if pview == truth["drawn_view"] else "classifier_wrong"] += 1
    else:
      assert (rec["view"], rec["view_source"], rec["view_confidence"]) == ("unknown", "none", 0.0)
      seen["no_confident_prediction"] += 1
    seen["hidden" if hidden else "unrecorded"] += 1
  assert all(seen[k] for k in ("truth", "classifier_right", "classifier_wrong",
                               "no_confident_prediction", "hidden"))
  for k in ("classifier_right", "classifier_wrong", "no_confident_prediction"):
    assert counts[f"view:{k}"] == seen[k]
  assert counts["view:hidden_patient_images"] == seen["hidden"]
  assert counts["view:unrecorded_images"] == seen["unrecorded"]


def test_hidden_patients_are_those_the_classifier_does_not_see():
  """hidden_view_fraction f hides exactly the patients outside keep_labelled(..., 1 - f)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import labelled  # pylint: disable=g-import-not-at-top
  ids = [synthetic_views.patient_id(synthetic.patient_key(0, i)) for i in range(400)]
  visible = synthetic_views.labelled_patients(ids, 0.9)
  share = labelled.in_patient_share(tf.constant(ids, tf.int64), 0.1).numpy()
  assert visible == {p for p, s in zip(ids, share) if s}
  assert 20 <= len(visible) <= 60
  assert synthetic_views.labelled_patients(ids, 0.0) == set(ids)
  assert synthetic_views.labelled_patients(ids, 1.0) == set()
  with pytest.raises(ValueError, match="hidden_view_fraction"):
    synthetic_views.labelled_patients(ids, 1.5)


def _ic(data_dir, **synth):
  ic = echoground_fixtures.tiny_input_config(data_dir)
  for k, v in synth.items():
    ic.synthetic[k] = str(v) if k == "view_predictions" else v
  return ic


def test_the_options_are_in_the_dataset_name(plain, tmp_path):
  a, b, a_moved = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "moved.csv"
  write_predictions(a, plain)
  write_predictions(b, plain, conf_of=lambda i: 0.99)
  a_moved.write_bytes(a.read_bytes())
  name = lambda **kw: build.builder_config_for(_ic(tmp_path, **kw)).name
  default = name()
  assert name(view_predictions_min_prob=0.3) == default   # a threshold alone changes nothing
  hidden = name(hidden_view_fraction=0.9)
  assert hidden.startswith(default + "_h")
  assert hidden != name(hidden_view_fraction=0.8)
  with_a = name(hidden_view_fraction=0.9, view_predictions=a)
  assert with_a not in (default, hidden)
  assert with_a != name(hidden_view_fraction=0.9, view_predictions=b)
  assert with_a == name(hidden_view_fraction=0.9, view_predictions=a_moved)
  assert with_a != name(hidden_view_fraction=0.9, view_predictions=a, view_predictions_min_prob=0.95)
  with pytest.raises(FileNotFoundError, match="config.input.synthetic.view_predictions"):
    name(hidden_view_fraction=0.9, view_predictions=tmp_path / "missing.csv")


def _examples(builder, split):
  ds = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return sorted((int(e["study_id"]), e["caption"].decode(), int(e["view"]),
                 e["view_source"].decode(), e["frames"].tobytes()) for e in ds)


def test_the_build_keeps_the_truth_for_evaluation(tiny_echoground, plain, tmp_path):
  _, default = tiny_echoground
  pred = tmp_path / "p.csv"
  write_predictions(pred, plain)
  ic = _ic(tmp_path / "tfds", hidden_view_fraction=HIDDEN, view_predictions=pred,
           view_predictions_min_prob=THRESHOLD)
  builder = build.ensure_dataset(ic)
  assert builder.builder_config.name != default.builder_config.name
  for split in ("validation", "test"):   # what the evaluators read: the same images and truth
    assert _examples(builder, split) == _examples(default, split)
  report = artifacts.load_report(builder.data_dir)
  by_source = report["coverage"]["views_by_source"]
  assert by_source.get("classifier", 0) > 0 and by_source.get("none", 0) > 0
  view = report["source_counts"]["view"]
  assert view["classifier_right"] + view["classifier_wrong"] == by_source["classifier"]
  assert view["source_file:p.csv"] == 1
  train = _examples(builder, "train")
  assert sum(e[3] == "classifier" for e in train) == by_source["classifier"]
  # The build command a user is shown carries the options.
  cmd = build.build_commands(ic)[0]
  assert f"--config.input.synthetic.view_predictions={pred}" in cmd
  assert "--config.input.synthetic.hidden_view_fraction=0.5" in cmd


def _bad_csv(path, header, row):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerow(row)


@pytest.mark.parametrize("case", ["missing_column", "unknown_view", "other_seed", "other_size",
                                  "not_synthetic"])
def test_a_bad_csv_fails_naming_file_column_and_fix(plain, tmp_path, case):
  key = sorted(plain)[0]
  good_name = synthetic_views.image_name(key, SIZE, T)
  header = list(echoview.PREDICTION_COLUMNS)
  row = ["s", good_name, "a4c", "0.95", *["0.01"] * len(schema.KNOWN_VIEWS)]
  expect = {
      "missing_column": r"missing column\(s\) \['confidence'\].*python -m echovlm_jax.tools.label_views",
      "unknown_view": r"line 2, column 'view': 'apical_4ch' is not a view.*Rewrite the CSV",
      "other_seed": r"line 2, column 'image'.*seed 7.*--synthetic",
      "other_size": r"line 2, column 'image'.*image_size 64.*--synthetic",
      "not_synthetic": r"line 2, column 'image'.*not a synthetic image name.*--synthetic",
  }[case]
  if case == "missing_column":
    header[3] = "conf"
  elif case == "unknown_view":
    row[2] = "apical_4ch"
  elif case == "other_seed":
    row[1] = good_name.replace("synth0-", "synth7-")
  elif case == "other_size":
    row[1] = synthetic_views.image_name(key, 64, T)
  else:
    row[1] = "90001234_0001.dcm"
  path = tmp_path / "bad.csv"
  _bad_csv(path, header, row)
  with pytest.raises(ValueError, match=str(path)) as err:
    synthetic_views.generate_records(N, SEED, SIZE, T, reader_options.SyntheticViewOptions(
      hidden_view_fraction=0.9, view_predictions=str(path),
      view_predictions_min_prob=0.9), counts=collections.Counter())
  assert err.match(expect)


def test_a_csv_for_other_images_fails_at_the_end(tmp_path):
  """Rows of this seed and size, but none for the images the build must label (a CSV written
  for patients beyond this build's): an error, not a build without predictions."""
  far = dict(synthetic.patient_records(SEED, 500, SIZE, T))
  path = tmp_path / "far.csv"
  write_predictions(path, far, conf_of=lambda i: 0.99)
  stream, _ = synthetic_views.generate_records(
      N, SEED, SIZE, T, reader_options.SyntheticViewOptions(
      hidden_view_fraction=0.9, view_predictions=str(path),
      view_predictions_min_prob=0.9), counts=collections.Counter())
  with pytest.raises(ValueError, match=r"far.csv: none of its confident rows"):
    list(stream)


@pytest.fixture(scope="module")
def classifier_run(tiny_echoground, tmp_path_factory):
  """A view classifier workdir on the tiny dataset: 2 steps, no evals."""
  from echovlm_jax.train import loop  # pylint: disable=g-import-not-at-top
  from tests.test_view_classifier import tiny_config  # pylint: disable=g-import-not-at-top
  ic, _ = tiny_echoground
  c = tiny_config(ic.data_dir, total_steps=2, ckpt_every=2)
  c.evals = {}
  workdir = str(tmp_path_factory.mktemp("vc_synthetic"))
  loop.train_and_evaluate(c, workdir)
  return workdir


def test_the_cli_labels_the_train_images_and_the_build_joins_them(classifier_run, tiny_echoground,
                                                                   plain, tmp_path):
  from echovlm_jax.tools import label_views  # pylint: disable=g-import-not-at-top
  out = tmp_path / "preds.csv"
  assert label_views.main(["--workdir", classifier_run, "--synthetic", "--out", str(out),
                     "--batch_size", "8"]) == 0
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  split_of = synthetic_views.split_of(N, SEED)
  train_keys = {k for k, r in plain.items()
                if split_of[synthetic_views.patient_id(r["patient_key"])] == "train"}
  assert [r["image"] for r in rows] == sorted(synthetic_views.image_name(k, SIZE, T)
                                              for k in train_keys)
  assert artifacts.load_report(tiny_echoground[1].data_dir)["examples"]["train"] == len(rows)
  for r in rows:
    probs = np.array([float(r[f"prob_{v}"]) for v in schema.KNOWN_VIEWS])
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert r["view"] == schema.KNOWN_VIEWS[int(probs.argmax())]
    assert float(r["confidence"]) == pytest.approx(probs.max(), abs=1e-6)
  # Threshold 0: every train image without a visible view takes the prediction.
  counts = collections.Counter()
  stream, _ = synthetic_views.generate_records(
      N, SEED, SIZE, T, reader_options.SyntheticViewOptions(
      hidden_view_fraction=0.9, view_predictions=str(out),
      view_predictions_min_prob=0.0), counts=counts)
  got = dict(stream)
  needing = counts["view:hidden_patient_images"] + counts["view:unrecorded_images"]
  assert needing > 0 and counts["view:no_confident_prediction"] == 0
  assert sum(r["view_source"] == "classifier" for r in got.values()) == needing
  with pytest.raises(SystemExit):   # neither a MIMIC tree nor --synthetic
    label_views.main(["--workdir", classifier_run, "--out", str(tmp_path / "x.csv")])
