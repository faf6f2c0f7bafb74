"""Tiny random-weight Hugging Face CLIP and SigLIP checkpoints written the way users have them:
save_pretrained model + tokenizer files (a byte-level BPE vocabulary and merges for CLIP, a
sentencepiece model trained here for SigLIP) + preprocessor_config.json. Nothing is downloaded.

Every parameter, biases and LayerNorms included, gets random noise so a dropped, transposed or
misplaced array changes the embeddings.
"""

from __future__ import annotations

import json
import os

import numpy as np

SCALE = 0.2  # noise added to every parameter
# Width 128 with 2 heads: open_clip files carry no head count, and open_clip uses width / 64.
WIDTH, DEPTH, HEADS, MLP, RES, PATCH, TEXT_LEN, EMBED = 128, 2, 2, 256, 32, 8, 16, 16
TEXTS = ["Parasternal long axis view. LVEF 45 %, reduced.", "apical four chamber",
         "The aortic valve opens normally; no stenosis!", ""]
CORPUS = [
    "parasternal long axis view of the heart", "apical four chamber view", "lvef is reduced",
    "the aortic valve opens normally", "no stenosis and no effusion", "left ventricle is dilated",
    "right ventricular function is normal", "mitral valve", "subcostal view", "short axis",
] * 20


def _randomize(model, seed: int) -> None:
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name == "logit_scale":
        p.fill_(float(np.log(10.0)))
      elif name == "logit_bias":
        p.fill_(-3.0)
      else:
        p.add_(SCALE * torch.randn(p.shape, generator=g))


def _clip_tokenizer_files(d: str) -> None:
  """A byte-level BPE vocabulary: every byte alone and word-final, a few merges, then the
  start / end of text tokens (the last ids, as in OpenAI's vocabulary)."""
  from tokenizers import pre_tokenizers
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = alphabet + [a + "</w>" for a in alphabet]
  merges = [("a", "x"), ("ax", "i"), ("axi", "s</w>"), ("v", "i"), ("vi", "e"), ("vie", "w</w>"),
            ("t", "h"), ("th", "e</w>"), ("e", "f</w>"), ("l", "v"), ("lv", "ef</w>")]
  vocab += ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
  with open(os.path.join(d, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(vocab)}, f)
  with open(os.path.join(d, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def write_clip_tokenizer(d: str):
  """A tiny HF CLIP tokenizer directory at d (no model, no torch); returns the tokenizer."""
  import transformers
  os.makedirs(d, exist_ok=True)
  _clip_tokenizer_files(d)
  tok = transformers.CLIPTokenizer.from_pretrained(d, model_max_length=TEXT_LEN)
  tok.save_pretrained(d)
  return tok


def write_clip(d: str, seed: int = 0) -> str:
  """A tiny HF CLIP directory at d (returned)."""
  import transformers
  tok = write_clip_tokenizer(d)
  bos, eos = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
  tower = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
               intermediate_size=MLP)
  config = transformers.CLIPConfig(
      text_config=dict(tower, vocab_size=len(tok), max_position_embeddings=TEXT_LEN,
                       bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
      vision_config=dict(tower, image_size=RES, patch_size=PATCH), projection_dim=EMBED)
  model = transformers.CLIPModel(config).eval()
  _randomize(model, seed)
  model.save_pretrained(d)
  tok.save_pretrained(d)
  transformers.CLIPImageProcessorPil(size={"shortest_edge": RES},
                                     crop_size={"height": RES, "width": RES}).save_pretrained(d)
  return d


def write_siglip(d: str, seed: int = 0, image_size: int = RES) -> str:
  """A tiny HF SigLIP directory at d (returned); an image_size the patch does not divide
  leaves pixels its convolution never reads (as So400m/14 at 384 px)."""
  import io
  import sentencepiece as spm
  import transformers
  os.makedirs(d, exist_ok=True)
  proto = io.BytesIO()
  # SigLIP's sentencepiece: pad 0, eos 1, unk 2, no bos (as big_vision's c4_en model).
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CORPUS), model_writer=proto, vocab_size=64, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
      unk_piece="<unk>", hard_vocab_limit=False, num_threads=1, minloglevel=2)
  spm_path = os.path.join(d, "spiece.model")
  with open(spm_path, "wb") as f:
    f.write(proto.getvalue())
  tok = transformers.SiglipTokenizer(vocab_file=spm_path, model_max_length=TEXT_LEN)
  tower = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
               intermediate_size=MLP)
  config = transformers.SiglipConfig(
      text_config=dict(tower, vocab_size=len(tok), max_position_embeddings=TEXT_LEN,
                       projection_size=WIDTH),
      vision_config=dict(tower, image_size=image_size, patch_size=PATCH))
  model = transformers.SiglipModel(config).eval()
  _randomize(model, seed)
  model.save_pretrained(d)
  tok.save_pretrained(d)
  transformers.SiglipImageProcessorPil(
      size={"height": image_size, "width": image_size}).save_pretrained(d)
  return d


def frames(n: int = 3, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
  """uint8 [n, h, w] gray frames: smooth blobs plus noise (a resize changes them)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  out = []
  for _ in range(n):
    cy, cx = rng.uniform(0.2, 0.8, 2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(0.01, 0.1))
    img = rng.uniform(50, 255) * blob + rng.uniform(0, rng.uniform(20, 255), (h, w))
    out.append(img)
  return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def hf_embeddings(d: str, kind: str, images: np.ndarray, texts: list[str]):
  """transformers' own (image [N, d], text [M, d]) L2-normalised embeddings, through its
  image processor and tokenizer (texts padded to the full length; SigLIP's text tower was
  trained without a padding mask, so none is passed)."""
  import torch
  import transformers
  model_cls = transformers.CLIPModel if kind == "clip" else transformers.SiglipModel
  proc_cls = (transformers.CLIPImageProcessorPil if kind == "clip"
              else transformers.SiglipImageProcessorPil)
  model = model_cls.from_pretrained(d).eval()
  proc = proc_cls.from_pretrained(d)
  tok = transformers.AutoTokenizer.from_pretrained(d)
  rgb = [np.repeat(img[..., None], 3, axis=-1) for img in images]
  pixels = torch.tensor(proc(images=rgb, return_tensors="np")["pixel_values"])
  enc = tok(texts, padding="max_length", max_length=TEXT_LEN, truncation=True,
            return_tensors="pt")
  kwargs = {"attention_mask": enc["attention_mask"]} if kind == "clip" else {}
  with torch.no_grad():
    img = model.get_image_features(pixel_values=pixels)
    txt = model.get_text_features(input_ids=enc["input_ids"], **kwargs)
  img = getattr(img, "pooler_output", img)
  txt = getattr(txt, "pooler_output", txt)
  norm = lambda x: (x / x.norm(dim=-1, keepdim=True)).numpy()
  return norm(img), norm(txt), enc["input_ids"].numpy()
