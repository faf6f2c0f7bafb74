"""The view classifier's data: a predicate that keeps the examples whose view came from a
trusted source (optionally only a share of the patients), and a cheap count of what it keeps.
Used by input_pipeline.make_train_iterator / make_eval_iterator through their `keep` argument.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from echovlm_jax.echo import schema


def keep_labelled(view_sources: Sequence[str], patient_fraction: float = 1.0):
  """A tf predicate on raw examples: the view is known and came from one of `view_sources`;
  with patient_fraction < 1, only that share of the patients (by a hash of the hashed patient
  id, independent of the split hash) counts as labelled: benchmarks hide the rest."""
  bad = [v for v in view_sources if v not in schema.VIEW_SOURCES]
  if bad or not view_sources:
    raise ValueError(f"view sources {list(view_sources)}: expected some of {schema.VIEW_SOURCES}.")
  if not 0.0 < patient_fraction <= 1.0:
    raise ValueError(f"patient_fraction={patient_fraction}: expected a share in (0, 1].")
  sources = tf.constant(list(view_sources))

  def keep(ex: Mapping[str, tf.Tensor]) -> tf.Tensor:
    ok = tf.logical_and(tf.cast(ex["view"], tf.int32) != schema.UNKNOWN_VIEW_ID,
                        tf.reduce_any(tf.equal(ex["view_source"], sources)))
    if patient_fraction < 1.0:
      ok = tf.logical_and(ok, in_patient_share(ex["patient_id"], patient_fraction))
    return ok
  return keep


def in_patient_share(patient_id: tf.Tensor, fraction: float) -> tf.Tensor:
  """bool: the patient is in the first `fraction` of patients by a hash of its (hashed) id.
  The synthetic build hides the views of the patients outside it (data/synthetic_views.py):
  this module is one of artifacts.CONTENT_MODULES, an edit rebuilds such datasets."""
  buckets = 1 << 20
  bucket = tf.strings.to_hash_bucket_fast(
      tf.strings.join(["labelled/", tf.strings.as_string(patient_id)]), buckets)
  return bucket < int(fraction * buckets)


def count_kept(builder: tfds.core.DatasetBuilder, split: str, keep) -> np.ndarray:
  """int64 [len(schema.VIEWS)]: examples of `split` (a host's slice) that `keep` keeps, by
  view. Frames are not decoded: a cheap pass even over a large split."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={k: tfds.decode.SkipDecoding() for k in ("frames", "masks")},
                          read_config=tfds.ReadConfig(try_autocache=False))
  v = len(schema.VIEWS)
  ds = ds.filter(keep).map(lambda ex: tf.one_hot(tf.cast(ex["view"], tf.int32), v, dtype=tf.int64))
  return ds.reduce(tf.zeros([v], tf.int64), lambda acc, x: acc + x).numpy()


def all_hosts(x: np.ndarray) -> np.ndarray:
  """[P, ...]: every process's `x` (one row on a single host)."""
  if jax.process_count() == 1:
    return np.asarray(x)[None]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.asarray(x)))
