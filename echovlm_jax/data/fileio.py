"""Paths that may be local or remote (`gs://` on Dataflow): one place that opens, tests and
joins them. Local paths go through the plain filesystem; anything with a scheme through
etils.epath (TensorFlow's gfile), which is what TFDS itself uses."""

from __future__ import annotations

import gzip
import io
import os
import posixpath
from typing import IO

from etils import epath


def is_remote(path: str) -> bool:
  return "://" in str(path)


def join(base: str, *parts: str) -> str:
  return posixpath.join(str(base), *parts) if is_remote(base) else os.path.join(base, *parts)


def isfile(path: str) -> bool:
  return epath.Path(path).is_file() if is_remote(path) else os.path.isfile(path)


def basename(path: str) -> str:
  return posixpath.basename(str(path))


def open_text(path: str) -> IO[str]:
  """A CSV for reading as text, gunzipped when it ends in .gz."""
  raw = epath.Path(path).open("rb") if is_remote(path) else open(path, "rb")
  stream = gzip.open(raw) if str(path).endswith(".gz") else raw
  return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def local_or_bytes(path: str):
  """What pydicom can read: the path itself when local, else the file's bytes (a BytesIO)."""
  return io.BytesIO(epath.Path(path).read_bytes()) if is_remote(path) else path


def exists(path: str) -> bool:
  return epath.Path(path).exists() if is_remote(path) else os.path.exists(path)


def read_bytes(path: str) -> bytes:
  if is_remote(path):
    return epath.Path(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def write_bytes(path: str, data: bytes) -> None:
  """Writes whole: locally through a temporary file and a rename (a reader never sees half a
  file); remote objects are written whole by the store."""
  if is_remote(path):
    epath.Path(path).write_bytes(data)
    return
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def makedirs(path: str) -> None:
  """Creates a directory and its parents (no-op when it exists)."""
  epath.Path(path).mkdir(parents=True, exist_ok=True)
