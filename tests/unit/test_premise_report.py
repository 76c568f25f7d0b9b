"""The premise check's SLM target counts only the clients whose domain the LLM knows (issue 13):
a client holding the LLM's unseen domain cannot be helped by any LLM path, so it is reported apart."""

from __future__ import annotations

from lada.experiment import counted_clients, method_check, premise_check, source_commit


def _rows(acc: dict[tuple[str, str], float], n: int = 100) -> list[dict]:
    """Final-round metric and per-item rows for one seed: (method, client) -> accuracy."""
    dom = {"client-1": "shop", "client-2": "count", "client-3": "clock"}
    rows = []
    for (m, c), a in acc.items():
        k = round(a * n)
        for rnd in (0, 1):
            rows.append(dict(method=m, seed=0, round=rnd, subject=c, accuracy=a, domain=dom[c]))
        rows.append(dict(kind="items", method=m, seed=0, subject=c, round=1, correct="1" * k + "0" * (n - k)))
    for m in {m for m, _ in acc}:
        rows.append(dict(method=m, seed=0, round=1, subject="llm", accuracy=0.5, lacked="clock"))
    return rows


def test_target_over_counted_clients_and_the_unseen_domain_apart() -> None:
    rows = _rows({("random", "client-1"): 0.2, ("random", "client-2"): 0.3, ("random", "client-3"): 0.5,
                  ("oracle", "client-1"): 0.3, ("oracle", "client-2"): 0.4, ("oracle", "client-3"): 0.1})
    assert counted_clients(rows) == (["client-1", "client-2"], ["client-3"])
    check = premise_check(rows)
    # counted: (0.3 + 0.4) / 2 - (0.2 + 0.3) / 2 = +10 points over 200 items; all three would give -6.7
    assert "over client-1, client-2 (the clients whose domain the LLM knows)" in check
    assert "+10.0 points, McNemar p = " in check and "over 200 paired items" in check
    assert "target >= +6: **met**" in check
    assert "not counted, client-3" in check and "-40.0 points" in check


def test_every_client_counted_without_an_unseen_domain() -> None:
    rows = [r | {"lacked": None} if r["subject"] == "llm" else r
            for r in _rows({("random", "client-1"): 0.2, ("oracle", "client-1"): 0.25,
                            ("random", "client-3"): 0.2, ("oracle", "client-3"): 0.25})]
    assert counted_clients(rows) == (["client-1", "client-3"], [])
    check = premise_check(rows)
    assert "+5.0 points" in check and "not counted" not in check and "**missed**" in check


def test_lada_against_random_and_the_oracle_gap_on_counted_clients() -> None:
    """LaDa's line counts the same clients as the premise check: +6 of the oracle's +10 points on
    client-1..2 (p < 0.05 over 200 items) meets the target; the clock client is not counted."""
    rows = _rows({("random", "client-1"): 0.2, ("random", "client-2"): 0.3, ("random", "client-3"): 0.5,
                  ("oracle", "client-1"): 0.3, ("oracle", "client-2"): 0.4, ("oracle", "client-3"): 0.1,
                  ("lada", "client-1"): 0.26, ("lada", "client-2"): 0.36, ("lada", "client-3"): 0.0,
                  ("lada_paper", "client-1"): 0.22, ("lada_paper", "client-2"): 0.3, ("lada_paper", "client-3"): 0.9})
    check = method_check(rows)
    line = next(ln for ln in check.splitlines() if ln.startswith("- lada against"))
    assert "over client-1, client-2:" in line and "+6.0 points" in line and "(12 against 0 discordant)" in line
    assert "closes +60% of the oracle's +10.0-point gap" in line and line.endswith("**met**")
    paper = next(ln for ln in check.splitlines() if ln.startswith("- lada_paper against"))
    assert "+1.0 points" in paper and paper.endswith("**missed**")  # clock's +40 is not counted
    assert method_check([r for r in rows if r["method"] != "random"]) == ""


def test_source_commit_names_a_commit() -> None:
    c = source_commit()
    assert c == "unknown" or len(c.split("+")[0]) == 40
