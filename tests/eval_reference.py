"""An independent NumPy / scikit-learn reference for the evaluators' headline metrics, so
eval tests check values the code could get wrong (view-id mapping, prompt averaging, the
direction of the finding score, which images a finding is scored on), not only ranges.

Written from the definitions in docs/design.md, without the evaluation package's helpers.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from echovlm_jax.echo import prompts, schema


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def prompt_classes(model, tokenizer, max_len: int) -> dict[str, np.ndarray]:
  """echo/prompts.py's class embeddings, encoded eagerly (no jit): per class the
  renormalised mean of its L2-normalised phrasings.

  Every phrasing goes through the text tower in one eager batch: eager ops compile once per
  shape, so one batch per class (27 shapes) cost ~45 s per call on CPU, one batch ~3 s.
  """
  classes = ([prompts.VIEW_PROMPTS[v] for v in schema.KNOWN_VIEWS]
             + [prompts.LABEL_PROMPTS[l]["positive"] for l in schema.LABELS]
             + [prompts.LABEL_PROMPTS[l]["negative"] for l in schema.LABELS])
  texts = [t for c in classes for t in c]
  tokens = np.asarray(tokenizer.encode_batch(texts, max_len), np.int32)
  emb = _unit(np.asarray(model.encode_text(tokens)))
  ends = np.cumsum([len(c) for c in classes])
  means = np.stack([_unit(part.mean(axis=0)) for part in np.split(emb, ends[:-1])])
  v, k = len(schema.KNOWN_VIEWS), len(schema.LABELS)
  return dict(views=means[:v], label_pos=means[v:v + k], label_neg=means[v + k:])


def headline_metrics(emb: dict[str, np.ndarray], classes: dict[str, np.ndarray]) -> dict:
  """View accuracy, macro finding AUC (image level) and negation sensitivity from host
  embeddings (compute_embeddings' dict) and class embeddings, keyed like the flat metrics."""
  img = np.asarray(emb["image_emb"], np.float64)
  names = [schema.VIEWS[int(v)] for v in emb["view"]]
  known = np.array([n != schema.UNKNOWN_VIEW for n in names])
  truth = np.array([schema.KNOWN_VIEWS.index(n) for n, k in zip(names, known) if k])
  pred = np.argmax(img[known] @ classes["views"].T, axis=1)
  aucs = []
  for k, label in enumerate(schema.LABELS):
    rows = [i for i, n in enumerate(names) if emb["labels"][i, k] != -1
            and label in schema.view_labels(n)]
    y = emb["labels"][rows, k]
    if len(set(y.tolist())) == 2:
      score = img[rows] @ classes["label_pos"][k] - img[rows] @ classes["label_neg"][k]
      aucs.append(roc_auc_score(y, score))
  neg = np.asarray(emb["has_negation"]) > 0
  margin = np.sum(img[neg] * (emb["text_emb"][neg] - emb["neg_text_emb"][neg]), axis=1)
  return {"zero_shot_views/accuracy": float(np.mean(pred == truth)),
          "zero_shot_findings/macro_auc": float(np.mean(aucs)) if aucs else float("nan"),
          "negation/sensitivity": float(np.mean(margin > 0)) if neg.any() else float("nan")}


def check(flat: dict[str, float], split_prefix: str, emb, classes, cached_classes) -> None:
  """The evaluators' flat metrics (those of the headline evaluators that ran) equal the
  reference on the same embeddings, and the prompt embeddings they used equal the eager,
  unbatched ones."""
  for key in ("views", "label_pos", "label_neg"):
    np.testing.assert_allclose(cached_classes[key], classes[key], atol=2e-5, err_msg=key)
  want = headline_metrics(emb, cached_classes)
  compared = [k for k in want if f"{split_prefix}/{k}" in flat]  # the evaluators that ran
  assert compared, sorted(flat)
  for key in compared:
    got, value = flat[f"{split_prefix}/{key}"], want[key]
    assert (np.isnan(got) and np.isnan(value)) or abs(got - value) < 1e-6, (key, got, value)
