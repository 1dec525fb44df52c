#!/usr/bin/env bash
# One CUDA GPU, under 5 minutes: the shakespeare recipe on the local engine and on DeepSpeed
# (ZeRO-2) in bf16, then a GPT-2-small shape (124 M parameters with GPT-2's 50,304-row head),
# printing tokens/s and MFU. MFU is given against the matmul peak lmforge measures on the GPU
# (bf16, 8192^2) and, where the GPU is known below, against its datasheet dense bf16 peak.
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

COMMON=(--quiet "--data.input=$WORK/data" --train.dtype=bf16 --train.eval_batches=20)
SHAKESPEARE=(configs/shakespeare-char.toml "${COMMON[@]}" --train.max_steps=1000 --train.eval_interval=1000)
GPT2=("${COMMON[@]}" --model.n_layer=12 --model.n_head=12 --model.n_embd=768 --model.block_size=1024
      --model.vocab_size=50304 --model.pos=learned --train.batch_size=16 --train.max_steps=40
      --train.warmup_steps=5 --train.eval_interval=40 --train.eval_batches=2 --train.checkpoint_interval=40)

"$PY" -m lmforge train "${SHAKESPEARE[@]}" --out "$WORK/shakespeare-local"
"$PY" -m lmforge train "${SHAKESPEARE[@]}" --out "$WORK/shakespeare-deepspeed" --engine.name=deepspeed
"$PY" -m lmforge train "${GPT2[@]}" --out "$WORK/gpt2-local"
"$PY" -m lmforge train "${GPT2[@]}" --out "$WORK/gpt2-deepspeed" --engine.name=deepspeed

"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "L40S": 362e12}
name = torch.cuda.get_device_name()
sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
print(f"{'run':<24} {'tok/s':>10} {'val loss':>9} {'MFU (measured peak)':>20} {'MFU (datasheet)':>16}")
for run in ("shakespeare-local", "shakespeare-deepspeed", "gpt2-local", "gpt2-deepspeed"):
    s = json.loads((Path(sys.argv[1]) / run / "summary.json").read_text())
    flops = s["mfu"] * s["peak_flops"]
    mfu_sheet = f"{100 * flops / sheet:.1f}%" if sheet else "n/a"
    print(f"{run:<24} {s['tokens_per_s']:>10,.0f} {s['val_loss']:>9.3f} {100 * s['mfu']:>19.1f}% {mfu_sheet:>16}")
print(f"measured bf16 matmul peak {s['peak_flops'] / 1e12:.0f} TFLOP/s; datasheet {sheet and sheet / 1e12} TFLOP/s")
PYEOF
