"""The dense tasks' examples for the model: frames, masks and landmarks through the same crop
and resize, so a mask and its points stay on the pixels they label.

One crop box (input_pipeline.crop_box, the contrastive pipeline's own) is applied to all
three: frames bilinearly, masks by nearest neighbour (labels are not averaged), landmark
coordinates by the box's affine map. Coordinates are (row, col) in pixel-index units (pixel
i's centre at i), as the builder stores them.
"""

from __future__ import annotations

import tensorflow as tf

from echovlm_jax.echo import schema

# What a dense batch holds (input_pipeline's dense iterators): frames float32 [B, T, r, r, 1]
# in [-1, 1]; masks int32 [B, T, r, r]; landmarks float32 [B, T, K, 2] (NaN absent);
# phases float32 [B, T]; pixel_spacing_mm float32 [B] at the model's resolution;
# dense_truth, valid float32 [B]; view, study_id int32 [B]; lvef float32 [B], the study's
# reported LVEF (%; NaN when absent), what volumes from masks are compared with; labelled
# float32 [B, len(STRUCTURES)]: 1 where the example's source labels the structure
# (schema.LABELLED_STRUCTURES), so a source that labels fewer is not taught they are absent.
BATCH_KEYS = ("frames", "masks", "landmarks", "phases", "pixel_spacing_mm", "dense_truth",
              "view", "study_id", "lvef", "labelled", "valid")
_LVEF = schema.MEASUREMENTS.index("lvef")
# [len(SOURCES), len(STRUCTURES)]: row s says which structures source s labels.
_LABELLED = [[float(c in schema.LABELLED_STRUCTURES[s]) for c in schema.STRUCTURES]
             for s in schema.SOURCES]


def labelled_structures(source: tf.Tensor) -> tf.Tensor:
  """The `source` string -> float32 [len(STRUCTURES)], its row of schema.LABELLED_STRUCTURES."""
  row = tf.argmax(tf.cast(tf.equal(source, tf.constant(schema.SOURCES)), tf.int32))
  return tf.gather(tf.constant(_LABELLED, tf.float32), row)


def model_masks(masks: tf.Tensor, res: int, box: tf.Tensor) -> tf.Tensor:
  """uint8 [T, S, S, 1] -> int32 [T, res, res]: the box's crop resized by nearest neighbour."""
  t = tf.shape(masks)[0]
  m = tf.image.crop_and_resize(tf.cast(masks, tf.float32), tf.repeat(box, t, axis=0),
                               tf.range(t), [res, res], method="nearest")
  return tf.cast(tf.round(m[..., 0]), tf.int32)


def model_landmarks(points: tf.Tensor, size: int, res: int, box: tf.Tensor) -> tf.Tensor:
  """float32 [T, K, 2] (row, col) in the stored S = `size` grid -> the same points in the
  model's res grid after the crop `box` [1, 4] (normalised y0, x0, y1, x1), by
  crop_and_resize's own sampling: output pixel i reads input y0 (S-1) + i (y1-y0)(S-1)/(res-1).
  A point the crop cuts off stays, outside [0, res): the loss masks it."""
  y0, x0, y1, x1 = box[0, 0], box[0, 1], box[0, 2], box[0, 3]
  scale = float(size - 1)
  row = (points[..., 0] - y0 * scale) * (res - 1) / ((y1 - y0) * scale)
  col = (points[..., 1] - x0 * scale) * (res - 1) / ((x1 - x0) * scale)
  return tf.stack([row, col], axis=-1)


def make_preprocess(res: int, size: int, model_frames, crop_box):
  """ex -> the dense example (BATCH_KEYS). model_frames / crop_box: input_pipeline's, so the
  frames are exactly the contrastive pipeline's for the same seed."""

  def preprocess(ex, seed: tf.Tensor | None, text_seed=None):
    del text_seed  # no text
    box = tf.constant([[0.0, 0.0, 1.0, 1.0]]) if seed is None else crop_box(seed)
    # The stored spacing is per stored pixel; a model pixel's row covers (box height)(S-1)/(res-1)
    # of them. Evaluation crops nothing, so its spacing is exact and isotropic.
    side = box[0, 2] - box[0, 0]
    return {
        "frames": model_frames(ex["frames"], res, seed),
        "masks": model_masks(ex["masks"], res, box),
        "landmarks": model_landmarks(ex["landmarks"], size, res, box),
        "phases": ex["phases"],
        "pixel_spacing_mm": ex["pixel_spacing_mm"] * side * (size - 1) / (res - 1),
        "dense_truth": tf.cast(ex["dense_truth"], tf.float32),
        "view": tf.cast(ex["view"], tf.int32),
        "study_id": tf.cast(tf.bitwise.bitwise_and(ex["study_id"], 0x7FFFFFFF), tf.int32),
        "lvef": ex["measurements"][_LVEF],
        "labelled": labelled_structures(ex["source"]),
        "valid": tf.constant(1.0, tf.float32),
    }
  return preprocess
