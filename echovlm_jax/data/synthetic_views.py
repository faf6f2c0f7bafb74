"""MIMIC's view situation on the synthetic data, whose truth we know: the train split's views
hidden for a share of the patients and labelled by a view classifier's predictions.

  --config.input.synthetic.hidden_view_fraction=0.9           # hide 90 % of the patients
  --config.input.synthetic.view_predictions=preds.csv         # python -m echovlm_jax.tools.label_views --synthetic
  --config.input.synthetic.view_predictions_min_prob=0.9      # as the mimic build's threshold

A train-split image's view is, in this order (the mimic build's precedence, ECHOVIEW standing
for the synthetic truth): the synthetic label when its patient is not hidden and the label was
recorded; else the classifier's prediction when its confidence reaches the threshold
(`view_source` "classifier", `view_confidence` its probability); else `unknown` (`none`, 0.0).
A patient is hidden when it is outside `labelled.in_patient_share(patient_id, 1 - fraction)`,
the hash the view classifier's `labelled_patient_fraction` uses, so the classifier trained with
`labelled_patient_fraction = 1 - fraction` has seen exactly the patients that are not hidden.

Only the train split changes. Validation and test keep the truth, so a run on these views and
a run on the true views are scored on the same images, labels and captions (the evaluators read
the dataset's `view`): the difference is what pretraining on the predictions cost. (On MIMIC
there is no truth: its validation and test views are ECHOVIEW's and the classifier's.)

Predictions are joined by `image_name`: the synthetic record key plus the image size and frame
count it was rendered at (a patient's images, and so its keys, depend on both).
"""

from __future__ import annotations

import collections
import csv
import re
from typing import Iterator

import numpy as np

from echovlm_jax.data import echoview
from echovlm_jax.data import fileio
from echovlm_jax.data import reader_options
from echovlm_jax.data import synthetic
from echovlm_jax.echo import schema

_NAME = re.compile(r"^synth(-?\d+)-p(\d+)-s\d+-i\d+\.i(\d+)t(\d+)$")
WRITER = "python -m echovlm_jax.tools.label_views --synthetic"


def image_name(key: str, image_size: int, num_frames: int) -> str:
  """The predictions CSV's `image` for a synthetic record: synth<seed>-p<index>-s<j>-i<k>.i<size>t<T>."""
  return f"{key}.i{int(image_size)}t{int(num_frames)}"


def patient_id(patient_key: str) -> int:
  """The dataset's (hashed) patient_id of a synthetic patient key."""
  from tfds_builders.echoground import records  # pylint: disable=g-import-not-at-top
  return records.stable_int64("patient", "synthetic", str(patient_key))


def split_of(num_patients: int, seed: int) -> dict[int, str]:
  """patient_id -> split of every patient of the build, as the builder splits them (it is
  given the same planned patients, so the split never depends on which records pass)."""
  from tfds_builders.echoground import records  # pylint: disable=g-import-not-at-top
  return records.split_patients(patient_id(synthetic.patient_key(seed, i))
                                for i in range(num_patients))


def check_fraction(hidden_view_fraction: float) -> float:
  f = float(hidden_view_fraction)
  if not 0.0 <= f <= 1.0:
    raise ValueError(f"config.input.synthetic.hidden_view_fraction={hidden_view_fraction}: expected "
                     "a share of the patients in [0, 1].")
  return f


def labelled_patients(patient_ids, hidden_view_fraction: float) -> set[int]:
  """The patients whose views stay visible: those in the labelled share of fraction
  1 - hidden_view_fraction (labelled.in_patient_share, the classifier's hash)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import labelled  # pylint: disable=g-import-not-at-top
  keep = round(1.0 - check_fraction(hidden_view_fraction), 9)  # 1 - 0.9 is 0.0999...
  ids = np.array(sorted(set(int(p) for p in patient_ids)), np.int64)
  if keep >= 1.0 or ids.size == 0:
    return set(ids.tolist())
  mask = labelled.in_patient_share(tf.constant(ids), keep).numpy()
  return set(ids[mask].tolist())


def read_predictions(path: str, min_prob: float, counts: collections.Counter, *, seed: int,
                     image_size: int, num_frames: int) -> dict[str, echoview.ViewLabel]:
  """image_name -> ViewLabel of the confident rows (echoview.read_predictions: its columns,
  threshold and counts). Every row's `image` must be an image name of this build's seed, size
  and frame count: a CSV written for other data fails here, before anything is rendered."""
  if not fileio.isfile(path):
    raise FileNotFoundError(f"{path} not found (config.input.synthetic.view_predictions); write "
                            f"it with {WRITER} (docs/results.md).")
  labels = echoview.read_predictions(path, min_prob, counts)  # checks columns and view names
  want = (str(int(seed)), str(int(image_size)), str(int(num_frames)))
  with fileio.open_text(path) as f:
    reader = csv.DictReader(f)
    reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
    for line, row in enumerate(reader, start=2):
      name = (row.get("image") or "").strip()
      if not name:
        continue  # counted as a bad row by echoview.read_predictions
      m = _NAME.match(name)
      if m is None or (m.group(1), m.group(3), m.group(4)) != want:
        got = (f"seed {m.group(1)}, image_size {m.group(3)}, num_frames {m.group(4)}" if m
               else "not a synthetic image name")
        raise ValueError(
            f"{path}: line {line}, column 'image': {name!r} ({got}); this build needs names "
            f"synth<seed>-p<index>-s<j>-i<k>.i<image_size>t<num_frames> of seed {want[0]}, "
            f"image_size {want[1]}, num_frames {want[2]}. Write the CSV for this dataset with "
            f"{WRITER} from a classifier trained on it (docs/results.md).")
  return labels


def generate_records(num_patients: int, seed: int, image_size: int, num_frames: int,
                     options: reader_options.SyntheticViewOptions, *, counts: collections.Counter,
                     clip_fps: float = 0.0
                     ) -> tuple[Iterator[tuple[str, dict]], set[int]]:
  """(the synthetic records with the train split's views hidden and relabelled, every planned
  patient_id). The predictions are read first: a bad CSV stops the build before rendering.

  Counted in `counts` (the build report's `view` section): hidden_patient_images,
  unrecorded_images (visible patients' train images whose label was never recorded, which the
  classifier labels too, as on MIMIC), classifier_right / classifier_wrong against the view
  drawn, no_confident_prediction, and echoview.read_predictions' own counts.
  """
  view_predictions = options.view_predictions
  predictions = {}
  if view_predictions:
    predictions = read_predictions(view_predictions, options.view_predictions_min_prob, counts, seed=seed,
                                   image_size=image_size, num_frames=num_frames)
    counts[f"view:source_file:{fileio.basename(view_predictions)}"] += 1
  splits = split_of(num_patients, seed)
  visible = labelled_patients(splits, options.hidden_view_fraction)

  def stream():
    needing = matched = 0
    for key, record in synthetic.generate_records(num_patients, seed, image_size, num_frames,
                                                  clip_fps=clip_fps, site=options.site):
      pid = patient_id(record["patient_key"])
      hidden = pid not in visible
      if splits[pid] != "train" or (not hidden and record["view"] != schema.UNKNOWN_VIEW):
        yield key, record
        continue
      needing += 1
      counts["view:hidden_patient_images" if hidden else "view:unrecorded_images"] += 1
      label = predictions.get(image_name(key, image_size, num_frames))
      record = dict(record)
      if label is None:
        counts["view:no_confident_prediction"] += 1
        record.update(view=schema.UNKNOWN_VIEW, view_source="none", view_confidence=0.0)
      else:
        matched += 1
        right = label.view == record["drawn_view"]
        counts["view:classifier_right" if right else "view:classifier_wrong"] += 1
        record.update(view=label.view, view_source="classifier",
                      view_confidence=float(label.confidence))
      yield key, record
    if predictions and needing and not matched:
      # Every row was for other images (another num_patients, or only confident rows of the
      # visible patients): the build would be the hidden one without any prediction.
      raise ValueError(
          f"{view_predictions}: none of its confident rows is one of the {needing} train-split "
          f"images this build must label (seed {seed}, {num_patients} patients). Write it for "
          f"this dataset with {WRITER} (docs/results.md).")

  return stream(), set(splits)
