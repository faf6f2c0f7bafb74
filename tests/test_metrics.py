"""Each evaluation metric against a small example computed by hand."""

import math

import numpy as np
import pytest

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import metrics, probes, retrieval, zero_shot


def test_roc_auc_counts_ties_as_half():
  # Positive/negative pairs: (.5,.1)=1, (.5,.5)=1/2, (.9,.1)=1, (.9,.5)=1 -> 3.5 / 4.
  assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
  assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))  # one class: undefined, not 0.5
  fpr, tpr = metrics.roc_points([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
  assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1


def test_macro_auc_skips_undefined_labels():
  assert metrics.macro_auc([0.875, float("nan"), 0.5]) == pytest.approx(0.6875)
  assert math.isnan(metrics.macro_auc([float("nan")]))


def test_accuracy_balanced_accuracy_and_confusion():
  y_true, y_pred = [0, 0, 0, 1], [0, 0, 1, 1]
  assert metrics.accuracy(y_true, y_pred) == 0.75
  # Recall 2/3 for class 0 and 1 for class 1.
  assert metrics.balanced_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
  # A class that is only ever predicted (2) does not enter the mean of recalls.
  assert metrics.balanced_accuracy([0, 0, 1], [0, 2, 1]) == pytest.approx(0.75)
  cm = metrics.confusion_matrix(y_true, y_pred, 3)
  np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 0], [0, 0, 0]])
  recall = metrics.per_class_recall(cm)
  assert recall[0] == pytest.approx(2 / 3) and recall[1] == 1 and math.isnan(recall[2])
  # No examples (a split without known views): NaN scores and an all-zero int64 matrix.
  assert math.isnan(metrics.accuracy([], [])) and math.isnan(metrics.balanced_accuracy([], []))
  empty = metrics.confusion_matrix(np.zeros(0, int), np.zeros(0, int), 3)
  assert empty.dtype == np.int64 and empty.shape == (3, 3) and not empty.any()


def test_accuracy_and_confusion_pinned_on_random_predictions():
  """The values of the NumPy these replaced (mean of hits; np.add.at counts), bit for bit."""
  rng = np.random.RandomState(0)
  for _ in range(50):
    c, n = rng.randint(2, 20), rng.randint(1, 200)
    y_true = rng.randint(0, c, n)
    y_pred = np.where(rng.rand(n) < 0.5, y_true, rng.randint(0, c, n))
    assert metrics.accuracy(y_true, y_pred) == float(np.mean(y_true == y_pred))
    counts = np.zeros((c, c), np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    cm = metrics.confusion_matrix(y_true, y_pred, c)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, counts)


def test_caption_ids_equal_for_identical_token_rows():
  ids = metrics.caption_ids(np.array([[5, 6, 1, 0], [5, 6, 1, 0], [7, 1, 0, 0], [5, 6, 1, 1]]))
  assert ids[0] == ids[1] and len(set(ids.tolist())) == 3


def test_retrieval_counts_duplicate_captions_as_matches():
  # Captions: images 0 and 1 share caption "a"; 2 has "b"; 3 has "c".
  ta, tb, tc = [1, 0], [0, 1], [-1, 0]
  text = np.array([ta, ta, tb, tc], np.float32)
  image = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]], np.float32)
  cap = np.array([0, 0, 1, 2])
  out = metrics.retrieval_metrics(image, text, cap, ks=(1, 2, 5))
  # image -> distinct captions: i0: a=1 best -> 1; i1: a=0 ties c=0, below b=1 -> 3 (ties
  # pessimistic); i2: b=.8 best -> 1; i3: c=-.8 below a, b -> 3.
  assert out["i2t_r1"] == pytest.approx(0.5)
  assert out["i2t_r2"] == pytest.approx(0.5)
  assert out["i2t_r5"] == 1.0
  assert out["i2t_median_rank"] == 2.0
  # caption -> images: a hits i0 (1.0) first -> 1; b: i2 (.8) behind i1 (1.0) -> 2;
  # c: i3 (-.8) behind i1 (0) and i2 (-.6) -> 3.
  assert out["t2i_r1"] == pytest.approx(1 / 3)
  assert out["t2i_r2"] == pytest.approx(2 / 3)
  assert out["t2i_median_rank"] == 2.0
  # Chunking the queries changes nothing.
  chunked = metrics.retrieval_metrics(image, text, cap, ks=(1, 2, 5), chunk=1)
  assert chunked == out


def test_retrieval_collapsed_model_is_not_rewarded():
  emb = np.tile(np.array([[1.0, 0.0]], np.float32), (6, 1))
  out = metrics.retrieval_metrics(emb, emb, np.arange(6))
  assert out["i2t_r1"] == 0.0 and out["t2i_r1"] == 0.0 and out["i2t_median_rank"] == 6


def test_negation_sensitivity_is_strict_and_masked():
  image = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
  text = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
  neg = np.array([[0, 1], [0, 1], [0, -1], [1, 0]], np.float32)
  # i0: 1 > 0 yes; i1: 0 > 1 no; i2: 0 > 0 no (a tie is not a preference); i3: no negation.
  frac, n = metrics.negation_sensitivity(image, text, neg, np.array([1, 1, 1, 0]))
  assert (frac, n) == (pytest.approx(1 / 3), 3)
  res = retrieval.negation(dict(image_emb=image, text_emb=text, neg_text_emb=neg,
                                has_negation=np.array([1., 1., 1., 0.])))
  assert res["mean_margin"] == pytest.approx((1 - 1 + 0) / 3)


def test_study_pooling_normalises_before_and_after_the_mean():
  emb = np.array([[2, 0], [0, 1], [0, -3], [5, 5]], np.float32)
  study = np.array([7, 7, 3, 7])
  mask = np.array([1, 1, 1, 0])   # the last image is excluded (e.g. a view without the finding)
  pooled, ids = metrics.pool_by_study(emb, study, mask)
  np.testing.assert_array_equal(ids, [3, 7])
  # Study 7: mean([1,0], [0,1]) = [.5,.5] -> [.707,.707]; a raw mean would be [1, .5].
  np.testing.assert_allclose(pooled, [[0, -1], [2 ** -0.5, 2 ** -0.5]], atol=1e-6)
  labels = np.array([[1, -1], [0, 0], [-1, 0], [0, 1]])
  np.testing.assert_array_equal(metrics.study_labels(labels[:3], study[:3], ids), [[-1, 0], [1, 0]])


def _one_hot_views(views):
  d = len(schema.KNOWN_VIEWS)
  return np.eye(d, dtype=np.float32)[[schema.KNOWN_VIEWS.index(v) for v in views]]


def test_zero_shot_views_skips_unknown_and_reports_confusion():
  prompts = np.eye(len(schema.KNOWN_VIEWS), dtype=np.float32)
  views = ["a4c", "a4c", "plax", "cw_av"]
  image = _one_hot_views(["a4c", "a2c", "plax", "cw_av"])      # the second a4c looks like a2c
  image = np.concatenate([image, _one_hot_views(["plax"])])     # an unknown-view image
  view_ids = np.array([schema.VIEWS.index(v) for v in views] + [schema.UNKNOWN_VIEW_ID])
  res = zero_shot.zero_shot_views(dict(image_emb=image, view=view_ids), prompts)
  assert res["n"] == 4 and res["accuracy"] == 0.75
  # Recalls: a4c 1/2, plax 1, cw_av 1 -> balanced 5/6.
  assert res["balanced_accuracy"] == pytest.approx(5 / 6)
  a4c, a2c = schema.KNOWN_VIEWS.index("a4c"), schema.KNOWN_VIEWS.index("a2c")
  assert res["confusion"][a4c, a2c] == 1 and res["per_view_recall"]["a4c"] == 0.5
  assert math.isnan(res["per_view_recall"]["a2c"])


def test_zero_shot_findings_only_scores_views_that_show_the_finding():
  k = schema.LABELS.index("aortic_stenosis")
  n_labels = len(schema.LABELS)
  pos = np.zeros((n_labels, 2), np.float32); pos[:, 0] = 1
  neg = np.zeros((n_labels, 2), np.float32); neg[:, 1] = 1
  image = np.array([[1, 0], [0, 1], [0, 1], [0.6, 0.8]], np.float32)
  views = np.array([schema.VIEWS.index(v) for v in ("cw_av", "cw_av", "a4c", "cw_av")])
  labels = np.full((4, n_labels), -1)
  # A positive on a4c (which cannot show stenosis) scores low but must not count;
  # the last cw_av image has an unknown label and must not count either.
  labels[:, k] = [1, 0, 1, -1]
  emb = dict(image_emb=image, view=views, labels=labels, study_id=np.array([1, 2, 1, 3]))
  res = zero_shot.zero_shot_findings(emb, pos, neg)
  r = res["per_label"]["aortic_stenosis"]
  assert (r["auc"], r["n_pos"], r["n_neg"]) == (1.0, 1, 1)
  assert (r["study_auc"], r["study_n_pos"], r["study_n_neg"]) == (1.0, 1, 1)
  assert res["macro_auc"] == 1.0  # every other label has no eligible image: skipped
  assert math.isnan(res["per_label"]["lv_dilation"]["auc"])


def _probe_split(rng, n):
  """Embeddings whose first dims encode the view and the (z-scored) LVEF."""
  view = rng.choice([schema.VIEWS.index("a4c"), schema.VIEWS.index("plax")], size=n)
  lvef_z = rng.normal(size=n).astype(np.float32)
  x = rng.normal(scale=0.05, size=(n, 8)).astype(np.float32)
  x[:, 0] += (view == schema.VIEWS.index("a4c")) * 2.0
  x[:, 1] += lvef_z
  m = len(schema.MEASUREMENTS)
  meas = np.zeros((n, m), np.float32)
  mask = np.zeros((n, m), np.float32)
  j = schema.MEASUREMENTS.index("lvef")
  meas[:, j], mask[:, j] = lvef_z, 1
  labels = np.full((n, len(schema.LABELS)), -1)
  labels[:, schema.LABELS.index("lv_systolic_dysfunction")] = (lvef_z < -0.5).astype(int)
  return dict(image_emb=x, view=view, measurements=meas, meas_mask=mask, labels=labels)


def test_probes_learn_views_labels_and_report_mae_in_units():
  rng = np.random.default_rng(0)
  train, test = _probe_split(rng, 200), _probe_split(rng, 100)
  assert probes.view_probe(train, test)["accuracy"] == 1.0
  lab = probes.label_probes(train, test)
  assert lab["lv_systolic_dysfunction"]["auc"] > 0.95
  assert math.isnan(lab["aortic_stenosis"]["auc"])
  std = np.ones(len(schema.MEASUREMENTS)); std[schema.MEASUREMENTS.index("lvef")] = 8.0
  z = probes.measurement_probes(train, test, None)["lvef"]
  pct = probes.measurement_probes(train, test, std)["lvef"]
  assert z["unit"] == "z" and pct["unit"] == "%" and pct["n_test"] == 100
  assert z["mae"] < 0.1                       # the noise is 0.05 per dim
  assert pct["mae"] == pytest.approx(8.0 * z["mae"])
  assert math.isnan(probes.measurement_probes(train, test, std)["tapse"]["mae"])
