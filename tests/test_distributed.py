"""Multi-host set-up: two real local processes (4 fake CPU devices each) train
like one process with 8 devices; `maybe_initialize` reads the launcher's
environment and is a no-op on a single host."""

import json
import signal

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from echovlm_jax import distributed
from echovlm_jax.train import checkpointing
import multiprocess_utils
import multiprocess_worker

NUM_STEPS = 5


def _result(stdout: str) -> dict:
  """The worker's JSON line (gloo prints its own chatter on stdout too)."""
  return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def test_two_processes_match_one_process_with_8_devices(tmp_path, num_devices):
  outs = multiprocess_utils.run_workers(
      ["tests/multiprocess_worker.py", str(NUM_STEPS), str(tmp_path)],
      num_processes=2, devices_per_process=4, timeout=120)
  results = [_result(o) for o in outs]
  assert [r["process_index"] for r in results] == [0, 1]
  for r in results:
    assert r["multi"] and r["process_count"] == 2
    assert r["local_device_count"] == 4 and r["device_count"] == 8
  # In-process reference: the same computation on this process's 8 devices.
  reference, params = multiprocess_worker.train_linear(NUM_STEPS)
  assert reference[-1] < reference[0] / 10  # it does train
  for r in results:
    np.testing.assert_allclose(r["losses"], reference, rtol=1e-6)
  # The two processes' collective checkpoint restores here, onto a (2, 2, 2) mesh.
  mesh = distributed.create_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  target = {"w": jax.ShapeDtypeStruct((multiprocess_worker.FEATURES,), np.float32,
                                      sharding=NamedSharding(mesh, P("tensor"))),
            "b": jax.ShapeDtypeStruct((), np.float32, sharding=NamedSharding(mesh, P()))}
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == NUM_STEPS
    restored, extra = ckpt.restore(None, target)
  np.testing.assert_allclose(extra["losses"], reference, rtol=1e-6)
  for k in ("w", "b"):
    np.testing.assert_allclose(restored[k], params[k], rtol=1e-5)
  assert restored["w"].sharding == target["w"].sharding


def test_single_process_worker_is_not_distributed(num_devices):
  (out,) = multiprocess_utils.run_workers(["tests/multiprocess_worker.py", "2"],
                                          num_processes=1, devices_per_process=8)
  result = _result(out)
  assert not result["multi"] and result["process_count"] == 1 and result["device_count"] == 8
  np.testing.assert_allclose(result["losses"], multiprocess_worker.train_linear(2)[0], rtol=1e-6)


@pytest.mark.parametrize("environ", [{}, {"ECHOVLM_DISTRIBUTED": "0"}, {"ECHOVLM_DISTRIBUTED": ""},
                                     {"ECHOVLM_COORDINATOR": "127.0.0.1:1234"}])
def test_maybe_initialize_is_a_noop_unless_asked(environ):
  assert distributed.initialize_kwargs(environ) is None
  assert distributed.maybe_initialize(environ) is False
  assert not jax.distributed.is_initialized()


def test_explicit_cluster_from_echovlm_variables():
  environ = {"ECHOVLM_DISTRIBUTED": "1", "ECHOVLM_COORDINATOR": "10.0.0.1:4321",
             "ECHOVLM_NUM_PROCESSES": "16", "ECHOVLM_PROCESS_ID": "3",
             "ECHOVLM_LOCAL_DEVICE_IDS": "0,1,2,3"}
  assert distributed.initialize_kwargs(environ) == dict(
      coordinator_address="10.0.0.1:4321", num_processes=16, process_id=3,
      local_device_ids=[0, 1, 2, 3])


def test_incomplete_explicit_cluster_names_the_missing_variable():
  with pytest.raises(ValueError, match="ECHOVLM_PROCESS_ID must be set"):
    distributed.initialize_kwargs({"ECHOVLM_DISTRIBUTED": "true",
                                   "ECHOVLM_COORDINATOR": "h:1", "ECHOVLM_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match=r"ECHOVLM_PROCESS_ID=2 must be in \[0, "):
    distributed.initialize_kwargs({"ECHOVLM_DISTRIBUTED": "1", "ECHOVLM_COORDINATOR": "h:1",
                                   "ECHOVLM_NUM_PROCESSES": "2", "ECHOVLM_PROCESS_ID": "2"})


def test_slurm_is_auto_detected(monkeypatch):
  """On SLURM we pass no arguments: jax reads SLURM_* (launch/slurm_gpu.sbatch
  runs one task per GPU, which is what jax's SLURM detection assumes)."""
  slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_NTASKS": "16",
           "SLURM_PROCID": "9", "SLURM_LOCALID": "1"}
  assert distributed.initialize_kwargs({"ECHOVLM_DISTRIBUTED": "1", **slurm}) == {}
  for k, v in slurm.items():
    monkeypatch.setenv(k, v)
  from jax._src import clusters  # what jax.distributed.initialize() consults
  coordinator, count, pid, local_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, 10)
  assert coordinator.startswith("gpu007:") and (count, pid, local_ids) == (16, 9, [1])


def test_host_info(num_devices):
  info = distributed.host_info()
  assert info["process_index"] == 0 and info["process_count"] == 1
  assert info["device_count"] == info["local_device_count"] == 8
  assert info["platform"] == "cpu" and len(info["local_devices"]) == 8


def test_sigterm_on_one_host_stops_all_hosts_at_the_same_step(tmp_path, num_devices):
  """jax's preemption service (not our handler) owns SIGTERM on multi-host
  runs: a signal to ONE process makes every process stop at one agreed step,
  after a collective save of that step."""
  procs = multiprocess_utils.spawn_workers(["tests/preemption_worker.py", str(tmp_path)],
                                           num_processes=2, devices_per_process=4)
  try:
    for line in procs[1].stdout:
      if line.startswith("STEP 5"):
        break
    procs[1].send_signal(signal.SIGTERM)
  finally:
    outs = multiprocess_utils.collect(procs, timeout=120)
  results = [_result(o) for o in outs]
  assert results[0]["stopped"] == results[1]["stopped"] > 5
  assert not results[0]["own_handler"]
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.all_steps() == [results[0]["stopped"]]
