"""reasoning-gym task families as client domains (``data.client_domains: {c: rg:chain_sum}``).

A domain ``rg:NAME`` (or ``rg:NAME?key=value&...`` with the family's own config keys, e.g.
``rg:chain_sum?max_terms=3&max_digits=2``) draws items from reasoning-gym's procedural generator
for that family: unlimited, deterministic per scenario seed, with the embedded scenario's split
discipline -- test items only from the held-out half of the question space (``data.held_out``),
train / public / server items never from it, questions deduplicated (case and whitespace folded)
and the public set free of any client's training question.

A path on such an item is graded by the family's own ``score_answer`` (full credit only), on the
final answer read from the path (``#### X``, ``\\boxed{X}``, "the answer is X", reasoning-gym's
``<answer>X</answer>``, else the last number or line). The grader sees only the sample's id and
label, so a family is accepted only if its scorer needs no more than the label
(:func:`check_family` tries it on a few items and says so when it does not).

The worked solution is the family's own where it ships one (``answer_cot``); for a chain of
``+``/``-`` terms (chain_sum, basic_arithmetic without ``*``, ``/`` and parentheses) it is the
left-to-right steps; otherwise empty (the path is then the answer alone).

reasoning-gym is installed by ``make real-models`` (``scripts/real-models.sh``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from .data import Sample, held_out

RG_DOMAIN = "rg:"  # data.client_domains value prefix
ID_PREFIX = "rg-"  # sample ids: rg-NAME-<stream>-<i>; answers.family_of reads NAME back
FAMILY_PREFIX = "rg:"  # answer family of such a sample: rg:NAME
INSTALL = "reasoning-gym is not installed: make real-models (scripts/real-models.sh)"
_PROBE_ITEMS = 4
SIZE = 20_000  # items per stream: some families precompute per item (gsm_symbolic), so not unbounded


def is_rg_domain(domain: str) -> bool:
    return domain.startswith(RG_DOMAIN)


def _value(raw: str) -> Any:
    """A config value from a spec: int, float, bool, a comma list, else the string."""
    if "," in raw:
        return [_value(x) for x in raw.split(",") if x]
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_domain(domain: str) -> tuple[str, dict[str, Any]]:
    """``rg:NAME?k=v&k2=v2`` -> (NAME, {k: v, ...}); a malformed spec is an error naming the form."""
    if not is_rg_domain(domain):
        raise ValueError(f"{domain!r} is not a reasoning-gym domain (rg:NAME)")
    name, _, query = domain[len(RG_DOMAIN):].partition("?")
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"{domain!r}: expected rg:NAME or rg:NAME?key=value&..., NAME a reasoning-gym family")
    params: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, raw = part.partition("=")
        if not eq or not key:
            raise ValueError(f"{domain!r}: parameter {part!r} is not key=value")
        params[key] = _value(raw)
    return name, params


def _rg() -> Any:
    try:
        import reasoning_gym
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(INSTALL) from e
    return reasoning_gym


def _stream_seed(seed: int, domain: str, stream: str) -> int:
    """A generator seed per (scenario seed, domain, stream): reasoning-gym seeds item i with
    seed + i, so nearby seeds would share items; hashed seeds do not (dedup covers the rest)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{domain}:{stream}".encode()).digest()[:6], "big")


@lru_cache(maxsize=64)
def _dataset(name: str, params: tuple[tuple[str, Any], ...], seed: int) -> Any:
    rg = _rg()
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in params}
    try:
        return rg.create_dataset(name, seed=seed, size=SIZE, **kw)
    except (TypeError, AssertionError) as e:
        raise ValueError(f"rg:{name}: bad parameters {kw}: {e}") from e


def dataset(domain: str, seed: int) -> Any:
    name, params = parse_domain(domain)
    return _dataset(name, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())),
                    seed)


@lru_cache(maxsize=256)
def scorer(name: str) -> Any:
    """The family's dataset object whose ``score_answer`` grades its items (a default config:
    the accepted families' scorers read only the label)."""
    return _dataset(name, (), 0)


def _stripped(answer: str) -> dict[str, Any]:
    return {"question": "", "answer": answer, "metadata": {}}


@lru_cache(maxsize=64)
def check_family(domain: str) -> str:
    """The family NAME of a domain spec once it is known to work here: reasoning-gym installed,
    NAME one of its families, the parameters accepted, and the family's scorer giving the same
    score from the label alone as from the full item (right and wrong answers) -- else an error
    that says which, before any model loads."""
    name, _ = parse_domain(domain)
    rg = _rg()
    if name not in rg.factory.DATASETS:
        raise ValueError(f"{domain}: reasoning-gym has no family {name!r}; some: basic_arithmetic, chain_sum, "
                         "leg_counting, gsm_symbolic, products, simple_equations")
    ds = dataset(domain, 0)
    sc = scorer(name)
    for i in range(_PROBE_ITEMS):
        entry = ds[i]
        for guess in (entry["answer"], entry["answer"] + "0", "no answer"):
            try:
                full, label_only = ds.score_answer(guess, entry), sc.score_answer(guess, _stripped(entry["answer"]))
            except (KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{domain}: the family's scorer needs more than the label ({e!r}); LaDa grades "
                                 "a path from its sample's label only, so this family cannot be a domain") from e
            if full != label_only:
                raise ValueError(f"{domain}: the family's scorer gives {full} with the item's metadata, "
                                 f"{label_only} from the label alone; it cannot be a domain")
    return name


_CHAIN_RE = re.compile(r"-?\d+(?:\s+[-+]\s+-?\d+)+")


def chain_steps(expression: str) -> str:
    """Left-to-right steps of ``a + b - c ...`` (integers, spaces around operators), or ``""``
    if the expression is not such a chain (products, quotients, parentheses have no worked answer)."""
    expr = " ".join(str(expression).split())
    if not _CHAIN_RE.fullmatch(expr):
        return ""
    toks = expr.split(" ")
    acc = int(toks[0])
    steps = []
    for op, num in zip(toks[1::2], toks[2::2]):
        new = acc + int(num) if op == "+" else acc - int(num)
        steps.append(f"{acc} {op} {int(num)} = {new}.")
        acc = new
    return " ".join(steps)


def worked_solution(entry: dict[str, Any]) -> str:
    meta = entry.get("metadata") or {}
    cot = meta.get("answer_cot")
    if isinstance(cot, str) and cot.strip():
        return " ".join(re.sub(r"<<[^>]*>>", "", cot).split("####")[0].split())
    if "expression" in meta:
        return chain_steps(meta["expression"])
    return ""


def _difficulty(entry: dict[str, Any]) -> int:
    meta = entry.get("metadata") or {}
    for key in ("num_terms", "num_animals", "num_steps"):
        if isinstance(meta.get(key), int) and meta[key] >= 1:
            return meta[key]
    return 1


def _key(question: str) -> str:
    return " ".join(question.lower().split())


def draw(domains: Sequence[str], n: int, seed: int, stream: str, test: bool,
         exclude: Iterable[str] = ()) -> list[Sample]:
    """``n`` items cycling over ``domains`` (rg: specs), deterministic for (seed, stream): from the
    held-out half of the question space if ``test`` else never from it, no question twice and
    none in ``exclude``. A family whose question space runs out is an error saying so."""
    if n < 0 or not domains:
        raise ValueError(f"{stream}: need n >= 0 and at least one rg: domain, got n={n}, {list(domains)}")
    names = [check_family(d) for d in domains]
    seen = {_key(q) for q in exclude}
    sets = [dataset(d, _stream_seed(seed, d, stream)) for d in domains]
    nxt = [0] * len(domains)
    out: list[Sample] = []
    while len(out) < n:
        k = len(out) % len(domains)
        misses = 0
        while True:
            entry = sets[k][nxt[k]]
            nxt[k] += 1
            q = str(entry["question"]).strip()
            if held_out(q) == test and _key(q) not in seen:
                break
            misses += 1
            if misses > 2000 + 20 * n or nxt[k] >= SIZE:
                raise ValueError(f"{domains[k]}: no new {'held-out' if test else 'non-held-out'} question in "
                                 f"{misses} draws ({len(out)} of {n} found for {stream}); widen the family's "
                                 "parameters or ask for fewer items")
        seen.add(_key(q))
        out.append(Sample(f"{ID_PREFIX}{names[k]}-{stream}-{len(out):05d}", domains[k], q,
                          worked_solution(entry), str(entry["answer"]).strip(), _difficulty(entry)))
    return out


def client_split(domain: str, client: str, n_train: int, n_test: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A client's private train/test sets of one family: the test set from the held-out half, the
    training set never from it (so the two are disjoint, and no public item is a test item)."""
    test = draw([domain], n_test, seed, f"{client}-test", test=True)
    train = draw([domain], n_train, seed, f"{client}-train", test=False)
    return train, test


# ------------------------------------------------------------------ grading
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|=|:)\s*:?\s*(.+)", re.IGNORECASE)


def extract(text: str, label: str | None = None) -> str | None:
    """The final answer of a path on a reasoning-gym item. A numeric label (or none, with no
    ``####`` in the path): the GSM8K reading (``answers.extract_gsm8k``: ``#### N``, ``\\boxed{N}``,
    "the answer is N", the last number). Otherwise the last ``#### X`` line,
    ``<answer>X</answer>``, "the answer is X", else the last line."""
    from .answers import extract_gsm8k

    numeric = label is not None and re.fullmatch(r"-?\$?[\d,]*\.?\d+(?:/\d+)?", label.strip()) is not None
    if numeric or (label is None and "####" not in text):
        return extract_gsm8k(text)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip().splitlines()[0].strip() if text.rsplit("####", 1)[1].strip() \
            else None
    tags = _ANSWER_TAG_RE.findall(text)
    if tags:
        return tags[-1].strip()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _ANSWER_IS_RE.search(ln)
        if m:
            return m.group(1).strip().rstrip(".")
    return lines[-1] if lines else None


def family_of(sample_id: str) -> str | None:
    """``rg:NAME`` for a sample drawn here (id ``rg-NAME-...``), else None."""
    if not sample_id.startswith(ID_PREFIX):
        return None
    return FAMILY_PREFIX + sample_id[len(ID_PREFIX):].split("-", 1)[0]


def score(text: str, answer: str, family: str) -> float:
    """The family's own score of the path's final answer (0 when the path has none)."""
    name = family[len(FAMILY_PREFIX):]
    got = extract(text, str(answer))
    if got is None:
        return 0.0
    return float(scorer(name).score_answer(got, _stripped(str(answer))))


def is_correct(text: str, answer: str, family: str) -> bool:
    """Full credit from the family's scorer (gsm_symbolic gives 0.01 for a wrong number: wrong)."""
    return score(text, answer, family) >= 1.0
