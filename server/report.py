"""What a run prints: one block per round, and the before/after table at the end."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lada.common.config import LadaConfig

LLM = "llm"


@dataclass
class RoundSummary:
    idx: int
    clients: dict[str, dict[str, float]] = field(default_factory=dict)
    llm: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    allocated: dict[str, list[str]] = field(default_factory=dict)  # client -> sample ids it was given
    wall: float = 0.0  # seconds from the round's start to its end (phases may overlap: not their sum)
    llm_compute: float = 0.0  # seconds of the LLM's own model work in the round (LLMHost.compute_s)


PAPER_MB = (3.87, 6.71)  # the paper's communication per client per round for LaDa (MB)


def print_round(s: RoundSummary, rounds: int, before: dict[str, float], log: Callable[[str], None]) -> None:
    tm = " ".join(f"{k}={v:.2f}s" for k, v in s.timings.items())
    log(f"[round {s.idx}/{rounds}] {tm}  wall={s.wall:.2f}s llm_compute={s.llm_compute:.2f}s")
    for name, v in sorted(s.clients.items()):
        start = before.get(name, float("nan"))
        down, up = v.get("bytes_down", 0) / 1e3, v.get("bytes_up", 0) / 1e3
        log(f"  {name:<10} acc {v['accuracy']:.3f} (start {start:.3f})  reward {v['reward']:.3f}  "
            f"allocated {int(v['n_allocated']):>4}  down {down:8.1f} kB  up {up:8.1f} kB")
    if s.clients:  # the round's traffic per client, against what the paper reports for LaDa
        mb = [(v.get("bytes_down", 0) + v.get("bytes_up", 0)) / 1e6 for v in s.clients.values()]
        log(f"  {'traffic':<10} {sum(mb) / len(mb):.3f} MB per client this round (down + up; the paper's "
            f"LaDa: {PAPER_MB[0]}-{PAPER_MB[1]} MB)")
    llm = s.llm
    log(f"  {'llm':<10} acc {llm['accuracy']:.3f} (start {before[LLM]:.3f})  "
        f"reward {llm.get('reward', float('nan')):.3f}  learned from {int(llm.get('n_allocated', 0)):>4}")


def summary_table(cfg: LadaConfig, history: Sequence[RoundSummary], before: dict[str, float],
                  public_acc: dict[str, float]) -> str:
    """Markdown table: accuracy before and after, per model."""
    if not history:
        return "(no rounds)"
    last = history[-1]
    nan = float("nan")
    rows = ["| model | role | public mix before | accuracy before | accuracy after | change |",
            "|---|---|---|---|---|---|"]
    b = before.get(LLM, nan)
    a = last.llm.get("accuracy", nan)
    rows.append(f"| {cfg.models.llm} | LLM (held-out mix) | {public_acc.get(LLM, nan):.3f} | "
                f"{b:.3f} | {a:.3f} | {a - b:+.3f} |")
    for name in sorted(last.clients):
        b = before.get(name, nan)
        a = last.clients[name]["accuracy"]
        model = cfg.models.clients.get(name, "?")
        rows.append(f"| {model} | {name} ({cfg.data.client_domains.get(name, '?')}, local test) | "
                    f"{public_acc.get(name, nan):.3f} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    total = {k: round(sum(h.timings.get(k, 0) for h in history), 1) for k in history[0].timings}
    rows.append("")
    rows.append("time per phase (s, all rounds): " + ", ".join(f"{k} {v}" for k, v in total.items()))
    # server learn may run beside client learn (server.overlap_learn): the rounds took less than the phases' sum
    rows.append(f"wall time (s, all rounds): {sum(h.wall for h in history):.1f}")
    return "\n".join(rows)
