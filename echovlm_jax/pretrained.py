"""Loading an exported artifact (see export.py, docs/artifacts.md) for inference.

`load_pretrained(path)` checks the artifact (manifest, format version, files) and
returns `Pretrained`: jitted image / text encoders and zero-shot view and finding
classifiers. Needs no training code, no tf.data and no dataset. A Hugging Face CLIP /
SigLIP directory, an open_clip state dict or a big_vision .npz gives the same object
(interop/external_model.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from echovlm_jax import artifact_tokenizer
from echovlm_jax import scoring

# 1: the dataset's sentencepiece `tokenizer.model`; 2: adds a checkpoint tokenizer in
# `tokenizer/` (artifact_tokenizer.py). Export writes 1 where that describes the artifact.
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
TOKENIZER_FILE = artifact_tokenizer.SENTENCEPIECE_FILE
STATS_FILE = "measurement_stats.json"
PROMPTS_FILE = "prompts.json"
CARD_FILE = "README.md"
MANIFEST_FILE = "MANIFEST.json"
REQUIRED_FILES = (CONFIG_FILE, STATS_FILE, PROMPTS_FILE)  # and the tokenizer of its kind
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as data/dicom.py


class ArtifactError(ValueError):
  """An artifact directory is missing, incomplete, corrupt or of another format version."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path, self.reason = os.fspath(path), reason
    super().__init__(f"EchoVLM artifact {self.path}: {reason}")


# ----------------------------------------------------------------------------
# Integrity
# ----------------------------------------------------------------------------
def file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


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
                              "`python -m echovlm_jax.export`).")
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
  problems = [f"{rel}: required file missing" for rel in REQUIRED_FILES if rel not in files]
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
  missing = [k for k in ("model", "input", "vocab_size", "num_measurements", "views", "labels",
                         "measurements") if k not in config]
  if missing:
    raise ArtifactError(path, f"{CONFIG_FILE} lacks keys {missing}.")
  return config


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


# ----------------------------------------------------------------------------
# Images: what the input pipeline does to a frame, in NumPy
# ----------------------------------------------------------------------------
def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
  """Bilinear resize of one axis with tf.image.crop_and_resize's sampling over the whole
  frame (first and last samples on the first and last pixels)."""
  n = x.shape[axis]
  if n == size:
    return x
  pos = np.linspace(0.0, n - 1, size) if size > 1 else np.array([(n - 1) / 2.0])
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  shape = [1] * x.ndim
  shape[axis] = size
  w = (pos - lo).astype(np.float32).reshape(shape)
  return np.take(x, lo, axis=axis) * (1.0 - w) + np.take(x, hi, axis=axis) * w


def prepare_frames(frames: Any, res: int) -> np.ndarray:
  """Frames -> float32 [N, T, res, res, 1] in [-1, 1], as the input pipeline feeds the model.

  Accepts [N, T, H, W], [N, T, H, W, 1], [N, H, W], [N, H, W, 1] or RGB [N, H, W, 3] (BT.601
  luma); uint8 in [0, 255] or float in [0, 1]. Frames are resized to res x res (bilinear,
  tf.image.crop_and_resize sampling); pass square frames (data/dicom.py crops and pads).
  """
  x = np.asarray(frames)
  if x.ndim == 5 and x.shape[-1] == 1:
    x = x[..., 0]
  elif x.ndim == 4 and x.shape[-1] == 1:
    x = x[:, None, ..., 0]
  elif x.ndim == 4 and x.shape[-1] == 3:
    x = (x.astype(np.float32) @ _LUMA)[:, None]
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8) if np.asarray(frames).dtype == np.uint8 else x
  elif x.ndim == 3:
    x = x[:, None]
  elif x.ndim != 4:
    raise ValueError(f"frames of shape {x.shape}: expected [N, T, H, W], [N, H, W], [N, H, W, 1] "
                     "or [N, H, W, 3].")
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
    if x.size and (np.nanmin(x) < -1e-6 or np.nanmax(x) > 1.0 + 1e-6):
      raise ValueError(f"float frames must lie in [0, 1] (got [{np.nanmin(x):.3g}, "
                       f"{np.nanmax(x):.3g}]); pass uint8 for 0..255 pixel values.")
  else:
    raise ValueError(f"frames dtype {x.dtype}: expected uint8 or float.")
  x = _resize_axis(_resize_axis(x, res, 2), res, 3)
  return (x * 2.0 - 1.0)[..., None].astype(np.float32)


# ----------------------------------------------------------------------------
# Jitted encoders, shared by every model of the same architecture (keyed on graphdef)
# ----------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnums=0)
def _image_fn(graphdef, params, frames):
  model = nnx.merge(graphdef, params)
  emb = model.encode_image(frames)
  return emb, model.predict_measurements(emb)


@functools.partial(jax.jit, static_argnums=0)
def _text_fn(graphdef, params, tokens):
  return nnx.merge(graphdef, params).encode_text(tokens)


def _bucket(n: int, batch_size: int) -> int:
  """Padded size of a chunk: the next power of two, at most batch_size (few compiles)."""
  return min(batch_size, 1 << max(0, (n - 1).bit_length()))


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


class Pretrained:
  """An exported EchoVLM model ready for inference. Build it with `load_pretrained`.

  Attributes: config (the artifact's config.json as a dict), tokenizer, views / labels /
  measurements (name order of the outputs), view_prompts / label_prompts (the prompt sets
  the classifiers use), res, num_frames, max_text_len, logit_scale (s = exp(t)).
  """

  def __init__(self, path: str, config: Mapping[str, Any], model: nnx.Module, tokenizer,
               stats: Mapping[str, Any], prompts: Mapping[str, Any], *, batch_size: int = 32,
               device: jax.Device | None = None, prepare=None):
    self.path, self.config, self.tokenizer = path, dict(config), tokenizer
    # frames -> model input [N, T, S, S, C]; outside checkpoints bring their own processing.
    self._prepare = prepare or (lambda frames: prepare_frames(frames, self.res))
    self.graphdef, self.params = nnx.split(model, nnx.Param)
    self.batch_size, self.device = int(batch_size), device
    self.res = int(config["input"]["res"])
    self.num_frames = int(config["input"]["num_frames"])
    self.image_size = int(config["input"]["image_size"])
    self.max_text_len = int(config["input"]["max_text_len"])
    self.views: list[str] = list(config["views"])
    self.labels: list[str] = list(config["labels"])
    self.measurements: list[str] = list(config["measurements"])
    self.meas_mean = np.array([stats["mean"][m] for m in self.measurements], np.float32)
    self.meas_std = np.array([stats["std"][m] for m in self.measurements], np.float32)
    self.meas_units = {m: stats.get("unit", {}).get(m, "") for m in self.measurements}
    self.view_prompts: dict[str, list[str]] = {v: list(prompts["views"][v]) for v in self.views}
    self.label_prompts: dict[str, dict[str, list[str]]] = {
        l: {"positive": list(prompts["labels"][l]["positive"]),
            "negative": list(prompts["labels"][l]["negative"])} for l in self.labels}
    self.label_views: dict[str, list[str]] = {
        l: list(prompts.get("label_views", {}).get(l, self.views)) for l in self.labels}
    self.logit_scale = float(np.exp(np.asarray(self.params["logit_scale"][...])))
    self._prompt_emb: dict[str, np.ndarray] | None = None

  # -- encoders --
  def _put(self, x: np.ndarray) -> jax.Array:
    return jax.device_put(x, self.device) if self.device is not None else jnp.asarray(x)

  def _run(self, fn, x: np.ndarray) -> list[np.ndarray]:
    """Applies fn to chunks of x along axis 0 (padded to a bucket size); host results."""
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), self.batch_size):
      chunk = x[i:i + self.batch_size]
      n, size = len(chunk), _bucket(len(chunk), self.batch_size)
      if size > n:
        chunk = np.concatenate([chunk, np.zeros((size - n,) + chunk.shape[1:], chunk.dtype)])
      res = fn(self.graphdef, self.params, self._put(chunk))
      res = res if isinstance(res, tuple) else (res,)
      outs.append([np.asarray(r)[:n] for r in res])
    return [np.concatenate(parts) for parts in zip(*outs)]

  def _embed_images(self, frames: Any) -> tuple[np.ndarray, np.ndarray]:
    x = self._prepare(frames)
    if not len(x):
      d = self.config["model"]["embed_dim"]
      return np.zeros((0, d), np.float32), np.zeros((0, len(self.measurements)), np.float32)
    emb, meas = self._run(_image_fn, x)
    return emb.astype(np.float32), meas.astype(np.float32)

  def encode_images(self, frames: Any) -> np.ndarray:
    """frames (see `prepare_frames`) -> [N, d] L2-normalised image embeddings (float32)."""
    return self._embed_images(frames)[0]

  def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
    """texts -> [N, d] L2-normalised text embeddings (float32)."""
    if self.tokenizer is None:
      raise ValueError(f"{self.path} has no tokenizer: pass load_pretrained(..., tokenizer=DIR).")
    tokens = np.asarray(self.tokenizer.encode_batch(list(texts), self.max_text_len), np.int32)
    if not len(tokens):
      return np.zeros((0, self.config["model"]["embed_dim"]), np.float32)
    return self._run(_text_fn, tokens)[0].astype(np.float32)

  # -- zero-shot --
  def _group_embeddings(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
    """Each group of phrasings -> the renormalised mean of its embeddings: [len(groups), d]."""
    return scoring.average_prompts(self.encode_texts([t for g in groups for t in g]),
                                   [len(g) for g in groups])

  def prompt_embeddings(self) -> dict[str, np.ndarray]:
    """views [V, d], label_pos [K, d], label_neg [K, d] (computed once, then cached)."""
    if self._prompt_emb is None:
      for name, groups in (("view", self.view_prompts),):
        empty = [k for k, g in groups.items() if not g]
        if empty:
          raise ValueError(f"No {name} prompts for {empty}.")
      empty = [l for l, p in self.label_prompts.items() if not p["positive"] or not p["negative"]]
      if empty:
        raise ValueError(f"Labels {empty} need both positive and negative prompts.")
      k = len(self.labels)
      pooled = self._group_embeddings(
          [self.view_prompts[v] for v in self.views]
          + [self.label_prompts[l]["positive"] for l in self.labels]
          + [self.label_prompts[l]["negative"] for l in self.labels])
      v = len(self.views)
      self._prompt_emb = dict(views=pooled[:v], label_pos=pooled[v:v + k],
                              label_neg=pooled[v + k:])
    return self._prompt_emb

  def set_prompts(self, view_prompts: Mapping[str, Sequence[str]] | None = None,
                  label_prompts: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> None:
    """Replaces the prompt sets (all known views / all labels must be given)."""
    if view_prompts is not None:
      missing = [v for v in self.views if v not in view_prompts]
      if missing:
        raise ValueError(f"set_prompts: no view prompts for {missing}.")
      self.view_prompts = {v: list(view_prompts[v]) for v in self.views}
    if label_prompts is not None:
      missing = [l for l in self.labels if l not in label_prompts]
      if missing:
        raise ValueError(f"set_prompts: no label prompts for {missing}.")
      self.label_prompts = {l: {"positive": list(label_prompts[l]["positive"]),
                                "negative": list(label_prompts[l]["negative"])}
                            for l in self.labels}
    self._prompt_emb = None

  def classify_views(self, frames: Any) -> dict[str, Any]:
    """Zero-shot view probabilities.

    p(view v | image) = softmax_v(s * cos(image, prompt_v)), s = exp(logit_scale), prompt_v
    the renormalised mean of view v's prompt embeddings. Returns views (names), probs
    [N, V], predicted (one name per image) and prompts (the sets used).
    """
    return self.views_from_embeddings(self.encode_images(frames))

  def views_from_embeddings(self, image_emb: np.ndarray) -> dict[str, Any]:
    """`classify_views` from image embeddings [N, d] (encode once, classify twice)."""
    probs = _softmax(self.logit_scale * (image_emb @ self.prompt_embeddings()["views"].T))
    return dict(views=list(self.views), probs=probs,
                predicted=[self.views[i] for i in probs.argmax(1)] if len(probs) else [],
                prompts=self.view_prompts)

  def classify_findings(self, frames: Any) -> dict[str, Any]:
    """Zero-shot probability that each finding is present.

    p(label k present) = softmax([s * cos(image, pos_k), s * cos(image, neg_k)])[0]
                       = sigmoid(s * (cos(image, pos_k) - cos(image, neg_k))),
    with pos_k / neg_k the renormalised means of the label's positive ("... is reduced") and
    negative ("... is normal") prompts and s = exp(logit_scale). Returns labels, probs
    [N, K], prompts (the sets used) and label_views (the views that can show each finding;
    a probability from an image of another view carries no information).
    """
    return self.findings_from_embeddings(self.encode_images(frames))

  def findings_from_embeddings(self, image_emb: np.ndarray) -> dict[str, Any]:
    """`classify_findings` from image embeddings [N, d]."""
    pe, emb = self.prompt_embeddings(), image_emb
    diff = scoring.finding_scores(emb, pe["label_pos"], pe["label_neg"])
    probs = 1.0 / (1.0 + np.exp(-self.logit_scale * diff))
    return dict(labels=list(self.labels), probs=probs.astype(np.float32),
                prompts=self.label_prompts, label_views=self.label_views)

  def predict_measurements(self, frames: Any) -> dict[str, Any]:
    """The measurement head de-normalised with the training stats: values [N, M] in units
    (names / units in `measurements` / `units`). Only a view's own measurements mean anything."""
    if not self.config.get("measurement_head", True):
      raise ValueError(f"{self.path} is not an EchoVLM model: it has no measurement head.")
    meas = self._embed_images(frames)[1]
    return dict(measurements=list(self.measurements), units=self.meas_units,
                values=meas * self.meas_std + self.meas_mean)


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------
def build_model(config: Mapping[str, Any]) -> nnx.Module:
  """An abstract (shape-only) DualEncoder from an artifact config."""
  from echovlm_jax.models import factory
  model_config = ml_collections.ConfigDict(dict(config["model"]))
  return nnx.eval_shape(factory.dual_encoder(model_config, vocab_size=int(config["vocab_size"]),
                                             num_measurements=int(config["num_measurements"])))


def restore_params(path: str, config: Mapping[str, Any], device: jax.Device | None = None
                   ) -> nnx.Module:
  """The artifact's params on `device` (default: the first device) -> a concrete model."""
  import orbax.checkpoint as ocp
  graphdef, params = nnx.split(build_model(config), nnx.Param)
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


def _load_tokenizer(path: str, config: Mapping[str, Any]):
  """The artifact's tokenizer, checked against the model's vocabulary."""
  kind = artifact_tokenizer.kind_of(config)
  where = TOKENIZER_FILE if kind == "sentencepiece" else artifact_tokenizer.CHECKPOINT_DIR + "/"
  try:
    tokenizer = artifact_tokenizer.load(path, config)
  except ModuleNotFoundError:
    raise  # a checkpoint tokenizer without transformers: the error names the install command
  except Exception as e:  # noqa: BLE001 - sentencepiece / transformers raise many types
    raise ArtifactError(path, f"{where} is not a usable {kind} tokenizer "
                              f"({type(e).__name__}: {e}).") from None
  vocab = int(config["vocab_size"])
  # A checkpoint's embedding table may have more rows than its tokenizer has ids.
  if tokenizer.vocab_size != vocab and not (kind == "checkpoint" and tokenizer.vocab_size < vocab):
    raise ArtifactError(path, f"{where} has {tokenizer.vocab_size} ids but {CONFIG_FILE} says "
                              f"vocab_size={vocab}.")
  return tokenizer


def load_pretrained(path: str | os.PathLike, *, batch_size: int = 32,
                    device: jax.Device | None = None, check_hashes: bool = True,
                    tokenizer: str | None = None, act: str | None = None) -> Pretrained:
  """Loads an artifact written by `python -m echovlm_jax.export`, or an outside checkpoint:
  a Hugging Face CLIP / SigLIP directory, an open_clip state dict (.safetensors / .bin / .pt)
  or a big_vision .npz (tokenizer: its tokenizer when not in path; act: see
  interop/external_model.load).

  batch_size: images / texts per jitted call (larger inputs are chunked). device: where the
  parameters live (default: jax's first device, an accelerator when there is one).
  check_hashes: verify every file's sha256 against MANIFEST.json (sizes are always checked).
  Raises ArtifactError (naming the path and the problem) for a missing, incomplete, corrupt
  or other-format-version artifact.
  """
  path = os.fspath(path)
  from echovlm_jax.interop import weights  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(path, MANIFEST_FILE)) and (
      os.path.isfile(path) or weights.is_hf_dir(path)):
    from echovlm_jax.interop import external_model  # pylint: disable=g-import-not-at-top
    parts = external_model.load(path, tokenizer=tokenizer, act=act, device=device)
    return Pretrained(path, parts.config, parts.model, parts.tokenizer, parts.stats,
                      parts.prompts, batch_size=batch_size, device=device, prepare=parts.prepare)
  config = verify_artifact(path, check_hashes=check_hashes)
  tokenizer = _load_tokenizer(path, config)
  try:
    with open(os.path.join(path, STATS_FILE)) as f:
      stats = json.load(f)
    with open(os.path.join(path, PROMPTS_FILE)) as f:
      prompts = json.load(f)
    missing = [m for m in config["measurements"] if m not in stats["mean"] or m not in stats["std"]]
    missing += [v for v in config["views"] if v not in prompts["views"]]
    missing += [l for l in config["labels"] if l not in prompts["labels"]]
  except (ValueError, KeyError, TypeError) as e:
    raise ArtifactError(path, f"{STATS_FILE} / {PROMPTS_FILE} malformed "
                              f"({type(e).__name__}: {e}).") from None
  if missing:
    raise ArtifactError(path, f"{STATS_FILE} / {PROMPTS_FILE} lack entries for {missing}.")
  model = restore_params(path, config, device)
  return Pretrained(path, config, model, tokenizer, stats, prompts, batch_size=batch_size,
                    device=device)
