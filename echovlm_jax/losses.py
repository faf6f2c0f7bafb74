"""The training objectives of docs/design.md "The objectives": CLIP and SigLIP contrastive losses
with view masks and negated-caption negatives, the view SupCon term, the pairwise negation term,
the masked measurement Huber loss, and `compute_losses`, which combines the enabled ones.

Every softmax / sigmoid loss is written once as a per-shard function of local rows against
gathered columns ([B_local, B_global] logits). With `mesh` it runs under shard_map over the batch
axes ("data", "fsdp"); with mesh=None the single shard is the whole batch: the same values and
gradients either way. All losses are means over the valid examples of the GLOBAL batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from echovlm_jax.echo.schema import UNKNOWN_VIEW_ID
from echovlm_jax.sharding import batch_axes

Array = jax.Array
# Masked logits: finite, so rows with nothing left stay NaN-free (exp underflows to exactly 0).
_NEG = -1e30
VIEW_MODES = ("none", "same_view_negatives", "view_supcon")
KINDS = ("clip", "sigmoid")


# --- Running a per-shard loss on one device or over the mesh -------------------------------

@dataclasses.dataclass(frozen=True)
class _Shard:
  """What a per-shard loss sees: its batch axes (None: the whole batch is local)."""
  axes: tuple[str, ...] | None
  size: int = 1

  def gather(self, x: Array) -> Array:
    """[B_local, ...] -> [B_global, ...] (transpose: psum_scatter, so gradients stay exact)."""
    return x if self.axes is None else jax.lax.all_gather(x, self.axes, axis=0, tiled=True)

  def index(self) -> Array:
    return jnp.int32(0) if self.axes is None else jax.lax.axis_index(self.axes)

  def shift(self, x: Any) -> Any:
    """Passes a pytree of blocks one step round the ring (shard i -> i + 1)."""
    if self.axes is None:
      return x
    perm = [(i, (i + 1) % self.size) for i in range(self.size)]
    return jax.tree.map(lambda a: jax.lax.ppermute(a, self.axes, perm), x)


def _run(fn: Callable[..., tuple[Array, Array]], mesh: Mesh | None, batched: dict,
         replicated: dict) -> Array:
  """Global mean = psum(loss sums) / psum(counts) of `fn(shard, batched, replicated)`.

  `batched` leaves are [B, ...] (split over the batch axes), `replicated` leaves are scalars.
  """
  if mesh is None:
    total, count = fn(_Shard(None), batched, replicated)
    return total / jnp.maximum(count, 1.0)
  axes = batch_axes(mesh)
  shard = _Shard(axes, math.prod(mesh.shape[a] for a in axes))

  def body(b, r):
    total, count = fn(shard, b, r)
    return jax.lax.psum(total, axes), jax.lax.psum(count, axes)

  total, count = jax.shard_map(body, mesh=mesh, in_specs=(P(axes), P()),
                               out_specs=(P(), P()))(batched, replicated)
  return total / jnp.maximum(count, 1.0)


def _defaults(image_emb: Array, view: Array | None, valid: Array | None,
              has_negation: Array | None = None) -> tuple[Array, Array, Array]:
  b = image_emb.shape[0]
  view = jnp.full((b,), UNKNOWN_VIEW_ID, jnp.int32) if view is None else view.astype(jnp.int32)
  valid = jnp.ones((b,), jnp.float32) if valid is None else valid.astype(jnp.float32)
  has_neg = jnp.zeros((b,), jnp.float32) if has_negation is None else has_negation.astype(
      jnp.float32)
  return view, valid, has_neg


def _contrastive_batch(image_emb: Array, text_emb: Array, view: Array | None, valid: Array | None,
                       has_negation: Array | None, neg_text_emb: Array | None,
                       caption_id: Array | None) -> dict[str, Array]:
  """The per-example arrays of an image-text loss, split over the batch axes: img / txt [B, d],
  view [B], valid [B], has_neg [B], neg [B, d] ([B, 0] without negated captions) and, with
  caption ids, cid [B]."""
  view, valid, has_neg = _defaults(image_emb, view, valid, has_negation)
  return dict(img=image_emb, txt=text_emb, view=view, valid=valid, has_neg=has_neg,
              neg=image_emb[:, :0] if neg_text_emb is None else neg_text_emb,
              **({} if caption_id is None else dict(cid=caption_id.astype(jnp.int32))))


def view_mask(view_rows: Array, view_cols: Array) -> Array:
  """[b] x [B] view ids -> [b, B] bool M_ij: same view, or either is UNKNOWN_VIEW_ID."""
  r, c = view_rows[:, None], view_cols[None, :]
  return (r == c) | (r == UNKNOWN_VIEW_ID) | (c == UNKNOWN_VIEW_ID)


def _columns_ok(shard: _Shard, b: Mapping[str, Array], cols: Mapping[str, Array], col0: Array,
                same_view: bool) -> tuple[Array, Array]:
  """(positive [b, c], usable [b, c]) for local rows against a block of columns starting at
  global index col0: usable = valid column (and same view in same_view mode) or the positive."""
  rows = shard.index() * b["valid"].shape[0] + jnp.arange(b["valid"].shape[0])
  pos = rows[:, None] == col0 + jnp.arange(cols["valid"].shape[0])[None, :]
  ok = cols["valid"][None, :] > 0
  if same_view:
    ok = ok & view_mask(b["view"], cols["view"])
  if "cid" in b:
    # Identical captions (a study's report shared by its images, "normal study") are not
    # each other's negatives: such pairs leave both denominators (open_clip issue #1027).
    ok = ok & (b["cid"][:, None] != cols["cid"][None, :])
  return pos, ok | pos


def _negation_columns_ok(b: Mapping[str, Array], cols: Mapping[str, Array],
                         same_view: bool) -> Array:
  """[b, c] bool: column j's negated caption counts for row i: it exists (has_negation_j), its
  example is valid and, in same_view mode, it passes the view mask as caption j would."""
  ok = (cols["has_neg"][None, :] > 0) & (cols["valid"][None, :] > 0)
  return ok & view_mask(b["view"], cols["view"]) if same_view else ok


# --- CLIP -----------------------------------------------------------------------------------

def clip_loss(image_emb: Array, text_emb: Array, logit_scale: Array, *, view: Array | None = None,
              same_view_negatives: bool = False, neg_text_emb: Array | None = None,
              has_negation: Array | None = None, valid: Array | None = None,
              caption_id: Array | None = None, mesh: Mesh | None = None) -> Array:
  """L = 1/2 [CE(s I T^T, diag) + CE(s T I^T, diag)], mean over valid examples.

  image_emb, text_emb [B, d] L2-normalised; logit_scale () = log s; view [B] int (same-view
  mode: logits with M_ij = 0 leave both denominators); neg_text_emb [B, d] + has_negation [B]:
  negated captions as extra image->text columns ([B, 2B] logits; column j counts only when
  has_negation_j = 1, and follows the same view mask as caption j); valid [B] (0 = padding:
  not a row, not a column); caption_id [B] int: pairs i != j with equal ids (identical
  captions) leave both denominators. Returns a scalar.
  """
  negation = neg_text_emb is not None
  batched = _contrastive_batch(image_emb, text_emb, view, valid, has_negation, neg_text_emb,
                               caption_id)

  def local(shard: _Shard, b: dict, r: dict) -> tuple[Array, Array]:
    s = jnp.exp(r["t"])
    cols = {k: shard.gather(v) for k, v in b.items()}
    pos, ok = _columns_ok(shard, b, cols, 0, same_view_negatives)
    diag = s * jnp.sum(b["img"] * b["txt"], axis=-1)                              # [b]
    i2t = jnp.where(ok, s * b["img"] @ cols["txt"].T, _NEG)                        # [b, B]
    if negation:
      # Own negated caption included: it is the hardest negative of image i.
      ok_neg = _negation_columns_ok(b, cols, same_view_negatives)
      i2t = jnp.concatenate([i2t, jnp.where(ok_neg, s * b["img"] @ cols["neg"].T, _NEG)], 1)
    t2i = jnp.where(ok, s * b["txt"] @ cols["img"].T, _NEG)                        # [b, B]
    ce = 0.5 * (jax.nn.logsumexp(i2t, axis=1) + jax.nn.logsumexp(t2i, axis=1)) - diag
    return jnp.sum(ce * b["valid"]), jnp.sum(b["valid"])

  return _run(local, mesh, batched, dict(t=logit_scale))


# --- SigLIP ---------------------------------------------------------------------------------

def _sigmoid_block(s: Array, bias: Array, b: Mapping[str, Array], cols: Mapping[str, Array],
                   pos: Array, ok: Array, negation: bool, same_view: bool) -> Array:
  """Sum over local rows and one block of columns of -log sigma(z_ij (s I_i.T_j + b))."""
  logits = s * b["img"] @ cols["txt"].T + bias
  total = jnp.sum(jnp.where(ok, -jax.nn.log_sigmoid(jnp.where(pos, logits, -logits)), 0.0),
                  axis=1)
  if negation:
    ok_neg = _negation_columns_ok(b, cols, same_view)
    neg_logits = s * b["img"] @ cols["neg"].T + bias
    total = total + jnp.sum(jnp.where(ok_neg, -jax.nn.log_sigmoid(-neg_logits), 0.0), axis=1)
  return jnp.sum(total * b["valid"])


def sigmoid_loss(image_emb: Array, text_emb: Array, logit_scale: Array, logit_bias: Array, *,
                 view: Array | None = None, same_view_negatives: bool = False,
                 neg_text_emb: Array | None = None, has_negation: Array | None = None,
                 valid: Array | None = None, caption_id: Array | None = None,
                 mesh: Mesh | None = None, ring: bool = False) -> Array:
  """SigLIP: L = -(1/B) sum_ij log sigma(z_ij (s I_i.T_j + b)), z = +1 on the diagonal, else -1.

  Shapes and masks as in `clip_loss` (masked pairs, identical captions included, leave the
  sum; negated captions add pairs with z = -1 where has_negation_j = 1); logit_bias () = b. `ring`: with a mesh, text blocks go
  round the ring of batch shards (ppermute) so a device holds [B_local, B_local] logits instead
  of [B_local, B_global]; the value is the same.
  """
  negation = neg_text_emb is not None
  batched = _contrastive_batch(image_emb, text_emb, view, valid, has_negation, neg_text_emb,
                               caption_id)
  col_keys = ("txt", "view", "valid", "has_neg", "neg") + (("cid",) if caption_id is not None else ())

  def dense(shard: _Shard, b: dict, r: dict) -> tuple[Array, Array]:
    cols = {k: shard.gather(b[k]) for k in col_keys}
    pos, ok = _columns_ok(shard, b, cols, 0, same_view_negatives)
    total = _sigmoid_block(jnp.exp(r["t"]), r["b"], b, cols, pos, ok, negation,
                           same_view_negatives)
    return total, jnp.sum(b["valid"])

  def ringed(shard: _Shard, b: dict, r: dict) -> tuple[Array, Array]:
    s, n, local_b = jnp.exp(r["t"]), shard.size, b["valid"].shape[0]

    # Rematerialised so the backward pass keeps one [B_local, B_local] block at a time, not n
    # of them: without it the ring needs as much memory as the all-gathered variant.
    @jax.checkpoint
    def block(k, cols):
      # After k shifts this shard holds the columns of shard (index - k) mod n.
      col0 = ((shard.index() - k) % n) * local_b
      pos, ok = _columns_ok(shard, b, cols, col0, same_view_negatives)
      return _sigmoid_block(s, r["b"], b, cols, pos, ok, negation, same_view_negatives)

    def step(k, carry):
      total, cols = carry
      cols = shard.shift(cols)
      return total + block(k, cols), cols

    cols = {k: b[k] for k in col_keys}
    total, _ = jax.lax.fori_loop(1, n, step, (block(0, cols), cols))
    return total, jnp.sum(b["valid"])

  return _run(ringed if ring else dense, mesh, batched, dict(t=logit_scale, b=logit_bias))


# --- View SupCon, negation pairs, measurements ----------------------------------------------

def view_supcon_loss(image_emb: Array, logit_scale: Array, view: Array, *,
                     valid: Array | None = None, mesh: Mesh | None = None) -> Array:
  """Image-image supervised contrastive term over views.

  For anchor i with positives P(i) = {p != i: view_p = view_i, known view}:
  L_i = -1/|P(i)| sum_p log [exp(s I_i.I_p) / sum_{a != i} exp(s I_i.I_a)], s = exp(logit_scale).
  Mean over valid anchors with |P(i)| > 0 (unknown views are never positives); 0 if none.
  image_emb [B, d], view [B] int, valid [B]. Returns a scalar.
  """
  view, valid, _ = _defaults(image_emb, view, valid)
  batched = dict(img=image_emb, view=view, valid=valid)

  def local(shard: _Shard, b: dict, r: dict) -> tuple[Array, Array]:
    cols = {k: shard.gather(v) for k, v in b.items()}
    self_, _ = _columns_ok(shard, b, cols, 0, False)
    others = ~self_ & (cols["valid"][None, :] > 0)
    positive = others & (b["view"][:, None] == cols["view"][None, :]) & (
        b["view"][:, None] != UNKNOWN_VIEW_ID)
    logits = jnp.where(others, jnp.exp(r["t"]) * b["img"] @ cols["img"].T, _NEG)  # [b, B]
    log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
    num_pos = positive.sum(1)
    anchor = (num_pos > 0) & (b["valid"] > 0)
    per_anchor = -jnp.sum(jnp.where(positive, log_prob, 0.0), 1) / jnp.maximum(num_pos, 1)
    return jnp.sum(jnp.where(anchor, per_anchor, 0.0)), jnp.sum(anchor.astype(jnp.float32))

  return _run(local, mesh, batched, dict(t=logit_scale))


def negation_pair_loss(image_emb: Array, text_emb: Array, neg_text_emb: Array,
                       logit_scale: Array, has_negation: Array, *,
                       valid: Array | None = None) -> Array:
  """-log softmax([s I_i.T_i, s I_i.T~_i])_0, mean over examples with has_negation_i = 1.

  image_emb, text_emb, neg_text_emb [B, d]; has_negation [B]; 0 when nothing is negated.
  Per-example, so it needs no gathering: under jit the mean is global on any sharding.
  """
  _, valid, has_neg = _defaults(image_emb, None, valid, has_negation)
  w = has_neg * valid
  s = jnp.exp(logit_scale)
  per = jax.nn.softplus(s * jnp.sum(image_emb * (neg_text_emb - text_emb), axis=-1))
  return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def huber(x: Array, delta: float) -> Array:
  """Elementwise Huber: x^2/2 for |x| <= delta, delta (|x| - delta/2) beyond."""
  a = jnp.abs(x)
  return jnp.where(a <= delta, 0.5 * jnp.square(x), delta * (a - 0.5 * delta))


def measurement_loss(pred: Array, target: Array, mask: Array, *, delta: float = 1.0,
                     valid: Array | None = None) -> Array:
  """Masked Huber regression of z-scored measurements: sum(mask * huber) / sum(mask).

  pred, target, mask [B, M] (mask 1 where the value is present and shown by the view);
  valid [B]. 0 when nothing is present.
  """
  m = mask.astype(jnp.float32)
  if valid is not None:
    m = m * valid.astype(jnp.float32)[:, None]
  # where(), not a product: absent targets may be NaN.
  h = jnp.where(m > 0, huber(pred - jnp.where(m > 0, target, 0.0), delta), 0.0)
  return jnp.sum(h * m) / jnp.maximum(jnp.sum(m), 1.0)


# --- The combined objective -----------------------------------------------------------------

def check_config(loss_config: Any) -> None:
  """ValueError naming the key unless config.loss's kind and view_mode are ones
  `compute_losses` knows (checked at start, before any data or state is built)."""
  if loss_config.kind not in KINDS:
    raise ValueError(f"config.loss.kind={loss_config.kind!r}: expected one of {KINDS}.")
  if loss_config.view_mode not in VIEW_MODES:
    raise ValueError(f"config.loss.view_mode={loss_config.view_mode!r}: expected one of "
                     f"{VIEW_MODES}.")


def compute_losses(outputs: Mapping[str, Array], batch: Mapping[str, Array], loss_config: Any,
                   mesh: Mesh | None = None) -> tuple[Array, dict[str, Array]]:
  """Total = contrastive + view_weight * view + negation_weight * negation + meas_weight * meas
  + meas_text_weight * meas_text.

  outputs: DualEncoder outputs (image_emb, text_emb [B, d], neg_text_emb [B, d] when negation
  is on, meas_pred / text_meas_pred [B, M], logit_scale, logit_bias). batch: view [B],
  has_negation [B], optional caption_id [B] (identical captions), measurements / meas_mask /
  text_meas_mask (what the caption states)
  [B, M], optional valid [B]. loss_config: config.loss, as `check_config` accepts it.
  Returns (total (), {term name: ()}) with only the enabled terms.
  """
  cfg = loss_config
  if cfg.negation and "neg_text_emb" not in outputs:
    raise ValueError("config.loss.negation=True needs outputs['neg_text_emb']: put 'neg_text' "
                     "in the batch given to the model.")
  img, txt, t = outputs["image_emb"], outputs["text_emb"], outputs["logit_scale"]
  valid, view, cid = batch.get("valid"), batch.get("view"), batch.get("caption_id")
  same_view = cfg.view_mode == "same_view_negatives"
  neg = dict(neg_text_emb=outputs["neg_text_emb"], has_negation=batch["has_negation"]
             ) if cfg.negation else {}
  terms: dict[str, Array] = {}
  if cfg.kind == "clip":
    terms["contrastive"] = clip_loss(img, txt, t, view=view, same_view_negatives=same_view,
                                     valid=valid, caption_id=cid, mesh=mesh, **neg)
  else:
    terms["contrastive"] = sigmoid_loss(img, txt, t, outputs["logit_bias"], view=view,
                                        same_view_negatives=same_view, valid=valid,
                                        caption_id=cid, mesh=mesh, ring=cfg.sigmoid_ring, **neg)
  total = terms["contrastive"]
  if cfg.view_mode == "view_supcon":
    terms["view"] = view_supcon_loss(img, t, view, valid=valid, mesh=mesh)
    total = total + cfg.view_weight * terms["view"]
  if cfg.negation:
    terms["negation"] = negation_pair_loss(img, txt, outputs["neg_text_emb"], t,
                                           batch["has_negation"], valid=valid)
    total = total + cfg.negation_weight * terms["negation"]
  if cfg.meas_weight > 0:
    terms["meas"] = measurement_loss(outputs["meas_pred"], batch["measurements"],
                                     batch["meas_mask"], delta=cfg.huber_delta, valid=valid)
    total = total + cfg.meas_weight * terms["meas"]
  if cfg.meas_text_weight > 0:
    # The same head reads the caption's embedding: the values the text states must be
    # decodable from it as they are from the image's, which ties both to one read-out.
    terms["meas_text"] = measurement_loss(outputs["text_meas_pred"], batch["measurements"],
                                          batch["text_meas_mask"], delta=cfg.huber_delta,
                                          valid=valid)
    total = total + cfg.meas_text_weight * terms["meas_text"]
  return total, terms
