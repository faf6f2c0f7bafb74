"""`python -m echovlm_jax.main` with the data of N emulated hosts, for the multi-process test.

  python tests/train_worker.py --emulate_processes=2 --config ... --workdir ...   (main's flags)

One process (all devices) trains with the real trainer, but its global batches are
what N hosts would assemble: host i's local batches (its slice of the split, its
shuffle seed) concatenated in host order. So its losses are what N real processes
must reproduce; tests/test_train_e2e.py compares them.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from absl import app
from absl import flags
import jax
import numpy as np

from echovlm_jax import main as main_lib
from echovlm_jax import sharding
from echovlm_jax.data import input_pipeline

_EMULATE = flags.DEFINE_integer("emulate_processes", 1, "Hosts whose data layout to emulate.")


@contextlib.contextmanager
def as_process(index: int, count: int) -> Iterator[None]:
  """Makes jax.process_index() / process_count() answer as host `index` of `count`.

  Only the input pipeline runs inside (it asks jax which host it is); no jax
  computation does, so nothing else sees the pretence.
  """
  saved = jax.process_index, jax.process_count
  jax.process_index, jax.process_count = (lambda *_: index), (lambda *_: count)
  try:
    yield
  finally:
    jax.process_index, jax.process_count = saved


class EmulatedHostsIterator:
  """input_pipeline.TrainIterator's interface over N emulated hosts' iterators."""

  def __init__(self, input_config, batch_size, mesh, seed, start_step=0, keep=None,
               kind="contrastive", *, num_hosts: int):
    self.mesh, self.num_hosts, self.position = mesh, num_hosts, int(start_step)
    self.hosts = []
    for i in range(num_hosts):
      with as_process(i, num_hosts):
        self.hosts.append(input_pipeline.TrainIterator(input_config, batch_size, mesh, seed,
                                                       start_step, keep=keep, kind=kind))

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, jax.Array]:
    parts = []
    for i, it in enumerate(self.hosts):
      with as_process(i, self.num_hosts):  # an epoch's seed is drawn lazily, per host
        parts.append(next(it._it))  # pylint: disable=protected-access
    self.position += 1
    keys = self.hosts[0]._data.batch_keys  # pylint: disable=protected-access
    batch = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    return sharding.shard_batch(batch, self.mesh)


def worker_main(argv) -> None:
  n = _EMULATE.value
  if n > 1:
    def make(input_config, batch_size, mesh, seed, start_step=0, keep=None, kind="contrastive"):
      return EmulatedHostsIterator(input_config, batch_size, mesh, seed, start_step, keep, kind,
                                   num_hosts=n)
    input_pipeline.make_train_iterator = make
  main_lib.main(argv)


if __name__ == "__main__":
  app.run(worker_main, flags_parser=main_lib.parse_flags)
