"""Our CLIP-architecture train step against transformers' `CLIPModel`, side by side in one
invocation: the same ViT-B/16 + 12-layer text CLIP (random weights, loaded into our towers
through the Hugging Face name table, so both start from identical parameters), the same random
batch (RGB 224 px, 77 tokens), the plain CLIP loss, global-norm clipping and AdamW.

  .venv/bin/python benchmarks/clip_vs_transformers.py --batch 8 --steps 3

Steps alternate between the frameworks so both see the same machine load. Reports wall s/step
(min, median), CPU s/step (min) and the first step's loss of each (equal weights and batch:
the losses agree to float tolerance, a check that the two compute the same model).
Needs requirements-test.txt (torch CPU + transformers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

B16 = dict(
    vision_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       intermediate_size=3072, image_size=224, patch_size=16),
    text_config=dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8,
                     intermediate_size=2048, max_position_embeddings=77, vocab_size=49408,
                     eos_token_id=49407, bos_token_id=49406, pad_token_id=49407),
    projection_dim=512)


def _cpu() -> float:
  t = os.times()
  return t.user + t.system


def make_batch(batch: int, seed: int = 0):
  """pixels [B, 3, 224, 224] normalised, ids [B, 77] (BOS, words, EOS, EOS-padding)."""
  rng = np.random.default_rng(seed)
  pixels = rng.normal(size=(batch, 3, 224, 224)).astype(np.float32)
  ids = np.full((batch, 77), 49407, np.int64)
  for i in range(batch):
    n = int(rng.integers(5, 60))
    ids[i, 0], ids[i, 1:n + 1] = 49406, rng.integers(0, 49405, n)
  return pixels, ids


def torch_step(model, lr: float, pixels, ids):
  import torch
  opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
  px, tok = torch.from_numpy(pixels), torch.from_numpy(ids)

  def step() -> float:
    opt.zero_grad(set_to_none=True)
    loss = model(pixel_values=px, input_ids=tok, return_loss=True).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())
  return step


def jax_step(flat, hf_config: dict, lr: float, pixels, ids):
  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx
  from echovlm_jax import losses
  from echovlm_jax.interop import architecture, conversion
  from echovlm_jax.models import factory
  arch = architecture.architecture(flat, "hf_clip", hf_config)
  cfg = architecture.model_config(arch)
  model = factory.dual_encoder(cfg, vocab_size=arch["vocab_size"])()
  graphdef, params = nnx.split(model, nnx.Param)
  params, _ = conversion.convert_into(params, cfg, flat, "hf_clip", "transformers CLIPModel")
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(lr, b1=0.9, b2=0.98, weight_decay=0.05,
                               mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
  frames = jnp.asarray(pixels.transpose(0, 2, 3, 1)[:, None])     # [B, 1, H, W, 3]
  tokens = jnp.asarray(ids, jnp.int32)

  def loss_fn(p):
    m = nnx.merge(graphdef, p)
    return losses.clip_loss(m.encode_image(frames), m.encode_text(tokens), m.logit_scale[...])

  @jax.jit
  def update(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state = [params, tx.init(params)]

  def step() -> float:
    state[0], state[1], loss = update(*state)
    return float(loss)
  return step


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--lr", type=float, default=1e-5)
  args = p.parse_args(argv)
  import jax
  import torch
  import transformers
  torch.manual_seed(0)
  config = transformers.CLIPConfig(**B16)
  model = transformers.CLIPModel(config).train()
  flat = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  pixels, ids = make_batch(args.batch)
  t0 = time.perf_counter()
  jstep = jax_step(flat, config.to_dict(), args.lr, pixels, ids)
  first = {"jax": jstep()}                                         # compiles
  compile_s = time.perf_counter() - t0
  tstep = torch_step(model, args.lr, pixels, ids)
  first["torch"] = tstep()
  times = {"jax": [], "torch": []}
  cpu = {"jax": [], "torch": []}
  for _ in range(args.steps):
    for name, step in (("jax", jstep), ("torch", tstep)):
      c0, t0 = _cpu(), time.perf_counter()
      step()
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(_cpu() - c0)
  n = sum(v.size for v in flat.values()) / 1e6
  print(f"CLIP B/16 ({n:.1f}M parameters), batch {args.batch}, 224 px, 77 tokens, float32; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")
  print(f"first-step loss: ours {first['jax']:.6f}, transformers {first['torch']:.6f}; "
        f"our compile + first step {compile_s:.1f} s")
  print("| framework | s/step min | s/step median | CPU s/step min | examples/s (min) |")
  print("|---|---|---|---|---|")
  for name, label in (("jax", "ours (JAX)"), ("torch", "transformers CLIPModel")):
    t = times[name]
    print(f"| {label} | {min(t):.2f} | {statistics.median(t):.2f} | {min(cpu[name]):.2f} | "
          f"{args.batch / min(t):.2f} |")


if __name__ == "__main__":
  main()
