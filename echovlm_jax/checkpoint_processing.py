"""What an outside checkpoint's processor does to images and texts, for our encoders.

Images: `ImageSpec` from preprocessor_config.json (or the layout's published defaults) and
`prepare_images` (uint8 gray or RGB frames -> [N, T, S, S, 3] normalised float32), following
transformers' PIL image processors: resize (shortest edge, or to a fixed size) with the given
PIL filter on uint8, centre crop, rescale to [0, 1], normalise by mean / std. A gray frame is
resized as one PIL "L" image: PIL's filters work per channel, so this equals resizing the gray
frame repeated in R, G and B.
Texts: `CheckpointTokenizer`, the checkpoint's own tokenizer class loaded by transformers
(CLIP's byte-level BPE, SigLIP's sentencepiece), padded to the full length as the model
expects, with the interface of data/tokenizer.Tokenizer (so the input pipeline can use it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any, Sequence

import numpy as np

from echovlm_jax import checkpoint_deps

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PIL_BILINEAR, PIL_BICUBIC = 2, 3


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """resize_to: (H, W) fixed size, or shortest_edge: int; crop: (H, W) or None."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  resample: int
  resize_to: tuple[int, int] | None = None
  shortest_edge: int | None = None
  crop: tuple[int, int] | None = None
  rescale: float = 1 / 255

  @property
  def size(self) -> int:
    return (self.crop or self.resize_to or (self.shortest_edge,) * 2)[0]


def default_spec(layout: str, res: int) -> ImageSpec:
  """open_clip / OpenAI: bicubic shortest edge + centre crop, OpenAI mean / std;
  big_vision SigLIP: bilinear to the square size, mean = std = 0.5 (inputs in [-1, 1])."""
  if layout in ("open_clip", "hf_clip"):
    return ImageSpec(OPENAI_MEAN, OPENAI_STD, PIL_BICUBIC, shortest_edge=res, crop=(res, res))
  return ImageSpec((0.5,) * 3, (0.5,) * 3, PIL_BILINEAR, resize_to=(res, res))


def read_spec(path: str, layout: str, res: int) -> ImageSpec:
  """The spec in `path`/preprocessor_config.json, else the layout's default."""
  file = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else ""
  if not file or not os.path.isfile(file):
    return default_spec(layout, res)
  with open(file) as f:
    c = json.load(f)
  size = c.get("size", {})
  if isinstance(size, int):
    size = {"shortest_edge": size}
  resize_to = (size["height"], size["width"]) if "height" in size else None
  crop = c.get("crop_size") if c.get("do_center_crop", False) else None
  if isinstance(crop, int):
    crop = {"height": crop, "width": crop}
  default = default_spec(layout, res)
  return ImageSpec(
      mean=tuple(c.get("image_mean", default.mean)), std=tuple(c.get("image_std", default.std)),
      resample=int(c.get("resample", default.resample)), resize_to=resize_to,
      shortest_edge=size.get("shortest_edge") if resize_to is None else None,
      crop=(crop["height"], crop["width"]) if crop else None,
      rescale=float(c.get("rescale_factor", 1 / 255)))


def _resize(img: np.ndarray, spec: ImageSpec) -> np.ndarray:
  """One uint8 [H, W] or [H, W, 3] image resized and cropped as the processor does."""
  from PIL import Image  # noqa: PLC0415
  h, w = img.shape[:2]
  if spec.resize_to is not None:
    nh, nw = spec.resize_to
  else:
    s = spec.shortest_edge
    nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
  if (nh, nw) != (h, w):
    img = np.asarray(Image.fromarray(img).resize((nw, nh), resample=spec.resample))
  if spec.crop is not None:
    ch, cw = spec.crop
    top, left = (img.shape[0] - ch) // 2, (img.shape[1] - cw) // 2
    img = img[top:top + ch, left:left + cw]
  return img


def prepare_images(frames: Any, spec: ImageSpec) -> np.ndarray:
  """uint8 frames [N, H, W], [N, H, W, 1|3] or [N, T, H, W] -> float32 [N, T, S, S, 3]."""
  x = np.asarray(frames)
  if x.dtype != np.uint8:
    raise ValueError(f"frames dtype {x.dtype}: a CLIP / SigLIP checkpoint's processor takes "
                     "uint8 pixels (0..255).")
  if x.ndim == 4 and x.shape[-1] in (1, 3):
    x = x[:, None]                                     # [N, 1, H, W, C]
  elif x.ndim == 3:
    x = x[:, None, ..., None]                          # [N, 1, H, W, 1]
  elif x.ndim == 4:
    x = x[..., None]                                   # [N, T, H, W, 1]
  else:
    raise ValueError(f"frames of shape {x.shape}: expected [N, H, W], [N, H, W, 1|3] or "
                     "[N, T, H, W].")
  n, t = x.shape[:2]
  out = np.empty((n, t, spec.size, spec.size, 3), np.float32)
  for i in range(n):
    for j in range(t):
      img = x[i, j, ..., 0] if x.shape[-1] == 1 else x[i, j]
      img = _resize(img, spec).astype(np.float32) * spec.rescale
      out[i, j] = img[..., None] if img.ndim == 2 else img
  return (out - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


class CheckpointTokenizer:
  """A checkpoint's tokenizer with data/tokenizer.Tokenizer's interface: `vocab_size`,
  `encode` (ids without special tokens), `encode_batch(texts, max_len)` (int32 [N, max_len],
  special tokens added, truncated, padded to max_len), `tf_encode_batch`, `decode`.

  Safe to call from several threads (tf.data's parallel map does): every call into the
  transformers tokenizer holds one lock. A fast tokenizer keeps padding and truncation on its
  shared Rust backend and each call re-sets them, so an `encode` (no truncation) racing an
  `encode_batch` (max_length) gave ragged or untruncated ids (34 of 600 batches, 2 + 2
  threads). A lock, not our own padding and truncation: it covers whatever state a tokenizer
  class or transformers version keeps between calls. Its price is serialised tokenizing:
  the pipeline tokenizes once per batch, ~4 ms for 64 captions on one CPU core."""

  def __init__(self, tok: Any, source: str):
    self._tok, self.source = tok, source
    self._lock = threading.Lock()

  @classmethod
  def load(cls, path: str) -> "CheckpointTokenizer":
    """An HF model / tokenizer directory, or a sentencepiece .model file (SigLIP's)."""
    transformers = checkpoint_deps.require("transformers", f"the checkpoint tokenizer {path}")
    if os.path.isfile(path) and path.endswith(".model"):
      tok = transformers.SiglipTokenizer(vocab_file=path)
    else:
      tok = transformers.AutoTokenizer.from_pretrained(path)
    return cls(tok, path)

  def save(self, directory: str) -> None:
    """The tokenizer's files (transformers' save_pretrained) in directory, which `load` reads."""
    with self._lock:
      self._tok.save_pretrained(directory)

  @property
  def vocab_size(self) -> int:
    return len(self._tok)

  @property
  def num_special_tokens(self) -> int:
    """Ids encode_batch adds to a text (CLIP: start and end of text; SigLIP: end)."""
    return int(self._tok.num_special_tokens_to_add())

  def encode(self, text: str) -> list[int]:
    # verbose=False: lengths beyond the model's are expected here (caption fitting measures them).
    with self._lock:
      return list(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

  def decode(self, ids: Sequence[int]) -> str:
    with self._lock:
      return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

  def encode_batch(self, texts: Sequence[str | bytes], max_len: int) -> np.ndarray:
    texts = [t.decode("utf-8") if isinstance(t, (bytes, np.bytes_)) else str(t) for t in texts]
    if not texts:
      return np.zeros((0, max_len), np.int32)
    with self._lock:
      ids = self._tok(texts, padding="max_length", truncation=True, max_length=max_len)
    return np.asarray(ids["input_ids"], np.int32)

  def tf_encode_batch(self, texts, max_len: int):
    """Graph version for tf.data: string [N] -> int32 [N, max_len]."""
    import tensorflow as tf  # noqa: PLC0415
    ids = tf.numpy_function(lambda t: self.encode_batch(list(t), max_len), [texts], tf.int32,
                            stateful=False)
    return tf.ensure_shape(ids, [None, max_len])
