r"""Labels every DICOM of a MIMIC-IV-ECHO tree with a trained view classifier:

  python -m echovlm_jax.tools.label_views --workdir RUN --manual_dir MIMIC \
      --out view_predictions.csv

RUN is a configs/view_classifier.py workdir (its latest checkpoint, or --step). One CSV row per
DICOM of echo-record-list.csv (echoview.PREDICTION_COLUMNS: study, image, view, confidence,
prob_<view> ...), which the `mimic` build reads with --config.input.mimic.view_predictions.
Batches run on the mesh; with several processes (distributed.maybe_initialize) file i of the
record list goes to process i % count. MIMIC may be gs://; OUT is local (rows are appended
as they come). Each process appends to its own part file as it goes
(OUT.part-<i>-of-<n>), so a rerun skips every row already written, whatever the process count
was; at the end process 0 merges the parts into OUT. Missing and unreadable files are skipped
and counted.

  python -m echovlm_jax.tools.label_views --workdir RUN --synthetic --out view_predictions.csv

labels the synthetic images instead (one process): every image of the train split of RUN's
synthetic dataset (config.input: patients, seed, image_size, num_frames), rendered as the build
renders it, keyed by synthetic_views.image_name; the synthetic build reads it with
--config.input.synthetic.view_predictions (docs/results.md).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import glob
import logging
import os
import sys
import time
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from echovlm_jax import distributed
from echovlm_jax import sharding
from echovlm_jax.data import bug_guard
from echovlm_jax.data import dicom
from echovlm_jax.data import echoview
from echovlm_jax.data import fileio
from echovlm_jax.echo import schema
from echovlm_jax.evaluation import registry
from echovlm_jax.evaluation import view_classification
from echovlm_jax.inference.frames import prepare_frames
from echovlm_jax.train import checkpointing
from echovlm_jax.train import run_config
from echovlm_jax.train import tasks
from echovlm_jax.train import workdir_config
from echovlm_jax.train.tasks import view_classifier as view_task

COLUMNS = echoview.PREDICTION_COLUMNS
PROGRESS_EVERY_S = 30.0


# ----------------------------------------------------------------------------
# Files, shares and what is done
# ----------------------------------------------------------------------------
def record_list(manual_dir: str) -> list[tuple[str, str]]:
  """(study_id, dicom_filepath relative to manual_dir) per row of echo-record-list.csv."""
  from echovlm_jax.data import mimic  # pylint: disable=g-import-not-at-top
  path = mimic.find(manual_dir, mimic.RECORD_LIST)
  if path is None:
    raise FileNotFoundError(f"{fileio.join(manual_dir, mimic.RECORD_LIST)} not found: --manual_dir "
                            "must be the MIMIC-IV-ECHO tree (docs/mimic.md).")
  return [(r["study_id"], r["dicom_filepath"])
          for r in mimic.rows(path, ("study_id", "dicom_filepath")) if r["dicom_filepath"]]


def host_share(files: Sequence[Any], process_index: int, process_count: int) -> list[Any]:
  """Process i's share: files i, i + n, i + 2n, ... (every file in exactly one share; shares
  differ in length by at most one, and each holds studies from all over the list)."""
  return list(files[process_index::process_count])


def part_path(out: str, process_index: int, process_count: int) -> str:
  return f"{out}.part-{process_index:05d}-of-{process_count:05d}"


def _drop_torn_tail(path: str) -> None:
  """A process killed mid-write leaves half a line: cut the file back to its last newline."""
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def read_rows(path: str) -> dict[str, list[str]]:
  """image -> row of a predictions CSV or part file (rows of the wrong width are dropped)."""
  if not os.path.exists(path):
    return {}
  _drop_torn_tail(path)
  with open(path, newline="") as f:
    return {r[1]: r for r in csv.reader(f) if len(r) == len(COLUMNS) and r[0] != "study"}


def done_rows(out: str) -> dict[str, list[str]]:
  """Every row already written: OUT and all part files (any earlier process count)."""
  rows = read_rows(out)
  for p in sorted(glob.glob(glob.escape(out) + ".part-*")):
    rows.update(read_rows(p))
  return rows


def merge(out: str) -> int:
  """OUT := OUT and every part file, one row per image in image order; parts removed. Returns
  the row count. Written to a temporary file first: OUT is never half-written."""
  rows = done_rows(out)
  tmp = out + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(COLUMNS)
    w.writerows(rows[k] for k in sorted(rows))
  os.replace(tmp, out)
  for p in glob.glob(glob.escape(out) + ".part-*"):
    os.remove(p)
  return len(rows)


def format_row(study: str, image: str, probs: np.ndarray) -> list[str]:
  """probs [V] in KNOWN_VIEWS order -> a CSV row of COLUMNS."""
  k = int(np.argmax(probs))
  return [study, image, schema.KNOWN_VIEWS[k], f"{probs[k]:.6f}", *(f"{p:.6f}" for p in probs)]


# ----------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------
def _local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in the order it passed them."""
  by_start = {s.index[0].start or 0: s.data for s in x.addressable_shards}
  return np.concatenate([np.asarray(by_start[k]) for k in sorted(by_start)])


def _max_over_hosts(n: int) -> int:
  if jax.process_count() == 1:
    return n
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.max(multihost_utils.process_allgather(np.array(n))))


def _load(path: str, num_frames: int, size: int, fps: float = 0.0) -> np.ndarray:
  if not fileio.isfile(path):
    raise FileNotFoundError(path)
  return dicom.load_frames(path, num_frames=num_frames, size=size, fps=fps)


def _batches(todo: list[tuple[str, str]], manual_dir: str, local_batch: int, num_batches: int,
             num_frames: int, size: int, counts: collections.Counter, workers: int,
             fps: float = 0.0) -> Iterator[tuple[list[tuple[str, str]], np.ndarray]]:
  """(the batch's readable files, uint8 frames [local_batch, T, S, S] zero-padded) x
  num_batches; files are decoded on `workers` threads, one batch ahead of the model."""
  guard = bug_guard.BugGuard(counts, "skipped:")
  chunks = [todo[i * local_batch:(i + 1) * local_batch] for i in range(num_batches)]
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    submit = lambda chunk: [(f, pool.submit(_load, fileio.join(manual_dir, f[1]), num_frames, size,
                                            fps)) for f in chunk]
    pending = submit(chunks[0]) if chunks else []
    for i in range(num_batches):
      current, pending = pending, submit(chunks[i + 1]) if i + 1 < num_batches else []
      files, frames = [], np.zeros((local_batch, num_frames, size, size), np.uint8)
      for f, fut in current:
        try:
          frames[len(files)] = fut.result()
          files.append(f)
        except FileNotFoundError:
          counts["skipped:missing"] += 1
        except dicom.DicomError as e:
          logging.info("skipping %s", e)
          counts["skipped:unreadable"] += 1
        except Exception as e:  # noqa: BLE001 - a decoder may raise anything on a bad file
          guard(e, f[1])
      yield files, frames


def view_classifier_config(workdir: str):
  """The config of a configs/view_classifier.py workdir; ValueError for another task's."""
  config = workdir_config.load(workdir)
  if tasks.from_config(config) is not view_task.TASK:
    raise ValueError(f"{workdir} is a {config.task!r} run: --workdir must be trained with "
                     "configs/view_classifier.py.")
  return config


def label_tree(workdir: str, manual_dir: str, out: str, *, step: int | None = None,
               batch_size: int = 0, workers: int = 0) -> dict[str, int]:
  """Writes this process's predictions, then (process 0) merges them into `out`. Returns the
  counts: files (this share), already_done, predicted, skipped:<reason>, rows (after merge)."""
  config = view_classifier_config(workdir)
  mesh = run_config.create_mesh(config)
  batch_size = int(batch_size or registry.eval_batch_size(config))
  local_batch = sharding.check_batch_size(batch_size, mesh, "--batch_size")
  model, ckpt_step = checkpointing.restore_params(config, workdir, mesh, step)
  predict = view_classification.make_predict_fn(model)
  pi, pc = jax.process_index(), jax.process_count()
  is_main = pi == 0

  share = host_share(record_list(manual_dir), pi, pc)
  done = done_rows(out)
  todo = [f for f in share if os.path.basename(f[1]) not in done]
  counts = collections.Counter(files=len(share), already_done=len(share) - len(todo))
  # Every process runs the same number of batches: the parameters may be sharded, so every
  # forward pass is a collective.
  num_batches = _max_over_hosts(-(-len(todo) // local_batch))
  num_frames, size, res = (int(config.input.num_frames), int(config.input.image_size),
                           int(config.input.res))
  if is_main:
    print(f"Labelling {len(todo)} of {len(share)} files on process {pi} of {pc} with step "
          f"{ckpt_step} of {workdir} ({counts['already_done']} already done) -> {out}", flush=True)
  part = part_path(out, pi, pc)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  if os.path.exists(part):
    _drop_torn_tail(part)
  t0, last_print = time.time(), time.time()
  with open(part, "a", newline="") as f:
    writer = csv.writer(f)
    for i, (files, frames) in enumerate(_batches(todo, manual_dir, local_batch, num_batches,
                                                 num_frames, size, counts,
                                                 workers or os.cpu_count() or 1,
                                                 # cines at the rate the build reads them
                                                 float(config.input.clip_fps) if num_frames > 1
                                                 else 0.0)):
      x = sharding.shard_batch({"frames": prepare_frames(frames, res)}, mesh)["frames"]
      probs = _local_rows(predict(x))
      writer.writerows(format_row(study, os.path.basename(rel), probs[j])
                       for j, (study, rel) in enumerate(files))
      f.flush()  # a row on disk is a row a rerun skips
      counts["predicted"] += len(files)
      now = time.time()
      if is_main and (now - last_print > PROGRESS_EVERY_S or i + 1 == num_batches):
        rate = (i + 1) / max(now - t0, 1e-9)
        eta = (num_batches - i - 1) / max(rate, 1e-9)
        print(f"batch {i + 1}/{num_batches}  {counts['predicted']} predicted, "
              f"{sum(v for k, v in counts.items() if k.startswith('skipped:'))} skipped  "
              f"{rate * local_batch * pc:.1f} files/s  ETA {int(eta) // 3600}:"
              f"{int(eta) // 60 % 60:02d}:{int(eta) % 60:02d}", flush=True)
        last_print = now
  if pc > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("views_written")
  if is_main:
    counts["rows"] = merge(out)
  return dict(counts)


def label_synthetic(workdir: str, out: str, *, step: int | None = None, batch_size: int = 0,
                    splits: Sequence[str] = ("train",)) -> dict[str, int]:
  """Writes `out`: a row per image of `splits` of the synthetic dataset RUN was trained on
  (rendered again, patient by patient; patients of other splits are skipped unrendered), in
  image order. Returns the counts: images, right (against the view drawn), step."""
  from echovlm_jax.data import build, synthetic, synthetic_views  # pylint: disable=g-import-not-at-top
  config = view_classifier_config(workdir)
  ic = config.input
  if ic.builder_config != "synthetic":
    raise ValueError(f"{workdir} was trained on the {ic.builder_config!r} dataset: --synthetic "
                     "labels the synthetic one (for MIMIC use --manual_dir).")
  if jax.process_count() > 1:
    raise ValueError("--synthetic runs on one process (the synthetic data is small).")
  bad = sorted(set(splits) - {"train", "validation", "test"})
  if bad or not splits:
    raise ValueError(f"--splits {','.join(splits)}: expected some of train, validation, test.")
  mesh = run_config.create_mesh(config)
  batch_size = int(batch_size or registry.eval_batch_size(config))
  local_batch = sharding.check_batch_size(batch_size, mesh, "--batch_size")
  model, ckpt_step = checkpointing.restore_params(config, workdir, mesh, step)
  predict = view_classification.make_predict_fn(model)
  n, seed = int(ic.synthetic_patients), int(ic.synthetic_seed)
  size, frames_per, res = int(ic.image_size), int(ic.num_frames), int(ic.res)
  split_of = synthetic_views.split_of(n, seed)
  fps = build.builder_config_for(ic).clip_fps       # clips as the build draws them
  print(f"Labelling the {','.join(splits)} images of the synthetic dataset ({n} patients, seed "
        f"{seed}, {size} px, {frames_per} frame(s)) with step {ckpt_step} of {workdir} -> {out}",
        flush=True)

  def images():
    for i in range(n):
      if split_of[synthetic_views.patient_id(synthetic.patient_key(seed, i))] in splits:
        for key, rec in synthetic.patient_records(seed, i, size, frames_per, clip_fps=fps):
          yield rec["study_key"], synthetic_views.image_name(key, size, frames_per), rec

  rows, counts, t0 = [], collections.Counter(step=ckpt_step), time.time()
  pending: list = []

  def flush():
    x = np.zeros((local_batch, frames_per, size, size), np.uint8)
    for j, (_, _, rec) in enumerate(pending):
      x[j] = rec["frames"]
    probs = _local_rows(predict(sharding.shard_batch({"frames": prepare_frames(x, res)},
                                                     mesh)["frames"]))
    for j, (study, name, rec) in enumerate(pending):
      rows.append(format_row(study, name, probs[j]))
      counts["right"] += int(rows[-1][2] == rec["drawn_view"])
    counts["images"] += len(pending)
    pending.clear()

  for item in images():
    pending.append(item)
    if len(pending) == local_batch:
      flush()
      if counts["images"] % (50 * local_batch) == 0:
        print(f"{counts['images']} images, {counts['images'] / (time.time() - t0):.1f}/s",
              flush=True)
  if pending:
    flush()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(COLUMNS)
    w.writerows(sorted(rows, key=lambda r: r[1]))
  os.replace(tmp, out)
  return dict(counts)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m echovlm_jax.tools.label_views",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a configs/view_classifier.py run")
  parser.add_argument("--manual_dir", default="", help="the MIMIC-IV-ECHO tree")
  parser.add_argument("--synthetic", action="store_true",
                      help="label the images of RUN's synthetic dataset instead of a MIMIC tree")
  parser.add_argument("--splits", default="train",
                      help="--synthetic: comma-separated splits to label (the build uses train)")
  parser.add_argument("--out", default="view_predictions.csv", help="the predictions CSV")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  parser.add_argument("--batch_size", type=int, default=0,
                      help="global batch (default the run's eval batch size)")
  parser.add_argument("--workers", type=int, default=0, help="decoding threads (default CPUs)")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  if args.synthetic:
    counts = label_synthetic(args.workdir, args.out, step=args.step, batch_size=args.batch_size,
                             splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()))
    print(f"{args.out}: {counts['images']} images labelled with step {counts['step']}; the top "
          f"prediction is the view drawn for {counts['right'] / max(counts['images'], 1):.3f} of "
          "them (the classifier's own training images included).", flush=True)
    return 0
  if not args.manual_dir:
    parser.error("--manual_dir (a MIMIC-IV-ECHO tree) or --synthetic is required.")
  distributed.maybe_initialize()
  counts = label_tree(args.workdir, args.manual_dir, args.out, step=args.step,
                      batch_size=args.batch_size, workers=args.workers)
  skipped = {k: v for k, v in counts.items() if k.startswith("skipped:")}
  print(f"Process {jax.process_index()}: {counts['predicted']} predicted, "
        f"{counts['already_done']} already done, skipped {skipped or 'none'}"
        + (f"; {args.out} has {counts['rows']} rows." if "rows" in counts else "."), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
