#!/usr/bin/env bash
# The GPU checks, on one CUDA GPU, as parts (default: all, in this order; name some to run those):
# - speed: GPT-2 small (124 M parameters, GPT-2's 50,304-row head, context 1024, batch 16) in bf16
#   for 40 steps on the local engine eager and compiled (train.compile=on), on FSDP2 (compiled) and
#   on DeepSpeed ZeRO-2 at one rank: tokens/s and MFU against the matmul peak lmforge measures on
#   the GPU and the datasheet's dense bf16 peak (issue 18 aims at 50% on an H100/H200).
# - shakespeare: nanoGPT's GPU recipe (configs/shakespeare-char-gpu.toml, 5,000 steps, compiled)
#   on Tiny Shakespeare: its validation loss and time against nanoGPT's 1.4697 in about 3 minutes
#   on an A100. Needs the data: TINYSHAKESPEARE=path (default ../shared/data/tinyshakespeare.txt).
# - decode: benchmarks/bench_generate on the GPU, lmforge against transformers' generate.
# - plan: `lmforge plan --calibrate` for GPT-2 small on this GPU, local and DeepSpeed ZeRO-2 (or
#   PLAN_ENGINES="local fsdp zero1 zero2 zero3"): the planned per-rank model states and peak against
#   the calibration run's memory_per_rank and peak GPU memory.
# - tasks: the shakespeare recipe, translation (300 steps, BLEU) and classification, each on the
#   local engine and DeepSpeed, then benchmarks/gpu_tasks.py decodes, scores, exports and loads
#   back each task's model on the GPU.
# - profile (not in the default set; name it): benchmarks/gpu_profile on the speed part's GPT-2 small,
#   eager and compiled: where a step's time goes (kernels by kind, and the GPU's idle share), each
#   Chrome trace gzipped into $OUT (or the work folder).
# A table of every run's summary.json ends it. Times on an H200 (2026-12-04): speed 137 s,
# shakespeare 96, decode 65, plan 64, tasks 168.
#
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh [speed] [shakespeare] [decode] [plan] [tasks] [profile]
#   bash benchmarks/gpu_check.sh --cpu [parts]   # a dry run on the CPU: tiny shapes, a few steps
#
# PYTHON must have a CUDA torch, deepspeed, transformers and lmforge (`pip install -e .[dev]`).
# On a lent device machine without network: benchmarks/device_prep.sh here, then gpu_device.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
if [ "${1:-}" = "--cpu" ]; then DRY=1; shift; fi
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(speed shakespeare decode plan tasks)
TINY=${TINYSHAKESPEARE:-../shared/data/tinyshakespeare.txt}
# GPU_CHECK_WORK keeps the runs in a folder that outlives the script (gpu_device.sh shares one
# across its parts); otherwise they go into a temporary folder, removed at the end
if [ -n "${GPU_CHECK_WORK:-}" ]; then
  WORK=$GPU_CHECK_WORK; mkdir -p "$WORK"
else
  WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}

if [ $DRY = 1 ]; then
  DEVICE=cpu
  GPT2_SHAPE=(--model.n_layer=2 --model.n_head=2 --model.n_embd=64 --model.block_size=64 --train.batch_size=4)
  STEPS=3; RECIPE_STEPS=(--train.max_steps=20 --train.eval_interval=20); DTYPE=auto
  DECODE=(--shapes 6x384 --new-tokens 8 --rounds 1); PLAN_DEVICE=cpu
else
  DEVICE=cuda
  GPT2_SHAPE=(--model.n_layer=12 --model.n_head=12 --model.n_embd=768 --model.block_size=1024
              --train.batch_size=16)
  STEPS=40; RECIPE_STEPS=(); DTYPE=bf16
  DECODE=(--new-tokens 128 --rounds 3); PLAN_DEVICE=""
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'"
fi
"$PY" -c "import torch; print('#', torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU (dry run)', 'torch', torch.__version__)"

COMMON=(--quiet "--train.dtype=$DTYPE")
# GPT-2 small's shape on the shipped Shakespeare, prepared at character level: the ids use 65 of the
# 50,304 rows, which changes nothing in a step's time or memory
GPT2_KEYS=("--train.dtype=$DTYPE" "${GPT2_SHAPE[@]}" --model.vocab_size=50304 --model.pos=learned
           "--train.max_steps=$STEPS" --train.warmup_steps=5 "--train.eval_interval=$STEPS"
           --train.eval_batches=2 "--train.checkpoint_interval=$STEPS" --train.max_minutes=0)
GPT2=(--quiet "${GPT2_KEYS[@]}")
need_char() {
  [ -d "$WORK/data" ] || "$PY" -m lmforge prep data/shakespeare.jsonl.xz --out "$WORK/data" --tokenizer char >/dev/null
}

speed() {
  need_char
  local data=("--data.input=$WORK/data")
  "$PY" -m lmforge train "${GPT2[@]}" "${data[@]}" --train.compile=off --out "$WORK/gpt2-local"
  "$PY" -m lmforge train "${GPT2[@]}" "${data[@]}" --train.compile=on --out "$WORK/gpt2-local-compiled"
  "$PY" -m lmforge train "${GPT2[@]}" "${data[@]}" --train.compile=on --engine.name=fsdp --out "$WORK/gpt2-fsdp-compiled"
  "$PY" -m lmforge train "${GPT2[@]}" "${data[@]}" --engine.name=deepspeed --engine.zero_stage=2 --out "$WORK/gpt2-zero2"
}

shakespeare() {
  if [ ! -f "$TINY" ]; then
    echo "shakespeare: skipped, no Tiny Shakespeare at $TINY (set TINYSHAKESPEARE=path)"
    return
  fi
  local start=$SECONDS
  "$PY" -m lmforge train configs/shakespeare-char-gpu.toml "${COMMON[@]}" "--data.input=$TINY" \
    --train.compile=on "${RECIPE_STEPS[@]}" --out "$WORK/shakespeare-gpu-recipe"
  echo "shakespeare-char GPU recipe: $((SECONDS - start)) s, the process with its prep and compile"
}

decode() {
  "$PY" -m benchmarks.bench_generate --device "$DEVICE" "${DECODE[@]}" --slow-rounds 0
}

plan() {
  need_char
  local device=$PLAN_DEVICE
  if [ -z "$device" ]; then  # the plan's name for this GPU, where it knows it
    device=$("$PY" -c "import torch; n = torch.cuda.get_device_name().lower(); print(next((d for d in ('h200', 'h100', 'a100', 'l4') if d in n), 'h100'))")
    [ "$device" = a100 ] && device=a100-80
  fi
  # a recipe file: plan reads the engine and shapes from it, as train does
  printf '[data]\ninput = "%s"\n' "$WORK/data" > "$WORK/gpt2.toml"
  local engine
  # PLAN_ENGINES: which engines calibrate (default local and ZeRO-2, about 40 s each on an H200)
  for engine in ${PLAN_ENGINES:-local zero2}; do
    case $engine in
      zero*) set -- --engine.name=deepspeed "--engine.zero_stage=${engine#zero}" ;;
      *) set -- "--engine.name=$engine" ;;
    esac
    "$PY" -m lmforge plan "$WORK/gpt2.toml" "${GPT2_KEYS[@]}" "$@" --device "$device" --calibrate --calibrate-steps 6
  done
}

profile() {
  need_char
  local compile
  for compile in off on; do
    echo "# GPT-2 small, train.compile=$compile"
    "$PY" -m benchmarks.gpu_profile --trace "${OUT:-$WORK}/gpt2-profile-compile-$compile.json.gz" -- \
      "${GPT2_KEYS[@]}" "--data.input=$WORK/data" "--train.compile=$compile"
  done
}

tasks() {
  need_char
  "$PY" -m lmforge prep --pairs data/en-fr.jsonl.xz --out "$WORK/pairs" --vocab-size 8000 >/dev/null
  local shakespeare=(configs/shakespeare-char.toml "${COMMON[@]}" "--data.input=$WORK/data" --train.eval_batches=20
                     --train.max_steps=1000 --train.eval_interval=1000)
  local translation=(configs/translate-demo.toml "${COMMON[@]}" "--data.input=$WORK/pairs" --train.max_steps=300
                     --train.eval_interval=300 --train.eval_bleu_sentences=100)
  [ $DRY = 1 ] && shakespeare+=(--train.max_steps=20 --train.eval_interval=20) \
               && translation+=(--train.max_steps=10 --train.eval_interval=10 --train.eval_bleu_sentences=4)
  for engine in local deepspeed; do
    "$PY" -m lmforge train "${shakespeare[@]}" --out "$WORK/shakespeare-$engine" --engine.name=$engine
  done
  local classify=("${COMMON[@]}" --data.task=classification --data.input=data/rt_sentiment.jsonl.xz
                  --data.labels=negative,positive "--train.init_from=$WORK/shakespeare-local/model"
                  --train.max_steps=100 --train.batch_size=32 --train.lr=1e-3 --train.eval_interval=100)
  [ $DRY = 1 ] && classify+=(--train.max_steps=5 --train.eval_interval=5)
  for engine in local deepspeed; do
    "$PY" -m lmforge train "${translation[@]}" --out "$WORK/translation-$engine" --engine.name=$engine
    "$PY" -m lmforge train "${classify[@]}" --out "$WORK/classification-$engine" --engine.name=$engine
  done
  "$PY" -m benchmarks.gpu_tasks "$WORK/shakespeare-deepspeed" "$WORK/translation-deepspeed" \
    "$WORK/classification-deepspeed" "$WORK/pairs" "$DEVICE"
}

for part in "${PARTS[@]}"; do
  case $part in
    speed|shakespeare|decode|plan|tasks|profile) echo "## $part"; "$part" ;;
    table) ;;  # only the table of the runs in GPU_CHECK_WORK, below
    *) echo "gpu_check.sh: unknown part '$part' (speed, shakespeare, decode, plan, tasks, profile, table)" >&2
       exit 2 ;;
  esac
done

# summary.json's tokens/s and MFU count every step, the first's compile too; the last logged window
# (metrics.jsonl, every train.log_interval steps) is the steady speed that MFU aims are about
"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40S": 362e12}
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
summaries = sorted(Path(sys.argv[1]).glob("*/summary.json"))
def last_window(run):
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    windows = [r for r in map(json.loads, lines) if "tok_s" in r]
    return windows[-1] if windows else {}
if summaries:
    print(f"{'run':<26} {'tok/s':>10} {'MFU':>6} | {'last window: step':>17} {'tok/s':>10} {'MFU':>6} {'datasheet':>9}"
          f" | {'val loss':>8} {'peak GPU GB':>11} {'wall s':>7} compiled")
for path in summaries:
    s = json.loads(path.read_text())
    w = last_window(path.parent)
    steady = w.get("mfu", float("nan")) * s["peak_flops"] * s["world_size"]  # FLOP/s, all ranks
    mfu_sheet = f"{100 * steady / sheet:.1f}%" if sheet else "n/a"
    gpu = max(s.get("peak_gpu_gb_per_rank") or [float("nan")])
    extra = {k: round(s[k], 4) for k in ("val_bleu", "val_accuracy", "best_loss", "best_step") if k in s}
    print(f"{path.parent.name:<26} {s['tokens_per_s']:>10,.0f} {100 * s['mfu']:>5.1f}% | {w.get('step', '-'):>17}"
          f" {w.get('tok_s', float('nan')):>10,.0f} {100 * w.get('mfu', float('nan')):>5.1f}% {mfu_sheet:>9}"
          f" | {s['val_loss']:>8.4f} {gpu:>11.2f} {s['wall_s']:>7.0f} {s['kernels'].get('compile')} {extra or ''}")
if summaries:
    print(f"MFU against the bf16 matmul peak lmforge measured here, {s['peak_flops'] / 1e12:.0f} TFLOP/s;"
          f" datasheet: {sheet and sheet / 1e12} TFLOP/s")
PYEOF
