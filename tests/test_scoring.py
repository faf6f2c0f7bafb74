"""The zero-shot scoring that evaluation and `load_pretrained` share, on hand-computed cases."""

import numpy as np
import pytest

from echovlm_jax import scoring


def test_l2_normalize_and_zero_vectors():
  out = scoring.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
  np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
  assert out.dtype == np.float32


def test_average_prompts_normalises_each_phrasing_before_the_mean():
  # Group 0: [1, 0] and [0, 5]; without normalising first the second would dominate.
  emb = np.array([[1.0, 0.0], [0.0, 5.0], [0.0, -2.0]])
  out = scoring.average_prompts(emb, [2, 1])
  np.testing.assert_allclose(out, [[2 ** -0.5, 2 ** -0.5], [0.0, -1.0]], rtol=1e-6)
  with pytest.raises(ValueError, match="groups sum to 2, got 3"):
    scoring.average_prompts(emb, [1, 1])


def test_finding_score_is_positive_minus_negative_similarity():
  image = np.array([[1.0, 0.0], [0.6, 0.8]])
  pos, neg = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
  np.testing.assert_allclose(scoring.finding_scores(image, pos, neg), [[1.0], [-0.2]], rtol=1e-6)
