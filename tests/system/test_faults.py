"""Faults with real processes: kill -9 the server mid-round and restart it on the same
database (over mutual TLS); kill a client mid-round (and restart it); cut a client off
with SIGSTOP past the round deadline. No row may be lost or duplicated, the round
completes with the clients that reported, and dropped clients rejoin later rounds.

The fast tests at the end exercise the same resume / min_clients code in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from lada.common.config import LadaConfig
from lada.common.learner import Pair
from lada.common.rounds import ProbeResult
from lada.server.allocation import LLM
from lada.server.db.writer import Store
from lada.server.federation import Federation, RoundFailed
from lada.server.llm_host import LLMHost
from sqlalchemy import create_engine, text

from tests.support.paths import TINY, free_port
from tests.support.paths import cli as _cli
from tests.support.transport import built_models, certs  # noqa: F401 - fixtures

CLIENTS = ("client-1", "client-2", "client-3")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # like the server: run.threads=1


class Run:
    """`lada server` and `lada client` processes of one run, their logs, and the database."""

    def __init__(self, tmp: Path, model_cache: Path, server_extra: list[str], client_extra: Callable[[str], list[str]],
                 **knobs: object) -> None:
        self.tmp, self.port = tmp, free_port()
        self.db = f"sqlite:///{tmp / 'lada.db'}"
        self.common = ["--config", str(TINY), "--models.cache_dir", str(model_cache), "--server.address",
                       f"127.0.0.1:{self.port}", "--server.data_dir", str(tmp), "--server.db", self.db]
        for k, v in knobs.items():
            self.common += [f"--{k.replace('__', '.')}", str(v)]
        self.server_extra, self.client_extra = server_extra, client_extra
        self.procs: list[subprocess.Popen] = []
        self.engine = create_engine(self.db)

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        p = subprocess.Popen(args, stdout=open(self.tmp / log, "ab"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def server(self, n: int = 1) -> subprocess.Popen:
        return self._start(_cli("server", *self.common, "--transport.linger", "2", *self.server_extra),
                           f"server-{n}.log")

    def client(self, name: str) -> subprocess.Popen:
        return self._start(_cli("client", *self.common, "--name", name, *self.client_extra(name)), f"{name}.log")

    def q(self, sql: str, **params: object) -> list:
        try:
            with self.engine.connect() as c:
                return c.execute(text(sql), params).all()
        except Exception:  # noqa: BLE001 - the schema may not exist yet while the server starts
            return []

    def wait(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return
            if self.procs and self.procs[0].poll() is not None and self.procs[0].returncode != -9:
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
                         for p in sorted(self.tmp.glob("*.log")))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait(10)
        self.engine.dispose()


@contextmanager
def run_of(*args: object, **kw: object) -> Iterator[Run]:
    r = Run(*args, **kw)
    try:
        yield r
    finally:
        r.close()


def _events(r: Run, kind: str) -> list[tuple[str, str]]:
    return [(s, m) for s, m in r.q("select subject, message from events where kind=:k order by id", k=kind)]


def _receivers(r: Run, t: int) -> set[str]:
    return {x for (x,) in r.q("select distinct receiver from allocations where round_idx=:t and sender='llm'", t=t)}


def _assert_consistent(r: Run, rounds: int) -> None:
    """One finished run; every committed round whole: allocations, rewards and metrics agree."""
    assert r.q("select status from runs") == [("finished",)]
    assert [i for (i,) in r.q("select idx from rounds where status='done' order by idx")] == list(range(1, rounds + 1))
    assert r.q("select count(*) from rounds")[0][0] == rounds  # the redone round reused its row
    for t in range(1, rounds + 1):
        assert r.q("select count(*) from paths where round_idx=:t and author='llm'", t=t)[0][0] == 80
        given = 0
        for (name,) in r.q("select distinct subject from metrics where round_idx=:t and name='n_allocated' "
                           "and subject != 'llm'", t=t):
            n = r.q("select value from metrics where round_idx=:t and subject=:n and name='n_allocated'", t=t, n=name)
            rows = r.q("select count(*) from allocations where round_idx=:t and receiver=:n", t=t, n=name)
            rewards = r.q("select count(*) from rewards where round_idx=:t and receiver=:n and sample_id!='*'",
                          t=t, n=name)
            assert rows[0][0] == rewards[0][0] == int(n[0][0]), (t, name)
            given += rows[0][0]
        # a client may be given nothing in a late round: a sample goes to a client once
        # (filter.resend false) and the tiny LLM writes ~10 right paths of 80; the round still moved rows
        assert given > 0, t
    keys = {"metrics": "round_idx, subject, name", "allocations": "round_idx, receiver, sender, sample_id",
            "rewards": "round_idx, receiver, sender, sample_id", "paths": "round_idx, author, sample_id"}
    for table, key in keys.items():
        dup = r.q(f"select {key}, count(*) from {table} group by {key} having count(*) > 1")
        assert not dup, f"duplicated {table} rows: {dup[:3]}"


# ---------------------------------------------------------------------- server killed and restarted
@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["probe", "train", "train+clients"])
def test_server_killed_mid_round_resumes_on_the_same_database(tmp_path: Path, built_models: Path,  # noqa: F811
                                                              certs: Path, kill_at: str) -> None:  # noqa: F811
    """Killed while the clients probe round 2, or after they learned it but before the server
    committed it: the resumed server redoes round 2, and the clients undo their first try. In
    ``train+clients`` every client process dies with the server and restarts: the clients resume
    from their saved state folders, and undo round 2 from there."""
    server_tls = ["--transport.tls_cert", str(certs / "server.pem"), "--transport.tls_key", str(certs / "server.key"),
                  "--transport.tls_client_ca", str(certs / "ca.pem"), "--transport.heartbeat", "1"]

    def client_tls(name: str) -> list[str]:
        return ["--client.tls_ca", str(certs / "ca.pem"), "--client.tls_cert", str(certs / "clients" / f"{name}.pem"),
                "--client.tls_key", str(certs / "clients" / f"{name}.key")]

    # a larger held-out set keeps the server busy for seconds after the clients' reports (it
    # evaluates the LLM before committing), so the kill lands between "learned" and "committed"
    slow = {"data__n_server_test": 600} if kill_at != "probe" else {}
    with run_of(tmp_path, built_models, server_tls, client_tls, run__rounds=2, **slow) as r:
        server = r.server(1)
        clients = [r.client(n) for n in CLIENTS]
        r.wait(lambda: r.q("select idx from rounds where idx=2"), 150, "round 2 to start")
        if kill_at == "probe":
            time.sleep(1.0)  # clients are probing for round 2
        else:  # every client learned round 2; the server is still learning (or committing) it
            r.wait(lambda: all("round 2 TASK_KIND_TRAIN done" in (tmp_path / f"{n}.log").read_text()
                               for n in CLIENTS), 150, "clients to learn round 2")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        if kill_at == "train+clients":
            for c in clients:
                c.send_signal(signal.SIGKILL)
                c.wait(10)
            clients = [r.client(n) for n in CLIENTS]  # new processes: nothing in memory
        assert r.q("select status from runs") == [("running",)]
        assert r.q("select idx, status from rounds order by idx") == [(1, "done"), (2, "running")]
        round1 = {t: r.q(f"select * from {t} where round_idx in (0, 1) order by id")
                  for t in ("allocations", "rewards", "metrics", "paths")}
        assert all(round1.values())
        time.sleep(1.0)  # clients notice: their calls fail, they back off and retry

        server = r.server(2)  # same database, same data_dir: resumes
        assert server.wait(180) == 0, r.logs()
        for c in clients:
            assert c.wait(60) == 0, r.logs()

        _assert_consistent(r, rounds=2)
        assert r.q("select count(*) from runs")[0][0] == 1
        resume = _events(r, "resume")
        assert len(resume) == 1 and "at round 2" in resume[0][1] and "checkpoint of round 1" in resume[0][1]
        starts = [m for _, m in _events(r, "round_start")]
        assert starts == ["round 1", "round 2", "round 2 (again, after a restart)"]
        # nothing committed before the crash was lost or rewritten
        assert round1 == {t: r.q(f"select * from {t} where round_idx in (0, 1) order by id") for t in round1}
        assert _receivers(r, 2) == set(CLIENTS)
        for n in CLIENTS:
            log = (tmp_path / f"{n}.log").read_text()
            if kill_at == "train+clients":  # a new process, its state from disk
                assert log.count("registered (instance") == 2, log[-2000:]
                assert "resuming the run from its saved state" in log and "(after round 2)" in log, log[-2000:]
                saved = sorted((tmp_path / "clients" / n).glob("run-*/state-*"))
                assert json.loads((saved[-1] / "meta.json").read_text())["after"] == 2
            else:  # the clients kept their process (and model) and enrolled again with the new server
                assert "enrolling again" in log and log.count("registered (instance") == 1, log[-2000:]
            if kill_at != "probe":  # learned round 2 once already: back to its round-2 starting state
                assert "the server redoes round 2" in log, log[-2000:]
        ck = tmp_path / "checkpoints" / "run-1"
        assert sorted(p.name for p in ck.iterdir()) == ["round-1", "round-2"]
        assert not list(ck.glob(".*tmp"))


# ---------------------------------------------------------------------- clients killed / cut off
@pytest.mark.slow
def test_killed_and_stopped_clients_are_dropped_and_rejoin_later_rounds(tmp_path: Path, built_models: Path,  # noqa: F811
                                                                        certs: Path) -> None:  # noqa: F811
    # the deadline, not liveness, drops the stopped client
    server_tls = ["--transport.tls_cert", str(certs / "server.pem"), "--transport.tls_key", str(certs / "server.key"),
                  "--transport.heartbeat", "1", "--transport.liveness", "120"]

    def client_tls(name: str) -> list[str]:
        return ["--client.tls_ca", str(certs / "ca.pem")]

    with run_of(tmp_path, built_models, server_tls, client_tls, run__rounds=3, server__round_timeout=20) as r:
        server = r.server()
        c1, c2, c3 = (r.client(n) for n in CLIENTS)
        r.wait(lambda: r.q("select idx from rounds where idx=1"), 150, "round 1 to start")
        c1.send_signal(signal.SIGKILL)   # client-1 dies mid-round ...
        c2.send_signal(signal.SIGSTOP)   # ... client-2 is cut off
        t_stop = time.time()
        c1.wait(10)
        c1b = r.client("client-1")       # client-1 restarts (a new process, a new model in memory)
        r.wait(lambda: any(s == "client-2" for s, _ in _events(r, "drop")), 90, "client-2 to be dropped")
        assert time.time() - t_stop >= 19  # not before the 20 s round deadline
        c2.send_signal(signal.SIGCONT)
        assert server.wait(240) == 0, r.logs()
        for c in (c1b, c2, c3):
            assert c.wait(60) == 0, r.logs()

        _assert_consistent(r, rounds=3)
        # round 1 completed with the client that reported
        assert _receivers(r, 1) == {"client-3"}
        assert {s for s, m in _events(r, "drop") if "probe" in m} == {"client-1", "client-2"}
        # both came back: marked active again and part of a later round
        assert {"client-1", "client-2"} <= {s for s, _ in _events(r, "rejoin")}
        assert {"client-1", "client-2"} <= _receivers(r, 3)  # the two that came back learn in round 3
        took_part = r.q("select subject from metrics where round_idx=3 and name='n_allocated' and subject!='llm'")
        assert {s for (s,) in took_part} == set(CLIENTS)  # client-3 too (given nothing new, see _assert_consistent)
        assert r.q("select count(*) from clients")[0][0] == 3
        log2 = (tmp_path / "client-2.log").read_text()
        assert "enrolling again" in log2 or "register again" in log2, log2[-2000:]


# ---------------------------------------------------------------------- in-process: resume, min_clients


def _cfg(tmp_path: Path, model_cache: Path, **over: object) -> LadaConfig:
    return LadaConfig.load(TINY, overrides={"models.cache_dir": str(model_cache), "server.data_dir": str(tmp_path),
                                            **over}, env=False)


def test_checkpoint_restores_the_llm_adapter_and_filters(tmp_path: Path, model_cache: Path) -> None:
    cfg = _cfg(tmp_path, model_cache)
    store = Store(f"sqlite:///{tmp_path / 'ck.db'}")
    llm = LLMHost(cfg)

    class NoGrid:  # the transport is not used by checkpoints
        def stop(self) -> None: ...

    fed = Federation(cfg, NoGrid(), store, llm=llm, log=lambda s: None)
    assert fed._open_run() == 1
    with torch.no_grad():
        for p in llm.learner.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    pol = fed.alloc.policy("client-1", LLM, 7)
    rng = np.random.default_rng(0)
    if hasattr(pol, "filter"):
        pol.filter.update(rng.random((12, 7)), rng.random(12))
    llm.learner.keep([Pair("pub-1", "q", "a step #### 3", "")])
    fed.alloc.given = {("client-1", LLM): {"pub-7"}}
    train = llm.learner.train_cfg
    llm.learner.train_cfg = train.model_copy(update={"local_steps": 1, "batch_size": 2})
    llm.learner.learn_round([], [])  # one step on the kept path: Adam now has moments to restore
    llm.learner.train_cfg = train
    want_opt = {i: {k: v.clone() for k, v in st.items()} for i, st in llm.learner.opt.state_dict()["state"].items()}
    assert want_opt
    want_adapter = {k: v.clone() for k, v in llm.learner.adapter_state().items()}
    want_filter = {k: v.clone() for k, v in pol.state_dict().items()}
    store.start_round(fed.run_id, 1)
    from lada.server.db.writer import RoundRecord

    store.commit_round(fed.run_id, 1, RoundRecord())
    fed._checkpoint(1)
    store.start_round(fed.run_id, 2)  # ... and the server dies in round 2

    fresh = LLMHost(cfg)
    assert not torch.equal(next(iter(fresh.learner.adapter_state().values())), next(iter(want_adapter.values()))) \
        or len(want_adapter) == 0
    again = Federation(cfg, NoGrid(), store, llm=fresh, log=lambda s: None)
    assert again._open_run() == 2 and again.run_id == fed.run_id
    got = fresh.learner.adapter_state()
    assert got.keys() == want_adapter.keys() and all(torch.equal(got[k], want_adapter[k]) for k in got)
    assert {k: s.path for k, s in fresh.learner.kept.items()} == {"pub-1": "a step #### 3"}
    assert again.alloc.given == {("client-1", LLM): {"pub-7"}}
    got_opt = fresh.learner.opt.state_dict()["state"]
    assert got_opt.keys() == want_opt.keys()
    assert all(torch.equal(got_opt[i][k], want_opt[i][k]) for i in want_opt for k in want_opt[i])
    got_f = again.alloc.policies[("client-1", LLM)].state_dict()
    assert got_f.keys() == want_filter.keys() and all(torch.equal(got_f[k], want_filter[k]) for k in got_f)
    # a different config under the same run name is refused, not silently mixed in
    other = _cfg(tmp_path, model_cache, **{"run.budget": 3})
    with pytest.raises(RuntimeError, match="different config"):
        Federation(other, NoGrid(), store, llm=fresh, log=lambda s: None)._open_run()
    # --server.resume false starts a new run
    new = Federation(cfg, NoGrid(), store, llm=fresh, log=lambda s: None, resume=False)
    assert new._open_run() == 1 and new.run_id != fed.run_id


def test_a_round_with_fewer_than_min_clients_fails_clearly(tmp_path: Path, model_cache: Path) -> None:
    cfg = _cfg(tmp_path, model_cache, **{"server.min_clients": 2, "server.wait_clients": 2,
                                         "server.round_timeout": 1})

    class OneShows:
        """A transport where two clients registered but only one reports its probe."""

        stopped = False

        def wait_for_clients(self, n: int, timeout: float) -> list[str]:
            return ["client-1", "client-2"]

        def client_info(self, name: str) -> tuple[str, str]:
            return "m", "arith"

        def probe(self, t: int, cand: list, evaluate: bool, clients: list[str]) -> dict:
            return {"client-1": ProbeResult([], [], 0.0)}

        def stop(self) -> None:
            self.stopped = True

    grid = OneShows()
    store = Store(f"sqlite:///{tmp_path / 'min.db'}")
    fed = Federation(cfg, grid, store, log=lambda s: None)
    with pytest.raises(RoundFailed, match="min_clients is 2"):
        fed.run()
    with store.session() as s:
        kinds = [k for (k,) in s.execute(text("select kind from events order by id"))]
        assert s.execute(text("select status from runs")).scalar_one() == "failed"
    assert "round_failed" in kinds and "error" in kinds and kinds.count("drop") == 1
    assert grid.stopped  # clients are told to stop
