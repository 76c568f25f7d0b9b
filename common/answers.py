"""The final answer of a reasoning path, one extractor per task family.

- ``embedded``: the embedded corpus's models write ``... #### N`` and nothing else counts (the
  first ``#### N``, an integer), exactly the rule the embedded scenario was measured with.
- ``gsm8k``: pretrained models answer in many styles. In order of trust: the last
  ``#### N``, the last ``\\boxed{N}``, the last "the (final) answer is N", else the last number
  in the text. Numbers are read the way people write them: ``$1,234.50``, ``18 dollars``,
  ``-3``, ``7.0``, ``1/4``; two answers are equal when their values are (``18.00`` is ``18``).

A sample's family follows from its id: samples loaded from GSM8K-format data have ids that
start with ``gsm8k`` (``data.gsm8k_sample``); every other sample is the embedded corpus's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from .data import extract_answer as extract_embedded

GSM8K = "gsm8k"
EMBEDDED = "embedded"

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+(?![\d,]))?|-?\$?\s?\.\d+"
HASHES_RE = re.compile(rf"####\s*[^\d\-$.]{{0,20}}?({_NUM})")
BOXED_RE = re.compile(r"\\boxed\s*\{([^{}]*)\}")
ANSWER_IS_RE = re.compile(rf"answer\s*(?:is|=|:)\s*[:=]?\s*[^\d\-$.\n]{{0,30}}?({_NUM})", re.IGNORECASE)
NUMBER_RE = re.compile(rf"(?<![\w.])({_NUM})")


def normalize_number(text: str) -> str | None:
    """``'$1,234.50'`` -> ``'1234.5'``, ``'18.00'`` -> ``'18'``, ``'-3'`` -> ``'-3'``, ``'1/4'`` -> ``'0.25'``;
    None if no number."""
    m = re.search(_NUM, text)
    if not m:
        return None
    raw = m.group(0).replace("$", "").replace(",", "").replace(" ", "")
    num, _, den = raw.partition("/")
    try:
        value = Decimal(num) / Decimal(den) if den else Decimal(num)
    except (InvalidOperation, ZeroDivisionError):
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_gsm8k(text: str) -> str | None:
    for rx in (HASHES_RE, BOXED_RE, ANSWER_IS_RE):
        found = rx.findall(text)
        for cand in reversed(found):  # the last one the model wrote is its final word
            got = normalize_number(cand)
            if got is not None:
                return got
    nums = NUMBER_RE.findall(text)
    return normalize_number(nums[-1]) if nums else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {EMBEDDED: extract_embedded, GSM8K: extract_gsm8k}


def family_of(sample_id: str) -> str:
    """The task family of a sample, from its id (see the module docstring)."""
    return GSM8K if sample_id.startswith(GSM8K) else EMBEDDED


def extract(text: str, family: str = EMBEDDED) -> str | None:
    if family not in EXTRACTORS:
        raise ValueError(f"unknown answer family {family!r}; known: {sorted(EXTRACTORS)}")
    return EXTRACTORS[family](text)


def is_correct(text: str, answer: str, family: str = EMBEDDED) -> bool:
    """Does the path's final answer equal the label? Embedded: the same digits; GSM8K: the same value."""
    got = extract(text, family)
    if got is None:
        return False
    if family == EMBEDDED:
        return got == str(answer).strip()
    return got == normalize_number(str(answer))
