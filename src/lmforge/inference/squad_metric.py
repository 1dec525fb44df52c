"""Exact match and F1 as the official SQuAD v1.1 and v2.0 evaluation scripts compute them.

The official scripts (`evaluate-v1.1.py`, `evaluate-v2.0.py`, both at
https://rajpurkar.github.io/SQuAD-explorer/) normalise an answer by lower-casing it, dropping
ASCII punctuation (`string.punctuation`), dropping the articles a/an/the as whole words and
collapsing whitespace; exact match compares normalised strings, F1 is the harmonic mean of the
bag-of-tokens precision and recall of the normalised answers; each question scores its best
gold answer. The two scripts differ in three small ways, and this module keeps each:

- v2.0 drops gold answers that normalise to "" and, when none is left (an unanswerable
  question), scores against "": the empty prediction gets EM 1 and F1 1, any other gets 0.
  v1.1 scores every gold answer as written; an empty-vs-empty pair gets F1 0 there.
- v1.1 counts a question without a prediction as 0 in the total; v2.0 leaves it out of the
  total (its script then fails on the HasAns/NoAns breakdown; here the breakdown is over the
  answered questions too, and "missing" counts the left-out ones).
- v2.0 adds the HasAns_* and NoAns_* breakdown (a question "has an answer" when its
  "answers" list is non-empty). Both report percentages, as both scripts do.

The version comes from the data set's "version" field ("1.1", "v2.0", HF's "squad_v2"); a file
without one, or with one that names neither (HF's "squad"), is read as v2.0 when any question has
"is_impossible" or no answers, else as v1.1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lmforge.data.qa_squad import squad_version
from lmforge.errors import LmforgeError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _pair_f1(prediction: str, gold: str, v2: bool) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if v2 and (not pred_tokens or not gold_tokens):
        # v2.0: if either is no-answer, F1 is 1 when they agree, else 0.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _golds(golds: Sequence[str], v2: bool) -> list[str]:
    if isinstance(golds, str):
        raise LmforgeError("SQuAD metric: gold answers must be a list of strings, not one string")
    if not v2:
        if not golds:
            raise LmforgeError("SQuAD v1.1 metric: a question has no gold answers")
        return list(golds)
    kept = [g for g in golds if normalize_answer(g)]
    return kept or [""]


def exact_match(prediction: str, golds: Sequence[str], *, version: str = "v2.0") -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0.

    With `version="v2.0"` (the default) an empty `golds` means unanswerable: only a
    prediction that normalises to "" scores 1.
    """
    v2 = _is_v2_version(version)
    return float(max(normalize_answer(prediction) == normalize_answer(g) for g in _golds(golds, v2)))


def f1(prediction: str, golds: Sequence[str], *, version: str = "v2.0") -> float:
    """Best token-level F1 (0..1) of the prediction against the gold answers."""
    v2 = _is_v2_version(version)
    return max(_pair_f1(prediction, g, v2) for g in _golds(golds, v2))


def _is_v2_version(version: str) -> bool:
    named = squad_version(version)
    if named is None:
        raise LmforgeError(f"SQuAD metric: unknown version {version!r} (expected 1.1 or v2.0)")
    return named == "v2.0"


def _questions(dataset_json: Any, source: str = "SQuAD data") -> list[dict[str, Any]]:
    """Every question dict of a SQuAD file (the parsed JSON, or its "data" list); `source` names
    it in errors (the file's path). Ids must be unique: predictions are keyed by id, so two
    questions sharing one would both be scored against one answer."""
    return [qa for _, qa in _placed_questions(dataset_json, source)]


def _placed_questions(dataset_json: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    """(key path, question dict) of every question, checked as `_questions` says."""
    articles = dataset_json.get("data") if isinstance(dataset_json, dict) else dataset_json
    if not isinstance(articles, list):
        raise LmforgeError(f'{source}: expected {{"data": [articles...]}} or a list of articles')
    questions: list[tuple[str, dict[str, Any]]] = []
    seen: dict[str, str] = {}  # question id -> the key path of the question that has it
    for i, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise LmforgeError(f'{source}: data[{i}] has no "paragraphs" list')
        for j, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise LmforgeError(f'{source}: data[{i}].paragraphs[{j}] has no "qas" list')
            for k, qa in enumerate(qas):
                where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                if not isinstance(qa, dict) or "id" not in qa:
                    raise LmforgeError(f'{source}: {where} has no "id"')
                answers = qa.get("answers")
                if not isinstance(answers, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers
                ):
                    raise LmforgeError(f'{source}: {where} needs "answers": [{{"text": ...}}]')
                qid = str(qa["id"])  # as predictions key it
                if qid in seen:
                    raise LmforgeError(
                        f"{source}: {where}: id {qid!r} is also the id of {seen[qid]}"
                        " (each question needs its own id: predictions are keyed by id)"
                    )
                seen[qid] = where
                questions.append((where, qa))
    return questions


def check_dataset(dataset_json: Any, version: str, source: str = "SQuAD data") -> list[dict[str, Any]]:
    """The file's question dicts, or one-line errors naming `source` and the question for a file
    that cannot be scored as `version`: a bad shape, an id used twice, a v1.1 question without a
    gold answer. Callers run it before answering anything; squad_scores runs it too."""
    v2 = _is_v2_version(version)
    placed = _placed_questions(dataset_json, source)
    for where, qa in placed:
        if not v2 and not qa["answers"]:  # v1.1 has no unanswerable questions: max() over nothing
            raise LmforgeError(
                f"{source}: {where} (id {str(qa['id'])!r}): no gold answers, which SQuAD v1.1 needs"
                ' (a file with unanswerable questions is "version": "v2.0")'
            )
    return [qa for _, qa in placed]


def dataset_version(dataset_json: Any, source: str = "SQuAD data") -> str:
    """ "v2.0" or "1.1": the file's "version" field, else (none, or one that names neither, as HF's
    "squad") v2.0 if any question may be unanswerable. The official scripts take any version."""
    named = squad_version(dataset_json.get("version")) if isinstance(dataset_json, dict) else None
    if named is not None:
        return named
    v2 = any(qa.get("is_impossible") or not qa["answers"] for qa in _questions(dataset_json, source))
    return "v2.0" if v2 else "1.1"


def _summary(exact: list[float], f1s: list[float]) -> dict[str, float | int]:
    total = len(exact)
    if total == 0:
        return {"exact": 0.0, "f1": 0.0, "total": 0}
    return {"exact": 100.0 * sum(exact) / total, "f1": 100.0 * sum(f1s) / total, "total": total}


def squad_scores(
    predictions: dict[str, str],
    dataset_json: Any,
    *,
    version: str | None = None,
    source: str = "SQuAD data",
) -> dict[str, Any]:
    """EM and F1 (percent) of `predictions` (question id -> answer text) on a SQuAD data set.

    Returns {"exact", "f1", "total", "missing", "version"}; for v2.0 also HasAns_exact,
    HasAns_f1, HasAns_total and NoAns_* where such questions exist, as evaluate-v2.0.py prints.
    """
    version = version or dataset_version(dataset_json, source)
    questions = check_dataset(dataset_json, version, source)
    v2 = _is_v2_version(version)
    rows: list[tuple[bool, float, float]] = []  # (has answer, EM, F1) per scored question
    missing = 0
    for qa in questions:
        golds = [a["text"] for a in qa["answers"]]
        qid = str(qa["id"])
        if qid not in predictions:
            missing += 1
            if not v2:  # v1.1 scores it 0 and counts it
                rows.append((True, 0.0, 0.0))
            continue
        pred = predictions[qid]
        if not isinstance(pred, str):
            raise LmforgeError(f"SQuAD predictions: the answer for {qid!r} is not a string")
        rows.append(
            (bool(golds), exact_match(pred, golds, version=version), f1(pred, golds, version=version))
        )
    out: dict[str, Any] = _summary([r[1] for r in rows], [r[2] for r in rows])
    out["missing"] = missing
    out["version"] = "v2.0" if v2 else "1.1"
    if v2:
        for name, has in (("HasAns", True), ("NoAns", False)):
            part = [r for r in rows if r[0] == has]
            if part:
                for key, value in _summary([r[1] for r in part], [r[2] for r in part]).items():
                    out[f"{name}_{key}"] = value
    return out
