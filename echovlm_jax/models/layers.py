"""Transformer building blocks shared by the image and text towers (Flax NNX).

Every parameter is created through `param`, which records its logical axis names
(`embed`, `mlp`, `heads`, ...) as `out_sharding` metadata; `sharding.py` maps them to mesh axes.
A tower config picks the block variant: `act`, `ln_eps`, `qkv_bias`, `mlp_dim` (`block_options`);
their defaults are our echo towers, CLIP / SigLIP checkpoints set them (interop/architecture.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Names = tuple[str | None, ...]
LAYERS_AXIS = "layers"  # logical name of the stacked-layer axis when layers are scanned


def param(rngs: nnx.Rngs, init: Callable[..., jax.Array], shape: Sequence[int], names: Names
          ) -> nnx.Param:
  """A float32 parameter carrying logical axis names (one per dim of `shape`)."""
  if len(names) != len(shape):
    raise ValueError(f"param: {len(names)} axis names {names} for shape {tuple(shape)}.")
  # eager_sharding=False: the model must build without a mesh (tests, one CPU); sharding.py
  # places the parameters from these names when it creates the model under jit.
  return nnx.Param(init(rngs.params(), tuple(shape), jnp.float32), out_sharding=tuple(names),
                   eager_sharding=False)


# Activations by config name; HF names map onto them in interop/architecture.py.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),   # SigLIP, our default
    "gelu": functools.partial(jax.nn.gelu, approximate=False),       # erf GELU (some open_clip)
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),           # OpenAI CLIP
}


ATTENTION_IMPLS = ("", "xla", "cudnn")


def block_options(cfg: Any, attn_impl: str = "") -> dict[str, Any]:
  """The block variant of a tower config (configs/echovlm.py declares every key; stored configs
  are filled by configs.echovlm.with_defaults where they are read).
  attn_impl: jax.nn.dot_product_attention's implementation ("" = jax's default, XLA in jax
  0.10; "cudnn" = the fused kernel, GPUs with bfloat16 / float16 compute)."""
  if attn_impl not in ATTENTION_IMPLS:
    raise ValueError(f"config.model.attention_impl={attn_impl!r}: expected one of "
                     f"{ATTENTION_IMPLS}.")
  act = cfg.act
  if act not in ACTIVATIONS:
    raise ValueError(f"config.model.*.act={act!r}: expected one of {tuple(ACTIVATIONS)}.")
  mlp_dim = int(cfg.mlp_dim) or int(cfg.width) * int(cfg.mlp_ratio)
  return dict(act=act, ln_eps=float(cfg.ln_eps), qkv_bias=bool(cfg.qkv_bias), mlp_dim=mlp_dim,
              attn_impl=attn_impl or None)


def dtype_of(name: str) -> jnp.dtype:
  """Compute dtype from its config name ("float32" | "bfloat16")."""
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.model.dtype={name!r}: expected 'float32' or 'bfloat16'.")
  return jnp.dtype(name)


class Dense(nnx.Module):
  """y = x @ W + b over the last axis of x; W [in, out] named `names`."""

  def __init__(self, din: int, dout: int, names: Names, *, dtype: jnp.dtype, rngs: nnx.Rngs,
               use_bias: bool = True, kernel_init=nnx.initializers.xavier_uniform()):
    self.kernel = param(rngs, kernel_init, (din, dout), names)
    self.bias = param(rngs, nnx.initializers.zeros, (dout,), names[1:]) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32 (bf16 statistics are too coarse), output in `dtype`."""

  def __init__(self, dim: int, *, dtype: jnp.dtype, rngs: nnx.Rngs, eps: float = 1e-6):
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("embed",))
    self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",))
    self.dtype, self.eps = dtype, eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head attention; q/k/v kernels [embed, heads, kv] (biases [heads, kv] when
  qkv_bias), output kernel [heads, kv, embed] and bias [embed].

  Runs through jax.nn.dot_product_attention so GPUs get cuDNN's fused kernel where it applies
  (the XLA formula elsewhere).
  """

  def __init__(self, width: int, heads: int, *, dtype: jnp.dtype, rngs: nnx.Rngs,
               qkv_bias: bool = False, impl: str | None = None):
    if width % heads:
      raise ValueError(f"config.model: width {width} is not divisible by heads {heads}.")
    kv = width // heads
    init = nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    self.query = param(rngs, init, (width, heads, kv), ("embed", "heads", "kv"))
    self.key = param(rngs, init, (width, heads, kv), ("embed", "heads", "kv"))
    self.value = param(rngs, init, (width, heads, kv), ("embed", "heads", "kv"))
    zeros = nnx.initializers.zeros
    if qkv_bias:
      self.query_bias = param(rngs, zeros, (heads, kv), ("heads", "kv"))
      self.key_bias = param(rngs, zeros, (heads, kv), ("heads", "kv"))
      self.value_bias = param(rngs, zeros, (heads, kv), ("heads", "kv"))
    else:
      self.query_bias = self.key_bias = self.value_bias = None
    self.out = param(rngs, nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2),
                     (heads, kv, width), ("heads", "kv", "embed"))
    self.out_bias = param(rngs, zeros, (width,), ("embed",))
    self.dtype, self.impl = dtype, impl

  def __call__(self, x_q: jax.Array, x_kv: jax.Array, mask: jax.Array | None = None,
               causal: bool = False) -> jax.Array:
    """x_q [B, Q, w], x_kv [B, K, w], mask broadcastable to [B, 1, Q, K] (True = attend),
    causal: query i sees keys <= i (on top of mask) -> [B, Q, w]."""
    c = lambda p: p[...].astype(self.dtype)

    def project(x, kernel, bias):
      y = jnp.einsum("bsw,whk->bshk", x.astype(self.dtype), c(kernel))
      return y if bias is None else y + c(bias)

    q = project(x_q, self.query, self.query_bias)
    k = project(x_kv, self.key, self.key_bias)
    v = project(x_kv, self.value, self.value_bias)
    y = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                     implementation=self.impl)                # [B, Q, h, kv]
    return jnp.einsum("bqhk,hkw->bqw", y, c(self.out)) + c(self.out_bias)


class Mlp(nnx.Module):
  """Two-layer MLP, kernels [embed, mlp] and [mlp, embed], activation by name (ACTIVATIONS)."""

  def __init__(self, width: int, hidden: int, *, dtype: jnp.dtype, rngs: nnx.Rngs,
               act: str = "gelu_tanh"):
    self.fc1 = Dense(width, hidden, ("embed", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = Dense(hidden, width, ("mlp", "embed"), dtype=dtype, rngs=rngs)
    self.act = act

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


class Block(nnx.Module):
  """Pre-LayerNorm transformer block; `options` from `block_options`."""

  def __init__(self, width: int, heads: int, options: dict[str, Any], *, dtype: jnp.dtype,
               rngs: nnx.Rngs):
    eps = options["ln_eps"]
    self.ln1 = LayerNorm(width, dtype=dtype, rngs=rngs, eps=eps)
    self.attn = Attention(width, heads, dtype=dtype, rngs=rngs, qkv_bias=options["qkv_bias"],
                          impl=options["attn_impl"])
    self.ln2 = LayerNorm(width, dtype=dtype, rngs=rngs, eps=eps)
    self.mlp = Mlp(width, options["mlp_dim"], dtype=dtype, rngs=rngs, act=options["act"])

  def __call__(self, x: jax.Array, mask: jax.Array | None, causal: bool = False) -> jax.Array:
    h = self.ln1(x)
    x = x + self.attn(h, h, mask, causal)
    return x + self.mlp(self.ln2(x))


class Encoder(nnx.Module):
  """`depth` blocks, either a Python list or stacked [depth, ...] and run with nnx.scan.

  Scanning compiles one block instead of `depth` (fast compiles for deep models); remat
  recomputes each block's activations in the backward pass instead of storing them.
  """

  def __init__(self, width: int, depth: int, heads: int, options: dict[str, Any], *,
               dtype: jnp.dtype, remat: bool, scan: bool, rngs: nnx.Rngs):
    self.scan, self.remat = scan, remat
    make = lambda r: Block(width, heads, options, dtype=dtype, rngs=r)
    if scan:
      @nnx.split_rngs(splits=depth)
      @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
      def create(r: nnx.Rngs) -> Block:
        return make(r)
      self.blocks = create(rngs)
    else:
      self.blocks = nnx.List([make(rngs) for _ in range(depth)])

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, causal: bool = False
               ) -> jax.Array:
    """x [B, N, w], mask broadcastable to [B, 1, N, N], causal (static) -> [B, N, w]."""
    def apply(block: Block, x: jax.Array, mask: Any) -> jax.Array:
      return block(x, mask, causal)
    if self.remat:
      apply = nnx.remat(apply)
    if self.scan:
      @nnx.scan(in_axes=(0, nnx.Carry, None), out_axes=nnx.Carry,
                transform_metadata={nnx.PARTITION_NAME: LAYERS_AXIS})
      def run(block: Block, x: jax.Array, mask: Any) -> jax.Array:
        return apply(block, x, mask)
      return run(self.blocks, x, mask)
    for block in self.blocks:
      x = apply(block, x, mask)
    return x
