#!/usr/bin/env bash
# benchmarks/gpu_check.sh on a lent device machine (the workplace's `device` tool), after
# benchmarks/device_prep.sh filled .device/ here. That machine's python3 has a CUDA torch but not
# all of lmforge's dependencies and no network: the wheels from .device/ go into /tmp/site, lmforge
# runs from src/ (nothing is installed into the image), and the log is copied to $OUT.
#
#   device run, carry [".device"]:  bash benchmarks/gpu_device.sh [--cpu] [speed] [shakespeare] [decode] [plan] [tasks]
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -d .device/wheels ]; then
  echo "gpu_device.sh: no .device/wheels: run benchmarks/device_prep.sh first and carry .device" >&2
  exit 2
fi
SITE=${SITE:-/tmp/site}
PYTHON=${PYTHON:-python3}  # the image's, with its CUDA torch
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  .device/wheels/*.whl || exit 2
export PYTHONPATH="$SITE:$PWD/src" PYTHONUNBUFFERED=1 PYTHON
[ -f .device/tinyshakespeare.txt ] && export TINYSHAKESPEARE=$PWD/.device/tinyshakespeare.txt
LOG=${OUT:-/tmp}/gpu_check.log
"$PYTHON" -c "import deepspeed, datatrove, lmforge, torch; print('# lmforge from', lmforge.__file__)" 2>&1 | tail -1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; } | tee "$LOG"
bash benchmarks/gpu_check.sh "$@" 2>&1 | tee -a "$LOG"
