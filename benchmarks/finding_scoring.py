"""Zero-shot finding scorings compared on one checkpoint (choose on validation, not test).

  .venv/bin/python benchmarks/finding_scoring.py --workdir workdir/demo --split validation

Embeds the split once, then prints the macro AUC (and per-label AUCs) of each way of turning
the label prompt sets of `echo/prompts.py` into a score:
  mean_embedding  cos(image, mean positive prompt) - cos(image, mean negative prompt)
                  (what `evaluation/zero_shot.py` uses)
  mean_cosine     mean cos over positive prompts - mean cos over negative prompts
  max_cosine      max cos over positive prompts - max cos over negative prompts
  softmax_mass    log-odds of the positive prompts' share of a softmax (at the model's logit
                  scale) over all of the label's prompts: each prompt is a value, so this is
                  "which stated value fits the image best", summed over the abnormal ones
  view_*          the two above with prompts restricted to the zero-shot predicted view
The model and data come from configs/echovlm.py defaults; --data_dir is the run's dataset.
"""

from __future__ import annotations

import argparse

import numpy as np


def _softmax_log_odds(sims: np.ndarray, n_pos: int, scale: float) -> np.ndarray:
  """sims [N, P+Q] (positives first) -> [N] log(P(positive) / P(negative))."""
  z = sims * scale
  z = z - z.max(axis=1, keepdims=True)
  p = np.exp(z)
  return np.log(p[:, :n_pos].sum(1) + 1e-12) - np.log(p[:, n_pos:].sum(1) + 1e-12)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--split", default="validation")
  p.add_argument("--data_dir", default="data/tfds", help="config.input.data_dir of the run")
  args = p.parse_args()

  from configs import echovlm  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import checkpointing, run_config
  from echovlm_jax.data import build, input_pipeline
  input_pipeline.keep_tf_off_accelerators()
  from echovlm_jax.echo import prompts, schema
  from echovlm_jax.evaluation import embeddings as emb_lib, metrics, zero_shot

  c = echovlm.get_config()
  c.unlock()
  c.input.data_dir = args.data_dir
  mesh = run_config.create_mesh(c)
  build.ensure_dataset(c.input)
  tok = input_pipeline.load_tokenizer(c.input)
  model, step = checkpointing.restore_params(c, args.workdir, mesh)
  emb = emb_lib.compute_embeddings(
      model, input_pipeline.make_eval_iterator(c.input, args.split, c.batch_size, mesh), mesh)
  img = emb["image_emb"]
  encode = lambda texts: emb_lib.encode_texts(model, tok, texts, int(c.input.max_text_len))
  scale = float(np.exp(np.asarray(model.logit_scale[...])))
  class_emb = emb_lib.prompt_embeddings(model, tok, int(c.input.max_text_len))
  pred_view = np.argmax(img @ class_emb["views"].T, axis=1)  # schema.KNOWN_VIEWS positions

  k_labels = len(schema.LABELS)
  scores = {name: np.zeros((len(img), k_labels)) for name in
            ("mean_cosine", "max_cosine", "softmax_mass", "view_mean_embedding", "view_softmax_mass")}
  scores["mean_embedding"] = zero_shot.finding_scores(img, class_emb["label_pos"], class_emb["label_neg"])
  for k, label in enumerate(schema.LABELS):
    pos, neg = prompts.LABEL_PROMPTS[label]["positive"], prompts.LABEL_PROMPTS[label]["negative"]
    e_all = encode(pos + neg)  # one encoding per label; the view variants index into it
    sims = img @ e_all.T
    scores["mean_cosine"][:, k] = sims[:, :len(pos)].mean(1) - sims[:, len(pos):].mean(1)
    scores["max_cosine"][:, k] = sims[:, :len(pos)].max(1) - sims[:, len(pos):].max(1)
    scores["softmax_mass"][:, k] = _softmax_log_odds(sims, len(pos), scale)
    views = prompts.label_prompt_views(label)
    for vi, view in enumerate(schema.KNOWN_VIEWS):
      rows = pred_view == vi
      if not rows.any():
        continue
      ip_, in_ = np.arange(len(pos)), np.arange(len(pos), len(pos) + len(neg))
      if view in views:  # keep the prompts written behind this view's sentences
        starts = tuple(prompts.VIEW_PROMPTS[view])
        ip_ = np.array([i for i in ip_ if pos[i].startswith(starts)] or ip_)
        in_ = np.array([i for i in in_ if neg[i - len(pos)].startswith(starts)] or in_)
      e = e_all[np.concatenate([ip_, in_])]
      scores["view_softmax_mass"][rows, k] = _softmax_log_odds(img[rows] @ e.T, len(ip_), scale)
      mean_pos, mean_neg = emb_lib.average_prompts(e, [len(ip_), len(in_)])
      scores["view_mean_embedding"][rows, k] = img[rows] @ mean_pos - img[rows] @ mean_neg

  print(f"checkpoint step {step}, split {args.split!r}, {len(img)} images, logit scale {scale:.1f}")
  for name, s in scores.items():
    aucs = {}
    for k, label in enumerate(schema.LABELS):
      sel = metrics.label_eligible(emb, k)
      aucs[label] = metrics.roc_auc(emb["labels"][sel, k], s[sel, k]) if sel.any() else float("nan")
    per_label = " ".join(f"{l}={a:.3f}" for l, a in aucs.items() if a == a)
    print(f"{name:20s} macro AUC {metrics.macro_auc(list(aucs.values())):.3f}  {per_label}")


if __name__ == "__main__":
  main()
