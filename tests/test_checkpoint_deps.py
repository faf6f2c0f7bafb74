"""Loading an outside checkpoint without the `checkpoints` extra fails with an error that names
the install command (issue 20: a bare ModuleNotFoundError for safetensors), and the extra the
error names exists."""

from __future__ import annotations

import json
import os
import sys
import tomllib

import pytest

import echovlm_jax
from echovlm_jax.interop import optional_deps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_extra_exists_and_the_readme_names_it():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
  assert set(extras["checkpoints"]) == {"transformers", "tokenizers", "safetensors"}
  assert optional_deps.INSTALL == 'pip install -e ".[checkpoints]"'
  with open(os.path.join(REPO, "README.md")) as f:
    assert optional_deps.INSTALL in f.read()


def test_missing_safetensors_names_the_extra(tmp_path, monkeypatch):
  # An HF CLIP directory as far as the loader can tell before it reads the weights.
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
  (tmp_path / "model.safetensors").write_bytes(b"")
  monkeypatch.setitem(sys.modules, "safetensors", None)      # `import safetensors` fails
  monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
  with pytest.raises(ModuleNotFoundError) as e:
    echovlm_jax.load_pretrained(str(tmp_path))
  msg = str(e.value)
  assert "'safetensors'" in msg and optional_deps.INSTALL in msg and str(tmp_path) in msg


def test_missing_transformers_names_the_extra(tmp_path, monkeypatch):
  from echovlm_jax.interop.checkpoint_tokenizer import CheckpointTokenizer
  monkeypatch.setitem(sys.modules, "transformers", None)
  with pytest.raises(ModuleNotFoundError, match=r"'transformers'.*\.\[checkpoints\]"):
    CheckpointTokenizer.load(str(tmp_path))
