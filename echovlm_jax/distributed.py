"""Multi-host set-up and the device mesh.

`jax.distributed.initialize()` runs only when a launcher asks for it (see
`maybe_initialize`); a single-host run never touches it.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves sizes (one may be -1 = the rest) into a shape over MESH_AXES."""
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  unknown = [i for i, s in enumerate(sizes) if s == -1]
  if len(unknown) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if unknown:
    if num_devices % known:
      raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not "
                       f"divisible by {known}.")
    sizes[unknown[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"but {num_devices} are available; set one axis to -1 to use the rest.")
  return tuple(sizes)


def create_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None
                ) -> jax.sharding.Mesh:
  """A mesh with axes (data, fsdp, tensor) in Auto mode (GSPMD-style propagation)."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


# --- Multi-host initialisation -------------------------------------------------
# Environment variables a launcher sets (launch/README.md):
#   ECHOVLM_DISTRIBUTED=1        ask for jax.distributed.initialize(); unset / 0 = single host.
#   ECHOVLM_COORDINATOR=host:port, ECHOVLM_NUM_PROCESSES=N, ECHOVLM_PROCESS_ID=i
#                                explicit cluster (plain GPU clusters, local multi-process runs).
#                                Without them jax auto-detects TPU VMs / xpk, SLURM, Open MPI, k8s.
#   ECHOVLM_LOCAL_DEVICE_IDS=0,1 optional: the accelerators this process drives.
ENV_DISTRIBUTED = "ECHOVLM_DISTRIBUTED"
ENV_COORDINATOR = "ECHOVLM_COORDINATOR"
ENV_NUM_PROCESSES = "ECHOVLM_NUM_PROCESSES"
ENV_PROCESS_ID = "ECHOVLM_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "ECHOVLM_LOCAL_DEVICE_IDS"
_TRUE = ("1", "true", "yes", "on")


def distributed_requested(environ: Mapping[str, str] | None = None) -> bool:
  """Whether the launcher asked for multi-host initialisation (ECHOVLM_DISTRIBUTED)."""
  environ = os.environ if environ is None else environ
  return environ.get(ENV_DISTRIBUTED, "").strip().lower() in _TRUE


def initialize_kwargs(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
  """Arguments for `jax.distributed.initialize` from the environment.

  None: not requested (single host). {}: let jax auto-detect the cluster
  (TPU VM metadata, SLURM_* variables, Open MPI, k8s). Otherwise explicit
  coordinator_address / num_processes / process_id (and local_device_ids).
  """
  environ = os.environ if environ is None else environ
  if not distributed_requested(environ):
    return None
  kwargs: dict[str, Any] = {}
  if environ.get(ENV_COORDINATOR):
    missing = [v for v in (ENV_NUM_PROCESSES, ENV_PROCESS_ID) if not environ.get(v)]
    if missing:
      raise ValueError(f"{ENV_COORDINATOR} is set, so {' and '.join(missing)} must be set too "
                       "(the number of processes and this process's index, 0-based).")
    kwargs.update(coordinator_address=environ[ENV_COORDINATOR],
                  num_processes=int(environ[ENV_NUM_PROCESSES]),
                  process_id=int(environ[ENV_PROCESS_ID]))
    if not 0 <= kwargs["process_id"] < kwargs["num_processes"]:
      raise ValueError(f"{ENV_PROCESS_ID}={kwargs['process_id']} must be in "
                       f"[0, {ENV_NUM_PROCESSES}={kwargs['num_processes']}).")
  if environ.get(ENV_LOCAL_DEVICE_IDS):
    kwargs["local_device_ids"] = [int(i) for i in environ[ENV_LOCAL_DEVICE_IDS].split(",")]
  return kwargs


def maybe_initialize(environ: Mapping[str, str] | None = None) -> bool:
  """Calls `jax.distributed.initialize` when ECHOVLM_DISTRIBUTED asks for it.

  Must run before anything touches a jax backend (jax.devices(), an array).
  Returns True when this process is (now) part of a multi-process run.
  Idempotent: a second call is a no-op.
  """
  kwargs = initialize_kwargs(environ)
  if kwargs is None:
    return False
  if jax.distributed.is_initialized():
    return True
  # CPU processes exchange collectives over gloo (the TCP store of the
  # coordinator); accelerators use their own interconnect and ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("jax.distributed.initialize(%s)", kwargs or "auto-detected cluster")
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local / %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def host_info() -> dict[str, Any]:
  """This process's place in the run, for logs and metric files."""
  return dict(
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      local_device_count=jax.local_device_count(),
      device_count=jax.device_count(),
      platform=jax.default_backend(),
      local_devices=[str(d) for d in jax.local_devices()],
      hostname=socket.gethostname(),
  )
