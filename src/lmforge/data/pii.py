"""PII scrubbing: e-mail addresses, phone numbers, IP addresses and payment card numbers are
replaced by placeholders (`<EMAIL>`, `<PHONE>`, `<IP>`, `<CARD>`).

Built on datatrove's `PIIReplacer` (regex + validator, as its `PIIFormatter` uses for e-mails
and IPs); the phone and card patterns are ours, since datatrove's formatter has none. Cards are
validated with the Luhn checksum, IPs with `ipaddress` (public addresses only, as datatrove:
127.0.0.1 or 192.168.x.x identify nobody).
"""

from __future__ import annotations

import ipaddress
import re

from datatrove.pipeline.formatters.pii import PIIReplacer

from lmforge.data.report import StageStats

EMAIL = r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"  # noqa: E501
IPV4 = r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"
IPV6 = r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"
# 13-19 digits in groups separated by single spaces or dashes.
CARD = r"\b\d(?:[ -]?\d){12,18}\b"
# International (+CC ...) or North-American / European style numbers with at least 9 digits.
PHONE = r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?!\w)"


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _public_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


def _phone(text: str) -> bool:
    return 9 <= sum(c.isdigit() for c in text) <= 15


class PII:
    name = "pii"

    def __init__(self) -> None:
        # Order matters: cards before phones (a card number also looks like a phone number).
        self.replacers = {
            "email": PIIReplacer(EMAIL, "<EMAIL>"),
            "card": PIIReplacer(CARD, "<CARD>", validator=_luhn),
            "ip": PIIReplacer(f"{IPV4}|{IPV6}", "<IP>", validator=_public_ip),
            "phone": PIIReplacer(PHONE, "<PHONE>", validator=_phone),
        }
        # Cheap tests that a pattern can match at all: the full patterns are slow on long texts.
        self.candidates = {
            "email": lambda t: "@" in t,
            "card": re.compile(r"\d(?:[ -]?\d){12}").search,
            "ip": re.compile(r"\d\.\d{1,3}\.\d|[0-9a-fA-F]:[0-9a-fA-F]{1,4}:[0-9a-fA-F]").search,
            "phone": re.compile(r"\d(?:[ .()+-]{0,2}\d){8}").search,
        }

    def apply(self, text: str, stats: StageStats) -> str | None:
        for kind, replacer in self.replacers.items():
            if not self.candidates[kind](text):
                continue
            placeholder = replacer.replacements[0]
            before = text.count(placeholder)
            text = replacer.replace(text)
            if found := text.count(placeholder) - before:
                stats.edits[kind] += found
        return text
