"""Study embeddings (evaluation/study_pooling.py): the initial pooling is the plain mean, and
fitted on studies where one view alone shows a finding, the per-view weights find that view
and the study AUC rises above the mean's."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from echovlm_jax import scoring
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import metrics
from echovlm_jax.evaluation import study_pooling

D = 16
V = len(schema.KNOWN_VIEWS)
K = len(schema.LABELS)
SHOWS = schema.KNOWN_VIEWS.index("a4c")     # the one view in which finding 0 shows


def _studies(seed: int, n_studies: int = 300) -> dict[str, np.ndarray]:
  """Studies of 6 images of distinct views; finding 0 moves only the a4c image's embedding
  (weakly, against noise) along a fixed direction; view prompts are orthogonal-ish so each
  image's predicted view is its own."""
  rng = np.random.default_rng(seed)
  view_proto = np.eye(V, D, dtype=np.float32) * 3.0
  direction = np.zeros(D, np.float32)
  direction[-1] = 1.0
  emb, study, labels, views = [], [], [], []
  for s in range(n_studies):
    y = rng.random() < 0.5
    for v in rng.choice(V, size=6, replace=False):
      e = view_proto[v] + rng.normal(0, 0.6, D).astype(np.float32)
      if v == SHOWS:
        e += (1.2 if y else -1.2) * direction
      emb.append(e)
      study.append(s)
      lab = np.full(K, -1, np.int32)
      lab[0] = int(y)
      labels.append(lab)
      views.append(schema.VIEWS.index(schema.KNOWN_VIEWS[v]))
  emb = scoring.l2_normalize(np.stack(emb))
  n = len(emb)
  text = scoring.l2_normalize(np.random.default_rng(seed + 1).normal(size=(n, D)))
  return dict(image_emb=emb, study_id=np.array(study), labels=np.stack(labels),
              view=np.array(views), text_emb=text.astype(np.float32),
              caption_id=np.arange(n)), view_proto, direction


def test_the_initial_pooling_is_the_mean():
  emb, proto, _ = _studies(0, 20)
  ids, seg = study_pooling.study_index(emb["study_id"])
  views = study_pooling.zero_shot_view(emb["image_emb"], proto)
  pooled = study_pooling.pool(study_pooling.init_params(D), jnp.asarray(emb["image_emb"]),
                              jnp.asarray(views), jnp.asarray(seg), len(ids))
  mean, mean_ids = metrics.pool_by_study(emb["image_emb"], emb["study_id"])
  assert (mean_ids == ids).all()
  for row in np.asarray(pooled):                      # every finding's row and the study row
    np.testing.assert_allclose(row, mean, atol=1e-5)


def test_fitted_view_weights_find_the_view_that_shows_the_finding():
  train, proto, direction = _studies(1)
  test, _, _ = _studies(2)
  pos = np.tile(direction, (K, 1))
  neg = -pos
  params = study_pooling.fit(train, proto, pos, neg, steps=300)
  w = params["w"][0]
  assert np.argmax(w) == SHOWS and w[SHOWS] - np.median(w) > 1.0, w
  res = study_pooling.evaluate(test, params, proto, pos, neg)
  auc_mean = res["mean"]["auc"][schema.LABELS[0]]
  auc_att = res["attention"]["auc"][schema.LABELS[0]]
  # Studies without an a4c image (5 of 11 views are left out of each) stay at chance either way.
  assert auc_att > auc_mean + 0.05, (auc_mean, auc_att)
  assert res["n_studies"] == 300
  assert res["view_weights"][schema.LABELS[0]]["a4c"] == pytest.approx(float(w[SHOWS]), abs=1e-3)
