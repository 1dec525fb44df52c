"""PII scrubbing: the user name and password of a URL, e-mail addresses (percent-escaped ones
too), phone numbers, IP addresses, payment card numbers, phones' IMEIs, IBANs and US social
security numbers are replaced by placeholders (`<LOGIN>`, `<EMAIL>`, `<PHONE>`, `<IP>`, `<CARD>`,
`<IMEI>`, `<IBAN>`, `<SSN>`).

Each kind is found by a cheap candidate pattern and confirmed by a check that random numbers
rarely pass: phone numbers by `phonenumbers` (Google's libphonenumber: the number must be valid
for its region, national formats tried for each of `regions`, international ones for any
country), cards by the Luhn checksum and an issuer prefix, IBANs by ISO 7064 mod-97 and the
country's layout, SSNs by the SSA's rules (both from `python-stdnum`), IPs by `ipaddress`, IMEIs by
their check digit (`python-stdnum`) and a reporting body's prefix or the word IMEI before them
(compact ones after a word for the device).
Where spans of two kinds overlap, the kind earlier in KINDS wins (a card number also passes as a
phone number). Recall and precision are measured by benchmarks/bench_pii.py on
data/pii-eval.jsonl.xz (docs/data.md). Phone numbers' rules: pii_phone.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import imei as stdnum_imei
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

from lmforge.data.pii_email import find_emails, scp_logins
from lmforge.data.pii_phone import Span, find_phones, in_number
from lmforge.data.report import StageStats
from lmforge.errors import LmforgeError

# Also the priority order on overlaps.
KINDS = ("login", "email", "iban", "imei", "card", "ssn", "ip", "phone")
PLACEHOLDER = {kind: f"<{kind.upper()}>" for kind in KINDS}
IP_POLICIES = ("all", "public")
DEFAULT_REGIONS = "US,GB,FR,DE,ES,IT,NL,BE,CH,IN,AU,BR"


# The userinfo of a URL (RFC 3986): `user:password` in `postgres://user:password@host/db`, or
# a user alone. Before `email`, which would take `password@host` and leave the user name.
LOGIN = re.compile(r"(?<=://)(?=[^\s/?#@]+@)[\w.~%!$&'()*+,;=-]*(?::[^\s/?#@]*)?(?=@)")
IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w]|\.\d)")
# Hex groups and colons (at least two), maybe a dotted IPv4 tail and a zone; ipaddress decides.
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[\w.]+)?(?![\w:]|\.\w)"
)
# A prefix length or netmask after an address: `10.0.0.0/8`, `2001:db8::/32`, `10.0.0.0/255.0.0.0`.
PREFIX_AFTER = re.compile(r"/(\d{1,3}(?:\.\d{1,3}){3}|\d{1,3})(?!\d|\.\d)")
# A version or section number is not an address: "version 10.2.3.4", "build 7.0.0.1", "Chapter 12.3.4.5".
NUMBERED_BEFORE = re.compile(
    r"(?:\b(?:version|release|build|firmware|ver\.?|rev\.?|v|chapter|section|sec\.|figure|fig\.|table|clause"
    r"|article|art\.|paragraph|para\.|appendix|part|step|rule)|§)\s?\Z",
    re.IGNORECASE,
)
# 13-19 digits, in groups separated by one space, dash or dot (checked by _card_ok).
CARD = re.compile(r"(?<![\d+-])\d(?:[ .-]?\d){12,18}(?![\d]|[.-]\d)")  # "+": a phone number
# Issuer prefixes (Visa, Mastercard, Amex, Diners, JCB, Discover, UnionPay, Maestro): an ISBN-13
# (978...) or another long Luhn-valid number is not a card.
CARD_PREFIX = re.compile(r"4|5[0-8]|222[1-9]|22[3-9]\d|2[3-6]|27[01]|2720|3[04-9]|6")
CARD_GROUPS = {(4, 6, 5), (4, 6, 4), (4, 4, 5)}  # and fours: 4-4-4-4, 4-4-4-4-3, ...
# An IMEI (3GPP TS 23.003): 15 digits, compact or as `AA-BBBBBB-CCCCCC-D` or `TAC SNR D`, the
# last a Luhn check digit. A card of 15 digits is an Amex (34, 37); an IMEI starts with its type
# approval code's reporting body (GSMA TS.06: 01 US, 35 UK, 86 China, 99 multi-RAT...).
# A digit first, then the look behind it: sre then skips to digits (10x faster on prose).
IMEI = re.compile(r"\d(?<![\d+-]\d)(?:\d{14}|\d([ -])\d{6}\1\d{6}\1\d|\d{7}([ -])\d{6}\2\d)(?!\d|[.-]\d)")
IMEI_PREFIX = re.compile(r"01|10|3[035]|4[459]|5[0-4]|86|91|9[89]")
# "IMEI 35...", "IMEI number: ...", "IMEI/SN ...", a dual-SIM phone's "IMEI1: ..." / "IMEI 2: ..."
IMEI_BEFORE = re.compile(r"(?i)\bimei(?:sv)?(?: ?[12]\b)?[^\d\n]{0,32}\Z")
# 15 compact digits are an IMEI only after a word for the device (one in 10 Luhn-valid numbers of
# a table's ids has a reporting body's prefix: a tenth of those went); written `AA-BBBBBB-CCCCCC-D`
# or `TAC SNR D`, IMEI's own layouts, a reporting body's prefix is enough.
DEVICE_BEFORE = re.compile(
    r"(?i)\b(?:device|handset|(?:smart|i)?phone|mobile|cell(?:phone)?|serial|tablet|tracker|t[ée]l[ée]phone"
    r"|portable|appareil|num[ée]ro de s[ée]rie|ger[äa]t|handy\w*|mobiltelefon|seriennummer|tel[ée]fono"
    r"|m[óo]vil|celular|cellulare|n[úu]mero de serie)(?:'s|s)?\b[^\d\n]{0,16}\Z"
)
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,8}(?:[ -]?[A-Z0-9]{1,3})?\b")
SSN = re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d]|-\d)")
# A phone's tail: after a "+" and maybe its country code (`+992 372 12 3456`, `+672 10 6122`, a
# number of Tajikistan and of Norfolk Island), or, spaced, after 00 and a country code (`00992 372
# 12 3456`). Not after other digits: `John Smith 42 536 90 4399` is an SSN after a number.
SSN_NOT_AFTER = re.compile(r"[+＋](?:\d{1,3} )?\Z")
SPACED_AFTER_DIGITS = re.compile(r"(?<!\d)00\d{1,3} \Z")


def _imei_ok(text: str, start: int, end: int) -> bool:
    """A 15-digit Luhn-valid number that the text calls an IMEI, or that starts as an IMEI does
    (a reporting body's code; no 15-digit card does) and is either in IMEI's own layout or after
    a word for the device (`phone 490154203237518`; a bare one in a table of ids is left)."""
    digits = re.sub(r"\D", "", text[start:end])
    if len(digits) != 15 or not stdnum_imei.is_valid(digits):  # 15 digits: the Luhn check digit
        return False
    if IMEI_BEFORE.search(text, max(0, start - 48), start):
        return True
    if not IMEI_PREFIX.match(digits):
        return False
    compact = end - start == 15  # else grouped as IMEIs are: the pattern takes no other layout
    return not compact or bool(DEVICE_BEFORE.search(text, max(0, start - 32), start))


def _card_length_ok(digits: str) -> bool:
    """The lengths the networks issue: Visa 13, 16 or 19 digits, Mastercard 16, Amex 15, JCB 16-19;
    Diners, Discover, Maestro and UnionPay anything from 12 to 19. A Luhn-valid 15-digit number
    starting 4 or 35 is no card (it is often an IMEI), and one of a table's ids no more than any."""
    if digits.startswith("4"):
        return len(digits) in (13, 16, 19)
    if re.match(r"5[1-5]|2[2-7]", digits):
        return len(digits) == 16
    if re.match(r"3[47]", digits):
        return len(digits) == 15
    if digits.startswith("35"):
        return len(digits) >= 16
    return True


def _card_ok(text: str) -> bool:
    seps = {c for c in text if not c.isdigit()}
    digits = re.sub(r"\D", "", text)
    if len(seps) > 1 or not CARD_PREFIX.match(digits) or not _card_length_ok(digits):
        return False
    # Grouped, a card is printed in fours (the last group shorter), or as Amex, Diners and 13-digit
    # Visa are (4-6-5, 4-6-4, 4-4-5); a row of a numeric table (2240 6720 15680 24640) is not.
    groups = tuple(len(g) for g in re.split(r"[ .-]", text)) if seps else ()
    fours = set(groups[:-1]) == {4} and 1 <= groups[-1] <= 4 if groups else True
    if not fours and groups not in CARD_GROUPS:
        return False
    return luhn.is_valid(digits)


class PII:
    name = "pii"

    def __init__(
        self, kinds: str = ",".join(KINDS), ip_policy: str = "all", regions: str = DEFAULT_REGIONS
    ) -> None:
        self.kinds = [k.strip() for k in kinds.split(",") if k.strip()]
        if not self.kinds:  # the stage would run and scrub nothing
            raise LmforgeError(
                f"prep.pii_kinds is empty: name the kinds to scrub ({', '.join(KINDS)}),"
                " or drop the pii stage"
            )
        for kind in self.kinds:
            if kind not in KINDS:
                raise LmforgeError(f"prep.pii_kinds: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        if ip_policy not in IP_POLICIES:
            raise LmforgeError(f"prep.pii_ip={ip_policy!r} must be 'all' or 'public'")
        self.ip_policy = ip_policy
        self.regions = [r.strip().upper() for r in regions.split(",") if r.strip()]
        for region in self.regions:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise LmforgeError(f"prep.pii_phone_regions: {region!r} is not a region phonenumbers knows")
        finders: dict[str, Callable[..., Iterator[tuple[int, int]]]] = {
            "login": self._logins,
            "email": self._emails,
            "iban": self._ibans,
            "imei": self._imeis,
            "card": self._cards,
            "ssn": self._ssns,
            "ip": self._ips,
            "phone": self._phones,
        }
        self.finders = {kind: finders[kind] for kind in KINDS if kind in self.kinds}

    # -- finding --------------------------------------------------------------------------------

    def find(self, text: str) -> list[Span]:
        """The PII spans of `text`, sorted, none overlapping (the earlier kind in KINDS wins)."""
        taken: list[Span] = []
        for kind, finder in self.finders.items():
            found = finder(text, taken) if kind == "phone" else finder(text)
            for start, end in found:
                if not any(start < e and s < end for s, e, _ in taken):
                    taken.append((start, end, kind))
        return sorted(taken)

    def _logins(self, text: str) -> Iterator[tuple[int, int]]:
        if "://" in text:
            yield from (m.span() for m in LOGIN.finditer(text))
        if "@" in text:  # an scp-style remote is a URL without its scheme: `git@github.com:org/repo`
            yield from scp_logins(text)

    def _emails(self, text: str) -> Iterator[tuple[int, int]]:
        return find_emails(text)

    def _ibans(self, text: str) -> Iterator[tuple[int, int]]:
        for m in IBAN.finditer(text):
            # The pattern may run on into a following word or group: shorten until it checks out.
            value = m.group()
            while len(value) >= 15:
                # mod-97 and the country's layout; not its national account check, which a real
                # IBAN in a text need not pass (the standard's own example, BE68 5390 0754 7034)
                if stdnum_iban.is_valid(value, check_country=False):
                    yield m.start(), m.start() + len(value)
                    break
                value = value[:-1].rstrip(" -")

    def _imeis(self, text: str) -> Iterator[tuple[int, int]]:
        for m in IMEI.finditer(text):
            if _imei_ok(text, *m.span()) and not in_number(text, *m.span()):
                yield m.span()

    def _cards(self, text: str) -> Iterator[tuple[int, int]]:
        for m in CARD.finditer(text):
            # an IMEI that passes as a card is taken as an IMEI first (KINDS' order) where that kind
            # is scrubbed; where it is not, it goes as a card rather than stay
            if _card_ok(m.group()) and not in_number(text, *m.span()):
                yield m.span()

    def _ssns(self, text: str) -> Iterator[tuple[int, int]]:
        for m in SSN.finditer(text):
            before = max(0, m.start() - 7)
            if SSN_NOT_AFTER.search(text, before, m.start()) or (
                m.group(1) == " " and SPACED_AFTER_DIGITS.search(text, before, m.start())
            ):
                continue
            if stdnum_ssn.is_valid(re.sub(r"\D", "", m.group())):
                yield m.span()

    def _ips(self, text: str) -> Iterator[tuple[int, int]]:
        if "::" in text or re.search(r"[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:", text):  # first: ::ffff:1.2.3.4
            for m in IPV6.finditer(text):
                digits = any(c.isdigit() for c in m.group())
                if digits and self._ip_counts(m.group()) and not _network(text, *m.span()):
                    yield m.span()
        if "." in text:
            for m in IPV4.finditer(text):
                version = NUMBERED_BEFORE.search(text, max(0, m.start() - 10), m.start())
                if not version and self._ip_counts(m.group()) and not _network(text, *m.span()):
                    yield m.span()

    def _ip_counts(self, value: str) -> bool:
        """Whether the address is scrubbed under the policy: `public`, as datatrove, only global
        addresses; `all`, every one that can name a host (not loopback, unspecified, multicast
        or reserved, such as the netmask 255.255.255.0)."""
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:a.b.c.d is a.b.c.d
            ip = ip.ipv4_mapped
        if self.ip_policy == "public":
            return ip.is_global
        return not (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_reserved)

    def _phones(self, text: str, taken: list[Span]) -> Iterator[tuple[int, int]]:
        return find_phones(text, taken, self.regions)

    # -- the stage ------------------------------------------------------------------------------

    def scrub(self, text: str) -> tuple[str, list[Span]]:
        """`text` with every span found replaced by its kind's placeholder, and the spans."""
        spans = self.find(text)
        parts, at = [], 0
        for start, end, kind in spans:
            parts += [text[at:start], PLACEHOLDER[kind]]
            at = end
        return "".join(parts) + text[at:], spans

    def apply(self, text: str, stats: StageStats) -> str | None:
        text, spans = self.scrub(text)
        for _, _, kind in spans:
            stats.edits[kind] += 1
        return text


def _network(text: str, start: int, end: int) -> bool:
    """Whether the address is a network's, written with its prefix (`10.0.0.0/8`, `2001:db8::/32`):
    a range of hosts, none of them named. A host's address with its prefix (`10.1.2.3/24`, an
    interface's), a /32 or /128, and a point-to-point /31 or /127 each name hosts: they go."""
    prefix = PREFIX_AFTER.match(text, end)
    if not prefix:
        return False
    try:
        network = ipaddress.ip_network(f"{text[start:end]}/{prefix.group(1)}")  # strict: host bits 0
    except ValueError:
        return False
    return network.num_addresses > 2
