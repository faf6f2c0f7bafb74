"""The tasks one trainer runs, by config.task. Adding a task: a file defining a `Task`
(task.py) and one line here."""

from __future__ import annotations

from echovlm_jax.train.tasks import contrastive
from echovlm_jax.train.tasks import landmarks
from echovlm_jax.train.tasks import lvef
from echovlm_jax.train.tasks import segmentation
from echovlm_jax.train.tasks import view_classifier
from echovlm_jax.train.tasks.task import Task

TASKS: dict[str, Task] = {
    "contrastive": contrastive.TASK,
    "view_classifier": view_classifier.TASK,
    "segmentation": segmentation.TASK,
    "landmarks": landmarks.TASK,
    "lvef": lvef.TASK,
}


def from_config(config) -> Task:
  """The Task of config.task; ValueError naming the key for an unknown one."""
  if config.task not in TASKS:
    raise ValueError(f"config.task={config.task!r}: expected one of "
                     f"{', '.join(map(repr, TASKS))}.")
  return TASKS[config.task]
