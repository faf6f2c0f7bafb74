"""The PyTorch reference users would pick instead of this codebase: the same dual encoder as
`echovlm_jax.models` (built from the same config.model), written the way open_clip writes its
towers, with the plain CLIP loss and AdamW. Times one eager train step; not imported by the library.

open_clip itself is not used: it imports torchvision, and PyPI's torchvision does not load
beside the torch 2.13.0 CPU wheel ("operator torchvision::nms does not exist"). The blocks
below follow open_clip's `ResidualAttentionBlock` (nn.MultiheadAttention, batch_first,
need_weights=False, which calls F.scaled_dot_product_attention) and `ClipLoss`.

  .venv/bin/python benchmarks/torch_reference.py --sizes ti,s --batch 64
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD_ID, EOS_ID = 0, 1


# ----------------------------------------------------------------------------
# Model (mirrors echovlm_jax.models: pre-LN blocks, LN eps 1e-6, tanh GELU, MAP pooling,
# EOS pooling of a non-causal text tower with padding masked out of the keys)
# ----------------------------------------------------------------------------
class Block(nn.Module):
  """open_clip's ResidualAttentionBlock, batch-first."""

  def __init__(self, width: int, heads: int, mlp_ratio: int):
    super().__init__()
    self.ln_1 = nn.LayerNorm(width, eps=1e-6)
    self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
    self.ln_2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(approximate="tanh"),
                             nn.Linear(width * mlp_ratio, width))

  def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, N, w]; key_padding_mask [B, N] True = ignore."""
    h = self.ln_1(x)
    x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
    return x + self.mlp(self.ln_2(x))


class MAPHead(nn.Module):
  """big_vision's multihead attention pooling, as in echovlm_jax.models.vit.MAPHead."""

  def __init__(self, width: int, heads: int, mlp_ratio: int):
    super().__init__()
    self.probe = nn.Parameter(torch.randn(1, 1, width) * 0.02)
    self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
    self.ln = nn.LayerNorm(width, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(width, width * mlp_ratio), nn.GELU(approximate="tanh"),
                             nn.Linear(width * mlp_ratio, width))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """x [B, N, w] -> [B, w]."""
    probe = self.probe.expand(x.shape[0], -1, -1)
    y = self.attn(probe, x, x, need_weights=False)[0]
    y = y + self.mlp(self.ln(y))
    return y[:, 0]


class VisionTower(nn.Module):
  """[B, C, H, W] -> [B, width]; patch embedding as a strided conv (open_clip's conv1)."""

  def __init__(self, cfg: Any, res: int):
    super().__init__()
    if cfg.pool not in ("map", "gap"):
      raise ValueError(f"torch_reference: image pool {cfg.pool!r} not mirrored (map | gap).")
    self.pool = cfg.pool
    self.conv1 = nn.Conv2d(cfg.channels, cfg.width, cfg.patch, stride=cfg.patch)
    self.posemb = nn.Parameter(torch.randn(1, (res // cfg.patch) ** 2, cfg.width) * 0.02)
    self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
    self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
    self.head = MAPHead(cfg.width, cfg.heads, cfg.mlp_ratio) if cfg.pool == "map" else None

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.conv1(x).flatten(2).transpose(1, 2) + self.posemb
    for block in self.blocks:
      x = block(x)
    x = self.norm(x)
    return self.head(x) if self.head is not None else x.mean(1)


class TextTower(nn.Module):
  """tokens [B, L] -> [B, width], pooled at the first EOS."""

  def __init__(self, cfg: Any, vocab_size: int, max_len: int):
    super().__init__()
    if cfg.pool != "eos" or cfg.causal:
      raise ValueError("torch_reference mirrors the non-causal, EOS-pooled text tower only.")
    self.token_embedding = nn.Embedding(vocab_size, cfg.width)
    self.posemb = nn.Parameter(torch.randn(1, max_len, cfg.width) * 0.01)
    self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
    self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.token_embedding(tokens) + self.posemb[:, :tokens.shape[1]]
    pad = tokens == PAD_ID
    for block in self.blocks:
      x = block(x, key_padding_mask=pad)
    x = self.norm(x)
    is_eos = tokens == EOS_ID
    last = ((~pad).sum(1) - 1).clamp(min=0)
    idx = torch.where(is_eos.any(1), is_eos.int().argmax(1), last)
    return x[torch.arange(x.shape[0]), idx]


class TorchDualEncoder(nn.Module):
  """Image/text towers + linear projections + L2 norm + learned log temperature."""

  def __init__(self, model_config: Any, *, vocab_size: int, res: int, max_len: int):
    super().__init__()
    cfg = model_config
    self.visual = VisionTower(cfg.image, res)
    self.text = TextTower(cfg.text, vocab_size, max_len)
    self.image_proj = nn.Linear(cfg.image.width, cfg.embed_dim)
    self.text_proj = nn.Linear(cfg.text.width, cfg.embed_dim)
    self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))

  def forward(self, frames: torch.Tensor, tokens: torch.Tensor):
    """frames [B, C, H, W], tokens [B, L] -> (image_emb [B, d], text_emb [B, d], log scale)."""
    image = F.normalize(self.image_proj(self.visual(frames)), dim=-1)
    text = F.normalize(self.text_proj(self.text(tokens)), dim=-1)
    return image, text, self.logit_scale


def clip_loss(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
  """open_clip's ClipLoss on one device: mean of the two cross-entropies over [B, B] logits."""
  logits = log_scale.exp() * image @ text.t()
  labels = torch.arange(image.shape[0])
  return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def make_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
  """AdamW with decay on matrices only, as echovlm_jax.train.optimizer.make_optimizer."""
  decay = [p for p in model.parameters() if p.ndim >= 2]
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  return torch.optim.AdamW([{"params": decay, "weight_decay": config.wd},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=config.lr, betas=(config.b1, config.b2))


# ----------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------
def to_torch_batch(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
  """frames [B, 1, H, W, C] (T = 1) -> [B, C, H, W]; text [B, L] -> int64."""
  frames = batch["frames"]
  if frames.shape[1] != 1:
    raise ValueError("torch_reference: only T = 1 frame is mirrored.")
  x = torch.from_numpy(np.ascontiguousarray(frames[:, 0].transpose(0, 3, 1, 2)))
  return x, torch.from_numpy(batch["text"].astype(np.int64))


def make_step(config: Any, batch: dict[str, np.ndarray]) -> tuple[Callable[[], float], int]:
  """(step, number of parameters): step() runs one eager train step on `batch` and returns the
  loss. Same model, loss, gradient clipping and AdamW as the JAX step with objective=clip (the
  JAX schedule's LR value does not change the cost)."""
  if config.model.dtype != "float32":
    raise ValueError("torch_reference runs float32 only (bfloat16 autocast on CPU is not the "
                     "reference users run).")
  torch.manual_seed(config.seed)
  model = TorchDualEncoder(config.model, vocab_size=config.input.vocab_size, res=config.input.res,
                           max_len=config.input.max_text_len)
  model.train()
  opt = make_optimizer(model, config)
  frames, tokens = to_torch_batch(batch)

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    loss = clip_loss(*model(frames, tokens))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
    opt.step()
    return float(loss.detach())
  return step, sum(p.numel() for p in model.parameters())


def benchmark(config: Any, batch: dict[str, np.ndarray], *, steps: int = 5, warmup: int = 2
              ) -> dict[str, Any]:
  """Times `steps` eager train steps after `warmup`: dict(step_times [s], params, loss)."""
  step, params = make_step(config, batch)
  for _ in range(warmup):
    step()
  times, loss = [], float("nan")
  for _ in range(steps):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
  return dict(step_times=times, params=params, loss=loss)


def main(argv: list[str] | None = None) -> None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if root not in sys.path:
    sys.path.insert(0, root)
  from benchmarks import common  # the config and batch train_step.py times ours on
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--sizes", default="ti,s")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--text_len", type=int, default=None, help="override config.input.max_text_len")
  p.add_argument("--res", type=int, default=None, help="override config.input.res")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override any config value, e.g. --set model.text.depth=4")
  args = p.parse_args(argv)
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  print("| size | batch | params | s/step min | s/step median | examples/s |")
  print("|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    config = common.bench_config(size, "clip", "float32", args.batch, args.text_len, args.res,
                                 args.set)
    r = benchmark(config, common.random_batch(config, args.batch), steps=args.steps,
                  warmup=args.warmup)
    t = r["step_times"]
    print(f"| {size} | {args.batch} | {r['params'] / 1e6:.2f}M | {min(t):.3f} | "
          f"{statistics.median(t):.3f} | {args.batch / statistics.median(t):.1f} |", flush=True)


if __name__ == "__main__":
  main()
