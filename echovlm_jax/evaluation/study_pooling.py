"""Study embeddings: attention pooling over a study's image (clip) embeddings with learned
per-view weights, EchoPrime's view-dependent pooling learned rather than a fixed table.

A study is many clips of many views. For a finding k the study embedding is
  p_k = normalise(sum_i a_ik e_i),  a_ik = softmax_i(w[k, view_i] + q_k . e_i)
over the study's images i (e_i L2-normalised, view_i the model's own zero-shot view, so no
label is needed at inference). One more row (k = K) is the finding-agnostic study embedding
used for study-to-report retrieval. With w = 0 and q = 0 (the initialisation) every row is
the plain mean. The parameters (w [K+1, V], q [K+1, d]) are fitted on the train split's
frozen embeddings: rows 0..K-1 by a logistic loss of the zero-shot finding score of p_k
against the study's label (with a per-finding scale and offset, which do not change an AUC),
row K by a contrastive loss between p_K and the study's text (its captions' mean embedding).
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from echovlm_jax import scoring
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import metrics

Embeddings = Mapping[str, np.ndarray]
NUM_VIEWS = len(schema.KNOWN_VIEWS)


def zero_shot_view(image_emb: np.ndarray, view_prompt_emb: np.ndarray) -> np.ndarray:
  """int [N] KNOWN_VIEWS position of each image's nearest view prompt ([V, d])."""
  return np.argmax(np.asarray(image_emb) @ np.asarray(view_prompt_emb).T, axis=1)


def study_index(study_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(sorted unique study ids [S], each image's study position [N])."""
  ids, inverse = np.unique(np.asarray(study_id), return_inverse=True)
  return ids, inverse.reshape(-1)


def pool(params: Mapping[str, jax.Array], emb: jax.Array, views: jax.Array, seg: jax.Array,
         num_studies: int) -> jax.Array:
  """Study embeddings [K+1, S, d]: emb [N, d] (L2-normalised), views [N] (KNOWN_VIEWS
  positions), seg [N] (study positions); params w [K+1, V], q [K+1, d]."""
  logits = params["w"][:, views] + params["q"] @ emb.T                        # [K+1, N]
  shift = jax.vmap(lambda l: jax.ops.segment_max(l, seg, num_studies))(logits)  # [K+1, S]
  a = jnp.exp(logits - shift[:, seg])
  norm = jax.vmap(lambda x: jax.ops.segment_sum(x, seg, num_studies))(a)      # [K+1, S]
  pooled = jax.vmap(lambda x: jax.ops.segment_sum(x[:, None] * emb, seg, num_studies))(
      a / norm[:, seg])                                                       # [K+1, S, d]
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def study_texts(text_emb: np.ndarray, caption_id: np.ndarray, seg: np.ndarray,
                num_studies: int) -> np.ndarray:
  """[S, d]: the normalised mean of each study's distinct caption embeddings."""
  out = np.zeros((num_studies, text_emb.shape[1]), np.float32)
  seen = set()
  for i, (s, c) in enumerate(zip(seg, caption_id)):
    if (s, c) not in seen:
      seen.add((s, c))
      out[s] += text_emb[i]
  return scoring.l2_normalize(out)


def _inputs(emb: Embeddings, view_prompt_emb: np.ndarray) -> dict:
  ids, seg = study_index(emb["study_id"])
  return dict(ids=ids, seg=seg, s=len(ids),
              e=scoring.l2_normalize(np.asarray(emb["image_emb"], np.float32)),
              views=zero_shot_view(emb["image_emb"], view_prompt_emb),
              labels=metrics.study_labels(emb["labels"], emb["study_id"], ids),   # [S, K]
              text=study_texts(np.asarray(emb["text_emb"], np.float32), emb["caption_id"], seg,
                               len(ids)))


def init_params(dim: int) -> dict[str, jax.Array]:
  """The mean: zero view weights and queries; unit finding scales, zero offsets."""
  k = len(schema.LABELS)
  return dict(w=jnp.zeros((k + 1, NUM_VIEWS)), q=jnp.zeros((k + 1, dim)),
              scale=jnp.full((k,), 10.0), offset=jnp.zeros((k,)))


def fit(train: Embeddings, view_prompt_emb: np.ndarray, pos_emb: np.ndarray, neg_emb: np.ndarray,
        steps: int = 300, lr: float = 0.05, temperature: float = 0.05) -> dict[str, np.ndarray]:
  """The pooling parameters fitted on a split's embeddings (see the module docstring)."""
  x = _inputs(train, view_prompt_emb)
  e, views, seg, s = jnp.asarray(x["e"]), jnp.asarray(x["views"]), jnp.asarray(x["seg"]), x["s"]
  y = jnp.asarray(x["labels"], jnp.float32)
  known = y >= 0
  direction = jnp.asarray(pos_emb - neg_emb, jnp.float32)                     # [K, d]
  text = jnp.asarray(x["text"])

  def loss_fn(p):
    pooled = pool(p, e, views, seg, s)                                         # [K+1, S, d]
    score = jnp.einsum("ksd,kd->sk", pooled[:-1], direction) * p["scale"] + p["offset"]
    bce = optax.sigmoid_binary_cross_entropy(score, jnp.maximum(y, 0.0))
    finding = jnp.sum(jnp.where(known, bce, 0.0)) / jnp.maximum(known.sum(), 1)
    sims = pooled[-1] @ text.T / temperature                                   # [S, S]
    contrast = optax.softmax_cross_entropy_with_integer_labels(sims, jnp.arange(s)).mean()
    return finding + contrast

  opt = optax.adam(lr)
  params = init_params(e.shape[1])
  state = opt.init(params)

  @jax.jit
  def step(p, st):
    g = jax.grad(loss_fn)(p)
    upd, st = opt.update(g, st, p)
    return optax.apply_updates(p, upd), st

  for _ in range(steps):
    params, state = step(params, state)
  return {k: np.asarray(v) for k, v in params.items()}


def evaluate(test: Embeddings, params: Mapping[str, np.ndarray], view_prompt_emb: np.ndarray,
             pos_emb: np.ndarray, neg_emb: np.ndarray) -> dict:
  """Study-level zero-shot findings and study-to-report retrieval with the learned pooling,
  beside the plain mean of the same images (predicted views, every image of the study)."""
  x = _inputs(test, view_prompt_emb)
  args = (jnp.asarray(x["e"]), jnp.asarray(x["views"]), jnp.asarray(x["seg"]), x["s"])
  out = {}
  for name, p in (("mean", init_params(x["e"].shape[1])),
                  ("attention", {k: jnp.asarray(v) for k, v in params.items()})):
    pooled = np.asarray(pool(p, *args))
    aucs = {}
    for k, label in enumerate(schema.LABELS):
      known = x["labels"][:, k] >= 0
      score = scoring.finding_scores(pooled[k][known], pos_emb[k:k + 1], neg_emb[k:k + 1])[:, 0]
      aucs[label] = metrics.roc_auc(x["labels"][known, k], score)
    ret = metrics.retrieval_metrics(pooled[-1], x["text"], np.arange(x["s"]), ks=(1, 5))
    out[name] = dict(macro_auc=metrics.macro_auc(list(aucs.values())), auc=aucs,
                     i2t_r1=ret["i2t_r1"], i2t_r5=ret["i2t_r5"], t2i_r1=ret["t2i_r1"])
  out["n_studies"] = int(x["s"])
  out["view_weights"] = {label: dict(zip(schema.KNOWN_VIEWS, np.round(params["w"][k], 3).tolist()))
                         for k, label in enumerate((*schema.LABELS, "study"))}
  return out
