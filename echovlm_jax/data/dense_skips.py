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
import logging
from typing import Callable, Iterable, Iterator, TypeVar

from echovlm_jax.data import bug_guard

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


def note(stats: collections.Counter, what: str, n: int = 1) -> None:
  """Counts an oddity that was kept under "note:<what>" (nothing when n is 0: a Counter keeps
  zero entries, and a report should not list them)."""
  if n:
    stats[f"note:{what}"] += n
