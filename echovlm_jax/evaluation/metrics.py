"""Pure NumPy / scikit-learn metrics for the evaluators.

No JAX here: every function takes host arrays, so each one is pinned by a
hand-computed example in tests/test_metrics.py.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from echovlm_jax import scoring
from echovlm_jax.echo import schema


# --- Classification -----------------------------------------------------------

def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC of `scores` [N] for binary `y_true` [N] (ties count one half).

  NaN when only one class is present: the AUC is undefined there, and a NaN is
  dropped by `macro_auc` instead of silently counting as 0.5.
  """
  y_true = np.asarray(y_true).astype(int)
  if y_true.size == 0 or len(np.unique(y_true)) < 2:
    return float("nan")
  return float(skm.roc_auc_score(y_true, np.asarray(scores, np.float64)))


def roc_points(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rate [P], true positive rate [P]) for plotting; empty when undefined."""
  y_true = np.asarray(y_true).astype(int)
  if y_true.size == 0 or len(np.unique(y_true)) < 2:
    return np.zeros((0,)), np.zeros((0,))
  fpr, tpr, _ = skm.roc_curve(y_true, np.asarray(scores, np.float64))
  return fpr, tpr


def macro_auc(aucs: Sequence[float]) -> float:
  """Mean of the defined (non-NaN) per-label AUCs; NaN when none is defined."""
  vals = [a for a in aucs if a == a]
  return float(np.mean(vals)) if vals else float("nan")


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """Share of hits; NaN without examples (sklearn refuses empty input)."""
  return float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts [C, C] int64: rows are the true class, columns the predicted class."""
  if not len(y_true):
    return np.zeros((num_classes, num_classes), np.int64)
  return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def per_class_recall(cm: np.ndarray) -> np.ndarray:
  """Recall per true class [C] from a confusion matrix; NaN for classes never seen."""
  support = cm.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
  """Mean recall over the classes present in `y_true` (predicted-only classes don't count).
  Not skm.balanced_accuracy_score: it averages in another order (differs in the last bits on
  ~3 % of random cases) and warns on every predicted-only class."""
  y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
  if y_true.size == 0:
    return float("nan")
  c = int(max(y_true.max(), y_pred.max())) + 1
  recall = per_class_recall(confusion_matrix(y_true, y_pred, c))
  return float(np.nanmean(recall))


# --- Retrieval ----------------------------------------------------------------

def caption_ids(tokens: np.ndarray) -> np.ndarray:
  """Ids [N] equal exactly for identical token rows of `tokens` [N, L].

  Identical captions tokenise identically, so this is the "same caption string"
  test without shipping strings through the mesh. Captions that differ only past
  the max_len truncation also share an id: the text tower sees the same input
  and cannot tell them apart, so counting either as a match is the fair choice.
  """
  tokens = np.ascontiguousarray(np.asarray(tokens))
  _, inverse = np.unique(tokens, axis=0, return_inverse=True)
  return inverse.reshape(-1).astype(np.int64)


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, caption_id: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10), chunk: int = 1024) -> dict[str, float]:
  """Image->text and text->image recall@k and median rank, duplicates counted as matches.

  image_emb [N, d], text_emb [N, d] (row i is image i's caption), caption_id [N].
  The text gallery is deduplicated by caption: one entry per distinct caption, so
  image->text asks "is my caption among the top-k distinct captions", and each
  distinct caption queries the images, any image carrying it being a hit.
  Ranks are 1-based and pessimistic on ties (a wrong item scoring equal to the
  best right one ranks above it), so a collapsed model cannot score well.
  Returns keys i2t_r{k}, t2i_r{k}, i2t_median_rank, t2i_median_rank.
  """
  image_emb = np.asarray(image_emb, np.float32)
  caption_id = np.asarray(caption_id)
  uniq, first = np.unique(caption_id, return_index=True)
  gallery = np.asarray(text_emb, np.float32)[first]            # [U, d]
  col_of = np.searchsorted(uniq, caption_id)                    # [N] caption -> gallery column
  n, u = len(caption_id), len(uniq)

  # Chunked over queries so memory stays [chunk, N] even for ~20k-example splits.
  i2t_rank = np.empty(n, np.int64)
  for s in range(0, n, chunk):
    sims = image_emb[s:s + chunk] @ gallery.T                   # [c, U]
    right = sims[np.arange(sims.shape[0]), col_of[s:s + chunk]]
    # Columns scoring >= the right one: the right one itself plus wrong ones tying or beating it.
    i2t_rank[s:s + chunk] = (sims >= right[:, None]).sum(axis=1)
  t2i_rank = np.empty(u, np.int64)
  for s in range(0, u, chunk):
    sims = gallery[s:s + chunk] @ image_emb.T                   # [c, N]
    is_right = col_of[None, :] == np.arange(s, s + sims.shape[0])[:, None]
    best = np.where(is_right, sims, -np.inf).max(axis=1)
    t2i_rank[s:s + chunk] = 1 + ((sims >= best[:, None]) & ~is_right).sum(axis=1)

  out = {}
  for k in ks:
    out[f"i2t_r{k}"] = float(np.mean(i2t_rank <= k))
    out[f"t2i_r{k}"] = float(np.mean(t2i_rank <= k))
  out["i2t_median_rank"] = float(np.median(i2t_rank))
  out["t2i_median_rank"] = float(np.median(t2i_rank))
  return out


def negation_sensitivity(image_emb: np.ndarray, text_emb: np.ndarray, neg_text_emb: np.ndarray,
                         has_negation: np.ndarray) -> tuple[float, int]:
  """(fraction of images whose caption scores strictly above its negated caption, count).

  image_emb, text_emb, neg_text_emb [N, d]; has_negation [N] selects the images
  that have a real negated caption. NaN fraction when none has.
  """
  sel = np.asarray(has_negation).astype(bool)
  n = int(sel.sum())
  if n == 0:
    return float("nan"), 0
  img = np.asarray(image_emb, np.float32)[sel]
  pos = np.sum(img * np.asarray(text_emb, np.float32)[sel], axis=1)
  neg = np.sum(img * np.asarray(neg_text_emb, np.float32)[sel], axis=1)
  return float(np.mean(pos > neg)), n


# --- Findings: which images count -------------------------------------------

def label_eligible(emb: Mapping[str, np.ndarray], k: int) -> np.ndarray:
  """Images [N] bool whose label k is known (!= -1) and whose view can show that finding.

  emb holds view [N] (VIEWS ids) and labels [N, K].
  """
  label = schema.LABELS[k]
  shows = np.array([label in schema.view_labels(v) for v in schema.VIEWS])
  return (np.asarray(emb["labels"])[:, k] != -1) & shows[np.asarray(emb["view"])]


# --- Study-level pooling ------------------------------------------------------



def pool_by_study(emb: np.ndarray, study_id: np.ndarray, mask: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Mean of L2-normalised embeddings per study, renormalised.

  emb [N, d], study_id [N], mask [N] (images to include; default all).
  Returns (pooled [S, d], study ids [S] sorted); studies with no included image
  are absent.
  """
  emb, study_id = scoring.l2_normalize(emb), np.asarray(study_id)
  if mask is not None:
    keep = np.asarray(mask).astype(bool)
    emb, study_id = emb[keep], study_id[keep]
  ids, inverse = np.unique(study_id, return_inverse=True)
  pooled = np.zeros((len(ids), emb.shape[-1]), np.float32)
  np.add.at(pooled, inverse.reshape(-1), emb)
  return scoring.l2_normalize(pooled), ids


def study_labels(labels: np.ndarray, study_id: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """Labels [S, K] of the studies `ids` from per-image labels [N, K] (1 / 0 / -1).

  Labels are study-level already; should images disagree (a finding known from
  one view only), a known value beats -1 and a positive beats a negative.
  """
  labels, study_id = np.asarray(labels), np.asarray(study_id)
  out = np.full((len(ids), labels.shape[1]), -1, labels.dtype)
  pos = np.searchsorted(ids, study_id)
  ok = (pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == study_id)
  np.maximum.at(out, pos[ok], labels[ok])
  return out
