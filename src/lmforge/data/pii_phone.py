"""Phone numbers for the PII stage (data/pii.py): where libphonenumber's matcher is run, and the
rules for what it finds valid but prose and tables use for other numbers. The matcher is slow (a
parse per region and possible number), so it runs only on windows that could hold a number the
rules keep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers
from stdnum import ean as stdnum_ean

Span = tuple[int, int, str]  # (start, end, kind), end exclusive

# At least 6 digits with phone punctuation between them: where the phone matcher is run. Not across
# a tab or two spaces, a table's columns (`12345  67890` is two cells), but after a country code, an
# area code in parentheses, or a group that single-spaced groups follow, where PDF and OCR text has
# them (`+1  201-555-2914`, `(201)  555-2914`, `0121  234 5678`).
PHONE_CANDIDATE = re.compile(
    r"\d(?:(?: (?! )|(?<=[)）])  |(?<=\+\d)  |(?<=\+\d\d)  |(?<=\+\d\d\d)  |(?<=\d)  (?=\d{1,4} \d)"
    r"|[().\-/（）－‐‑]){0,3}\d){5,}"
)  # full-width punctuation too
PHONE_CONTEXT = 12  # characters either side of a candidate given to the matcher ("+", "tel:", "(")
COLUMN_BREAK = re.compile(r"\t| {2,}")
PHONE_LEAD = re.compile(r"[+＋(（\[［]")  # what the matcher lets a number start with besides a digit
# libphonenumber's own bound on one number's digits (17 national, 3 of a country code): a longer
# run of digits (a hash, an id, a constant) is no phone, nor holds one.
LONGEST_DIGIT_RUN = 20
# ITU-T E.164: a number has at most 15 digits with its country code. libphonenumber's plans accept
# longer ones in some regions (a German fixed line of 14 national digits: `030824628194821`,
# +49 30 824628194821), which made 70% of 15-digit ids that start with a 0 `<PHONE>`s.
E164_MAX_DIGITS = 15
# What the matcher accepts as a valid number in some region but is not one: dates (05.12.2021,
# 1885-06-08), year ranges (1641-1665), dotted quads (255.255.255.0, 192.168.0.0/16), the SSN layout
# (666-12-3456: one the SSA never issues), dashed ISBNs (0-306-40615-2: a last group of one
# digit), decimals (0.7768698399).
NOT_PHONE = re.compile(
    r"\d{1,2}([./-])\d{1,2}\1\d{2,4}|\d{4,}-\d{2}-\d{2}|1[0-9]\d\d-(?:1[0-9]|20)\d\d|\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?"
    r"|\d{3}-\d{2}-\d{4}|[\d-]*\d-[\dX]|\(?\d+[.,]\d+"
)
# Thousands (2 147 483 647, 726.124.770) and a year's serial number (invoice 2024-000123): a phone
# number only after a phone word, as Spanish and Polish mobiles are written ("Llame al 612 345 678").
# No count starts with a 0: `030 123 456` is a trunk prefix and a Berlin number.
THOUSANDS = re.compile(r"[1-9]\d{0,2}([ .,])\d{3}(?:\1\d{3})*|(?:1[89]|20)\d\d-\d{5,}")
ISBN_BEFORE = re.compile(r"(?:ISBN(?:-1[03])?|e?ISSN):?\s?\Z")  # and serials' ISSN 0317-8471
# A US ZIP+4 code after a state's abbreviation ("Springfield, IL 62704-1234") is not a phone number.
ZIP_BEFORE = re.compile(r"(?:\b[A-Z]{2}|\b(?i:zip(?: code)?):?),? \Z")
# A patent's number (EP 0 123 456 B1, EP 0 845 123): after the EPO's or WIPO's prefix, or after
# any office's two letters when a kind code follows (DE ... A1); a US state's two letters alone
# stay a place (`Wilmington, DE 302-555-0134`), and US numbers start with no 0.
PATENT_BEFORE = re.compile(r"\b(?:EP|WO)\s?\Z")
OFFICE_BEFORE = re.compile(r"\b[A-Z]{2}\s?\Z")
KIND_CODE_AFTER = re.compile(r"\s?[A-Z][1-9]\b")
# A version whose first part is 0 (0.10.20240115, 0.2024.01.15, libfoo_0.9.1234567-1): no phone is
# written with a lone 0 before a dot (dotted phones start `01.`, `02.`; `1.800.555.0134` is no 0).
ZERO_VERSION = re.compile(r"0(?:\.\d+){2,}(?:-\d+)?")
# A UPC-A, EAN-13 or GTIN-14 barcode starting with 0 (036000291452, 0012345678905, 06241136469123):
# 12-14 digits, no separator, whose GS1 check digit holds; a phone is kept where a phone word, a
# "+" or a "(" is before it. Those starting 00 are also a number dialled abroad (0016175550134 is
# +1 617-555-0134): bare, a barcode only where that reading is no valid number (barcode()). Not
# other prefixes: 12-14 digits starting 1-9 are as often a number with its country code and no
# "+" (447911123456, 4917612345678), one in 10 GS1-valid.
BARCODE = re.compile(r"0\d{11,13}")
# A barcode's name right before it wins over a phone word further back (`Phone case, EAN 00...`).
BARCODE_BEFORE = re.compile(
    r"(?i)\b(?:upc(?:-a)?|ean(?:-13)?|gtin(?:-1[234])?|bar ?code|code-barres)\W{0,3}\Z"
)
# Part of a longer number or name: after "12.", "-" or "/", before ".5", ",00" or ".xhp"
# (decimals, negatives, prices, file names).
IN_NUMBER_BEFORE = re.compile(r"(?:\d[ .,:]|[-/\u2212])\Z")
IN_NUMBER_AFTER = re.compile(r"[.,]?\d|\.[^\W\d]")
# A number of fewer than 9 digits with no "+", "0" or "(" in front (April 13 1999, order no.
# 20860147) is a phone number only after a word that says so. It starts a word: `tel` in
# `intelligent` or `Hotel`, `cell` in `excellent` is none; compounds ending in one are listed.
PHONE_WORDS = (
    r"phone|tel|call|fax|mobile|cell|contact|reach|text|sms|whatsapp|t[ée]l[ée]phone"
    r"|appel|portable|tel[ée]fono|ll[aá]m|tfno|tlf|m[óo]vil|celular|telefon|anruf|ruf|handy|cellulare|chiam"
    r"|zadzwo|kom[óo]rk|kontakt|smartphone|iphone|mobiltelefon|festnetz|diensthandy|firmenhandy"
    r"|rappel|freephone|payphone"
)
# German and Romance compounds that end in a phone word (Firmentelefon, Geschäftstelefon, Notruf,
# Rückruf, Diensthandy): a cue too (not `phone` alone: headphone, microphone)
PHONE_WORD_ENDS = r"\w+(?:telefon|t[ée]l[ée]fono|ruf|handy|nummer)\w{0,2}\b"
# English words that start with a phone word and are none: `I tell ye! 0983...` is no cue
NOT_PHONE_WORD = r"(?!tell|televis|telesc|cellar|cello|ruff|textil|textur|callous)"
# A business card's or a signature's letter: `T: 0176...`, `M: 612 345 678`, `Ph: ...` (capitals),
# at a line's or a field's start, not after a word and a space (`Amount M: 612 345 678`, R6)
PHONE_LETTER = r"(?<!\w )(?-i:\b(?:T|M|F|Ph)\.? ?:)"
PHONE_CUE = re.compile(
    rf"(?i)(?:\b(?:{NOT_PHONE_WORD}(?:{PHONE_WORDS})\w*|{PHONE_WORD_ENDS})(?:\W{{1,3}}\w{{1,5}}){{0,2}}"
    rf"|{PHONE_LETTER})\W{{0,6}}\Z"
)
# one anywhere near: the matcher runs
PHONE_CUE_WORD = re.compile(rf"(?i)\b(?:{PHONE_WORDS}|{PHONE_WORD_ENDS})|{PHONE_LETTER}")
# An unmarked number (no "+", "0" or "(") after a word that names another kind of number is not a
# phone number (ID 4155550134, order #4155550134), nor a field's value (a log's `rx=397236329`,
# a query's `?n=4155550134`), unless a phone word comes first or the field is a telephony one
# (an SMS gateway's `msisdn=`, a call log's `from=`/`to=`, `ani=`, `dnis=`).
TELEPHONY_KEYS = {"msisdn", "ani", "cli", "dnis", "from", "to", "sender", "recipient", "caller", "callee",
                  "dest", "destination", "src", "source", "number", "num", "contact"}  # fmt: skip
FIELD_BEFORE = re.compile(r"([\w-]+)=\W{0,3}\Z")
OTHER_NUMBER_BEFORE = re.compile(
    r"(?i)(?:\b(?:id|invoice|order|ref|reference|serial|ticket|tracking|policy|receipt|transaction|isin"
    r"|ean|upc|sku)|#)\W{0,3}\Z"
)


def other_number(text: str, start: int) -> bool:
    """Whether the number at `start` follows a word naming another kind of number, or is a field's
    value whose key is no telephony one (OTHER_NUMBER_BEFORE, FIELD_BEFORE, TELEPHONY_KEYS)."""
    if OTHER_NUMBER_BEFORE.search(text, max(0, start - 16), start):
        return True
    field = FIELD_BEFORE.search(text, max(0, start - 16), start)
    return field is not None and field.group(1).lower() not in TELEPHONY_KEYS


def barcode(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a GS1-valid UPC-A, EAN-13 or GTIN-14 (BARCODE) named as one right
    before it (BARCODE_BEFORE), or with no phone word (PHONE_CUE: from a word's start, so a review's
    `intelligent. 065228365867` stays a barcode) and no `+` or `(` right before it."""
    number = text[start:end]
    if not BARCODE.fullmatch(number) or not stdnum_ean.is_valid(number):
        return False
    if BARCODE_BEFORE.search(text, max(0, start - 12), start):
        return True
    if PHONE_CUE.search(text, max(0, start - 24), start) or PHONE_LEAD.search(text, max(0, start - 2), start):
        return False
    if number.startswith("00"):  # the international prefix: a valid number dialled abroad is one
        try:  # (recall first: 0016175550134 is +1 617-555-0134 as much as a UPC-A written in 13 digits)
            return not phonenumbers.is_valid_number(phonenumbers.parse("+" + number[2:]))
        except phonenumbers.NumberParseException:
            return True
    return True


def patent(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a patent's number (PATENT_BEFORE, OFFICE_BEFORE, KIND_CODE_AFTER)."""
    if PATENT_BEFORE.search(text, max(0, start - 4), start):
        return True
    return bool(OFFICE_BEFORE.search(text, max(0, start - 4), start)) and bool(
        KIND_CODE_AFTER.match(text, end, end + 4)
    )


def e164_digits(number: phonenumbers.PhoneNumber) -> int:
    """The digits of a number in E.164 form: country code, then the national number."""
    leading = "0" * (number.number_of_leading_zeros or 0) if number.italian_leading_zero else ""
    return len(str(number.country_code)) + len(leading + str(number.national_number))


def in_number(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is part of a longer number or name (IN_NUMBER_BEFORE, _AFTER)."""
    return bool(IN_NUMBER_BEFORE.search(text, max(0, start - 2), start)) or bool(
        IN_NUMBER_AFTER.match(text, end, end + 2)
    )


def phone_ok(text: str, start: int, end: int) -> bool:
    """Rules for what the matcher finds valid but prose uses for other numbers."""
    number = text[start:end]
    cue = bool(PHONE_CUE.search(text, max(0, start - 24), start))
    if NOT_PHONE.fullmatch(number) or in_number(text, start + (number[0] == "+"), end):
        return False  # ("+" starts a new number even right after another)
    if THOUSANDS.fullmatch(number) and not cue:
        return False
    if not cue and number[0] not in "+(" and (ZERO_VERSION.fullmatch(number) or patent(text, start, end)):
        return False
    if barcode(text, start, end):
        return False
    marked = number[0] in "+(0"  # an international, trunk or area-code prefix says "phone"
    if not cue and not marked and other_number(text, start):
        return False
    groups = re.findall(r"\d+", number)  # digits spaced out one by one: a count, lottery numbers
    if len(groups) >= 5 and sum(len(g) == 1 for g in groups) * 2 > len(groups):
        return False
    if number.startswith("(") and ")" not in number:  # "(-32768 - 32767)", "(0-65535)"
        return False
    if set(number) <= set("01"):  # a binary number
        return False
    if ISBN_BEFORE.search(text, max(0, start - 10), start):
        return False
    if re.fullmatch(r"\d{5}-\d{4}", number) and ZIP_BEFORE.search(text, max(0, start - 12), start):
        return False
    digits = sum(c.isdigit() for c in number)
    return marked or digits >= 9 or cue


def phone_window_end(text: str, lo: int, hi: int) -> int:
    """Where the matcher's window on text[lo:hi] may end: `lo` when it could find no number that
    `_phone_ok` keeps, else past the last start of one that it could (with a phone word near, all
    of it). A kept number starts at a "+" or "(", or at a run of digits that is no part of a longer
    number (not after `12 `, `12.`, `-`: `_in_number`), and has a "+", "(" or "0" in front or 9
    digits. A table's cells and a log's fields mostly have none, and then cost no parse (each
    costs one per region: 0.01 MB/s on tables); a line of numbers spaced one by one has one start,
    at its head (it was parsed whole, 12 times)."""
    if PHONE_CUE_WORD.search(text, max(0, lo - 24), hi):
        return hi
    # runs of digits, each from its start (the window may open inside one)
    runs = [
        (lo + m.start(), len(m.group()), m.group()[0] == "0")
        for m in re.finditer(r"\d+", text[lo:hi])
        if len(m.group()) <= LONGEST_DIGIT_RUN
        and not (lo + m.start() > 0 and text[lo + m.start() - 1].isdigit())
    ]
    digits_after = sum(n for _, n, _ in runs)
    last = None
    for start, n, zero in runs:
        lead = PHONE_LEAD.search(text, max(lo, start - 4), start)  # "+33", "(0)", "+ (0"
        kept = lead or not IN_NUMBER_BEFORE.search(text, max(0, start - 2), start)
        if not (lead or zero) and other_number(text, start):
            kept = False  # an id's or a field's value: phone_ok refuses it without a phone word
        if kept and (lead or zero or digits_after >= 9):
            last = start
        digits_after -= n
    if last is None:
        return lo
    # past the last start, as many digits as two numbers hold: a longer candidate is too long to
    # parse either way, and the rest of a long line is never parsed
    count = 0
    for start, n, _ in runs:
        if start >= last:
            count += n
            if count > 2 * LONGEST_DIGIT_RUN:
                return start + n
    return hi


def find_phones(text: str, taken: list[Span], regions: list[str]) -> Iterator[tuple[int, int]]:
    """The matcher is slow (a parse per region and possible number): it runs only on windows
    around digit runs that no other kind has taken, no rule rejects outright and
    `phone_window_end` finds a possible start in, and stops at the first region that finds a
    number covering the whole run."""
    for c in PHONE_CANDIDATE.finditer(text):
        plus = c.start() > 0 and text[c.start() - 1] == "+"  # +48 512 385 786 is no thousands
        thousands = THOUSANDS.fullmatch(c.group()) and not PHONE_CUE.search(
            text, max(0, c.start() - 24), c.start()
        )
        if ((NOT_PHONE.fullmatch(c.group()) or thousands) and not plus) or any(
            c.start() < e and s < c.end() for s, e, _ in taken
        ):
            continue
        # a number does not cross a line or a table's column break: the window stays in the
        # candidate's cell (a table's rows would each be parsed three times, with the rows
        # above and below)
        line_start = text.rfind("\n", 0, c.start()) + 1
        cell_start = max(
            (m.end() for m in COLUMN_BREAK.finditer(text, max(line_start, c.start() - 16), c.start())),
            default=0,
        )
        lo = max(0, c.start() - PHONE_CONTEXT, line_start, cell_start)
        line_end = text.find("\n", c.end())
        hi = min(len(text), c.end() + PHONE_CONTEXT, len(text) if line_end < 0 else line_end)
        cell_end = COLUMN_BREAK.search(text, c.end(), hi)
        hi = cell_end.start() if cell_end else hi
        hi = phone_window_end(text, lo, hi)
        if hi == lo:
            continue
        window = text[lo:hi]
        spans: list[tuple[int, int]] = []
        for region in regions:
            for m in phonenumbers.PhoneNumberMatcher(window, region, phonenumbers.Leniency.VALID):
                if e164_digits(m.number) <= E164_MAX_DIGITS:
                    spans.append((lo + m.start, lo + m.end))
            if any(s <= c.start() and c.end() <= e for s, e in spans):
                break
        for start, end in union(spans):
            if not (start < c.end() and c.start() < end) or not phone_ok(text, start, end):
                continue
            if text[max(0, start - 4) : start].lower() == "tel:":  # the whole URI goes
                start -= 4
            yield start, end


def union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans (one number matched for several regions) merged into one."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
