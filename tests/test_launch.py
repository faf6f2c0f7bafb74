"""launch/ scripts: --dry-run prints the exact commands (parsed back with shlex
and checked word by word), flags are validated, and the local multi-process
launcher really runs N cooperating processes."""

import json
import os
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["tpu_pod.sh", "xpk.sh", "slurm_gpu.sbatch", "local_multiprocess.sh", "dataflow_build.sh"]
MAIN = ["-m", "echovlm_jax.main"]


def _launch(script, *args, env=None):
  env = dict(os.environ if env is None else env)
  for k in [k for k in env if k.startswith("SLURM_")]:
    del env[k]
  return subprocess.run(["bash", os.path.join(REPO, "launch", script), *args], cwd=REPO,
                        capture_output=True, text=True, env=env, timeout=120)


def _dry_run(script, *args):
  """The printed commands, each split into argv words."""
  result = _launch(script, "--dry-run", *args)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def _contains(argv, *words):
  """True when `words` appear in `argv` consecutively."""
  n = len(words)
  return any(list(argv[i:i + n]) == list(words) for i in range(len(argv) - n + 1))


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_help(script):
  path = os.path.join(REPO, "launch", script)
  assert subprocess.run(["bash", "-n", path]).returncode == 0
  with open(path) as f:
    assert "set -euo pipefail" in f.read()
  result = _launch(script, "--help")
  assert result.returncode == 0 and "--dry-run" in result.stdout and "Usage" in result.stdout
  bad = _launch(script, "--no-such-flag")
  assert bad.returncode == 2 and "unknown flag --no-such-flag" in bad.stderr


def test_tpu_pod_dry_run():
  cmds = _dry_run("tpu_pod.sh", "--name", "echo-pod", "--zone", "us-west4-a", "--project", "proj",
                  "--workdir", "gs://my-bucket/runs/b16", "--config", "configs/echovlm.py:size=b,res=224",
                  "--accelerator-type", "v5litepod-32", "--spot", "--delete-after",
                  "--", "--config.total_steps=20000")
  create, tar, scp, install, train, delete = cmds
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "echo-pod"
  for words in (("--zone", "us-west4-a"), ("--project", "proj"),
                ("--accelerator-type", "v5litepod-32"), ("--spot",)):
    assert _contains(create, *words), create
  assert tar[0] == "tar" and "--exclude=.venv" in tar
  assert scp[4] == "scp" and "--worker=all" in scp and tar[2] in scp
  assert install[4] == "ssh" and "--worker=all" in install
  assert "pip install" in install[-1] and "jax[tpu]==" in install[-1]
  assert train[4] == "ssh" and "--worker=all" in train and train[-2] == "--command"
  remote = shlex.split(train[-1])
  assert "ECHOVLM_DISTRIBUTED=1" in remote and _contains(remote, *MAIN)
  assert _contains(remote, "--config", "configs/echovlm.py:size=b,res=224")
  assert _contains(remote, "--workdir", "gs://my-bucket/runs/b16") and remote[-1] == "--config.total_steps=20000"
  assert delete[4] == "delete" and "--quiet" in delete


def test_tpu_pod_relaunch_skips_create_and_install_and_validates():
  cmds = _dry_run("tpu_pod.sh", "--name", "p", "--zone", "z", "--workdir", "gs://b/w",
                  "--skip-create", "--skip-install", "--detach")
  assert len(cmds) == 1 and cmds[0][4] == "ssh" and "nohup" in cmds[0][-1]
  local = _launch("tpu_pod.sh", "--dry-run", "--name", "p", "--zone", "z", "--workdir", "/tmp/w")
  assert local.returncode == 2 and "gs://" in local.stderr
  missing = _launch("tpu_pod.sh", "--dry-run", "--zone", "z", "--workdir", "gs://b/w")
  assert missing.returncode == 2 and "--name is required" in missing.stderr


def test_xpk_dry_run():
  cmds = _dry_run("xpk.sh", "--cluster", "tpu-cluster", "--workload", "echo-1", "--tpu-type",
                  "v5litepod-256", "--num-slices", "2", "--workdir", "gs://bkt/run", "--zone", "us-east5-b",
                  "--", "--config.batch_size=4096")
  xpk = cmds[-1]
  assert xpk[:3] == ["xpk", "workload", "create"]
  for words in (("--cluster", "tpu-cluster"), ("--workload", "echo-1"), ("--tpu-type", "v5litepod-256"),
                ("--num-slices", "2"), ("--zone", "us-east5-b")):
    assert _contains(xpk, *words), xpk
  staged = xpk[xpk.index("--script-dir") + 1]
  assert any(c[0] == "tar" and staged in c for c in cmds[:-1])   # a clean copy, no .venv
  command = xpk[xpk.index("--command") + 1]
  assert "ECHOVLM_DISTRIBUTED=1 python -m echovlm_jax.main" in command
  assert "--workdir gs://bkt/run" in command and command.endswith("--config.batch_size=4096")
  assert _launch("xpk.sh", "--dry-run", "--workdir", "gs://b/r").returncode == 2


def test_slurm_dry_run_and_batch_header():
  (srun,) = _dry_run("slurm_gpu.sbatch", "--workdir", "/shared/runs/a", "--config",
                     "configs/echovlm.py:size=s", "--", "--config.batch_size=1024")
  assert srun[0] == "srun" and "--kill-on-bad-exit=1" in srun
  assert "--export=ALL,ECHOVLM_DISTRIBUTED=1" in srun and _contains(srun, *MAIN)
  assert _contains(srun, "--config", "configs/echovlm.py:size=s")
  assert _contains(srun, "--workdir", "/shared/runs/a") and srun[-1] == "--config.batch_size=1024"
  with open(os.path.join(REPO, "launch", "slurm_gpu.sbatch")) as f:
    header = dict(line[len("#SBATCH "):].strip().lstrip("-").split("=", 1)
                  for line in f if line.startswith("#SBATCH") and "=" in line)
  # jax's SLURM detection gives task i the GPU SLURM_LOCALID: one task per GPU.
  assert header["ntasks-per-node"] == header["gpus-per-node"]
  assert header["signal"].startswith("TERM@")
  outside = _launch("slurm_gpu.sbatch", "--workdir", "/tmp/w")
  assert outside.returncode == 2 and "not inside a SLURM job" in outside.stderr


def test_local_multiprocess_dry_run():
  cmds = _dry_run("local_multiprocess.sh", "--workdir", "/tmp/w", "--num-processes", "3",
                  "--devices-per-process", "2", "--port", "23456", "--", "--config.total_steps=4")
  assert len(cmds) == 3
  for i, argv in enumerate(cmds):
    assert argv[0] == "env" and f"ECHOVLM_PROCESS_ID={i}" in argv
    for word in ("ECHOVLM_DISTRIBUTED=1", "ECHOVLM_COORDINATOR=127.0.0.1:23456",
                 "ECHOVLM_NUM_PROCESSES=3", "XLA_FLAGS=--xla_force_host_platform_device_count=2",
                 "JAX_PLATFORMS=cpu"):
      assert word in argv, argv
    assert _contains(argv, *MAIN) and _contains(argv, "--config", "configs/echovlm.py:runlocal")
    assert _contains(argv, "--workdir", "/tmp/w") and argv[-1] == "--config.total_steps=4"
  no_workdir = _launch("local_multiprocess.sh", "--dry-run")
  assert no_workdir.returncode == 2 and "--workdir is required" in no_workdir.stderr


def test_local_multiprocess_really_runs_two_processes(tmp_path):
  env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "tests"))
  result = _launch("local_multiprocess.sh", "--module", "multiprocess_worker", "--log-dir",
                   str(tmp_path), "--", "3", env=env)
  assert result.returncode == 0, result.stderr
  logs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
  results = [json.loads([l for l in log.splitlines() if l.startswith("{")][-1]) for log in logs]
  assert [r["process_index"] for r in results] == [0, 1]
  assert all(r["process_count"] == 2 and r["device_count"] == 8 for r in results)
  assert results[0]["losses"] == results[1]["losses"] and len(results[0]["losses"]) == 3


def test_local_multiprocess_failure_stops_the_rest(tmp_path):
  result = _launch("local_multiprocess.sh", "--module", "no_such_module_xyz", "--log-dir",
                   str(tmp_path))
  assert result.returncode != 0 and "stopping the others" in result.stderr


def test_dataflow_build_dry_run():
  cmds = _dry_run("dataflow_build.sh", "--manual-dir", "gs://b/mimic", "--data-dir", "gs://b/tfds",
                  "--project", "proj", "--region", "us-central1", "--max-workers", "40",
                  "--beam-option", "save_main_session=False", "--", "--config.input.image_size=224")
  wheel, build = cmds
  assert wheel[1:4] == ["-m", "pip", "wheel"] and "--no-deps" in wheel
  assert _contains(build, "-m", "echovlm_jax.data.build")
  for word in ("--config.input.builder_config=mimic", "--config.input.manual_dir=gs://b/mimic",
               "--config.input.data_dir=gs://b/tfds"):
    assert word in build
  opts = dict(kv.split("=", 1) for kv in next(
      w for w in build if w.startswith("--beam_pipeline_options=")).split("=", 1)[1].split(","))
  assert opts["runner"] == "DataflowRunner" and opts["project"] == "proj"
  assert opts["region"] == "us-central1" and opts["max_num_workers"] == "40"
  assert opts["temp_location"] == "gs://b/tfds/beam_tmp" and opts["save_main_session"] == "False"
  assert opts["extra_packages"].endswith(".whl") and opts["requirements_file"].endswith("requirements.txt")
  assert build[-1] == "--config.input.image_size=224"
  # Dataflow workers cannot read a local tree; a Spark cluster needs its master.
  assert _launch("dataflow_build.sh", "--dry-run", "--manual-dir", "/data/mimic", "--data-dir",
                 "gs://b/t", "--project", "p", "--region", "r").returncode == 2
  assert _launch("dataflow_build.sh", "--dry-run", "--manual-dir", "/d", "--data-dir", "/t",
                 "--runner", "SparkRunner").returncode == 2
  (local,) = _dry_run("dataflow_build.sh", "--manual-dir", "/d", "--data-dir", "/t", "--runner",
                      "DirectRunner", "--workers", "2")
  assert any(w.startswith("--beam_pipeline_options=runner=DirectRunner,direct_num_workers=2,"
                          "direct_running_mode=multi_processing") for w in local)
