"""EchoVLM-JAX: measurement-grounded vision-language pretraining for echocardiography.

`echovlm_jax.load_pretrained(path)` loads an exported artifact (see inference/); it is
imported on first use so `import echovlm_jax` stays light (no jax until needed).
"""

from typing import Any

__all__ = ["load_pretrained"]


def __getattr__(name: str) -> Any:
  if name == "load_pretrained":
    from echovlm_jax.inference.load import load_pretrained
    return load_pretrained
  raise AttributeError(f"module 'echovlm_jax' has no attribute {name!r}")
