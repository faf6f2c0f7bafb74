"""Test harness: 8 fake CPU devices so every test can exercise sharding.

XLA_FLAGS must be set before jax is first imported, which is why this lives
in conftest.py (imported by pytest before any test module).
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tf must never grab an accelerator in tests
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def num_devices():
  import jax
  n = jax.device_count()
  assert n == 8, f"expected 8 fake CPU devices, got {n}: XLA_FLAGS was set too late"
  return n


# Shared session-scoped dataset fixtures (tiny echoground builds).
pytest_plugins = ("tests.echoground_fixtures",)
