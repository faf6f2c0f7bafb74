"""The Beam build's work items on disk: each split's items as gzipped JSON-lines shards that
the pipeline reads with Beam's own text source.

Why files and not `beam.Create(items)`: Create puts every item into the job graph. For the
release (525,422 DICOMs) that graph was 24.5 MB, over Dataflow's 10 MB limit ("The job graph
is too large"); read from files, the graph holds only their pattern.
"""

from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from echovlm_jax.data import echoview
from echovlm_jax.data import mimic

# ~8k items (~5 MB of text, well under 1 MB gzipped) per file: enough files for the reads to
# spread; the pipeline reshuffles the items after reading anyway.
ITEMS_PER_SHARD = 8192


def encode(item: mimic.WorkItem) -> str:
  """One line of JSON. Python floats print their shortest exact repr, so values read back
  bit-identical (the Beam build must equal the single-process one)."""
  return json.dumps(item._asdict(), separators=(",", ":"))


def decode(line: str) -> mimic.WorkItem:
  d = json.loads(line)
  d["view"] = echoview.ViewLabel(*d["view"])
  return mimic.WorkItem(**d)


def write(items_by_split: Mapping[str, Sequence[mimic.WorkItem]], plan_dir: str,
          items_per_shard: int = ITEMS_PER_SHARD) -> dict[str, str]:
  """Writes every split's items under plan_dir (local or gs://); returns split -> file pattern.
  An empty split still gets one (empty) file, so its pattern matches."""
  patterns = {}
  for split, items in items_by_split.items():
    n = max(1, math.ceil(len(items) / items_per_shard))
    for k in range(n):
      path = FileSystems.join(plan_dir, f"{split}-{k:05d}-of-{n:05d}.jsonl.gz")
      with FileSystems.create(path, compression_type=CompressionTypes.GZIP) as f:
        chunk = items[k * items_per_shard:(k + 1) * items_per_shard]
        f.write("".join(encode(i) + "\n" for i in chunk).encode())
    patterns[split] = FileSystems.join(plan_dir, f"{split}-*-of-{n:05d}.jsonl.gz")
  return patterns
