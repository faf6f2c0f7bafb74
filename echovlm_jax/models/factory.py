"""The one place a model is built: which Flax NNX module a config stands for, with its
constructor arguments. Each function returns a builder (a thunk); callers run it as they need
the model: concrete (`build()`), shape-only as a restore target (`nnx.eval_shape(build)`), or
already sharded on a mesh (`sharding.create_sharded(build, mesh, rules)`).
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx

from echovlm_jax.echo import schema
from echovlm_jax.models import dense
from echovlm_jax.models import vit_classifier
from echovlm_jax.models import vit_regressor
from echovlm_jax.models.dual_encoder import DualEncoder

Builder = Callable[[], nnx.Module]


def dual_encoder(model_config: Any, *, vocab_size: int,
                 num_measurements: int = len(schema.MEASUREMENTS), seed: int = 0) -> Builder:
  """The DualEncoder of config.model: image / text embeddings [B, embed_dim] and the
  measurement head's [B, num_measurements]; vocab_size rows in the token table."""
  return lambda: DualEncoder(model_config, vocab_size=vocab_size,
                             num_measurements=num_measurements, rngs=nnx.Rngs(seed))


def view_classifier(model_config: Any, *, seed: int = 0) -> Builder:
  """The ViewClassifier of config.model (its image tower): logits [B, len(KNOWN_VIEWS)]."""
  return lambda: vit_classifier.ViewClassifier(model_config, num_classes=vit_classifier.NUM_CLASSES,
                                               rngs=nnx.Rngs(seed))


def clip_regressor(model_config: Any, *, seed: int = 0) -> Builder:
  """The ClipRegressor of config.model (its image tower and a linear head): [B] float32."""
  return lambda: vit_regressor.ClipRegressor(model_config, rngs=nnx.Rngs(seed))


def dense_model(model_config: Any, *, num_outputs: int, decoder_features: int,
                seed: int = 0, head: str = "heatmap") -> Builder:
  """The DenseModel of config.model (its image tower and a decoder): [B, T, H, W, num_outputs];
  head="regression" (landmarks only): dense.PointRegressor, points [B, T, num_outputs, 2]
  (its hidden layer has 4 x decoder_features units)."""
  if head == "regression":
    return lambda: dense.PointRegressor(model_config, num_points=num_outputs,
                                        hidden=4 * decoder_features, rngs=nnx.Rngs(seed))
  if head != "heatmap":
    raise ValueError(f"config.dense.landmark_head={head!r}: expected 'heatmap' or 'regression'.")
  return lambda: dense.DenseModel(model_config, num_outputs=num_outputs,
                                  decoder_features=decoder_features, rngs=nnx.Rngs(seed))
