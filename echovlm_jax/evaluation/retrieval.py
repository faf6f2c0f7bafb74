"""Retrieval (image<->caption) and negation sensitivity on a split's embeddings."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from echovlm_jax.evaluation import metrics

Embeddings = Mapping[str, np.ndarray]


def retrieval(emb: Embeddings, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
  """R@k both ways and median ranks; identical captions count as matches.

  emb: image_emb [N, d], text_emb [N, d], caption_id [N] (equal for identical
  captions). Adds n (images) and n_captions (distinct captions in the gallery).
  """
  out = metrics.retrieval_metrics(emb["image_emb"], emb["text_emb"], emb["caption_id"], ks=ks)
  out["n"] = int(len(emb["caption_id"]))
  out["n_captions"] = int(len(np.unique(emb["caption_id"])))
  return out


def negation(emb: Embeddings) -> dict:
  """Fraction of images with a negated caption that score their caption above it.

  emb: image_emb, text_emb, neg_text_emb [N, d], has_negation [N]. Also returns
  mean_margin: the mean of cos(image, caption) - cos(image, negated caption).
  """
  sensitivity, n = metrics.negation_sensitivity(
      emb["image_emb"], emb["text_emb"], emb["neg_text_emb"], emb["has_negation"])
  sel = np.asarray(emb["has_negation"]).astype(bool)
  margin = np.sum(emb["image_emb"][sel] * (emb["text_emb"][sel] - emb["neg_text_emb"][sel]),
                  axis=1)
  return dict(sensitivity=sensitivity, n=n,
              mean_margin=float(margin.mean()) if n else float("nan"))
