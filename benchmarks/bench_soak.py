"""Soak benchmark: one real `lada server`, N simulated clients, R rounds, under faults.

    .venv/bin/python benchmarks/bench_soak.py [--clients 200] [--rounds 20] [--procs 10] [--seed 0]
    .venv/bin/python benchmarks/bench_soak.py --quick        # 30 clients, 5 rounds, one server kill

The server and clients are those of ``benchmarks/bench_load.py`` (its model-free
``SimApp`` over the real client runtime, threads in worker processes); this driver
adds faults while the run goes on, one at a time:

- ``client_kill``: SIGKILL a worker process (all its clients), restart it 1-6 s later;
- ``client_restart``: SIGKILL a worker and restart it at once (new instances);
- ``client_stop``: SIGSTOP a worker for 2-10 s (past ``transport.liveness`` or not), SIGCONT;
- ``server_kill``: one per five rounds, SIGKILL of the server at a random moment of a
  round (just after it started, part-way through, or just after it was committed),
  then a restart on the same data dir and database: the server resumes the open run
  (its lock, server/lock.py, died with the killed process).

Each worker appends every report the server accepted (client, kind, round, rows,
time) to a file as it happens, so a SIGKILL loses nothing. From the server epochs
(start and kill times, rounds committed by each) the driver knows which accepted
reports belong to the try of a round that was committed, hence the rows expected:
per committed round its LLM candidates, and for each client that took part the
paths of its probe, the allocation and reward rows of its training and its metric
rows; ``verify`` compares them with the rows present, checks every round is
committed exactly once with no duplicated row, that no phase outlived the round
deadline and that every client exited soon after the run ended, and that the
server's peak memory (VmHWM of each server process, max over restarts) is bounded.
tests/system/test_soak.py runs ``--quick`` and asserts ``verify`` finds nothing.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import (  # noqa: E402
    DOMAINS,
    TINY,
    TOKEN,
    SimApp,
    _cli,
    _free_port,
    _wait_healthy,
    client_names,
    driver_parser,
)

#: transport knobs of the soak's server: quick heartbeats so a stopped or killed client counts as
#: gone within seconds (not the default 30 s), room in the pool for every client's long-poll and
#: streams, and a linger long enough for clients in a retry back-off (up to ~15 s) to pull STOP
HEARTBEAT_S, LIVENESS_S, LINGER_S = 2.0, 8.0, 15.0
MEMORY_CAP_MIB = 3072  # "bounded": the tiny server needs well under 1 GiB; this is a generous cap


# ---------------------------------------------------------------------- the simulated clients (worker side)
class _Recorder:
    """Appends one JSON line per accepted report to a file, each with a single write (atomic on a kill)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __call__(self, **rec: Any) -> None:
        os.write(self.fd, (json.dumps({**rec, "t": time.time()}) + "\n").encode())


class SoakApp(SimApp):
    """bench_load's SimApp that remembers its last result, for the record of the accepted report."""

    last: tuple[str, int, int] = ("", 0, 0)

    def probe(self, task: Any, cand: list) -> Any:
        out = super().probe(task, cand)
        self.last = ("probe", task.round, len(out.own_paths))
        return out

    def train(self, task: Any, samples: list) -> Any:
        out = super().train(task, samples)
        self.last = ("train", task.round, len(out.samples))
        return out


def worker(address: str, names: list[str], events: str, give_up_after: float) -> int:
    """Run one simulated client per name (a thread each) until the server says STOP."""
    from lada.client.runtime import Connection, run_client

    record = _Recorder(events)
    errors: list[str] = []

    def one(name: str) -> None:
        app = SoakApp(name, random.randrange(1 << 16))
        report_rpc = {"ReportLearnability": "probe", "ReportReward": "train"}

        def observe(rpc: str, secs: float, code: str) -> None:
            if code == "OK" and report_rpc.get(rpc) == app.last[0]:
                record(c=name, k=app.last[0], r=app.last[1], n=app.last[2])

        try:
            conn = Connection(address, name, TOKEN, "sim", DOMAINS[int(name[4:]) % 3], max_message_mb=16,
                              chunk_kb=64, call_timeout=60, give_up_after=give_up_after, observer=observe)
            n = run_client(conn, app, poll_s=10.0)
            conn.channel.close()
            record(c=name, k="stop", r=0, n=n)
        except Exception as e:  # noqa: BLE001 - recorded; the driver reports it
            errors.append(name)
            record(c=name, k="error", r=0, n=0, why=f"{type(e).__name__}: {e}"[:300])

    threads = [threading.Thread(target=one, args=(n,), name=n) for n in names]
    for i, t in enumerate(threads):
        t.start()
        if i % 25 == 24:
            time.sleep(0.05)
    for t in threads:
        t.join()
    return 1 if errors else 0


# ---------------------------------------------------------------------- the driver
@dataclass
class Epoch:
    """One server process: when it ran, the rounds it committed, its peak memory."""

    n: int
    proc: subprocess.Popen
    start: float
    end: float = math.inf
    done_before: set[int] = field(default_factory=set)
    committed: set[int] = field(default_factory=set)
    hwm_kib: int = 0
    killed_at: str = ""


def _hwm_kib(pid: int) -> int:
    """Peak resident memory of a live process (VmHWM; psutil's current RSS where /proc has none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss // 1024
    except Exception:  # noqa: BLE001 - gone, or no psutil: nothing to sample
        return 0


class Soak:
    """The processes of one soak run, the faults it injects, and what it observed."""

    def __init__(self, n_clients: int, rounds: int, procs: int, work: Path, model_cache: str | None,
                 round_timeout: float, fault_every: float, seed: int, max_workers: int) -> None:
        import yaml
        from sqlalchemy import create_engine

        self.n_clients, self.rounds, self.work, self.round_timeout = n_clients, rounds, work, round_timeout
        self.fault_every, self.rng = fault_every, random.Random(seed)
        self.names = client_names(n_clients)
        self.groups = [self.names[i::procs] for i in range(procs)]
        self.address = f"127.0.0.1:{_free_port()}"
        self.db = f"sqlite:///{work / 'soak.db'}"
        # at most one worker is faulted at a time, but a round may see a few of them: a round needs
        # a quarter of the clients; the first round (and the first after a restart) waits for all
        cfg = {
            "run": {"name": "soak", "rounds": rounds, "server_budget": 0, "threads": 1},
            "data": {"client_domains": {n: DOMAINS[i % 3] for i, n in enumerate(self.names)}, "n_train": 1,
                     "n_test": 1},
            "server": {"wait_clients": n_clients, "min_clients": max(1, n_clients // 4),
                       "round_timeout": round_timeout, "join_token": TOKEN, "address": self.address,
                       "data_dir": str(work), "db": self.db},
        }
        base = yaml.safe_load(TINY.read_text())
        for sec, vals in cfg.items():
            base.setdefault(sec, {}).update(vals)
        if model_cache:
            base.setdefault("models", {})["cache_dir"] = model_cache
        self.n_public, self.budget = int(base["data"]["n_public"]), int(base["run"]["budget"])
        self.cfg_path = work / "soak.yaml"
        self.cfg_path.write_text(yaml.safe_dump(base))
        self.server_args = ["--transport.heartbeat", str(HEARTBEAT_S), "--transport.liveness", str(LIVENESS_S),
                            "--transport.linger", str(LINGER_S), "--transport.max_workers", str(max_workers)]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.engine = create_engine(self.db)
        self.epochs: list[Epoch] = []
        self.workers: dict[int, subprocess.Popen] = {}
        self.incarnation: Counter = Counter()
        self.faults: Counter = Counter()
        self.fault_log: list[str] = []
        self.client_kills: dict[str, list[float]] = defaultdict(list)  # name -> SIGKILL times of its process
        self.t0 = time.time()

    # -------------------------------------------------------------- processes
    def start_server(self) -> Epoch:
        n = len(self.epochs) + 1
        done = self.done_rounds()
        start = time.time()
        proc = subprocess.Popen(_cli("server", "--config", str(self.cfg_path), *self.server_args),
                                stdout=open(self.work / f"server-{n}.log", "w"), stderr=subprocess.STDOUT,
                                env=self.env)
        ep = Epoch(n, proc, start, done_before=done)
        self.epochs.append(ep)
        _wait_healthy(self.address, None, proc, timeout=300)
        return ep

    def start_worker(self, i: int) -> None:
        self.incarnation[i] += 1
        k = self.incarnation[i]
        self.workers[i] = subprocess.Popen(
            [sys.executable, __file__, "worker", "--address", self.address, "--names", ",".join(self.groups[i]),
             "--events", str(self.work / f"events-{i}-{k}.jsonl"), "--give-up-after", "300"],
            stdout=open(self.work / f"worker-{i}-{k}.log", "w"), stderr=subprocess.STDOUT, env=self.env)

    def sample_memory(self) -> None:
        for ep in self.epochs:
            if ep.proc.poll() is None:
                ep.hwm_kib = max(ep.hwm_kib, _hwm_kib(ep.proc.pid))

    # -------------------------------------------------------------- database
    def q(self, sql: str, **params: object) -> list:
        from sqlalchemy import text

        try:
            with self.engine.connect() as c:
                return list(c.execute(text(sql), params).all())
        except Exception:  # noqa: BLE001 - the schema may not exist yet while the first server starts
            return []

    def done_rounds(self) -> set[int]:
        return {i for (i,) in self.q("select idx from rounds where status='done'")}

    def started_round(self) -> int:
        rows = self.q("select max(idx) from rounds")
        return int(rows[0][0] or 0) if rows else 0

    def mean_round_s(self) -> float:
        tim = [json.loads(x) if isinstance(x, str) else (x or {})
               for (x,) in self.q("select timings from rounds where status='done'")]
        return sum(sum(t.values()) for t in tim) / len(tim) if tim else 5.0

    # -------------------------------------------------------------- faults
    def kill_plan(self) -> list[tuple[int, str]]:
        """One server kill per five rounds: (round, moment), the round in [2, rounds - 1]."""
        plan = []
        for b in range(math.ceil(self.rounds / 5)):
            lo, hi = max(2, 5 * b + 1), min(5 * b + 5, self.rounds - 1)
            if lo <= hi:
                plan.append((self.rng.randint(lo, hi), self.rng.choice(["start", "mid", "after_commit"])))
        return plan

    def kill_due(self, target: int, moment: str, since: list[float]) -> bool:
        """Whether the planned kill's moment has come; ``since`` keeps when the round was seen started."""
        started = self.started_round()
        if moment == "after_commit":
            return target in self.done_rounds()
        if started < target:
            return False
        if not since:
            frac = self.rng.uniform(0.2, 0.9)
            delay = self.rng.uniform(0.2, 1.0) if moment == "start" else frac * self.mean_round_s()
            since.append(time.time() + delay)
        return time.time() >= since[0] or started > target

    def kill_server(self, target: int, moment: str) -> None:
        ep = self.epochs[-1]
        self.sample_memory()
        ep.proc.send_signal(signal.SIGKILL)
        if ep.proc.wait(30) != -signal.SIGKILL:
            return  # it had finished the run just before: nothing to restart
        ep.end = time.time()
        ep.committed = self.done_rounds() - ep.done_before
        ep.killed_at = f"round {target} {moment} (rounds started: {self.started_round()})"
        self.faults["server_kill"] += 1
        self.fault_log.append(f"{ep.end - self.t0:7.1f}s server_kill {ep.killed_at}")
        time.sleep(self.rng.uniform(1.0, 3.0))
        self.start_server()

    def client_fault(self) -> None:
        i = self.rng.randrange(len(self.groups))
        kind = self.rng.choice(["client_kill", "client_restart", "client_stop"])
        w = self.workers[i]
        if w.poll() is not None:
            return  # it finished (the run is ending)
        t = time.time() - self.t0
        if kind == "client_stop":
            secs = self.rng.uniform(2.0, 10.0)
            w.send_signal(signal.SIGSTOP)
            self._sleep_sampling(secs)
            w.send_signal(signal.SIGCONT)
            what = f"SIGSTOP {secs:.1f}s"
        else:
            w.send_signal(signal.SIGKILL)
            w.wait(30)
            for name in self.groups[i]:
                self.client_kills[name].append(time.time())
            secs = self.rng.uniform(1.0, 6.0) if kind == "client_kill" else 0.0
            self._sleep_sampling(secs)
            self.start_worker(i)
            what = f"SIGKILL, restarted after {secs:.1f}s"
        self.faults[kind] += 1
        self.fault_log.append(f"{t:7.1f}s {kind} worker {i} ({len(self.groups[i])} clients): {what}")

    def _sleep_sampling(self, secs: float) -> None:
        end = time.time() + secs
        while time.time() < end:
            self.sample_memory()
            time.sleep(min(0.5, max(0.0, end - time.time())))

    # -------------------------------------------------------------- the run
    def run(self, timeout: float) -> dict:
        deadline = self.t0 + timeout
        self.start_server()
        for i in range(len(self.groups)):
            self.start_worker(i)
        plan = self.kill_plan()
        since: list[float] = []
        next_fault = math.inf
        timed_out = False
        while True:
            ep = self.epochs[-1]
            self.sample_memory()
            if ep.proc.poll() is not None:
                break
            if time.time() > deadline:
                timed_out = True
                break
            started = self.started_round()
            if next_fault == math.inf and started >= 1:
                next_fault = time.time() + self.rng.uniform(0.5, 1.5) * self.fault_every
            if plan and self.kill_due(*plan[0], since):
                self.kill_server(*plan.pop(0))
                since = []
            elif started < self.rounds and time.time() >= next_fault:  # no client faults in the last round
                self.client_fault()
                next_fault = time.time() + self.rng.uniform(0.5, 1.5) * self.fault_every
            time.sleep(0.2)
        ep = self.epochs[-1]
        if timed_out:
            self.sample_memory()
            ep.proc.kill()
            ep.proc.wait(30)
        ep.end = time.time()
        ep.committed = self.done_rounds() - ep.done_before
        # every client should pull STOP during the linger and exit; a client still running a round
        # deadline after the server exited was left waiting
        exits: dict[int, float] = {}
        end = ep.end + self.round_timeout
        for i, w in self.workers.items():
            try:
                w.wait(max(0.1, end - time.time()))
                exits[i] = time.time() - ep.end
            except subprocess.TimeoutExpired:
                pass
        for w in self.workers.values():
            if w.poll() is None:
                w.send_signal(signal.SIGCONT)
                w.kill()
                w.wait(30)
        return self.results(timed_out, exits, time.time() - self.t0)

    # -------------------------------------------------------------- what happened
    def records(self) -> list[dict]:
        out = []
        for f in sorted(self.work.glob("events-*.jsonl")):
            for line in f.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # cut by a kill (a single write should never be)
        return out

    def epoch_of(self, t: float) -> Epoch:
        """The server that accepted a report at time ``t``: the newest started before it."""
        return [ep for ep in self.epochs if ep.start <= t][-1]

    def results(self, timed_out: bool, exits: dict[int, float], wall: float) -> dict:
        recs = self.records()
        expected: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
        for r in recs:
            if r["k"] in ("probe", "train") and r["r"] in self.epoch_of(r["t"]).committed:
                expected[(r["r"], r["c"])][r["k"]] = r["n"]
        runs = self.q("select id, status from runs")
        rid = runs[0][0] if runs else 0
        n_allocated = {(t, c): int(v) for t, c, v in self.q(
            "select round_idx, subject, value from metrics where run_id=:r and name='n_allocated'", r=rid)}
        own_paths = {(t, c): n for t, c, n in self.q(
            "select round_idx, author, count(*) from paths where run_id=:r and author != 'llm' "
            "group by round_idx, author", r=rid)}
        # a report the server accepted just before the client's process was SIGKILLed never reached
        # the client's record: that (round, client) is expected from the server's own counts, if the
        # client was killed while the server that committed the round ran
        inflight = 0
        for ep in self.epochs:
            for t in ep.committed:
                for key, kind, n in [*(((t, c), "probe", v) for (tt, c), v in own_paths.items() if tt == t),
                                     *(((t, c), "train", v) for (tt, c), v in n_allocated.items() if tt == t)]:
                    if kind not in expected.get(key, {}) and any(
                            ep.start <= k <= ep.end for k in self.client_kills.get(key[1], [])):
                        expected[key][kind] = n
                        expected[key]["inflight"] = 1
                        inflight += 1
        present: dict[str, dict] = {}
        for table, who, extra in (("paths", "author", "author != 'llm'"),
                                  ("allocations", "receiver", "sender = 'llm'"),
                                  ("rewards", "receiver", "sender = 'llm' and sample_id != '*'")):
            present[table] = {(t, c): n for t, c, n in self.q(
                f"select round_idx, {who}, count(*) from {table} where run_id=:r and {extra} "
                f"group by round_idx, {who}", r=rid)}
        metrics: dict[tuple[int, str], set[str]] = defaultdict(set)
        for t, c, name in self.q("select round_idx, subject, name from metrics where run_id=:r and subject != 'llm' "
                                 "and round_idx > 0", r=rid):
            metrics[(t, c)].add(name)
        keys = {"metrics": "round_idx, subject, name", "allocations": "round_idx, receiver, sender, sample_id",
                "rewards": "round_idx, receiver, sender, sample_id", "paths": "round_idx, author, sample_id"}
        dups = {t: self.q(f"select {k}, count(*) from {t} where run_id=:r group by {k} having count(*) > 1", r=rid)[:3]
                for t, k in keys.items()}
        stops = {r["c"] for r in recs if r["k"] == "stop"}
        return {
            "n_clients": self.n_clients, "rounds": self.rounds, "procs": len(self.groups), "wall_s": wall,
            "timed_out": timed_out, "round_timeout": self.round_timeout, "workdir": str(self.work),
            "runs": runs, "server_rcs": [ep.proc.returncode for ep in self.epochs],
            "rounds_rows": self.q("select idx, status from rounds where run_id=:r order by idx", r=rid),
            "round_starts": Counter(m for (m,) in self.q(
                "select message from events where run_id=:r and kind='round_start'", r=rid)),
            "resumes": [m for (m,) in self.q("select message from events where run_id=:r and kind='resume'", r=rid)],
            "timings": [json.loads(x) if isinstance(x, str) else (x or {}) for (x,) in self.q(
                "select timings from rounds where run_id=:r and status='done' order by idx", r=rid)],
            "epochs": [{"n": ep.n, "committed": sorted(ep.committed), "killed_at": ep.killed_at,
                        "hwm_mib": ep.hwm_kib / 1024} for ep in self.epochs],
            "faults": dict(self.faults), "fault_log": self.fault_log,
            "expected": dict(expected), "inflight": inflight, "n_allocated": n_allocated,
            "budget": self.budget, "present": present, "metrics": dict(metrics), "dups": dups,
            "llm_paths": dict(self.q("select round_idx, count(*) from paths where run_id=:r and author='llm' "
                                     "group by round_idx", r=rid)),
            "n_public": self.n_public,
            "before": dict(self.q("select subject, count(*) from metrics where run_id=:r and round_idx=0 and "
                                  "name='accuracy' and subject != 'llm' group by subject", r=rid)),
            "client_rows": sorted(n for (n,) in self.q("select name from clients where run_id=:r", r=rid)),
            "client_errors": [r for r in recs if r["k"] == "error"],
            "stopped_clients": len(stops), "worker_exits": exits, "n_workers": len(self.groups),
        }


def run_soak(n_clients: int = 200, rounds: int = 20, procs: int = 10, workdir: Path | None = None,
             model_cache: str | None = None, round_timeout: float = 30.0, fault_every: float = 6.0, seed: int = 0,
             timeout: float = 25 * 60, build_models: bool = True, max_workers: int = 512) -> dict:
    """Run the whole soak; returns what ``report`` prints and ``verify`` checks."""
    work = Path(workdir or tempfile.mkdtemp(prefix="lada-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(n_clients, rounds, procs, work, model_cache, round_timeout, fault_every, seed, max_workers)
    if build_models:
        subprocess.run(_cli("models", "build", "--config", str(soak.cfg_path)), check=True, capture_output=True,
                       timeout=900, env=soak.env)
    try:
        return soak.run(timeout)
    finally:
        for p in [*(ep.proc for ep in soak.epochs), *soak.workers.values()]:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
        soak.engine.dispose()


# ---------------------------------------------------------------------- checks and figures
TRAIN_METRICS = {"accuracy", "reward", "n_allocated"}
#: the metric of a client's probe (public-mix accuracy at the round's start), under either name the
#: database has used for it (renamed to public_accuracy_before by Alembic revision 0002)
PROBE_METRICS = {"public_accuracy_before", "public_accuracy"}
BYTES_METRICS = {"bytes_up", "bytes_down"}  # only for a client the server still had a slot of at commit


def row_counts(res: dict) -> dict[str, tuple[int, int]]:
    """table -> (rows expected, rows present, of those expected) for the committed rounds."""
    exp, pres = res["expected"], res["present"]
    out: dict[str, list[int]] = {k: [0, 0] for k in ("paths", "allocations", "rewards", "metrics")}
    for key, got in exp.items():
        have = res["metrics"].get(key, set())
        if "probe" in got:
            out["paths"][0] += got["probe"]
            out["paths"][1] += pres["paths"].get(key, 0)
            out["metrics"][0] += 1
            out["metrics"][1] += bool(PROBE_METRICS & have)
        if "train" in got:
            for t in ("allocations", "rewards"):
                out[t][0] += got["train"]
                out[t][1] += pres[t].get(key, 0)
            out["metrics"][0] += len(TRAIN_METRICS)
            out["metrics"][1] += len(TRAIN_METRICS & have)
    done = [i for i, s in res["rounds_rows"] if s == "done"]
    out["rounds"] = [res["rounds"], len(done)]
    out["llm candidates"] = [res["n_public"] * len(done), sum(res["llm_paths"].get(i, 0) for i in done)]
    out["clients"] = [res["n_clients"], len(res["client_rows"])]
    return {k: (a, b) for k, a, b in ((k, *v) for k, v in out.items())}


def verify(res: dict, memory_cap_mib: float = MEMORY_CAP_MIB) -> list[str]:
    """Every round committed once, every expected row present (and none unexpected), no client
    left waiting past a round deadline, server memory bounded."""
    bad: list[str] = []
    if res["timed_out"]:
        bad.append(f"timed out after {res['wall_s']:.0f}s")
    if [s for _, s in res["runs"]] != ["finished"] or res["server_rcs"][-1] != 0:
        bad.append(f"runs {res['runs']}, server exit codes {res['server_rcs']}")
    want = [(i, "done") for i in range(1, res["rounds"] + 1)]
    if res["rounds_rows"] != want:
        bad.append(f"rounds rows {res['rounds_rows']}, expected each of 1..{res['rounds']} once, done")
    committed = [r for ep in res["epochs"] for r in ep["committed"]]
    if sorted(committed) != sorted(set(committed)):
        bad.append(f"a round committed by two servers: {res['epochs']}")
    kills = res["faults"].get("server_kill", 0)
    if len(res["resumes"]) != kills:
        bad.append(f"{len(res['resumes'])} resume events for {kills} server kills")
    for name, (a, b) in row_counts(res).items():
        if a != b:
            bad.append(f"{name}: {b} rows present of {a} expected")
    exp, pres = res["expected"], res["present"]
    for table, kind in (("paths", "probe"), ("allocations", "probe"), ("rewards", "train")):
        extra = [k for k in pres[table] if kind not in exp.get(k, {})]
        if extra:
            bad.append(f"{table}: rows of {len(extra)} (round, client) pairs no accepted report explains, e.g. "
                       f"{extra[:3]}")
    for table, kind in (("paths", "probe"), ("allocations", "train"), ("rewards", "train")):
        wrong = [(k, exp[k][kind], pres[table].get(k, 0)) for k in exp if kind in exp[k]
                 and pres[table].get(k, 0) != exp[k][kind]]
        if wrong:
            bad.append(f"{table}: (round, client, expected, present) {wrong[:3]}")
    # a client allocated samples and dropped before it trained: its allocation rows (what the
    # server chose) without rewards, at most the budget
    untrained = [(k, n) for k, n in pres["allocations"].items() if "train" not in exp.get(k, {})
                 and not 0 < n <= res["budget"]]
    if untrained:
        bad.append(f"allocations of clients that did not train, outside 1..budget: {untrained[:3]}")
    wrong_n = [k for k in exp if "train" in exp[k] and res["n_allocated"].get(k) != exp[k]["train"]]
    if wrong_n:
        bad.append(f"n_allocated metric differs from the rows the client got: {wrong_n[:3]}")
    for key, names in res["metrics"].items():
        allowed = (PROBE_METRICS if "probe" in exp.get(key, {}) else set()) | (
            TRAIN_METRICS | BYTES_METRICS if "train" in exp.get(key, {}) else set())
        if names - allowed:
            bad.append(f"metrics {key}: {sorted(names - allowed)} without an accepted report")
    probed = {c for (_, c), got in exp.items() if "probe" in got}
    if any(n != 1 for n in res["before"].values()) or set(res["before"]) != probed:
        bad.append(f"round-0 accuracy rows: {len(res['before'])} clients for {len(probed)} that probed")
    if res["client_rows"] != client_names(res["n_clients"]):
        bad.append(f"{len(res['client_rows'])} client rows for {res['n_clients']} clients")
    for table, rows in res["dups"].items():
        if rows:
            bad.append(f"duplicated {table} rows: {rows}")
    bad += [f"client error: {r['c']}: {r.get('why')}" for r in res["client_errors"][:5]]
    bad += waiting(res)
    peak = max((ep["hwm_mib"] for ep in res["epochs"]), default=0.0)
    if not 0 < peak <= memory_cap_mib:
        bad.append(f"peak server memory {peak:.0f} MiB (cap {memory_cap_mib} MiB)")
    return bad[:50]


def waiting(res: dict) -> list[str]:
    """Clients left waiting past a round deadline: a phase that outlived it, or a client still
    running a round deadline after the run ended (it never got its STOP)."""
    out = []
    slack = 5.0  # the deadline is checked once a second, and a phase ends with a little work
    for i, tim in enumerate(res["timings"], 1):
        long = {k: v for k, v in tim.items() if k in ("probe", "client_learn") and v > res["round_timeout"] + slack}
        if long:
            out.append(f"round {i}: {long} past the {res['round_timeout']:.0f}s round deadline")
    left = res["n_workers"] - len(res["worker_exits"])
    if left:
        out.append(f"{left} worker process(es) still running {res['round_timeout']:.0f}s after the server exited")
    if res["stopped_clients"] != res["n_clients"]:
        out.append(f"{res['stopped_clients']} of {res['n_clients']} clients were told STOP")
    return out


def report(res: dict) -> str:
    rc = row_counts(res)
    longest = max((v for tim in res["timings"] for k, v in tim.items() if k in ("probe", "client_learn")),
                  default=0.0)
    exits = max(res["worker_exits"].values(), default=float("nan"))
    peak = max((ep["hwm_mib"] for ep in res["epochs"]), default=0.0)
    wait = waiting(res)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(res["faults"].items()))
    lines = [
        f"soak: {res['n_clients']} clients in {res['procs']} worker processes, {res['rounds']} rounds, "
        f"round_timeout {res['round_timeout']:.0f}s, wall {res['wall_s']:.0f}s"
        + (" (TIMED OUT)" if res["timed_out"] else ""),
        f"rounds completed: {rc['rounds'][1]}/{res['rounds']} "
        f"(rounds rows {len(res['rounds_rows'])}, round_start events "
        f"{sum(res['round_starts'].values())}, resume events {len(res['resumes'])})",
        f"faults injected: {sum(res['faults'].values())} ({kinds})",
    ]
    lines += [f"  {x}" for x in res["fault_log"]]
    lines.append(f"server processes: {len(res['epochs'])}, exit codes {res['server_rcs']}")
    lines += [f"  server {ep['n']}: committed rounds {ep['committed']}, peak RSS {ep['hwm_mib']:.0f} MiB"
              + (f", SIGKILLed at {ep['killed_at']}" if ep["killed_at"] else "") for ep in res["epochs"]]
    untrained = sum(n for k, n in res["present"]["allocations"].items() if "train" not in res["expected"].get(k, {}))
    lines.append(f"{'rows':<16} {'expected':>9} {'present':>9}   (allocations: of clients that trained; "
                 f"{untrained} more to clients dropped before training; {res['inflight']} report(s) accepted as "
                 "the client's process was SIGKILLed, expected from the server's counts)")
    lines += [f"{k:<16} {a:>9} {b:>9}" for k, (a, b) in rc.items()]
    lines += [
        f"clients left waiting past a round deadline: {'none' if not wait else '; '.join(wait)} "
        f"(longest phase {longest:.1f}s of {res['round_timeout']:.0f}s; last worker exited {exits:.1f}s after the "
        f"server; {res['stopped_clients']}/{res['n_clients']} clients told STOP)",
        f"peak server memory: {peak:.0f} MiB (VmHWM, max over {len(res['epochs'])} server processes)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap, w = driver_parser(__doc__)
    w.add_argument("--events", required=True)
    w.add_argument("--give-up-after", type=float, default=300.0)
    ap.add_argument("--quick", action="store_true", help="30 clients in 5 processes, 5 rounds (one server kill)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--procs", type=int, default=10, help="worker processes the clients are spread over")
    ap.add_argument("--round-timeout", type=float, default=30.0, help="the server's server.round_timeout")
    ap.add_argument("--fault-every", type=float, default=6.0, help="mean seconds between client faults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=25 * 60, help="give up (and report) after this many seconds")
    ap.add_argument("--max-workers", type=int, default=512, help="the server's --transport.max_workers")
    ap.add_argument("--workdir", help="keep the database, config and logs here")
    ap.add_argument("--model-cache", default=os.environ.get("LADA_TEST_MODEL_CACHE"))
    args = ap.parse_args(argv)
    if args.cmd == "worker":
        return worker(args.address, args.names.split(","), args.events, args.give_up_after)
    n, rounds, procs = (30, 5, 5) if args.quick else (args.clients, args.rounds, args.procs)
    res = run_soak(n, rounds, procs, Path(args.workdir) if args.workdir else None, args.model_cache,
                   args.round_timeout, args.fault_every, args.seed, args.timeout, max_workers=args.max_workers)
    print(report(res))
    bad = verify(res)
    print("verify: " + ("every round committed once, every expected row present, no client left waiting, "
                        "memory bounded" if not bad else "PROBLEMS:\n  " + "\n  ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
