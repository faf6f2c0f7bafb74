"""Checkpointer: sharded roundtrip, restore onto another mesh / device count,
keep-N and save interval, the JSON side-car, SIGTERM, and that incomplete
saves (leftover tmp dirs, kill -9 mid-save) are never restored."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from echovlm_jax.train import checkpointing
from echovlm_jax.distributed import create_mesh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(mesh):
  """A small train-state-like pytree sharded on `mesh` (batch-style on data)."""
  w = jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8)
  return {
      "params": {"w": jax.device_put(w, NamedSharding(mesh, P("data", None))),
                 "b": jax.device_put(jnp.ones((8,), jnp.bfloat16), NamedSharding(mesh, P()))},
      "step": jax.device_put(jnp.int32(7), NamedSharding(mesh, P())),
      "rng": jax.random.key(3),
  }


def _target(mesh, w_spec):
  """The restore target of `_state` on another mesh, with w sharded by `w_spec`."""
  return {
      "params": {"w": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=NamedSharding(mesh, w_spec)),
                 "b": jax.ShapeDtypeStruct((8,), jnp.bfloat16, sharding=NamedSharding(mesh, P()))},
      "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P())),
      "rng": checkpointing.abstract_like(jax.random.key(0)),
  }


def _assert_same_values(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_roundtrip_and_restore_onto_other_meshes(tmp_path, num_devices):
  mesh_8 = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  assert mesh_8.devices.shape == (8, 1, 1)
  state = _state(mesh_8)
  extra = {"data": {"epoch": 1, "position": 42}, "host_rng": [1, 2, 3], "note": "x"}
  with checkpointing.Checkpointer(tmp_path, keep=3) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(10, state, extra)
    ckpt.wait()
    assert ckpt.latest_step() == 10

    # Same mesh, target taken from the live state.
    restored, restored_extra = ckpt.restore(None, checkpointing.abstract_like(state))
    _assert_same_values(restored, state)
    assert restored_extra == extra
    assert restored["params"]["w"].sharding == state["params"]["w"].sharding

  # A fresh process-like reopen, restoring onto a (2, 2, 2) mesh with w split two ways,
  # and onto a 4-device mesh (a smaller job).
  mesh_222 = create_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  mesh_4 = create_mesh({"data": -1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:4])
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    for mesh, spec in ((mesh_222, P(("data", "fsdp"), "tensor")), (mesh_4, P(None, "data"))):
      target = _target(mesh, spec)
      restored, restored_extra = ckpt.restore(10, target)
      _assert_same_values(restored, state)
      assert restored_extra == extra
      assert restored["params"]["w"].sharding == target["params"]["w"].sharding
      assert restored["params"]["b"].dtype == jnp.bfloat16
      assert len(restored["params"]["w"].sharding.device_set) == mesh.size


def test_keep_n_and_save_interval(tmp_path, num_devices):
  mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  state = _state(mesh)
  with checkpointing.Checkpointer(tmp_path, keep=2, every=2) as ckpt:
    saved = {s: ckpt.save(s, state, {"s": s}) for s in range(1, 8)}
    assert [s for s, ok in saved.items() if ok] == [2, 4, 6]
    assert ckpt.save(7, state, {"s": 7}, force=True)       # e.g. the final step
    assert not ckpt.save(7, state, {"s": 7}, force=True)   # already saved: no error
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7]
    assert sorted(os.listdir(ckpt.directory)) == ["6", "7"]
    _, extra = ckpt.restore(6, _target(mesh, P("data")))
    assert extra == {"s": 6}


def test_restore_errors_name_the_fix(tmp_path, num_devices):
  mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
      ckpt.restore(None, _target(mesh, P()))
    ckpt.save(1, _state(mesh), force=True)
    ckpt.wait()
    with pytest.raises(FileNotFoundError, match="available steps: \\[1\\]"):
      ckpt.restore(2, _target(mesh, P()))
    target = _target(mesh, P())
    target["params"]["w"] = jax.ShapeDtypeStruct((16, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"\['params'\]\['w'\].*no sharding"):
      ckpt.restore(1, target)


def test_sigterm_sets_the_stop_flag(tmp_path, num_devices):
  before = signal.getsignal(signal.SIGTERM)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert checkpointing.install_sigterm_handler()
    try:
      assert not ckpt.should_stop(1)
      os.kill(os.getpid(), signal.SIGTERM)
      deadline = time.time() + 5
      while not checkpointing.sigterm_received() and time.time() < deadline:
        time.sleep(0.01)
      assert checkpointing.sigterm_received()
      assert ckpt.should_stop(2)
    finally:
      checkpointing.uninstall_sigterm_handler()
  assert signal.getsignal(signal.SIGTERM) is before
  assert not checkpointing.sigterm_received()


def test_leftover_tmp_dir_is_ignored_and_cleaned(tmp_path, num_devices):
  mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  state = _state(mesh)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state, {"s": 1}, force=True)
    ckpt.save(2, state, {"s": 2}, force=True)
  ckpt_dir = tmp_path / "checkpoints"
  # What a save cut before its final rename leaves: a full-looking step dir
  # under orbax's temporary name (and a partial one for a later step).
  os.rename(ckpt_dir / "2", ckpt_dir / "2.orbax-checkpoint-tmp-1700000000000000")
  (ckpt_dir / "3.orbax-checkpoint-tmp-1700000000000001" / "state").mkdir(parents=True)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 1
    _, extra = ckpt.restore(None, _target(mesh, P("data")))
    assert extra == {"s": 1}
    ckpt.save(2, state, {"s": "2 again"}, force=True)   # the step can be written afresh
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
  assert sorted(os.listdir(ckpt_dir)) == ["1", "2"]


_CHILD = textwrap.dedent("""
    import os, sys, time
    import jax, jax.numpy as jnp
    from echovlm_jax.train import checkpointing
    mode, workdir = sys.argv[1], sys.argv[2]
    state = {"w": jnp.arange(4096, dtype=jnp.float32), "step": jnp.int32(0)}
    ckpt = checkpointing.Checkpointer(workdir, keep=5, every=3)
    if mode == "kill_mid_save":
      ckpt.save(1, state, {"s": 1}, force=True)
      ckpt.wait()
      # Hold the background save of step 2 just before its atomic rename.
      from orbax.checkpoint._src.path import atomicity
      async def hang(self):
        print("FINALIZING", flush=True)
        time.sleep(3600)
      atomicity.AtomicRenameTemporaryPath.finalize = hang
      ckpt.save(2, state, {"s": 2}, force=True)
      time.sleep(3600)
    elif mode == "sigterm":
      checkpointing.install_sigterm_handler()
      for step in range(1, 10_000):
        state = {"w": state["w"] + 1, "step": jnp.int32(step)}
        stop = ckpt.should_stop(step)   # the train loop's pattern
        ckpt.save(step, state, {"s": step, "stopped": stop}, force=stop)
        if stop:
          break
        print("STEP", step, flush=True)
        time.sleep(0.05)
      ckpt.close()
      print("CLEAN_EXIT", step, flush=True)
""")


def _spawn_child(tmp_path, mode):
  script = tmp_path / "child.py"
  script.write_text(_CHILD)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.Popen([sys.executable, str(script), mode, str(tmp_path / "work")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=REPO)


def _wait_for_line(proc, prefix, timeout=60):
  deadline = time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if line.startswith(prefix):
      return line
    if not line and proc.poll() is not None:
      break
  proc.kill()
  pytest.fail(f"child never printed {prefix!r}; stderr:\n{proc.stderr.read()[-3000:]}")


def test_kill_9_during_async_save_resumes_from_last_complete(tmp_path, num_devices):
  proc = _spawn_child(tmp_path, "kill_mid_save")
  try:
    _wait_for_line(proc, "FINALIZING")
    ckpt_dir = tmp_path / "work" / "checkpoints"
    assert any(".orbax-checkpoint-tmp" in n for n in os.listdir(ckpt_dir)), os.listdir(ckpt_dir)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
  assert proc.returncode == -signal.SIGKILL
  mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  target = {"w": jax.ShapeDtypeStruct((4096,), jnp.float32, sharding=NamedSharding(mesh, P("data"))),
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))}
  with checkpointing.Checkpointer(tmp_path / "work") as ckpt:
    assert ckpt.latest_step() == 1
    state, extra = ckpt.restore(None, target)
    assert extra == {"s": 1}
    np.testing.assert_array_equal(state["w"], np.arange(4096, dtype=np.float32))
    # The resumed run writes step 2 again; orbax deletes the leftover first.
    assert ckpt.save(2, state, {"s": 2}, force=True)
  assert sorted(os.listdir(ckpt_dir)) == ["1", "2"]


def test_sigterm_saves_and_exits_cleanly(tmp_path, num_devices):
  proc = _spawn_child(tmp_path, "sigterm")
  try:
    _wait_for_line(proc, "STEP 4")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err[-3000:]
  stopped_at = int(out.split("CLEAN_EXIT")[-1])
  with checkpointing.Checkpointer(tmp_path / "work") as ckpt:
    assert ckpt.latest_step() == stopped_at
    steps = ckpt.all_steps()
    assert set(range(3, stopped_at, 3)) <= set(steps)   # the periodic saves before it
    mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    target = {"w": jax.ShapeDtypeStruct((4096,), jnp.float32, sharding=NamedSharding(mesh, P())),
              "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))}
    state, extra = ckpt.restore(None, target)
  assert extra == {"s": stopped_at, "stopped": True}
  assert int(state["step"]) == stopped_at
  np.testing.assert_array_equal(state["w"], np.arange(4096, dtype=np.float32) + stopped_at)


def test_saving_replicated_arrays_on_cpu_compiles_nothing(tmp_path, num_devices):
  """On CPU a replicated array is written from one replica: Orbax's default would slice it
  per replica, one XLA compile per (shape, device) on the first save (8 here per shape)."""
  mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  shapes = [(24, 3), (40,), (16, 3, 2)]  # divisible by 8 replicas; saved by no other test
  state = {f"a{i}": jax.device_put(jnp.ones(s, jnp.float32), NamedSharding(mesh, P()))
           for i, s in enumerate(shapes)}
  compiles = []

  def count(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(duration)

  jax.monitoring.register_event_duration_secs_listener(count)
  try:
    with checkpointing.Checkpointer(tmp_path) as ckpt:
      assert ckpt.save(1, state)
      ckpt.wait()
  finally:
    jax.monitoring.unregister_event_duration_listener(count)
  assert compiles == []
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    restored, _ = ckpt.restore(1, checkpointing.abstract_like(state))
  _assert_same_values(restored, state)
