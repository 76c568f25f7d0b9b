"""The final answer of a reasoning path, one extractor per task family.

- ``embedded``: the embedded corpus's models write ``... #### N`` and nothing else counts (the
  first ``#### N``, an integer), exactly the rule the embedded scenario was measured with.
- ``gsm8k``: pretrained models answer in many styles. In order of trust: the last
  ``#### N``, the last ``\\boxed{N}``, the last "the (final) answer is N", else the last number
  in the text. Numbers are read the way people write them: ``$1,234.50``, ``18 dollars``,
  ``-3``, ``7.0``, ``1/4``; two answers are equal when their values are (``18.00`` is ``18``).

A sample's family follows from its id: samples loaded from GSM8K-format data have ids that
start with ``gsm8k`` (``data.gsm8k_sample``); every other sample is the embedded corpus's.

A path may be a y+ (a path a receiver is taught) only if its answer is right and, where the
family's steps are checkable (``CHECKABLE``: the embedded corpus writes every step as
``a op b = c .``), every step holds (:func:`steps_hold`): a right answer reached through a wrong
step teaches the wrong step (issue 13 measured 204 of 450 such SLM paths in a demo run).
``distill.check_steps`` turns this off for data whose steps cannot be checked. A new family
whose steps are not ``a op b = c`` must not be graded as ``embedded``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from .data import extract_answer as extract_embedded

GSM8K = "gsm8k"
EMBEDDED = "embedded"
RG = "rg:"  # reasoning-gym families: rg:NAME (common/rg_tasks.py)

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
CHECKABLE = frozenset({EMBEDDED})  # families whose every step is an ``a op b = c`` the checker can verify
STEP_RE = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)")


def parse_steps(text: str) -> list[tuple[int, str, int, int]] | None:
    """The ``a op b = c`` steps of an embedded path (the sentences before ``####``, split at
    ``.``: the corpus's numbers are integers), or None if a sentence is not such a step."""
    body = text.split("####", 1)[0]
    out: list[tuple[int, str, int, int]] = []
    for seg in body.split("."):
        seg = seg.strip()
        if not seg:
            continue
        m = STEP_RE.fullmatch(seg)
        if m is None:
            return None
        out.append((int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))))
    return out


def _holds(a: int, op: str, b: int, c: int) -> bool:
    if op == "/":
        return b != 0 and a == b * c
    return {"+": a + b, "-": a - b, "*": a * b}[op] == c


def steps_hold(text: str) -> bool:
    """Does every step of an embedded path hold, and do they chain into its final answer?

    Each step's arithmetic is right; a ``+``/``-`` step after the first goes on from the running
    value (the last ``+``/``-`` result, else the first step's: arith, count and clock chain that
    way, and shop's sum starts from its first product); a ``+`` after products adds a product
    (shop); the last step's result is the ``#### N`` answer. A path without steps fails: every
    embedded solution has at least one."""
    steps = parse_steps(text)
    final = extract_embedded(text)
    if not steps or final is None:
        return False
    running: int | None = None
    products: list[int] = []
    for i, (a, op, b, c) in enumerate(steps):
        if not _holds(a, op, b, c):
            return False
        if op in "+-":
            if i > 0 and a != (steps[0][3] if running is None else running):
                return False
            if op == "+" and products and b not in products[1:]:
                return False
            running = c
        elif op == "*" and running is None:
            products.append(c)
    return steps[-1][3] == int(final)


def family_of(sample_id: str) -> str:
    """The task family of a sample, from its id (see the module docstring); ``rg:NAME`` for a
    reasoning-gym item (``common/rg_tasks.py``, graded by the family's own scorer)."""
    from .rg_tasks import family_of as rg_family

    return rg_family(sample_id) or (GSM8K if sample_id.startswith(GSM8K) else EMBEDDED)


def extract(text: str, family: str = EMBEDDED) -> str | None:
    if family.startswith(RG):
        from .rg_tasks import extract as rg_extract

        return rg_extract(text)
    if family not in EXTRACTORS:
        raise ValueError(f"unknown answer family {family!r}; known: {sorted(EXTRACTORS)}")
    return EXTRACTORS[family](text)


def is_correct(text: str, answer: str, family: str = EMBEDDED, check_steps: bool = False) -> bool:
    """Does the path's final answer equal the label? Embedded: the same digits; GSM8K: the same value.
    ``check_steps`` (what decides a y+, ``distill.check_steps``): in a ``CHECKABLE`` family every
    step must hold too (:func:`steps_hold`); accuracy is the final answer's alone. A reasoning-gym
    family (``rg:NAME``): full credit from the family's own ``score_answer``."""
    if family.startswith(RG):
        from .rg_tasks import is_correct as rg_correct

        return rg_correct(text, answer, family)
    got = extract(text, family)
    if got is None:
        return False
    if family == EMBEDDED:
        ok = got == str(answer).strip()
    else:
        ok = got == normalize_number(str(answer))
    return ok and (not check_steps or family not in CHECKABLE or steps_hold(text))
