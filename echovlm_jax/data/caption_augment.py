"""Training-caption augmentation: statement subsampling and fitting long captions.

A caption is a view (or study) sentence followed by one statement per measurement or grade
(captions.caption_statements; the dataset's `statements` feature says which sentence states
what); the negated caption flips statements in place, sentence for sentence. Both augmentations drop whole statements, the same ones from both captions,
so a pair stays a negation pair, and they report which measurements the text still
states (the text side of the measurement-grounded objective regresses only those).

- Subsampling: with probability p_example, each statement is kept with probability
  p_keep. Zero-shot prompts are a view sentence plus at most one statement, and full
  captions never look like that; partial captions teach the text tower what a bare view
  sentence or a single finding means (cf. sentence sampling in CXR-CLIP).
- Images of unknown view (`unknown_view_text` "sentence", the default): only the study
  sentence, since the study's report states findings the image may not show.
- Fitting: a caption longer than the text tower's max_len used to lose its tail, and
  the tail is always the same statements: on the synthetic dataset 94 % of PLAX and PSAX
  captions exceed 64 tokens, so the LV wall statements (last in those captions) survived
  in 12-68 % of them, and the RV diameter in 46 % of apical four-chamber ones. Dropping
  random statements until the pair fits lets every statement be read equally often.

Evaluation never augments: it reads captions as stored. Either way `text_meas_mask` holds
the measurements whose sentences survive augmentation and the tokenizer's max_len.
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
                 tok: tokenizer_lib.Tokenizer | None = None, max_len: int = 0,
                 first_only: bool = False) -> Augmented:
  """Subsamples statements (p_example, p_keep), then, given `tok`, drops random statements
  until both captions encode in max_len - 1 ids (the last id is EOS). first_only: keep the
  view / study sentence alone (an image of unknown view: see `augment_batch`).

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
  if first_only:
    keep = [i == 0 for i in range(len(sents))]

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


def stated_measurements(structure: str) -> list[int | None]:
  """Measurement index (into schema.MEASUREMENTS) stated by each sentence of a caption, None
  for the view sentence and grades, from the dataset's `statements` feature (one token per
  sentence: a measurement name, `grade:<name>` or `-`)."""
  index = {m: i for i, m in enumerate(schema.MEASUREMENTS)}
  return [index.get(t) for t in structure.split()]


def surviving(lengths: Sequence[int], max_len: int) -> int:
  """How many leading sentences (token lengths `lengths`) fit whole in max_len - 1 ids (the
  tokenizer's tail truncation keeps max_len ids, the last being EOS)."""
  total = 0
  for n, length in enumerate(lengths):
    total += length
    if total > max_len - 1:
      return n
  return len(lengths)


def augment_batch(captions: Sequence[bytes], negated: Sequence[bytes], has_negation: np.ndarray,
                  seeds: np.ndarray, statements: Sequence[bytes], *, p_example: float,
                  p_keep: float, tok: tokenizer_lib.Tokenizer, max_len: int, fit: bool,
                  views: np.ndarray | None = None, unknown_view_text: str = "sentence"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """augment_pair over a batch, and what each caption still states once tokenized.

  captions, negated, statements: object [B] (bytes); has_negation float32 [B]; seeds int64
  [B], one generator per example so batch order does not matter, or < 0 for an example that
  is not augmented (evaluation). p_example / p_keep: subsampling; fit: drop statements until
  the pair fits max_len (else the tail is cut by the tokenizer). views int [B] (schema.VIEWS
  ids) with unknown_view_text "sentence": a training image of unknown view keeps only its
  caption's first sentence ("An echocardiographic image." / "A spectral Doppler recording."),
  not its study's whole report: a caption states only what the image shows, and the report
  states findings an image of another view cannot show (docs/results.md). "report":
  the stored caption as is (EchoCLIP's pairing of a study's report with each of its videos).
  Returns (captions [B], negated [B], has_negation float32 [B], text_meas_mask float32 [B, M]:
  1 for each measurement a sentence that survives augmentation and tokenization states;
  all 0 when the structure does not match the caption's sentences).
  """
  out_c, out_n, out_h = [], [], []
  text_mask = np.zeros((len(captions), len(schema.MEASUREMENTS)), np.float32)
  for b, (c, n, h, s, st) in enumerate(zip(captions, negated, has_negation, seeds, statements)):
    caption, neg = c.decode("utf-8"), n.decode("utf-8")
    if s >= 0:
      view_less = (unknown_view_text == "sentence" and views is not None
                   and int(views[b]) == schema.UNKNOWN_VIEW_ID)
      a = augment_pair(caption, neg, bool(h > 0), np.random.default_rng(int(s)),
                       p_example=p_example, p_keep=p_keep, tok=tok if fit else None,
                       max_len=max_len, first_only=view_less)
    else:
      a = Augmented(caption, neg if h > 0 else "", bool(h > 0),
                    tuple(range(len(split_statements(caption)))))
    out_c.append(a.caption.encode("utf-8"))
    out_n.append(a.negated.encode("utf-8"))
    out_h.append(1.0 if a.has_negation else 0.0)
    sents = split_statements(caption)
    stated = stated_measurements(st.decode("utf-8"))
    if len(stated) != len(sents):
      continue  # a dataset built before the structure was stored: nothing is attributed
    fit_n = surviving([len(tok.encode(sents[i])) for i in a.kept], max_len)
    for i in a.kept[:fit_n]:
      if stated[i] is not None:
        text_mask[b, stated[i]] = 1.0
  return (np.array(out_c, dtype=object), np.array(out_n, dtype=object),
          np.array(out_h, dtype=np.float32), text_mask)
