"""Tells a bad input from a bug while a build reads thousands of files.

A corrupt DICOM or an odd record is skipped and counted; an exception of a type that means a
bug in our code (TypeError, KeyError, ...) is counted too, but after `MAX_BUGS` of them the
build stops with the traceback instead of counting the same bug for hours.
"""

from __future__ import annotations

import collections
import logging

BUG_TYPES = (TypeError, AttributeError, NameError, KeyError, IndexError, AssertionError,
             ZeroDivisionError, UnboundLocalError)
MAX_BUGS = 3

_log = logging.getLogger(__name__)


class BugGuard:
  """Call it with each unexpected exception: counts it in `counts` under `prefix`, re-raises
  (as RuntimeError from it) once MAX_BUGS bug-type exceptions were seen."""

  def __init__(self, counts: collections.Counter, prefix: str = ""):
    self.counts, self.prefix, self.bugs = counts, prefix, 0

  def __call__(self, e: Exception, where: str) -> None:
    if not isinstance(e, BUG_TYPES):
      _log.warning("skipping %s: %s: %s", where, type(e).__name__, e)
      self.counts[f"{self.prefix}error:{type(e).__name__}"] += 1
      return
    self.bugs += 1
    _log.error("bug-type error on %s", where, exc_info=e)
    self.counts[f"{self.prefix}bug:{type(e).__name__}"] += 1
    if self.bugs >= MAX_BUGS:
      raise RuntimeError(f"{self.bugs} bug-type errors (the last a {type(e).__name__} on {where}): "
                         "this is a bug in the code, not bad input; the traceback is above.") from e
