"""The PII stage on what has an address's or a phone number's shape (an adversarial pass, C4):
asset names, Python's `@` and scp-style remotes are no e-mail addresses; an ASCII address in a
CJK sentence leaves the sentence; Spanish, Norwegian and German phone words with their accents
and abbreviations cue a number; a trunk 0 is no thousands group. And (B6) patents' numbers,
versions starting `0.` and GS1-valid barcodes are no phone numbers, unless a phone word says so."""

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


@pytest.mark.parametrize(
    "text",
    [
        "See EP 0 123 456 B1 and EP 0 987 654 A2 for prior art.",  # the EPO's prefix
        "The patents EP 0 845 123 and US 5,123,456 were cited.",
        "Patent US 7,123,456 B2, WO 2004/012345 and DE 10 2004 012 345 A1.",
        "FR 0 612 345 B1 was granted.",  # an office's two letters and a kind code after
        "Upgrade to version 0.10.20240115 now.",  # a version whose first part is 0
        "Release 0.2024.01.15 is tagged.",
        "We use pandas 0.25.3, plus foo 0.1.2345678.",
        "Package libfoo_0.9.1234567-1_amd64.deb installed.",
        "UPC 036000291452 on the can.",  # GS1-valid barcodes, no phone word before them
        "UPC-A 012345678905 and 042100005264.",
        "The can shows 036000291452.",
        "Barcode 0012345678905 scanned.",  # 00...: a barcode after its name
        "Witty, vibrant, and intelligent. 065228365867",  # `tel` inside a word is no phone word
    ],
)
def test_patents_versions_and_barcodes_are_no_phone_numbers(text: str) -> None:
    """An adversarial pass (B6): libphonenumber calls each of these a valid number in some region."""
    assert PII().scrub(text) == (text, [])


@pytest.mark.parametrize(
    ("phone", "twin"),
    [
        # a phone word: the GS1 check digit holds one time in 10
        ("Call 036000291452 now.", "Cans 036000291452 now."),
        ("Tel: 0012345678905", "EAN: 0012345678905"),
        # 00 and a valid number is one dialled abroad (+1 617-555-0134); after a barcode's name not
        ("Office 0016175550134 today.", "GTIN 0016175550134 today."),
        ("Call 06241136469123.", "Pallet 06241136469123."),  # a GTIN-14, a valid German number
        # a US state's letters: no kind code after
        ("Wilmington, DE 302-555-0134 is the office.", "Patent DE 0 302 555 A1 is the office."),
        ("FR 01 42 68 53 07", "EP 01 42 68 53 07"),
        # dotted, but not a lone 0 before the first dot
        ("Appelez le 06.12.34.56.78 svp.", "Version 0.6.12345678 svp."),
    ],
)
def test_a_phone_and_its_twin_of_another_shape(phone: str, twin: str) -> None:
    """The cue decides: each phone stays one, its twin (the same digits as a barcode, patent or
    version) is left."""
    assert [k for *_, k in PII().find(phone)] == ["phone"], phone
    assert PII().scrub(twin) == (twin, []), twin


@pytest.mark.parametrize(
    "text",
    [
        "Witty and intelligent 612 345 678 people.",  # `tel` inside a word
        "An excellent 612 345 678 result.",  # `cell`
        "Hotel 612 345 678 rooms.",
        "Witty, vibrant, and intelligent. 065228365867",  # a UPC-A
        "Fiery hot, I tell ye! 09839958912254",  # a word starting with one that is none: a GTIN-14
        "A cellar 612 345 678 bottles deep.",
    ],
)
def test_a_phone_word_inside_a_longer_word_cues_no_number(text: str) -> None:
    """A phone word cues a number only where it starts a word (L6): `intelligent`, `excellent` and
    `Hotel` made thousands and barcodes after them `<PHONE>`s."""
    assert PII().scrub(text) == (text, [])


@pytest.mark.parametrize(
    "cue",
    ["Tel.", "tel:", "Telefon", "Mobiltelefon", "Smartphone:", "iPhone", "Festnetz:", "Llámanos al",
     "T:", "M:", "Ph:", "Tel. No.",
     # compounds ending in one (left in clear for a while: the R6 pass)
     "Firmentelefon", "Geschäftstelefon:", "Privattelefon", "Autotelefon", "Notruf", "Rückruf unter",
     "Rappelez-nous au", "Freephone", "Payphone", "Telefonnummer:"],
)  # fmt: skip
def test_a_phone_word_at_a_word_start_or_a_card_s_letter_cues_a_number(cue: str) -> None:
    """Compounds that end in a phone word are listed; a business card's `T:`, `M:`, `Ph:` cue too."""
    assert PII().scrub(f"{cue} 612 345 678")[0] == f"{cue} <PHONE>"
    assert PII().scrub(f"Jane Doe, {cue} 612 345 678")[0] == f"Jane Doe, {cue} <PHONE>"


def test_a_card_letter_after_a_word_cues_nothing() -> None:
    """`Amount M: 612 345 678` (a letter after a word and a space is no business card's field)."""
    for text in ("Amount M: 612 345 678", "Section T: 612 345 678"):
        assert PII().scrub(text) == (text, []), text


@pytest.mark.parametrize(
    "text",
    [
        "Pallet 06241136469123, case 00012345678905.",  # GTIN-14s (+012...: no valid number)
        "Phone case, EAN 0012345678905",  # a barcode's name wins over a phone word further back
        "iPhone 15 case UPC 036000291452",
    ],
)
def test_a_bare_gs1_barcode_of_13_or_14_digits_is_no_phone(text: str) -> None:
    """A GS1-valid EAN-13 or GTIN-14 starting 0, with no phone word, `+` or `(` before it, is a
    barcode (L6: a GTIN-14 was a long German number); one starting 00 only where it is no valid
    number dialled abroad (recall first: `0016175550134` is +1 617-555-0134 as well)."""
    assert PII().scrub(text) == (text, [])
    assert [k for *_, k in PII().find("Scan 0016175550134 at the till.")] == ["phone"]


def test_a_country_code_starts_no_ssn() -> None:
    """Tajikistan's `+992 372 12 3456` was `+992 <SSN>`, Norfolk Island's `+672 10 6122` `+<SSN>`:
    a "+" and a country code, or 00 and one, before the SSN's shape make it a longer number's tail
    (L6); other digits before it do not (`John Smith 42 536 90 4399` stayed in clear for a while)."""
    for text in ("+992 372 12 3456", "Tel. +992 372 12 3456", "00992 372 12 3456", "+672 10 6122",
                 "+688 90 3290"):  # fmt: skip
        assert PII().scrub(text)[0].endswith("<PHONE>"), text
    assert "ssn" not in [k for *_, k in PII().find("+1 536-90-4399")]
    assert PII().scrub("John Smith 42 536 90 4399")[0] == "John Smith 42 <SSN>"
    for text in ("SSN 536 90 4399", "SSN: 536-90-4399", "SSNs 536-90-4399, 536 90 4400"):
        assert [k for *_, k in PII().find(text)] == ["ssn"] * text.count("53"), text
