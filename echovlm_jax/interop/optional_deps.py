"""What reading an outside checkpoint needs beyond the core install (transformers, tokenizers,
safetensors: the `checkpoints` extra in pyproject.toml), and the error that says how to get it.

Imported lazily, where a checkpoint file or tokenizer is read: an EchoVLM artifact and
training from scratch need none of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL = 'pip install -e ".[checkpoints]"'


def require(module: str, what: str) -> ModuleType:
  """`import module`, or a ModuleNotFoundError naming `what` needed it and the install command."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ModuleNotFoundError(
        f"{what} needs the Python package {module.split('.')[0]!r}, which is not installed. "
        f"Install the checkpoint extra from the repository root: {INSTALL} (tested pins: "
        "pip install -r requirements-checkpoints.txt).", name=e.name or module) from e
