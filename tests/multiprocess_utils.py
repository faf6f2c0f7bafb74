"""Spawns N local JAX processes (fake CPU devices each) wired together through
the ECHOVLM_* variables `distributed.maybe_initialize` reads; collects stdout.
Reusable by any test that needs a real multi-process run (the trainer's too).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from typing import Mapping, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port nobody listens on right now (for the jax coordinator)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def worker_env(process_id: int, num_processes: int, devices_per_process: int, port: int,
               base: Mapping[str, str] | None = None) -> dict[str, str]:
  """The environment of process `process_id` of a local `num_processes` run."""
  env = dict(os.environ if base is None else base)
  # Replace (not append to) the parent's fake device count, e.g. conftest's 8.
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  if num_processes > 1:
    env.update(ECHOVLM_DISTRIBUTED="1", ECHOVLM_COORDINATOR=f"127.0.0.1:{port}",
               ECHOVLM_NUM_PROCESSES=str(num_processes), ECHOVLM_PROCESS_ID=str(process_id))
  else:
    for k in ("ECHOVLM_DISTRIBUTED", "ECHOVLM_COORDINATOR", "ECHOVLM_NUM_PROCESSES",
              "ECHOVLM_PROCESS_ID"):
      env.pop(k, None)
  return env


def spawn_workers(argv: Sequence[str], num_processes: int, devices_per_process: int, *,
                  cwd: str = REPO, extra_env: Mapping[str, str] | None = None
                  ) -> list[subprocess.Popen]:
  """Starts `python *argv` as `num_processes` cooperating processes (text pipes)."""
  port = free_port()
  procs = []
  for i in range(num_processes):
    env = worker_env(i, num_processes, devices_per_process, port)
    env.update(extra_env or {})
    procs.append(subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  return procs


def collect(procs: Sequence[subprocess.Popen], timeout: float = 180) -> list[str]:
  """Waits for all `procs`; returns their stdouts.

  Raises AssertionError (with every process's stderr tail) if one fails or
  the run exceeds `timeout` seconds; stragglers are killed either way.
  """
  outputs, failed = [], False
  deadline = time.monotonic() + timeout
  try:
    for proc in procs:
      try:
        out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
      except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[timed out after {timeout} s]"
      failed |= proc.returncode != 0
      outputs.append((out, err, proc.returncode))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  if failed:
    report = "\n".join(f"--- process {i} (rc={rc}) stderr tail:\n{err[-2000:]}"
                       for i, (_, err, rc) in enumerate(outputs))
    raise AssertionError(f"{len(procs)}-process run failed:\n{report}")
  return [out for out, _, _ in outputs]


def run_workers(argv: Sequence[str], num_processes: int, devices_per_process: int, *,
                timeout: float = 180, cwd: str = REPO,
                extra_env: Mapping[str, str] | None = None) -> list[str]:
  """Runs `python *argv` as `num_processes` cooperating processes; returns their stdouts."""
  return collect(spawn_workers(argv, num_processes, devices_per_process, cwd=cwd,
                               extra_env=extra_env), timeout=timeout)
