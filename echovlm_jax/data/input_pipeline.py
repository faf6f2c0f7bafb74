"""TFDS `echoground` -> per-host tf.data -> global jax.Arrays on the mesh's batch axes.

Each host reads its own even slice of a split (tfds.split_for_jax_process),
decodes, augments (train), tokenizes, batches its B / process_count examples and
prefetches; `jax.make_array_from_process_local_data` assembles the global batch,
sharded over ("data", "fsdp"). Batch keys: `BATCH_KEYS`; shapes in `make_train_iterator`.

Position and resume: the training stream is a sequence of epochs; epoch e's order
and augmentation depend only on (seed, e, host), every epoch has the same number
of steps on every host (the remainder is dropped, a different one each epoch), so
the position is just the number of batches consumed. Resuming at step s rebuilds
epoch s // steps_per_epoch and skips its first s % steps_per_epoch batches (raw
records are skipped before augmentation), which gives exactly the batches an
uninterrupted run would have produced. A mixture of builds (config.input.data,
data/mixture.py) is read by data/mixture_iterator.py from the same per-source pieces; its
make_train_iterator takes one build or several.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from echovlm_jax import sharding
from echovlm_jax.data import build
from echovlm_jax.data import caption_augment
from echovlm_jax.data import clip_windows
from echovlm_jax.data import dense_transforms
from echovlm_jax.data import labelled
from echovlm_jax.data import mixture
from echovlm_jax.data import tokenizer as tokenizer_lib
from echovlm_jax.echo import schema
from echovlm_jax.data import artifacts

CROP_AREA = (0.8, 1.0)        # random resized crop: fraction of the frame's area kept
CROP_ASPECT = (0.9, 1.1)      # width / height of the crop (log-uniform)
GAMMA_LOG_RANGE = 0.25        # gamma = exp(U(-r, r)): depth / compression setting
GAIN_RANGE = (0.85, 1.15)     # overall gain; multiplicative so the black background stays black

BATCH_KEYS = ("frames", "text", "neg_text", "has_negation", "view", "measurements", "meas_mask",
              "text_meas_mask", "labels", "study_id", "caption_id", "valid", "source")


def keep_tf_off_accelerators() -> None:
  """Hides the GPUs from TensorFlow: tf.data runs on the host CPU and must never take
  accelerator memory from JAX. Entry points that run the pipeline (main.py, benchmarks) call
  it once, first: after TF has initialised its devices (a clu summary writer does) it is too
  late, which is logged."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError as e:
    logging.warning("TensorFlow's GPUs stay visible (its devices were initialised first): %s", e)


# ----------------------------------------------------------------------------
# What lives next to the dataset
# ----------------------------------------------------------------------------
def load_tokenizer(input_config: Mapping[str, Any], data_dir: str | None = None
                   ) -> tokenizer_lib.Tokenizer:
  """The sentencepiece tokenizer trained on the train split (built with the dataset), the
  mixture's one over its sources' captions (data/mixture.py), or the checkpoint tokenizer at
  input_config.tokenizer (set by interop.init_from_checkpoint.configure). data_dir: the
  prepared dataset's directory, when the caller has its builder already (one source)."""
  if input_config["tokenizer"]:
    return _checkpoint_tokenizer(input_config["tokenizer"])
  if mixture.is_mixture(input_config):
    mixture.check_artifacts(input_config)  # never one source's tokenizer for all of them
    return _tokenizer_in(mixture.mixture_dir(input_config))
  return _tokenizer_in(data_dir or build.get_builder(input_config).data_dir)


def _checkpoint_tokenizer(path: str):
  from echovlm_jax.interop import checkpoint_tokenizer  # transformers: only for outside checkpoints
  return checkpoint_tokenizer.CheckpointTokenizer.load(path)


def _tokenizer_in(data_dir: str) -> tokenizer_lib.Tokenizer:
  path = os.path.join(data_dir, artifacts.TOKENIZER_FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: build the dataset first "
                            "(echovlm_jax.data.build.ensure_dataset(config.input)).")
  return tokenizer_lib.Tokenizer.load(path)


def load_measurement_stats(input_config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Train-split (mean [M], std [M]) used to z-score `measurements` (a mixture's: pooled)."""
  return artifacts.load_stats(mixture.shared_dir(input_config))


def num_examples(input_config: Mapping[str, Any], split: str, source: str | None = None) -> int:
  """Examples in a split of the prepared dataset (all hosts together); of a mixture's
  `source` (None: its first)."""
  cfg = mixture.source(input_config, source).input_config
  return build.get_builder(cfg).info.splits[split].num_examples


def view_measurement_mask() -> np.ndarray:
  """float32 [num_views, M]: 1 where a view shows a measurement (0 for `unknown`)."""
  mask = np.zeros((len(schema.VIEWS), len(schema.MEASUREMENTS)), np.float32)
  for v, view in enumerate(schema.VIEWS):
    for m in schema.view_measurements(view):
      mask[v, schema.MEASUREMENTS.index(m)] = 1.0
  return mask


def fold_study_id(study_id: np.ndarray) -> np.ndarray:
  """int64 hash -> int32 (xor of the halves), the form the batch carries. numpy twin of the tf op."""
  x = np.asarray(study_id, np.int64).view(np.uint64)
  return ((x ^ (x >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)


# ----------------------------------------------------------------------------
# Per-example and per-batch transforms (tf graph)
# ----------------------------------------------------------------------------
def _seed_int(*parts: Any) -> int:
  digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
  return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _crop_box(seed: tf.Tensor) -> tf.Tensor:
  """[1, 4] normalised box (y0, x0, y1, x1) of a random resized crop of the frame."""
  s = tf.random.experimental.stateless_split(seed, 4)
  area = tf.random.stateless_uniform([], s[0], *CROP_AREA)
  log_aspect = tf.random.stateless_uniform([], s[1], math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1]))
  aspect = tf.exp(log_aspect)
  h = tf.minimum(tf.sqrt(area / aspect), 1.0)
  w = tf.minimum(tf.sqrt(area * aspect), 1.0)
  y0 = tf.random.stateless_uniform([], s[2]) * (1.0 - h)
  x0 = tf.random.stateless_uniform([], s[3]) * (1.0 - w)
  return tf.stack([y0, x0, y0 + h, x0 + w])[None]


def crop_box(seed: tf.Tensor) -> tf.Tensor:
  """[1, 4] the crop model_frames takes for `seed` (dense_transforms crops masks with it)."""
  return _crop_box(tf.random.experimental.stateless_split(seed, 3)[0])


def model_frames(frames: tf.Tensor, res: int, seed: tf.Tensor | None) -> tf.Tensor:
  """uint8 [T, S, S, 1] -> float32 [T, res, res, 1] in [-1, 1]; augmented when seed is given.

  One crop for all T frames of a clip (the heart must not jump between frames).
  No left-right flip: it turns an apical four-chamber view into a mirrored one that
  no scanner produces, and swaps which side the left ventricle is on.
  """
  x = tf.cast(frames, tf.float32) / 255.0
  t = tf.shape(x)[0]
  if seed is None:
    box = tf.constant([[0.0, 0.0, 1.0, 1.0]])
  else:
    s = tf.random.experimental.stateless_split(seed, 3)
    box = _crop_box(s[0])
  x = tf.image.crop_and_resize(x, tf.repeat(box, t, axis=0), tf.range(t), [res, res])
  if seed is not None:
    gamma = tf.exp(tf.random.stateless_uniform([], s[1], -GAMMA_LOG_RANGE, GAMMA_LOG_RANGE))
    gain = tf.random.stateless_uniform([], s[2], *GAIN_RANGE)
    x = tf.clip_by_value(tf.pow(tf.maximum(x, 0.0), gamma) * gain, 0.0, 1.0)
  return x * 2.0 - 1.0


def _clip_frames(frames: tf.Tensor, num_frames: int, window: int, eval_windows: int,
                 train_seed: tf.Tensor | None) -> tf.Tensor:
  """A stored clip [T, S, S, 1] -> the frames the model reads (data/clip_windows.py): with a
  window shorter than T, training gets [window, S, S, 1] from a random start (train_seed),
  evaluation [K, window, S, S, 1] at fixed starts. Whole clips pass unchanged."""
  if window == num_frames:
    return frames
  if train_seed is not None:
    seed = tf.random.experimental.stateless_fold_in(train_seed, 13)
    start = tf.random.stateless_uniform([], seed, 0, num_frames - window + 1, dtype=tf.int32)
    return frames[start:start + window]
  idx = clip_windows.starts(num_frames, window, eval_windows)[:, None] + np.arange(window)
  return tf.gather(frames, tf.constant(idx, tf.int32))


def _make_preprocess(res: int, mean: np.ndarray, std: np.ndarray, num_frames: int = 1,
                     window: int = 0, eval_windows: int = 1, source_index: int = 0):
  view_mask = tf.constant(view_measurement_mask())
  mean_t, std_t = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
  window = clip_windows.resolve(num_frames, window)

  def frames_of(ex, seed, text_seed):
    x = _clip_frames(ex["frames"], num_frames, window, eval_windows, text_seed)
    if x.shape.rank == 4:
      return model_frames(x, res, seed)
    # Evaluation windows [K, w, S, S, 1]: one crop for all (none: evaluation is not augmented).
    k = x.shape[0]
    y = model_frames(tf.reshape(x, [k * window, *x.shape[2:]]), res, seed)
    return tf.reshape(y, [k, window, res, res, 1])

  def preprocess(ex: Mapping[str, tf.Tensor], seed: tf.Tensor | None,
                 text_seed: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """seed: frame augmentation (None = none); text_seed: a training example's caption
    augmentation and clip window (None = evaluation: captions as stored, fixed windows)."""
    meas = ex["measurements"]
    present = tf.math.is_finite(meas)
    view = tf.cast(ex["view"], tf.int32)
    sid = tf.bitcast(ex["study_id"], tf.uint64)
    folded = tf.bitwise.bitwise_and(tf.bitwise.bitwise_xor(sid, tf.bitwise.right_shift(sid, tf.constant(32, tf.uint64))),
                                    tf.constant(0xFFFFFFFF, tf.uint64))
    has_negation = ex["has_negation"]
    meas_mask = tf.cast(present, tf.float32) * tf.gather(view_mask, view)
    out = {
        "frames": frames_of(ex, seed, text_seed),
        "caption": ex["caption"],
        "negated_caption": tf.where(has_negation, ex["negated_caption"], ""),
        "has_negation": tf.cast(has_negation, tf.float32),
        "statements": ex["statements"],
        "view": view,
        "measurements": tf.where(present, (meas - mean_t) / std_t, 0.0),
        "meas_mask": meas_mask,
        "labels": tf.cast(ex["labels"], tf.int32),
        "study_id": tf.bitcast(tf.cast(folded, tf.uint32), tf.int32),
        "valid": tf.constant(1.0, tf.float32),
        "source": tf.constant(source_index, tf.int32),   # which of a mixture's sources
        # The generator caption_augment uses for this example; -1: not augmented.
        "text_seed": tf.constant(-1, tf.int64) if text_seed is None else tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(text_seed, 11), minval=0,
            maxval=2 ** 62, dtype=tf.int64),
    }
    return out
  return preprocess


def _make_tokenize(tok: tokenizer_lib.Tokenizer, max_len: int, p_subsample: float,
                   p_keep: float, fit_statements: bool, unknown_view_text: str = "sentence"):
  """Batch transform: captions -> text / neg_text ids [B, max_len], text_meas_mask [B, M] and
  caption_id [B]. Training examples (text_seed >= 0) are first augmented (caption_augment):
  statement subsampling with p_subsample / p_keep, and with fit_statements, too-long captions
  drop statements rather than lose their tail; with unknown_view_text "sentence" an image of
  unknown view keeps only its study sentence. Evaluation examples never are. caption_id
  hashes the final caption, so identical captions in a batch are not each other's negatives
  (losses.py)."""
  # caption_augment budgets one special id (our EOS); a checkpoint's tokenizer may add more
  # (CLIP: start and end of text), which the caption must leave room for.
  fit_len = max_len + 1 - getattr(tok, "num_special_tokens", 1)

  def tokenize(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    batch = dict(batch)
    keys = ("caption", "negated_caption", "has_negation", "text_meas_mask")
    out = tf.numpy_function(
        lambda c, n, h, s, st, v: caption_augment.augment_batch(
            c, n, h, s, st, p_example=p_subsample, p_keep=p_keep, tok=tok, max_len=fit_len,
            fit=fit_statements, views=v, unknown_view_text=unknown_view_text),
        [batch["caption"], batch["negated_caption"], batch["has_negation"], batch.pop("text_seed"),
         batch.pop("statements"), batch["view"]],
        [tf.string, tf.string, tf.float32, tf.float32], stateful=False)
    for k, v in zip(keys, out):
      batch[k] = tf.ensure_shape(v, batch["meas_mask"].shape if k == "text_meas_mask"
                                 else batch["has_negation"].shape)
    caption = batch.pop("caption")
    batch["caption_id"] = tf.cast(tf.strings.to_hash_bucket_fast(caption, 2 ** 31 - 1), tf.int32)
    batch["text"] = tok.tf_encode_batch(caption, max_len)
    neg = tok.tf_encode_batch(batch.pop("negated_caption"), max_len)
    batch["neg_text"] = neg * tf.cast(batch["has_negation"][:, None] > 0, tf.int32)
    return batch
  return tokenize


def _to_global(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
               keys: tuple[str, ...] = BATCH_KEYS) -> dict[str, jax.Array]:
  return sharding.shard_batch({k: batch[k] for k in keys}, mesh)


# What a task's batches hold: "contrastive" (images and captions, BATCH_KEYS; the view
# classifier reads them too) or "dense" (frames, masks and landmarks, dense_transforms.BATCH_KEYS).
KINDS = ("contrastive", "dense")


class EchogroundData:
  """What both iterators share: the prepared builder, tokenizer, stats and transforms.

  source: which of a mixture's sources (config.input.data; None: the first, or the only one).
  Its build is read; the tokenizer and measurement stats are the run's (one for all sources).
  """

  def __init__(self, input_config: Mapping[str, Any], kind: str = "contrastive",
               source: str | None = None):
    if kind not in KINDS:
      raise ValueError(f"batch kind {kind!r}: expected one of {KINDS}.")
    self.kind = kind
    self.source = mixture.source(input_config, source)
    if kind == "dense" and mixture.is_mixture(input_config):
      raise ValueError("config.input.data: the dense tasks read one build; mixtures are for the "
                       "contrastive task.")
    self.train_split = self.source.split
    self.builder = build.get_builder(self.source.input_config)
    self.res = int(input_config["res"])
    self.max_len = int(input_config["max_text_len"])
    self.mean, self.std = load_measurement_stats(input_config)  # [M] each
    if kind == "dense":
      self.batch_keys = dense_transforms.BATCH_KEYS
      self.preprocess = dense_transforms.make_preprocess(
          self.res, self.builder.builder_config.image_size, model_frames, crop_box)
      self.tokenize = lambda batch: batch
      self.decoders = None
      return
    self.batch_keys = BATCH_KEYS
    # The masks are zlib-compressed: images and captions never need them decompressed.
    self.decoders = {"masks": tfds.decode.SkipDecoding()}
    self.preprocess = _make_preprocess(self.res, self.mean, self.std,
                                       self.builder.builder_config.num_frames,
                                       int(input_config["window"]),
                                       int(input_config["eval_windows"]), self.source.index)
    self.tokenizer = load_tokenizer(
        input_config, None if mixture.is_mixture(input_config) else self.builder.data_dir)
    # `augment` switches off frame augmentation and statement subsampling; fitting long
    # captions is its own switch (without it the tokenizer cuts their tail).
    augment = bool(input_config["augment"])
    self.tokenize = _make_tokenize(self.tokenizer, self.max_len,
                                   float(input_config["caption_subsample"]) if augment else 0.0,
                                   float(input_config["statement_keep"]),
                                   bool(input_config["fit_statements"]),
                                   str(input_config["unknown_view_text"]))

  def read(self, split: str, keep: Callable | None, **as_dataset_kwargs) -> tf.data.Dataset:
    """The split's raw examples (those `keep` keeps), decoded as this kind needs. With `keep`,
    frames and masks are decoded only for the examples it keeps: at a 1 % labelled share
    decoding every frame to drop 99 % of them doubled the cost of each training epoch."""
    if keep is None:
      return self.builder.as_dataset(split=split, decoders=self.decoders, **as_dataset_kwargs)
    heavy = ("frames", "masks")
    ds = self.builder.as_dataset(split=split, **as_dataset_kwargs,
                                 decoders={k: tfds.decode.SkipDecoding() for k in heavy})
    features = self.builder.info.features
    wanted = [k for k in heavy if k not in (self.decoders or {})]   # what this kind decodes
    return ds.filter(keep).map(
        lambda ex: {**ex, **{k: features[k].decode_example(ex[k]) for k in wanted}},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def host_split(self, split: str, process_index: int | None = None, process_count: int | None = None
                 ) -> tuple[str, int, int]:
    """(a host's even slice of `split`, its size, the largest host slice).

    Slices are contiguous example ranges (tfds.split_for_jax_process), so each host
    opens only the shards that hold its range.
    """
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    n = self.builder.info.splits[split].num_examples
    sub = tfds.split_for_jax_process(split, process_index=pi, process_count=pc)
    return sub, self.builder.info.splits[sub].num_examples, -(-n // pc)


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------
class TrainIterator:
  """Infinite, deterministic iterator of global training batches.

  `position` is the number of batches consumed (the trainer's step); a new
  iterator with start_step=position continues exactly where this one was.
  """

  def __init__(self, input_config: Mapping[str, Any], batch_size: int, mesh: jax.sharding.Mesh,
               seed: int, start_step: int = 0, keep: Callable | None = None,
               kind: str = "contrastive"):
    self.mesh, self.seed, self.keep = mesh, int(seed), keep
    self.local_batch = sharding.check_batch_size(batch_size, mesh)
    self._data = EchogroundData(input_config, kind)
    self._split, _, _ = self._data.host_split(self._data.train_split)
    n_train = self._data.builder.info.splits[self._data.train_split].num_examples
    pc = jax.process_count()
    # Every host runs the same number of steps per epoch: the smallest host slice decides.
    self.steps_per_epoch = (n_train // pc) // self.local_batch
    self.view_counts = None  # [len(VIEWS)] kept training examples by view, with `keep`
    if keep is not None:
      counts = labelled.all_hosts(labelled.count_kept(self._data.builder, self._split, keep))  # [P, V]
      self.view_counts = counts.sum(axis=0)
      n_train = int(self.view_counts.sum())
      self.steps_per_epoch = int(counts.sum(axis=1).min()) // self.local_batch
    if self.steps_per_epoch < 1:
      raise ValueError(f"The train split has {n_train} examples: too few for a global batch of "
                       f"{batch_size} ({pc} process(es)); use a smaller batch or a bigger dataset.")
    self.shuffle_buffer = int(input_config["shuffle_buffer"])
    self.prefetch = int(input_config["prefetch"])
    self.augment = bool(input_config["augment"])
    self.position = int(start_step)
    self._it = self._batches()

  def _epoch(self, epoch: int, skip_batches: int) -> tf.data.Dataset:
    epoch_seed = _seed_int("train", self.seed, epoch, jax.process_index())
    read_config = tfds.ReadConfig(shuffle_seed=epoch_seed, try_autocache=False)
    ds = self._data.read(self._split, self.keep, shuffle_files=True, read_config=read_config)
    ds = ds.shuffle(self.shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.take(self.steps_per_epoch * self.local_batch).enumerate()
    ds = ds.skip(skip_batches * self.local_batch)  # before the expensive map: a cheap resume
    preprocess, augment = self._data.preprocess, self.augment

    def one(i, ex):
      seed = tf.stack([tf.constant(epoch_seed, tf.int64), i])
      return preprocess(ex, seed if augment else None, seed)

    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch, drop_remainder=True)
    ds = ds.map(self._data.tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(self.prefetch)

  def _batches(self) -> Iterator[dict[str, np.ndarray]]:
    epoch, skip = divmod(self.position, self.steps_per_epoch)
    while True:
      yield from self._epoch(epoch, skip).as_numpy_iterator()
      epoch, skip = epoch + 1, 0

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict[str, jax.Array]:
    batch = _to_global(next(self._it), self.mesh, self._data.batch_keys)
    self.position += 1
    return batch


def make_train_iterator(input_config: Mapping[str, Any], batch_size: int, mesh: jax.sharding.Mesh,
                        seed: int, start_step: int = 0, keep: Callable | None = None,
                        kind: str = "contrastive") -> TrainIterator:
  """Infinite iterator of global training batches: dict of jax.Arrays with keys BATCH_KEYS:
  frames float32 [B, T, res, res, 1] in [-1, 1]; text, neg_text int32 [B, max_text_len];
  has_negation, valid float32 [B]; view, study_id, caption_id int32 [B]; measurements
  (z-scored, 0 where absent), meas_mask (present and shown by the view), text_meas_mask
  (stated by the caption as tokenized) float32 [B, M]; labels int32 [B, K].

  batch_size is global; each host reads batch_size / process_count examples of its own
  slice of the train split. Deterministic for (seed, process count); start the
  iterator at `start_step` (batches already consumed) to resume. keep: a predicate on raw
  examples (`labelled.keep_labelled`): only those are read; `view_counts` then counts them by view.
  kind "dense": the dense tasks' batches instead (dense_transforms.BATCH_KEYS).
  One source only: several (config.input.data) are read by mixture_iterator.make_train_iterator,
  which takes any config.input.
  """
  if len(mixture.sources(input_config)) > 1:
    raise ValueError("config.input.data lists several sources: read them with "
                     "echovlm_jax.data.mixture_iterator.make_train_iterator.")
  return TrainIterator(input_config, batch_size, mesh, seed, start_step, keep, kind)


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------
def eval_num_batches(input_config: Mapping[str, Any], split: str, batch_size: int,
                     source: str | None = None) -> int:
  """Batches an eval iterator yields (the same on every host)."""
  pc = jax.process_count()
  per_host = -(-num_examples(input_config, split, source) // pc)
  return -(-per_host // (batch_size // pc))


def make_eval_iterator(input_config: Mapping[str, Any], split: str, batch_size: int,
                       mesh: jax.sharding.Mesh, keep: Callable | None = None,
                       kind: str = "contrastive", source: str | None = None
                       ) -> Iterator[dict[str, jax.Array]]:
  """One pass over `split`: every example exactly once, in a fixed order, no augmentation.

  The last batches are padded (valid = 0, zeros elsewhere) so every host yields the
  same number of full batches; weight any metric by `valid`. keep: only the examples this
  predicate on raw examples keeps (`labelled.keep_labelled`). kind: as make_train_iterator's.
  source: which of a mixture's sources (None: the first) is read.
  """
  local_batch = sharding.check_batch_size(batch_size, mesh)
  data = EchogroundData(input_config, kind, source)
  sub, n_local, n_max = data.host_split(split)
  if keep is not None:
    n_local = int(labelled.count_kept(data.builder, sub, keep).sum())
    n_max = int(labelled.all_hosts(np.array(n_local)).max())
  num_batches = -(-n_max // local_batch)
  ds = data.read(sub, keep, shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False))
  ds = ds.map(lambda ex: data.preprocess(ex, None), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  pad = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), ds.element_spec)
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat(num_batches * local_batch - n_local))
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(data.tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.prefetch(int(input_config["prefetch"]))
  for batch in ds.as_numpy_iterator():
    yield _to_global(batch, mesh, data.batch_keys)
