#!/usr/bin/env bash
# One CUDA GPU, under 5 minutes, every task:
# - language modelling: the shakespeare recipe on the local engine and on DeepSpeed (ZeRO-2) in
#   bf16, then a GPT-2-small shape (124 M parameters with GPT-2's 50,304-row head), printing
#   tokens/s and MFU (against the matmul peak lmforge measures on the GPU, bf16 8192^2, and,
#   where the GPU is known below, against its datasheet dense bf16 peak);
# - translation: the demo recipe for 300 steps on both engines (validation BLEU on the GPU);
# - classification: a head on the shakespeare model, on both engines;
# then benchmarks/gpu_tasks.py decodes, scores, exports and loads back each task's model on the
# GPU (`python -m benchmarks.gpu_tasks ... cpu` dry-runs that part on a CPU).
#
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# PYTHON must have a CUDA torch, deepspeed and lmforge (`pip install torch deepspeed -e .`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('#', torch.cuda.get_device_name(), 'torch', torch.__version__)"
"$PY" -m lmforge prep data/shakespeare.jsonl.xz --out "$WORK/data" --tokenizer char >/dev/null
"$PY" -m lmforge prep --pairs data/en-fr.jsonl.xz --out "$WORK/pairs" --vocab-size 8000 >/dev/null

COMMON=(--quiet "--data.input=$WORK/data" --train.dtype=bf16 --train.eval_batches=20)
SHAKESPEARE=(configs/shakespeare-char.toml "${COMMON[@]}" --train.max_steps=1000 --train.eval_interval=1000)
GPT2=("${COMMON[@]}" --model.n_layer=12 --model.n_head=12 --model.n_embd=768 --model.block_size=1024
      --model.vocab_size=50304 --model.pos=learned --train.batch_size=16 --train.max_steps=40
      --train.warmup_steps=5 --train.eval_interval=40 --train.eval_batches=2 --train.checkpoint_interval=40)

"$PY" -m lmforge train "${SHAKESPEARE[@]}" --out "$WORK/shakespeare-local"
"$PY" -m lmforge train "${SHAKESPEARE[@]}" --out "$WORK/shakespeare-deepspeed" --engine.name=deepspeed
"$PY" -m lmforge train "${GPT2[@]}" --out "$WORK/gpt2-local"
"$PY" -m lmforge train "${GPT2[@]}" --out "$WORK/gpt2-deepspeed" --engine.name=deepspeed

TRANSLATION=(configs/translate-demo.toml --quiet "--data.input=$WORK/pairs" --train.dtype=bf16
             --train.max_steps=300 --train.eval_interval=300 --train.eval_bleu_sentences=100)
CLASSIFY=(--quiet --data.task=classification --data.input=data/rt_sentiment.jsonl.xz
          --data.labels=negative,positive "--train.init_from=$WORK/shakespeare-local/model"
          --train.max_steps=100 --train.batch_size=32 --train.lr=1e-3 --train.eval_interval=100
          --train.dtype=bf16)
for engine in local deepspeed; do
  "$PY" -m lmforge train "${TRANSLATION[@]}" --out "$WORK/translation-$engine" --engine.name=$engine
  "$PY" -m lmforge train "${CLASSIFY[@]}" --out "$WORK/classification-$engine" --engine.name=$engine
done
"$PY" -m benchmarks.gpu_tasks "$WORK/gpt2-deepspeed" "$WORK/translation-deepspeed" \
  "$WORK/classification-deepspeed" "$WORK/pairs"

"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40S": 362e12}
name = torch.cuda.get_device_name()
sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
print(f"{'run':<24} {'tok/s':>10} {'val loss':>9} {'MFU (measured peak)':>20} {'MFU (datasheet)':>16}")
runs = ("shakespeare", "gpt2", "translation", "classification")
for run in (f"{name}-{engine}" for name in runs for engine in ("local", "deepspeed")):
    s = json.loads((Path(sys.argv[1]) / run / "summary.json").read_text())
    flops = s["mfu"] * s["peak_flops"]
    mfu_sheet = f"{100 * flops / sheet:.1f}%" if sheet else "n/a"
    extra = {k: round(s[k], 3) for k in ("val_bleu", "val_accuracy") if k in s}
    print(f"{run:<24} {s['tokens_per_s']:>10,.0f} {s['val_loss']:>9.3f} {100 * s['mfu']:>19.1f}% {mfu_sheet:>16}"
          f" {extra or ''}")
print(f"measured bf16 matmul peak {s['peak_flops'] / 1e12:.0f} TFLOP/s; datasheet {sheet and sheet / 1e12} TFLOP/s")
PYEOF
