"""Build pii-eval.jsonl.xz: a labelled set for measuring PII scrubbing (benchmarks/bench_pii.py).

Offline (from the shipped files of data/) and deterministic (seeded):

    .venv/bin/python data/build_pii_eval.py [--out DIR]    # or: python -m data.build_pii_eval

Byte-identical re-runs need the same phonenumbers and python-stdnum versions (their metadata
shapes the numbers drawn): phonenumbers 9.0.43 and python-stdnum 2.2 gave the shipped file.

Each line is `{"id", "set", "source", "text", "items"}`: a stretch of real shipped text
(Shakespeare, Moby Dick, Austen, the Bible and LibreOffice help of en-fr.jsonl.xz, English and
French, review snippets; `source` names which) into which this script planted
- `set: "pii"`: 1-3 personal data items, each `{"start", "end", "kind", "format", "locale"}`
  (kind: email, phone, ip, card, iban, ssn, login, imei; an ip item also has `"scope"`: public or
  private);
- `set: "trap"`: 1-3 numbers that are not personal data and that a scrubber may mistake for some
  (dates, times, ISBNs, version numbers, prices, Bible references, MAC addresses, patents'
  numbers, barcodes...), each
  `{"start", "end", "kind": "trap", "format"}`: any replacement inside one is a false positive.
The untouched real text, the other half of the false-positive measure, is not copied here:
`clean_documents()` below reads it from the shipped files.
"""

from __future__ import annotations

import random
import re
import string
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat as Fmt
from phonenumbers import PhoneNumberType as Type
from stdnum import iban as stdnum_iban
from stdnum import luhn, numdb
from stdnum.us import ssn as stdnum_ssn

if __package__:  # python -m data.build_pii_eval, or imported as data.build_pii_eval
    from . import fetch
else:  # python data/build_pii_eval.py, or loaded from its path: fetch.py is the file beside this one
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fetch

OUT = fetch.HERE / "pii-eval.jsonl.xz"  # the shipped file
PER_KIND = 500  # planted items of each kind: a 1% miss rate is then 5 items
TRAPS = 1500
LATER_TRAPS = 350  # later_trap's: drawn after the others, with their own seed
SSN_SHAPED_PHONES = 50  # added 2026-12-08 (L6), after those, each part with its own seed too
L6_TRAPS = 150
SEED = 17

# National formats only for the regions the scrubber reads by default (lmforge.data.pii); any
# country in international format.
NATIONAL_REGIONS = ["US", "GB", "FR", "DE", "ES", "IT", "NL", "BE", "CH", "IN", "AU", "BR"]
WORLD_REGIONS = NATIONAL_REGIONS + ["CA", "JP", "CN", "MX", "ZA", "SE", "PL", "KR", "SG", "NG", "AR", "IE"]
IBAN_COUNTRIES = ["DE", "FR", "GB", "ES", "IT", "NL", "BE", "CH", "AT", "PL", "PT", "SE", "IE", "NO", "DK"]

# Words around a planted item, in the languages of the carrier text; "{}" is the item.
CONTEXT = {
    "email": ["Write to {} for details.", "Contact: {}", "Écrivez à {} avant lundi.", "E-Mail: {}", "{}"],
    "phone": ["Call {} today.", "Tel.: {}", "Appelez le {} ou passez.", "phone {}", "Llame al {}.", "{}"],
    "ip": ["The request came from {}.", "host {} refused the connection", "adresse IP {}", "{}"],
    "card": ["Card number {} was charged.", "Carte bancaire : {}", "Paid with {}.", "{}"],
    "iban": ["IBAN: {}", "Please transfer the sum to {}.", "Virement sur le compte {}.", "{}"],
    "ssn": ["SSN {}", "Social Security number: {}", "his social security number is {}", "{}"],
    "login": ["Connect with {}.", "DATABASE_URL={}", "git clone {}", "Le serveur : {}", "{}"],
    "imei": ["IMEI {}", "IMEI number: {}", "Numéro IMEI : {}", "The phone ({}) was blocked.", "{}"],
}


# Personal-data-shaped items that the shipped text itself holds (every detection of the scrubbers
# in it was read by hand): example and mailing-list addresses of the LibreOffice help. A
# detection of these is not a false positive.
KNOWN_IN_CLEAN = {
    "email": [
        "my.name@my.provider.com",
        "mon.nom@mon.fournisseur.com",
        "users@global.libreoffice.org",
        "users@fr.libreoffice.org",
    ],
    "ip": ["192.168.1.1"],
}


def _texts(name: str, field: str = "text") -> list[str]:
    return [record[field] for record in fetch.read(name)]


def clean_documents() -> Iterator[tuple[str, str]]:
    """(source, text) of the untouched shipped text: every work, chapter and review; the Bible
    one chapter a document with its verse numbers printed ("3:16 For God so loved..."); the
    LibreOffice help one page a document, English and French."""
    for name in ("shakespeare.jsonl.xz", "moby_dick.jsonl.xz", "austen.jsonl.xz"):
        for text in _texts(name):
            yield name, text
    yield "rt_sentiment.jsonl.xz", "\n".join(_texts("rt_sentiment.jsonl.xz"))
    pages: dict[str, dict[str, list[str]]] = {}
    for pair in fetch.read("en-fr.jsonl.xz"):
        page = pages.setdefault(pair["doc"], {"en": [], "fr": []})
        page["en"].append(pair["en"])
        page["fr"].append(pair["fr"])
    for doc, page in pages.items():
        for lang in ("en", "fr"):
            if doc.startswith("bible/"):
                chapter = int(doc.split("/")[2])
                lines = [f"{chapter}:{i} {verse}" for i, verse in enumerate(page[lang], 1)]
                yield f"en-fr.jsonl.xz bible {lang}", "\n".join(lines)
            else:
                yield f"en-fr.jsonl.xz libreoffice {lang}", "\n".join(page[lang])


# -- planted items: each generator returns (text, format, locale, extra fields) ------------------

Item = tuple[str, str, str, dict]

FIRST = ["juliet", "john", "marie", "jose", "anna", "li", "ahmed", "olga", "søren", "françois", "zoë", "kai"]
LAST = ["capulet", "smith", "dupont", "garcia", "müller", "wang", "khan", "ivanova", "o'neil", "nguyen"]
DOMAINS = [
    "example.com",
    "mail.example.co.uk",
    "uni-bonn.de",
    "correo.es",
    "wanadoo.fr",
    "gmail.com",
    "research.example.org",
    "startup.io",
    "post.example.ch",
    "yahoo.co.jp",
    "libero.it",
    "web.de",
]


def email(rng: random.Random) -> Item:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    style = rng.choice(["first.last", "flast", "first_last+tag", "first123", "First.Last", "first-last"])
    local = {
        "first.last": f"{first}.{last}",
        "flast": f"{first[0]}{last}",
        "first_last+tag": f"{first}_{last}+{rng.choice(['news', 'shop', 'x'])}",
        "first123": f"{first}{rng.randint(1, 9999)}",
        "First.Last": f"{first.capitalize()}.{last.capitalize()}",
        "first-last": f"{first}-{last}",
    }[style]
    accented = any(ord(c) > 127 for c in local)
    return f"{local}@{rng.choice(DOMAINS)}", style, "unicode" if accented else "ascii", {}


def _random_phone(rng: random.Random, region: str) -> phonenumbers.PhoneNumber:
    kind = rng.choice([Type.FIXED_LINE, Type.MOBILE])
    example = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    nsn = phonenumbers.national_significant_number(example)
    while True:  # keep the example's leading digits, draw the rest until the number is valid
        keep = max(2, len(nsn) - rng.randint(4, 6))
        tail = "".join(rng.choice(string.digits) for _ in range(len(nsn) - keep))
        number = phonenumbers.parse(f"+{example.country_code}{nsn[:keep]}{tail}")
        if phonenumbers.is_valid_number(number):
            return number


def phone(rng: random.Random) -> Item:
    national = rng.random() < 0.5
    region = rng.choice(NATIONAL_REGIONS if national else WORLD_REGIONS)
    number = _random_phone(rng, region)
    intl = phonenumbers.format_number(number, Fmt.INTERNATIONAL)
    if national:
        nat = phonenumbers.format_number(number, Fmt.NATIONAL)
        fmt = rng.choice(["national", "national digits only", "national dots"])
        if region == "US":
            fmt = rng.choice(["(617) 555-0134", "617-555-0134", "617.555.0134", "6175550134"])
            digits = phonenumbers.national_significant_number(number)
            a, b, c = digits[:3], digits[3:6], digits[6:]
            text = {
                "(617) 555-0134": f"({a}) {b}-{c}",
                "617-555-0134": f"{a}-{b}-{c}",
                "617.555.0134": f"{a}.{b}.{c}",
                "6175550134": digits,
            }[fmt]
        elif fmt == "national digits only":
            text = re.sub(r"\D", "", nat)
        elif fmt == "national dots" and region == "FR":
            text = nat.replace(" ", ".")
        else:
            text, fmt = nat, "national"
        return text, fmt, region, {}
    fmt = rng.choice(["international", "E.164", "00 prefix", "tel: URI", "+1 (646) 555-0143", "dashes"])
    if fmt == "E.164":
        text = phonenumbers.format_number(number, Fmt.E164)
    elif fmt == "00 prefix":
        text = "00" + intl[1:]
    elif fmt == "tel: URI":
        text = phonenumbers.format_number(number, Fmt.RFC3966)
    elif fmt == "dashes":
        text = re.sub(r"[ ]", "-", intl)
    elif fmt == "+1 (646) 555-0143" and number.country_code == 1:
        d = phonenumbers.national_significant_number(number)
        text = f"+1 ({d[:3]}) {d[3:6]}-{d[6:]}"
    else:
        text, fmt = intl, "international"
    return text, fmt, region, {}


def ip(rng: random.Random) -> Item:
    r = rng.randint
    choices: dict[str, Callable[[], tuple[str, str]]] = {
        "v4 public": lambda: (
            f"{rng.choice([8, 31, 62, 81, 93, 151, 185, 212])}.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}",
            "public",
        ),
        "v4 10/8": lambda: (f"10.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}", "private"),
        "v4 172.16/12": lambda: (f"172.{r(16, 31)}.{r(0, 255)}.{r(1, 254)}", "private"),
        "v4 192.168/16": lambda: (f"192.168.{r(0, 255)}.{r(1, 254)}", "private"),
        "v4 documentation": lambda: (
            f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{r(1, 254)}",
            "private",
        ),
        "v4 with port": lambda: (
            f"{r(11, 99)}.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}:{r(1024, 65535)}",
            "public",
        ),
        "v6 public compressed": lambda: (
            f"2a00:{r(1, 0xFFFF):x}:{r(0, 0xFFFF):x}::{r(1, 0xFFFF):x}",
            "public",
        ),
        "v6 full": lambda: (
            ":".join(f"{x:04x}" for x in [0x2607, *[r(0, 0xFFFF) for _ in range(7)]]),
            "public",
        ),
        "v6 documentation": lambda: (f"2001:db8:{r(0, 0xFFFF):x}::{r(1, 0xFFFF):x}", "private"),
        "v6 link-local zone": lambda: (f"fe80::{r(1, 0xFFFF):x}:{r(1, 0xFFFF):x}%eth{r(0, 3)}", "private"),
        "v6 unique local": lambda: (f"fd{r(0, 255):02x}:{r(0, 0xFFFF):x}::{r(1, 0xFFFF):x}", "private"),
        "v6 mapped v4": lambda: (f"::ffff:{r(11, 99)}.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}", "public"),
    }
    fmt = rng.choice(list(choices))
    text, scope = choices[fmt]()
    if fmt == "v4 with port":  # the item is the address; the port is text around it
        address, port = text.rsplit(":", 1)
        return address, fmt, "", {"scope": scope, "after": f":{port}"}
    if fmt == "v6 public compressed" and rng.random() < 0.3:
        return text, "v6 [address]:port", "", {"scope": scope, "before": "[", "after": "]:443"}
    return text, fmt, "", {"scope": scope}


CARD_BRANDS = {  # brand: (prefixes, length, grouping)
    "visa": (["4"], 16, (4, 4, 4, 4)),
    "visa 13": (["4"], 13, (4, 4, 5)),
    "mastercard": (["51", "52", "53", "54", "55", "2221", "2720"], 16, (4, 4, 4, 4)),
    "amex": (["34", "37"], 15, (4, 6, 5)),
    "discover": (["6011", "65"], 16, (4, 4, 4, 4)),
    "jcb": (["3528", "3589"], 16, (4, 4, 4, 4)),
    "diners": (["36", "38"], 14, (4, 6, 4)),
    "unionpay 19": (["62"], 19, (4, 4, 4, 4, 3)),
}


def card(rng: random.Random) -> Item:
    brand = rng.choice(list(CARD_BRANDS))
    prefixes, length, grouping = CARD_BRANDS[brand]
    body = rng.choice(prefixes)
    body += "".join(rng.choice(string.digits) for _ in range(length - 1 - len(body)))
    number = body + luhn.calc_check_digit(body)
    fmt = rng.choice(["spaces", "dashes", "compact"])
    if fmt == "compact":
        return number, fmt, brand, {}
    groups, at = [], 0
    for n in grouping:
        groups.append(number[at : at + n])
        at += n
    return (" " if fmt == "spaces" else "-").join(groups), fmt, brand, {}


# Reporting bodies of a type allocation code (GSMA TS.06), the ones allocating now most often.
IMEI_BODIES = ["35", "35", "35", "86", "86", "01", "99", "44", "49", "45", "98", "91"]


def imei(rng: random.Random) -> Item:
    """A phone's IMEI: a type allocation code, a serial number, the Luhn check digit."""
    body = rng.choice(IMEI_BODIES) + "".join(rng.choice(string.digits) for _ in range(12))
    number = body + luhn.calc_check_digit(body)
    fmt = rng.choice(["compact", "AA-BBBBBB-CCCCCC-D", "TAC SNR D"])
    if fmt == "AA-BBBBBB-CCCCCC-D":
        return f"{number[:2]}-{number[2:8]}-{number[8:14]}-{number[14]}", fmt, "", {}
    if fmt == "TAC SNR D":
        return f"{number[:8]} {number[8:14]} {number[14]}", fmt, "", {}
    return number, fmt, "", {}


def _bban(rng: random.Random, structure: str) -> str:
    out = []
    for count, kind in re.findall(r"(\d+)!?([anc])", structure):
        pool = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
        out += [rng.choice(pool[kind]) for _ in range(int(count))]
    return "".join(out)


def iban(rng: random.Random) -> Item:
    country = rng.choice(IBAN_COUNTRIES)
    structure = dict(numdb.get("iban").info(country)[0][1])["bban"]
    while True:  # some countries add a national check inside the BBAN: draw until it passes
        bban = _bban(rng, structure)
        number = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
        if stdnum_iban.is_valid(number):
            break
    fmt = rng.choice(["printed", "compact"])
    return (stdnum_iban.format(number) if fmt == "printed" else number), fmt, country, {}


def ssn(rng: random.Random) -> Item:
    while True:
        digits = f"{rng.randint(1, 899):03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        if stdnum_ssn.is_valid(digits):
            break
    sep = rng.choice(["-", " "])
    return f"{digits[:3]}{sep}{digits[3:5]}{sep}{digits[5:]}", "dashes" if sep == "-" else "spaces", "US", {}


URL_SCHEMES = [
    "https",
    "http",
    "ftp",
    "sftp",
    "postgres",
    "mysql",
    "mongodb+srv",
    "redis",
    "amqp",
    "smtp",
    "ssh",
]
URL_HOSTS = [
    "db.example.com",
    "example.org",
    "git.corp.example",
    "localhost",
    "cache.internal",
    "mail.exemple.fr",
]
PASSWORD_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;="


def login(rng: random.Random) -> Item:
    """The user name and password of a URL (the item), its scheme and host the text around it."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    user = rng.choice(
        [first, f"{first}.{last}", f"{first[0]}{last}", "admin", "root", "deploy", f"{first}%40mail.com"]
    )
    password = "".join(rng.choice(PASSWORD_CHARS) for _ in range(rng.randint(6, 20)))
    if rng.random() < 0.2:
        password += rng.choice(["%40", "%2F", "%3A", "%23"]) + str(rng.randint(0, 99))  # escaped @ / : #
    fmt = rng.choice(["user:password", "user:password", "user:password", "user", ":password"])
    userinfo = {"user:password": f"{user}:{password}", "user": user, ":password": f":{password}"}[fmt]
    host = rng.choice(URL_HOSTS) + rng.choice(["", f":{rng.randint(1024, 65535)}"])
    after = f"@{host}" + rng.choice(["", "/", "/app", "/repo.git", "/db?sslmode=require"])
    scheme = rng.choice(URL_SCHEMES)
    return (
        userinfo,
        f"{scheme} {fmt}",
        "unicode" if any(ord(c) > 127 for c in user) else "ascii",
        {
            "before": f"{scheme}://",
            "after": after,
        },
    )


GENERATORS: dict[str, Callable[[random.Random], Item]] = {
    "email": email,
    "phone": phone,
    "ip": ip,
    "card": card,
    "iban": iban,
    "ssn": ssn,
}
# Kinds added after the set was first drawn: their documents come after the others, drawn with
# their own seed, so that the earlier documents stay as they were.
LATER_KINDS: dict[str, Callable[[random.Random], Item]] = {"login": login, "imei": imei}


# -- traps: numbers that are not personal data ---------------------------------------------------

MONTHS = ["January", "May", "août", "März", "September", "December"]


def _isbn13(rng: random.Random) -> str:
    body = rng.choice(["978", "979"]) + "".join(rng.choice(string.digits) for _ in range(9))
    check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body)) % 10) % 10
    d = body + str(check)
    return f"{d[:3]}-{d[3]}-{d[4:7]}-{d[7:12]}-{d[12]}"


def _isbn10(rng: random.Random) -> str:
    body = "".join(rng.choice(string.digits) for _ in range(9))
    check = (11 - sum(int(c) * (10 - i) for i, c in enumerate(body)) % 11) % 11
    d = body + ("X" if check == 10 else str(check))
    return f"{d[0]}-{d[1:4]}-{d[4:9]}-{d[9]}"


def trap(rng: random.Random) -> tuple[str, str]:
    r, d2 = rng.randint, lambda a, b: f"{rng.randint(a, b):02d}"
    y = r(1590, 2030)
    choices: dict[str, Callable[[], str]] = {
        "date d/m/y": lambda: f"{d2(1, 28)}/{d2(1, 12)}/{y}",
        "date ISO": lambda: f"{y}-{d2(1, 12)}-{d2(1, 28)}",
        "date d.m.y": lambda: f"{d2(1, 28)}.{d2(1, 12)}.{y}",
        "date words": lambda: f"{r(1, 28)} {rng.choice(MONTHS)} {y}",
        "timestamp": lambda: f"{y}-{d2(1, 12)}-{d2(1, 28)}T{d2(0, 23)}:{d2(0, 59)}:{d2(0, 59)}Z",
        "year range": lambda: f"{y}-{y + r(1, 40)}",
        "time": lambda: f"{d2(0, 23)}:{d2(0, 59)}",
        "time seconds": lambda: f"{d2(0, 23)}:{d2(0, 59)}:{d2(0, 59)}",
        "ISBN-13": lambda: f"ISBN {_isbn13(rng)}",
        "ISBN-10": lambda: f"ISBN {_isbn10(rng)}",
        "bare ISBN-13": lambda: _isbn13(rng),
        "version 4 parts": lambda: (
            f"{rng.choice(['LibreOffice', 'version', 'v'])} {r(3, 25)}.{r(0, 9)}.{r(0, 9)}.{r(0, 9)}"
        ),
        "version 3 parts": lambda: f"Python {r(2, 3)}.{r(0, 13)}.{r(0, 20)}",
        "Windows build": lambda: f"10.0.{r(10000, 22631)}.{r(1, 4000)}",
        "price $": lambda: f"${r(1, 999)},{r(0, 999):03d}.{r(0, 99):02d}",
        "price €": lambda: f"{r(1, 999)} {r(0, 999):03d},{r(0, 99):02d} €",
        "price EUR dotted": lambda: f"EUR {r(1, 999)}.{r(0, 999):03d}.{r(0, 999):03d},00",
        "large number": lambda: f"{r(1, 999)},{r(0, 999):03d},{r(0, 999):03d}",
        "spaced thousands": lambda: f"{r(1, 99)} {r(0, 999):03d} {r(0, 999):03d} habitants",
        "Bible reference": lambda: (
            f"{rng.choice(['John', 'Genesis', 'Psalm', 'Matthieu'])} {r(1, 150)}:{r(1, 40)}-{r(41, 60)}"
        ),
        "MAC address": lambda: rng.choice([":", "-"]).join(f"{r(0, 255):02x}" for _ in range(6)),
        "coordinates": lambda: f"{r(-89, 89)}.{r(0, 9999):04d}, {r(-179, 179)}.{r(0, 9999):04d}",
        "resolution": lambda: f"{rng.choice([1280, 1920, 2560, 3840])}x{rng.choice([720, 1080, 1440, 2160])}",
        "page range": lambda: f"pp. {r(1, 500)}-{r(501, 999)}",
        "UUID": lambda: "-".join(
            "".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)
        ),
        "decimal": lambda: f"{r(0, 9)}.{r(10**9, 10**10 - 1)}",
        "cell range": lambda: f"=SUM(A{r(1, 999)}:B{r(1000, 65536)})",
        "order number": lambda: f"order no. {r(100000, 99999999)}",
    }
    fmt = rng.choice(list(choices))
    return choices[fmt](), fmt


def _gs1(body: str) -> str:
    """`body` with its GS1 check digit (UPC-A, EAN-13): weights 3 and 1 from the right."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str(-total % 10)


def later_trap(rng: random.Random) -> tuple[str, str]:
    """Traps added after the set was first drawn (an adversarial pass, 2026-12-07): patents'
    numbers, versions starting `0.`, and North American barcodes, each of which some region's plan
    calls a valid phone number. Not a bare EAN-13 starting 00 (0012345678905): it was as well a
    number dialled abroad (+1 234-567-8905), a phone for the scrubber then (l6_trap has them)."""
    r, digits = rng.randint, lambda n: "".join(rng.choice(string.digits) for _ in range(n))
    choices: dict[str, Callable[[], str]] = {
        "EP patent": lambda: f"EP 0 {r(0, 999):03d} {r(0, 999):03d}{rng.choice(['', ' A1', ' A2', ' B1'])}",
        "DE patent": lambda: f"DE 10 {r(1990, 2030)} {r(0, 999):03d} {r(0, 999):03d} A1",
        "version 0.x": lambda: (
            f"{rng.choice(['version', 'Release', 'foo', 'nightly'])} 0.{r(0, 30)}.{r(10**6, 10**8)}"
        ),
        "version 0.date": lambda: (
            f"{rng.choice(['version', 'Release'])} 0.{r(2000, 2030)}.{r(1, 12):02d}.{r(1, 28):02d}"
        ),
        "Debian package": lambda: (
            f"lib{rng.choice(['foo', 'xml2', 'ssl'])}_0.{r(1, 9)}.{r(10**6, 10**7)}-1_amd64.deb"
        ),
        "UPC-A": lambda: _gs1("0" + digits(10)),
        "EAN-13": lambda: _gs1(f"0{r(1, 9)}" + digits(10)),
        # 00 and a valid number after it is also one dialled abroad: a barcode after its name
        "EAN-13 00 named": lambda: (
            f"{rng.choice(['EAN', 'GTIN', 'UPC', 'Barcode'])} {_gs1('00' + digits(10))}"
        ),
    }
    fmt = rng.choice(list(choices))
    return choices[fmt](), fmt


# Words holding a phone word that do not start with it (`tel` in `intelligent`, `cell` in `excellent`,
# `phone` in `headphone`, `text` in `context`), and what such a count may be of.
HOLDING_PHONE_WORDS = ["intelligent", "excellent", "Hotel", "satellite", "stellar", "cancelled",
                       "headphone", "context", "breach"]  # fmt: skip
COUNTED = ["views", "votes", "visitors", "downloads", "readers", "euros"]


def l6_trap(rng: random.Random) -> tuple[str, str]:
    """Traps added on 2026-12-08 (L6): a count grouped in thousands after a word that holds a phone
    word but does not start with it (a Spanish mobile's digits: `excellent 612 345 678 views`), and
    bare GS1 barcodes starting 0 of 13 and 14 digits (an EAN-13 starting 00, as a UPC-A is written
    in 13 digits, whose reading as a number dialled abroad is no valid one, and a GTIN-14), which
    some region's plan calls a valid number."""
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731

    def count() -> str:
        while True:  # a valid Spanish mobile, grouped as thousands
            n = "6" + digits(8)
            if phonenumbers.is_valid_number(phonenumbers.parse(n, "ES")):
                return f"{rng.choice(HOLDING_PHONE_WORDS)} {n[:3]} {n[3:6]} {n[6:]} {rng.choice(COUNTED)}"

    def bare_ean() -> str:
        while True:  # one that is no valid number dialled abroad (else it is a phone too)
            code = _gs1("00" + digits(10))
            try:
                if not phonenumbers.is_valid_number(phonenumbers.parse("+" + code[2:])):
                    return code
            except phonenumbers.NumberParseException:
                return code

    choices: dict[str, Callable[[], str]] = {
        "count after a word holding a phone word": count,
        "EAN-13 00 bare": bare_ean,
        "GTIN-14": lambda: _gs1("0" + rng.choice("123456789") + digits(11)),  # 00...: bare_ean's case
    }
    fmt = rng.choice(list(choices))
    return choices[fmt](), fmt


def ssn_shaped_phone(rng: random.Random) -> Item:
    """A number whose international format holds a valid SSN's shape, `ddd dd dddd` (Tajikistan's
    `+992 372 12 3456`, Norfolk Island's `+672 10 6122`, Tuvalu's `+688 90 3290`): a phone."""
    while True:
        region = rng.choice(["TJ", "NF", "TV"])
        text = phonenumbers.format_number(_random_phone(rng, region), Fmt.INTERNATIONAL)
        shape = re.search(r"(?<!\d)(\d{3}) (\d{2}) (\d{4})$", text)
        if shape and stdnum_ssn.is_valid("".join(shape.groups())):
            return text, "international, SSN-shaped", region, {}


TRAP_GENERATORS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "trap": trap,
    "later trap": later_trap,
    "l6 trap": l6_trap,
}
# Planted items of another generator than their kind's: (kind, generator)
OTHER_ITEMS: dict[str, tuple[str, Callable[[random.Random], Item]]] = {
    "ssn-shaped phone": ("phone", ssn_shaped_phone),
}


# -- assembly ------------------------------------------------------------------------------------

SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


def _passages(rng: random.Random) -> list[tuple[str, str]]:
    """Real passages of 80-600 characters (a paragraph, or consecutive lines of a longer one: verses,
    help lines, reviews), the sources taken in turn (each shuffled with the seed), so that every
    source, English and French, carries as many items."""
    by_source: dict[str, list[tuple[str, str]]] = {}
    for source, text in clean_documents():
        for para in re.split(r"\n\s*\n", text):
            chunk = ""
            for line in para.strip().split("\n"):
                if chunk and len(chunk) + len(line) > 500:
                    if len(chunk) >= 80:
                        by_source.setdefault(source, []).append((source, chunk))
                    chunk = ""
                chunk = f"{chunk}\n{line}" if chunk else line
            if 80 <= len(chunk) <= 600:
                by_source.setdefault(source, []).append((source, chunk))
    for passages in by_source.values():
        rng.shuffle(passages)
    return [p for group in zip(*by_source.values(), strict=False) for p in group]


def _plant(rng: random.Random, passage: str, pieces: list[tuple[str, str, str, dict]]) -> tuple[str, list]:
    """Insert `(context template, item, kind, label)` pieces at sentence and line ends of `passage`
    (after the full stop, before the space or newline); returns the text and each item's label
    with its start and end."""
    cuts = sorted({m.start() for m in SENTENCE_END.finditer(passage)} - {0} | {len(passage)})
    # Different sentence ends where there are enough: two numbers with only a space between are
    # one number as often as two.
    at = sorted(
        rng.sample(cuts, len(pieces)) if len(cuts) >= len(pieces) else rng.choices(cuts, k=len(pieces))
    )
    text, items, last = "", [], 0
    for cut, (template, item, kind, label) in zip(at, pieces, strict=True):
        before, after = label.pop("before", ""), label.pop("after", "")
        head, tail = template.split("{}")
        text += passage[last:cut] + (";" if items and cut == last else "")  # two at one place
        text += ("" if not text or text[-1].isspace() else " ") + head + before
        items.append({"start": len(text), "end": len(text) + len(item), "kind": kind, **label})
        text += item + after + tail + ("" if cut == len(passage) or passage[cut].isspace() else " ")
        last = cut
    return text + passage[last:], items


def build() -> list[dict]:
    rng = random.Random(SEED)
    passages = _passages(rng)
    records, p = [], 0
    todo_pii = [kind for kind in GENERATORS for _ in range(PER_KIND)]
    rng.shuffle(todo_pii)
    todo_trap = ["trap"] * TRAPS
    todo_later = [kind for kind in LATER_KINDS for _ in range(PER_KIND)]
    todo_later_trap = ["later trap"] * LATER_TRAPS
    # each later part with its own seed (an offset of SEED): the documents before stay as they were
    for name, todo, seed in (
        ("pii", todo_pii, None),
        ("trap", todo_trap, None),
        ("pii", todo_later, 1),
        ("trap", todo_later_trap, 2),
        ("pii", ["ssn-shaped phone"] * SSN_SHAPED_PHONES, 3),
        ("trap", ["l6 trap"] * L6_TRAPS, 4),
    ):
        later = seed is not None
        if later:
            rng = random.Random(SEED + seed)
        while todo:
            n = rng.randint(1, 3)
            kinds, todo = todo[:n], todo[n:]
            pieces = []
            for kind in kinds:
                if kind in TRAP_GENERATORS:
                    value, fmt = TRAP_GENERATORS[kind](rng)
                    pieces.append(("{}", value, "trap", {"format": fmt}))
                elif kind in OTHER_ITEMS:
                    kind, make = OTHER_ITEMS[kind]
                    value, fmt, locale, extra = make(rng)
                    label = {"format": fmt, "locale": locale, **extra}
                    pieces.append((rng.choice(CONTEXT[kind]), value, kind, label))
                else:
                    value, fmt, locale, extra = (GENERATORS | LATER_KINDS)[kind](rng)
                    label = {"format": fmt, "locale": locale, **extra}
                    pieces.append((rng.choice(CONTEXT[kind]), value, kind, label))
            source, passage = passages[p % len(passages)]
            p += 1
            while later and "@" in passage:  # an address of the help's own ("mon.nom@...") is no item
                source, passage = passages[p % len(passages)]
                p += 1
            text, items = _plant(rng, passage, pieces)
            records.append(
                {
                    "id": f"{name}-{len(records):05d}",
                    "set": name,
                    "source": source,
                    "text": text,
                    "items": items,
                }
            )
    return records


def main(out: Path) -> None:
    records = build()
    counts: dict[str, int] = {}
    for r in records:
        for item in r["items"]:
            counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    print(f"{len(records)} documents, items {counts}")
    fetch.write_xz(out / OUT.name, fetch.pack(records, sort_keys=True))


if __name__ == "__main__":
    fetch.run(main, __doc__)
