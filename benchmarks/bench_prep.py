"""`lmforge prep` throughput and peak memory on a >= 100 MB corpus built from the shipped texts,
side by side with the bare cost of tokenizing the same bytes with HF `tokenizers` alone.

    python -m benchmarks.bench_prep [--copies 10] [--vocab-size 8192]

The corpus: Shakespeare + Moby Dick + Austen (10.3 MB of text), then `copies` variants in which
every word is replaced through a random permutation of the vocabulary (seeded per copy), so
that no variant is a duplicate or near duplicate of another (identical copies would all be
dropped by dedup and measure nothing), plus one exact copy of the originals, which exact_dedup
must drop. prep runs in a subprocess with the default stages; its peak memory is the sum of the
resident sizes of it and its worker processes, sampled every 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import hardware_line

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ["shakespeare.jsonl.xz", "moby_dick.jsonl.xz", "austen.jsonl.xz"]
WORD = re.compile(r"[A-Za-z]+")


def build_corpus(directory: Path, copies: int) -> tuple[int, int]:
    """Write the corpus as jsonl files; returns (documents, bytes of text)."""
    texts = []
    for name in CORPORA:
        with lzma.open(ROOT / "data" / name, "rt") as f:
            texts += [json.loads(line)["text"] for line in f]
    vocab = sorted({w for t in texts for w in WORD.findall(t)})
    variants = [texts, texts]  # the originals and one exact copy of them
    for k in range(copies):
        shuffled = vocab[:]
        random.Random(k).shuffle(shuffled)
        mapping = dict(zip(vocab, shuffled, strict=True))
        variants.append([WORD.sub(lambda m, mp=mapping: mp[m.group(0)], t) for t in texts])
    n = size = 0
    for i, variant in enumerate(variants):
        with open(directory / f"part_{i:03d}.jsonl", "w") as f:
            for text in variant:
                f.write(json.dumps({"text": text}) + "\n")
                n, size = n + 1, size + len(text.encode("utf-8"))
    return n, size


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total


def run_prep(corpus: Path, out: Path, vocab_size: int) -> tuple[float, int]:
    """Wall seconds and peak tree RSS of `lmforge prep` in a subprocess."""
    cmd = [sys.executable, "-m", "lmforge", "prep", str(corpus), "--out", str(out), "--tokenizer", "bpe"]
    cmd += ["--vocab-size", str(vocab_size)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"lmforge prep failed ({proc.returncode}):\n{output}")
    print(output)
    return seconds, peak


def encode_rates(corpus: Path, out: Path, limit_mb: int) -> dict[str, float]:
    """MB/s of HF encode_batch and of prep's encoder on the same documents (same tokenizer)."""
    from lmforge.data.encode import make_encoder
    from lmforge.data.pipeline import _batches
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.load(out)
    texts, size = [], 0
    for path in sorted(corpus.glob("*.jsonl")):
        for line in path.open():
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode("utf-8"))
        if size >= limit_mb * 1e6:
            break
    batches = list(_batches(texts))
    name, fast = make_encoder(tok, threads=2)
    rates = {}
    for label, encode in (
        ("HF tokenizers encode_batch", lambda b: tok.hf.encode_batch(b, add_special_tokens=False)),
        (f"lmforge prep encoder ({name})", fast),
    ):
        start = time.perf_counter()
        for batch in batches:
            encode(batch)
        rates[label] = size / 1e6 / (time.perf_counter() - start)
    return rates | {"MB encoded": size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--encode-mb", type=int, default=30, help="MB for the side-by-side encoder rates")
    args = ap.parse_args()
    print(hardware_line(), f"| {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus, out = Path(tmp) / "corpus", Path(tmp) / "shards"
        corpus.mkdir()
        docs, size = build_corpus(corpus, args.copies)
        files = len(list(corpus.iterdir()))
        print(f"corpus: {docs:,} documents, {size / 1e6:.1f} MB of text in {files} files")
        seconds, peak = run_prep(corpus, out, args.vocab_size)
        report = json.loads((out / "report.json").read_text())
        rates = encode_rates(corpus, out, args.encode_mb)
    print(f"lmforge prep end to end: {seconds:.1f} s wall, {size / 1e6 / seconds:.2f} MB/s of input text")
    clean_tok = report["seconds_clean"] + report["seconds_tokenize"]
    r = report
    print(
        f"  clean+dedup {r['seconds_clean']:.1f} s, tokenizer training {r['seconds_tokenizer_training']:.1f}"
        f" s, tokenization {r['seconds_tokenize']:.1f} s ({r['tokenize_MB_per_s']:.1f} MB/s)"
    )
    print(
        f"  cleaning + dedup + tokenization: {size / 1e6 / clean_tok:.2f} MB/s (tokenizer training excluded)"
    )
    print(f"  peak memory (prep + workers): {peak / 2**20:,.0f} MiB")
    print(f"  documents out {r['documents_out']:,}, {r['bytes_out'] / 1e6:.1f} MB, {r['tokens']:,} tokens")
    print(f"side by side on the same {rates.pop('MB encoded'):.0f} MB, same tokenizer:")
    for label, rate in rates.items():
        print(f"  {label:<40} {rate:6.2f} MB/s")


if __name__ == "__main__":
    main()
