r"""A CLIP-shaped random initialisation, the label-efficiency benchmark's control: a Hugging
Face CLIP directory whose vision tower has the shape of config.model.image (`ti` at 128 px by
default) and random weights (transformers' own initialisation), with a minimal text tower and
tokenizer so that `config.model_init` reads it as any CLIP. Training from it measures what the
CLIP architecture (quick-GELU blocks, q/k/v biases, a pre-LayerNorm) does without pretraining,
apart from what EchoVLM's pretrained weights do.

  .venv/bin/python benchmarks/clip_shaped_init.py --out workdir/clip_ti_random
  .venv/bin/python -m echovlm_jax.main --config configs/segmentation.py --workdir W \
      --config.model_init=workdir/clip_ti_random

Needs torch and transformers (requirements-test.txt). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _tokenizer_files(d: str) -> None:
  """A byte-level BPE vocabulary of single bytes and CLIP's start / end tokens: enough for the
  tokenizer to load (the text tower is dropped by the dense tasks' model_init_skip)."""
  from tokenizers import pre_tokenizers  # pylint: disable=g-import-not-at-top
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = alphabet + [a + "</w>" for a in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
  with open(os.path.join(d, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(vocab)}, f)
  with open(os.path.join(d, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")


def write(out: str, size: str = "ti", res: int = 128, seed: int = 0) -> str:
  """The directory `out` (returned): CLIPModel.save_pretrained with the vision tower of
  configs/echovlm.py's `size` at `res` px, random weights from `seed`."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from configs import echovlm  # pylint: disable=g-import-not-at-top
  img = echovlm.get_config(f"size={size},res={res}").model.image
  os.makedirs(out, exist_ok=True)
  _tokenizer_files(out)
  tok = transformers.CLIPTokenizer.from_pretrained(out, model_max_length=16)
  bos, eos = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
  torch.manual_seed(seed)
  config = transformers.CLIPConfig(
      vision_config=dict(hidden_size=img.width, num_hidden_layers=img.depth,
                         num_attention_heads=img.heads, intermediate_size=img.mlp_dim or img.mlp_ratio * img.width,
                         image_size=res, patch_size=img.patch, num_channels=3),
      text_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                       intermediate_size=128, vocab_size=len(tok), max_position_embeddings=16,
                       bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
      projection_dim=64)
  transformers.CLIPModel(config).eval().save_pretrained(out)
  tok.save_pretrained(out)
  transformers.CLIPImageProcessorPil(size={"shortest_edge": res},
                                     crop_size={"height": res, "width": res}).save_pretrained(out)
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True)
  p.add_argument("--size", default="ti")
  p.add_argument("--res", type=int, default=128)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  print(write(a.out, a.size, a.res, a.seed))


if __name__ == "__main__":
  main()
