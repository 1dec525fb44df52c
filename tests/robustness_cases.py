"""The robustness suite's catalogue (tests/test_robustness.py runs it): wrong commands for every
verb, one a line, each with the error line it must give. In `argv` and `culprit`, {t} stands for
the case's folder (also the working directory) and {s} for the shared models, runs and data that
the suite builds once (test_robustness.shared)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Step = Callable[[Path, Path], None]  # (the case's folder, the shared folder)


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # {t}: the case's folder (the working directory), {s}: the shared folder
    culprit: str  # a regex the error line must match; {t} and {s} stand for the folders
    setup: tuple[Step, ...] = ()
    code: int = 2
    usage: bool = False  # an argparse usage error (SystemExit(2) from the parser)
    process: bool = False  # run as `python -m lmforge ...`

    @property
    def verb(self) -> str:
        words = self.argv.split()
        verb = next((w for w in words if not w.startswith("-")), "(none)")
        return f"{verb} --pairs" if "--pairs" in words else verb


SQUAD = '{"data": [{"paragraphs": [{"context": "Ada sells wine.", "qas": [{"id": "1", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]}]}]}]}'


# --- setup steps ----------------------------------------------------------------------------------
def write(name: str, data: str | bytes) -> Step:
    def step(t: Path, s: Path) -> None:
        (t / name).parent.mkdir(parents=True, exist_ok=True)
        (t / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return step


def mkdir(name: str) -> Step:
    return lambda t, s: (t / name).mkdir(parents=True)


def copy(name: str, to: str = "") -> Step:
    def step(t: Path, s: Path) -> None:
        source, target = s / name, t / (to or name)
        shutil.copytree(source, target) if source.is_dir() else shutil.copy(source, target)

    return step


def cut(pattern: str, size: int) -> Step:
    """Truncate every file matching `pattern` (a glob under the case's folder) to `size` bytes."""

    def step(t: Path, s: Path) -> None:
        for path in t.glob(pattern):
            path.write_bytes(path.read_bytes()[:size])

    return step


def set_json(name: str, **values: object) -> Step:
    def step(t: Path, s: Path) -> None:
        path = t / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}))

    return step


def remove(name: str) -> Step:
    return lambda t, s: shutil.rmtree(t / name) if (t / name).is_dir() else (t / name).unlink()


def swap_two_tokens(name: str) -> Step:
    """Another tokenizer of the same size in `name`'s tokenizer.json: its last two tokens' ids swapped."""

    def step(t: Path, s: Path) -> None:
        path = t / name / "tokenizer.json"
        data = json.loads(path.read_text())
        vocab = data["model"]["vocab"]
        a, b = sorted(vocab, key=vocab.get)[-2:]
        vocab[a], vocab[b] = vocab[b], vocab[a]
        path.write_text(json.dumps(data))

    return step


def edit_json(name: str, edit: Callable[[Any], Any]) -> Step:
    def step(t: Path, s: Path) -> None:
        path = t / name
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return step


def rehash(checkpoint: str) -> Step:
    """Make a checkpoint's manifest.json agree with its files again, as a hand 'repair' would."""

    def step(t: Path, s: Path) -> None:
        folder = t / checkpoint
        manifest = json.loads((folder / "manifest.json").read_text())
        for name in manifest["files"]:
            data = (folder / name).read_bytes()
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return step


def hf_bert(name: str, **tokenizer_config: object) -> Step:
    """A random transformers BertModel (64 positions) in `name` with only vocab.txt for its tokenizer."""

    def step(t: Path, s: Path) -> None:
        import torch
        import transformers

        torch.manual_seed(0)
        shape = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
        config = transformers.BertConfig(vocab_size=260, max_position_embeddings=64, **shape)
        transformers.BertModel(config).save_pretrained(t / name)
        shutil.copy(Path(__file__).parent / "fixtures" / "bert-qa" / "vocab.txt", t / name)
        (t / name / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))

    return step


def fixture(name: str, to: str) -> Step:
    """A copy of tests/fixtures/`name` (tokenizer.json and tokenizer_config.json among its files)."""
    return lambda t, s: shutil.copytree(Path(__file__).parent / "fixtures" / name, t / to)


PAIRS = "".join(json.dumps({"en": f"hello number {i}", "fr": f"bonjour numero {i}", "doc": f"d{i % 7}"}) + "\n"
                for i in range(60))  # fmt: skip
BARE_ZIP = b"PK\x05\x06" + bytes(18)  # an empty zip: no META-INF/container.xml for an EPUB
BAD_UTF8 = b"\xff\xfe\xfa\xfb" * 40 + b"\n"  # undecodable throughout: nothing to keep
LONG = "ROMEO: the king and the queen speak of love and death"  # 53 characters, the context is 16
MODEL_DIR = "not a model directory, run directory or checkpoint"
R = "{t}/r"  # a run folder that does not exist yet
DATA = "--data.input={s}/corpus.txt"
SRC_REF = (write("src.txt", "a b\nc d\n"), write("ref.txt", "x\ny\n"))
CHAT_LINE = (
    '{"kind": "sentiment", "split": "test", "messages": [{"role": "user", "content": "Is it good?"},'
    ' {"role": "assistant", "content": "positive"}]}\n'
)

# fmt: off
CHATML = (  # SmolLM2's template, shortened
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CASES = [
    # --- the command line itself
    Case("no-verb", "", r"required: VERB", usage=True),
    Case("unknown-verb", "bogus", r"invalid choice: 'bogus'", usage=True),
    # --- prep
    Case("prep-unread-key", "prep {t}/a.txt --out {t}/o --train.init_from={t}/m", r"prep: --train\.init_from is not read by prep, which reads \[data\] and \[prep\] keys only", (write("a.txt", "hello there\n"),)),
    Case("prep-missing-input", "prep {t}/missing.txt --out {t}/o", r"{t}/missing\.txt: no such file"),
    Case("prep-empty-corpus", "prep {t}/e.txt --out {t}/o", r"{t}/e\.txt: the corpus is empty", (write("e.txt", ""),)),
    Case("prep-undecodable", "prep {t}/bad.txt --out {t}/o", r"bad\.txt: the corpus is empty.*invalid UTF-8", (write("bad.txt", BAD_UTF8),)),
    Case("prep-wrong-field", "prep {t}/a.jsonl --out {t}/o", r"a\.jsonl: the corpus is empty .*; the first: {t}/a\.jsonl:1: no string field \('text'; the line has 'body'\)$", (write("a.jsonl", '{"body": "hello there"}\n'),)),
    Case("prep-json-wrong-field", "prep {t}/a.json --out {t}/o", r"a\.json: the corpus is empty .*; the first: {t}/a\.json:\[0\]: no string field \('text'; the element has 'body'\)$", (write("a.json", '[{"body": "hello there"}]\n'),)),
    Case("prep-json-not-an-array", "prep {t}/a.json --out {t}/o", r"a\.json: the corpus is empty .*; the first: {t}/a\.json: not a JSON array \(a JSON object whose first line is not one whole record: give --json-field data \(prep\.json_field\) to read its array under 'data', ", (write("a.json", '{\n "data": [{"text": "hi"}]\n}\n'),)),
    Case("prep-warc-not-warc", "prep {t}/p.warc --out {t}/o", r"p\.warc: the corpus is empty .*; the first: {t}/p\.warc: not a WARC file \(", (write("p.warc", "<html>a page</html>\n"),)),
    Case("prep-html-extractor-choice", "prep {s}/corpus.txt --out {t}/o --html-extractor readability", r"argument --html-extractor: invalid choice: 'readability'", usage=True),
    Case("prep-html-extractor-value", "prep {s}/corpus.txt --out {t}/o --prep.html_extractor=readability", r"prep\.html_extractor='readability': 'tags' or 'trafilatura'$"),
    Case("prep-html-extractor-without-markup", "prep {s}/corpus.txt --out {t}/o --stages whitespace --html-extractor trafilatura", r"prep\.html_extractor='trafilatura' is for the markup stage, which prep\.stages does not run \(whitespace\)"),
    Case("prep-pdf-not-a-pdf", "prep {t}/p.pdf --out {t}/o", r"p\.pdf: the corpus is empty .*; the first: {t}/p\.pdf: not a PDF file \(no %PDF- header in its first 1,024 bytes\)$", (write("p.pdf", "a paper, as text\n"),)),
    Case("prep-pdf-compressed", "prep {t}/p.pdf.gz --out {t}/o", r"p\.pdf\.gz: the corpus is empty .*; the first: {t}/p\.pdf\.gz: compressed \.pdf file \(not read: decompress it first \(\.gz\)\)$", (write("p.pdf.gz", gzip.compress(b"%PDF-1.7\n")),)),
    Case("prep-docx-not-a-zip", "prep {t}/w.docx --out {t}/o", r"w\.docx: the corpus is empty .*; the first: {t}/w\.docx: truncated or corrupt \(File is not a zip file\)$", (write("w.docx", "a report, as text\n"),)),
    Case("prep-epub-no-container", "prep {t}/b.epub --out {t}/o", r"b\.epub: the corpus is empty .*; the first: {t}/b\.epub: truncated or corrupt \(There is no item named 'META-INF/container\.xml' in the archive\)$", (write("b.epub", BARE_ZIP),)),
    Case("prep-wrong-column", "prep {t}/b.csv --out {t}/o", r"b\.csv: the corpus is empty .*; the first: {t}/b\.csv: no column \('text' not in \['body'\]\)$", (write("b.csv", "body\nhello\n"),)),
    Case("prep-empty-folder", "prep {t}/d --out {t}/o", r"^lmforge: error: {t}/d: no \.csv.*files found", (mkdir("d"),)),
    Case("prep-out-is-input", "prep {t}/d --out {t}/d", r"{t}/d: the output folder is the input", (mkdir("d"), copy("corpus.txt", "d/c.txt"))),
    Case("prep-out-inside-input", "prep {t}/d --out {t}/d/o", r"{t}/d/o: the output folder lies inside the input", (mkdir("d"), copy("corpus.txt", "d/c.txt"))),
    Case("prep-out-holds-input", "prep {t}/p/c.txt --out {t}/p", r"{t}/p: the output folder contains the input", (mkdir("p"), copy("corpus.txt", "p/c.txt"))),
    Case("prep-out-dot", "prep {s}/corpus.txt --out .", r"\.: is the working directory"),
    Case("prep-out-parent-of-cwd", "prep {s}/corpus.txt --out ..", r"\.\.: is a folder above the working directory"),
    Case("prep-out-foreign", "prep {s}/corpus.txt --out {t}/p", r"{t}/p: holds files prep did not write \(plan\.md\)", (write("p/plan.md", "keep\n"),)),
    Case("prep-out-is-file", "prep {s}/corpus.txt --out {t}/f", r"{t}/f: exists and is not a folder", (write("f", "x"),)),
    Case("prep-out-under-file", "prep {s}/corpus.txt --out {t}/f/o", r"{t}/f is a file", (write("f", "x"),)),
    Case("prep-earlier-output", "prep {s}/corpus.txt --out {t}/shards", r"{t}/shards: holds an earlier prep output; pass --overwrite", (copy("shards"),)),
    Case("prep-bpe-vocab-0", "prep {s}/corpus.txt --out {t}/o --tokenizer bpe --vocab-size 0", r"data\.vocab_size=0 must be at least"),
    Case("prep-val-fraction", "prep {s}/corpus.txt --out {t}/o --val-fraction 1.5", r"data\.val_fraction=[\d.]+ must be in \(0, 1\)"),
    Case("prep-option-for-a-stage-not-run", "prep {s}/corpus.txt --out {t}/o --stages whitespace --prep.min_chars=200", r"prep\.min_chars=200 is for the length stage, which prep\.stages does not run \(whitespace\): add length to the stages, or leave the key out"),
    Case("prep-tokenizer-choice", "prep {s}/corpus.txt --out {t}/o --tokenizer xyz", r"argument --tokenizer: invalid choice: 'xyz'", usage=True),
    Case("prep-canary-keys-without-canaries", "prep {s}/corpus.txt --out {t}/o --canary-repeats 1,2", r"prep\.canary_repeats='1,2' is set but prep\.canaries is 0, so no canary is planted"),
    Case("prep-pii-kinds-empty", "prep {s}/corpus.txt --out {t}/o --stages pii --prep.pii_kinds=", r"prep\.pii_kinds is empty: name the kinds to scrub \(login, email, iban, imei, card, ssn, ip, phone\), or drop the pii stage"),
    Case("prep-stages-empty", "prep {s}/corpus.txt --out {t}/o --stages ''", r"prep\.stages='' names no stage: give the stages to run, or 'none' to run none$"),
    Case("prep-stages-commas", "prep {s}/corpus.txt --out {t}/o --prep.stages=,", r"prep\.stages=',' names no stage"),
    Case("prep-boilerplate-fraction-over-1", "prep {s}/corpus.txt --out {t}/o --prep.boilerplate_fraction=2", r"prep\.boilerplate_fraction=2 must be in \[0, 1\] \(a share of the documents\)$"),
    Case("prep-boilerplate-min-docs-1", "prep {s}/corpus.txt --out {t}/o --prep.boilerplate_min_docs=1", r"prep\.boilerplate_min_docs=1 must be >= 2 \(a line repeated across documents; in one, every line would count\)$"),
    Case("prep-boilerplate-min-chars-negative", "prep {s}/corpus.txt --out {t}/o --prep.boilerplate_min_chars=-1", r"prep\.boilerplate_min_chars=-1 must be >= 1 \(blank lines are in every document\)$"),
    # 0 made blank lines boilerplate, and max_chars below min_chars dropped every document, said
    # only after the whole corpus was read (until 2026-12-07)
    Case("prep-boilerplate-min-chars-0", "prep {s}/corpus.txt --out {t}/o --prep.boilerplate_min_chars=0", r"prep\.boilerplate_min_chars=0 must be >= 1"),
    Case("prep-max-below-min-chars", "prep {s}/corpus.txt --out {t}/o --prep.min_chars=50 --prep.max_chars=10", r"prep\.max_chars=10 is below prep\.min_chars=50: no document could be kept$"),
    Case("prep-text-field-empty", "prep {s}/corpus.txt --out {t}/o --text-field ''", r"data\.text_field='' is empty: name the field \(or column\) holding the text$"),
    Case("prep-unknown-stage", "prep {s}/corpus.txt --out {t}/o --stages normalize,bogus", r"prep\.stages: unknown stage 'bogus'"),
    Case("prep-workers-negative", "prep {s}/corpus.txt --out {t}/o --workers -1", r"prep\.workers=-1 must be >= 0"),
    Case("prep-min-chars-negative", "prep {s}/corpus.txt --out {t}/o --prep.min_chars=-3", r"prep\.min_chars=-3 must be >= 0"),
    Case("prep-pii-ip-policy", "prep {s}/corpus.txt --out {t}/o --prep.pii_ip=private", r"prep\.pii_ip='private': 'all' or 'public'"),
    Case("prep-pii-kind", "prep {s}/corpus.txt --out {t}/o --prep.pii_kinds=email,name", r"prep\.pii_kinds: unknown kind 'name'"),
    Case("prep-pii-region", "prep {s}/corpus.txt --out {t}/o --prep.pii_phone_regions=US,XX", r"prep\.pii_phone_regions: 'XX' is not a region"),
    Case("prep-near-dup-bands-0", "prep {s}/corpus.txt --out {t}/o --prep.near_dup_bands=0", r"prep\.near_dup_bands=0 must be > 0"),
    Case("prep-bad-toml", "prep {t}/r.toml", r"{t}/r\.toml: invalid TOML", (write("r.toml", "data = [\n"),)),
    Case("prep-recipe-unknown-key", "prep {t}/r.toml", r"{t}/r\.toml: unknown config key 'data\.inputt'", (write("r.toml", '[data]\ninputt = "x"\n'),)),
    Case("prep-recipe-folder", "prep {t}/r.toml --out {t}/o", r"{t}/r\.toml: Is a directory, not a TOML recipe$", (mkdir("r.toml"),)),
    Case("prep-recipe-not-utf8", "prep {t}/r.toml --out {t}/o", r"{t}/r\.toml:2: not valid UTF-8 \(byte 16 of the file\)", (write("r.toml", b'[data]\ninput = "\xe9"\n'),)),
    Case("prep-recipe-inputs-not-strings", "prep {t}/r.toml", r"{t}/r\.toml: prep\.inputs\[1\]=3 must be a string, not int$", (write("r.toml", '[prep]\ninputs = ["a.txt", 3]\nout = "o"\n'),)),
    Case("prep-recipe-relative-input", "prep {t}/r.toml", r"missing\.txt: no such file, folder or glob match \(prep\.inputs of {t}/r\.toml; a relative path is read from the working directory, {t}\)$", (write("r.toml", '[prep]\ninputs = "missing.txt"\nout = "o"\n'),)),
    Case("prep-recipe-glob-no-match", "prep {t}/r.toml", r"nothing\*\.txt: no such file, folder or glob match", (write("r.toml", '[prep]\ninputs = "nothing*.txt"\nout = "o"\n'),)),
    Case("prep-override-type", "prep {s}/corpus.txt --out {t}/o --data.vocab_size=abc", r"data\.vocab_size='abc' is not an integer"),
    Case("prep-no-out", "prep {s}/corpus.txt", r"no output directory \(pass --out"),
    Case("prep-vocab-size-char", "prep {s}/corpus.txt --out {t}/o --vocab-size 100", r"data\.vocab_size=100 is for the bpe tokenizer \(--tokenizer bpe\); a char tokenizer's vocabulary is the text's characters$"),
    Case("prep-pairs-option-alone", "prep {s}/corpus.txt --out {t}/o --src-lang en", r"--src-lang needs --pairs", usage=True),
    Case("prep-canary-repeats", "prep {s}/corpus.txt --out {t}/o --canaries 2 --canary-repeats 1,x", r"prep\.canary_repeats='1,x': comma-separated whole numbers"),
    Case("prep-canaries-negative", "prep {s}/corpus.txt --out {t}/o --canaries -1", r"prep\.canaries=-1 must be >= 0"),
    Case("prep-canaries-tail-split", "prep {s}/corpus.txt --out {t}/o --canaries 1 --split tail", r"{t}/o: prep\.canaries needs the hash split"),
    Case("prep-input-key-and-inputs", "prep {s}/corpus.txt --out {t}/o --data.input={t}/other.txt", r"prep: --data\.input={t}/other\.txt and the inputs {s}/corpus\.txt: give one of them$"),
    Case("prep-out-key-and-out", "prep {s}/corpus.txt --out {t}/o --prep.out={t}/p", r"prep: --prep\.out={t}/p and --out {t}/o: give one of them$"),
    Case("prep-stages-none-and-more", "prep {s}/corpus.txt --out {t}/o --stages none,pii", r"prep\.stages='none,pii': 'none' with other stages; give 'none' alone or the stages$"),
    Case("prep-stopwords-file-empty", "prep {s}/corpus.txt --out {t}/o --stages stopwords --prep.stopwords_file={t}/sw.txt", r"prep\.stopwords_file='{t}/sw\.txt': holds no words$", (write("sw.txt", "  \n"),)),
    Case("prep-stopwords-unmatchable", "prep {s}/corpus.txt --out {t}/o --stages stopwords --prep.stopwords_file={t}/sw.txt", r"prep\.stopwords_file='{t}/sw\.txt': 'c\+\+' can never match a word \(letters and digits, with ' - \. inside\) nor can 1 more: remove them$", (write("sw.txt", "the c++ don't --\n"),)),
    Case("prep-stopwords-file-missing", "prep {s}/corpus.txt --out {t}/o --stages stopwords --prep.stopwords_file={t}/sw.txt", r"prep\.stopwords_file='{t}/sw\.txt': cannot read it \(No such file or directory\)$"),
    Case("prep-fails-under-new-folders", "prep {t}/e.txt --out {t}/new/deep/o", r"e\.txt: the corpus is empty", (write("e.txt", ""),)),
    Case("prep-empty-corpus-real-stderr", "prep {t}/e.txt --out {t}/o", r"{t}/e\.txt: the corpus is empty", (write("e.txt", ""),), process=True),
    # --- prep --pairs
    Case("pairs-bad-json", "prep --pairs {t}/x.jsonl --out {t}/o", r"{t}/x\.jsonl:2: not valid JSON", (write("x.jsonl", '{"en": "a", "fr": "b"}\n{oops\n'),)),
    Case("pairs-missing-field", "prep --pairs {t}/x.jsonl --out {t}/o", r"{t}/x\.jsonl:2: needs string fields 'en' and 'fr'", (write("x.jsonl", '{"en": "a", "fr": "b"}\n{"en": "a"}\n'),)),
    Case("pairs-tsv-one-column", "prep --pairs {t}/x.tsv --out {t}/o", r"{t}/x\.tsv:2: expected 2 or 3 tab-separated columns", (write("x.tsv", "a\tb\nonly one\n"),)),
    Case("pairs-not-utf8", "prep --pairs {t}/b.en --out {t}/o", r"{t}/b\.en:2: not valid UTF-8 \(byte 6", (write("b.en", b"hello\n\xff bad\n"), write("b.fr", "bonjour\nmal\n"))),
    Case("pairs-partner-missing", "prep --pairs {t}/b.en --out {t}/o", r"{t}/b\.en: its aligned file {t}/b\.fr is missing", (write("b.en", "hello\n"),)),
    Case("pairs-out-is-input", "prep --pairs {t}/p.jsonl --out {t}/p.jsonl", r"{t}/p\.jsonl: the output folder is the input", (write("p.jsonl", PAIRS),)),
    Case("pairs-out-dot", "prep --pairs {t}/p.jsonl --out .", r"\.: is the working directory", (write("p.jsonl", PAIRS),)),
    Case("pairs-out-foreign", "prep --pairs {t}/p.jsonl --out {t}/p", r"{t}/p: holds files prep did not write \(keep\.txt\)", (write("p.jsonl", PAIRS), write("p/keep.txt", "x"))),
    Case("pairs-vocab-0", "prep --pairs {t}/p.jsonl --out {t}/o --vocab-size 0", r"vocab_size=0 must be at least", (write("p.jsonl", PAIRS),)),
    Case("pairs-val-fraction-1", "prep --pairs {t}/p.jsonl --out {t}/o --val-fraction 1", r"val_fraction and test_fraction must be in \(0, 1\)", (write("p.jsonl", PAIRS),)),
    Case("pairs-max-tokens-0", "prep --pairs {t}/p.jsonl --out {t}/o --max-tokens 0", r"max_tokens=0 must be >= 1", (write("p.jsonl", PAIRS),)),
    Case("pairs-all-dropped", "prep --pairs {t}/p.jsonl --out {t}/o --vocab-size 300 --max-ratio 1", r"{t}/p\.jsonl: no training pairs within max_tokens=128 and max_ratio=1\.0", (write("p.jsonl", '{"en": "one two three four five six", "fr": "un"}\n'),)),
    Case("pairs-same-languages", "prep --pairs {t}/p.jsonl --out {t}/o --src-lang fr", r"src_lang and tgt_lang are both 'fr'", (write("p.jsonl", PAIRS),)),
    Case("pairs-empty-file", "prep --pairs {t}/e.jsonl --out {t}/o", r"{t}/e\.jsonl: no training pairs left after cleaning \(0 read\)", (write("e.jsonl", ""),)),
    Case("pairs-missing-file", "prep --pairs {t}/none.jsonl --out {t}/o", r"{t}/none\.jsonl: no such file"),
    Case("pairs-empty-folder", "prep --pairs {t}/d --out {t}/o", r"^lmforge: error: {t}/d: no \.jsonl, \.tsv or \.en/\.fr files found", (mkdir("d"),)),
    Case("pairs-not-a-pair-file", "prep --pairs {t}/p.toml --out {t}/o", r"{t}/p\.toml: not a pair file", (write("p.toml", "x = 1\n"),)),
    Case("pairs-with-override", "prep --pairs {t}/p.jsonl --out {t}/o --data.vocab_size=300", r"overrides do not go with --pairs", usage=True),
    Case("pairs-with-stages", "prep --pairs {t}/p.jsonl --out {t}/o --stages none", r"--stages does not go with --pairs", usage=True),
    Case("pairs-no-out", "prep --pairs {t}/p.jsonl", r"--out is required with --pairs", usage=True),
    # --- train: the recipe and its keys
    Case("train-unknown-key", f"train --out {R} {DATA} --model.nlayer=2", r"unknown config key 'model\.nlayer'"),
    Case("train-wrong-type", f"train --out {R} {DATA} --train.batch_size=abc", r"train\.batch_size='abc' is not an integer"),
    Case("train-max-bad-steps-0", f"train --out {R} {DATA} --train.max_bad_steps=0", r"train\.max_bad_steps=0 must be >= 1 \(non-finite steps in a row before the run stops\)$"),
    Case("train-batch-size-0", f"train --out {R} {DATA} --train.batch_size=0", r"train\.batch_size=0 must be > 0"),
    Case("train-n-layer-negative", f"train --out {R} {DATA} --model.n_layer=-1", r"model\.n_layer.* must be > 0"),
    Case("train-block-size-0", f"train --out {R} {DATA} --model.block_size=0", r"model\.block_size=0 must be > 0"),
    Case("train-heads-do-not-divide", f"train --out {R} {DATA} --model.n_embd=30 --model.n_head=4", r"model\.n_embd=30 is not divisible by model\.n_head=4"),
    Case("train-beta1", f"train --out {R} {DATA} --train.beta1=2", r"train\.beta1=2\.0 must be in \[0, 1\)"),
    Case("train-seed-negative", f"train --out {R} {DATA} --train.seed=-1", r"train\.seed=-1 must be in"),
    Case("train-grad-clip-nan", f"train --out {R} {DATA} --train.grad_clip=nan", r"train\.grad_clip=nan: must be a finite number$"),
    Case("train-lr-inf", f"train --out {R} {DATA} --train.lr=inf", r"train\.lr=inf: must be a finite number$"),
    Case("train-max-minutes-inf", f"train --out {R} {DATA} --train.max_minutes=inf", r"train\.max_minutes=inf: must be a finite number$"),
    Case("train-vocab-size-negative", f"train --out {R} {DATA} --model.vocab_size=-5", r"model\.vocab_size=-5 must be >= 0"),
    Case("train-attn-softcap-negative", f"train --out {R} {DATA} --model.attn_softcap=-1", r"model\.attn_softcap=-1\.0 must be a number >= 0 \(0: uncapped\)$"),
    Case("train-window-pattern-alone", f"train --out {R} {DATA} --model.sliding_window_pattern=6", r"model\.sliding_window_pattern=6 changes nothing without model\.sliding_window$"),
    Case("train-nope-interval-negative", f"train --out {R} {DATA} --model.pos=rope --model.nope_interval=-4", r"model\.nope_interval=-4 must be >= 0 \(0: every layer rotates\)$"),
    Case("train-nope-interval-learned", f"train --out {R} {DATA} --model.nope_interval=4", r"model\.nope_interval=4 changes nothing without model\.pos='rope'$"),
    Case("train-rope-partial-learned", f"train --out {R} {DATA} --model.rope_partial_factor=0.5", r"model\.rope_partial_factor=0\.5 changes nothing without model\.pos='rope'$"),
    Case("train-rope-partial-odd", f"train --out {R} {DATA} --model.pos=rope --model.n_embd=64 --model.n_head=4 --model.rope_partial_factor=0.2", r"model\.rope_partial_factor=0\.2 rotates 3 of 16 head dimensions, which must be an even count of at least 2$"),
    Case("train-longrope-factors", f"train --out {R} {DATA} --model.pos=rope --model.rope_type=longrope --model.rope_short_factor=1,2", r"model\.rope_short_factor must list \d+ numbers > 0 \(one per rotary frequency\), not 2$"),
    Case("train-longrope-factor-text", f"train --out {R} {DATA} --model.rope_short_factor=1,x", r"model\.rope_short_factor='1,x' is not a list of numbers$"),
    Case("train-nope-interval-seq2seq", f"train --out {R} {DATA} --data.task=translation --model.arch=seq2seq --model.pos=rope --model.nope_interval=2", r"model\.nope_interval=2 is not supported by the seq2seq model \(it must stay 0\)$"),
    Case("train-unit-offset-layernorm", f"train --out {R} {DATA} --model.norm_unit_offset=true", r"model\.norm_unit_offset=true is for model\.norm='rmsnorm', not 'layernorm'$"),
    Case("train-doc-stride-negative", f"train --out {R} {DATA} --data.doc_stride=-2", r"data\.doc_stride=-2 must be >= 0 \(or -1: min\(data\.max_len // 2, 128\)\)$"),
    Case("train-engine", f"train --out {R} {DATA} --engine.name=bogus", r"engine\.name='bogus' must be"),
    Case("train-seq-len-translation", f"train --out {R} {DATA} --data.task=translation --model.arch=seq2seq --data.seq_len=16", r"data\.seq_len is for data\.task='lm', not 'translation'"),
    Case("train-seq-len-above-context", f"train --out {R} {DATA} --data.seq_len=4096", r"data\.seq_len=4096 is above the model's context of \d+ tokens$"),
    Case("train-dtype", f"train --out {R} {DATA} --train.dtype=fp16", r"train\.dtype='fp16' must be"),
    Case("train-privacy-key-not-enabled", f"train --out {R} {DATA} --privacy.target_epsilon=3", r"privacy\.target_epsilon=3\.0 is set but privacy\.enabled is false, so it would change nothing \(the run would train without differential privacy\): add --privacy\.enabled=true"),
    Case("train-lora-key-not-enabled", f"train --out {R} {DATA} --lora.rank=4", r"lora\.rank=4 is set but lora\.enabled is false, so it would change nothing \(the run would fine-tune every weight\)"),
    # at its default value: a [privacy] section that forgot the switch trained without DP, unsaid
    Case("train-privacy-default-key-not-enabled", f"train --out {R} {DATA} --privacy.max_grad_norm=1.0", r"privacy\.max_grad_norm=1\.0 is set but privacy\.enabled is false, so it would change nothing"),
    Case("train-privacy-ddp", f"train --out {R} {DATA} --privacy.enabled=true --privacy.target_epsilon=8 --engine.name=ddp", r"privacy\.enabled runs on engine\.name=local only, not 'ddp'"),
    Case("train-privacy-no-noise", f"train --out {R} {DATA} --privacy.enabled=true", r"privacy\.enabled needs privacy\.noise_multiplier or privacy\.target_epsilon"),
    Case("train-privacy-both", f"train --out {R} {DATA} --privacy.enabled=true --privacy.target_epsilon=8 --privacy.noise_multiplier=1", r"privacy\.noise_multiplier=1\.0 and privacy\.target_epsilon=8\.0 are both set: give one"),
    Case("train-micro-batch", f"train --out {R} {DATA} --train.micro_batch_size=5", r"train\.batch_size=12 is not divisible by train\.micro_batch_size=5"),
    Case("train-override-no-value", f"train --out {R} {DATA} --train.max_steps", r"override --train\.max_steps has no value: give --train\.max_steps=VALUE \(or --train\.max_steps VALUE\)$"),
    Case("train-unknown-option", f"train --out {R} {DATA} --foo", r"unrecognized arguments: --foo", usage=True),
    Case("train-bad-toml", "train {t}/r.toml --out {t}/r", r"{t}/r\.toml: invalid TOML", (write("r.toml", "[train\n"),)),
    Case("train-missing-recipe", "train {t}/nope.toml --out {t}/r", r"{t}/nope\.toml: config file not found"),
    Case("train-recipe-folder", "train {t}/r.toml --out {t}/r", r"{t}/r\.toml: Is a directory, not a TOML recipe$", (mkdir("r.toml"),)),
    Case("train-recipe-not-utf8", "train {t}/r.toml --out {t}/r", r"{t}/r\.toml:2: not valid UTF-8 \(byte 22 of the file\)", (write("r.toml", b"[train]\nlr = 0.1 # caf\xe9\n"),)),
    Case("train-recipe-bare-key", "train {t}/r.toml --out {t}/r", r"{t}/r\.toml: top-level key 'max_steps' must be a \[section\]", (write("r.toml", "max_steps = 3\n"),)),
    Case("train-task-bogus", f"train --out {R} {DATA} --data.task=bogus", r"data\.task='bogus' must be one of"),
    Case("train-translation-on-gpt", f"train --out {R} {DATA} --data.task=translation", r"data\.task='translation' does not fit model\.arch='gpt'"),
    Case("train-classification-alone", f"train --out {R} {DATA} --data.task=classification", r"needs train\.init_from"),
    # --- train: the data and the starting model
    Case("train-no-data", f"train --out {R}", r"data\.input is not set"),
    Case("train-missing-data", f"train --out {R} --data.input={{t}}/nothing.txt", r"data\.input='{t}/nothing\.txt': no such file"),
    Case("train-missing-data-new-folders", "train --out {t}/new/deep/r --data.input={t}/nothing.txt", r"nothing\.txt'?: no such file"),
    Case("train-empty-corpus", f"train --out {R} --data.input={{t}}/e.txt", r"{t}/e\.txt: the corpus is empty", (write("e.txt", ""),)),
    Case("train-undecodable-corpus", f"train --out {R} --data.input={{t}}/bad.txt", r"bad\.txt: the corpus is empty.*invalid UTF-8", (write("bad.txt", BAD_UTF8),)),
    Case("train-empty-folder", f"train --out {R} --data.input={{t}}/d", r"{t}/d: no \.csv.*files found", (mkdir("d"),)),
    Case("train-data-is-a-model", f"train --out {R} --data.input={{s}}/gpt", r"{s}/gpt: a model directory \(config\.json and its weights or tokenizer\), not a corpus: give text files"),
    Case("train-vocab-below-data", f"train --out {R} {DATA} --model.vocab_size=5", r"model\.vocab_size=5 < the data's vocabulary"),
    Case("train-context-above-data", f"train --out {R} {DATA} --model.block_size=100000", r"fewer than block_size\+1=100001"),
    Case("train-bpe-vocab-0", f"train --out {R} {DATA} --data.tokenizer=bpe --data.vocab_size=0", r"data\.vocab_size=0 must be at least"),
    Case("train-init-from-missing", f"train --out {R} {DATA} --init-from {{t}}/nomodel", rf"{{t}}/nomodel: {MODEL_DIR}"),
    Case("train-init-from-seq2seq", f"train --out {R} {DATA} --init-from {{s}}/s2s", r"train\.init_from='{s}/s2s' is not a decoder language model"),
    Case("train-init-from-a-file", f"train --out {R} {DATA} --init-from {{s}}/corpus.txt", rf"{{s}}/corpus\.txt: {MODEL_DIR}"),
    Case("train-translation-on-text", f"train --out {R} {DATA} --data.task=translation --model.arch=seq2seq", r"{s}/corpus\.txt: not a pair file"),
    Case("train-translation-no-val", f"train --out {R} --data.input={{t}}/p.jsonl --data.task=translation --model.arch=seq2seq --data.vocab_size=300", r"{t}/r/data: no validation pairs", (write("p.jsonl", PAIRS),)),
    Case("train-classification-one-label", f"train --out {R} --data.input={{s}}/l.jsonl --data.task=classification --init-from {{s}}/gpt --data.labels=neg", r"data\.labels='neg': name at least two labels"),
    Case("train-chat-all-test", f"train --out {R} --data.input={{t}}/c.jsonl --data.task=chat --init-from {{t}}/m", r'{t}/c\.jsonl: 2 conversations held out as "split": "test" and none to train on; give the ones to learn from "split": "train" \(or no split\)$', (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("c.jsonl", CHAT_LINE * 2))),
    Case("train-chat-json-array", f"train --out {R} --data.input={{t}}/c.json --data.task=chat --init-from {{t}}/m", r"{t}/c\.json:1: a JSON array, but chat data is JSON Lines: one \{\"messages\": \[\.\.\.\]\} conversation a line", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("c.json", "[\n  " + CHAT_LINE.rstrip() + "\n]\n"))),
    # --- train: existing run folders, --overwrite and --resume
    Case("train-out-is-file", f"train --out {{t}}/f {DATA}", r"{t}/f: is a file", (write("f", "x"),)),
    Case("train-out-is-prepared-data", f"train --out {{t}}/shards {DATA}", r"{t}/shards: holds prepared data \(lmforge prep's meta\.json and shards\), not a run; a run there would mix its files with the data's: choose another --out$", (copy("shards"),)),
    Case("train-existing-run", f"train --out {{s}}/run {DATA}", r"{s}/run: already holds a run; use --resume"),
    Case("train-overwrite-foreign", f"train --out {{t}}/p --overwrite {DATA}", r"{t}/p: holds model but is not an lmforge run directory", (write("p/model/weights.bin", "mine"), write("p/notes.txt", "mine"))),
    Case("train-overwrite-empty-corpus", "train --out {t}/run --overwrite --data.input={t}/e.txt", r"{t}/e\.txt: the corpus is empty", (copy("run"), write("e.txt", ""))),
    Case("train-data-is-a-run", "train --out {t}/new --data.input={t}/run", r"data\.input='{t}/run': a run directory, not data \(--resume {t}/run continues it, --train\.init_from={t}/run/model starts from its model\)$", (copy("run"),)),
    Case("train-overwrite-data-inside", "train --out {t}/run --overwrite --data.input={t}/run/data", r"data\.input='{t}/run/data' lies inside {t}/run/data, which --overwrite would replace", (copy("run"),)),
    Case("resume-not-a-run", "train --resume {t}/x", r"{t}/x: not a run directory \(no config\.toml\)", (write("x/a", "hi"),)),
    Case("resume-missing", "train --resume {t}/missing", r"--resume {t}/missing: no such directory$"),
    Case("train-recipe-not-prepared", "train {t}/r.toml --out {t}/new", r"data\.input='nowhere/prepared': no such file, folder or glob match in the working directory, .+; the recipe's \[prep\] section builds it: lmforge prep \S+/r\.toml$", (write("r.toml", '[data]\ninput = "nowhere/prepared"\n[prep]\ninputs = "c.txt"\nout = "nowhere/prepared"\n'),)),
    Case("resume-finished", "train --resume {t}/run", r"{t}/run: the run finished at step 4 \(its summary\.json\): nothing to resume; to train it further, resume with a larger --train\.max_steps \(above 4\)$", (copy("run"),)),
    Case("train-overwrite-bad-deepspeed-json", f"train --out {{t}}/run --overwrite --engine.name=deepspeed --engine.deepspeed_config={{t}}/ds.json {DATA}", r"{t}/ds\.json: invalid JSON", (copy("run"), write("ds.json", "{"))),
    Case("train-deepspeed-json-typo", f"train --out {{t}}/new --engine.name=deepspeed --engine.deepspeed_config={{t}}/ds.json {DATA}", r"{t}/ds\.json: key 'zero_optimization\.reduce_bucket_sise': Extra inputs are not permitted \(DeepSpeed's own check\)$", (write("ds.json", '{"zero_optimization": {"reduce_bucket_sise": 5}}'),)),
    Case("train-deepspeed-json-autocast", f"train --out {{t}}/new --engine.name=deepspeed --engine.deepspeed_config={{t}}/ds.json {DATA}", r"{t}/ds\.json: key 'torch_autocast' \(DeepSpeed's autocast\) is train\.dtype's: set --train\.dtype and remove it$", (write("ds.json", '{"torch_autocast": {"enabled": true, "dtype": "bfloat16"}}'),)),
    Case("train-deepspeed-refuses", f"train --out {{t}}/new --engine.name=deepspeed --engine.zero_stage=2 --engine.deepspeed_config={{t}}/ds.json {DATA}", r"{t}/ds\.json: DeepSpeed refused the config: gradient_predivide_factor != 1\.0 is not yet supported", (write("ds.json", '{"prescale_gradients": true, "gradient_predivide_factor": 4.0}'),)),
    Case("resume-model-key", "train --resume {t}/run --model.n_layer=3", r"cannot change model\.n_layer=3 \(the run has model\.n_layer=2\)", (copy("run"),)),
    Case("resume-position-kind", "train --resume {t}/run --model.pos=rope", r"cannot change model\.pos='rope' \(the run has model\.pos='learned'\)", (copy("run"),)),
    Case("resume-other-data", "train --resume {t}/run --data.input={s}/l.jsonl", r"cannot change data\.input='{s}/l\.jsonl'", (copy("run"),)),
    Case("resume-with-recipe", "train {t}/r.toml --resume {t}/run", r"the recipe {t}/r\.toml would be ignored", (copy("run"), write("r.toml", ""))),
    Case("resume-other-out", "train --resume {t}/run --out {t}/other", r"--out {t}/other differs from --resume {t}/run", (copy("run"),)),
    Case("resume-and-overwrite", "train --resume {t}/run --overwrite", r"--resume {t}/run and --overwrite exclude each other", (copy("run"),)),
    Case("resume-all-damaged", "train --resume {t}/run", r"{t}/run/checkpoints: no usable checkpoint.*step_00000004: model\.safetensors has 100 bytes.*step_00000002", (copy("run"), cut("run/checkpoints/*/model.safetensors", 100))),
    Case("resume-no-checkpoints", "train --resume {t}/run", r"{t}/run/checkpoints: no checkpoint to resume from", (copy("run"), remove("run/checkpoints"))),
    Case("train-overwrite-file-in-checkpoint", f"train --out {{t}}/run --overwrite {DATA}", r"{t}/run/checkpoints/step_00000002: holds files train did not write \(NOTES\.md\); --overwrite would delete them", (copy("run"), write("run/checkpoints/step_00000002/NOTES.md", "mine"))),
    Case("train-overwrite-file-in-checkpoint-and-model", f"train --out {{t}}/run --overwrite {DATA}", r"{t}/run/model: holds files train did not write \(README\.md\)", (copy("run"), write("run/checkpoints/step_00000004/README.md", "card"), write("run/model/README.md", "card"))),
    Case("resume-loader-cursor-text", "train --resume {t}/run --train.max_steps=6", r"{t}/run/checkpoints/step_00000004/trainer\.json: loader\.cursor is 'abc', not a whole number", (copy("run"), edit_json("run/checkpoints/step_00000004/trainer.json", lambda d: {**d, "loader": {**d["loader"], "cursor": "abc"}}), rehash("run/checkpoints/step_00000004"))),
    Case("resume-old-checkpoint-bad-scheduler", "train --resume {t}/run --train.max_steps=6", r"{t}/run/checkpoints/step_00000004/optimizer\.json: has no 'scheduler' object", (copy("run"), remove("run/checkpoints/step_00000004/manifest.json"), remove("run/checkpoints/step_00000002/manifest.json"), write("run/checkpoints/step_00000004/optimizer.json", '{"x": 1}'))),
    Case("resume-manifest-names-outside", "train --resume {t}/run", r"{t}/run/checkpoints: no usable checkpoint to resume from \(step_00000004: manifest\.json: names '/etc/hostname', which is not a file inside the checkpoint \(refused unopened\); step_00000002: manifest\.json: names '\.\./\.\./config\.toml'", (copy("run"), edit_json("run/checkpoints/step_00000004/manifest.json", lambda m: {**m, "files": {"/etc/hostname": {"size": 1, "sha256": "0" * 64}}}), edit_json("run/checkpoints/step_00000002/manifest.json", lambda m: {**m, "files": {"../../config.toml": {"size": 1, "sha256": "0" * 64}}}))),
    Case("resume-damaged-config", "train --resume {t}/run", r"{t}/run/config\.toml: invalid TOML", (copy("run"), write("run/config.toml", "garbage\n"))),
    Case("resume-damaged-metrics", "train --resume {t}/run --train.max_steps=6", r"{t}/run/metrics\.jsonl:1: not a JSON object", (copy("run"), lambda t, s: (t / "run/metrics.jsonl").write_text("garbage\n" + (s / "run/metrics.jsonl").read_text()))),
    # --- generate
    Case("generate-missing-model", "generate {t}/nomodel --prompt hi", rf"{{t}}/nomodel: {MODEL_DIR} \(no such file or folder\)$"),
    Case("generate-empty-folder", "generate {t}/m --prompt hi", rf"{{t}}/m: {MODEL_DIR}", (mkdir("m"),)),
    Case("generate-a-file", "generate {s}/corpus.txt --prompt hi", rf"{{s}}/corpus\.txt: {MODEL_DIR}"),
    Case("generate-invalid-config", "generate {t}/m --prompt hi", r"{t}/m/config\.json: unreadable model config", (copy("gpt", "m"), write("m/config.json", '{"n_layer": \n'))),
    Case("generate-config-wrong-type", "generate {t}/m --prompt hi", r"{t}/m/config\.json: model\.n_layer='two' must be an integer", (copy("gpt", "m"), set_json("m/config.json", n_layer="two"))),
    Case("generate-config-unknown-type", "generate {t}/m --prompt hi", r"{t}/m/config\.json: unknown model_type 'mamba'", (copy("gpt", "m"), set_json("m/config.json", model_type="mamba"))),
    Case("generate-config-unknown-key", "generate {t}/m --prompt hi", r"{t}/m/config\.json: unknown config key 'norm_epss' \(did you mean 'norm_eps'\?\)$", (copy("gpt", "m"), set_json("m/config.json", norm_epss=0.5))),
    Case("generate-generation-eos-type", "generate {t}/m --prompt hi", r"{t}/m/generation_config\.json: key 'eos_token_id' must be a token id or a list of them, not \[1, 'x'\]$", (copy("gpt", "m"), write("m/generation_config.json", '{"eos_token_id": [1, "x"]}'))),
    Case("generate-config-misfit", "generate {t}/m --prompt hi", r"{t}/m/model\.safetensors: does not fit {t}/m/config\.json \(size mismatch", (copy("gpt", "m"), set_json("m/config.json", vocab_size=7))),
    Case("generate-truncated-weights", "generate {t}/m --prompt hi", r"{t}/m/model\.safetensors: unreadable safetensors file", (copy("gpt", "m"), cut("m/model.safetensors", 200))),
    Case("generate-no-tokenizer", "generate {t}/m --prompt hi", r"{t}/m/tokenizer\.json: cannot load tokenizer", (copy("gpt", "m"), remove("m/tokenizer.json"))),
    Case("generate-damaged-run", "generate {t}/run --prompt hi", r"{t}/run/checkpoints/step_00000004/model\.safetensors: unreadable", (copy("run"), remove("run/model"), cut("run/checkpoints/*/model.safetensors", 100))),
    Case("generate-seq2seq", "generate {s}/s2s --prompt hi", r"{s}/s2s: an encoder-decoder \(Seq2Seq\), not a decoder language model \(try translate\)"),
    Case("generate-classifier", "generate {s}/clf --prompt hi", r"{s}/clf: a classifier \(Classifier\), not a decoder language model$"),
    Case("generate-temperature", "generate {s}/gpt --prompt hi --temperature -1", r"temperature=-1\.0: must be a finite number >= 0"),
    Case("generate-temperature-nan", "generate {s}/gpt --prompt hi --temperature nan", r"temperature=nan: must be a finite number"),
    Case("generate-top-p", "generate {s}/gpt --prompt hi --top-p 0", r"top_p=0\.0: must be a number in \(0, 1\]"),
    Case("generate-top-k", "generate {s}/gpt --prompt hi --top-k -3", r"top_k=-3: must be an integer >= 0"),
    Case("generate-max-new-tokens", "generate {s}/gpt --prompt hi --max-new-tokens -5", r"max_new_tokens=-5: must be an integer >= 0"),
    Case("generate-long-prompt", f"generate {{s}}/gpt --prompt '{LONG}'", r"the prompt is 53 tokens, longer than the model's context of 16"),
    Case("generate-long-prompt-real-stdout", f"generate {{s}}/gpt --prompt '{LONG}'", r"the prompt is 53 tokens", process=True),
    Case("generate-dtype", "generate {s}/gpt --prompt hi --dtype fp16", r"argument --dtype: invalid choice: 'fp16'", usage=True),
    Case("generate-not-an-int", "generate {s}/gpt --prompt hi --max-new-tokens abc", r"argument --max-new-tokens: invalid int value: 'abc'", usage=True),
    # --- import
    Case("import-no-config", "import {t}/h --out {t}/o", r"{t}/h/config\.json: unreadable model config", (write("h/model.safetensors", "x"),)),
    Case("import-missing", "import {t}/missing --out {t}/o", r"{t}/missing: no such file or folder \(an HF model folder or a \.gguf file\)$"),
    Case("import-empty-path", "import '' --out {t}/o", r"the model path is empty \(a \$\(\.\.\.\) or variable that gave nothing\?\)$"),
    Case("generate-empty-path", "generate '' --prompt hi", r"the model path is empty \(a \$\(\.\.\.\) or variable that gave nothing\?\)$"),
    Case("import-gemma3-softcapping", "import {t}/h --out {t}/o", r"{t}/h/config\.json: unsupported final_logit_softcapping=30\.0 \(Gemma 3 has none", (copy("hf", "h"), set_json("h/config.json", model_type="gemma3_text", final_logit_softcapping=30.0))),
    Case("import-gemma2-softcap-zero", "import {t}/h --out {t}/o", r"{t}/h/config\.json: config key 'attn_logit_softcapping' must be a number > 0 or null, not 0$", (copy("hf", "h"), set_json("h/config.json", model_type="gemma2", attn_logit_softcapping=0))),
    Case("import-unknown-type", "import {t}/h --out {t}/o", r"{t}/h/config\.json: unknown architecture model_type='mamba'", (copy("hf", "h"), set_json("h/config.json", model_type="mamba"))),
    Case("import-lmforge-dir", "import {s}/gpt --out {t}/o", r"{s}/gpt/config\.json: already an lmforge model \(lmforge-gpt\): load, train or serve its folder as it is"),
    Case("import-generation-eos-type", "import {t}/h --out {t}/o", r"{t}/h/generation_config\.json: key 'eos_token_id' must be a token id or a list of them, not 'abc'$", (copy("hf", "h"), write("h/generation_config.json", '{"eos_token_id": "abc"}'))),
    Case("import-generation-bad-words", "import {t}/h --out {t}/o", r"{t}/h/generation_config\.json: key 'bad_words_ids' must be a list of lists of token ids, not \[1\]$", (copy("hf", "h"), write("h/generation_config.json", '{"bad_words_ids": [1]}'))),
    Case("import-invalid-config", "import {t}/h --out {t}/o", r"{t}/h/config\.json: unreadable model config", (copy("hf", "h"), write("h/config.json", "{bad"))),
    Case("import-shard-outside", "import {t}/h --out {t}/o", r"{t}/h/model\.safetensors\.index\.json: shard name '\.\./w\.safetensors' lies outside the model folder", (copy("hf", "h"), lambda t, s: (t / "h/model.safetensors").rename(t / "w.safetensors"), write("h/model.safetensors.index.json", '{"weight_map": {"transformer.wte.weight": "../w.safetensors"}}'))),
    Case("import-truncated", "import {t}/h --out {t}/o", r"{t}/h/model\.safetensors: unreadable safetensors file", (copy("hf", "h"), cut("h/model.safetensors", 300))),
    Case("import-no-weights", "import {t}/h --out {t}/o", r"{t}/h: no weights \(model\.safetensors, an index's shards or pytorch_model\.bin\)", (copy("hf", "h"), remove("h/model.safetensors"))),
    Case("import-no-tokenizer", "import {t}/h --out {t}/o", r"{t}/h: no tokenizer\.json", (copy("hf", "h"), remove("h/tokenizer.json"))),
    Case("import-out-is-input", "import {t}/h --out {t}/h", r"{t}/h: the output folder is the input", (copy("hf", "h"),)),
    Case("import-chat-template-name", "import {t}/h --out {t}/o", r"{t}/h/tokenizer_config\.json: 'chat_template' item 0: the name '\.\./x' cannot name a file$", (copy("hf", "h"), set_json("h/tokenizer_config.json", chat_template=[{"name": "../x", "template": "hi"}]))),
    Case("import-padding-side", "import {t}/h --out {t}/o", r"{t}/h/tokenizer_config\.json: 'padding_side' must be \"left\" or \"right\", not 'middle'$", (copy("hf", "h"), set_json("h/tokenizer_config.json", padding_side="middle"))),
    Case("import-out-foreign", "import {s}/hf --out {t}/o", r"{t}/o: holds files import did not write \(README\.md\)", (write("o/README.md", "mine"),)),
    Case("import-no-out", "import {s}/hf", r"required: --out", usage=True),
    # --- export
    Case("export-out-foreign", "export {s}/gpt --out {t}/p", r"{t}/p: holds files export did not write \(README\.md\)", (write("p/README.md", "mine"),)),
    Case("export-out-other-model", "export {s}/gpt --out {t}/m", r"{t}/m: holds a model \(model_type 'lmforge-gpt'\) that export did not write", (copy("gpt", "m"),)),
    Case("export-not-a-model", "export {t}/x --out {t}/o", rf"{{t}}/x: {MODEL_DIR}", (write("x/a.txt", "hi"),)),
    Case("export-missing", "export {t}/missing --out {t}/o", rf"{{t}}/missing: {MODEL_DIR}"),
    Case("export-out-is-model", "export {t}/m --out {t}/m", r"{t}/m: the output folder is the input", (copy("gpt", "m"),)),
    Case("export-out-inside-model", "export {t}/m --out {t}/m/hf", r"{t}/m/hf: the output folder lies inside the input", (copy("gpt", "m"),)),
    Case("export-out-is-file", "export {s}/gpt --out {t}/f", r"{t}/f: exists and is not a folder", (write("f", "x"),)),
    Case("export-out-dot", "export {s}/gpt --out .", r"\.: is the working directory"),
    Case("export-classifier", "export {s}/clf --out {t}/new/deep/o", r"{s}/clf: a decoder classifier exports to HF as \w+ForSequenceClassification, .* this one has a head bias"),
    # --- finetune-classify
    Case("classify-labels-no-value", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels", r"argument --labels: expected one argument", usage=True),
    Case("classify-no-train", "finetune-classify {s}/gpt --labels neg,pos", r"required: --train", usage=True),
    Case("classify-unknown-label", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,positive", r"{s}/l\.jsonl:\d+: label 'pos' is not one of"),
    Case("classify-label-not-a-name", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels '[\"neg, mostly\", 3]'", r"data\.labels=\[\"neg, mostly\", 3\]: 3 is not a name: quote each one \(data\.labels is finetune-classify's --labels\)$"),
    Case("classify-labels-unquoted-list", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels '[neg,pos]'", r"data\.labels=\[neg,pos\]: not a TOML list: quote each name \(\[\"good, mostly\", \"bad\"\]\), or give names split on commas without brackets \(data\.labels is finetune-classify's --labels\)$"),
    Case("classify-label-blank", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels '[\"neg\", \"\"]'", r"data\.labels='\[\"neg\", \"\"\]': a blank name in the list \(data\.labels is finetune-classify's --labels\)$"),
    Case("classify-one-label", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg", r"labels='neg': name at least two labels"),
    Case("lora-target-twice", "train --data.input={s}/corpus.txt --train.init_from={s}/gpt --lora.enabled=true --lora.targets=q_proj,v_proj,q_proj --out {t}/o", r"lora\.targets: 'q_proj' is named twice$"),
    Case("lora-rank-above-width", "train --data.input={s}/corpus.txt --train.init_from={s}/gpt --lora.enabled=true --lora.rank=4096 --out {t}/o", r"lora\.rank=4096 is above the full rank of blocks\.0\.attn\.qkv \(\d+: .*use at most \d+$"),
    Case("lora-also-train-unknown", "train --data.input={s}/corpus.txt --train.init_from={s}/gpt --lora.enabled=true --lora.also_train=head --out {t}/o", r"lora\.also_train: no module 'head' in this GPT \(its modules: .*lm_head.*; deeper ones by dotted path\)$"),
    Case("classify-lora-frozen-head", "train --data.task=classification --data.input={s}/l.jsonl --data.labels=neg,pos --train.init_from={s}/gpt --lora.enabled=true --out {t}/o", r"lora\.enabled: the classification head is new and would stay random and frozen; add it to lora\.also_train \(--lora\.also_train=head\)"),
    Case("classify-existing-run", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --out {s}/run", r"{s}/run: already holds a run; use lmforge train --resume {s}/run, --overwrite or another --out"),
    Case("classify-overwrite-is-an-option", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,positive --overwrite", r"{s}/l\.jsonl:\d+: label 'pos' is not one of"),
    Case("classify-label-twice", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,neg", r"labels='neg,neg': name at least two labels, each once"),
    Case("classify-val-fraction-0", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --val-fraction 0", r"data\.val_fraction=[\d.]+ must be in \(0, 1\).* \(data\.val_fraction is finetune-classify's --val-fraction\)$"),
    Case("classify-val-fraction-1", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --val-fraction 1", r"data\.val_fraction=[\d.]+ must be in \(0, 1\).* \(data\.val_fraction is finetune-classify's --val-fraction\)$"),
    Case("classify-seq2seq", "finetune-classify {s}/s2s --train {s}/l.jsonl --labels neg,pos --out {t}/o", r"train\.init_from='{s}/s2s': not a decoder or encoder model"),
    Case("classify-missing-model", "finetune-classify {t}/nomodel --train {s}/l.jsonl --labels neg,pos", rf"{{t}}/nomodel: {MODEL_DIR}"),
    Case("classify-missing-data", "finetune-classify {s}/gpt --train {t}/none.jsonl --labels neg,pos", r"{t}/none\.jsonl: no such file$"),
    Case("classify-data-folder", "finetune-classify {s}/gpt --train {t}/m --labels neg,pos", r"{t}/m: a folder, not a \.jsonl file$", (mkdir("m"),)),
    Case("classify-bad-utf8", "finetune-classify {s}/gpt --train {t}/b.jsonl --labels neg,pos", r"{t}/b\.jsonl:2: not valid UTF-8 \(byte \d+ of the file\)$", (write("b.jsonl", b'{"text": "fine", "label": "pos"}\n{"text": "caf\xff", "label": "neg"}\n'),)),
    Case("classify-text-field", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --text-field body", r"{s}/l\.jsonl:1: needs JSON with 'body' and 'label'"),
    Case("classify-empty-text", "finetune-classify {s}/gpt --train {t}/e.jsonl --labels neg,pos", r"{t}/e\.jsonl:2: 'text' is \"  \", not a text$", (write("e.jsonl", '{"text": "fine", "label": "pos"}\n{"text": "  ", "label": "neg"}\n'),)),
    Case("classify-null-text", "finetune-classify {s}/gpt --train {t}/e.jsonl --labels neg,pos", r"{t}/e\.jsonl:1: 'text' is null, not a text$", (write("e.jsonl", '{"text": null, "label": "pos"}\n'),)),
    Case("classify-epochs-0", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --epochs 0", r"epochs=0 must be an integer >= 1"),
    Case("classify-batch-size-0", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --batch-size 0", r"batch_size=0 must be an integer >= 1"),
    Case("classify-max-len-0", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --max-len 0", r"data\.max_len=0 must be > 0"),
    Case("classify-lr-negative", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --lr -1", r"train\.lr=-1 must be > 0"),
    Case("classify-too-few-to-train", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --val-fraction 0.99 --out {t}/o", r"1 training examples, fewer than train\.batch_size=32"),
    Case("classify-out-foreign", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --out {t}/o", r"{t}/o: holds model but is not an lmforge run directory", (write("o/notes.txt", "mine"), mkdir("o/model"))),
    # text pairs (--text-pair-field, data.text_pair_field): a cross-encoder's data
    Case("classify-pair-field-missing", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --text-pair-field hypothesis", r"{s}/l\.jsonl:1: needs JSON with 'text', 'hypothesis' and 'label' \("),
    Case("classify-pair-empty", "finetune-classify {s}/gpt --train {t}/p.jsonl --labels neg,pos --text-pair-field hypothesis", r"{t}/p\.jsonl:2: 'hypothesis' is \"  \", not a text$", (write("p.jsonl", '{"text": "a", "hypothesis": "b", "label": "pos"}\n{"text": "a", "hypothesis": "  ", "label": "neg"}\n'),)),
    Case("classify-pair-not-a-string", "finetune-classify {s}/gpt --train {t}/p.jsonl --labels neg,pos --text-pair-field hypothesis", r"{t}/p\.jsonl:1: 'hypothesis' is 3, not a text$", (write("p.jsonl", '{"text": "a", "hypothesis": 3, "label": "pos"}\n'),)),
    Case("classify-pair-field-is-text-field", "finetune-classify {s}/gpt --train {s}/l.jsonl --labels neg,pos --text-pair-field text", r"^lmforge: error: text_pair_field='text' is also the text_field: name the field holding each record's second text$"),
    Case("train-pair-field-is-text-field", f"train --out {R} --data.task=classification --data.input={{s}}/l.jsonl --data.labels=neg,pos --init-from {{s}}/gpt --data.text_pair_field=text", r"data\.text_pair_field='text' is also data\.text_field: name the field holding each record's second text$"),
    Case("train-pair-field-lm", f"train --out {R} {DATA} --data.text_pair_field=hypothesis", r"data\.text_pair_field='hypothesis' is for data\.task='classification' \(text pairs for a cross-encoder\), not 'lm'$"),
    Case("eval-classify-pair-field-missing", "eval-classify {s}/clf --data {s}/l.jsonl --text-pair-field hypothesis", r"{s}/l\.jsonl:1: needs JSON with 'text', 'hypothesis' and 'label' \("),
    Case("eval-classify-pair-field-is-label-field", "eval-classify {s}/clf --data {s}/l.jsonl --text-pair-field label", r"text_pair_field='label' is also the label_field: name the field"),
    Case("classify-file-pair-field-missing", "classify {s}/clf --file {t}/c.jsonl --text-pair-field h", r"{t}/c\.jsonl:1: needs JSON with 'text' and 'h' \(", (write("c.jsonl", '{"text": "hi"}\n'),)),
    Case("classify-file-pair-empty", "classify {s}/clf --file {t}/c.jsonl --text-pair-field h", r"{t}/c\.jsonl:2: 'h' is \"\", not a text$", (write("c.jsonl", '{"text": "hi", "h": "yo"}\n{"text": "hi", "h": ""}\n'),)),
    Case("classify-file-pair-field-is-text-field", "classify {s}/clf --file {t}/c.jsonl --text-pair-field text", r"text_pair_field='text' is also the text_field", (write("c.jsonl", '{"text": "hi"}\n'),)),
    Case("classify-pair-field-no-file", "classify {s}/clf hi --text-pair-field h", r"text_pair_field='h' names a field of a \.jsonl --file; none is given$"),
    Case("classify-pair-field-plain-file", "classify {s}/clf --file {t}/c.txt --text-pair-field h", r"{t}/c\.txt: text_pair_field='h' names a field of JSON lines \(\.jsonl\), and this file is read as plain text", (write("c.txt", "hi\n"),)),
    # --- embed
    Case("embed-gpt", "embed {s}/gpt hello", r"{s}/gpt: a GPT, not an encoder: sentence embeddings need a sentence-embedding encoder"),
    Case("embed-classifier", "embed {s}/clf hello", r"{s}/clf: a Classifier, not an encoder"),
    Case("embed-seq2seq", "embed {s}/s2s hello", r"{s}/s2s: a Seq2Seq, not an encoder"),
    Case("embed-missing-model", "embed {t}/nomodel hello", rf"{{t}}/nomodel: {MODEL_DIR}"),
    Case("embed-nothing", "embed {s}/gpt", r"nothing to embed: give some text or --file$"),
    Case("embed-max-length", "embed {s}/gpt hello --max-length 1", r"max_length=1: must be an integer >= 2"),
    Case("embed-max-length-past-context", "embed {t}/bert hello --max-length 65", r"max_length=65: longer than the model's context of 64 tokens$", (hf_bert("bert"),)),
    Case("embed-lower-case-not-bool", "embed {t}/bert hello", r"{t}/bert/sentence_bert_config\.json: 'do_lower_case' must be true or false, not 'yes'$", (hf_bert("bert"), write("bert/sentence_bert_config.json", '{"do_lower_case": "yes"}'))),
    Case("import-roberta-json-prefix-space", "import {t}/r --out {t}/o", r"{t}/r/tokenizer_config\.json: 'add_prefix_space' must be true or false, not 'yes'$", (fixture("roberta-qa", "r"), set_json("r/tokenizer_config.json", add_prefix_space="yes"))),
    Case("import-bert-strip-accents", "import {t}/bert --out {t}/o", r"{t}/bert/tokenizer_config\.json: 'strip_accents' must be true, false or null, not 'yes'$", (hf_bert("bert", strip_accents="yes"),)),
    Case("embed-file-missing", "embed {s}/gpt --file {t}/none.txt", r"{t}/none\.txt: no such file"),
    # --- translate
    Case("translate-gpt", "translate {s}/gpt hello", r"{s}/gpt: not a translation \(encoder-decoder\) model"),
    Case("translate-classifier", "translate {s}/clf hello", r"{s}/clf: not a translation"),
    Case("translate-missing-model", "translate {t}/nomodel hello", rf"{{t}}/nomodel: {MODEL_DIR}"),
    Case("translate-file-missing", "translate {s}/s2s --file {t}/none.txt", r"{t}/none\.txt: no such file"),
    Case("translate-file-folder", "translate {s}/s2s --file {t}/d", r"{t}/d: a folder, not a file of sentences", (mkdir("d"),)),
    Case("translate-file-empty", "translate {s}/s2s --file {t}/e.txt", r"{t}/e\.txt: empty, no sentences", (write("e.txt", ""),)),
    Case("translate-file-not-utf8", "translate {s}/s2s --file {t}/b.txt", r"{t}/b\.txt:2: not valid UTF-8 \(byte 3", (write("b.txt", b"ok\n\xff bad\n"),)),
    Case("translate-nothing", "translate {s}/s2s", r"nothing to translate"),
    Case("translate-beam-0", "translate {s}/s2s hello --beam 0", r"beam=0: must be an integer >= 1"),
    Case("translate-batch-size-0", "translate {s}/s2s hello --batch-size 0", r"batch_size=0: must be an integer >= 1"),
    Case("translate-length-penalty", "translate {s}/s2s hello --length-penalty nan", r"length_penalty=nan: must be a finite number"),
    Case("translate-beam-text", "translate {s}/s2s hello --beam abc", r"argument --beam: invalid int value: 'abc'", usage=True),
    Case("translate-long-sentence", f"translate {{s}}/s2s hello '{LONG}'", r"sentence 2 is 53 tokens, longer than the model's limit of 15 \(its context of 16 less the EOS\): shorten it, or truncate=True \(--truncate\)"),
    Case("translate-onnx-not-an-export", "translate {s}/s2s hello --runtime onnx", r"{s}/s2s/onnx\.json: missing \(not an `lmforge export --format onnx` folder\)"),
    Case("generate-onnx-missing-folder", "generate {t}/nomodel --runtime onnx --prompt hi", r"{t}/nomodel: no such folder \(an `lmforge export --format onnx` folder\)$"),
    Case("translate-onnx-beam", "translate {s}/s2s hello --runtime onnx --beam 4", r"--beam does not go with --runtime onnx", usage=True),
    # --- eval-translate
    Case("eval-out-is-src", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --out {t}/src.txt", r"out={t}/src\.txt is src={t}/src\.txt: writing it would overwrite an input", SRC_REF),
    Case("eval-out-is-ref", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --out {t}/ref.txt", r"out={t}/ref\.txt is ref=", SRC_REF),
    Case("eval-out-is-model-file", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --out {s}/s2s/config.json", r"is the model's file {s}/s2s/config\.json", SRC_REF),
    Case("eval-out-in-best", "eval-translate {t}/run --src {t}/src.txt --ref {t}/ref.txt --out {t}/run/best/model.safetensors --overwrite", r"out={t}/run/best/model\.safetensors lies inside the run {t}/run: writing it could replace the model's files", (*SRC_REF, copy("run"), write("run/best/model.safetensors", "best weights"))),
    Case("eval-out-in-checkpoint", "eval-translate {s}/run/checkpoints/step_00000004 --src {t}/src.txt --ref {t}/ref.txt --out {s}/run/checkpoints/step_00000002/model.safetensors --overwrite", r"out={s}/run/checkpoints/step_00000002/model\.safetensors lies inside the run {s}/run: writing it could replace the model's files; give a file outside it$", SRC_REF),
    Case("eval-out-folder", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --out {t}/o", r"out={t}/o: a folder", (*SRC_REF, mkdir("o"))),
    Case("eval-out-exists", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --out {t}/h.txt", r"out={t}/h\.txt exists: give --overwrite to replace it, or another file name$", (*SRC_REF, write("h.txt", "mine\n"))),
    Case("eval-out-missing-folder", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --out {t}/no/h.txt", r"folder {t}/no does not exist", SRC_REF),
    Case("eval-line-counts", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt", r"{t}/src\.txt has 2 lines but {t}/ref\.txt has 1", (write("src.txt", "a b\nc d\n"), write("ref.txt", "x\n"))),
    Case("eval-src-missing", "eval-translate {s}/s2s --src {t}/none.txt --ref {t}/ref.txt", r"{t}/none\.txt: no such file", SRC_REF),
    Case("eval-src-empty", "eval-translate {s}/s2s --src {t}/e.txt --ref {t}/ref.txt", r"{t}/e\.txt: empty", (*SRC_REF, write("e.txt", ""))),
    Case("eval-gpt", "eval-translate {s}/gpt --src {t}/src.txt --ref {t}/ref.txt", r"{s}/gpt: not a translation", SRC_REF),
    Case("eval-beam", "eval-translate {s}/s2s --src {t}/src.txt --ref {t}/ref.txt --beam -1", r"beam=-1: must be an integer >= 1", SRC_REF),
    Case("eval-no-ref", "eval-translate {s}/s2s --src {t}/src.txt", r"required: --ref", SRC_REF, usage=True),
    # --- classify, eval-classify
    Case("classify-nothing", "classify {s}/clf", r"nothing to classify: give some text or --file"),
    Case("classify-gpt", "classify {s}/gpt hello", r"{s}/gpt: .*, not a classifier \(train one from it with `lmforge finetune-classify {s}/gpt \.\.\.`\)"),
    Case("classify-s2s", "classify {s}/s2s hello", r"{s}/s2s: .*, not a classifier$"),
    Case("classify-top-k", "classify {s}/clf hello --top-k -2", r"top_k=-2: must be an integer >= 0"),
    Case("classify-file-missing", "classify {s}/clf --file {t}/none.txt", r"{t}/none\.txt: no such file"),
    Case("classify-file-empty", "classify {s}/clf --file {t}/e.txt", r"{t}/e\.txt: empty, no texts to classify", (write("e.txt", "\n\n"),)),
    Case("classify-jsonl-field", "classify {s}/clf --file {t}/c.jsonl --text-field body", r"{t}/c\.jsonl:1: needs JSON with 'body'", (write("c.jsonl", '{"text": "hi"}\n'),)),
    Case("classify-file-not-utf8", "classify {s}/clf --file {t}/b.txt", r"{t}/b\.txt:2: not valid UTF-8", (write("b.txt", b"ok\n\xff bad\n"),)),
    Case("eval-classify-no-data", "eval-classify {s}/clf", r"required: --data", usage=True),
    Case("eval-classify-label", "eval-classify {s}/clf --data {t}/c.jsonl", r"{t}/c\.jsonl:2: label 'meh' is not one of \['neg', 'pos'\]", (write("c.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "meh"}\n'),)),
    Case("eval-classify-field", "eval-classify {s}/clf --data {s}/l.jsonl --label-field y", r"{s}/l\.jsonl:1: needs JSON with 'text' and 'y'"),
    Case("eval-classify-gpt", "eval-classify {s}/gpt --data {s}/l.jsonl", r"{s}/gpt: .*, not a classifier"),
    Case("eval-classify-batch", "eval-classify {s}/clf --data {s}/l.jsonl --batch-size 0", r"batch_size=0: must be an integer >= 1"),
    # --- eval-instruct
    Case("instruct-no-template", "eval-instruct {s}/gpt --data {t}/c.jsonl", r"{s}/gpt: has no chat template .*, so it cannot follow instructions: eval-instruct needs an instruct model$", (write("c.jsonl", CHAT_LINE),)),
    Case("instruct-out-folder", "eval-instruct {s}/gpt --data {t}/c.jsonl --out {t}", r"out={t}: a folder; give the name of a file to write$", (write("c.jsonl", CHAT_LINE),)),
    Case("instruct-bad-line", "eval-instruct {s}/gpt --data {t}/c.jsonl", r"{t}/c\.jsonl:2: not JSON", (write("c.jsonl", CHAT_LINE + "{oops\n"),)),
    Case("instruct-no-test", "eval-instruct {s}/gpt --data {t}/c.jsonl", r"{t}/c\.jsonl: no test conversations", (write("c.jsonl", CHAT_LINE.replace("test", "train")),)),
    Case("instruct-kind", "eval-instruct {s}/gpt --data {t}/c.jsonl", r"{t}/c\.jsonl:1: a test item with kind 'poem'", (write("c.jsonl", CHAT_LINE.replace("sentiment", "poem")),)),
    Case("instruct-no-kind", "eval-instruct {s}/gpt --data {t}/c.jsonl", r'{t}/c\.jsonl:1: a test item with no "kind"; eval-instruct scores translation and sentiment \(set "kind" on its test items, or give them "split": "train"\)$', (write("c.jsonl", CHAT_LINE.replace('"kind": "sentiment", ', "")),)),
    Case("instruct-empty-gold", "eval-instruct {s}/gpt --data {t}/c.jsonl", r"{t}/c\.jsonl:2: a sentiment test item whose gold answer \(its last message\) holds no label: ' '$", (write("c.jsonl", CHAT_LINE + CHAT_LINE.replace('"positive"', '" "')),)),
    Case("instruct-max-items", "eval-instruct {s}/gpt --data {t}/c.jsonl --max-items -1", r"max_items=-1 must be >= 0", (write("c.jsonl", CHAT_LINE),)),
    Case("instruct-out-exists", "eval-instruct {s}/gpt --data {t}/c.jsonl --out {t}/r.json", r"out={t}/r\.json exists: give --overwrite", (write("c.jsonl", CHAT_LINE), write("r.json", "{}"))),
    Case("instruct-out-is-data", "eval-instruct {s}/gpt --data {t}/c.jsonl --out {t}/c.jsonl", r"out={t}/c\.jsonl is data: writing it would overwrite an input", (write("c.jsonl", CHAT_LINE),)),
    Case("instruct-out-in-checkpoint", "eval-instruct {s}/run --data {t}/c.jsonl --out {s}/run/checkpoints/step_00000004/optimizer.safetensors --overwrite", r"out={s}/run/checkpoints/step_00000004/optimizer\.safetensors lies inside the run {s}/run: writing it could replace the model's files; give a file outside it$", (write("c.jsonl", CHAT_LINE),)),
    Case("instruct-no-data", "eval-instruct {s}/gpt --data {t}/none.jsonl", r"{t}/none\.jsonl: no such file$"),
    Case("instruct-out-is-model-file", "eval-instruct {s}/gpt --data {t}/c.jsonl --out {s}/gpt/config.json --overwrite", r"is the model's file {s}/gpt/config\.json: writing it would overwrite an input$", (write("c.jsonl", CHAT_LINE),)),
    # --- eval-qa
    Case("qa-no-data", "eval-qa {s}/gpt --data {t}/none.json", r"{t}/none\.json: no such file"),
    Case("qa-out-is-model-file", "eval-qa {s}/gpt --data {t}/q.json --out {s}/gpt/config.json --overwrite", r"is the model's file {s}/gpt/config\.json: writing it would overwrite an input$", (write("q.json", SQUAD),)),
    Case("qa-out-in-checkpoint", "eval-qa {s}/run --data {t}/q.json --out {s}/run/checkpoints/step_00000002/optimizer.safetensors --overwrite", r"out={s}/run/checkpoints/step_00000002/optimizer\.safetensors lies inside the run {s}/run: writing it could replace the model's files; give a file outside it$", (write("q.json", SQUAD),)),
    Case("qa-out-in-best", "eval-qa {t}/run --data {t}/q.json --out {t}/run/best/model.safetensors --overwrite", r"out={t}/run/best/model\.safetensors lies inside the run {t}/run: writing it could replace the model's files", (write("q.json", SQUAD), copy("run"), write("run/best/model.safetensors", "best weights"))),
    Case("qa-not-squad", "eval-qa {s}/gpt --data {t}/q.json", r"{t}/q\.json: SQuAD JSON needs a top-level object with a 'data' list", (write("q.json", "[]"),)),
    Case("qa-not-qa-model", "eval-qa {s}/gpt --data {t}/q.json", r"{s}/gpt: a decoder \(GPT\), not a question-answering model", (write("q.json", SQUAD),)),
    Case("qa-no-answers-key", "eval-qa {s}/gpt --data {t}/q.json", r"{t}/q\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] needs \"answers\"", (write("q.json", SQUAD.replace(', "answers": [{"text": "Ada", "answer_start": 0}]', "")),)),
    Case("qa-max-answer-len", "eval-qa {s}/gpt --data {t}/q.json --max-answer-len 0", r"max_answer_len=0: must be an integer >= 1", (write("q.json", SQUAD),)),
    Case("qa-out-exists", "eval-qa {s}/gpt --data {t}/q.json --out {t}/p.json", r"out={t}/p\.json exists: give --overwrite", (write("q.json", SQUAD), write("p.json", "{}"))),
    Case("qa-out-is-data", "eval-qa {s}/gpt --data {t}/q.json --out {t}/q.json", r"out={t}/q\.json is data: writing it would overwrite an input", (write("q.json", SQUAD),)),
    Case("qa-model-and-baseline", "eval-qa {s}/gpt --baseline sliding-window --data {t}/q.json", r"eval-qa needs a model or --baseline sliding-window, not both", (write("q.json", SQUAD),)),
    Case("qa-no-model", "eval-qa --data {t}/q.json", r"eval-qa needs a model or --baseline sliding-window$", (write("q.json", SQUAD),)),
    Case("qa-baseline-choice", "eval-qa --baseline bm25 --data {t}/q.json", r"argument --baseline: invalid choice: 'bm25'", usage=True),
    Case("qa-derived-stride-too-long", f"eval-qa {Path(__file__).parent / 'fixtures' / 'bert-qa'} --data {{t}}/q.json --max-seq-len 12", r"doc_stride=6 \(not given: min\(max_seq_len // 2, 128\)\) must be smaller than the \d+ context tokens a window of max_seq_len=12 holds beside question 1: give a larger max_seq_len or a smaller doc_stride$", (write("q.json", SQUAD),)),
    Case("qa-max-seq-len-above-context", f"eval-qa {Path(__file__).parent / 'fixtures' / 'bert-qa'} --data {{t}}/q.json --max-seq-len 600", r"max_seq_len=600: longer than the model's context of 64 tokens$", (write("q.json", SQUAD),)),
    Case("qa-duplicate-id", "eval-qa --baseline sliding-window --data {t}/q.json", r"{t}/q\.json: data\[0\]\.paragraphs\[1\]\.qas\[0\]: id '1' is also the id of data\[0\]\.paragraphs\[0\]\.qas\[0\]", (write("q.json", SQUAD.replace("]}]}]}]}", ']}]}, {"context": "Bo sells salt.", "qas": [{"id": "1", "question": "Who?", "answers": [{"text": "Bo", "answer_start": 0}]}]}]}]}')),)),
    Case("qa-v11-no-gold-answer", "eval-qa --baseline sliding-window --data {t}/q.json", r"{t}/q\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id '1'\): no gold answers, which SQuAD v1\.1 needs", (write("q.json", '{"version": "1.1", ' + SQUAD[1:].replace('[{"text": "Ada", "answer_start": 0}]', "[]")),)),
    Case("train-qa-question-not-object", f"train --data.task=qa --data.input={{t}}/q.json --train.init_from={Path(__file__).parent / 'fixtures' / 'bert-qa'} --out {{t}}/o", r"{t}/q\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: a question is an object with 'question' and 'answers', not a string$", (write("q.json", SQUAD.replace("}]}]}]}]}", '}]}, "Who?"]}]}]}')),)),
    Case("train-qa-is-impossible-string", f"train --data.task=qa --data.input={{t}}/q.json --train.init_from={Path(__file__).parent / 'fixtures' / 'bert-qa'} --out {{t}}/o", r"{t}/q\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id '1'\): 'is_impossible' must be true or false, not a string \"false\"$", (write("q.json", SQUAD.replace('"answer_start": 0}]', '"answer_start": 0}], "is_impossible": "false"')),)),
    Case("train-qa-stride-above-context", f"train --data.task=qa --data.input={{t}}/q.json --train.init_from={Path(__file__).parent / 'fixtures' / 'bert-qa'} --out {{t}}/o --data.max_len=512 --data.doc_stride=200 --data.val_fraction=0.5", r"data\.doc_stride=200 must be smaller than the \d+ context tokens a window of 64 tokens \(the model's context; data\.max_len=512 is above it\) holds beside {t}/q\.json: question '\d': give a smaller data\.doc_stride$", (write("q.json", SQUAD.replace("]}]}]}]}", ']}]}, {"context": "Bo sells salt.", "qas": [{"id": "2", "question": "Who?", "answers": [{"text": "Bo", "answer_start": 0}]}]}]}]}')),)),
    # --- chat (a tiny GPT given SmolLM2's ChatML template)
    Case("chat-no-template", "chat {s}/gpt", r"{s}/gpt: has no chat template"),
    Case("chat-missing-model", "chat {t}/none", rf"{{t}}/none: {MODEL_DIR}"),
    Case("chat-bad-template", "chat {t}/m", r"{t}/m: chat template, line 1: unexpected '}'", (copy("gpt", "m"), write("m/chat_template.jinja", "{% for m in messages %}{{ m.content }"))),
    Case("chat-bad-named-template", "chat {t}/m", r"{t}/m: tool_use: chat template, line 1: unexpected '}'", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("m/additional_chat_templates/tool_use.jinja", "{% for m in messages %}{{ m.content }"))),
    Case("chat-template-not-str", "chat {t}/m", r"{t}/m/tokenizer_config\.json: 'chat_template' must be a string", (copy("gpt", "m"), write("m/tokenizer_config.json", '{"chat_template": 3}'))),
    Case("chat-temperature", "chat {t}/m --temperature -1", r"temperature=-1\.0: must be a finite number >= 0", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML))),
    Case("chat-top-p", "chat {t}/m --top-p 0", r"top_p=0\.0: must be a number in \(0, 1\]", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML))),
    Case("chat-top-k", "chat {t}/m --top-k -1", r"top_k=-1: must be an integer >= 0", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML))),
    Case("chat-max-new-tokens", "chat {t}/m --max-new-tokens -2", r"max_new_tokens=-2 must be >= 1: a reply is what is generated", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML))),
    Case("chat-dtype", "chat {s}/gpt --dtype fp16", r"argument --dtype: invalid choice: 'fp16'", usage=True),
    # --- ask (the tiny GPT given SmolLM2's ChatML template; documents in the case's folder)
    Case("ask-empty-question", "ask {t}/m '  ' --docs {t}/d", r"the question is empty", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."))),
    Case("ask-no-template", "ask {s}/gpt Who? --docs {t}/d", r"{s}/gpt: has no chat template .*, so it cannot answer: lmforge ask needs an instruct model or an extractive question-answering one$", (write("d/a.txt", "Captain Ahab hunted the white whale."),)),
    Case("ask-docs-twice", "ask {t}/m Who? --docs {t}/d --docs {t}/e", r"docs: 2 given; ask indexes one file, folder or glob", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."), write("e/b.txt", "Ishmael."))),
    Case("ask-no-new-tokens", "ask {t}/m Who? --docs {t}/d --max-new-tokens 0", r"max_new_tokens=0 must be >= 1", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."))),
    Case("ask-seq2seq", "ask {s}/s2s Who? --docs {t}/d", r"{s}/s2s: an encoder-decoder \(Seq2Seq\)", (write("d/a.txt", "Captain Ahab hunted the white whale."),)),
    Case("ask-missing-docs", "ask {t}/m Who? --docs {t}/none", r"{t}/none: no such file", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML))),
    Case("ask-k", "ask {t}/m Who? --docs {t}/d --k 0", r"k=0 must be >= 1", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."))),
    Case("ask-passage-words", "ask {t}/m Who? --docs {t}/d --passage-words 0", r"passage_words=0 must be >= 1", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."))),
    Case("ask-index-in-docs", "ask {t}/m Who? --docs {t}/d --index {t}/d/idx", r"{t}/d/idx: the index folder lies inside the documents {t}/d; give another --index", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."))),
    Case("ask-index-foreign", "ask {t}/m Who? --docs {t}/d --index {t}/mine", r"{t}/mine: holds files ask did not write \(keep\.txt\)", (copy("gpt", "m"), write("m/chat_template.jinja", CHATML), write("d/a.txt", "Captain Ahab hunted the white whale."), write("mine/keep.txt", "mine"))),
    # --- eval (perplexity)
    Case("ppl-missing-data", "eval {s}/gpt --data {t}/none.txt", r"{t}/none\.txt: no such file"),
    Case("ppl-missing-model", "eval {t}/none --data {s}/corpus.txt", rf"{{t}}/none: {MODEL_DIR}"),
    Case("ppl-stride", "eval {s}/gpt --data {s}/corpus.txt --context 10 --stride 20", r"stride=20: must be below context=10"),
    Case("ppl-context", "eval {s}/gpt --data {s}/corpus.txt --context 100", r"context=100: longer than the model's context of 16"),
    Case("ppl-max-tokens", "eval {s}/gpt --data {s}/corpus.txt --max-tokens 0", r"max_tokens=0: must be an integer >= 1"),
    Case("ppl-seq2seq", "eval {s}/s2s --data {s}/corpus.txt", r"{s}/s2s: an encoder-decoder \(Seq2Seq\)"),
    Case("ppl-every-char-unknown", "eval {s}/gpt --data {t}/cjk.txt", r"{t}/cjk\.txt: no text to score: every scored character is outside the model's character vocabulary \(each became <\|unk\|>, which has no bytes\)$", (write("cjk.txt", "日本語の本"),)),
    # --- inspect
    Case("inspect-long-text", f"inspect {{s}}/gpt '{LONG}'", r"text is 53 tokens; inspect takes at most 16 \(the model's context of 16;"),
    Case("inspect-long-source", f"inspect {{s}}/s2s '{LONG}'", r"source \(with its EOS\) is 54 tokens; inspect takes at most 16"),
    Case("inspect-missing-model", "inspect {t}/none hello", rf"{{t}}/none: {MODEL_DIR}"),
    Case("inspect-target-on-gpt", "inspect {s}/gpt hi --target x", r"--target is for encoder-decoder \(translation\) models"),
    Case("inspect-max-tokens", "inspect {s}/gpt hi --max-tokens 1", r"max_tokens=1: must be an integer >= 2"),
    Case("inspect-top-k-huge", "inspect {s}/gpt hi --top-k 100000", r"top_k=100000: must be an integer from 1 to 100$"),
    Case("inspect-out-holds-files", "inspect {s}/gpt hi --out {t}/o", r"{t}/o: holds files inspect did not write \(notes\.txt\)", (write("o/notes.txt", "keep"),)),
    # --- audit
    Case("audit-missing-data", "audit {s}/gpt --data {t}/none.txt --prefix-tokens 4 --k 4", r"{t}/none\.txt: no such file"),
    Case("audit-missing-model", "audit {t}/none --data {s}/corpus.txt", rf"{{t}}/none: {MODEL_DIR}"),
    Case("audit-context", "audit {s}/gpt --data {s}/corpus.txt", r"prefix_tokens=50 \+ k=50 is over the model.s context of 16: lower --prefix-tokens or --k"),
    Case("audit-seq2seq", "audit {s}/s2s --data {s}/corpus.txt", r"{s}/s2s: an encoder-decoder \(Seq2Seq\), not a decoder language model"),
    Case("audit-samples", "audit {s}/gpt --data {s}/corpus.txt --samples 0", r"samples=0: must be an integer >= 1"),
    Case("audit-bad-canaries", "audit {s}/gpt --data {s}/corpus.txt --prefix-tokens 4 --k 4 --canaries {t}/c.json", r"{t}/c\.json: invalid JSON", (write("c.json", "{"),)),
    Case("audit-out-exists", "audit {s}/gpt --data {t}/d.txt --prefix-tokens 4 --k 4 --out {t}/r.json", r"out={t}/r\.json exists: give --overwrite", (write("d.txt", "to be or not to be"), write("r.json", "{}"))),
    Case("audit-out-is-data", "audit {s}/gpt --data {t}/d.txt --prefix-tokens 4 --k 4 --out {t}/d.txt", r"out={t}/d\.txt is data {t}/d\.txt: writing it would overwrite an input", (write("d.txt", "to be or not to be"),)),
    Case("audit-out-in-the-checkpoint-s-run", "audit {s}/run/checkpoints/step_00000004 --data {t}/d.txt --prefix-tokens 4 --k 4 --out {s}/run/model/model.safetensors --overwrite", r"out={s}/run/model/model\.safetensors lies inside the run {s}/run: writing it could replace the model's files; give a file outside it$", (write("d.txt", "to be or not to be"),)),
    Case("audit-no-data", "audit {s}/gpt", r"required: --data", usage=True),
    # --- plan
    Case("plan-vocab-below-the-data", "plan --data.input={s}/shards --model.vocab_size=2", r"model\.vocab_size=2 < the data's vocabulary of \d+"),
    # planned without a word until 2026-12-07, while train refused it
    Case("plan-shards-of-another-tokenizer", "plan --data.input={s}/shards --train.init_from={t}/gpt", r"{s}/shards: tokenized with another tokenizer than train\.init_from='{t}/gpt' \(give raw text as data\.input", (copy("gpt"), swap_two_tokens("gpt"))),
    # trained without a word until 2026-12-07 (and the run's model shipped the copied tokenizer)
    Case("train-shards-with-another-tokenizer", f"train --out {R} --data.input={{t}}/shards", r"{t}/shards: its tokenizer is not the one its shards were written with \(meta\.json's tokenizer_sha256 differs\)", (copy("shards"), swap_two_tokens("shards"))),
    Case("train-shards-float-dtype", f"train --out {R} --data.input={{t}}/shards", r"{t}/shards/meta\.json: dtype 'float16' is not an integer type \(uint16 or uint32\)$", (copy("shards"), set_json("shards/meta.json", dtype="float16"))),
    Case("plan-unknown-device", "plan --model.vocab_size=10 --device tpu", r"--device 'tpu' is not known \(known: h100,"),
    Case("plan-run-folder", "plan {t}/run", r"{t}/run: Is a directory, not a TOML recipe; the run's recipe is {t}/run/config\.toml$", (copy("run"),)),
    Case("plan-world-size", "plan --model.vocab_size=10 --world-size 0", r"world_size=0: must be an integer >= 1"),
    Case("plan-batch-split", "plan --model.vocab_size=10 --world-size 5", r"train\.batch_size=12 does not split evenly over world_size=5 ranks: set train\.batch_size to a multiple of 5 \(10 or 15\)"),
    Case("plan-no-vocab", "plan --data.input={t}/missing.jsonl", r"model\.vocab_size=0 and data\.input='{t}/missing\.jsonl' is neither a prepared directory nor text to count characters in \({t}/missing\.jsonl: no such file, folder or glob match, relative to the working directory .*\): give --model\.vocab_size=N, or prepare the data first$"),
    Case("plan-no-text", "plan --data.input={t}/corpus.jsonl", r"data\.input='{t}/corpus\.jsonl': no text to count characters in; give --model\.vocab_size=N$", (write("corpus.jsonl", '{"body": "a"}\n'),)),
    Case("plan-fits-nowhere", "plan --model.vocab_size=50257 --model.block_size=131072 --device l4", r"do not fit on 1 x l4 \(24 GiB per rank\) with any engine, offload or checkpointing .*; model\.block_size=\d+ would fit"),
    Case("plan-missing-config", "plan {t}/none.toml", r"{t}/none\.toml: config file not found"),
    Case("plan-model-key-beside-init-from", "plan --train.init_from={s}/gpt --model.n_layer=3", r"model\.n_layer=3 \(on the command line\) differs from the 1 of train\.init_from='{s}/gpt': the starting model brings its architecture"),
    # --- merge-lora
    Case("eval-a-gguf-file", "eval {t}/model.gguf --data {s}/corpus.txt", r"{t}/model\.gguf: not a model directory, run directory or checkpoint \(a GGUF file: `lmforge import {t}/model\.gguf --out DIR` makes a model directory of it\)$", (write("model.gguf", "GGUF"),)),
    Case("generate-a-weights-file", "generate {s}/gpt/model.safetensors --prompt hi", r"{s}/gpt/model\.safetensors: not a model directory, run directory or checkpoint \(a file of the model directory {s}/gpt: give the folder\)$"),
    Case("merge-not-lora", "merge-lora {s}/gpt --out {t}/o", r"{s}/gpt: not a LoRA adapter directory \(no lora\.json\)"),
    Case("merge-not-lora-run", "merge-lora {s}/run --out {t}/o", r"{s}/run.*: not a LoRA adapter directory"),
    Case("merge-missing", "merge-lora {t}/none --out {t}/o", rf"{{t}}/none: {MODEL_DIR}"),
    Case("merge-empty-folder", "merge-lora {t}/m --out {t}/o", rf"{{t}}/m: {MODEL_DIR}", (mkdir("m"),)),
    Case("merge-no-out", "merge-lora {s}/gpt", r"required: --out", usage=True),
    # --- import of GGUF files
    Case("gguf-not-gguf", "import {t}/x.gguf --out {t}/o", r"{t}/x\.gguf: not a readable GGUF file \(no GGUF magic\)", (write("x.gguf", "hello"),)),
    Case("gguf-truncated", "import {t}/x.gguf --out {t}/o", r"{t}/x\.gguf: not a readable GGUF file \(truncated or damaged", (write("x.gguf", b"GGUF\x03\x00"),)),
    # --- serve (each fails before the server binds its port)
    Case("serve-missing-model", "serve {t}/none", rf"{{t}}/none: {MODEL_DIR}"),
    Case("serve-not-a-model", "serve {s}/gpt {t}/d", rf"{{t}}/d: {MODEL_DIR}", (mkdir("d"),)),
    Case("serve-port", "serve {s}/gpt --port 70000", r"port=70000: must be an integer in \[1, 65535\]"),
    Case("serve-max-queue", "serve {s}/gpt --max-queue 0", r"max_queue=0: must be an integer >= 1"),
    Case("serve-max-tokens-limit", "serve {s}/gpt --max-tokens-limit -5", r"max_tokens_limit=-5: must be an integer >= 1"),
    Case("serve-timeout", "serve {s}/gpt --timeout nan", r"timeout=nan: must be a finite number of seconds > 0"),
    Case("serve-tool-call-parser", "serve {s}/gpt --tool-call-parser json", r"tool_call_parser='json': unknown \(known: hermes, llama3_json, llama4_json, pythonic\)"),
    Case("serve-origin-slash", "serve {s}/gpt --allow-origin http://localhost:5173/", r"allow_origin='http://localhost:5173/': give an origin as a browser sends it"),
    Case("serve-port-text", "serve {s}/gpt --port http", r"argument --port: invalid int value: 'http'", usage=True),
    Case("serve-no-model", "serve", r"required: models", usage=True),
    Case("serve-key-file-missing", "serve {s}/gpt --api-key-file {t}/key", r"api_key_file={t}/key: no such file"),
    Case("serve-key-file-folder", "serve {s}/gpt --api-key-file {t}", r"api_key_file={t}: is a folder"),
    Case("serve-key-file-utf8", "serve {s}/gpt --api-key-file {t}/key", r"api_key_file={t}/key: not valid UTF-8 \(byte 0 ", (write("key", b"\xffk\n"),)),
    Case("serve-key-file-empty", "serve {s}/gpt --api-key-file {t}/key", r"api_key_file={t}/key: the file is empty", (write("key", " \n"),)),
    Case("serve-key-and-key-file", "serve {s}/gpt --api-key k --api-key-file {t}/key", r"api_key and api_key_file are both given", (write("key", "k"),)),
    # --- launch
    Case("launch-local-engine", f"launch --nproc 2 train {DATA} --out {R}", r"engine\.name='local' trains in one process, so 2 processes would run 2 identical jobs"),
    Case("launch-no-verb", "launch --nproc 2", r"launch: give the verb to run"),
    Case("launch-nproc-0", "launch --nproc 0 train", r"--nproc and --nnodes must be >= 1"),
    Case("launch-copies-of-generate", "launch --nproc 2 generate {s}/gpt", r"only `train` runs in several processes; 2 processes of `generate`"),
    Case("launch-missing-recipe", "launch --nproc 2 train {t}/none.toml", r"{t}/none\.toml: config file not found"),
    Case("launch-resume-missing-run", "launch --nproc 2 train --resume {t}/gone", r"launch: --resume {t}/gone: no such directory$"),
    Case("launch-master-port", "launch --nproc 1 --master-port -5 train", r"--master-port -5 must be in \[0, 65535\]"),
    Case("launch-node-rank", "launch --nproc 1 --node-rank 3 train", r"--node-rank 3 must be in \[0, --nnodes 1\)"),
    Case("launch-no-nproc", "launch train", r"launch: --nproc N is required \(lmforge launch --nproc 2 train \.\.\.\)$"),
    Case("launch-nproc-after-verb", f"launch train {DATA} --nproc 2", r"launch: --nproc N goes before the verb, not after it"),
    Case("launch-nodes-without-port", f"launch --nnodes 2 --nproc 1 train {DATA}", r"launch: --nnodes 2 needs --master-addr \(node 0's address\) and --master-port"),
    Case("launch-verb-fails", "launch --nproc 1 generate {t}/nomodel --prompt hi", rf"{{t}}/nomodel: {MODEL_DIR}", process=True),
]
# fmt: on

CASES.append(Case("audit-empty-data", "audit {s}/gpt --data {t}/e.jsonl --prefix-tokens 4 --k 4", r"data {t}/e\.jsonl: no documents to audit \(skipped {t}/e\.jsonl: empty file\)", (write("e.jsonl", ""),)))  # fmt: skip
