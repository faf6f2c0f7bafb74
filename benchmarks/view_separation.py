r"""How far apart two views sit in an exported model's embedding space, image side and text
side: the cosine of their zero-shot prompt embeddings, of their test images' centroids, and
how each view's test images split between the two prompts. Tells a zero-shot view confusion
that comes from the images (centroids nearly equal) from one that comes from the prompts.

  .venv/bin/python -m echovlm_jax.tools.export --workdir workdir/demo --out /tmp/art
  .venv/bin/python benchmarks/view_separation.py --artifact /tmp/art --views a2c,a3c,a4c

Reads the test split of the artifact's dataset (`--data_dir`, default data/tfds).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--artifact", required=True)
  p.add_argument("--data_dir", default="data/tfds")
  p.add_argument("--builder", default="echoground/synthetic")
  p.add_argument("--split", default="test")
  p.add_argument("--views", default="a2c,a3c,a4c", help="the first two are compared image by image")
  args = p.parse_args(argv)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import echovlm_jax  # pylint: disable=g-import-not-at-top
  from echovlm_jax.echo import prompts  # pylint: disable=g-import-not-at-top

  views = [v.strip() for v in args.views.split(",") if v.strip()]
  model = echovlm_jax.load_pretrained(args.artifact)
  builder = tfds.builder(args.builder, data_dir=args.data_dir)
  names = builder.info.features["view"].names
  frames, labels = [], []
  for ex in tfds.as_numpy(builder.as_dataset(split=args.split)):
    if names[ex["view"]] in views:
      frames.append(ex["frames"][..., 0])        # [T, H, W]
      labels.append(names[ex["view"]])
  labels = np.array(labels)
  img = _unit(model.encode_images(np.stack(frames)))                       # [N, d]
  prompt = {v: _unit(_unit(model.encode_texts(prompts.VIEW_PROMPTS[v])).mean(0)) for v in views}
  centroid = {v: _unit(img[labels == v].mean(0)) for v in views}
  print("| pair | prompt cos | image centroid cos |\n|---|---|---|")
  for a, b in itertools.combinations(views, 2):
    print(f"| {a}-{b} | {prompt[a] @ prompt[b]:.3f} | {centroid[a] @ centroid[b]:.3f} |")
  a, b = views[:2]
  print(f"\n| test images | n | sim({a} prompt) - sim({b} prompt), mean ± std | share nearer {a} |\n"
        "|---|---|---|---|")
  for v in (a, b):
    d = img[labels == v] @ (prompt[a] - prompt[b])
    print(f"| {v} | {d.size} | {d.mean():+.4f} ± {d.std():.4f} | {(d > 0).mean():.3f} |")


if __name__ == "__main__":
  main()
