"""data.task = "qa" on the one loop: SQuAD JSON in (bad answer_starts skipped and counted), windows
with a doc stride, a span model out that the pipeline and `lmforge eval-qa` read; every engine and
kill -9 then --resume (as tests/test_tasks_on_engines.py does for the other tasks)."""

from __future__ import annotations

import json
import lzma
import random
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_tasks_on_engines import ENGINES, kill_resume_and_compare, lmforge

from lmforge import eval_qa, pipeline
from lmforge.config import load_config
from lmforge.data.qa_features import NO_ANSWER, WindowMaker, span_targets
from lmforge.data.qa_squad import read_squad
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.train.loop import train
from lmforge.train.metrics import read_metrics
from lmforge.train.tasks.base import Setup
from lmforge.train.tasks.qa import QATask, collate

FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"
NAMES = ["Tobias", "Marta", "Ivan", "Greta", "Hugo", "Nora", "Felix", "Ada", "Otto", "Lena"]
PLACES = ["Harrow", "Dunmore", "Fenwick", "Ashford", "Orrin", "Aubrac", "Ives", "Cape"]
GOODS = ["salt", "wool", "copper", "bread", "wine", "pots", "books", "sheep"]


def write_squad(path: Path, paragraphs: int = 60, bad: int = 3, seed: int = 0, v2: bool = True) -> Path:
    """A SQuAD file: each paragraph says where someone lives and what someone sells, asks both and
    (v2.0) one unanswerable question; `bad` answers have an answer_start that misses their text."""
    rng = random.Random(seed)
    data = []
    for p in range(paragraphs):
        a, b, c = rng.sample(NAMES, 3)
        place, goods = rng.choice(PLACES), rng.choice(GOODS)
        filler = " ".join(
            rng.choice(["the", "old", "market", "by", "river", "in", "spring"]) for _ in range(4)
        )
        context = f"{filler}. {a} lives in {place}. {b} sells {goods} at the market. {filler}."
        qas = [
            {"id": f"{p}-live", "question": f"Where does {a} live?",
             "answers": [{"text": place, "answer_start": context.index(f"in {place}") + 3}]},
            {"id": f"{p}-sell", "question": f"What does {b} sell?",
             "answers": [{"text": goods, "answer_start": context.index(f"sells {goods}") + 6}]},
            {"id": f"{p}-none", "question": f"What does {c} sell?", "answers": [], "is_impossible": True},
        ][: 3 if v2 else 2]  # fmt: skip
        if p < bad:
            qas[0]["answers"][0]["answer_start"] += 1  # misses its text: skipped, counted
        data.append({"title": f"t{p}", "paragraphs": [{"context": context, "qas": qas}]})
    raw = json.dumps({"version": "v2.0" if v2 else "1.1", "data": data})
    if path.suffix == ".xz":
        path.write_bytes(lzma.compress(raw.encode()))
    else:
        path.write_text(raw)
    return path


def recipe(data: Path, steps: int) -> list[str]:
    return ["--data.task=qa", f"--data.input={data}", f"--train.init_from={FIXTURE}",
            f"--train.max_steps={steps}", "--train.batch_size=8", "--train.lr=3e-3", "--train.warmup_steps=2",
            "--data.max_len=64", "--data.doc_stride=16", "--data.val_fraction=0.2", "--train.dtype=fp32",
            "--train.log_interval=1", "--model.dropout=0.1"]  # fmt: skip


def test_reading_squad_skips_and_counts_bad_answer_starts(tmp_path: Path) -> None:
    squad = read_squad(write_squad(tmp_path / "squad.json.xz", paragraphs=10, bad=2))
    assert squad.skipped_answers == 2 and squad.skipped_questions == 2
    assert len(squad.examples) == 28 and sum(e.impossible for e in squad.examples) == 10
    report = squad.report("squad.json.xz")
    assert report is not None and "skipped 2 answers whose answer_start does not match" in report
    for e in squad.examples:
        for text, start in e.answers:
            assert e.context[start : start + len(text)] == text
    assert len(read_squad(tmp_path / "squad.json.xz", keep_unanswered=True).examples) == 30


def test_an_empty_answers_list_is_unanswerable_unless_the_file_is_v11(tmp_path: Path) -> None:
    """HF's squad_v2 written back as SQuAD JSON has `"answers": []` and no is_impossible: training
    dropped those questions unsaid (and read the file as v1.1) where eval-qa scored them as NoAns."""
    marked = read_squad(write_squad(tmp_path / "marked.json", paragraphs=10, bad=0))
    raw = json.loads((tmp_path / "marked.json").read_text())
    for article in raw["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            qa.pop("is_impossible", None)
    (tmp_path / "bare.json").write_text(json.dumps(raw))
    bare = read_squad(tmp_path / "bare.json")
    assert [(e.id, e.impossible) for e in bare.examples] == [(e.id, e.impossible) for e in marked.examples]
    assert sum(e.impossible for e in bare.examples) == 10 and bare.report("bare.json") is None
    raw["version"] = "1.1"  # v1.1 has no unanswerable questions: they are dropped, and said
    (tmp_path / "v11.json").write_text(json.dumps(raw))
    v11 = read_squad(tmp_path / "v11.json")
    assert len(v11.examples) == 20 and v11.skipped_questions == 10
    assert v11.report("v11.json") == (
        "v11.json: dropped 10 questions with no answer that are not marked is_impossible"
        " (e.g. question id 0-none, 1-none, 2-none)"
    )


def test_json_lines_are_named_as_such(tmp_path: Path) -> None:
    """HF datasets' to_json writes JSON Lines; the message said only `Extra data: line 2`."""
    line = {
        "id": "1",
        "question": "Where?",
        "context": "Here.",
        "answers": {"text": ["Here"], "answer_start": [0]},
    }
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(
        LmforgeError, match=r"train\.jsonl: JSON Lines \(one object a line\) is not read for QA"
    ):
        read_squad(path)
    path.write_text(json.dumps(line) + "\n")  # one line parses whole: it was 'needs ... a data list'
    with pytest.raises(LmforgeError, match=r"train\.jsonl: JSON Lines \(one object a line\)"):
        read_squad(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not readable SQuAD JSON"),
        ('{"version": "1.1"}', "needs a top-level object with a 'data' list"),
        ('{"data": [{"title": "x"}]}', r"data\[0\]: needs 'paragraphs'"),
        ('{"data": [{"paragraphs": [{"qas": []}]}]}', r"data\[0\].paragraphs\[0\]: needs 'context'"),
        ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q"}]}]}]}',
         r"qas\[0\]: needs 'question'"),
        ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "w",'
         ' "answers": [{"text": "c"}]}]}]}]}', r"answers\[0\]: needs 'answer_start'"),
        ('{"data": [{"paragraphs": [{"context": "c", "qas": ["Who?"]}]}]}',
         r"paragraphs\[0\].qas\[0\]: a question is an object with 'question' and 'answers', not a string$"),
        ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q", "question": "w",'
         ' "answers": {"text": ["c"], "answer_start": [0]}}]}]}]}',
         r"qas\[0\]: 'answers' must be a list \(an object per answer\), not an object$"),
    ],
)  # fmt: skip
def test_a_bad_squad_file_is_one_line_naming_the_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LmforgeError, match=message) as e:
        read_squad(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_the_hold_out_keeps_every_copy_of_a_context_on_one_side(tmp_path: Path) -> None:
    """The split keyed on the paragraph's position: one context written as 21 paragraphs of one
    question each put held-out questions on a context the model trained on."""
    context = "Hugo lives in Fenwick. Ada sells wine in Paris."
    asked = [
        ("Where does Hugo live?", "Fenwick"),
        ("Who sells wine?", "Ada"),
        ("What does Ada sell?", "wine"),
    ]
    paragraphs = [
        {"context": context if p % 2 else f"{context} Day {p}.",
         "qas": [{"id": str(p), "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}]}
        for p, (q, a) in enumerate(asked * 14)
    ]  # fmt: skip
    data = tmp_path / "dup.json"
    data.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    said: list[str] = []
    cfg = load_config(None, recipe(data, 1))
    setup = Setup(cfg, tmp_path, SimpleNamespace(rank=0, world_size=1), 8, said.append)  # type: ignore[arg-type]
    task = QATask(setup)
    trained = {e.context for e in task.train_examples}
    assert task.val_examples and not trained & {e.context for e in task.val_examples}
    assert len(task.train_examples) + len(task.val_examples) == 42
    assert any("20 paragraphs repeat an earlier one" in line for line in said), said


def test_a_question_too_long_for_a_window_names_the_file_and_its_id(tmp_path: Path) -> None:
    data = write_squad(tmp_path / "squad.json", paragraphs=10, bad=0)
    raw = json.loads(data.read_text())
    raw["data"][4]["paragraphs"][0]["qas"][1]["question"] = "Who " * 70 + "sells wine?"
    data.write_text(json.dumps(raw))
    with pytest.raises(LmforgeError) as e:
        train(None, recipe(data, 1), out=tmp_path / "run", quiet=True)
    # the error comes after other questions' windows (the tokenizer truncating pairs by then)
    assert re.fullmatch(
        rf"{re.escape(str(data))}: question '4-sell' has \d+ tokens: no room for the context in"
        r" data.max_len=64",
        str(e.value),
    )


def test_window_targets_find_the_answer_in_the_window_that_holds_it() -> None:
    tokenizer = load_model(FIXTURE)[1]
    context = " ".join(f"In year {1100 + i} the council met." for i in range(20))
    start = context.index("1113")
    windows = WindowMaker(tokenizer).windows(0, "Which year?", context, 32, 8)
    assert len(windows) > 3
    hits = []
    for w in windows:
        s, e = span_targets(w, start, start + 4)
        if (s, e) != NO_ANSWER:
            offsets = w.encoding.offsets
            assert context[offsets[s][0] : offsets[e][1]] == "1113"
            hits.append(w)
    assert 1 <= len(hits) <= 2  # in the window(s) that hold it whole, [CLS] in the others


def test_batches_pad_to_a_multiple_of_16_within_the_limit_and_padding_changes_no_logit() -> None:
    model, tokenizer = load_model(FIXTURE)
    model.eval()
    maker = WindowMaker(tokenizer)
    windows = [maker.windows(0, "Who?", "Ada lives by the river. " * k, 64, 16)[0] for k in (1, 2, 3)]
    features = [(w, NO_ANSWER) for w in windows]
    longest = max(len(w.ids) for w in windows)
    assert longest % 16 and longest < 48  # rounding has something to do
    wide = collate(features)[0].shape[1]
    assert wide % 16 == 0 and longest < wide < longest + 16
    assert collate(features, limit=longest)[0].shape[1] == longest  # never past the window length
    with torch.no_grad():
        exact, padded = (model(*(x[0], x[2], x[1])) for x in (collate(features, longest), collate(features)))
    for row, w in enumerate(windows):
        n = len(w.ids)
        assert torch.allclose(exact[row, :n], padded[row, :n], atol=1e-5)


def test_fine_tune_learns_exports_and_evaluates(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = write_squad(tmp_path / "squad.json", v2=False)
    summary = train(None, [*recipe(data, 150), "--train.eval_interval=50"], out=tmp_path / "run", quiet=True)
    assert "skipped 3 answers whose answer_start does not match their text" in capfd.readouterr().err
    assert summary["skipped_answers"] == 3
    assert summary["train_questions"] + summary["heldout_questions"] == 117
    metrics = [r for r in read_metrics(tmp_path / "run") if "val_f1" in r]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"] - 0.5 and metrics[-1]["val_f1"] > 40
    qa = pipeline("question-answering", model=tmp_path / "run")
    context = "the old market by. Hugo lives in Fenwick. Ada sells wine at the market. the river."
    answers = qa(question="Where does Hugo live?", context=context, top_k=3)
    assert all(context[a["start"] : a["end"]] == a["answer"] for a in answers)
    test = write_squad(tmp_path / "test.json", paragraphs=15, bad=0, seed=1, v2=False)
    scores = eval_qa(tmp_path / "run", test, out=tmp_path / "predictions.json")
    assert scores["total"] == 30 and scores["f1"] > 30 and scores["version"] == "1.1"
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert len(predictions) == 30 and predictions["0-live"]


def test_eval_qa_cli_prints_json(tmp_path: Path) -> None:
    test = write_squad(tmp_path / "test.json", paragraphs=4, bad=0)
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "eval-qa", str(FIXTURE), "--data", str(test),
         "--no-handle-impossible-answer", "--doc-stride", "16"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["total"] == 12 and scores["handle_impossible_answer"] is False
    # the settings the answers were read with, defaults resolved as transformers resolves them
    assert (scores["max_answer_len"], scores["doc_stride"], scores["batch_size"]) == (15, 16, 32)
    assert scores["max_seq_len"] == 64  # the fixture's context, below transformers' 384
    assert scores["NoAns_exact"] == 0.0  # a random model that must answer never gives ""


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The local engine's run, made once: every engine's two ranks are compared with it."""
    root = tmp_path_factory.mktemp("qa-engines")
    data = write_squad(root / "squad.json", paragraphs=30)
    base = [*recipe(data, 6), "--model.dropout=0.0", "--train.eval_interval=3", "--train.micro_batch_size=2",
            "--train.checkpoint_interval=6"]  # fmt: skip
    lmforge("train", "--quiet", *base, out=root / "local")
    return root / "local", base


# make test runs QA on FSDP2 (every engine runs some task there); the other engines are `slow`
@pytest.mark.parametrize(
    "engine", [pytest.param(e, marks=() if e == "fsdp" else pytest.mark.slow) for e in ENGINES]
)
def test_qa_on_two_ranks_matches_local(
    tmp_path: Path, local_run: tuple[Path, list[str]], engine: str
) -> None:
    """DDP, FSDP2 and DeepSpeed ZeRO-2/3: global batch 8 = 2 ranks x 2 x 2 accumulation, against
    the local engine's 8 in one pass; the span model's unused pooler is frozen on every engine."""
    if engine.startswith("zero"):
        pytest.importorskip("deepspeed")
    local_dir, base = local_run
    launch = ["launch", "--nproc=2", "train", "--quiet", *base, *ENGINES[engine]]
    stderr = lmforge(*launch, out=tmp_path / engine)
    assert "returned a view tensor" not in stderr  # FSDP2's warning about the span head: noise here
    local, other = read_metrics(local_dir), read_metrics(tmp_path / engine)
    assert [r["step"] for r in local] == [r["step"] for r in other] == list(range(1, 7))
    assert "val_f1" in local[2]
    for a, b in zip(local, other, strict=True):
        for key in ("loss", "val_loss", "val_exact", "val_f1"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


# slow (make test-all): kill -9 and resume is `make test`'s for the language model and translation;
# QA's loader (the classification loader's shuffle and position) resumes exactly in
def test_is_impossible_must_be_a_boolean(tmp_path: Path) -> None:
    """bool("false") is True: an answered question was trained as unanswerable, unsaid."""
    qa = {"id": "q", "question": "Who?", "answers": [{"text": "Ada", "answer_start": 0}]}
    path = tmp_path / "s.json"
    for value, shown in (("false", 'a string "false"'), (0, "a number 0"), ([], "an array")):
        paragraph = {"context": "Ada sells wine.", "qas": [{**qa, "is_impossible": value}]}
        path.write_text(json.dumps({"version": "v2.0", "data": [{"paragraphs": [paragraph]}]}))
        with pytest.raises(LmforgeError) as e:
            read_squad(path)
        where = f"{path}: data[0].paragraphs[0].qas[0] (id 'q')"
        assert str(e.value) == f"{where}: 'is_impossible' must be true or false, not {shown}"
        assert read_squad(path, keep_unanswered=True).examples[0].answers == [
            ("Ada", 0)
        ]  # eval reads no flag
    for value, impossible in ((None, False), (True, True), (False, False)):
        paragraph = {"context": "Ada sells wine.", "qas": [{**qa, "is_impossible": value}]}
        path.write_text(json.dumps({"version": "v2.0", "data": [{"paragraphs": [paragraph]}]}))
        assert read_squad(path).examples[0].impossible is impossible


# tests/test_data.py::test_labelled_loader_resumes_from_its_state
@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    steps = 100  # killed after 45 logged steps, resumed from step 40; evaluations at 50 and 100
    data = write_squad(tmp_path / "squad.json", paragraphs=30)
    args = [*recipe(data, steps), "--train.checkpoint_interval=20", "--train.eval_interval=50"]
    kill_resume_and_compare(args, steps, tmp_path)


def test_the_default_stride_is_derived_from_the_window_and_recorded(tmp_path: Path) -> None:
    """data.doc_stride left unset is min(data.max_len // 2, 128), as transformers' pipeline derives
    it (the old default of 128 equalled max_len's 128, so every default QA run was refused), and the
    run's config.toml records the value it used, so a resume windows the same way."""
    from lmforge.config import load_config

    data = write_squad(tmp_path / "squad.json", paragraphs=10, bad=0)
    args = [a for a in recipe(data, 2) if not a.startswith(("--data.doc_stride", "--data.max_len"))]
    train(None, args, out=tmp_path / "run", quiet=True)  # max_len 128, the model's 64 positions: 32
    assert load_config(tmp_path / "run" / "config.toml").data.doc_stride == 32
    too_wide = r"data\.doc_stride=16 must be smaller than the \d+ context tokens"
    with pytest.raises(LmforgeError, match=too_wide):
        train(None, [*args, "--data.max_len=24", "--data.doc_stride=16"], out=tmp_path / "r2", quiet=True)
    # 0 is windows without overlap, as in transformers (it was taken for "not given")
    train(None, [*args, "--data.doc_stride=0"], out=tmp_path / "r3", quiet=True)
    assert load_config(tmp_path / "r3" / "config.toml").data.doc_stride == 0


def test_a_max_len_above_the_context_is_said_and_errors_name_the_context(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """data.max_len=512 on a 64-token model trained 64-token windows unsaid, and the stride error
    then named data.max_len=64 (never given) and advised a larger one."""
    data = write_squad(tmp_path / "squad.json", paragraphs=10, bad=0)
    args = [a for a in recipe(data, 1) if not a.startswith(("--data.doc_stride", "--data.max_len"))]
    train(None, [*args, "--data.max_len=512"], out=tmp_path / "run")
    said = capfd.readouterr()
    assert "note: data.max_len=512 is above the model's context: windows of 64 tokens" in said.out + said.err
    train(None, args, out=tmp_path / "quiet-default")  # the default 128, not chosen: nothing to say
    said = capfd.readouterr()
    assert "data.max_len" not in said.out + said.err
    for given, window in (
        (["--data.max_len=512"], "64 tokens \\(the model's context; data\\.max_len=512 is above it\\)"),
        ([], "64 tokens \\(the model's context\\)"),  # the default 128, cut to 64
        (["--data.max_len=40"], "data\\.max_len=40"),
    ):
        larger = "" if given != ["--data.max_len=40"] else "a larger data\\.max_len or "
        wide = f"data\\.doc_stride=60 must be smaller than the \\d+ context tokens a window of {window} holds"
        with pytest.raises(
            LmforgeError, match=f"{wide} beside .*: give {larger}a smaller data\\.doc_stride$"
        ):
            train(None, [*args, *given, "--data.doc_stride=60"], out=tmp_path / "r", quiet=True)
