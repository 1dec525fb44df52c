"""SQuAD v1.1 / v2.0 JSON (Rajpurkar et al., 2016, 2018): the reading-comprehension format people have.

    {"version": "v2.0", "data": [{"title": ..., "paragraphs": [{"context": ...,
      "qas": [{"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": 17}],
               "is_impossible": false}]}]}]}

`read_squad` reads a .json file (or .json.gz/.xz/.bz2) into one QAExample per question. An answer
whose `answer_start` does not point at its text in the context is skipped and counted, never
moved or guessed; a question left with no answer (and not marked impossible) is skipped too. A
question with an empty `answers` list and no `is_impossible` (HF's squad_v2 converted back) is
unanswerable, as the official v2.0 script reads it, unless the file says it is version 1.x
(`squad_version`: "1.1", "v2.0", HF's "squad_v2"). `is_impossible` is true or false: any other
value (the string "false") is a one-line error, not read as Python's bool() would. A file that is
not this shape is a one-line error naming the file and the key path. Evaluation
(`keep_unanswered`) reads what the official scripts read: an answer needs no `answer_start`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.input_files import JSON_LINES, suffixes
from lmforge.data.sources import READ_ERRORS, open_text
from lmforge.errors import LmforgeError


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]  # (text, character start in the context), checked
    impossible: bool  # SQuAD v2: the context does not answer the question
    paragraph: int  # index of its paragraph in the file (held-out splits keep paragraphs whole)


@dataclass
class SquadFile:
    examples: list[QAExample]
    skipped_answers: int = 0
    skipped_questions: int = 0
    first_skipped: list[str] = field(default_factory=list)  # question ids, for the message

    def report(self, path: str | Path) -> str | None:
        """The line saying what was skipped, or None."""
        if self.skipped_answers:
            return (
                f"{path}: skipped {self.skipped_answers} answers whose answer_start does not match their"
                f" text ({self.skipped_questions} questions left without an answer dropped; e.g. question"
                f" id {', '.join(self.first_skipped[:3])})"
            )
        if self.skipped_questions:
            return (
                f"{path}: dropped {self.skipped_questions} questions with no answer that are not marked"
                f" is_impossible (e.g. question id {', '.join(self.first_skipped[:3])})"
            )
        return None


JSON_LINES_READ = (
    "{path}: JSON Lines (one object a line) is not read for QA: give SQuAD's JSON, one object with a"
    " 'data' list (docs/question-answering.md)"
)


def load_squad_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open_text(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise LmforgeError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and e.lineno > 1:  # a second object on a later line
            raise LmforgeError(JSON_LINES_READ.format(path=path)) from None
        raise LmforgeError(f"{path}: not readable SQuAD JSON: {e}") from None
    except READ_ERRORS as e:  # ValueError: bad UTF-8 too
        raise LmforgeError(f"{path}: not readable SQuAD JSON: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        if suffixes(path)[0] in JSON_LINES:  # one line of JSON Lines parses whole
            raise LmforgeError(JSON_LINES_READ.format(path=path))
        raise LmforgeError(f"{path}: SQuAD JSON needs a top-level object with a 'data' list")
    return raw


_VERSION = re.compile(r"(?:squad)?[\s_-]*v?([12])(?:\.\d+)*", re.IGNORECASE)


def squad_version(version: Any) -> str | None:
    """ "1.1" or "v2.0" for a SQuAD file's `version` ("1.1", "v2.0", 2.0, HF's "squad_v2", "SQuAD
    v2.0"), None for a version that names neither (or none given)."""
    match = _VERSION.fullmatch(str(version).strip()) if version is not None else None
    return None if match is None else "1.1" if match[1] == "1" else "v2.0"


def _impossible(qa: dict[str, Any], default: bool, where: str) -> bool:
    """`is_impossible`: true or false (null: not given); a string "false" was read as true."""
    value = qa.get("is_impossible")
    if value is None:
        return default
    if not isinstance(value, bool):
        shown = f" {json.dumps(value)[:40]}" if isinstance(value, str | int | float) else ""
        raise LmforgeError(f"{where}: 'is_impossible' must be true or false, not {_json(value)}{shown}")
    return value


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise LmforgeError(f"{where}: needs {key!r} ({kind.__name__})")
    return value


def _json(value: Any) -> str:
    """What a JSON value is, in JSON's words: "a string", "an object"."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def read_squad(path: str | Path, keep_unanswered: bool = False) -> SquadFile:
    """The questions of a SQuAD file; `keep_unanswered` keeps those left without a usable answer
    (for evaluation, which scores the answers' texts and needs no answer_start)."""
    raw = load_squad_json(path)
    v1 = squad_version(raw.get("version")) == "1.1"  # v1.1 has no unanswerable questions
    out = SquadFile([])
    paragraph_index = 0
    for a, article in enumerate(raw["data"]):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _get(paragraph, "context", str, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, where)):
                here = f"{where}.qas[{q}]"
                if not isinstance(qa, dict):
                    raise LmforgeError(
                        f"{here}: a question is an object with 'question' and 'answers', not {_json(qa)}"
                    )
                qid, question = str(qa.get("id", here)), _get(qa, "question", str, here)
                given = qa.get("answers") or []
                if not isinstance(given, list):  # HF datasets' {"text": [...], "answer_start": [...]} too
                    raise LmforgeError(
                        f"{here}: 'answers' must be a list (an object per answer), not {_json(given)}"
                    )
                # evaluation does not read it (the official v2.0 script goes by the answers)
                default = not given and not v1
                impossible = default if keep_unanswered else _impossible(qa, default, f"{here} (id {qid!r})")
                answers, bad = [], 0
                for n, answer in enumerate(given):
                    text = _get(answer, "text", str, f"{here}.answers[{n}]")
                    start = answer.get("answer_start")
                    if keep_unanswered and (not isinstance(start, int) or isinstance(start, bool)):
                        continue  # evaluation scores the texts: an answer needs no answer_start
                    start = _get(answer, "answer_start", int, f"{here}.answers[{n}]")
                    if text and start >= 0 and context[start : start + len(text)] == text:
                        answers.append((text, start))
                    else:
                        bad += 1
                out.skipped_answers += bad
                if bad:
                    out.first_skipped.append(qid)
                if not answers and not impossible and not keep_unanswered:
                    out.skipped_questions += 1
                    if not bad:
                        out.first_skipped.append(qid)
                    continue
                out.examples.append(QAExample(qid, question, context, answers, impossible, paragraph_index))
            paragraph_index += 1
    if not out.examples:
        raise LmforgeError(f"{path}: no questions" + ("" if keep_unanswered else " with a usable answer"))
    return out
