#!/usr/bin/env bash
# Submits training as an xpk workload on a GKE cluster of TPU slices: xpk
# builds an image from this repo on top of a base image and runs
# `python -m echovlm_jax.main` on every host of every slice.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/xpk.sh --cluster C --workdir gs://BUCKET/PATH [options] [-- MAIN_FLAGS...]

Required:
  --cluster C             xpk / GKE cluster name (create it with `xpk cluster create`)
  --workdir gs://B/P      checkpoints + metrics in a bucket (a restarted workload resumes there)
Options:
  --workload W            workload name (default echovlm-<UTC time>)
  --project P, --zone Z   GCP project and zone (default: gcloud's configuration)
  --tpu-type T            slice type (default v5litepod-16)
  --num-slices N          slices; more than 1 = multislice over DCN (default 1)
  --base-docker-image I   image the repo is layered on (default python:3.11-slim)
  --max-restarts N        restarts after a failure / preemption, each resumes (default 3)
  --config C              config file[:ARG] (default configs/echovlm.py)
  --dry-run               print the exact command instead of running it
  -h, --help              this help
Everything after `--` goes to echovlm_jax.main, e.g. -- --config.batch_size=4096
USAGE
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

CLUSTER="" WORKDIR="" WORKLOAD="echovlm-$(date -u +%Y%m%d-%H%M%S)" PROJECT="" ZONE=""
TPU_TYPE="v5litepod-16" NUM_SLICES=1 BASE_IMAGE="python:3.11-slim" MAX_RESTARTS=3
CONFIG="configs/echovlm.py"
MAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster|--workdir|--workload|--project|--zone|--tpu-type|--num-slices|--base-docker-image|--max-restarts|--config)
      [[ $# -ge 2 ]] || die "$1 needs a value."
      case "$1" in
        --cluster) CLUSTER="$2" ;; --workdir) WORKDIR="$2" ;; --workload) WORKLOAD="$2" ;;
        --project) PROJECT="$2" ;; --zone) ZONE="$2" ;; --tpu-type) TPU_TYPE="$2" ;;
        --num-slices) NUM_SLICES="$2" ;; --base-docker-image) BASE_IMAGE="$2" ;;
        --max-restarts) MAX_RESTARTS="$2" ;; --config) CONFIG="$2" ;;
      esac
      shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; MAIN_ARGS=("$@"); break ;;
    *) die "unknown flag $1 (see --help)." ;;
  esac
done
require CLUSTER "$CLUSTER" --cluster
require WORKDIR "$WORKDIR" --workdir
[[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path (pods are ephemeral), got $WORKDIR."

JAX_VERSION="$(sed -n 's/^jax==//p' "$REPO/requirements.txt")"
# Runs inside the container in the copied script dir, on every host.
COMMAND="pip install -q -r requirements.txt 'jax[tpu]==$JAX_VERSION' && pip install -q --no-deps -e ."
COMMAND+=" && ECHOVLM_DISTRIBUTED=1 python -m echovlm_jax.main"
COMMAND+=" $(quote_cmd --config "$CONFIG" --workdir "$WORKDIR" "${MAIN_ARGS[@]}")"

# A clean copy of the repo for the image (xpk copies --script-dir into it whole).
STAGE="${TMPDIR:-/tmp}/echovlm_xpk_$WORKLOAD"
TARBALL="$STAGE.tgz"
run tar -czf "$TARBALL" -C "$REPO" --exclude=.venv --exclude=.git --exclude=./data \
  --exclude='./workdir*' --exclude=./tmp --exclude=__pycache__ .
run mkdir -p "$STAGE"
run tar -xzf "$TARBALL" -C "$STAGE"

ARGS=(workload create --cluster "$CLUSTER" --workload "$WORKLOAD" --tpu-type "$TPU_TYPE"
      --num-slices "$NUM_SLICES" --base-docker-image "$BASE_IMAGE" --script-dir "$STAGE"
      --max-restarts "$MAX_RESTARTS" --command "$COMMAND")
[[ -n "$PROJECT" ]] && ARGS+=(--project "$PROJECT")
[[ -n "$ZONE" ]] && ARGS+=(--zone "$ZONE")
run xpk "${ARGS[@]}"
