"""Build ``qa-train.json.xz`` and ``qa-test.json.xz``: reading comprehension, SQuAD v2.0 JSON.

Made offline from three corpora the project ships (see data/README.md), in two kinds:

- ``cloze`` (in the manner of the Children's Book Test): from each chapter of Austen's six novels
  and of Moby-Dick, runs of consecutive paragraphs of 100-300 words are the contexts (a run grows
  a paragraph at a time until it has 100 words; one that then has more than 300 is not used). The
  questions come from the paragraph that *follows* the context: its first two qualifying
  sentences (of 8-60 words, with a proper name), each with a proper name blanked ("____"):
  "Fill in the blank: ...". The answer is that name where it first occurs, as a whole word, in the
  context; when it does not occur there the question is unanswerable
  (``is_impossible``; half of those are kept). A proper name is a capitalised word (or run of
  them) not at the start of a sentence, none of whose words appears in lower case anywhere in its
  book, and not a title (Mr, Mrs, Miss, Sir, Lady...). The question's paragraph is in no context.
- ``cast`` (questions from structured facts): the cast lists ("PERSONS REPRESENTED" / "DRAMATIS
  PERSONAE", with "." or ":" or nothing after it) of Shakespeare's plays are the contexts, with the
  play's title line (context only: "KING HENRY IV, THE FIRST PART" is no cast entry). A line below
  the heading ``NAME, description`` gives "In <play>, who is <description>?" -> NAME and
  "Who is <Name> in <play>?" -> description (the span on that line), when the name is unique in
  the list and the description is no part of another line's; a description pointing elsewhere
  (his, her, the former...) is not asked about, nor a group (Lords, Attendants...), nor a line
  holding two people ("CINNA, a poet. Another Poet.").
  Each play also gets one unanswerable question: another play's description asked of this list.

The test split is fixed by hashing: a chapter or play is test when the sha256 of its id falls in
the first tenth, so a document is wholly train or wholly test. Output: pretty-free JSON with
sorted keys, xz preset 9; byte-for-byte reproducible.

Rebuild (offline, from the shipped files of data/): ``.venv/bin/python data/build_qa.py [--out DIR]``
(or ``python -m data.build_qa``); ``build()`` returns both files' contents without writing them.
"""

from __future__ import annotations

import re
import string
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__:  # python -m data.build_qa, or imported as data.build_qa
    from . import fetch
else:  # python data/build_qa.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

MIN_WORDS, MAX_WORDS = 100, 300  # words in a cloze context
Q_WORDS = (8, 60)  # words in a cloze question sentence
TITLES = {"Mr", "Mrs", "Miss", "Sir", "Lady", "Lord", "Dr", "Colonel", "Captain", "Admiral", "St", "I"}
POINTERS = re.compile(r"\b(his|her|their|its|the former|the same|the above|said)\b", re.IGNORECASE)
BLANK = "____"


# ---- cloze ---------------------------------------------------------------------------------


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each on one line with single spaces."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def sentences(paragraph: str) -> list[str]:
    """Split after . ! or ? (and a closing quote) followed by a capital, not after "Mr." etc."""
    out, start = [], 0
    for match in re.finditer(r"[.!?][\"'”’]?(?=\s+[\"'“‘(]?[A-Z]|$)", paragraph):
        if not re.search(r"\b(Mr|Mrs|Dr|St|Messrs)\.$", paragraph[: match.end()]):
            out.append(paragraph[start : match.end()].strip())
            start = match.end()
    return [s for s in out if s]


def lower_words(docs: list[dict[str, Any]]) -> set[str]:
    """Every word seen in lower case somewhere in these documents."""
    return {w for d in docs for w in re.findall(r"\b[a-z][a-z']*\b", d["text"])}


def proper_names(sentence: str, common: set[str]) -> list[tuple[int, int]]:
    """(start, end) of runs of proper-name words in a sentence, not at a sentence start."""
    runs: list[tuple[int, int]] = []
    for m in re.finditer(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b", sentence):
        words = m.group().split()
        before = sentence[: m.start()].rstrip(" \"'“‘(—-")
        if not before or before[-1] in ".!?:;":
            continue  # a sentence start: capitalised anyway
        if any(w in TITLES or w.lower() in common for w in words):
            continue
        runs.append(m.span())
    return runs


def find_word(context: str, name: str) -> int:
    match = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", context)
    return match.start() if match else -1


def cloze_items(doc: dict[str, Any], common: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(context, question) pairs of one chapter; contexts never overlap a question's paragraph."""
    paras = paragraphs(doc["text"])
    i = 1  # paragraph 0 is the chapter heading
    while i < len(paras):
        window: list[str] = []
        words = 0
        j = i
        while j < len(paras) and words < MIN_WORDS:
            window.append(paras[j])
            words += len(paras[j].split())
            j += 1
        if words < MIN_WORDS or j >= len(paras):
            break  # the chapter's end: no paragraph left for the question
        if words > MAX_WORDS:
            i += 1  # a paragraph too long for a context: slide past it
            continue
        i = j + 1  # the question's paragraph is not reused
        # the question: the paragraph's first sentence of a fitting length with a proper name
        candidates = [s for s in sentences(paras[j]) if Q_WORDS[0] <= len(s.split()) <= Q_WORDS[1]]
        found = [(s, n) for s in candidates if (n := proper_names(s, common))]
        if not found:
            continue
        context = "\n\n".join(window)
        for sentence, names in found[:2]:
            qa = cloze_question(doc["id"], context, sentence, names)
            if qa is not None:
                yield context, qa


def cloze_question(doc_id: str, context: str, sentence: str, names: list[tuple[int, int]]) -> dict | None:
    """One name of the sentence blanked; None for an unanswerable question not kept."""
    start, end = names[int(fetch.sha(sentence)[:8], 16) % len(names)]
    name = sentence[start:end]
    question = f"Fill in the blank: {sentence[:start]}{BLANK}{sentence[end:]}"
    at = find_word(context, name)
    qid = f"{doc_id}-{fetch.sha(context + question)[:10]}"
    if at >= 0:
        answers = [{"text": name, "answer_start": at}]
        return {"id": qid, "question": question, "answers": answers, "is_impossible": False}
    if int(fetch.sha(qid)[:8], 16) % 2 == 0:  # keep half of the unanswerable ones
        return {"id": qid, "question": question, "answers": [], "is_impossible": True}
    return None


# ---- cast ----------------------------------------------------------------------------------


HEADING = re.compile(r"^(PERSONS REPRESENTED|DRAMATIS PERSONAE)[.:]?\s*$", re.MULTILINE | re.IGNORECASE)


def cast_list(text: str) -> str:
    """The title line and the cast list of a play, up to the first SCENE/ACT line ("" if none)."""
    heading = HEADING.search(text)
    if heading is None:
        return ""
    end = re.search(
        r"^\s*(SCENE|ACT |Scene|THE SCENE|PROLOGUE|INDUCTION)", text[heading.end() :], re.MULTILINE
    )
    block = text[heading.start() : heading.end() + (end.start() if end else 3000)].rstrip()
    return text.split("\n", 1)[0].strip() + "\n\n" + block


GROUPS = re.compile(
    r"\b(Lords|Ladies|Officers|Soldiers|Attendants|Messengers|Servants|Citizens|Senators|Musicians|"
    r"Players|Sailors|Gentlemen|Others|Spirits|Apparitions|Fairies|Witches|Conspirators)\b"
)


def cast_entries(block: str) -> list[tuple[str, int, str, int]]:
    """(name, its offset, description, its offset) per line `NAME, description` of a cast list.

    Only the lines below the heading are read: the play's title line above it ("KING HENRY IV, THE
    FIRST PART") is no entry. Skipped: a line the next line continues, a group ("Lords, Officers,
    and other Attendants"), a line of two people ("CINNA, a poet. Another Poet.").
    """
    entries = []
    heading = HEADING.search(block)
    offset = heading.end() if heading else 0
    lines = block[offset:].split("\n")
    for k, line in enumerate(lines):
        at, offset = offset, offset + len(line) + 1
        m = re.match(r"^([A-Z][A-Za-z'.]*(?: [A-Z][A-Za-z'.]*){0,3}),\s+(\S.*?)\.?\s*$", line)
        following = lines[k + 1].strip() if k + 1 < len(lines) else ""
        if m is None or (following and following[0].islower()) or GROUPS.search(line):
            continue
        description = m.group(2)
        if "  " in description or description.lower().startswith(("and ", "& ")):
            continue  # columns of names, or a list rather than one person
        if re.search(r"\. [A-Z]", description):
            continue  # a second person after the full stop
        if description.split()[-1].lower() in {"the", "of", "and", "to", "a", "an", "in", "with", "by"}:
            continue  # cut off: continued on the next line
        entries.append((m.group(1), at + m.start(1), description, at + m.start(2)))
    return entries


def cast_items(doc: dict[str, Any], other_descriptions: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    context = cast_list(doc["text"])
    entries = cast_entries(context)
    if not entries:
        return
    play = string.capwords(doc["title"].lower())
    names = Counter(n.lower() for n, _, _, _ in entries)
    lowered = [d.lower() for _, _, d, _ in entries]
    for name, name_at, description, description_at in entries:
        if names[name.lower()] > 1 or sum(description.lower() in d for d in lowered) > 1:
            continue  # ambiguous: the name twice, or the description inside another one
        spoken = string.capwords(name.lower())
        asks = [(f"Who is {spoken} in {play}?", description, description_at)]
        if not POINTERS.search(description):
            asks.append((f"In {play}, who is {description}?", name, name_at))
        for question, answer, at in asks:
            qid = f"{doc['id']}-{fetch.sha(question)[:10]}"
            answers = [{"text": answer, "answer_start": at}]
            yield context, {"id": qid, "question": question, "answers": answers, "is_impossible": False}
    pool = [d for d in other_descriptions if not POINTERS.search(d) and d.lower() not in context.lower()]
    if pool:
        description = pool[int(fetch.sha(doc["id"])[:8], 16) % len(pool)]
        question = f"In {play}, who is {description}?"
        qid = f"{doc['id']}-{fetch.sha(question)[:10]}"
        yield context, {"id": qid, "question": question, "answers": [], "is_impossible": True}


# ---- SQuAD JSON ----------------------------------------------------------------------------


def article(title: str, source: str, items: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One SQuAD article: questions grouped under their context, in first-seen order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for context, qa in items:
        grouped.setdefault(context, []).append(qa)
    paragraphs = [{"context": c, "qas": qas} for c, qas in grouped.items()]
    return {"title": title, "source": source, "paragraphs": paragraphs}


def build() -> dict[str, dict[str, Any]]:
    """Both files' contents, ``{"train": squad, "test": squad}`` (SQuAD v2.0 JSON); nothing written."""
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for book, source in (
        ("austen.jsonl.xz", "Jane Austen"),
        ("moby_dick.jsonl.xz", "Herman Melville, Moby-Dick"),
    ):
        docs = [d for d in fetch.read(book) if d["id"] not in {"contents", "etymology", "extracts"}]
        common = lower_words(docs)
        for doc in docs:
            items = list(cloze_items(doc, common))
            if items:
                title = f"cloze:{doc['id']}"
                splits["test" if fetch.is_test(doc["id"]) else "train"].append(
                    article(title, f"{book} id {doc['id']} ({source})", items)
                )
    plays = list(fetch.read("shakespeare.jsonl.xz"))
    descriptions = sorted({e[2] for p in plays for e in cast_entries(cast_list(p["text"]))})
    for play in plays:
        items = list(cast_items(play, descriptions))
        if items:
            title = f"cast:{play['id']}"
            splits["test" if fetch.is_test(play["id"]) else "train"].append(
                article(title, f"shakespeare.jsonl.xz id {play['id']}", items)
            )
    return {split: {"version": "v2.0", "data": articles} for split, articles in splits.items()}


def counts(squad: dict[str, Any]) -> Counter[str]:
    """Questions by kind and answerability ("cloze answerable"...), plus documents and contexts."""
    found: Counter[str] = Counter()
    for a in squad["data"]:
        kind = a["title"].split(":")[0]
        found[f"{kind} documents"] += 1
        found[f"{kind} contexts"] += len(a["paragraphs"])
        for p in a["paragraphs"]:
            for qa in p["qas"]:
                found[f"{kind} {'unanswerable' if qa['is_impossible'] else 'answerable'}"] += 1
    return found


def main(out: Path) -> None:
    for split, squad in build().items():
        print(f"{split}: {dict(sorted(counts(squad).items()))}")
        fetch.write_xz(out / f"qa-{split}.json.xz", fetch.pack(squad, sort_keys=True))


if __name__ == "__main__":
    fetch.run(main, __doc__)
