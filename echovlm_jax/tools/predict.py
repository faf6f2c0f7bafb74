r"""Zero-shot view and finding prediction for DICOM / PNG / JPEG files with an exported artifact.

  python -m echovlm_jax.tools.predict --artifact ARTIFACT FILE_OR_FOLDER [...] [--json]

Unreadable files are reported on stderr and skipped; the exit code is 1 when any was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
DICOM_EXTS = (".dcm", ".dicom")


class UnreadableFile(ValueError):
  """A file that is neither a decodable DICOM nor a PNG / JPEG image."""


def expand(paths: Sequence[str]) -> list[str]:
  """Files as given, folders walked recursively (hidden entries skipped), in sorted order.
  Inside folders only DICOM / PNG / JPEG names and extension-less files (DICOM) are taken."""
  out = []
  for p in paths:
    if os.path.isdir(p):
      for d, dirs, files in os.walk(p):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for name in sorted(files):
          ext = os.path.splitext(name)[1].lower()
          if not name.startswith(".") and (ext in IMAGE_EXTS + DICOM_EXTS or not ext):
            out.append(os.path.join(d, name))
    else:
      out.append(p)
  return out


def _is_dicom(path: str) -> bool:
  if os.path.splitext(path)[1].lower() in DICOM_EXTS:
    return True
  with open(path, "rb") as f:
    head = f.read(132)
  return head[128:132] == b"DICM"


def read_frames(path: str, num_frames: int, size: int) -> np.ndarray:
  """A file as uint8 [T, size, size] (T = num_frames): DICOMs through data/dicom.load_frames
  (which masks everything outside the ultrasound region), images converted to grayscale,
  scaled and padded to a square the same way. Raises UnreadableFile."""
  from echovlm_jax.data import dicom
  from PIL import Image, UnidentifiedImageError
  if not os.path.isfile(path):
    raise UnreadableFile(f"{path}: no such file")
  try:
    if _is_dicom(path):
      return dicom.load_frames(path, num_frames=num_frames, size=size)
    try:
      with Image.open(path) as img:
        gray = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
      try:  # DICOM without preamble or extension
        return dicom.load_frames(path, num_frames=num_frames, size=size)
      except dicom.DicomError:
        raise UnreadableFile(f"{path}: neither DICOM nor a readable PNG / JPEG "
                             f"({type(e).__name__}: {e})") from None
    frames = dicom.resize_square(gray[None], size)
    return np.repeat(frames, num_frames, axis=0)
  except dicom.DicomError as e:
    raise UnreadableFile(str(e)) from None
  except OSError as e:
    raise UnreadableFile(f"{path}: {e}") from None


def predict_files(model: Any, paths: Sequence[str]) -> tuple[list[dict], list[dict]]:
  """Returns (results, errors): one dict per readable file with view, view_probs and
  findings (label -> probability), and {file, error} per unreadable one."""
  frames, ok, errors = [], [], []
  for p in expand(paths):
    try:
      frames.append(read_frames(p, model.num_frames, model.image_size))
      ok.append(p)
    except UnreadableFile as e:
      errors.append({"file": p, "error": str(e)})
  results = []
  if ok:
    emb = model.encode_images(np.stack(frames))
    views = model.views_from_embeddings(emb)
    findings = model.findings_from_embeddings(emb)
    for i, p in enumerate(ok):
      view = views["predicted"][i]
      results.append({
          "file": p, "view": view,
          "view_prob": float(views["probs"][i].max()),
          "view_probs": {v: float(q) for v, q in zip(views["views"], views["probs"][i])},
          "findings": {l: float(q) for l, q in zip(findings["labels"], findings["probs"][i])},
          "not_shown_by_view": [l for l in findings["labels"]
                                if view not in findings["label_views"][l]],
      })
  return results, errors


def format_table(results: Sequence[dict], labels: Sequence[str]) -> str:
  """One row per file: predicted view (probability) and each finding's probability; a '*'
  marks findings the predicted view cannot show."""
  header = ["file", "view"] + list(labels)
  rows = [[r["file"], f"{r['view']} ({r['view_prob']:.2f})"]
          + [f"{r['findings'][l]:.2f}{'*' if l in r['not_shown_by_view'] else ''}" for l in labels]
          for r in results]
  widths = [max(len(x) for x in col) for col in zip(header, *rows)]
  fmt = lambda row: "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip()
  lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
  lines.append("* the predicted view cannot show this finding; its probability means nothing.")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m echovlm_jax.tools.predict", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--artifact", required=True,
                      help="directory written by echovlm_jax.tools.export")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("files", nargs="+", help="DICOM / PNG / JPEG files or folders")
  args = parser.parse_args(argv)

  from echovlm_jax.inference import artifact, load
  try:
    model = load.load_pretrained(args.artifact, batch_size=args.batch_size)
  except artifact.ArtifactError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  results, errors = predict_files(model, args.files)
  for e in errors:
    print(f"skipped {e['error']}", file=sys.stderr)
  if args.json:
    print(json.dumps({"results": results, "errors": errors}, indent=1))
  elif results:
    print(format_table(results, model.labels))
  if not results and not errors:
    print("error: no input files found", file=sys.stderr)
    return 1
  return 1 if errors else 0


if __name__ == "__main__":
  sys.exit(main())
