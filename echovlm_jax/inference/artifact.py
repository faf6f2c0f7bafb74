"""An exported artifact on disk (written by `python -m echovlm_jax.tools.export`; layout in
docs/artifacts.md): its file names and format versions, the checksum manifest written last and
checked on load, and the restore of its parameters into a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import jax
import ml_collections
from flax import nnx

from configs import echovlm
from echovlm_jax.inference import artifact_tokenizer
from echovlm_jax.models import factory

# 1: the dataset's sentencepiece `tokenizer.model`; 2: adds a checkpoint tokenizer in
# `tokenizer/` (artifact_tokenizer.py); 3: a dense model (config.json `task` segmentation /
# landmarks: config.json, params/, README.md; no text side). Export writes the lowest that
# describes the artifact.
FORMAT_VERSION = 2
DENSE_FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
# config.json `task` of a dense artifact -> what its outputs are (schema names, in order).
DENSE_TASKS = ("segmentation", "landmarks")
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
TOKENIZER_FILE = artifact_tokenizer.SENTENCEPIECE_FILE
STATS_FILE = "measurement_stats.json"
STUDY_POOLING_FILE = "study_pooling.npz"   # optional: the fitted study pooling of the run
PROMPTS_FILE = "prompts.json"
CARD_FILE = "README.md"
MANIFEST_FILE = "MANIFEST.json"
REQUIRED_FILES = (CONFIG_FILE, STATS_FILE, PROMPTS_FILE)  # and the tokenizer of its kind
DENSE_REQUIRED_FILES = (CONFIG_FILE,)


class ArtifactError(ValueError):
  """An artifact directory is missing, incomplete, corrupt or of another format version."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path, self.reason = os.fspath(path), reason
    super().__init__(f"EchoVLM artifact {self.path}: {reason}")


def file_digest(path: str) -> str:
  """sha256 hex digest of a file's bytes."""
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def list_files(root: str) -> list[str]:
  """Relative paths of every file under root except the manifest, sorted."""
  out = []
  for d, _, files in os.walk(root):
    for name in files:
      rel = os.path.relpath(os.path.join(d, name), root)
      if rel != MANIFEST_FILE:
        out.append(rel)
  return sorted(out)


def write_manifest(root: str, version: int = FORMAT_VERSION) -> None:
  """MANIFEST.json: size and sha256 of every file, written last (its presence = complete)."""
  files = {rel: {"size": os.path.getsize(os.path.join(root, rel)),
                 "sha256": file_digest(os.path.join(root, rel))} for rel in list_files(root)}
  with open(os.path.join(root, MANIFEST_FILE), "w") as f:
    json.dump({"format_version": version, "files": files}, f, indent=1, sort_keys=True)


def verify_artifact(path: str, *, check_hashes: bool = True) -> dict[str, Any]:
  """Raises ArtifactError listing every problem; returns the parsed config.json."""
  if not os.path.isdir(path):
    raise ArtifactError(path, "not a directory (expected the output of "
                              "`python -m echovlm_jax.tools.export`).")
  manifest_path = os.path.join(path, MANIFEST_FILE)
  if not os.path.exists(manifest_path):
    raise ArtifactError(path, f"{MANIFEST_FILE} is missing: the export did not finish or this is "
                              "not an EchoVLM artifact; export it again.")
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
    files = dict(manifest["files"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ArtifactError(path, f"{MANIFEST_FILE} is unreadable ({type(e).__name__}: {e}).") from None
  _check_version(path, manifest.get("format_version"), MANIFEST_FILE)
  dense = _task_of(path) in DENSE_TASKS
  required = DENSE_REQUIRED_FILES if dense else REQUIRED_FILES
  problems = [f"{rel}: required file missing" for rel in required if rel not in files]
  if not dense:
    problems += _tokenizer_problems(path, files)
  if not any(rel.startswith(PARAMS_DIR + os.sep) for rel in files):
    problems.append(f"{PARAMS_DIR}/: no parameter files listed")
  for rel, info in sorted(files.items()):
    full = os.path.join(path, rel)
    if not os.path.isfile(full):
      problems.append(f"{rel}: missing")
    elif os.path.getsize(full) != info.get("size"):
      problems.append(f"{rel}: size {os.path.getsize(full)} != {info.get('size')} recorded")
    elif check_hashes and file_digest(full) != info.get("sha256"):
      problems.append(f"{rel}: sha256 differs from the manifest (corrupt)")
  if problems:
    raise ArtifactError(path, "incomplete or corrupt: " + "; ".join(problems) + ".")
  try:
    with open(os.path.join(path, CONFIG_FILE)) as f:
      config = json.load(f)
  except ValueError as e:
    raise ArtifactError(path, f"{CONFIG_FILE} is not valid JSON ({e}).") from None
  _check_version(path, config.get("format_version"), CONFIG_FILE)
  keys = (("model", "input", "task", "outputs", "decoder_features") if dense else
          ("model", "input", "vocab_size", "num_measurements", "views", "labels", "measurements"))
  missing = [k for k in keys if k not in config]
  if missing:
    raise ArtifactError(path, f"{CONFIG_FILE} lacks keys {missing}.")
  # An artifact exported before a config.model key existed gets that key's default, here once.
  config["model"] = echovlm.with_defaults(config["model"], echovlm.get_config().model.to_dict())
  return config


def _task_of(path: str) -> str:
  """config.json's `task` ("contrastive" when absent: formats 1 and 2); "" when unreadable
  (reported as a missing / invalid config.json)."""
  try:
    with open(os.path.join(path, CONFIG_FILE)) as f:
      return str(json.load(f).get("task", "contrastive"))
  except (OSError, ValueError, TypeError, AttributeError):
    return ""


def _tokenizer_problems(path: str, files: Mapping[str, Any]) -> list[str]:
  """The tokenizer file(s) config.json names, unless config.json itself is missing."""
  try:
    with open(os.path.join(path, CONFIG_FILE)) as f:
      kind = artifact_tokenizer.kind_of(json.load(f))
  except (OSError, ValueError, TypeError, AttributeError):
    return []  # reported as a missing / invalid config.json
  if kind == "checkpoint":
    prefix = artifact_tokenizer.CHECKPOINT_DIR + os.sep
    return [] if any(rel.startswith(prefix) for rel in files) else [
        f"{prefix}: required (a checkpoint tokenizer) but no files listed"]
  return [] if TOKENIZER_FILE in files else [f"{TOKENIZER_FILE}: required file missing"]


def _check_version(path: str, version: Any, where: str) -> None:
  if version not in READ_VERSIONS:
    raise ArtifactError(path, f"{where} has format_version={version!r}, this echovlm_jax reads "
                              f"format_version {' or '.join(map(str, READ_VERSIONS))}; export it "
                              "again with this version or install the echovlm_jax that wrote it.")


def restore_model(path: str, config: Mapping[str, Any], device: jax.Device | None = None
                  ) -> nnx.Module:
  """The artifact's model (config: its config.json; a DualEncoder, or for a dense task the
  DenseModel) with its params on `device` (default: the first device)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  model_config = ml_collections.ConfigDict(dict(config["model"]))
  if config.get("task") in DENSE_TASKS:
    build = factory.dense_model(model_config, num_outputs=len(config["outputs"]),
                                decoder_features=int(config["decoder_features"]),
                                head=str(config.get("landmark_head", "heatmap")))
  else:
    build = factory.dual_encoder(model_config, vocab_size=int(config["vocab_size"]),
                                 num_measurements=int(config["num_measurements"]))
  abstract = nnx.eval_shape(build)
  graphdef, params = nnx.split(abstract, nnx.Param)
  sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        nnx.to_pure_dict(params))
  try:
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(os.path.join(os.path.abspath(path), PARAMS_DIR), target)
  except Exception as e:  # noqa: BLE001 - orbax / tensorstore raise many types for bad data
    raise ArtifactError(path, f"cannot restore {PARAMS_DIR}/ for the model in {CONFIG_FILE} "
                              f"({type(e).__name__}: {str(e)[:500]}).") from None
  nnx.replace_by_pure_dict(params, restored)
  return nnx.merge(graphdef, params)
