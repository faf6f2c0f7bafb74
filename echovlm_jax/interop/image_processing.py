"""What an outside checkpoint's processor does to images, for our encoders.

`ImageSpec` from preprocessor_config.json (or the layout's published defaults) and
`prepare_images` (uint8 gray or RGB frames -> [N, T, S, S, 3] normalised float32), following
transformers' PIL image processors: resize (shortest edge, or to a fixed size) with the given
PIL filter on uint8, centre crop, rescale to [0, 1], normalise by mean / std. A gray frame is
resized as one PIL "L" image: PIL's filters work per channel, so this equals resizing the gray
frame repeated in R, G and B. The texts' side is checkpoint_tokenizer.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

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
