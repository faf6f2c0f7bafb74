#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: creates the slice, copies this repo to
# every worker, installs it and runs `python -m echovlm_jax.main` on all of
# them at once (--worker=all), with checkpoints and metrics in a gs:// workdir.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/tpu_pod.sh --name NAME --zone ZONE --workdir gs://BUCKET/PATH [options] [-- MAIN_FLAGS...]

Required:
  --name NAME             TPU VM name (created unless --skip-create)
  --zone ZONE             e.g. us-west4-a
  --workdir gs://B/P      checkpoints + metrics; must be a bucket so every host (and a
                          resumed run on a new slice) sees the same checkpoints
Options:
  --project P             GCP project (default: gcloud's configured project)
  --accelerator-type T    slice type (default v5litepod-16 = 4 hosts x 4 chips)
  --version V             TPU VM runtime image (default v2-alpha-tpuv5-lite)
  --config C              config file[:ARG] (default configs/echovlm.py)
  --python PY             interpreter on the workers (default python3.11)
  --spot                  create a Spot slice (preemptible; the run resumes from the bucket)
  --skip-create           the slice already exists
  --skip-install          code and packages are already on the workers (re-launch)
  --detach                run in the background on the workers (log: ~/echovlm/train.log)
  --delete-after          delete the slice when training returns
  --dry-run               print the exact commands instead of running them
  -h, --help              this help
Everything after `--` goes to echovlm_jax.main, e.g. -- --config.total_steps=20000
USAGE
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

NAME="" ZONE="" WORKDIR="" PROJECT="" ACCEL="v5litepod-16" VERSION="v2-alpha-tpuv5-lite"
CONFIG="configs/echovlm.py" PY="python3.11" SPOT=0 CREATE=1 INSTALL=1 DETACH=0 DELETE=0
MAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name|--zone|--workdir|--project|--accelerator-type|--version|--config|--python)
      [[ $# -ge 2 ]] || die "$1 needs a value."
      case "$1" in
        --name) NAME="$2" ;; --zone) ZONE="$2" ;; --workdir) WORKDIR="$2" ;;
        --project) PROJECT="$2" ;; --accelerator-type) ACCEL="$2" ;; --version) VERSION="$2" ;;
        --config) CONFIG="$2" ;; --python) PY="$2" ;;
      esac
      shift 2 ;;
    --spot) SPOT=1; shift ;;
    --skip-create) CREATE=0; shift ;;
    --skip-install) INSTALL=0; shift ;;
    --detach) DETACH=1; shift ;;
    --delete-after) DELETE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; MAIN_ARGS=("$@"); break ;;
    *) die "unknown flag $1 (see --help)." ;;
  esac
done
require NAME "$NAME" --name
require ZONE "$ZONE" --zone
require WORKDIR "$WORKDIR" --workdir
[[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path (every host writes there), got $WORKDIR."

GCLOUD=(gcloud compute tpus tpu-vm)
LOC=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project "$PROJECT")
TARBALL="${TMPDIR:-/tmp}/echovlm_src.tgz"
JAX_VERSION="$(sed -n 's/^jax==//p' "$REPO/requirements.txt")"

if [[ "$CREATE" == 1 ]]; then
  CREATE_ARGS=(--accelerator-type "$ACCEL" --version "$VERSION")
  [[ "$SPOT" == 1 ]] && CREATE_ARGS+=(--spot)
  run "${GCLOUD[@]}" create "$NAME" "${LOC[@]}" "${CREATE_ARGS[@]}"
fi

if [[ "$INSTALL" == 1 ]]; then
  run tar -czf "$TARBALL" -C "$REPO" --exclude=.venv --exclude=.git --exclude=./data \
    --exclude='./workdir*' --exclude=./tmp --exclude=__pycache__ .
  run "${GCLOUD[@]}" scp "$TARBALL" "$NAME:~/echovlm_src.tgz" --worker=all "${LOC[@]}"
  INSTALL_CMD="set -e; sudo apt-get -qq update && sudo apt-get -qq install -y $PY ${PY}-venv;"
  INSTALL_CMD+=" rm -rf ~/echovlm && mkdir -p ~/echovlm && tar -xzf ~/echovlm_src.tgz -C ~/echovlm;"
  INSTALL_CMD+=" cd ~/echovlm && $PY -m venv .venv && .venv/bin/pip install -q -r requirements.txt"
  INSTALL_CMD+=" 'jax[tpu]==$JAX_VERSION' && .venv/bin/pip install -q --no-deps -e ."
  run "${GCLOUD[@]}" ssh "$NAME" --worker=all "${LOC[@]}" --command "$INSTALL_CMD"
fi

# ECHOVLM_DISTRIBUTED=1: every worker joins one jax run; on TPU VMs jax finds
# the coordinator and process ids itself.
TRAIN="cd ~/echovlm && ECHOVLM_DISTRIBUTED=1 .venv/bin/python -m echovlm_jax.main"
TRAIN+=" $(quote_cmd --config "$CONFIG" --workdir "$WORKDIR" "${MAIN_ARGS[@]}")"
[[ "$DETACH" == 1 ]] && TRAIN="cd ~/echovlm && nohup bash -c $(quote_cmd "$TRAIN") > train.log 2>&1 &"
run "${GCLOUD[@]}" ssh "$NAME" --worker=all "${LOC[@]}" --command "$TRAIN"

if [[ "$DELETE" == 1 ]]; then
  run "${GCLOUD[@]}" delete "$NAME" "${LOC[@]}" --quiet
fi
