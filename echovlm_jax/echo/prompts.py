"""Zero-shot prompt sets for views and labels, in the words the captions use.

View prompts are captions.py's view sentences. Label prompts are caption sentences with
representative values (guidelines.py decides normal / abnormal), each behind the view
sentence of a view that shows the finding, so a prompt reads like the captions trained on.
"""

from __future__ import annotations

import numpy as np

from echovlm_jax.echo import captions
from echovlm_jax.echo import guidelines
from echovlm_jax.echo import schema

# Representative values per measurement, spanning normal and every abnormal grade. Values
# whose reading depends on sex (e.g. LVIDd 5.5 cm) are skipped: a prompt states one finding.
# Captions always carry a value; value-less prompts scored lower on the synthetic dataset
# (docs/results.md, "The demo recipe").
VALUE_GRID: dict[str, np.ndarray] = {
    "lvef": np.arange(15, 76, 5.0), "lvidd": np.arange(3.8, 7.01, 0.3),
    "ivsd": np.arange(0.6, 2.01, 0.1), "lvpwd": np.arange(0.6, 2.01, 0.1),
    "lavi": np.arange(18, 71, 4.0), "tapse": np.arange(0.9, 3.01, 0.2),
    "rvd_basal": np.arange(2.8, 5.81, 0.3), "av_vmax": np.arange(0.9, 5.01, 0.3),
    "av_mean_gradient": np.arange(5, 81, 5.0), "tr_vmax": np.arange(1.8, 4.41, 0.2),
    "rvsp": np.arange(20, 81, 5.0), "e_e_prime": np.arange(5, 26, 2.0),
    "pericardial_effusion": np.concatenate([[0.0], np.arange(0.3, 2.81, 0.3)]),
}


class _Cycle:
  """A stand-in rng for captions.py: phrasing i mod n, so prompts walk every template."""

  def __init__(self, i: int):
    self.i = i

  def randrange(self, n: int) -> int:
    return self.i % n


def _view_prompts(view: str) -> list[str]:
  info = schema.VIEW_INFO[view]
  a = captions._article(info.description)
  return [t.format(a=a, A=captions._cap(a), desc=info.description)
          for t in captions.VIEW_TEMPLATES]


def _label_prompts(label: str) -> dict[str, list[str]]:
  """Caption statements of `label`'s measurements at VALUE_GRID values, split by reading."""
  views = label_prompt_views(label)
  positive, negative, k = [], [], 0
  for name in schema.LABEL_INPUTS[label]:
    for value in VALUE_GRID[name]:
      value = float(round(value, 2))
      abnormal = guidelines.interpret(name, value, "M")[0]
      if guidelines.interpret(name, value, "F")[0] != abnormal:
        continue
      # A finding no view shows (E/e') gets the bare statement.
      for view in views or (None,):
        k += 1
        text = captions.measurement_sentence(name, value, "M", _Cycle(k))
        if view is not None:
          text = f"{captions.view_sentence(view, _Cycle(k // 3))} {text}"
        (positive if abnormal else negative).append(text)
  return {"positive": list(dict.fromkeys(positive)), "negative": list(dict.fromkeys(negative))}


def label_prompt_views(label: str) -> tuple[str, ...]:
  """Known views whose images can show `label`'s finding (score zero-shot only on these).

  Empty for elevated_filling_pressure: E/e' comes from tissue Doppler, which no view in
  the schema shows, so its prompts exist but no image can be scored against them.
  """
  if label not in schema.LABEL_INPUTS:
    raise ValueError(f"Unknown label {label!r}; expected one of {', '.join(schema.LABELS)}.")
  return tuple(v for v in schema.KNOWN_VIEWS if label in schema.view_labels(v))


# view -> phrasings, for every known view (the unknown view has no prompt to match).
VIEW_PROMPTS: dict[str, list[str]] = {v: _view_prompts(v) for v in schema.KNOWN_VIEWS}
# label -> {"positive": [...], "negative": [...]}, for every label in schema.LABELS.
LABEL_PROMPTS: dict[str, dict[str, list[str]]] = {l: _label_prompts(l) for l in schema.LABELS}


def prompt_sets() -> dict[str, dict]:
  """The prompt sets as an artifact's prompts.json holds them: views (view -> phrasings),
  labels (label -> positive / negative phrasings) and label_views (the views that can show
  each label)."""
  return {"views": {v: VIEW_PROMPTS[v] for v in schema.KNOWN_VIEWS},
          "labels": {l: LABEL_PROMPTS[l] for l in schema.LABELS},
          "label_views": {l: list(label_prompt_views(l)) for l in schema.LABELS}}
