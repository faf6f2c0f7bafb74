"""Training-caption augmentation: statement subsampling and fitting long captions.

A caption is a view sentence followed by one statement per measurement the view shows
(captions.make_caption); the negated caption flips statements in place, sentence for
sentence. Both augmentations drop whole statements, the same ones from both captions,
so a pair stays a negation pair, and they report which measurements the text still
states (the text side of the measurement-grounded objective regresses only those).

- Subsampling: with probability p_example, each statement is kept with probability
  p_keep. Zero-shot prompts are a view sentence plus at most one statement, and full
  captions never look like that; partial captions teach the text tower what a bare view
  sentence or a single finding means (cf. sentence sampling in CXR-CLIP).
- Fitting: a caption longer than the text tower's max_len used to lose its tail, and
  the tail is always the same statements: on the synthetic dataset 94 % of PLAX and PSAX
  captions exceed 64 tokens, so the LV wall statements (last in those captions) survived
  in 12-68 % of them, and the RV diameter in 46 % of apical four-chamber ones. Dropping
  random statements until the pair fits lets every statement be read equally often.

Evaluation never augments: it reads captions as stored.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np

from echovlm_jax.data import tokenizer as tokenizer_lib
from echovlm_jax.echo import schema

# Sentences end with ". " inside a caption (numbers such as "4.6" have no space after the point).
_SENTENCE_END = re.compile(r"(?<=\.) ")


def split_statements(caption: str) -> list[str]:
  """"View. Statement 1. Statement 2." -> ["View.", "Statement 1.", "Statement 2."]."""
  return _SENTENCE_END.split(caption) if caption else []


class Augmented(NamedTuple):
  caption: str
  negated: str        # "" when the pair is no longer a negation pair
  has_negation: bool
  kept: tuple[int, ...]  # indices of the caption's sentences that stay (0 = the view sentence)


def augment_pair(caption: str, negated: str, has_negation: bool, rng: np.random.Generator, *,
                 p_example: float = 0.0, p_keep: float = 1.0,
                 tok: tokenizer_lib.Tokenizer | None = None, max_len: int = 0) -> Augmented:
  """Subsamples statements (p_example, p_keep), then, given `tok`, drops random statements
  until both captions encode in max_len - 1 ids (the last id is EOS).

  The view sentence always stays; if it alone is too long, the tokenizer's tail truncation
  still applies. A pair none of whose kept statements was flipped is no longer a negation
  pair. A pair whose sentences do not line up one to one keeps its negation untouched when
  nothing is dropped, and loses it otherwise.
  """
  sents = split_statements(caption)
  neg = split_statements(negated) if has_negation else []
  aligned = not has_negation or len(neg) == len(sents)
  keep = [True] * len(sents)
  if len(sents) > 1 and rng.random() < p_example:
    draws = rng.random(len(sents))
    keep = [i == 0 or d < p_keep for i, d in enumerate(draws)]

  if tok is not None:
    # Each sentence is encoded once: sentencepiece never merges pieces across whitespace (its
    # default), so a caption's ids are its sentences' ids back to back and lengths add up.
    lengths = [[len(tok.encode(p)) for p in parts] for parts in (sents, neg if aligned else [])]

  def fits(k):
    return all(sum(n for n, kk in zip(lens, k) if kk) <= max_len - 1 for lens in lengths if lens)

  if tok is not None and not fits(keep):
    for i in rng.permutation(np.arange(1, len(sents))):
      if keep[i]:
        keep[i] = False
        if fits(keep):
          break
  kept = tuple(i for i, k in enumerate(keep) if k)
  if len(kept) == len(sents):
    return Augmented(caption, negated if has_negation else "", has_negation, kept)
  new_caption = " ".join(sents[i] for i in kept)
  if not (has_negation and aligned):
    return Augmented(new_caption, "", False, kept)
  flipped = any(sents[i] != neg[i] for i in kept)
  new_negated = " ".join(neg[i] for i in kept) if flipped else ""
  return Augmented(new_caption, new_negated, flipped, kept)


def stated_measurements(view: int, meas_mask: np.ndarray, n_sentences: int
                        ) -> list[int] | None:
  """Measurement index stated by each statement (sentence 1..n-1) of a caption of `view`
  (index into schema.VIEWS) whose present, view-shown measurements are meas_mask [M] > 0;
  None when the caption's sentence count does not match (then nothing is attributed)."""
  shown = [schema.MEASUREMENTS.index(n) for n in schema.view_measurements(schema.VIEWS[int(view)])]
  idx = [i for i in shown if meas_mask[i] > 0]
  return idx if len(idx) == n_sentences - 1 else None


def augment_batch(captions: Sequence[bytes], negated: Sequence[bytes], has_negation: np.ndarray,
                  seeds: np.ndarray, views: np.ndarray, meas_mask: np.ndarray, *,
                  p_example: float, p_keep: float, tok: tokenizer_lib.Tokenizer | None,
                  max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """augment_pair over a batch. captions, negated: object [B] (bytes); has_negation float32
  [B]; seeds int64 [B] (one generator per example, so batch order does not matter); views
  int32 [B]; meas_mask float32 [B, M]. tok None = no fitting.
  Returns (captions [B], negated [B], has_negation float32 [B], text_meas_mask float32 [B, M]:
  meas_mask restricted to the measurements the augmented caption still states)."""
  out_c, out_n, out_h = [], [], []
  text_mask = np.zeros_like(meas_mask, dtype=np.float32)
  for b, (c, n, h, s) in enumerate(zip(captions, negated, has_negation, seeds)):
    caption = c.decode("utf-8")
    a = augment_pair(caption, n.decode("utf-8"), bool(h > 0), np.random.default_rng(int(s)),
                     p_example=p_example, p_keep=p_keep, tok=tok, max_len=max_len)
    out_c.append(a.caption.encode("utf-8"))
    out_n.append(a.negated.encode("utf-8"))
    out_h.append(1.0 if a.has_negation else 0.0)
    stated = stated_measurements(views[b], meas_mask[b], len(split_statements(caption)))
    if stated is not None:
      for i in a.kept[1:]:
        text_mask[b, stated[i - 1]] = 1.0
  return (np.array(out_c, dtype=object), np.array(out_n, dtype=object),
          np.array(out_h, dtype=np.float32), text_mask)
