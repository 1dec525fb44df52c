"""lmforge's environment switches read one way (env_switch.switch): any case and surrounding spaces
are accepted, unset or empty is "not forced", and a typo is one line naming the variable."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from lmforge import malloc, tuning
from lmforge.env_switch import switch
from lmforge.errors import LmforgeError
from lmforge.model import decode_attention, kernels, prefill_attention


def test_values_are_stripped_and_lower_cased_and_unset_is_empty() -> None:
    assert switch("X", ("mkl", "onednn"), environ={"X": " MKL "}) == "mkl"
    assert switch("X", ("mkl",), environ={"X": ""}) == "" == switch("X", ("mkl",), environ={})
    with pytest.raises(LmforgeError, match=r"^X='blas': expected one of mkl, onednn$"):
        switch("X", ("mkl", "onednn"), environ={"X": "blas"})
    with pytest.raises(LmforgeError, match=r"^X=' no ': takes yes$"):
        switch("X", ("yes",), "takes yes", environ={"X": " no "})


@pytest.mark.parametrize(
    ("name", "read", "given", "meaning"),
    [
        ("LMFORGE_LINEAR", lambda: kernels.forced_route("LMFORGE_LINEAR"), "MKL", "mkl"),
        ("LMFORGE_BF16_LINEAR", kernels.bf16_setting, " Plain", "plain"),
        ("LMFORGE_DECODE_ATTENTION", decode_attention.forced_route, "Sdpa", "sdpa"),
        ("LMFORGE_PREFILL_ATTENTION", prefill_attention.forced_route, " BMM", "bmm"),
        ("LMFORGE_AUTOTUNE", tuning.enabled, "Off", False),
        ("LMFORGE_MALLOC", lambda: malloc.keeps_system(os.environ), "SYSTEM", True),
    ],
)
def test_every_switch_takes_any_case_and_names_itself_on_a_typo(
    monkeypatch: pytest.MonkeyPatch, name: str, read: Callable[[], object], given: str, meaning: object
) -> None:
    monkeypatch.setenv(name, given)
    assert read() == meaning
    monkeypatch.setenv(name, "typo")
    with pytest.raises(LmforgeError, match=rf"^{name}='typo': expected"):
        read()
