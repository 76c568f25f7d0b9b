"""The transport seam: how a round's tasks reach the clients and their results come back.

The round loop talks only to this protocol, in the round's own dataclasses
(``lada.common.rounds``); each transport converts them to its wire form through
``lada.common.wire``. Implementations: ``inprocess.InProcessGrid`` (clients as
objects) and ``grid.GrpcGrid`` (clients as processes over gRPC).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, TrainResult


class Grid(Protocol):
    run_key: str  # put on every task: one run of one database (see messages.proto Task.run_key)
    train_align: tuple[int, bool]  # on every TRAIN task: (align_items, align_center), see messages.proto

    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        """Registered, live clients, once there are ``n`` of them or ``timeout`` passed."""
        ...

    def probe(self, round_idx: int, candidates: Sequence[ReasoningPath], evaluate: Collection[str],
              clients: list[str]) -> dict[str, ProbeResult]:
        """Each client's statistics on the candidates; clients in ``evaluate`` also measure their test
        accuracy. Clients that did not answer before the phase deadline are missing from the result."""
        ...

    def train(self, round_idx: int, allocations: dict[str, list[AllocatedPair]]) -> dict[str, TrainResult]:
        """Each client learns its allocation and reports the NLL of every y+ before and after."""
        ...

    def take_bytes(self) -> dict[str, tuple[int, int]]:
        """(bytes up, bytes down) per client since the last call."""
        ...

    def client_info(self, name: str) -> tuple[str, str]:
        """(model, domain) a client registered with."""
        ...

    def stop(self) -> None: ...
