"""Candidate traffic that scales with what a client needs (issue 17), over real gRPC.

Real clients (``client.runtime.run_client``) against the production servicers: round 2's
candidates differ from round 1's in a few paths, so a client that holds round 1's batch downloads
a delta a fraction of the full batch's size and rebuilds the server's batch exactly; a client
without that base (new, or whose delta does not apply) downloads the full batch; a restarted
client with a state folder still holds its base. Allocations name what the client holds by id
and a client whose texts do not match the digest asks for the texts again (no silent skip).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lada.client.runtime import Connection, run_client
from lada.common import candidates as cands
from lada.common import wire
from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, SampleReward, SampleStats, TrainResult

from tests.support.transport import CLIENTS, TOKEN, grpc_server, in_thread, wait_until

CHUNK = 16 * 1024
N = 300


def batch(changed: range = range(0), n: int = N) -> list[ReasoningPath]:
    """~1 KB paths (as at paper scale); ``changed``: the samples whose path is a new one."""
    return [ReasoningPath(f"s{i}", f"question {i}: how many apples? " * 4,
                          (f"new step {i} " if i in changed else f"step {i} ") * 60 + f"#### {i}", str(i),
                          i % 2 == 0) for i in range(n)]


class App:
    """Model-free: records the candidates it probed and the pairs it learned."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.seen: list[list[ReasoningPath]] = []
        self.trained: list[list[AllocatedPair]] = []

    def probe(self, task: Any, cand: list[ReasoningPath]) -> ProbeResult:
        self.seen.append(list(cand))
        stats = [SampleStats(p.sample_id, 1.5, 9, 7, False, p.correct, 0.5) for p in cand]
        own = [ReasoningPath(p.sample_id, p.question, f"my path {p.sample_id} #### 0", p.answer, False) for p in cand]
        return ProbeResult(stats, own, 0.5)

    def train(self, task: Any, samples: list[AllocatedPair]) -> TrainResult:
        self.trained.append(list(samples))
        return TrainResult([SampleReward(s.sample_id, 2.0, 1.5) for s in samples], test_accuracy=0.5, steps=1)


def start(srv: Any, name: str, app: App) -> tuple[Connection, threading.Event, threading.Thread]:
    conn = Connection(srv.address, name, TOKEN, "m", CLIENTS[name], chunk_kb=CHUNK // 1024, call_timeout=30)
    stop = threading.Event()
    th, _ = in_thread(run_client, conn, app, 0.3, stop)
    return conn, stop, th


def alloc(cand: list[ReasoningPath], k: int = 40) -> list[AllocatedPair]:  # scores exact in float32
    return [AllocatedPair(p.sample_id, p.question, p.text, f"my path {p.sample_id} #### 0", 1.0 - i / 64, i)
            for i, p in enumerate(cand[:k])]


def full_text_bytes(pairs: list[AllocatedPair]) -> int:
    return sum(wire.allocated_sample(p).ByteSize() for p in pairs)


def test_round_two_is_a_delta_and_a_client_without_the_base_gets_the_full_batch() -> None:
    c1, c2 = batch(), batch(changed=range(0, N, 30))  # 10 of 300 paths change
    full = len(cands.batch_bytes(c2))
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g = srv.grid
        a1 = App()
        conn1, stop1, th1 = start(srv, "client-1", a1)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.take_bytes()
        assert set(g.probe(1, c1, [], ["client-1"])) == {"client-1"}
        r1 = g.take_bytes()["client-1"][1]
        pairs = alloc(c1)
        g.train(1, {"client-1": pairs})
        assert a1.trained[-1] == pairs  # named by id, rebuilt exactly
        alloc_down = g.take_bytes()["client-1"][1]
        assert alloc_down < full_text_bytes(pairs) / 5, (alloc_down, full_text_bytes(pairs))

        a2 = App()  # joins for round 2: it holds no base
        conn2, stop2, th2 = start(srv, "client-2", a2)
        assert wait_until(lambda: g.live_clients() == ["client-1", "client-2"])
        d1, d2 = conn1.bytes_down, conn2.bytes_down
        assert set(g.probe(2, c2, [], ["client-1", "client-2"])) == {"client-1", "client-2"}
        delta_dl, full_dl = conn1.bytes_down - d1, conn2.bytes_down - d2
        down = g.take_bytes()
        assert a1.seen[-1] == c2 and a2.seen[-1] == c2  # the server's ordered batch, exactly
        assert cands.batch_bytes(a1.seen[-1]) == cands.batch_bytes(c2)
        assert full_dl > full and delta_dl < full / 10, (delta_dl, full_dl, full)
        assert down["client-1"][1] < down["client-2"][1] / 10 and r1 > len(cands.batch_bytes(c1))
        pairs = alloc(c2, 30)
        g.train(2, {"client-1": pairs, "client-2": pairs})
        assert a1.trained[-1] == pairs and a2.trained[-1] == pairs

        # the same batch again (the LLM did not change): nothing to download
        d1 = conn1.bytes_down
        g.probe(3, c2, [], ["client-1"])
        assert conn1.bytes_down == d1 and a1.seen[-1] == c2
        g.stop()
        for th in (th1, th2):
            th.join(15)
            assert not th.is_alive()


def test_a_delta_that_does_not_apply_falls_back_to_the_full_batch(monkeypatch: Any) -> None:
    """A delta missing one changed path (as a bug would make it): the client's sha256 check refuses
    the result and it downloads the full batch; the paths it probes are still the server's."""
    from lada.server.transport import grid as grid_mod

    c1, c2 = batch(), batch(changed=range(5, N, 50))
    real = cands.make_delta

    def dropping(*a: Any) -> Any:
        d = real(*a)
        if d is not None and len(d.paths):
            del d.paths[0]
        return d

    monkeypatch.setattr(grid_mod.cands, "make_delta", dropping)
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g, a = srv.grid, App()
        conn, stop, th = start(srv, "client-1", a)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.probe(1, c1, [], ["client-1"])
        d = conn.bytes_down
        g.probe(2, c2, [], ["client-1"])
        assert a.seen[-1] == c2
        assert conn.bytes_down - d > len(cands.batch_bytes(c2))  # the (refused) delta, then the full batch
        g.stop()
        th.join(15)


def test_a_restarted_client_keeps_its_base_and_a_digest_mismatch_fetches_the_texts(tmp_path: Path) -> None:
    c1, c2 = batch(), batch(changed=range(0, N, 30))
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g = srv.grid
        conn, stop, th = start(srv, "client-1", App(tmp_path))
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.probe(1, c1, [], ["client-1"])
        stop.set()  # the process ends; a new one starts from the same state folder
        th.join(15)
        a = App(tmp_path)
        conn, stop, th = start(srv, "client-1", a)
        assert wait_until(lambda: conn.enrolments > 0 and "client-1" in g.live_clients())
        d = conn.bytes_down
        g.probe(2, c2, [], ["client-1"])
        assert a.seen[-1] == c2 and conn.bytes_down - d < len(cands.batch_bytes(c2)) / 10
        with g.lock:  # the server's copy of the client's own paths differs from the client's
            g.own_paths[(2, "client-1")] = {k: v + " (server copy)" for k, v in g.own_paths[(2, "client-1")].items()}
        pairs = [AllocatedPair(p.sample_id, p.question, p.text, f"my path {p.sample_id} #### 0 (server copy)", 0.5, i)
                 for i, p in enumerate(c2[:20])]
        g.take_bytes()
        g.train(2, {"client-1": pairs})
        assert a.trained[-1] == pairs  # the texts, asked for again: what the server allocated
        assert g.take_bytes()["client-1"][1] > full_text_bytes(pairs)  # the id form, then the full one
        g.stop()
        th.join(15)


def test_with_the_knob_off_every_round_sends_the_full_batch_and_texts() -> None:
    """transport.candidate_delta=false: the traffic before issue 17 (what docs/performance.md compares)."""
    c1, c2 = batch(), batch(changed=range(0, N, 30))
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g, a = srv.grid, App()
        g.candidate_delta = False
        conn, stop, th = start(srv, "client-1", a)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.probe(1, c1, [], ["client-1"])
        d = conn.bytes_down
        g.probe(2, c2, [], ["client-1"])
        assert a.seen[-1] == c2 and conn.bytes_down - d > len(cands.batch_bytes(c2))
        pairs = alloc(c2)
        g.take_bytes()
        g.train(2, {"client-1": pairs})
        assert a.trained[-1] == pairs and g.take_bytes()["client-1"][1] > full_text_bytes(pairs)
        g.stop()
        th.join(15)


def test_a_delta_the_server_no_longer_has_falls_back_to_the_full_batch() -> None:
    c1, c2 = batch(), batch(changed=range(0, N, 30))
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g, a = srv.grid, App()
        real = g._dispatch

        def gone(*args: Any) -> Any:  # the task names a delta blob the store does not hold
            *rest, extra = args
            return real(*rest, {**extra, "delta_blob_id": "0" * 64} if extra else extra)

        g._dispatch = gone
        conn, stop, th = start(srv, "client-1", a)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.probe(1, c1, [], ["client-1"])
        assert set(g.probe(2, c2, [], ["client-1"])) == {"client-1"}  # not skipped as a stale task
        assert a.seen[-1] == c2
        g.stop()
        th.join(15)


def test_own_paths_go_up_without_the_questions_and_answers_the_server_sent() -> None:
    """The upload leaves out what the server has; the probe result holds the whole paths again."""
    c1 = batch()
    with grpc_server(chunk_size=CHUNK, heartbeat_s=0.2) as srv:
        g, a = srv.grid, App()
        conn, stop, th = start(srv, "client-1", a)
        assert wait_until(lambda: g.live_clients() == ["client-1"])
        g.take_bytes()
        own = g.probe(1, c1, [], ["client-1"])["client-1"].own_paths
        up = g.take_bytes()["client-1"][0]
        assert own == [ReasoningPath(p.sample_id, p.question, f"my path {p.sample_id} #### 0", p.answer) for p in c1]
        assert up < sum(len(p.question) for p in c1)  # the questions (~120 B each) did not go up again
        g.stop()
        th.join(15)
