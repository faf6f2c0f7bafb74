"""Zero-shot prompts: caption language, one per known view, and labels that read back."""

import pytest

from echovlm_jax.echo import captions
from echovlm_jax.echo import negation
from echovlm_jax.echo import prompts
from echovlm_jax.echo import schema


def test_every_known_view_has_caption_phrasings():
  assert set(prompts.VIEW_PROMPTS) == set(schema.KNOWN_VIEWS)
  for view, texts in prompts.VIEW_PROMPTS.items():
    assert len(texts) >= 3 and len(set(texts)) == len(texts)
    assert all(schema.VIEW_INFO[view].description in t for t in texts)
    assert captions.view_sentence(view) in texts  # the caption's own first phrasing
    assert all(negation.negate(t) is None for t in texts)  # a view claim is no finding


@pytest.mark.parametrize("label", schema.LABELS)
def test_label_prompts_state_exactly_their_label(label):
  sets = prompts.LABEL_PROMPTS[label]
  assert set(sets) == {"positive", "negative"}
  assert sets["positive"] and sets["negative"]
  for polarity, value in (("positive", 1), ("negative", 0)):
    for text in sets[polarity]:
      got = {l: v for l, v in negation.caption_labels(text).items() if v >= 0}
      assert got == {label: value}, (polarity, text)
      neg = negation.negate(text)
      assert negation.caption_labels(neg)[label] == 1 - value, (text, neg)


def test_prompts_are_not_shared_between_labels():
  seen = {}
  for label, sets in prompts.LABEL_PROMPTS.items():
    for text in sets["positive"] + sets["negative"]:
      assert seen.setdefault(text, label) == label, text


def test_label_prompt_views():
  for label in schema.LABELS:
    views = prompts.label_prompt_views(label)
    assert views == tuple(v for v in schema.KNOWN_VIEWS if label in schema.view_labels(v))
  assert prompts.label_prompt_views("aortic_stenosis") == ("cw_av",)
  assert prompts.label_prompt_views("elevated_filling_pressure") == ()  # no view shows E/e'
  with pytest.raises(ValueError, match="'lvh'"):
    prompts.label_prompt_views("lvh")
