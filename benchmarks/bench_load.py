"""Load benchmark: N light simulated clients against one real `lada server`.

    .venv/bin/python benchmarks/bench_load.py [--clients 200] [--rounds 1] [--procs 2] [--tls]

The server is the real `lada server` process (tiny embedded LLM, the real
round loop, SQLite). The clients are the real client runtime
(``lada.client.runtime``: enrolment, heartbeats, long-poll, chunked
download/upload with resume, retries) with a model-free task handler: each
one registers, downloads the candidate paths, reports learnability statistics
for every candidate (and uploads its own paths), pulls its allocation and
reports rewards. They run as threads in ``--procs`` worker processes, one
gRPC channel each.

Prints, per RPC and overall (unary RPCs and streams; the PullTask long-poll is
shown apart, its latency is mostly waiting by design), p50/p99 latency and
counts, and throughput: database rows the run committed per second of round
time, and learnability statistics ingested per second of probe phase. Then it
checks every row is in the database (``verify``); tests/system/test_load.py runs the
same thing and asserts no errors and no missing row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lada.common.config import TransportConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "common" / "configs" / "tiny.yaml"
DOMAINS = ("arith", "shop", "clock")
TOKEN = "bench-load-token"


def client_names(n: int) -> list[str]:
    return [f"sim-{i:03d}" for i in range(n)]


# ---------------------------------------------------------------------- the simulated client (worker side)
class SimApp:
    """A client without a model: valid, random statistics and rewards, for load."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.rng = name, random.Random(seed)
        self.allocated: dict[int, int] = {}
        self.probed: dict[int, int] = {}

    def probe(self, task: Any, cand: list) -> Any:
        from lada.common.rounds import ProbeResult, ReasoningPath, SampleStats

        public_accuracy = self.rng.random()
        stats, own = [], []
        for p in cand:
            ok = self.rng.random() < 0.3
            stats.append(SampleStats(p.sample_id, nll=self.rng.uniform(0.5, 4.0), sender_len=self.rng.randint(5, 60),
                                     own_len=self.rng.randint(5, 60), own_correct=ok, sender_correct=p.correct,
                                     answer_ce=self.rng.uniform(0.1, 3.0)))
            own.append(ReasoningPath(p.sample_id, p.question, f"{self.name} thinks #### {p.answer}", p.answer, ok))
        test_accuracy = self.rng.random() if task.evaluate else None
        self.probed[task.round] = len(cand)
        return ProbeResult(stats, own, public_accuracy, test_accuracy)

    def train(self, task: Any, samples: list) -> Any:
        from lada.common.rounds import SampleReward, TrainResult

        self.allocated[task.round] = len(samples)
        out = TrainResult(test_accuracy=self.rng.random(), steps=1, train_seconds=0.01)
        for s in samples:
            b = self.rng.uniform(1.0, 3.0)
            out.samples.append(SampleReward(s.sample_id, b, b * self.rng.uniform(0.7, 1.05)))
        return out


def worker(address: str, names: list[str], out: str, ca: str | None) -> int:
    """Run one simulated client per name (a thread each); write latencies and counts to ``out``."""
    import grpc  # noqa: F401 - fail early if the worker's environment lacks it
    from lada.client.runtime import Connection, run_client
    from lada.common.tls import channel_credentials

    lat: list[tuple[str, float, str]] = []
    lock = threading.Lock()

    def observe(rpc: str, secs: float, code: str) -> None:
        with lock:
            lat.append((rpc, secs, code))

    apps: dict[str, SimApp] = {}
    errors: list[str] = []
    done: dict[str, int] = {}

    def one(name: str) -> None:
        app = apps[name] = SimApp(name, hash(name) & 0xFFFF)
        try:
            conn = Connection(address, name, TOKEN, "sim", DOMAINS[int(name[4:]) % 3], max_message_mb=16,
                              chunk_kb=64, tls=channel_credentials(ca) if ca else None, call_timeout=60,
                              give_up_after=120, observer=observe)
            done[name] = run_client(conn, app, poll_s=10.0)
            conn.channel.close()
        except Exception as e:  # noqa: BLE001 - reported, and fails the run
            errors.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(n,), name=n) for n in names]
    for i, t in enumerate(threads):
        t.start()
        if i % 25 == 24:
            time.sleep(0.05)  # a ramp, not a thundering herd of TLS handshakes
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps({
        "latencies": lat, "errors": errors, "tasks": done,
        "allocated": {n: a.allocated for n, a in apps.items()},
        "probed": {n: a.probed for n, a in apps.items()},
    }))
    return 1 if errors else 0


# ---------------------------------------------------------------------- the driver
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lada.cli", *args]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_load(n_clients: int = 200, rounds: int = 1, procs: int = 2, workdir: Path | None = None,
             model_cache: str | None = None, tls: bool = False, timeout: float = 600.0, build_models: bool = True,
             max_workers: int = TransportConfig().max_workers) -> dict:
    """Run the whole benchmark; returns the latencies, counts, database facts and timings."""
    work = Path(workdir or tempfile.mkdtemp(prefix="lada-load-"))
    work.mkdir(parents=True, exist_ok=True)
    names = client_names(n_clients)
    port = _free_port()
    db = f"sqlite:///{work / 'load.db'}"
    cfg = {
        "run": {"name": "load", "rounds": rounds, "server_budget": 0, "threads": 1},
        "data": {"client_domains": {n: DOMAINS[i % 3] for i, n in enumerate(names)}, "n_train": 1, "n_test": 1},
        "server": {"wait_clients": n_clients, "min_clients": n_clients, "round_timeout": 120.0,
                   "join_token": TOKEN, "address": f"127.0.0.1:{port}", "data_dir": str(work), "db": db},
    }
    import yaml

    base = yaml.safe_load(TINY.read_text())
    for sec, vals in cfg.items():
        base.setdefault(sec, {}).update(vals)
    if model_cache:
        base.setdefault("models", {})["cache_dir"] = model_cache
    cfg_path = work / "load.yaml"
    cfg_path.write_text(yaml.safe_dump(base))
    server_args: list[str] = []
    ca = None
    if tls:
        certs = work / "certs"
        subprocess.run([str(ROOT / "deploy" / "make-certs.sh"), str(certs), "--clients", ""], check=True,
                       capture_output=True, timeout=60)
        server_args = ["--transport.tls_cert", str(certs / "server.pem"), "--transport.tls_key",
                       str(certs / "server.key")]
        ca = str(certs / "ca.pem")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "LADA_RPC_TIMINGS": str(work / "rpc_server.json")}  # the server's own time per RPC (serve.py)
    if build_models:
        subprocess.run(_cli("models", "build", "--config", str(cfg_path)), check=True, capture_output=True,
                       timeout=600, env=env)
    t0 = time.time()
    prof = os.environ.get("LADA_BENCH_PROFILE")  # a cProfile of the server's main thread (the round loop)
    server_cmd = _cli("server", "--config", str(cfg_path), "--transport.linger", "3",
                      "--transport.max_workers", str(max_workers), *server_args)
    if prof:
        server_cmd[1:1] = ["-m", "cProfile", "-o", str(work / "server.prof")]
    if os.environ.get("LADA_BENCH_PYSPY"):  # every thread of the server, sampled (py-spy must be installed)
        server_cmd[:0] = ["py-spy", "record", "--threads", "--nonblocking", "-r", "200", "-f", "raw",
                          "-o", str(work / "server.pyspy.txt"), "--"]
    server = subprocess.Popen(server_cmd, stdout=open(work / "server.out", "w"), stderr=subprocess.STDOUT, env=env)
    _wait_healthy(f"127.0.0.1:{port}", ca, server, timeout=300)
    t_ready = time.time()
    outs = [work / f"worker-{i}.json" for i in range(procs)]
    workers = [subprocess.Popen([sys.executable, __file__, "worker", "--address", f"127.0.0.1:{port}",
                                 "--names", ",".join(names[i::procs]), "--out", str(outs[i]),
                                 *(["--ca", ca] if ca else [])],
                                stdout=open(work / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT, env=env)
               for i in range(procs)]
    cpu = CpuSampler(server.pid, [w.pid for w in workers]).start()
    try:
        rc_server = server.wait(timeout=timeout)
        rc_workers = [w.wait(timeout=120) for w in workers]
    finally:
        cpu.stop()
        for p in [server, *workers]:
            if p.poll() is None:
                p.kill()
    wall = time.time() - t_ready
    res: dict[str, Any] = {"rc_server": rc_server, "rc_workers": rc_workers, "wall_s": wall, "db": db,
                           "startup_s": t_ready - t0,
                           "workdir": str(work), "latencies": [], "errors": [], "tasks": {}, "allocated": {},
                           "probed": {}, "n_clients": n_clients, "rounds": rounds}
    for o in outs:
        if o.exists():
            part = json.loads(o.read_text())
            res["latencies"] += part["latencies"]
            res["errors"] += part["errors"]
            for k in ("tasks", "allocated", "probed"):
                res[k].update(part[k])
        else:
            res["errors"].append(f"{o.name} missing (worker crashed; see {o.with_suffix('.log')})")
    res["cpu"] = cpu.samples
    timings = work / "rpc_server.json"
    res["server_latencies"] = json.loads(timings.read_text()) if timings.exists() else []
    res.update(db_facts(db))
    # the commit's duration is in the server's per-round line ("record=0.4s"), not in the database
    out = (work / "server.out").read_text(errors="replace")
    res["record_s"] = sum(float(m) for m in re.findall(r"\brecord=([0-9.]+)s", out))
    return res


class CpuSampler:
    """CPU seconds (user + system, from /proc) of the server and of the client workers, sampled
    every ``every`` seconds: on a machine where the simulated clients share the cores with the
    server, how much of a round's wall time each side spent computing (``cpu_between``)."""

    def __init__(self, server: int, workers: list[int], every: float = 0.1) -> None:
        self.pids, self.every = (server, workers), every
        self.samples: list[tuple[float, float, float]] = []  # (unix time, server cpu s, workers cpu s)
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _cpu(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / self._tick  # utime, stime
        except (OSError, IndexError, ValueError):
            return float("nan")

    def _loop(self) -> None:
        last = (0.0, 0.0)
        while not self._stop.wait(self.every):
            s, w = self._cpu(self.pids[0]), sum(self._cpu(p) for p in self.pids[1])
            # a process that exited reads as nan: keep its last value
            last = (s if s == s else last[0], w if w == w else last[1])
            self.samples.append((time.time(), *last))

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def cpu_between(samples: list, t0: float, t1: float) -> tuple[float, float]:
    """(server, clients) CPU seconds between Unix times ``t0`` and ``t1`` (nearest samples)."""
    inside = [x for x in samples if t0 <= x[0] <= t1]
    before = [x for x in samples if x[0] < t0]
    if not inside:
        return float("nan"), float("nan")
    a = before[-1] if before else inside[0]
    return inside[-1][1] - a[1], inside[-1][2] - a[2]


def _wait_healthy(address: str, ca: str | None, proc: subprocess.Popen, timeout: float) -> None:
    """Until the server answers its gRPC health check (it loads the LLM before listening)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from lada.common.tls import channel_credentials

    ch = grpc.secure_channel(address, channel_credentials(ca)) if ca else grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(ch)
    end = time.time() + timeout
    try:
        while time.time() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode} before it was up")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.3)
        raise TimeoutError(f"server at {address} not healthy after {timeout}s")
    finally:
        ch.close()


def db_facts(db: str) -> dict:
    """Row counts of the run and the round timings, from the database the server wrote."""
    from sqlalchemy import create_engine, text

    eng = create_engine(db)
    out: dict[str, Any] = {"rows": {}}
    with eng.connect() as c:
        run = c.execute(text("select id, status, finished_at from runs")).all()
        out["runs"] = [(r[0], r[1]) for r in run]
        rid = run[0][0] if run else 0
        for table in ("clients", "allocations", "rewards", "paths", "metrics", "events", "rounds"):
            out["rows"][table] = c.execute(text(f"select count(*) from {table} where run_id=:r"), {"r": rid}
                                           ).scalar_one()
        rounds = c.execute(text("select idx, status, started_at, finished_at, timings from rounds "
                                "where run_id=:r order by idx"), {"r": rid}).all()
        out["rounds_done"] = [r[0] for r in rounds if r[1] == "done"]
        tim = [json.loads(r[4]) if isinstance(r[4], str) else (r[4] or {}) for r in rounds]
        out["probe_s"] = sum(t.get("probe", 0.0) for t in tim)
        out["client_learn_s"] = sum(t.get("client_learn", 0.0) for t in tim)
        out["round_s"] = sum(sum(t.values()) for t in tim)
        out["per_client"] = {
            name: {"alloc": a, "reward": r, "paths": p, "metrics": m}
            for name, a, r, p, m in c.execute(text(
                "select c.name,"
                " (select count(*) from allocations x where x.run_id=c.run_id and x.receiver=c.name),"
                " (select count(*) from rewards x where x.run_id=c.run_id and x.receiver=c.name"
                "  and x.sample_id != '*'),"
                " (select count(*) from paths x where x.run_id=c.run_id and x.author=c.name),"
                " (select count(*) from metrics x where x.run_id=c.run_id and x.subject=c.name)"
                " from clients c where c.run_id=:r"), {"r": rid})
        }
        out["candidates"] = c.execute(text("select count(*) from paths where run_id=:r and author='llm'"),
                                      {"r": rid}).scalar_one()
    eng.dispose()
    return out


def verify(res: dict) -> list[str]:
    """Everything the clients sent or received is in the database, exactly once."""
    bad = []
    if res["rc_server"] != 0 or any(res["rc_workers"]):
        bad.append(f"exit codes: server {res['rc_server']}, workers {res['rc_workers']}")
    bad += res["errors"]
    failed = [x for x in res["latencies"] if x[2] != "OK"]
    if failed:
        bad.append(f"{len(failed)} RPCs failed, e.g. {failed[:3]}")
    if len(res["runs"]) != 1 or res["runs"][0][1] != "finished":
        bad.append(f"runs: {res['runs']}")
    rounds = list(range(1, res["rounds"] + 1))
    if res["rounds_done"] != rounds:
        bad.append(f"rounds done {res['rounds_done']}, expected {rounds}")
    pc = res["per_client"]
    if sorted(pc) != client_names(res["n_clients"]):
        bad.append(f"{len(pc)} client rows for {res['n_clients']} clients")
    for name in client_names(res["n_clients"]):
        got, alloc, probed = pc.get(name), res["allocated"].get(name, {}), res["probed"].get(name, {})
        if got is None:
            continue
        n_alloc = sum(alloc.values())
        if sorted(int(k) for k in alloc) != rounds or sorted(int(k) for k in probed) != rounds:
            bad.append(f"{name}: took part in rounds {sorted(alloc)} / probed {sorted(probed)}")
        if got["alloc"] != n_alloc or got["reward"] != n_alloc:
            bad.append(f"{name}: {got['alloc']} allocation / {got['reward']} reward rows, client got {n_alloc}")
        if got["paths"] != sum(probed.values()):
            bad.append(f"{name}: {got['paths']} path rows, client sent {sum(probed.values())}")
        # per round: public_accuracy, accuracy, reward, n_allocated, bytes_up, bytes_down; + round 0 accuracy
        if got["metrics"] != 6 * len(rounds) + 1:
            bad.append(f"{name}: {got['metrics']} metric rows, expected {6 * len(rounds) + 1}")
    return bad[:50]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def report(res: dict) -> str:
    """Per RPC: the client-observed latency of each attempt (the whole call; a stream until its last
    message) and the server's own time in the handler (``serve.TimingInterceptor``; a stream until its
    first message, its set-up). The difference is time outside the handler: waiting for a CPU or the
    GIL on either side, the channel's threads, the queue for a server worker."""
    by: dict[str, list[float]] = defaultdict(list)
    for rpc, secs, code in res["latencies"]:
        if code == "OK":
            by[rpc].append(secs * 1000)
    srv: dict[str, list[float]] = defaultdict(list)  # arrival to answer (a stream: its first message)
    hnd: dict[str, list[float]] = defaultdict(list)  # of which in the handler
    for rpc, total, handler in res.get("server_latencies", []):
        srv[rpc].append(total * 1000)
        hnd[rpc].append(handler * 1000)
    lines = ["client: each attempt as the client sees it; server: arrival to answer (a stream: to its first "
             "message); handler: the servicer's own part of that",
             f"{'rpc':<20} {'count':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'server p50':>11} "
             f"{'server p99':>11} {'handler p99':>12}"]
    overall: list[float] = []
    srv_all: list[float] = []
    hnd_all: list[float] = []
    for rpc in sorted(by):
        xs, ss, hs = by[rpc], srv.get(rpc, []), hnd.get(rpc, [])
        if rpc != "PullTask":
            overall += xs
            srv_all += ss
            hnd_all += hs
        tag = " (long-poll)" if rpc == "PullTask" else ""
        lines.append(f"{rpc + tag:<20} {len(xs):>7} {pct(xs, 50):>9.1f} {pct(xs, 99):>9.1f} {max(xs):>9.1f} "
                     f"{pct(ss, 50):>11.1f} {pct(ss, 99):>11.1f} {pct(hs, 99):>12.1f}")
    lines.append(f"{'ALL but PullTask':<20} {len(overall):>7} {pct(overall, 50):>9.1f} {pct(overall, 99):>9.1f} "
                 f"{max(overall) if overall else float('nan'):>9.1f} {pct(srv_all, 50):>11.1f} "
                 f"{pct(srv_all, 99):>11.1f} {pct(hnd_all, 99):>12.1f}")
    rows = sum(res["rows"].values())
    round_rows = sum(v for k, v in res["rows"].items() if k in ("allocations", "rewards", "paths", "metrics"))
    stats = res["n_clients"] * res["candidates"]  # every client reports one statistic per candidate per round
    lines += [
        "",
        f"clients {res['n_clients']}, rounds {res['rounds']}, wall {res['wall_s']:.1f}s from server up to exit "
        f"(server start-up {res['startup_s']:.1f}s), "
        f"round time {res['round_s']:.1f}s (probe {res['probe_s']:.1f}s, client learn {res['client_learn_s']:.1f}s)",
        f"database rows committed: {rows} ({', '.join(f'{k} {v}' for k, v in res['rows'].items())})",
        f"rows/s: {rows / max(res['round_s'], 1e-9):.0f} database rows per second of round time (end to end); "
        f"{round_rows / max(res['record_s'], 0.05):.0f} rows/s while committing ({round_rows} round rows in "
        f"{res['record_s']:.1f}s, one transaction per round); "
        f"{stats / max(res['probe_s'], 1e-9):.0f} learnability statistics ingested per second of probe phase",
        f"RPC errors: {sum(1 for x in res['latencies'] if x[2] != 'OK')}; client errors: {len(res['errors'])}",
    ]
    return "\n".join(lines)


def driver_parser(doc: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The benchmark's parser and its internal ``worker`` command (``--address``, ``--names``), which
    the driver starts in each worker process; shared with bench_soak."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    w = ap.add_subparsers(dest="cmd").add_parser("worker", help="(internal) run simulated clients")
    w.add_argument("--address", required=True)
    w.add_argument("--names", required=True)
    return ap, w


def main(argv: list[str] | None = None) -> int:
    ap, w = driver_parser(__doc__)
    w.add_argument("--out", required=True)
    w.add_argument("--ca")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--procs", type=int, default=2, help="worker processes the clients are spread over")
    ap.add_argument("--tls", action="store_true", help="server TLS (certificates from deploy/make-certs.sh)")
    ap.add_argument("--max-workers", type=int, default=TransportConfig().max_workers,
                    help="the server's gRPC worker threads (its --transport.max_workers)")
    ap.add_argument("--workdir", help="keep the database, config and logs here")
    ap.add_argument("--model-cache", default=os.environ.get("LADA_TEST_MODEL_CACHE"))
    args = ap.parse_args(argv)
    if args.cmd == "worker":
        return worker(args.address, args.names.split(","), args.out, args.ca)
    res = run_load(args.clients, args.rounds, args.procs, Path(args.workdir) if args.workdir else None,
                   args.model_cache, args.tls, max_workers=args.max_workers)
    print(report(res))
    bad = verify(res)
    print("verify: " + ("every row present" if not bad else "PROBLEMS:\n  " + "\n  ".join(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
