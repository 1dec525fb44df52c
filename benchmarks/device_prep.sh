#!/usr/bin/env bash
# Gets the GPU checks ready for a lent device machine (the workplace's `device` tool): that machine
# reaches no network and its image (Python 3.12, a CUDA torch, transformers, tokenizers, scipy, ...)
# lacks some of lmforge's dependencies. Run here, where PyPI is reachable; it fills .device/
# (ignored by git, about 15 MB), which travels with the call's `carry`:
#   .device/wheels/        the missing packages as Python 3.12 wheels (deepspeed built here: its
#                          PyPI release is a source archive; DS_BUILD_OPS=0 makes it pure Python)
#   .device/tinyshakespeare.txt   the shakespeare part's data, when ../shared/data has it
# Then, on the device: `bash benchmarks/gpu_device.sh PARTS` (benchmarks/README.md, "GPU checks").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DIR=.device
mkdir -p "$DIR/wheels"
# lmforge's own dependencies that the device image lacks, and what they need in turn (read off each
# wheel's Requires-Dist against the image's package list in the device tool's KINDS.md)
MISSING=(datatrove ftfy wcwidth zstandard phonenumbers python-stdnum gguf bm25s PyStemmer
         loguru dill multiprocess hjson pydantic pydantic-core annotated-types typing-inspection)
pinned() {  # each at the version this Python has, the one lmforge's tests ran with, where it has one
  "$PY" - "$@" <<'PYEOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
PYEOF
}
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$DIR/wheels" $(pinned "${MISSING[@]}")
if ! ls "$DIR"/wheels/deepspeed-*.whl >/dev/null 2>&1; then
  DS_BUILD_OPS=0 "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$DIR/wheels" "$(pinned deepspeed)"
fi
TINY=${TINYSHAKESPEARE:-../shared/data/tinyshakespeare.txt}
if [ -f "$TINY" ]; then cp "$TINY" "$DIR/tinyshakespeare.txt"; else echo "no $TINY: the shakespeare part will skip"; fi
ls "$DIR/wheels"
du -sh "$DIR"
