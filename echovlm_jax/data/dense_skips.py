"""Skips one item of a dense echo dataset (CAMUS, EchoNet-Dynamic, EchoNet-LVH) and counts why.

A reader raises `Skip` for an item it cannot use (a missing or misshapen mask, a tracing of a
frame the video lacks, a truncated file, a missing cfg key); `read_each` counts it in `stats`
under "skip:<reason>", logs the message (file, field, fix) and goes on. Any other exception goes
to bug_guard.BugGuard, as in mimic.py: counted under "skip:decoder_error:<type>", or the build
stops after a few bug-type errors. The prefixes are mimic.py's, so build_report.group_counts
sorts a dense reader's counts the same way ("skip:", "note:" for oddities kept, "rows:").
"""

from __future__ import annotations

import collections
import csv
import logging
import os
from typing import Callable, Iterable, Iterator, TypeVar

from echovlm_jax.data import bug_guard

DOC = "docs/dense_datasets.md"

_log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Skip(Exception):
  """One item is unusable. `reason` is its counter key; the message names file, field and fix."""

  def __init__(self, reason: str, path: str, field: str, problem: str, fix: str):
    super().__init__(f"{path}: {field}: {problem}. {fix}")
    self.reason = reason


def read_each(items: Iterable[T], read: Callable[[T], R], stats: collections.Counter,
              where: Callable[[T], str]) -> Iterator[R]:
  """read(item) for each item, skipping (and counting) the ones that raise."""
  guard = bug_guard.BugGuard(stats, "skip:decoder_")
  for item in items:
    try:
      out = read(item)
    except Skip as e:
      _log.warning("skipping %s", e)
      stats[f"skip:{e.reason}"] += 1
      continue
    except Exception as e:  # noqa: BLE001 - a decoder may raise anything on a bad file
      guard(e, where(item))
      continue
    yield out


def csv_rows(path: str, required: tuple[str, ...], dataset: str) -> list[dict[str, str]]:
  """A dataset's CSV as dicts of stripped strings. A missing file or column is a setup error
  (raised, naming the file and the fix), not a skip: nothing could be read without it."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: put {dataset}'s {os.path.basename(path)} there, "
                            f"as the release lays it out (see {DOC}).")
  with open(path, newline="", encoding="utf-8-sig") as f:   # -sig: a BOM would hide column 1
    table = list(csv.reader(f))
  header = [c.strip() for c in table[0]] if table else []
  missing = [c for c in required if c not in header]
  if missing:
    raise ValueError(f"{path}: missing column(s) {missing}; found {header}. This is not "
                     f"{dataset}'s {os.path.basename(path)} (see {DOC}).")
  return [{k: v.strip() for k, v in zip(header, row)} for row in table[1:] if any(row)]
