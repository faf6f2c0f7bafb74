"""WORKDIR/metrics.jsonl: one JSON object per logged step, appended by the trainer
(process 0, a clu MetricWriter beside clu's own) and read back, merged per step, for the report.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from clu import metric_writers

METRICS_FILE = "metrics.jsonl"


class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON object per write_scalars call to WORKDIR/metrics.jsonl; the other kinds
  of summary are not kept there (TensorBoard has them)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, METRICS_FILE)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")

  def write_summaries(self, step, values, metadata=None): pass
  def write_images(self, step, images): pass
  def write_videos(self, step, videos): pass
  def write_audios(self, step, audios, *, sample_rate): pass
  def write_texts(self, step, texts): pass
  def write_histograms(self, step, arrays, num_buckets=None): pass
  def write_hparams(self, hparams): pass
  def flush(self): pass
  def close(self): pass


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
