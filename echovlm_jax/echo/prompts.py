"""Zero-shot prompt sets for views and labels, in the words the captions use.

Built from captions.py's view sentences and guidelines.py's interpretation phrases (without
values), so a model trained on the captions scores prompts it has effectively read.
"""

from __future__ import annotations

from echovlm_jax.echo import captions
from echovlm_jax.echo import guidelines
from echovlm_jax.echo import schema


def _view_prompts(view: str) -> list[str]:
  info = schema.VIEW_INFO[view]
  a = captions._article(info.description)
  return [t.format(a=a, A=captions._cap(a), desc=info.description)
          for t in captions.VIEW_TEMPLATES]


def _statements(name: str, phrase: str) -> list[str]:
  """Value-less caption statements: "The <description> is <phrase>." and the like."""
  if name == "pericardial_effusion":
    return [t.format(phrase=phrase, Phrase=captions._cap(phrase))
            for t in captions.EFFUSION_ABSENT_TEMPLATES]
  info = schema.MEASUREMENT_INFO[name]
  return [f"The {info.description} is {phrase}.",
          f"{captions._cap(info.description)}, {phrase}.",
          f"{captions.ABBREVIATIONS[name]} {phrase}."]


def _label_prompts(label: str) -> dict[str, list[str]]:
  positive, negative = [], []
  for name in schema.LABEL_INPUTS[label]:
    normal, abnormal = guidelines.phrases(name)
    generic = guidelines.RULES[name].generic_abnormal
    for phrase in dict.fromkeys((generic,) + abnormal):
      positive += _statements(name, phrase)
    for phrase in normal:
      negative += _statements(name, phrase)
  return {"positive": positive, "negative": negative}


# view -> phrasings, for every known view (the unknown view has no prompt to match).
VIEW_PROMPTS: dict[str, list[str]] = {v: _view_prompts(v) for v in schema.KNOWN_VIEWS}
# label -> {"positive": [...], "negative": [...]}, for every label in schema.LABELS.
LABEL_PROMPTS: dict[str, dict[str, list[str]]] = {l: _label_prompts(l) for l in schema.LABELS}


def label_prompt_views(label: str) -> tuple[str, ...]:
  """Known views whose images can show `label`'s finding (score zero-shot only on these).

  Empty for elevated_filling_pressure: E/e' comes from tissue Doppler, which no view in
  the schema shows, so its prompts exist but no image can be scored against them.
  """
  if label not in schema.LABEL_INPUTS:
    raise ValueError(f"Unknown label {label!r}; expected one of {', '.join(schema.LABELS)}.")
  return tuple(v for v in schema.KNOWN_VIEWS if label in schema.view_labels(v))
