"""A generator or a torch Dataset given to a pipeline streams, as in transformers: the call returns
an iterator of each item's result, equal to what a list call gives per item (translation's wrapped
in a list, as transformers 4 yielded it), reading the input batch_size items at a time; a bad
keyword is an error at the call, not at the first next()."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from serve_helpers import make_model_dirs

from lmforge import pipeline
from lmforge.errors import LmforgeError

QA_FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"
TEXTS = ["ROMEO:", "the king", "JULIET:\nO", "a", "What is", "he"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_model_dirs(tmp_path_factory.mktemp("streams"))


class Rows(torch.utils.data.Dataset):
    """A map-style dataset, as transformers' KeyDataset is: items by index."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class Counted:
    """A generator over items that counts how many were read."""

    def __init__(self, items: Any) -> None:
        self.read, self.items = 0, iter(items)

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.read += 1
            yield item


def cases(dirs: dict[str, Path]) -> list[tuple[Any, list[Any], dict[str, Any], bool]]:
    """(pipeline, items, call keywords, whether a streamed item is the list call's in a list)"""
    qa = [{"question": q, "context": "The old king kept his crown in a tower by the sea."}
          for q in ("Who kept the crown?", "Where was it?", "By what?")]  # fmt: skip
    return [
        (
            pipeline("text-generation", model=dirs["gpt"]),
            TEXTS,
            {"do_sample": False, "max_new_tokens": 4},
            False,
        ),
        # seeded sampling: a streamed part's prompts sample from their rows in the whole input
        # (until 2026-12-07 each part's rows counted from 0: at batch_size 1 every item alike)
        (
            pipeline("text-generation", model=dirs["gpt"]),
            TEXTS,
            {"do_sample": True, "seed": 1, "max_new_tokens": 4, "num_return_sequences": 2},
            False,
        ),
        (pipeline("text-classification", model=dirs["clf"]), TEXTS, {}, False),
        (pipeline("translation", model=dirs["s2s"]), TEXTS, {"max_new_tokens": 4}, True),
        (pipeline("question-answering", model=QA_FIXTURE), qa, {}, False),
    ]


def _close(got: Any, want: Any) -> bool:
    """Equal, scores up to float32 rounding (a batch of another size pads and sums differently)."""
    if isinstance(want, float):
        return isinstance(got, float) and got == pytest.approx(want, rel=1e-5, abs=1e-7)
    if isinstance(want, (list, tuple)):
        return type(got) is type(want) and len(got) == len(want) and all(map(_close, got, want))
    if isinstance(want, dict):
        return (
            isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
        )
    return got == want


@pytest.mark.parametrize("batch_size", [None, 1, 2, 4])
def test_a_generator_or_dataset_yields_what_a_list_gives_per_item(
    dirs: dict[str, Path], batch_size: int | None
) -> None:
    for pipe, items, call, wrapped in cases(dirs):
        size = {} if batch_size is None else {"batch_size": batch_size}
        expected = [[r] if wrapped else r for r in pipe(list(items), **call)]
        for stream in (
            (x for x in items),
            Rows(items),
            map(str.strip, items) if isinstance(items[0], str) else None,
        ):
            if stream is not None:
                got = pipe(stream, **call, **size)
                assert isinstance(got, Iterator), type(pipe).__name__
                assert _close(list(got), expected), type(pipe).__name__

    class Sized(torch.utils.data.IterableDataset):  # an IterableDataset with a __len__ is read by iter()
        def __iter__(self) -> Iterator[str]:
            return iter(TEXTS[:2])

        def __len__(self) -> int:
            return 2

    generate = cases(dirs)[0][0]
    expected = generate(TEXTS[:2], do_sample=False, max_new_tokens=3)
    assert list(generate(Sized(), do_sample=False, max_new_tokens=3)) == expected
    assert list(generate(text=iter(TEXTS[:2]), do_sample=False, max_new_tokens=3)) == expected  # its own name
    assert list(generate(text_inputs=iter(TEXTS[:2]), do_sample=False, max_new_tokens=3)) == generate(
        TEXTS[:2], do_sample=False, max_new_tokens=3
    )  # transformers' keyword for the input


def test_the_input_is_read_a_batch_at_a_time(dirs: dict[str, Path]) -> None:
    """An endless input streams: results come while it is still being read."""
    pipe = pipeline("text-generation", model=dirs["gpt"])
    endless = Counted(itertools.cycle(TEXTS))
    results = pipe(iter(endless), do_sample=False, max_new_tokens=2, batch_size=2)
    assert endless.read == 2  # the first batch, run at the call
    assert [next(results) for _ in range(3)] == [
        pipe(t, do_sample=False, max_new_tokens=2) for t in TEXTS[:3]
    ]
    assert endless.read == 4
    classify = pipeline("text-classification", model=dirs["clf"], batch_size=3)  # the pipeline's batch_size
    counted = Counted(TEXTS)
    next(classify(iter(counted)))
    assert counted.read == 3


def test_bad_keywords_are_refused_at_the_call_and_later_items_are_named(dirs: dict[str, Path]) -> None:
    pipe = pipeline("text-generation", model=dirs["gpt"])
    with pytest.raises(LmforgeError, match="unknown keyword max_time"):
        pipe((t for t in TEXTS), max_time=5)
    with pytest.raises(LmforgeError, match="batch_size=0"):
        pipe((t for t in TEXTS), batch_size=0)
    results = pipe(iter(["ROMEO:", "a", "b", 5]), do_sample=False, max_new_tokens=2, batch_size=2)
    next(results), next(results)
    # the item's place in the input, not in its batch (`text item 2` until 2026-12-06)
    with pytest.raises(
        LmforgeError, match=r"^text item 4 is of type int, not a string \(in items 3-4 of the input\)$"
    ):
        next(results)
    assert list(pipe(iter([]))) == []


def test_a_bad_streamed_item_is_named_by_its_place_in_the_input(dirs: dict[str, Path]) -> None:
    """Each task's own check numbers a call's items from 1; a stream's later batches are calls too."""
    good = {"question": "Who kept the crown?", "context": "The old king kept his crown in a tower."}
    qa = pipeline("question-answering", model=QA_FIXTURE)(iter([good, good, good, good, "x"]), batch_size=2)
    for _ in range(4):
        next(qa)
    with pytest.raises(
        LmforgeError, match=r"^input 5 must be a dict with 'question' and 'context' \(in items 5-5 "
    ):
        next(qa)
    user = [{"role": "user", "content": "Hello"}]
    chats = [user, user, user, [{"role": "bot", "content": "x"}]]
    generated = pipeline("text-generation", dirs["llama"], dtype="fp32")(
        iter(chats), max_new_tokens=1, batch_size=2
    )
    next(generated), next(generated)
    with pytest.raises(
        LmforgeError,
        match=r"^conversation 4\[0\]: unknown role 'bot' \(known: [a-z, ]+\) \(in items 3-4 of the input\)$",
    ):
        next(generated)
    labels = pipeline("text-classification", model=dirs["clf"])(iter(["a", "b", "c", None]), batch_size=3)
    for _ in range(3):
        next(labels)
    with pytest.raises(LmforgeError, match=r"^text item 4 is of type NoneType"):
        next(labels)


def test_a_calls_keyword_given_to_pipeline_is_every_calls_default(dirs: dict[str, Path]) -> None:
    """As transformers' pipeline() takes them (`pipeline("translation", model=..., num_beams=2)`,
    refused until 2026-12-08): a call's own keyword wins; a bad value is the call's one-line
    error; a keyword no call takes is still refused at pipeline()."""
    plain = pipeline("text-generation", model=dirs["gpt"])
    pipe = pipeline("text-generation", model=dirs["gpt"], max_new_tokens=3, do_sample=False)
    assert pipe("ROMEO:") == plain("ROMEO:", max_new_tokens=3, do_sample=False)
    assert pipe("ROMEO:", max_new_tokens=1) == plain("ROMEO:", max_new_tokens=1, do_sample=False)
    assert list(pipe(iter(TEXTS[:2]))) == [plain(t, max_new_tokens=3, do_sample=False) for t in TEXTS[:2]]
    translate = pipeline("translation", model=dirs["s2s"], num_beams=2, max_new_tokens=4)
    assert translate(TEXTS[:2]) == pipeline("translation", model=dirs["s2s"])(
        TEXTS[:2], num_beams=2, max_new_tokens=4
    )
    with pytest.raises(LmforgeError, match="max_new_tokens"):
        pipeline("text-generation", model=dirs["gpt"], max_new_tokens=-1)("ROMEO:")
    with pytest.raises(LmforgeError, match=r"pipeline\('text-generation'\): unknown keyword max_time"):
        pipeline("text-generation", model=dirs["gpt"], max_time=5)
    with pytest.raises(LmforgeError, match="unknown keyword question"):
        pipeline("question-answering", model=QA_FIXTURE, question="Who?")
