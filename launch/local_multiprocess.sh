#!/usr/bin/env bash
# Runs N cooperating JAX processes on this machine, each with D fake CPU
# devices, wired through ECHOVLM_COORDINATOR=127.0.0.1:PORT: a multi-host run
# without a cluster, for debugging sharding and checkpoints before a pod.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/local_multiprocess.sh --workdir DIR [options] [-- MAIN_FLAGS...]

Options:
  --workdir DIR             checkpoints + metrics (required for echovlm_jax.main)
  --config C                config file[:ARG] (default configs/echovlm.py:runlocal)
  --num-processes N         processes (default 2)
  --devices-per-process D   fake CPU devices per process (default 4)
  --port P                  coordinator port on 127.0.0.1 (default: a free one)
  --python PY               interpreter (default .venv/bin/python, else python3)
  --module M                run `python -m M` instead of echovlm_jax.main (--config and
                            --workdir are then passed only when given)
  --log-dir DIR             per-process logs process_<i>.log (default WORKDIR/logs, else
                            ./multiprocess_logs); process 0 also prints to the terminal
  --dry-run                 print the exact commands instead of running them
  -h, --help                this help
Ctrl-C / SIGTERM is forwarded to every process (they save a checkpoint and stop).
Everything after `--` goes to the module, e.g. -- --config.total_steps=20
USAGE
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
(( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )) ||
  die "needs bash >= 5.1 (wait -n -p), this is $BASH_VERSION."
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

WORKDIR="" CONFIG="" NUM=2 DEVICES=4 PORT="" PY="" MODULE="echovlm_jax.main" LOG_DIR=""
MAIN_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workdir|--config|--num-processes|--devices-per-process|--port|--python|--module|--log-dir)
      [[ $# -ge 2 ]] || die "$1 needs a value."
      case "$1" in
        --workdir) WORKDIR="$2" ;; --config) CONFIG="$2" ;; --num-processes) NUM="$2" ;;
        --devices-per-process) DEVICES="$2" ;; --port) PORT="$2" ;; --python) PY="$2" ;;
        --module) MODULE="$2" ;; --log-dir) LOG_DIR="$2" ;;
      esac
      shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; MAIN_ARGS=("$@"); break ;;
    *) die "unknown flag $1 (see --help)." ;;
  esac
done
[[ "$NUM" =~ ^[1-9][0-9]*$ ]] || die "--num-processes must be a positive integer, got $NUM."
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || die "--devices-per-process must be a positive integer, got $DEVICES."
if [[ "$MODULE" == echovlm_jax.main ]]; then
  require WORKDIR "$WORKDIR" --workdir
  CONFIG="${CONFIG:-configs/echovlm.py:runlocal}"
fi
if [[ -z "$PY" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
if [[ -z "$PORT" ]]; then
  PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
if [[ -z "$LOG_DIR" ]]; then
  if [[ -n "$WORKDIR" ]]; then LOG_DIR="$WORKDIR/logs"; else LOG_DIR="$PWD/multiprocess_logs"; fi
fi

CMD=("$PY" -m "$MODULE")
[[ -n "$CONFIG" ]] && CMD+=(--config "$CONFIG")
[[ -n "$WORKDIR" ]] && CMD+=(--workdir "$WORKDIR")
CMD+=("${MAIN_ARGS[@]}")

if [[ "$DRY_RUN" == 1 ]]; then
  for ((i = 0; i < NUM; i++)); do
    quote_cmd env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES" \
      ECHOVLM_DISTRIBUTED=1 "ECHOVLM_COORDINATOR=127.0.0.1:$PORT" "ECHOVLM_NUM_PROCESSES=$NUM" \
      "ECHOVLM_PROCESS_ID=$i" "${CMD[@]}"
  done
  exit 0
fi

mkdir -p "$LOG_DIR"
PIDS=()
stop_all() {  # forward the signal: each process saves and exits on its own
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop_all INT TERM
for ((i = 0; i < NUM; i++)); do
  export JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES" \
    ECHOVLM_DISTRIBUTED=1 ECHOVLM_COORDINATOR="127.0.0.1:$PORT" ECHOVLM_NUM_PROCESSES="$NUM" \
    ECHOVLM_PROCESS_ID="$i"
  if [[ $i == 0 ]]; then
    "${CMD[@]}" > >(tee "$LOG_DIR/process_0.log") 2>&1 &
  else
    "${CMD[@]}" > "$LOG_DIR/process_$i.log" 2>&1 &
  fi
  PIDS+=($!)
done
echo "started $NUM processes (pids ${PIDS[*]}), coordinator 127.0.0.1:$PORT, logs in $LOG_DIR" >&2

# The first failure stops the others (they would wait forever in a collective).
declare -A LEFT=()
for pid in "${PIDS[@]}"; do LEFT[$pid]=1; done
STATUS=0
while (( ${#LEFT[@]} )); do
  FINISHED="" rc=0
  wait -n -p FINISHED || rc=$?
  if [[ -z "$FINISHED" ]]; then   # a trapped signal interrupted the wait, or no child is left
    [[ $rc == 127 ]] && break
    continue
  fi
  [[ -n "${LEFT[$FINISHED]:-}" ]] || continue   # the tee behind process 0's output
  unset "LEFT[$FINISHED]"
  if (( rc != 0 && STATUS == 0 )); then
    STATUS=$rc
    echo "process $FINISHED exited with status $rc; stopping the others (logs: $LOG_DIR)" >&2
    for pid in "${!LEFT[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
done
exit "$STATUS"
