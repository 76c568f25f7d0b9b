"""Input limits and checks of the gRPC servicers.

Every field a client sends is checked here before anything is stored, so a
rejected call stores nothing; a failed check aborts the RPC with
INVALID_ARGUMENT and a message that names the field.
"""

from __future__ import annotations

import math
import re

import grpc
from lada.common.proto.lada.v1 import messages_pb2

MAX_ID = 200           # client names, sample ids
MAX_MODEL = 300
MAX_DOMAIN = 100
MAX_REASON = 500
MAX_TEXT = 64 * 1024   # one question / reasoning path
MAX_ANSWER = 1024
MAX_NLL = 1e4          # a per-token NLL above this is a bug or an attack (and would overflow float32 math)
MAX_LEN = 1_000_000    # tokens in one path
MAX_STEPS = 1_000_000_000
MAX_WAIT_S = 60.0
ID = re.compile(r"[A-Za-z0-9._-]{1,200}")  # MAX_ID
INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TASK = re.compile(r"[0-9a-f]{32}")


def invalid(ctx: grpc.ServicerContext, msg: str) -> None:
    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, msg)


def check_id(ctx: grpc.ServicerContext, val: str, what: str) -> None:
    if not ID.fullmatch(val):
        invalid(ctx, f"{what} must be 1-{MAX_ID} characters of [A-Za-z0-9._-], got {val[:40]!r}")


def check_task(ctx: grpc.ServicerContext, task_id: str, t: int) -> None:
    """The task id and round of a report are well formed (whether it is outstanding is the grid's call)."""
    if not TASK.fullmatch(task_id):
        invalid(ctx, "task_id must be the 32 hex characters of a task")
    if t < 1:
        invalid(ctx, f"round must be >= 1, got {t}")


def finite(*vals: float, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return all(math.isfinite(v) and lo <= v <= hi for v in vals)


def check_ids(ctx: grpc.ServicerContext, ids: list[str], allowed: set[str], what: str, offered: str) -> None:
    """Every id must be one the server offered, and appear at most once."""
    seen: set[str] = set()
    for sid in ids:
        if sid not in allowed:
            invalid(ctx, f"{what} for sample {sid[:40]!r} that was not {offered}")
        if sid in seen:
            invalid(ctx, f"two {what}s for sample {sid[:40]!r}")
        seen.add(sid)


def check_paths(ctx: grpc.ServicerContext, batch: messages_pb2.PathBatch, allowed: set[str]) -> None:
    check_ids(ctx, [p.sample_id for p in batch.paths], allowed, "path", "a candidate")
    for p in batch.paths:
        if len(p.text) > MAX_TEXT or len(p.question) > MAX_TEXT or len(p.answer) > MAX_ANSWER:
            invalid(ctx, f"path for {p.sample_id[:40]!r} is longer than {MAX_TEXT} characters")
