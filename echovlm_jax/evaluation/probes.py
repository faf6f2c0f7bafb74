"""Linear probes on frozen image embeddings: views, labels (logistic) and measurements (ridge).

Pure scikit-learn on host arrays: fit on one split's embeddings, score on another's.
Embedding dicts are those of `embeddings.compute_embeddings`.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import metrics

Embeddings = Mapping[str, np.ndarray]

# Standardising first makes one C / alpha grid sensible whatever the embedding width.
_RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _logistic(c: float, max_iter: int):
  return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


def _fit(model, x, y):
  with warnings.catch_warnings():
    # A probe that has not fully converged is still a valid probe; don't spam the log.
    warnings.simplefilter("ignore", ConvergenceWarning)
    return model.fit(x, y)


def view_probe(train: Embeddings, test: Embeddings, c: float = 1.0, max_iter: int = 500
               ) -> dict:
  """Multinomial logistic probe for the view, on images with a known view.

  Returns accuracy, balanced_accuracy, n_train, n_test (NaN metrics when fewer
  than two views occur in training).
  """
  tr = train["view"] != schema.UNKNOWN_VIEW_ID
  te = test["view"] != schema.UNKNOWN_VIEW_ID
  y_tr, y_te = train["view"][tr], test["view"][te]
  out = dict(n_train=int(tr.sum()), n_test=int(te.sum()))
  if len(np.unique(y_tr)) < 2 or not te.any():
    return dict(out, accuracy=float("nan"), balanced_accuracy=float("nan"))
  model = _fit(_logistic(c, max_iter), train["image_emb"][tr], y_tr)
  pred = model.predict(test["image_emb"][te])
  return dict(out, accuracy=metrics.accuracy(y_te, pred),
              balanced_accuracy=metrics.balanced_accuracy(y_te, pred))


def label_probes(train: Embeddings, test: Embeddings, c: float = 1.0, max_iter: int = 500
                 ) -> dict[str, dict]:
  """Binary logistic probe per label on eligible images (see `label_eligible`).

  Returns label -> dict(auc, n_pos, n_neg) for the test split; auc NaN when a
  class is missing in train or test.
  """
  out = {}
  for k, label in enumerate(schema.LABELS):
    tr, te = metrics.label_eligible(train, k), metrics.label_eligible(test, k)
    y_tr, y_te = train["labels"][tr, k], test["labels"][te, k]
    res = dict(n_pos=int((y_te == 1).sum()), n_neg=int((y_te == 0).sum()), auc=float("nan"))
    if len(np.unique(y_tr)) == 2 and len(np.unique(y_te)) == 2:
      model = _fit(_logistic(c, max_iter), train["image_emb"][tr], y_tr)
      res["auc"] = metrics.roc_auc(y_te, model.predict_proba(test["image_emb"][te])[:, 1])
    out[label] = res
  return out


def measurement_probes(train: Embeddings, test: Embeddings, meas_std: Sequence[float] | None,
                       min_train: int = 10) -> dict[str, dict]:
  """Ridge probe per measurement on images whose `meas_mask` is set (present and shown).

  `measurements` are z-scored with the train split's stats, so the error in the
  measurement's unit is the z-scale error times that measurement's std
  (`meas_std` [M]); without stats the MAE stays in z units and `unit` says so.
  Returns name -> dict(mae, unit, n_train, n_test); mae NaN when fewer than
  `min_train` training or no test values.
  """
  out = {}
  for m, name in enumerate(schema.MEASUREMENTS):
    tr, te = train["meas_mask"][:, m] > 0, test["meas_mask"][:, m] > 0
    unit = schema.MEASUREMENT_INFO[name].unit if meas_std is not None else "z"
    res = dict(mae=float("nan"), unit=unit, n_train=int(tr.sum()), n_test=int(te.sum()))
    if tr.sum() >= min_train and te.any():
      model = _fit(make_pipeline(StandardScaler(), RidgeCV(alphas=_RIDGE_ALPHAS)),
                   train["image_emb"][tr], train["measurements"][tr, m])
      err = np.abs(model.predict(test["image_emb"][te]) - test["measurements"][te, m])
      scale = float(meas_std[m]) if meas_std is not None else 1.0
      res["mae"] = float(np.mean(err) * scale)
    out[name] = res
  return out
