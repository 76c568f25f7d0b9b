"""How many allocated paths with a right answer fail the y+ step check (issue 13), in a run's DB.

    python benchmarks/step_check_db.py .lada/lada.db

Reads the ``allocations``, ``paths`` and ``public_samples`` rows of every run in a LaDa sqlite
database and grades each allocated path answer-only and with ``answers.steps_hold``; also counts,
per round and client, the SLM paths the up-direction rule leaves eligible (SLM y+, LLM not y+).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections import defaultdict

from lada.common.answers import is_correct, steps_hold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", help="path of a lada.db (sqlite)")
    db = sqlite3.connect(ap.parse_args().db)
    ans = {(r, s): a for r, s, a in db.execute("select run_id, sample_id, answer from public_samples")}
    paths = {(run, r, a, s): t for run, r, a, s, t in
             db.execute("select run_id, round_idx, author, sample_id, text from paths")}
    for label, where in (("SLM -> LLM", "receiver = 'llm'"), ("LLM -> SLM", "receiver != 'llm'")):
        n, bad = 0, 0
        for run, rnd, send, sid in db.execute(
                f"select run_id, round_idx, sender, sample_id from allocations where {where}"):
            text = paths[(run, rnd, send, sid)]
            if is_correct(text, ans[(run, sid)]):
                n += 1
                bad += not steps_hold(text)
        print(f"{label}: {n} allocated paths with a right answer, {bad} of them fail the step check")
    by_round: dict[tuple[int, int, str], dict[str, str]] = defaultdict(dict)
    for (run, rnd, author, sid), text in paths.items():
        by_round[(run, rnd, author)][sid] = text
    for (run, rnd, author), own in sorted(by_round.items()):
        if author == "llm":
            continue
        llm = by_round.get((run, rnd, "llm"), {})
        right = sum(is_correct(t, ans[(run, s)]) for s, t in own.items())
        elig = sum(is_correct(t, ans[(run, s)], check_steps=True)
                   and not is_correct(llm.get(s, ""), ans[(run, s)], check_steps=True) for s, t in own.items())
        print(f"run {run} round {rnd} {author}: {right} right answers; eligible for the LLM now: {elig}")


if __name__ == "__main__":
    main()
