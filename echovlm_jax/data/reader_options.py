"""What a build reads beyond its size: the MIMIC-IV-ECHO reader's options and the synthetic
source's simulated view labelling. Declared once here; `config.input.mimic` and
`config.input.synthetic` are these dataclasses as dicts, the builder config nests them, and
the readers take them whole (docs/mimic.md, docs/results.md).

Light on purpose (dataclasses only): configs/echovlm.py imports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class MimicOptions:
  """builder_config=mimic: what the reader takes from manual_dir. Paths empty = looked up there."""
  test_type: str = "tte"            # reports of this test_type only (tte / tee / stress)
  echoview_csv: str = ""            # ECHOVIEW's CSV; "" = MIMIC_ECHO_View_Classifications.csv
  view_csv: str = ""                # (study_id, file, view) CSV; "" = view_labels.csv if present
  view_min_prob: float = 0.5        # ECHOVIEW: top-class probability needed to take its view
  allow_unknown_views: bool = False  # build even when no view source is found
  # A view classifier's predictions CSV (python -m echovlm_jax.tools.label_views): labels what
  # ECHOVIEW and view_csv leave unknown. Its content hash goes into the dataset's name.
  view_predictions: str = ""
  view_predictions_min_prob: float = 0.9  # its confidence needed to take a predicted view
  # v0.1's study list only (no measurement_id): a report is linked to the DICOMs of the same
  # patient charted within this many hours (reports come after the images, sometimes hours).
  link_tolerance_h: float = 24.0


@dataclasses.dataclass(frozen=True)
class SyntheticViewOptions:
  """builder_config=synthetic: which simulated lab (echovlm_jax/data/synthetic_sites.py) and the
  views of the unlabelled majority, simulated (echovlm_jax/data/synthetic_views.py). Any
  non-default value gives the dataset another name."""
  # The lab: "a" (the default dataset) or "b" (another scanner's look, a sicker, heavier
  # population, no LA volume index in its reports: the mixture experiments' scarce site).
  site: str = "a"
  hidden_view_fraction: float = 0.0  # share of the patients whose train-split views are hidden
  # python -m echovlm_jax.tools.label_views --synthetic: labels the hidden views
  view_predictions: str = ""
  view_predictions_min_prob: float = 0.9  # its confidence needed to take a predicted view


def as_config(options: MimicOptions | SyntheticViewOptions) -> dict[str, Any]:
  """The config.input dict of a default options object (what configs/echovlm.py holds)."""
  return dataclasses.asdict(options)


def from_config(cls, values: Mapping[str, Any], key: str):
  """`cls` from a config.input sub-dict, each value cast to its field's type; an unknown key
  is an error naming `config.input.<key>.<name>` (a stored config from an older version gets
  missing keys from configs.echovlm.with_defaults before it reaches here)."""
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"config.input.{key}: unknown option(s) {unknown}; known: {sorted(fields)}.")
  cast = {"str": str, "float": float, "bool": bool}
  out = {name: cast[fields[name].type](v) for name, v in values.items()}
  if "test_type" in out:
    out["test_type"] = out["test_type"].lower()
  return cls(**out)
