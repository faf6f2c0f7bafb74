r"""What one epoch of a labelled-share run costs to read: a pass over the train split keeping
`--fraction` of the patients' frames with truth, decoding frames and masks before the filter
(as before) or only for the kept examples (EchogroundData.read, the input pipeline's way).

  .venv/bin/python benchmarks/kept_subset_read.py --fraction 0.01 \
      --dataset echoground/synthetic_p2000_s0_i128_t2_v1024_ed_es --data_dir data/tfds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="echoground/synthetic_p2000_s0_i128_t2_v1024_ed_es")
  p.add_argument("--data_dir", default="data/tfds")
  p.add_argument("--fraction", type=float, default=0.01)
  p.add_argument("--repeats", type=int, default=3)
  a = p.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from echovlm_jax.data import labelled  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(a.dataset, data_dir=a.data_dir)
  keep = lambda ex: ex["dense_truth"] & labelled.in_patient_share(ex["patient_id"], a.fraction)  # noqa: E731
  features = builder.info.features
  heavy = ("frames", "masks")
  read = tfds.ReadConfig(try_autocache=False)

  def decode_first():
    return builder.as_dataset(split="train", read_config=read).filter(keep)

  def decode_kept():
    ds = builder.as_dataset(split="train", read_config=read,
                            decoders={k: tfds.decode.SkipDecoding() for k in heavy}).filter(keep)
    return ds.map(lambda ex: {**ex, **{k: features[k].decode_example(ex[k]) for k in heavy}},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  n_split = builder.info.splits["train"].num_examples
  for name, make in (("decode all, then filter", decode_first), ("filter, then decode", decode_kept)):
    times, n = [], 0
    for _ in range(a.repeats):
      t0 = time.perf_counter()
      n = sum(1 for _ in make())
      times.append(time.perf_counter() - t0)
    print(f"{name}: {n} of {n_split} examples kept, median {sorted(times)[len(times) // 2]:.2f} s "
          f"per pass ({a.repeats} passes)", flush=True)


if __name__ == "__main__":
  main()
