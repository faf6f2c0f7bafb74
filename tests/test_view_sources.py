"""A view classifier's predictions as a view source of the `mimic` build: ECHOVIEW first, then
predictions at or above their own threshold, else unknown; the build report counts views by
source, and the predictions' content is part of the dataset's name."""

import collections
import csv
import os

import pytest

from echovlm_jax.data import build, echoview, mimic, reader_options
from echovlm_jax.echo import schema
from tests import echoground_fixtures, mimic_tree

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the truncated file

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
  return mimic_tree.write_tree(tmp_path_factory.mktemp("mimic_small"), num_subjects=4,
                               hw=(96, 128), cine_frames=3)


def write_predictions(path, tree, confidence_of) -> dict[str, tuple[str, float]]:
  """A predictions CSV as echovlm_jax.tools.label_views writes it: every listed DICOM predicted
  `psax_mid` (a view ECHOVIEW never gives in the tree) with confidence_of(i). Returns
  basename -> (view, confidence)."""
  want = {}
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(echoview.PREDICTION_COLUMNS)
    for i, fl in enumerate(tree["files"]):
      name, conf = os.path.basename(fl["rel"]), confidence_of(i)
      probs = [conf if v == "psax_mid" else (1 - conf) / (len(schema.KNOWN_VIEWS) - 1)
               for v in schema.KNOWN_VIEWS]
      w.writerow([fl["study"], name, "psax_mid", f"{conf:.4f}", *(f"{p:.4f}" for p in probs)])
      want[name] = ("psax_mid", conf)
    w.writerow(["1", "", "a4c", "0.99", *["0"] * len(schema.KNOWN_VIEWS)])  # no image: bad row
  return want


def test_echoview_first_then_confident_predictions_else_unknown(small_tree, tmp_path):
  pred = tmp_path / "view_predictions.csv"
  want = write_predictions(pred, small_tree, lambda i: 0.95 if i % 2 else 0.5)
  stats = collections.Counter()
  options = reader_options.MimicOptions(view_predictions=str(pred), view_predictions_min_prob=THRESHOLD)
  records = list(mimic.generate_records(small_tree["root"], image_size=32, stats=stats,
                                        options=options))
  by_key = {mimic.record_key(f["rel"]): f for f in small_tree["files"]}
  seen = collections.Counter()
  for key, r in records:
    truth = by_key[key]
    pview, pconf = want[os.path.basename(truth["rel"])]
    if truth["view"] != "unknown":  # ECHOVIEW labelled it: ECHOVIEW wins over any prediction
      assert (r["view"], r["view_source"]) == (truth["view"], "echoview")
    elif pconf >= THRESHOLD:
      assert (r["view"], r["view_source"]) == (pview, "classifier")
      assert r["view_confidence"] == pytest.approx(pconf)
    else:
      assert (r["view"], r["view_source"], r["view_confidence"]) == ("unknown", "none", 0.0)
    seen[r["view_source"]] += 1
  assert set(seen) == {"echoview", "classifier", "none"}
  assert stats["view:classifier_bad_row"] == 1
  assert stats["view:classifier_low_confidence"] == sum(c < THRESHOLD for _, c in want.values())
  assert stats[f"view:source_file:{pred.name}"] == 1


def test_a_missing_predictions_file_fails_at_start(small_tree, tmp_path):
  options = reader_options.MimicOptions(view_predictions=str(tmp_path / "nope.csv"))
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    next(mimic.generate_records(small_tree["root"], image_size=32, options=options))


def _input_config(data_dir, root, predictions="", min_prob=THRESHOLD):
  ic = echoground_fixtures.tiny_input_config(data_dir, builder_config="mimic", manual_dir=root,
                                             image_size=32, num_frames=1, num_shards=1)
  ic.mimic.view_predictions = str(predictions)
  ic.mimic.view_predictions_min_prob = min_prob
  return ic


def test_the_predictions_content_is_in_the_dataset_name(small_tree, tmp_path):
  a, b, a_moved = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "moved.csv"
  write_predictions(a, small_tree, lambda i: 0.9)
  write_predictions(b, small_tree, lambda i: 0.91)
  a_moved.write_bytes(a.read_bytes())
  root = small_tree["root"]
  name = lambda **kw: build.builder_config_for(_input_config(tmp_path, root, **kw)).name
  plain = name()
  assert name(min_prob=0.3) == plain             # a threshold without predictions changes nothing
  assert name(predictions=a).startswith(plain + "_r")
  assert name(predictions=a) != name(predictions=b)          # other predictions: another dataset
  assert name(predictions=a) == name(predictions=a_moved)    # same content elsewhere: the same
  assert name(predictions=a) != name(predictions=a, min_prob=0.95)
  with pytest.raises(FileNotFoundError, match="view_predictions"):
    name(predictions=tmp_path / "missing.csv")


def test_the_build_report_counts_views_by_source(small_tree, tmp_path):
  from echovlm_jax.data import artifacts  # pylint: disable=g-import-not-at-top
  pred = tmp_path / "view_predictions.csv"
  want = write_predictions(pred, small_tree, lambda i: 0.95 if i % 2 else 0.5)
  builder = build.ensure_dataset(_input_config(tmp_path / "tfds", small_tree["root"], pred))
  cov = artifacts.load_report(builder.data_dir)["coverage"]
  ok = [f for f in small_tree["files"] if f["expected"] == "ok"]
  by_echoview = sum(f["view"] != "unknown" for f in ok)
  by_classifier = sum(f["view"] == "unknown" and want[os.path.basename(f["rel"])][1] >= THRESHOLD
                      for f in ok)
  assert cov["views_by_source"] == {"echoview": by_echoview, "classifier": by_classifier,
                                    "none": len(ok) - by_echoview - by_classifier}
