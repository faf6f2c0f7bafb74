"""Zero-shot view and finding classification from prompt embeddings.

Host-side scoring of precomputed embeddings (see `embeddings.py`): views by the
nearest view prompt, findings by positive-minus-negative prompt similarity.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from echovlm_jax.echo import schema
from echovlm_jax.evaluation import metrics
from echovlm_jax.scoring import finding_scores  # its home: shared with inference/

Embeddings = Mapping[str, np.ndarray]


def zero_shot_views(emb: Embeddings, view_prompt_emb: np.ndarray) -> dict:
  """Classifies each image with a known view by its most similar view prompt.

  emb: embedding dict with image_emb [N, d], view [N]; view_prompt_emb [V, d] in
  `schema.KNOWN_VIEWS` order. Returns accuracy, balanced_accuracy, n, and for the
  report: confusion [V, V] (rows true), per_view_recall {view: recall}, view_names.
  """
  known = emb["view"] != schema.UNKNOWN_VIEW_ID
  # Map VIEWS ids to KNOWN_VIEWS positions by name, not by assuming "unknown" is last.
  to_known = {schema.VIEWS.index(v): i for i, v in enumerate(schema.KNOWN_VIEWS)}
  y_true = np.array([to_known[int(v)] for v in emb["view"][known]], np.int64)
  y_pred = np.argmax(emb["image_emb"][known] @ np.asarray(view_prompt_emb).T, axis=1)
  v = len(schema.KNOWN_VIEWS)
  cm = metrics.confusion_matrix(y_true, y_pred, v)
  recall = metrics.per_class_recall(cm)
  return dict(
      accuracy=metrics.accuracy(y_true, y_pred),
      balanced_accuracy=metrics.balanced_accuracy(y_true, y_pred),
      n=int(known.sum()),
      confusion=cm, view_names=list(schema.KNOWN_VIEWS),
      per_view_recall={name: float(r) for name, r in zip(schema.KNOWN_VIEWS, recall)},
  )


def zero_shot_findings(emb: Embeddings, pos_emb: np.ndarray, neg_emb: np.ndarray) -> dict:
  """Per-label AUC at image and study level, on images that can show the finding.

  emb: image_emb [N, d], view [N], labels [N, K], study_id [N]; pos_emb, neg_emb
  [K, d] in `schema.LABELS` order. An image counts for label k when its label is
  known and its view can show that finding; a study's embedding pools only such
  images. Returns macro_auc, study_macro_auc, and per_label {label: dict(auc,
  study_auc, n_pos, n_neg, study_n_pos, study_n_neg, roc=(fpr, tpr))}.
  """
  scores = finding_scores(emb["image_emb"], pos_emb, neg_emb)
  per_label = {}
  for k, label in enumerate(schema.LABELS):
    sel = metrics.label_eligible(emb, k)
    y = emb["labels"][sel, k]
    s = scores[sel, k]
    pooled, ids = metrics.pool_by_study(emb["image_emb"], emb["study_id"], mask=sel)
    sy = metrics.study_labels(emb["labels"][sel][:, k:k + 1], emb["study_id"][sel], ids)[:, 0]
    ss = finding_scores(pooled, pos_emb[k:k + 1], neg_emb[k:k + 1])[:, 0]
    per_label[label] = dict(
        auc=metrics.roc_auc(y, s), n_pos=int((y == 1).sum()), n_neg=int((y == 0).sum()),
        study_auc=metrics.roc_auc(sy, ss), study_n_pos=int((sy == 1).sum()),
        study_n_neg=int((sy == 0).sum()), roc=metrics.roc_points(y, s))
  return dict(
      macro_auc=metrics.macro_auc([r["auc"] for r in per_label.values()]),
      study_macro_auc=metrics.macro_auc([r["study_auc"] for r in per_label.values()]),
      per_label=per_label)
