#!/usr/bin/env bash
# Builds the `mimic` dataset (the whole MIMIC-IV-ECHO release, ~525k DICOMs) on Apache Beam:
# Google Cloud Dataflow by default, or a Spark / Flink cluster with --runner. The same build
# as `python -m echovlm_jax.data.build` on one machine, spread over workers.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/dataflow_build.sh --manual-dir gs://B/mimic-iv-echo --data-dir gs://B/tfds \
         --project P --region R [options] [-- BUILD_FLAGS...]

Options:
  --manual-dir DIR        the release (+ ECHOVIEW's CSV), gs:// for Dataflow (required)
  --data-dir DIR          where the dataset is written, gs:// for Dataflow (required)
  --runner R              DataflowRunner (default), SparkRunner, FlinkRunner or DirectRunner
  --project P, --region R Google Cloud project and region (required for DataflowRunner)
  --temp-location DIR     Dataflow's staging / temp bucket (default DATA_DIR/beam_tmp)
  --max-workers N         Dataflow autoscaling cap (default 50: see docs/performance.md)
  --machine-type T        Dataflow worker type (default n2-standard-4)
  --master URL            Spark / Flink master (spark_master_url / flink_master)
  --workers N             DirectRunner worker processes (default: CPU count)
  --beam-option K=V       any further Beam pipeline option (repeatable)
  --python PY             interpreter (default .venv/bin/python, else python3)
  --dry-run               print the exact commands instead of running them
  -h, --help              this help
Everything after `--` goes to echovlm_jax.data.build, e.g. -- --config.input.image_size=224
Workers get this repository as a wheel (built into dist/) and requirements.txt.
USAGE
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MANUAL="" DATA="" RUNNER="DataflowRunner" PROJECT="" REGION="" TEMP="" MAX_WORKERS=50
MACHINE="n2-standard-4" MASTER="" WORKERS="" PY="" EXTRA=() BUILD_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --manual-dir|--data-dir|--runner|--project|--region|--temp-location|--max-workers|\
    --machine-type|--master|--workers|--beam-option|--python)
      [[ $# -ge 2 ]] || die "$1 needs a value."
      case "$1" in
        --manual-dir) MANUAL="$2" ;; --data-dir) DATA="$2" ;; --runner) RUNNER="$2" ;;
        --project) PROJECT="$2" ;; --region) REGION="$2" ;; --temp-location) TEMP="$2" ;;
        --max-workers) MAX_WORKERS="$2" ;; --machine-type) MACHINE="$2" ;; --master) MASTER="$2" ;;
        --workers) WORKERS="$2" ;; --beam-option) EXTRA+=("$2") ;; --python) PY="$2" ;;
      esac
      shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; BUILD_ARGS=("$@"); break ;;
    *) die "unknown flag $1 (see --help)." ;;
  esac
done
require MANUAL "$MANUAL" --manual-dir
require DATA "$DATA" --data-dir
[[ "$MAX_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--max-workers must be a positive integer, got $MAX_WORKERS."
if [[ -z "$PY" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi

OPTIONS=("runner=$RUNNER")
case "$RUNNER" in
  DataflowRunner)
    require PROJECT "$PROJECT" --project
    require REGION "$REGION" --region
    [[ "$MANUAL" == gs://* && "$DATA" == gs://* ]] ||
      die "Dataflow workers read and write Cloud Storage: --manual-dir and --data-dir must be gs:// paths."
    WHEEL="$REPO/dist/echovlm_jax-0.1.0-py3-none-any.whl"
    run "$PY" -m pip wheel --no-deps --quiet -w "$REPO/dist" "$REPO"
    OPTIONS+=("project=$PROJECT" "region=$REGION" "temp_location=${TEMP:-$DATA/beam_tmp}"
              "max_num_workers=$MAX_WORKERS" "machine_type=$MACHINE"
              "requirements_file=$REPO/requirements.txt" "extra_packages=$WHEEL"
              "experiments=use_runner_v2") ;;
  SparkRunner)
    require MASTER "$MASTER" --master
    OPTIONS+=("spark_master_url=$MASTER" "environment_type=LOOPBACK") ;;
  FlinkRunner)
    require MASTER "$MASTER" --master
    OPTIONS+=("flink_master=$MASTER" "environment_type=LOOPBACK") ;;
  DirectRunner)
    OPTIONS+=("direct_num_workers=${WORKERS:-$(nproc)}" "direct_running_mode=multi_processing") ;;
  *) die "--runner must be DataflowRunner, SparkRunner, FlinkRunner or DirectRunner, got $RUNNER." ;;
esac
OPTIONS+=("${EXTRA[@]}")
JOINED="$(IFS=,; echo "${OPTIONS[*]}")"

cd "$REPO"
run "$PY" -m echovlm_jax.data.build --config configs/echovlm.py \
  --config.input.builder_config=mimic "--config.input.manual_dir=$MANUAL" \
  "--config.input.data_dir=$DATA" "--beam_pipeline_options=$JOINED" "${BUILD_ARGS[@]}"
