#!/usr/bin/env bash
# benchmarks/gpu_check.sh on a lent device machine (the workplace's `device` tool), after
# benchmarks/device_prep.sh filled .device/ here. That machine's python3 has a CUDA torch but not
# all of lmforge's dependencies and no network: the wheels from .device/ go into /tmp/site, lmforge
# runs from src/ (nothing is installed into the image), and the log is copied to $OUT.
#
#   device run, carry [".device"]:
#     bash benchmarks/gpu_device.sh [--cpu] [--deadline S] [PART[:CAP] ...]
#
# Each part (speed, shakespeare, decode, plan, tasks) runs as its own gpu_check.sh, so one that
# fails costs only itself. PART:CAP stops that part after CAP seconds; --deadline S stops every part
# S seconds after this script began and skips those that would start with under 30 s left, so one
# command ends inside the call's limit. The parts share one work folder: every run's summary.json
# and metrics.jsonl, a stopped run's too, come back in $OUT/gpu_runs.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=()
if [ "${1:-}" = "--cpu" ]; then DRY=(--cpu); shift; fi
DEADLINE=0
if [ "${1:-}" = "--deadline" ]; then DEADLINE=$2; shift 2; fi
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(speed shakespeare decode plan tasks)
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
export GPU_CHECK_WORK=${GPU_CHECK_WORK:-/tmp/gpu-check-work}
mkdir -p "$GPU_CHECK_WORK"
OUTDIR=${OUT:-/tmp}
LOG=$OUTDIR/gpu_check.log
"$PYTHON" -c "import deepspeed, datatrove, lmforge, torch; print('# lmforge from', lmforge.__file__)" 2>&1 | tail -1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; } | tee "$LOG"
echo "# wheels installed after $SECONDS s" | tee -a "$LOG"

for spec in "${PARTS[@]}"; do
  part=${spec%%:*}
  cap=0
  [ "$spec" != "$part" ] && cap=${spec#*:}
  if [ "$DEADLINE" -gt 0 ]; then
    left=$((DEADLINE - SECONDS))
    if [ $left -lt 30 ]; then
      echo "## $part: skipped, $left s left before the $DEADLINE s deadline" | tee -a "$LOG"
      continue
    fi
    if [ "$cap" -eq 0 ] || [ "$cap" -gt $left ]; then cap=$left; fi
  fi
  start=$SECONDS
  # timeout signals the part's whole process group, so a stopped part leaves no trainer behind
  timeout --kill-after=15 "$cap" bash benchmarks/gpu_check.sh "${DRY[@]}" "$part" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  note=""
  [ "$rc" = 124 ] && note=", stopped at its $cap s cap"
  echo "## $part: exit $rc after $((SECONDS - start)) s$note" | tee -a "$LOG"
done

echo "## every run" | tee -a "$LOG"
bash benchmarks/gpu_check.sh "${DRY[@]}" table 2>&1 | tee -a "$LOG"
(cd "$GPU_CHECK_WORK" && find . \( -name summary.json -o -name metrics.jsonl \) -print0 \
  | tar -czf "$OUTDIR/gpu_runs.tar.gz" --null -T -) 2>&1 | tee -a "$LOG"
echo "# done after $SECONDS s" | tee -a "$LOG"
