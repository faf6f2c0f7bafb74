"""Training batches from several builds, sampled by weight (config.input.data, data/mixture.py).

Each source is an endless stream of its train split's examples (this host's slice): its epoch e
is read in the order of (seed, source, e, host), and the k-th example of an epoch is augmented
with the seed (epoch seed, k), as the one-source iterator does. Which source fills slot j of
this host's stream is drawn with the weights from (seed, host, j // CHUNK) alone. So the
examples each source gave up to a position are counted without reading anything, and a resumed
iterator restarts every source at its own offset: the same batches as an uninterrupted run.

The stream is read in rounds of ROUND_STEPS batches: a round knows from the choices how many
examples each source gives and from where in its epochs, reads exactly those (finite tf.data
pipelines, no Python generator inside tf.data) and interleaves them with tf.data's
`choose_from_datasets` in the drawn order. (`sample_from_datasets` draws from a generator
state that a restart cannot rebuild.) Batches then go through the one tokenizer the sources
share.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from echovlm_jax import sharding
from echovlm_jax.data import input_pipeline
from echovlm_jax.data import mixture

CHUNK = 4096       # slots whose sources are drawn together
ROUND_STEPS = 128  # batches read per round (a round re-opens each source's current epoch)


def choices(weights: np.ndarray, seed: int, host: int, chunk: int) -> np.ndarray:
  """int64 [CHUNK]: the source of each slot of chunk `chunk` of host `host`'s stream."""
  rng = np.random.default_rng(np.random.SeedSequence(
      [input_pipeline._seed_int("mixture", seed, host), int(chunk)]))  # pylint: disable=protected-access
  return rng.choice(len(weights), size=CHUNK, p=weights).astype(np.int64)


def choices_between(weights: np.ndarray, seed: int, host: int, start: int, stop: int
                    ) -> np.ndarray:
  """int64 [stop - start]: the sources of slots start .. stop - 1."""
  first, last = start // CHUNK, (stop - 1) // CHUNK
  drawn = np.concatenate([choices(weights, seed, host, c) for c in range(first, last + 1)])
  return drawn[start - first * CHUNK:stop - first * CHUNK]


def pieces(epoch_size: int, start: int, count: int) -> list[tuple[int, int, int]]:
  """(epoch, skip, take) of a source's stream positions start .. start + count - 1."""
  out, p, end = [], int(start), int(start) + int(count)
  while p < end:
    epoch, i = divmod(p, epoch_size)
    take = min(epoch_size - i, end - p)
    out.append((epoch, i, take))
    p += take
  return out


def consumed(weights: np.ndarray, seed: int, host: int, slots: int) -> np.ndarray:
  """int64 [S]: how many of the first `slots` slots each source filled."""
  full, part = divmod(int(slots), CHUNK)
  counts = np.zeros(len(weights), np.int64)
  for c in range(full):
    counts += np.bincount(choices(weights, seed, host, c), minlength=len(weights))
  if part:
    counts += np.bincount(choices(weights, seed, host, full)[:part], minlength=len(weights))
  return counts


class MixtureTrainIterator:
  """Infinite, deterministic iterator of global training batches drawn from several builds;
  the interface of input_pipeline.TrainIterator (`position`, `local_batch`, next()).
  Batches carry `source` [B] int32, the index of each example's source in config.input.data."""

  def __init__(self, input_config: Mapping[str, Any], batch_size: int, mesh: jax.sharding.Mesh,
               seed: int, start_step: int = 0, keep: Callable | None = None,
               kind: str = "contrastive"):
    if keep is not None or kind != "contrastive":
      raise ValueError("config.input.data: a mixture of builds trains the contrastive task; "
                       f"this task reads {kind!r} batches{' of a labelled subset' if keep else ''} "
                       "from one build.")
    self.mesh, self.seed = mesh, int(seed)
    self.local_batch = sharding.check_batch_size(batch_size, mesh)
    self.sources = mixture.sources(input_config)
    self.weights = np.array([s.weight for s in self.sources], np.float64)
    self._data = [input_pipeline.EchogroundData(input_config, kind, s.name) for s in self.sources]
    frames = {s.name: d.builder.builder_config.num_frames for s, d in zip(self.sources, self._data)}
    if len(set(frames.values())) > 1:
      raise ValueError(f"config.input.data: the sources store different numbers of frames "
                       f"{frames}; build them with one config.input.num_frames.")
    self._slices = [d.host_split(d.train_split)[:2] for d in self._data]   # (split, its size)
    for s, (_, n) in zip(self.sources, self._slices):
      if n < 1:
        raise ValueError(f"config.input.data.{s.name}: its split {s.split!r} has no example for "
                         f"process {jax.process_index()}.")
    self.view_counts = None
    self.shuffle_buffer = int(input_config["shuffle_buffer"])
    self.prefetch = int(input_config["prefetch"])
    self.augment = bool(input_config["augment"])
    self.position = int(start_step)
    self._it = self._batches()

  def _epoch(self, k: int, epoch: int, skip: int) -> tf.data.Dataset:
    """Source k's examples of epoch `epoch` from the `skip`-th on, preprocessed (not batched)."""
    data, (split, _) = self._data[k], self._slices[k]
    epoch_seed = input_pipeline._seed_int(  # pylint: disable=protected-access
        "train", self.seed, self.sources[k].name, epoch, jax.process_index())
    read_config = tfds.ReadConfig(shuffle_seed=epoch_seed, try_autocache=False)
    ds = data.read(split, None, shuffle_files=True, read_config=read_config)
    ds = ds.shuffle(self.shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(skip)   # raw records: a cheap resume
    preprocess, augment = data.preprocess, self.augment

    def one(i, ex):
      s = tf.stack([tf.constant(epoch_seed, tf.int64), i])
      return preprocess(ex, s if augment else None, s)

    ds = ds.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(self.prefetch)

  def _round(self, slot: int, offsets: np.ndarray) -> tf.data.Dataset:
    """The batches of slots slot .. slot + ROUND_STEPS * local_batch - 1, given where each
    source's stream stands (`offsets`, advanced in place)."""
    c = choices_between(self.weights, self.seed, jax.process_index(), slot,
                        slot + ROUND_STEPS * self.local_batch)
    counts = np.bincount(c, minlength=len(self.sources))
    parts = []
    for k, n in enumerate(counts):
      ds = self._epoch(k, 0, 0).take(0)   # typed and empty: a source this round never draws
      for epoch, skip, take in pieces(self._slices[k][1], offsets[k], n):
        ds = ds.concatenate(self._epoch(k, epoch, skip).take(take))
      parts.append(ds)
      offsets[k] += n
    ds = tf.data.Dataset.choose_from_datasets(parts, tf.data.Dataset.from_tensor_slices(c))
    ds = ds.batch(self.local_batch, drop_remainder=True)
    ds = ds.map(self._data[0].tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(self.prefetch)

  def _batches(self) -> Iterator[dict[str, np.ndarray]]:
    spec = self._epoch(0, 0, 0).element_spec
    for k in range(1, len(self.sources)):
      other = self._epoch(k, 0, 0).element_spec
      if other != spec:
        raise ValueError(f"config.input.data.{self.sources[k].name}: its examples {other} "
                         f"differ from {self.sources[0].name}'s {spec}.")
    slot = self.position * self.local_batch
    offsets = consumed(self.weights, self.seed, jax.process_index(), slot)
    while True:
      yield from self._round(slot, offsets).as_numpy_iterator()
      slot += ROUND_STEPS * self.local_batch

  def __iter__(self) -> "MixtureTrainIterator":
    return self

  def __next__(self) -> dict[str, jax.Array]:
    batch = input_pipeline._to_global(next(self._it), self.mesh,  # pylint: disable=protected-access
                                      self._data[0].batch_keys)
    self.position += 1
    return batch


def make_train_iterator(input_config: Mapping[str, Any], batch_size: int,
                        mesh: jax.sharding.Mesh, seed: int, start_step: int = 0,
                        keep: Callable | None = None, kind: str = "contrastive"):
  """The trainer's iterator for any config.input: input_pipeline.make_train_iterator's for one
  build, a MixtureTrainIterator for several (same arguments, batches and resume)."""
  if len(mixture.sources(input_config)) > 1:
    return MixtureTrainIterator(input_config, batch_size, mesh, seed, start_step, keep, kind)
  return input_pipeline.make_train_iterator(input_config, batch_size, mesh, seed, start_step,
                                            keep, kind)
