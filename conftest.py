"""Test harness: 8 fake CPU devices so every test can exercise sharding.

XLA_FLAGS must be set before jax is first imported, which is why this lives
in conftest.py (imported by pytest before any test module).
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
# The tests' models are tiny: compiling them dominates their run time, not running them. LLVM
# at -O0 compiles the tiny train step in 4.7 s instead of 7.4 s (same losses to the last digit
# logged) and takes the suite from ~1140 s to ~900 s; XLA's own HLO passes (fusion, layouts,
# sharding) run as they do for users. Unvectorised code may sum a float32 reduction in another
# order, so a tolerance tighter than float32 round-off over the reduction can tell -O0 apart.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tf must never grab an accelerator in tests
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One XLA compilation cache for the session, its subprocesses included: tests build the same
# tiny models again and again (a new jitted step per test, a new process per CLI run), and a
# compile costs 3-10 s on CPU where loading the same executable costs a fraction of a second.
# A fresh directory per session, so no run ever loads another checkout's executables.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="echovlm_test_xla_cache_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def num_devices():
  import jax
  n = jax.device_count()
  assert n == 8, f"expected 8 fake CPU devices, got {n}: XLA_FLAGS was set too late"
  return n


# Shared session-scoped dataset fixtures (tiny echoground builds).
pytest_plugins = ("tests.echoground_fixtures",)
