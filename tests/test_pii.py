"""The PII stage: each kind in several formats, numbers that are not personal data left alone, the
IP policy switch, IMEIs apart from cards, networks apart from hosts, percent-escaped e-mails, the
config keys and the per-kind counts in the prep report."""

from __future__ import annotations

import ipaddress
import json
import lzma
import random
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import phonenumbers
import pytest
from stdnum import imei as stdnum_imei

from lmforge.config import Config, PrepConfig
from lmforge.data.pii import DEFAULT_REGIONS, KINDS, PII
from lmforge.data.pipeline import clean_documents
from lmforge.data.report import Report, StageStats
from lmforge.errors import LmforgeError

FOUND = {
    "login": ["alice:s3cret", "admin:Pa55w0rd!", "bob", ":onlypass", "u:p%40ss:w"],  # of a URL: below
    "email": [
        "juliet.capulet@verona.example.com",
        "j_smith+news@mail.example.co.uk",
        "François.Dupont@wanadoo.fr",
        "o'neil42@startup.io",
    ],
    "phone": [
        "(617) 555-0134",  # the formats issue 17 found kept
        "+1 (646) 555-0143",
        "+33 1 42 68 53 07",
        "617.555.0134",
        "+44 20 7946 0958",
        "020 7946 0958",  # national formats: GB, FR, DE, IN
        "06 12 34 56 78",
        "030 901820",
        "+4930901820",  # E.164
        "0049 30 901820",  # 00 prefix
        "tel:+81-3-1234-5678",
        "+91 81234 56789",
        "+48 512 385 786",  # grouped like thousands, but "+" says phone
        "（０３）１２３４－５６７８",  # full-width digits and punctuation, as Japanese text writes them
    ],
    "phone_after_cue": ["612 345 678", "2 147 483 647"],  # grouped like thousands: a phone word says phone
    "ip": [
        "8.8.4.4",
        "192.168.1.20",
        "10.0.0.7",
        "192.0.2.44",
        "2001:db8::1",
        "fe80::1%eth0",
        "2607:f8b0:4005:0805:0000:0000:0000:200e",
        "::ffff:192.0.2.1",
    ],
    "card": [
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "378282246310005",
        "3782 822463 10005",
        "6011111111111117",
        "4111.1111.1111.1111",  # dotted
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "FR76 3000 6000 0112 3456 7890 189",
        "NL91 ABNA 0417 1643 00",
        "DE89-3704-0044-0532-0130-00",  # dashed
        "BE68 5390 0754 7034",  # the standard's example: its Belgian account check (stdnum's) fails
    ],
    "ssn": ["536-90-4399", "536 90 4399", "123-45-6789"],
    "imei": [  # IMEI's own layouts need no word (a compact one does: test_a_compact_imei_...)
        "35-209900-176148-1",  # 3GPP TS 23.003's AA-BBBBBB-CCCCCC-D
        "35209900 176148 1",  # TAC SNR D
        "86-123456-789012-7",  # 86: China's TAF
    ],
}

LEFT = [
    "Genesis 1:1 and John 3:16-18",  # Bible references
    "3:16 For God so loved the world",
    "on 12/05/2021, 2021-05-12 or 05.12.2021 at 12:30:45",  # dates and times
    "2021-05-12T14:30:00Z",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",  # ISBNs
    "ISSN 0317-8471, eISSN 1234-5679",  # serials' ISSNs (a leading 0 marked a phone)
    "Version 7.6.4.1, version 10.2.3.4, v1.2.3.4, Python 3.11.4",  # versions
    "Chapter 12.3.4.5, Section 1.2.3.4, § 10.2.1.1 and Table 2.1.1.3",  # numbered parts
    "Springfield, IL 62704-1234 and ZIP code 94103-1234",  # US ZIP+4 codes
    "$1,234,567.89 or 1 234,56 € or EUR 2.500.000,00",  # prices
    "in 1597, 1600-1623 and pp. 123-145",
    "00:1a:2b:3c:4d:5e",  # a MAC address
    "123e4567-e89b-12d3-a456-426614174000",  # a UUID
    "std::vector and a::b",
    "127.0.0.1, ::1, 0.0.0.0 and the netmask 255.255.255.0",  # loopback, unspecified, reserved
    "=SUM(A1:B65536)",
    "4111 1111 1111 1112",  # Luhn fails
    "9783161484100",  # an ISBN-13 is Luhn-valid-looking but no issuer starts with 9
    "000-12-3456 and 666-12-3456",  # SSN areas the SSA never issues
    "DE89 3704 0044 0532 0130 01",  # IBAN checksum fails
    "Invoice 2024-000123, ID 4155550134, order #4155550134",  # numbers of other kinds
    "count 1 2 3 4 5 6 7 8 9 10",  # digits spaced one by one
    "612 345 678 habitants and 2 147 483 647 bytes",  # thousands with no phone word
    "http://example.com/@user and ssh://@host",  # no userinfo
    "IMEI 490154203237519",  # check digit fails
    "731234567890125",  # 15 digits, Luhn-valid, neither an IMEI's reporting body nor a card issuer
    "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 8.8.8.0/24, 10.0.0.0/255.0.0.0",  # networks
    "fd00::/8 and 2001:db8::/32.",
    "CPU at 95%40.5 s, 20%40 wheat",  # an escaped @ with no address around it
]


@pytest.mark.parametrize("kind,item", [(k, i) for k, items in FOUND.items() for i in items])
def test_each_kind_is_found_in_several_formats(kind: str, item: str) -> None:
    head, tail = {"login": ("postgres://", "@db.example.com:5432/app")}.get(kind, ("", ""))
    lead = "The players came in. Reach me at " if kind != "phone_after_cue" else "Llame al "
    text = f"{lead}{head}{item}{tail} tomorrow.\nExeunt."
    kind = kind.removesuffix("_after_cue")
    scrubbed, spans = PII().scrub(text)
    assert [(text[s:e], k) for s, e, k in spans] == [(item, kind)]
    assert scrubbed == f"{lead}{head}<{kind.upper()}>{tail} tomorrow.\nExeunt."


def test_a_phone_word_or_prefix_wins_over_another_numbers_word() -> None:
    """A first version of those rules let `ID:`, `Case`, `n°` or `no` hide a `+` or trunk-0 number,
    and a year's serial number win over `call` (a helper's pass found each)."""
    for text in ("Customer: +44 20 7946 0958", "ID: +33 1 42 68 53 07", "Case 020 7946 0958",
                 "Mon n° : 06 12 34 56 78", "No. +1 415 555 0134", "call 2024-555123"):  # fmt: skip
        assert PII().scrub(text)[0].endswith("<PHONE>"), text


def test_a_url_loses_its_login_and_nothing_more() -> None:
    # email would take `s3cret@example.com` (the user name left) or `//x.com/a?u=ann` with an address
    cases = {
        "see https://alice:s3cret@example.com/x": "see https://<LOGIN>@example.com/x",
        "https://x.com/a?u=ann@b.com": "https://x.com/a?u=<EMAIL>",  # the query's key stays
        "https://x.com/track?id=7&email=j+news@mail.example.co.uk": "https://x.com/track?id=7&email=<EMAIL>",
        "postgresql://user:secret@/db?host=/var/run/postgresql": "postgresql://<LOGIN>@/db?host=/var/run/postgresql",
        "Return-Path: <list-bounces+ann=example.com@lists.example.org>": "Return-Path: <<EMAIL>>",
        "ftp://bob:hunter2@10.0.0.5/f": "ftp://<LOGIN>@<IP>/f",
    }
    for text, scrubbed in cases.items():
        assert PII().scrub(text)[0] == scrubbed


@pytest.mark.parametrize("text", LEFT)
def test_numbers_that_are_not_personal_data_are_left_alone(text: str) -> None:
    assert PII().find(text) == []


def test_an_imei_is_no_card() -> None:
    """A 15-digit Luhn-valid number is an IMEI (stdnum's check) after the word IMEI, or when it starts
    with a reporting body's code; a card only when it starts as a 15-digit card does (Amex 34, 37).
    Before, `490154203237518` was a `<CARD>` and `861234567890127` was left (8 is no issuer's)."""
    text = "IMEI 012345678901237, phone 490154203237518, handset 861234567890127, Amex 378282246310005."
    spans = PII().find(text)
    assert [(text[s:e], k) for s, e, k in spans] == [
        ("012345678901237", "imei"),  # 01: the US PTCRB's
        ("490154203237518", "imei"),
        ("861234567890127", "imei"),
        ("378282246310005", "card"),
    ]
    assert all(stdnum_imei.is_valid(text[s:e]) for s, e, k in spans if k == "imei")
    # The word says IMEI: a number of no reporting body's is one too. Where only cards are scrubbed,
    # an IMEI is no card: Visa issues no 15-digit number (13, 16, 19), nor JCB (16-19), nor
    # Mastercard (16); Amex's 15 stay cards
    assert PII().scrub("IMEI: 731234567890125")[0] == "IMEI: <IMEI>"
    assert PII(kinds="card").scrub("phone 490154203237518")[0] == "phone 490154203237518"
    for imei_like in ("352099001761481", "531234567890127"):  # a JCB's, a Mastercard's prefix
        assert stdnum_imei.is_valid(imei_like) and PII(kinds="card").find(imei_like) == []
    assert PII(kinds="card").scrub("Amex 378282246310005")[0] == "Amex <CARD>"
    assert PII(kinds="imei").scrub("card 4111 1111 1111 1111")[1] == []


def test_a_network_keeps_its_address_and_a_host_loses_it() -> None:
    """`a.b.c.d/n` with its host bits zero is a network (ipaddress, strict): no one's address. With
    host bits set it is an interface's address; /32, /128 and point-to-point /31, /127 name hosts."""
    cases = {
        "allow 10.0.0.0/8 and 2001:db8::/32": "allow 10.0.0.0/8 and 2001:db8::/32",
        "eth0 inet 10.1.2.3/24": "eth0 inet <IP>/24",
        "peer 203.0.113.5/32, link 10.0.0.0/31, v6 2001:db8::1/64": "peer <IP>/32, link <IP>/31, v6 <IP>/64",
        "route 192.168.0.0/16 via 192.168.0.1.": "route 192.168.0.0/16 via <IP>.",
    }
    for text, scrubbed in cases.items():
        assert PII().scrub(text)[0] == scrubbed, text
    for text in ("10.0.0.0/8", "2001:db8::/32", "8.8.8.0/24"):  # the oracle agrees: networks
        assert ipaddress.ip_network(text, strict=True).num_addresses > 2
    # public: a global network is kept too; a global host goes; private ones stay as before
    public = PII(ip_policy="public").scrub("8.8.8.0/24, 8.8.8.8/32, 10.1.2.3/24")[0]
    assert public == "8.8.8.0/24, <IP>/32, 10.1.2.3/24"


def test_percent_escaped_emails_are_found() -> None:
    """`%40` (or `%2540`, escaped twice) for the `@` in URLs and mailto: links; the span decoded is
    an address the plain matcher takes whole. The escaped URL around one keeps its `/`, `:`, `?`."""
    cases = {
        "mailto:john.doe%40example.com": "mailto:<EMAIL>",
        # a URL query's keys stay, its "=" and "&" escaped or not (a helper's pass: `?to=` went too)
        "https://x.com/track?id=7&email=j%2Bnews%40mail.example.co.uk": "https://x.com/track?id=7&email=<EMAIL>",
        "r=https%3A%2F%2Fx.com%2Fa%3Fto%3Djohn.doe%2540ex.com": "r=https%3A%2F%2Fx.com%2Fa%3Fto%3D<EMAIL>",
        "https://x.com/?a=1&to=ann%40example.com": "https://x.com/?a=1&to=<EMAIL>",
    }
    for text, scrubbed in cases.items():
        out, spans = PII().scrub(text)
        assert out == scrubbed, text
        [(s, e, kind)] = spans
        plain = unquote(unquote(text[s:e]))
        assert kind == "email" and PII().find(plain) == [(0, len(plain), "email")], plain


def test_long_runs_of_an_address_s_characters_scrub_in_linear_time() -> None:
    """Each e-mail pattern starts at a run's start only: a run of escapes or of `a=` with no
    address took 7.5 s at 32 KB (each "%" a start scanning to the run's end), 0.01 s before."""
    import time

    for text in ("x%20" * 8000 + "%40 end", "a=a" * 8000 + "@ x", "%41" * 8000 + "%40x"):
        start = time.perf_counter()
        assert PII().scrub(text)[1] == []
        assert time.perf_counter() - start < 1.0, text[:20]


def _numeric_documents(rng: random.Random) -> dict[str, str]:
    """About 70 KB each of what a corpus's tables and logs hold: an aligned table of integers, a
    tab-separated one, and numbers spaced one by one on one line."""
    aligned = "\n".join(" ".join(f"{rng.randint(0, 99999):>6}" for _ in range(10)) for _ in range(1000))
    tabbed = "\n".join(
        "\t".join(str(rng.randint(0, 10 ** rng.randint(1, 8))) for _ in range(8)) for _ in range(1400)
    )
    spaced = " ".join(str(rng.randint(0, 9)) for _ in range(35000))
    return {"aligned": aligned, "tabbed": tabbed, "spaced": spaced}


def test_numeric_tables_scrub_at_the_speed_of_prose() -> None:
    """Each run of 6+ digits cost a parse per phone region (0.007-0.012 MB/s: about 20 s for these
    210 KB, a few hundred MB of tables stalled prep for hours). A table's cells after a number
    are no phone (`_in_number`), nor is one across a column break, so none is parsed (2 s:
    the old code took about 20 s here, 10x the bound; now about 0.3 s)."""
    import time

    docs = _numeric_documents(random.Random(0))
    start = time.perf_counter()
    for text in docs.values():
        assert PII().find(text) == []
    assert time.perf_counter() - start < 2.0


def test_a_phone_in_a_table_is_still_found() -> None:
    """The column rule keeps a table of contacts' numbers: each cell is tried alone."""
    rows = "id\tname\tphone\n17\tAnn\t020 7946 0958\n18\tBob\t+33 1 42 68 53 07\n19  Cy  (617) 555-0134\n"
    spans = PII().find(rows)
    assert [rows[s:e] for s, e, k in spans if k == "phone"] == [
        "020 7946 0958",
        "+33 1 42 68 53 07",
        "(617) 555-0134",
    ]


def test_a_compact_imei_needs_a_device_word() -> None:
    """15 compact digits with a valid check digit and a reporting body's prefix are 1.7% of random
    15-digit numbers: a table of ids lost them as `<IMEI>`. Now they are an IMEI after a word for
    the device (IMEI, phone, device, serial...) or in IMEI's own layouts; the oracle for which
    numbers are IMEIs is python-stdnum's check digit."""
    rng = random.Random(1)
    ids = ["".join(rng.choice("0123456789") for _ in range(15)) for _ in range(5000)]
    table = "\n".join(f"order {n}" for n in ids)
    assert [k for _, _, k in PII().find(table) if k == "imei"] == []
    valid = [
        n for n in ids if stdnum_imei.is_valid(n) and n[:2] in ("35", "86", "01", "99", "44", "49", "91")
    ]
    assert len(valid) > 20
    for word in ("IMEI", "phone", "Device", "serial no.", "handset", "IMEI:"):
        text = "\n".join(f"{word} {n}" for n in valid)
        assert [text[s:e] for s, e, k in PII().find(text) if k == "imei"] == valid, word
    grouped = [f"{n[:2]}-{n[2:8]}-{n[8:14]}-{n[14]}" for n in valid] + [
        f"{n[:8]} {n[8:14]} {n[14]}" for n in valid
    ]
    text = "\n".join(grouped)
    assert [text[s:e] for s, e, k in PII().find(text)] == grouped


def test_ip_policy_switch() -> None:
    text = "hosts 8.8.4.4, 192.168.1.20, 192.0.2.44, 2001:db8::1, 2a00:1450::200e, 127.0.0.1 and ::1"
    everything = PII(ip_policy="all").scrub(text)[0]
    assert everything == "hosts <IP>, <IP>, <IP>, <IP>, <IP>, 127.0.0.1 and ::1"
    public = PII(ip_policy="public").scrub(text)[0]
    assert public == "hosts <IP>, 192.168.1.20, 192.0.2.44, 2001:db8::1, <IP>, 127.0.0.1 and ::1"


def test_kinds_and_regions_are_chosen() -> None:
    text = "Mail ann@example.com or call 020 7946 0958 or 01 42 68 53 07."
    assert PII(kinds="phone").scrub(text)[0] == "Mail ann@example.com or call <PHONE> or <PHONE>."
    assert PII(regions="FR").scrub(text)[0] == "Mail <EMAIL> or call 020 7946 0958 or <PHONE>."


def test_overlaps_go_to_the_more_specific_kind() -> None:
    # A card number is also a valid phone number in some regions; an IBAN holds digit runs.
    spans = PII().find("card 4111111111111111, IBAN GB82WEST12345698765432")
    assert [k for _, _, k in spans] == ["card", "iban"]


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(LmforgeError, match="prep.pii_kinds: unknown kind 'name'"):
        PII(kinds="email,name")
    with pytest.raises(LmforgeError, match="prep.pii_phone_regions: 'XX'"):
        PII(regions="US,XX")
    with pytest.raises(LmforgeError, match="prep.pii_ip='private'"):
        PII(ip_policy="private")
    cfg = Config()
    cfg.prep.pii_ip = "everything"
    with pytest.raises(LmforgeError, match="prep.pii_ip='everything'"):
        cfg.validate()


def test_config_defaults_agree_with_the_stage() -> None:
    p = PrepConfig()
    assert p.pii_kinds.split(",") == list(KINDS)
    assert p.pii_phone_regions == DEFAULT_REGIONS


def test_prep_scrubs_imeis_networks_and_escaped_emails_as_such(tmp_path: Path) -> None:
    """The three through prep's `pii` stage with its defaults (imei among `prep.pii_kinds`)."""
    docs = ["Stolen: IMEI 490154203237518. Allow 10.0.0.0/8, not 10.9.8.7. mailto:ann%40example.com"]
    report = Report()
    out = list(clean_documents(docs, ["pii"], PrepConfig().__dict__, report, tmp_path, workers=1))
    assert out == ["Stolen: IMEI <IMEI>. Allow 10.0.0.0/8, not <IP>. mailto:<EMAIL>"]
    assert dict(report.stages["pii"].edits) == {"imei": 1, "ip": 1, "email": 1}


def test_report_counts_replacements_per_kind(tmp_path: Path) -> None:
    docs = [
        "Write to ann@example.com or bob@example.org. Card 4111 1111 1111 1111.",
        "IBAN DE89 3704 0044 0532 0130 00, SSN 536-90-4399, host 10.0.0.7, call (617) 555-0134.",
        "Now is the winter of our discontent, 3:16, 12:30, version 10.2.3.4.",
    ]
    options = PrepConfig().__dict__ | {"pii_ip": "public"}
    report = Report()
    out = list(clean_documents(docs, ["pii"], options, report, tmp_path, workers=1))
    stats = report.stages["pii"]
    assert dict(stats.edits) == {"email": 2, "card": 1, "iban": 1, "ssn": 1, "phone": 1}  # 10.0.0.7 private
    assert stats.changed == 2 and stats.docs_out == 3
    assert out[1] == "IBAN <IBAN>, SSN <SSN>, host 10.0.0.7, call <PHONE>."
    assert out[2] == docs[2]
    assert "email 2" in report.format()


def test_apply_counts_into_stage_stats() -> None:
    stats = StageStats()
    PII().apply("a@b.example.com c@d.example.com 8.8.8.8", stats)
    assert dict(stats.edits) == {"email": 2, "ip": 1}


def test_recall_and_precision_on_the_shipped_evaluation_set() -> None:
    """The labelled set of data/build_pii_eval.py: every kind >= 99% recall; of the traps only
    four-part versions after a product name ("LibreOffice 7.6.4.1", a valid address) are touched,
    and one barcode after a phone word (`the cell. 0640724699335`: a spreadsheet's, read as a
    mobile's) (benchmarks/bench_pii.py has the full measure). The SSN-shaped phones
    (`+992 372 12 3456`) count in `phone`."""
    path = Path(__file__).resolve().parents[1] / "data" / "pii-eval.jsonl.xz"
    with lzma.open(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    scrubber = PII()
    found = {k: 0 for k in KINDS}
    total = {k: 0 for k in KINDS}
    touched: Counter[str] = Counter()
    for r in records:
        spans = scrubber.find(r["text"])
        for item in r["items"]:
            hit = [k for s, e, k in spans if s < item["end"] and item["start"] < e]
            if item["kind"] == "trap":
                touched[item["format"]] += bool(hit)
            else:
                total[item["kind"]] += 1
                found[item["kind"]] += item["kind"] in hit
    for kind in KINDS:
        assert found[kind] / total[kind] >= (0.93 if kind == "imei" else 0.99), (
            kind,
            found[kind],
            total[kind],
        )
    del touched["version 4 parts"]
    assert +touched == Counter({"EAN-13": 1})


def test_a_fields_value_is_no_phone() -> None:
    """A log's counters (`rx=397236329`) and a query's values were `<PHONE>`s: 9-10 digits that some
    region's plan calls valid. A value after `key=` is a phone only after a phone word, or marked
    with a "+", "0" or "(" as phone numbers are written."""
    rng = random.Random(3)
    log = "\n".join(
        f"2026-12-06T10:{i % 60:02d}:00 worker-{i % 8} rx={rng.randrange(10**8, 10**10)}"
        f" tx={rng.randrange(10**8, 10**10)} seq={rng.randrange(10**8, 10**10)}"
        for i in range(300)
    )
    assert PII().find(log) == []
    for text in ("phone=4155550134", "tel=4155550134", "to=+14155550134", "fax=020 7946 0958"):
        key = text.split("=")[0]
        assert PII().scrub(text)[0] == f"{key}=<PHONE>", text


def test_a_number_longer_than_e164_allows_is_no_phone() -> None:
    """E.164 caps a number at 15 digits with its country code; libphonenumber's German plan takes
    longer fixed lines, so 70% of 15-digit ids starting with a 0 were `<PHONE>`s (030824628194821 as
    +49 30 824628194821, 16 digits). Numbers within the cap are still found, Italy's kept 0 too."""
    rng = random.Random(5)
    ids = ["0" + "".join(rng.choice("0123456789") for _ in range(14)) for _ in range(2000)]
    phones = [n for n in ids if PII().find(f"order {n}")]
    assert len(phones) < 0.02 * len(ids)
    assert all(n.startswith(("00", "011")) for n in phones)  # dialled abroad: 0049 ... is +49 ...
    long_ones = ("+49 30 12345678", "030 12345678", "+44 20 7946 0958", "0039 06 6982 1234",
                 "+39 06 6982 1234", "Tel. 0151 23456789", "+49 1512 3456789")  # fmt: skip
    for text in long_ones:
        assert PII(regions="DE,GB,IT").scrub(text)[0].endswith("<PHONE>"), text
        assert phonenumbers.is_valid_number(phonenumbers.parse(text.removeprefix("Tel. "), "DE"))


def test_what_a_pass_found_the_new_rules_missed() -> None:
    """An adversarial pass on the numeric-text rules: dual-SIM IMEI labels, an IMEI named further
    before it, device words in other forms, telephony fields' values, and two spaces after a
    country code or an area code (PDF and OCR text) were each left; the table cases stay unscrubbed."""
    imei = "356938035643809"
    assert stdnum_imei.is_valid(imei)
    for before in ("IMEI1:", "IMEI 2:", "The IMEI number printed on the box is",
                   "Die IMEI meines Handys lautet", "My iPhone's number is", "smartphone", "Handynummer",
                   "Mobiltelefon", "Seriennummer", "Numéro de série", "número de serie", "tablet",
                   "GPS tracker ID"):  # fmt: skip
        assert PII().scrub(f"{before} {imei}")[0] == f"{before} <IMEI>", before
    assert PII().scrub(f"order {imei}")[0] == f"order {imei}"
    for field in ("msisdn=4155550134", "from=4155550134&to=x", "a&to=415-555-0134", "?msisdn=312 345 6789"):
        assert "<PHONE>" in PII().scrub(field)[0], field
    for field in ("rx=397236329", "bytes_received_total=397236329", "photo=4155550134"):
        assert PII().scrub(field)[0] == field, field
    for text in (
        "+1  201-555-2914",
        "Tel. +1  201-555-2914",
        "call (201)  555-2914 now",
        "+44  20 7946 0958",
        "Tel. 0121  234 5678",
        "call 06  12 34 56 78",
    ):
        assert PII().scrub(text)[0].count("<PHONE>") == 1 and not re.search(r"\d{3}", PII().scrub(text)[0]), (
            text
        )
    for table in ("79164  99022", "1234  5678  9012"):
        assert PII().scrub(table)[0] == table
