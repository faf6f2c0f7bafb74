"""`Pretrained`: an EchoVLM dual encoder ready for inference (jitted image / text encoders,
zero-shot view and finding classifiers, the measurement head). `load_pretrained` (load.py)
builds it from an artifact or an outside checkpoint; it needs no training code, no tf.data
and no dataset.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import special

from echovlm_jax import scoring
from echovlm_jax.data import clip_windows
from echovlm_jax.inference import artifact
from echovlm_jax.inference import frames as frames_lib

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
    self._prepare = prepare or (lambda frames: frames_lib.prepare_frames(frames, self.res))
    self.graphdef, self.params = nnx.split(model, nnx.Param)
    self.batch_size, self.device = int(batch_size), device
    self.res = int(config["input"]["res"])
    self.num_frames = int(config["input"]["num_frames"])
    # A video artifact reads clips at its frame rate in windows (data/clip_windows.py); older
    # artifacts, and frame models, read every frame given.
    self.clip_fps = float(config["input"].get("clip_fps", 0.0))
    self.window = clip_windows.resolve(self.num_frames, int(config["input"].get("window", 0)))
    self.eval_windows = int(config["input"].get("eval_windows", 1))
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
    x = self._prepare(frames)                                   # [N, T, res, res, C]
    if x.ndim == 5 and x.shape[1] > self.window and self.num_frames > 1:
      # Longer clips than a video model reads at once: its evaluation windows, averaged.
      x = clip_windows.take(x, self.window, self.eval_windows)  # [N, K, window, res, res, C]
    if not len(x):
      d = self.config["model"]["embed_dim"]
      return np.zeros((0, d), np.float32), np.zeros((0, len(self.measurements)), np.float32)
    emb, meas = self._run(_image_fn, x)
    return emb.astype(np.float32), meas.astype(np.float32)

  def encode_images(self, frames: Any) -> np.ndarray:
    """frames (see frames.prepare_frames) -> [N, d] L2-normalised image embeddings (float32)."""
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
    probs = special.softmax(self.logit_scale * (image_emb @ self.prompt_embeddings()["views"].T),
                            axis=-1)
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
    probs = special.expit(self.logit_scale * diff)
    return dict(labels=list(self.labels), probs=probs.astype(np.float32),
                prompts=self.label_prompts, label_views=self.label_views)

  def encode_studies(self, frames: Any, study_ids: Sequence[Any]) -> dict[str, Any]:
    """Study embeddings from the images (clips) of several studies: attention pooling with the
    per-view weights the run fitted (evaluation/study_pooling.py; the artifact's
    study_pooling.npz), or the plain mean when the artifact has none. Each image's view is the
    model's own zero-shot view. frames: as `encode_images`; study_ids [N] (any hashable ids).
    Returns studies [S] (sorted), study_emb [S, d] (for retrieval), finding_emb [K, S, d] (one
    pooling per finding) and pooling ("attention" or "mean")."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,reimported
    from echovlm_jax.evaluation import study_pooling  # pylint: disable=g-import-not-at-top
    emb = self.encode_images(frames)
    studies, seg = study_pooling.study_index(np.asarray(study_ids))
    views = study_pooling.zero_shot_view(emb, self.prompt_embeddings()["views"])
    path = os.path.join(self.path, artifact.STUDY_POOLING_FILE)
    if os.path.exists(path):
      with np.load(path) as f:
        params, kind = {k: jnp.asarray(f[k]) for k in ("w", "q")}, "attention"
    else:
      params, kind = study_pooling.init_params(emb.shape[1]), "mean"
    pooled = np.asarray(study_pooling.pool(params, jnp.asarray(emb), jnp.asarray(views),
                                           jnp.asarray(seg), len(studies)))
    return dict(studies=studies, study_emb=pooled[-1], finding_emb=pooled[:-1], pooling=kind)

  def classify_study_findings(self, frames: Any, study_ids: Sequence[Any]) -> dict[str, Any]:
    """`classify_findings` per study: each finding scored on its own pooling of the study's
    images (`encode_studies`). Returns studies [S], labels, probs [S, K], pooling."""
    out = self.encode_studies(frames, study_ids)
    pe = self.prompt_embeddings()
    diff = np.stack([scoring.finding_scores(out["finding_emb"][k], pe["label_pos"][k:k + 1],
                                            pe["label_neg"][k:k + 1])[:, 0]
                     for k in range(len(self.labels))], axis=1)
    return dict(studies=out["studies"], labels=list(self.labels), pooling=out["pooling"],
                probs=special.expit(self.logit_scale * diff).astype(np.float32))

  def predict_measurements(self, frames: Any) -> dict[str, Any]:
    """The measurement head de-normalised with the training stats: values [N, M] in units
    (names / units in `measurements` / `units`). Only a view's own measurements mean anything."""
    if not self.config.get("measurement_head", True):
      raise ValueError(f"{self.path} is not an EchoVLM model: it has no measurement head.")
    meas = self._embed_images(frames)[1]
    return dict(measurements=list(self.measurements), units=self.meas_units,
                values=meas * self.meas_std + self.meas_mean)
