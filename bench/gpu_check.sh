#!/usr/bin/env bash
# One GPU check of the whole path in under 8 minutes: the default stream on cuda in bf16 on a mid-size random
# Mixtral, `clbench plan` against the measured peak memory, the metrics computed on the device; one table.
# --cpu (or CLBENCH_GPU_CHECK_DEVICE=cpu) runs the same path on the CPU with a tiny budget. Other options:
# bench/gpu_check.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
exec "$PYTHON" bench/gpu_check.py "$@"
