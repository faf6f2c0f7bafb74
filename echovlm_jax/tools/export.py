r"""Exports a training workdir's checkpoint as a self-contained artifact directory.

  python -m echovlm_jax.tools.export --workdir DIR --out ARTIFACT [--step N] [--data_dir D]

Writes params-only Orbax weights, config.json, the tokenizer, measurement stats, the
prompt sets, a model card and a checksum manifest (layout: docs/artifacts.md).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
from typing import Any, Mapping

import argparse

import ml_collections
import numpy as np
from flax import nnx

from echovlm_jax.echo import prompts as prompts_lib
from echovlm_jax.echo import schema
from echovlm_jax.inference import artifact
from echovlm_jax.inference import artifact_tokenizer
from echovlm_jax.interop import optional_deps
from echovlm_jax.train import tasks
from echovlm_jax.train import workdir_config


def package_version() -> str:
  try:
    from importlib import metadata
    return metadata.version("echovlm-jax")
  except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
    return "unknown"


def dataset_dir(train_config: ml_collections.ConfigDict, data_dir: str | None) -> str:
  """Where the tokenizer and measurement stats of the training data live (a mixture's: the
  ones its sources share, data/mixture.py)."""
  if data_dir:
    return data_dir
  from echovlm_jax.data import mixture  # tfds: only the exporter needs it
  return mixture.shared_dir(train_config.input)


def _metrics(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, "metrics.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return dict(json.load(f).get("metrics", {}))


def _data_description(cfg: ml_collections.ConfigDict) -> str:
  from echovlm_jax.data import mixture  # pylint: disable=g-import-not-at-top
  inp = cfg.input
  if mixture.is_mixture(inp):
    parts = []
    for s in mixture.sources(inp):
      one = ml_collections.ConfigDict(dict(cfg.to_dict(), input=s.input_config))
      parts.append(f"{s.weight:.0%} `{s.name}`: {_data_description(one)}")
    return "a weighted mixture of builds (one tokenizer over their captions): " + "; ".join(parts)
  if inp.builder_config == "synthetic":
    site = dict(inp.synthetic).get("site", "a")
    return (f"the synthetic `echoground` dataset ({inp.synthetic_patients} procedurally rendered "
            f"patients, seed {inp.synthetic_seed}, simulated lab {site!r}): captions, "
            "measurements and labels come from a simulator, not from patients")
  return ("`echoground` built from MIMIC-IV-ECHO (DICOM clips of one hospital's echo lab, "
          "captions generated from the structured measurements)")


def _tokenizer_description(artifact_config: Mapping[str, Any]) -> str:
  tok = artifact_config.get("tokenizer") or {}
  if tok.get("kind") == "checkpoint":
    return (f"the checkpoint tokenizer the run fine-tuned with (`{tok['path']}/`, from "
            f"`{tok['source']}`; loading it needs `{optional_deps.INSTALL}`)")
  return "the dataset's sentencepiece model (`tokenizer.model`)"


def model_card(artifact_config: Mapping[str, Any], train_config: ml_collections.ConfigDict,
               metrics: Mapping[str, Any]) -> str:
  """README.md of an artifact: data, config, metrics, intended use and limits."""
  m, inp = artifact_config["model"], artifact_config["input"]
  lines = [
      "# EchoVLM dual encoder", "",
      "> **Not a medical device.** A research model. Its outputs must not be used for "
      "diagnosis, triage or any decision about a patient.", "",
      f"Exported {artifact_config['exported']} from step {artifact_config['step']} of "
      f"`{artifact_config['source_workdir']}` with echovlm_jax {artifact_config['package_version']} "
      f"(artifact format {artifact_config['format_version']}).", "",
      "## Use", "", "```python", "import echovlm_jax",
      "model = echovlm_jax.load_pretrained('PATH')",
      "model.classify_views(frames)      # frames: uint8 [N, H, W] or [N, T, H, W]",
      "model.classify_findings(frames)", "model.encode_texts(['Severe aortic stenosis.'])",
      "```", "",
      "or `python -m echovlm_jax.tools.predict --artifact PATH FILE.dcm ...`.", "",
      "## Model", "",
      f"ViT image tower (width {m['image']['width']}, depth {m['image']['depth']}, patch "
      f"{m['image']['patch']}, {inp['res']} x {inp['res']} grayscale, {inp['num_frames']} "
      f"frame(s), `{m['image']['pool']}` pooling) and text transformer (width "
      f"{m['text']['width']}, depth {m['text']['depth']}, {inp['max_text_len']} tokens, vocabulary "
      f"{artifact_config['vocab_size']}), projected to {m['embed_dim']}-d L2-normalised "
      "embeddings, plus a measurement regression head.", "",
      f"Tokenizer: {_tokenizer_description(artifact_config)}.", "",
      "## Training data and objective", "",
      f"Trained on {_data_description(train_config)}. Objective: `{train_config.loss.kind}` "
      f"contrastive loss, view mode `{train_config.loss.view_mode}`, negation-aware "
      f"{bool(train_config.loss.negation)}, measurement weight {train_config.loss.meas_weight} "
      f"(image) / {train_config.loss.meas_text_weight} (text); "
      f"{train_config.total_steps} steps at global batch {train_config.batch_size}.", "",
      "## Evaluation", "",
  ]
  scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and "/" in k
             and k.count("/") <= 2}
  if scalars:
    lines += ["Metrics of the training run's last evaluation (`metrics.json`):", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| `{k}` | {v:.4f} |" for k, v in sorted(scalars.items())]
  else:
    lines += ["No evaluation metrics were found in the workdir (no `metrics.json`)."]
  lines += [
      "", "## Zero-shot probabilities", "",
      "Views: softmax over the known views of s * cos(image, view prompt), s = exp(logit_scale). "
      "Findings: softmax([s * cos(image, positive prompt), s * cos(image, negative prompt)])[0]. "
      "Each prompt embedding is the renormalised mean of its phrasings in `prompts.json`. "
      "`prompts.json` also lists which views can show each finding; a finding's probability from "
      "an image of another view means nothing.", "",
      "## Intended use and limits", "",
      "- Research on echocardiography representation learning: embeddings, retrieval, zero-shot "
      "and linear-probe experiments.",
      "- Not validated for clinical use, on any population, scanner or view outside the "
      "training data; synthetic-data models say nothing about real echocardiograms.",
      "- Probabilities are uncalibrated similarity scores, not risks.",
      "- Inputs: grayscale frames cropped to the ultrasound sector (DICOMs through "
      "`echovlm_jax.data.dicom.load_frames`, which masks text and ECG traces).", "",
      "## Configuration", "", "```json", json.dumps(artifact_config, indent=2, sort_keys=True),
      "```", ""]
  return "\n".join(lines)


def checkpoint_tokenizer_path(cfg: ml_collections.ConfigDict, tokenizer: str | None) -> str:
  """The checkpoint tokenizer the run trained with ("" = the dataset's sentencepiece):
  `tokenizer` when given, else the workdir config's input.tokenizer, which must exist."""
  path = tokenizer or cfg.input.get("tokenizer", "")
  if path and not os.path.exists(path):
    raise FileNotFoundError(
        f"the run's tokenizer {path} (config.json input.tokenizer) is missing here: export from "
        "the directory the run was started in, or pass --tokenizer with that tokenizer (the HF "
        "directory or sentencepiece .model config.input.tokenizer named).")
  return path


def _write_atomically(out: str, model, write_rest, format_version: int) -> None:
  """The artifact directory `out`: params/ (Orbax, params only), what write_rest(tmp) adds,
  MANIFEST.json last; written beside `out` and renamed into place when complete."""
  tmp = f"{out}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    _, params = nnx.split(model, nnx.Param)
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, artifact.PARAMS_DIR), nnx.to_pure_dict(params))
    write_rest(tmp)
    artifact.write_manifest(tmp, format_version)
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _study_pooling_of(workdir: str, step: int) -> str | None:
  """The study pooling the run's report fitted (evaluation/study_pooling.py), when it was
  fitted on this step's embeddings; None otherwise (the artifact then pools by the mean)."""
  path = os.path.join(workdir, "report", artifact.STUDY_POOLING_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as f:
    return path if int(f["step"]) == int(step) else None


def export(workdir: str, out: str, step: int | None = None, data_dir: str | None = None,
           overwrite: bool = False, tokenizer: str | None = None) -> str:
  """Writes the artifact for `step` (None = latest) of `workdir` to `out`; returns `out`.

  The artifact carries the tokenizer the run trained with: the dataset's sentencepiece model,
  or the checkpoint tokenizer of config.input.tokenizer (`tokenizer` overrides its path).
  The directory appears atomically (written beside it, then renamed).
  """
  from echovlm_jax.data import tokenizer as tokenizer_lib
  workdir, out = os.path.abspath(workdir), os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
  cfg = workdir_config.load(workdir)
  if not tasks.from_config(cfg).exports_artifact:
    raise ValueError(f"{workdir} is a config.task={cfg.task!r} run, which does not export as an "
                     "artifact (docs/artifacts.md).")
  if cfg.task in artifact.DENSE_TASKS:
    return export_dense(cfg, workdir, out, step)
  ckpt_tok = checkpoint_tokenizer_path(cfg, tokenizer)
  ddir = dataset_dir(cfg, data_dir)
  tok_path = "" if ckpt_tok else os.path.join(ddir, tokenizer_lib.TOKENIZER_FILENAME)
  stats_path = os.path.join(ddir, artifact.STATS_FILE)
  for p in (tok_path, stats_path):
    if p and not os.path.exists(p):
      raise FileNotFoundError(f"{p} is missing; pass --data_dir with the prepared dataset "
                              "directory holding the tokenizer and measurement_stats.json.")
  tok = (artifact_tokenizer.load_checkpoint_tokenizer(ckpt_tok) if ckpt_tok
         else tokenizer_lib.Tokenizer.load(tok_path))
  # As the trainer (train/loop.py): a checkpoint's embedding rows (config.model.vocab_size, set by
  # interop.init_from_checkpoint.configure) may exceed its tokenizer's length.
  vocab_size = int(cfg.model.vocab_size) or tok.vocab_size
  from echovlm_jax import distributed  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import checkpointing  # params-only restore, read-only
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  model, step = checkpointing.restore_params(cfg, workdir, mesh, step, vocab_size=vocab_size)

  res = int(cfg.input.res)
  artifact_config = {
      # 1 where readers of format 1 read it right (the sentencepiece tokenizer.model).
      "format_version": 2 if ckpt_tok else 1,
      "package_version": package_version(),
      "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "source_workdir": workdir, "step": step,
      "model": cfg.model.to_dict(),
      "input": {"res": res, "num_frames": int(cfg.input.num_frames),
                # How clips are read: their frame rate, the window the model reads, and how
                # many windows inference averages (data/clip_windows.py).
                "clip_fps": float(cfg.input.clip_fps), "window": int(cfg.input.window),
                "eval_windows": int(cfg.input.eval_windows),
                "max_text_len": int(cfg.input.max_text_len),
                "image_size": int(cfg.input.image_size),
                "pixel_range": [-1.0, 1.0]},
      "vocab_size": vocab_size,
      "tokenizer": artifact_tokenizer.entry("checkpoint" if ckpt_tok else "sentencepiece",
                                            os.path.abspath(ckpt_tok or tok_path)),
      "num_measurements": len(schema.MEASUREMENTS),
      "views": list(schema.KNOWN_VIEWS), "labels": list(schema.LABELS),
      "measurements": list(schema.MEASUREMENTS),
      "training": {"dataset": "echoground", "builder_config": cfg.input.builder_config,
                   "loss": cfg.loss.to_dict(), "total_steps": int(cfg.total_steps),
                   "batch_size": int(cfg.batch_size), "seed": int(cfg.seed)},
  }
  prompts = prompts_lib.prompt_sets()

  def write_rest(tmp: str) -> None:
    if ckpt_tok:
      tok.save(os.path.join(tmp, artifact_tokenizer.CHECKPOINT_DIR))
    else:
      shutil.copyfile(tok_path, os.path.join(tmp, artifact.TOKENIZER_FILE))
    shutil.copyfile(stats_path, os.path.join(tmp, artifact.STATS_FILE))
    pooling = _study_pooling_of(workdir, step)
    if pooling:
      shutil.copyfile(pooling, os.path.join(tmp, artifact.STUDY_POOLING_FILE))
    for name, obj in ((artifact.CONFIG_FILE, artifact_config), (artifact.PROMPTS_FILE, prompts)):
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    with open(os.path.join(tmp, artifact.CARD_FILE), "w") as f:
      f.write(model_card(artifact_config, cfg, _metrics(workdir)))
  _write_atomically(out, model, write_rest, artifact_config["format_version"])
  return out


def _dense_card(config: Mapping[str, Any], train_config, metrics: Mapping[str, Any]) -> str:
  m, inp = config["model"], config["input"]
  method = "segment(frames)" if config["task"] == "segmentation" else "landmarks(frames)"
  lines = [f"# EchoVLM {config['task']} model", "",
           "> **Not a medical device.** A research model. Its outputs must not be used for "
           "diagnosis, triage or any decision about a patient.", "",
           f"Exported {config['exported']} from step {config['step']} of `{config['source_workdir']}` "
           f"(artifact format {config['format_version']}).", "",
           "```python", "import echovlm_jax", "model = echovlm_jax.load_pretrained('PATH')",
           f"model.{method}      # frames: uint8 [N, H, W] or [N, T, H, W]", "```", "",
           "or `python -m echovlm_jax.tools.predict --artifact PATH --out DIR FILE.dcm ...`.", "",
           f"ViT image tower (width {m['image']['width']}, depth {m['image']['depth']}, patch "
           f"{m['image']['patch']}, {inp['res']} x {inp['res']} grayscale) and "
           + ("a regression head (pooled tokens, one hidden layer) to the points of "
              if config.get("landmark_head") == "regression" else
              f"a decoder ({config['decoder_features']} channels) to ")
           + f"{len(config['outputs'])} outputs: "
           + ", ".join(config["outputs"]) + ".", "",
           f"Trained on {_data_description(train_config)}, {train_config.total_steps} steps at "
           f"global batch {train_config.batch_size}.", "", "## Evaluation", ""]
  scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k.startswith("test/")}
  if scalars:
    lines += ["Test-split metrics of the training run's last evaluation:", "",
              "| metric | value |", "|---|---|"]
    lines += [f"| `{k}` | {v:.4f} |" for k, v in sorted(scalars.items())]
  else:
    lines.append("No evaluation metrics were found in the workdir (no `metrics.json`).")
  return "\n".join(lines) + "\n"


def export_dense(cfg: ml_collections.ConfigDict, workdir: str, out: str, step: int | None) -> str:
  """The artifact of a segmentation / landmarks run: config.json (task, outputs, model, input),
  params/, README.md, MANIFEST.json (format 3; no text side)."""
  from echovlm_jax import distributed  # pylint: disable=g-import-not-at-top
  from echovlm_jax.train import checkpointing  # pylint: disable=g-import-not-at-top
  mesh = distributed.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  model, step = checkpointing.restore_params(cfg, workdir, mesh, step, vocab_size=1)
  outputs = schema.STRUCTURES if cfg.task == "segmentation" else schema.LANDMARKS
  config = {
      "format_version": artifact.DENSE_FORMAT_VERSION, "package_version": package_version(),
      "exported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "source_workdir": workdir, "step": step, "task": cfg.task, "outputs": list(outputs),
      "decoder_features": int(cfg.dense.decoder_features),
      "landmark_head": str(cfg.dense.get("landmark_head", "heatmap")),
      "model": cfg.model.to_dict(),
      "input": {"res": int(cfg.input.res), "num_frames": int(cfg.input.num_frames),
                "image_size": int(cfg.input.image_size), "pixel_range": [-1.0, 1.0]},
      "training": {"dataset": "echoground", "builder_config": cfg.input.builder_config,
                   "frames_at": cfg.input.frames_at, "dense": cfg.dense.to_dict(),
                   "total_steps": int(cfg.total_steps), "batch_size": int(cfg.batch_size),
                   "seed": int(cfg.seed)},
  }
  def write_rest(tmp: str) -> None:
    with open(os.path.join(tmp, artifact.CONFIG_FILE), "w") as f:
      json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(tmp, artifact.CARD_FILE), "w") as f:
      f.write(_dense_card(config, cfg, _metrics(workdir)))
  _write_atomically(out, model, write_rest, artifact.DENSE_FORMAT_VERSION)
  return out


def main(argv: list[str] | None = None) -> int:
  # argparse, not absl flags: main.py owns the absl flag namespace, and tests import both.
  parser = argparse.ArgumentParser(prog="python -m echovlm_jax.tools.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="Training workdir (config.json + checkpoints/).")
  parser.add_argument("--out", required=True, help="Artifact directory to write.")
  parser.add_argument("--step", type=int, default=None,
                      help="Checkpoint step to export (default: the latest).")
  parser.add_argument("--data_dir", default=None,
                      help="Prepared dataset directory with the tokenizer and measurement_stats.json "
                           "(default: from the workdir's config).")
  parser.add_argument("--overwrite", action="store_true", help="Replace an existing --out.")
  parser.add_argument("--tokenizer", default=None,
                      help="The run's checkpoint tokenizer (HF directory or sentencepiece .model) "
                           "when the path in the workdir's config.json input.tokenizer moved.")
  args = parser.parse_args(argv)
  try:
    path = export(args.workdir, args.out, args.step, args.data_dir, args.overwrite,
                  args.tokenizer)
  except (FileExistsError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
