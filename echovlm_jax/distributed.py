"""Multi-host set-up and the device mesh.

`jax.distributed.initialize()` runs only when a launcher asks for it (see
`maybe_initialize`); a single-host run never touches it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

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
