"""What a task is: everything the one trainer asks config.task for. The loop, step, optimizer,
checkpoints, NaN guard and sharding are shared; a task brings its model, how it is initialised,
which examples it reads, its loss, its evaluators and whether its checkpoints export as
artifacts. A new task is one file defining a Task and one line in tasks/__init__.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Protocol

import jax
import ml_collections
from flax import nnx

from echovlm_jax.models import factory

Config = ml_collections.ConfigDict
# loss_fn(params, batch) -> (loss (), (terms {name: ()}, log temperature () or None)).
LossFn = Callable[[nnx.State, dict[str, jax.Array]], tuple[jax.Array, tuple[dict, Any]]]
# keep(example) -> tf bool: which examples of a split the iterators read (None: all).
Keep = Optional[Callable[[dict], Any]]


class Evaluator(Protocol):
  """What the loop holds for config.evals (evaluation/registry.py, view_classification.py)."""

  def due(self, step: int, last_step: bool = False) -> bool: ...
  def maybe_run(self, model: nnx.Module, step: int, last_step: bool = False
                ) -> dict[str, float]: ...
  def write_report(self, workdir: str, metrics_history: list[dict]) -> str | None: ...


@dataclasses.dataclass(frozen=True)
class Task:
  """One config.task value. Each callable takes the experiment config first."""
  name: str
  # (config, vocab_size) -> the builder of the model (models/factory.py).
  model: Callable[[Config, int], factory.Builder]
  # (params, config, config.model_init already read or None) -> params from pretrained weights
  # (or unchanged); ValueError when they do not fit.
  init_params: Callable[[nnx.State, Config, Any], nnx.State]
  # config -> the examples the train and evaluation iterators keep.
  keep: Callable[[Config], Keep]
  # (config, graphdef, mesh, the train iterator) -> the loss the step differentiates.
  make_loss_fn: Callable[[Config, nnx.GraphDef, jax.sharding.Mesh, Any], LossFn]
  # config -> None; ValueError naming the key on a value this task cannot run with.
  check_config: Callable[[Config], None]
  # (config, mesh, tokenizer) -> the evaluator of config.evals.
  make_evaluator: Callable[[Config, jax.sharding.Mesh, Any], Evaluator]
  # Whether `python -m echovlm_jax.tools.export` writes its checkpoints as artifacts.
  exports_artifact: bool
  # What its batches hold (input_pipeline.KINDS): images and captions, or frames with masks.
  batch_kind: str = "contrastive"
