r"""Predictions for DICOM / PNG / JPEG files with an exported artifact: zero-shot views and
findings (an EchoVLM dual encoder), chamber masks or landmarks (a segmentation / landmark one).

  python -m echovlm_jax.tools.predict --artifact ARTIFACT FILE_OR_FOLDER [...] [--json]
  python -m echovlm_jax.tools.predict --artifact SEG_ARTIFACT --task segment --out MASKS FILE ...
  python -m echovlm_jax.tools.predict --artifact LM_ARTIFACT --task landmarks FILE ... --json

--task defaults to what the artifact does. Masks are written to --out as PNGs (the label
image, values schema.STRUCTURES, and a colour overlay) per file and frame.

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


def read_frames(path: str, num_frames: int, size: int, fps: float = 0.0) -> np.ndarray:
  """A file as uint8 [T, size, size] (T = num_frames): DICOMs through data/dicom.load_frames
  (which masks everything outside the ultrasound region; fps > 0: a cine's frames at that
  rate, as a video model was trained), images converted to grayscale, scaled and padded to a
  square the same way. Raises UnreadableFile."""
  from echovlm_jax.data import dicom
  from PIL import Image, UnidentifiedImageError
  if not os.path.isfile(path):
    raise UnreadableFile(f"{path}: no such file")
  try:
    if _is_dicom(path):
      return dicom.load_frames(path, num_frames=num_frames, size=size, fps=fps)
    try:
      with Image.open(path) as img:
        gray = np.asarray(img.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
      try:  # DICOM without preamble or extension
        return dicom.load_frames(path, num_frames=num_frames, size=size, fps=fps)
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
      frames.append(read_frames(p, model.num_frames, model.image_size,
                                getattr(model, "clip_fps", 0.0)))
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


TASKS = {"views": "contrastive", "segment": "segmentation", "landmarks": "landmarks"}


def read_all(paths: Sequence[str], num_frames: int, size: int) -> tuple[list, list[str], list[dict]]:
  """(frames per readable file, their paths, {file, error} per unreadable one)."""
  frames, ok, errors = [], [], []
  for p in expand(paths):
    try:
      frames.append(read_frames(p, num_frames, size))
      ok.append(p)
    except UnreadableFile as e:
      errors.append({"file": p, "error": str(e)})
  return frames, ok, errors


def segment_files(model: Any, paths: Sequence[str], out_dir: str, num_frames: int
                  ) -> tuple[list[dict], list[dict]]:
  """Masks of each readable file's frames, written to out_dir; per file the PNGs written and
  each structure's share of the frame (frame 0)."""
  from PIL import Image
  from echovlm_jax.evaluation import segmentation_report
  frames, ok, errors = read_all(paths, num_frames, model.image_size)
  results = []
  if ok:
    os.makedirs(out_dir, exist_ok=True)
    masks = model.segment(np.stack(frames))                     # [N, T, S, S]
    for i, p in enumerate(ok):
      stem = os.path.splitext(os.path.basename(p))[0]
      written = []
      for t in range(masks.shape[1]):
        base = os.path.join(out_dir, f"{stem}_f{t}")
        Image.fromarray(masks[i, t]).save(base + "_mask.png")
        gray = frames[i][t].astype(np.float32) / 127.5 - 1.0
        Image.fromarray(segmentation_report.overlay(gray, masks[i, t])).save(base + "_overlay.png")
        written += [base + "_mask.png", base + "_overlay.png"]
      share = np.bincount(masks[i, 0].ravel(), minlength=len(model.outputs)) / masks[i, 0].size
      results.append({"file": p, "written": written,
                      "share": {n: float(v) for n, v in zip(model.outputs, share)}})
  return results, errors


def landmark_files(model: Any, paths: Sequence[str], num_frames: int) -> tuple[list[dict], list[dict]]:
  """Each readable file's points (row, col) per frame, in the model's input frame
  (image_size x image_size, the square the DICOM reader makes)."""
  frames, ok, errors = read_all(paths, num_frames, model.image_size)
  results = []
  if ok:
    pts = model.landmarks(np.stack(frames))
    for i, p in enumerate(ok):
      results.append({"file": p, "points": [{n: [float(v) for v in pts[i, t, k]]
                                             for k, n in enumerate(model.outputs)}
                                            for t in range(pts.shape[1])]})
  return results, errors


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m echovlm_jax.tools.predict", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--artifact", required=True,
                      help="directory written by echovlm_jax.tools.export")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--task", choices=("auto", *TASKS), default="auto",
                      help="what to predict; auto: what the artifact was trained for")
  parser.add_argument("--out", default="", help="--task segment: folder for the mask PNGs")
  parser.add_argument("--frames", type=int, default=1,
                      help="--task segment / landmarks: frames per file, evenly sampled")
  parser.add_argument("files", nargs="+", help="DICOM / PNG / JPEG files or folders")
  args = parser.parse_args(argv)

  from echovlm_jax.inference import artifact, load
  try:
    model = load.load_pretrained(args.artifact, batch_size=args.batch_size)
  except artifact.ArtifactError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  have = getattr(model, "task", "contrastive")
  task = next((k for k, v in TASKS.items() if v == have), "views") if args.task == "auto" else args.task
  if TASKS[task] != have:
    print(f"error: --task {task} needs a {TASKS[task]} artifact; {args.artifact} is a {have} one.",
          file=sys.stderr)
    return 2
  if task == "segment" and not args.out:
    print("error: --task segment writes mask PNGs: pass --out DIR.", file=sys.stderr)
    return 2
  if task == "segment":
    results, errors = segment_files(model, args.files, args.out, args.frames)
  elif task == "landmarks":
    results, errors = landmark_files(model, args.files, args.frames)
  else:
    results, errors = predict_files(model, args.files)
  for e in errors:
    print(f"skipped {e['error']}", file=sys.stderr)
  if args.json or task == "landmarks":
    print(json.dumps({"results": results, "errors": errors}, indent=1))
  elif task == "segment":
    for r in results:
      print(f"{r['file']}: " + ", ".join(f"{n} {v:.1%}" for n, v in r["share"].items() if n != "background")
            + f" (frame 0); {len(r['written'])} PNGs in {args.out}")
  elif results:
    print(format_table(results, model.labels))
  if not results and not errors:
    print("error: no input files found", file=sys.stderr)
    return 1
  return 1 if errors else 0


if __name__ == "__main__":
  sys.exit(main())
