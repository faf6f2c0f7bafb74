"""Zero-shot scoring on host embeddings (NumPy only), shared by `evaluation/` and the
inference API (`inference/pretrained.py`) so both score the same way: L2 normalisation, a class
embedding from several prompt phrasings, and the finding score.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """x / ||x|| along `axis` as float32 (zero vectors stay zero)."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def average_prompts(emb: np.ndarray, groups: Sequence[int]) -> np.ndarray:
  """Consecutive groups of phrasings [sum(groups), d] -> [len(groups), d].

  Each group's embedding is the mean of its L2-normalised phrasings, renormalised.
  """
  emb = l2_normalize(np.asarray(emb))
  bounds = np.cumsum([0, *groups])
  if bounds[-1] != len(emb):
    raise ValueError(f"average_prompts: groups sum to {bounds[-1]}, got {len(emb)} embeddings.")
  return l2_normalize(np.stack([emb[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]))


def finding_scores(image_emb: np.ndarray, pos_emb: np.ndarray, neg_emb: np.ndarray) -> np.ndarray:
  """Scores [N, K]: cos(image, positive prompt) - cos(image, negative prompt).

  image_emb [N, d] L2-normalised; pos_emb, neg_emb [K, d]. The two-way softmax probability
  of "present", sigmoid(s * score), is a monotone function of this difference for any
  temperature s, so AUCs are the same without it.
  """
  image_emb = np.asarray(image_emb, np.float32)
  return image_emb @ np.asarray(pos_emb).T - image_emb @ np.asarray(neg_emb).T
