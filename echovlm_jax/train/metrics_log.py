"""WORKDIR/metrics.jsonl: one JSON object per logged step, appended by the trainer
(process 0) and read back, merged per step, for the report.
"""

from __future__ import annotations

import json
import os

METRICS_FILE = "metrics.jsonl"


class JsonlWriter:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl (process 0 only)."""

  def __init__(self, path: str, enabled: bool):
    self.path, self.enabled = path, enabled

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")


def read_metrics_history(workdir: str) -> list[dict]:
  """WORKDIR/metrics.jsonl, one merged dict per step in step order.

  A resumed run re-logs the steps after its checkpoint; the later value wins.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  merged: dict[int, dict] = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        rec = json.loads(line)
        merged.setdefault(int(rec["step"]), {}).update(rec)
  return [merged[s] for s in sorted(merged)]
