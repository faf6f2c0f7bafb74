"""Finds a dense echo dataset's release files: its root folder and its CSVs.

Where a file or column is missing nothing can be read, so these raise (a setup error naming
the file and the fix) instead of skipping items one by one (dense_skips.py).
"""

from __future__ import annotations

import csv
import os

DOC = "docs/dense_datasets.md"


def find_root(manual_dir: str | os.PathLike, marker: str, unzipped: str, dataset: str) -> str:
  """The folder that holds `marker`: manual_dir itself or manual_dir/`unzipped` (the folder the
  release's zip unpacks to)."""
  manual_dir = os.fspath(manual_dir)
  for root in (manual_dir, os.path.join(manual_dir, unzipped)):
    if os.path.exists(os.path.join(root, marker)):
      return root
  raise FileNotFoundError(f"{manual_dir}: no {marker} in it (nor in {unzipped}/): put {dataset}'s "
                          f"release there as it unzips (see {DOC}).")


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
