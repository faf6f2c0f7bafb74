"""caption_augment: statement subsampling, and long captions losing random whole
statements rather than their tail; what the shortened caption still states."""

import numpy as np
import pytest

from echovlm_jax.data import caption_augment as ca
from echovlm_jax.data import tokenizer as tok_lib
from echovlm_jax.echo import schema

CAPTION = ("An apical four-chamber view. Left ventricular ejection fraction of 61 %, normal. "
           "LAVI 28 mL/m², normal. TAPSE 1.1 cm, reduced. RV basal diameter 4.2 cm, dilated. "
           "A small pericardial effusion of 0.8 cm is present.")
NEGATED = ("An apical four-chamber view. Left ventricular ejection fraction of 30 %, reduced. "
           "LAVI 54 mL/m², consistent with severe left atrial enlargement. TAPSE 2.0 cm, normal. "
           "RV basal diameter 3.1 cm, normal in size. No pericardial effusion is present.")
SENTS, NEGS = ca.split_statements(CAPTION), ca.split_statements(NEGATED)


@pytest.fixture(scope="module")
def tok():
  corpus = [CAPTION, NEGATED] * 20 + ["An apical two-chamber view. LAVI 40 mL/m², mild."] * 5
  return tok_lib.Tokenizer(tok_lib.train_tokenizer(corpus, vocab_size=120))


def _n_ids(tok, text):
  return len(tok.encode(text))


def _rng(seed):
  return np.random.default_rng(seed)


def test_split_statements_keeps_decimal_points():
  assert ca.split_statements("A view. Value 4.6 cm, normal. Next (normal).") == [
      "A view.", "Value 4.6 cm, normal.", "Next (normal)."]
  assert ca.split_statements("") == []


def test_subsampling_keeps_caption_and_negation_aligned():
  seen = set()
  for seed in range(40):
    c, n, has, kept = ca.augment_pair(CAPTION, NEGATED, True, _rng(seed), p_example=1.0,
                                      p_keep=0.5)
    assert kept[0] == 0                                 # the view sentence always stays
    assert c == " ".join(SENTS[i] for i in kept)        # whole statements, in order
    # Every statement of NEGATED is flipped: a pair keeps its negation iff one survives,
    # and then the negated caption keeps exactly the same statements.
    assert has == (len(kept) > 1)
    assert n == (" ".join(NEGS[i] for i in kept) if has else "")
    seen.add(kept)
  assert len(seen) > 4  # different subsets for different seeds
  # p_example = 0 and no tokenizer: untouched.
  assert ca.augment_pair(CAPTION, NEGATED, True, _rng(0)) == (
      CAPTION, NEGATED, True, tuple(range(len(SENTS))))
  # A caption without a negation never gains one.
  c, n, has, _ = ca.augment_pair(CAPTION, "", False, _rng(3), p_example=1.0, p_keep=0.5)
  assert n == "" and not has and c.startswith("An apical four-chamber view.")


def test_a_caption_that_fits_is_unchanged(tok):
  n = max(_n_ids(tok, CAPTION), _n_ids(tok, NEGATED)) + 1
  out = ca.augment_pair(CAPTION, NEGATED, True, _rng(0), tok=tok, max_len=n)
  assert out[:3] == (CAPTION, NEGATED, True)


def test_long_pairs_drop_the_same_random_statements(tok):
  max_len = _n_ids(tok, CAPTION) * 2 // 3
  kept_last, kept_sets = 0, set()
  for seed in range(40):
    c, n, has, kept = ca.augment_pair(CAPTION, NEGATED, True, _rng(seed), tok=tok, max_len=max_len)
    assert _n_ids(tok, c) <= max_len - 1 and _n_ids(tok, n) <= max_len - 1
    assert kept[0] == 0 and len(kept) < len(SENTS)
    assert c == " ".join(SENTS[i] for i in kept)
    assert has == (len(kept) > 1)
    assert n == (" ".join(NEGS[i] for i in kept) if has else "")
    kept_last += (len(SENTS) - 1) in kept
    kept_sets.add(kept)
  # Tail truncation would never keep the last statement; random dropping often does.
  assert kept_last > 5 and len(kept_sets) > 5


def test_a_pair_with_no_flipped_statement_left_is_no_longer_a_negation_pair(tok):
  negated = CAPTION.replace("TAPSE 1.1 cm, reduced.", "TAPSE 2.0 cm, normal.")
  max_len = _n_ids(tok, SENTS[0]) + 1  # room for the view sentence only
  c, n, has, kept = ca.augment_pair(CAPTION, negated, True, _rng(0), tok=tok, max_len=max_len)
  assert (c, n, has, kept) == ("An apical four-chamber view.", "", False, (0,))


def test_misaligned_pairs_are_whole_or_lose_their_negation(tok):
  odd = "Something else entirely."
  assert ca.augment_pair(CAPTION, odd, True, _rng(1))[:3] == (CAPTION, odd, True)
  c, n, has, _ = ca.augment_pair(CAPTION, odd, True, _rng(1), tok=tok,
                                 max_len=_n_ids(tok, CAPTION) // 2)
  assert _n_ids(tok, c) <= _n_ids(tok, CAPTION) // 2 - 1 and (n, has) == ("", False)


STRUCTURE = "- lvef lavi tapse rvd_basal pericardial_effusion"


def test_stated_measurements_read_the_stored_structure():
  got = ca.stated_measurements(STRUCTURE)
  assert got[0] is None and [schema.MEASUREMENTS[i] for i in got[1:]] == list(
      schema.view_measurements("a4c"))
  assert ca.stated_measurements("- grade:rv_function lvef") == [
      None, None, schema.MEASUREMENTS.index("lvef")]


def test_surviving_counts_the_sentences_that_fit_whole():
  assert ca.surviving([5, 4, 3], max_len=10) == 2      # 9 ids fit before EOS, 12 do not
  assert ca.surviving([5, 4, 3], max_len=13) == 3
  assert ca.surviving([12], max_len=10) == 0


def _batch(tok, seeds, max_len, **kw):
  caps = np.array([CAPTION.encode(), b"A short view."], dtype=object)
  negs = np.array([NEGATED.encode(), b""], dtype=object)
  has = np.array([1.0, 0.0], np.float32)
  structure = np.array([STRUCTURE.encode(), b"-"], dtype=object)
  args = dict(p_example=0.0, p_keep=1.0, tok=tok, max_len=max_len, fit=True)
  args.update(kw)
  return ca.augment_batch(caps, negs, has, np.array(seeds), structure, **args), (caps, negs, has,
                                                                                   structure)


def test_augment_batch_is_per_example_and_reports_what_is_stated(tok):
  max_len = _n_ids(tok, CAPTION) * 2 // 3
  a, (caps, negs, has, structure) = _batch(tok, [7, 8], max_len)
  b = ca.augment_batch(caps[::-1], negs[::-1], has[::-1], np.array([8, 7]), structure[::-1],
                       p_example=0.0, p_keep=1.0, tok=tok, max_len=max_len, fit=True)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y)[::-1])
  assert a[0][1] == b"A short view." and a[3][1].sum() == 0
  kept_text = a[0][0].decode()
  stated = [schema.MEASUREMENTS[i] for i in np.nonzero(a[3][0])[0]]
  assert 0 < len(stated) < len(SENTS) - 1 and len(ca.split_statements(kept_text)) == len(stated) + 1
  words = {"lvef": "ejection", "lavi": "LAVI", "tapse": "TAPSE", "rvd_basal": "RV basal",
           "pericardial_effusion": "effusion"}
  for name, word in words.items():
    assert (word in kept_text) == (name in stated), name


def test_without_fitting_the_mask_follows_what_the_tokenizer_keeps(tok):
  """Evaluation (seed < 0) and fit=False leave captions as stored: the tail the tokenizer cuts
  is not counted as stated."""
  max_len = sum(_n_ids(tok, s) for s in SENTS[:3]) + 1  # the view sentence and two statements
  for seeds, fit in (([-1, -1], True), ([7, 8], False)):
    (c, n, h, mask), _ = _batch(tok, seeds, max_len, fit=fit)
    assert c[0] == CAPTION.encode() and n[0] == NEGATED.encode() and h[0] == 1.0
    assert [schema.MEASUREMENTS[i] for i in np.nonzero(mask[0])[0]] == ["lvef", "lavi"]
  (_, _, _, mask), _ = _batch(tok, [-1, -1], 1000)
  assert mask[0].sum() == 5


def test_an_image_of_unknown_view_keeps_only_its_study_sentence(tok):
  """Issue 20: the study's report on images without a view label collapsed a2c / a3c; a
  training image of unknown view is paired with its study sentence alone (no negation, no
  stated value), a labelled one is untouched, evaluation reads captions as stored."""
  from echovlm_jax.echo import schema as sch
  max_len = _n_ids(tok, CAPTION) + 4
  views = np.array([sch.UNKNOWN_VIEW_ID, sch.VIEWS.index("a4c")], np.int32)
  plain, _ = _batch(tok, [7, 8], max_len)
  for seeds in ([7, 8], [7, -1]):
    out, _ = _batch(tok, seeds, max_len, views=views)
    assert out[0][0].decode() == SENTS[0] and out[1][0] == b"" and out[2][0] == 0.0
    assert out[3][0].sum() == 0
    np.testing.assert_array_equal(out[3][1], plain[3][1])   # the labelled image: as without views
    assert out[0][1] == plain[0][1]
  evaluated, _ = _batch(tok, [-1, -1], max_len, views=views)
  assert evaluated[0][0] == CAPTION.encode() and evaluated[2][0] == 1.0
  report, _ = _batch(tok, [7, 8], max_len, views=views, unknown_view_text="report")
  for x, y in zip(report, plain):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
