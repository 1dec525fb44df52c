"""Comparing question-answering answers with transformers' (golden.json of the QA fixtures)."""

from __future__ import annotations

from typing import Any

import pytest

# Below this a span's probability has underflowed to 0: spans there tie, and each CPU's summation order
# breaks the tie its own way (transformers 4.57.1's own top_k=30 list holds 12 answers on a Xeon with
# AVX-512, where the goldens were made, and 14 on an AVX2-only EPYC), so only the answers above it
# are compared one by one.
ZERO = 1e-6


def assert_like(got: Any, expected: Any, where: str, *, rel: float = 1e-4, abs_: float = 1e-6) -> None:
    """Equal answers and character offsets; scores within rel/abs_ (float32, another order)."""
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        assert isinstance(got, list), (where, got)
        got, expected = [a for a in got if a["score"] >= ZERO], [a for a in expected if a["score"] >= ZERO]
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (where, got, expected)
        for n, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_like(g, e, f"{where}[{n}]", rel=rel, abs_=abs_)
        return
    assert isinstance(got, dict) and set(got) == {"score", "start", "end", "answer"}, (where, got)
    spans = [(a["answer"], a["start"], a["end"]) for a in (got, expected)]
    assert spans[0] == spans[1], (where, got, expected)
    assert got["score"] == pytest.approx(expected["score"], rel=rel, abs=abs_), (where, got, expected)
