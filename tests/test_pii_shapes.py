"""The PII stage on what has an address's or a phone number's shape (an adversarial pass, C4):
asset names, Python's `@` and scp-style remotes are no e-mail addresses; an ASCII address in a
CJK sentence leaves the sentence; Spanish, Norwegian and German phone words with their accents
and abbreviations cue a number; a trunk 0 is no thousands group."""

from __future__ import annotations

import pytest

from lmforge.data.pii import PII


@pytest.mark.parametrize(
    "text",
    [
        "Add icon@2x.png and icon@3x.png to the asset catalog.",
        'background-image: url("images/logo@2x.webp");',
        "out = h@self.weight.T + x@self.proj",
        "y = inputs@self.kernel",
        "mailto:ann%40example.png",  # escaped: the same rule
    ],
)
def test_a_name_without_a_top_level_domain_is_no_address(text: str) -> None:
    assert PII().scrub(text) == (text, [])


def test_an_scp_remote_loses_its_login_not_an_address() -> None:
    """`user@host:path` is a URL without its scheme: its user goes as `ssh://user@host` does."""
    assert PII().scrub("git clone git@github.com:torvalds/linux.git")[0] == (
        "git clone <LOGIN>@github.com:torvalds/linux.git"
    )
    assert PII().scrub("scp a.txt deploy@buildbox:/srv/app")[0] == "scp a.txt <LOGIN>@buildbox:/srv/app"
    assert PII(kinds="email").scrub("git@github.com:org/repo.git")[0] == "git@github.com:org/repo.git"
    # an address before a colon and no path is one: a list of accounts
    assert PII().scrub("ann@example.com: admin")[0] == "<EMAIL>: admin"


def test_an_address_keeps_the_cjk_words_around_it() -> None:
    for text, scrubbed in (
        ("请联系ann@example.com获取更多信息。", "请联系<EMAIL>获取更多信息。"),
        ("お問い合わせはinfo@example.jpまでお願いします。", "お問い合わせは<EMAIL>までお願いします。"),
        ("문의는 support@example.kr로 보내주세요.", "문의는 <EMAIL>로 보내주세요."),
        ("用户@例子.中国", "<EMAIL>"),  # written in those scripts whole: whole
        ("ann@corp.internal and bob@lab.test", "<EMAIL> and <EMAIL>"),  # special-use names
    ):
        assert PII().scrub(text)[0] == scrubbed, text


def test_phone_words_and_a_trunk_zero_cue_a_number_grouped_like_thousands() -> None:
    for text in ("Llámanos al 612 345 678", "Llámame al 912 345 678", "Tfno. 612 345 678",
                 "Tlf: 612 345 678", "Kontakt: 512 345 678", "Berlin 030 123 456"):  # fmt: skip
        words = text.rsplit(" ", 3)[0]
        assert PII().scrub(text)[0] == f"{words} <PHONE>", text
    text = "612 345 678 habitants, 2 147 483 647 bytes, 1.234.567 euros"  # no phone word: thousands
    assert PII().scrub(text)[0] == text
