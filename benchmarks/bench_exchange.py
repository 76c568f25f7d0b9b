"""Exchange benchmark: LaDa's chunked Download/Upload against a raw grpcio stream of the same bytes.

    .venv/bin/python benchmarks/bench_exchange.py [--mib 256] [--chunk-kb 64,256,1024,4096] [--reps 2]

Both sides are separate OS processes on localhost, plaintext. LaDa: the real
client (``lada.client.runtime.Connection``: register, ``download``, ``upload``
with content addressing and resume) against the real server side (``GrpcGrid``
+ ``serve.start_server``: auth interceptor, servicers, stream gate, blob store)
in a server process that publishes one blob of ``--mib`` MiB. Raw: a grpcio
server with identity serializers streaming the same bytes in messages of the
same size (no hashing, no protobuf), and a client that keeps what it receives.
For every chunk size the two run back to back (interleaved ``--reps`` times, so
another job on the machine hurts both alike) and the ratio LaDa / raw is printed
for download and upload: of the best of each, and the median of the ratios of
the pairs run back to back (steadier on a loaded machine). Each LaDa upload
sends bytes the server does not hold yet (a different first byte each time).
The load average is printed before and after, and so is the CPU time of each
transfer (client process + server process, from getrusage and /proc): on a
machine whose cores are all busy the wall-clock ratio tends to the CPU ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-exchange-token"
MAX_MB = 16  # message limit: a 4 MiB chunk and its header fit
RAW = "/bench.Raw/"


def payload(mib: int) -> bytes:
    """The same pseudo-random (incompressible) bytes in every process."""
    import numpy as np

    return np.random.default_rng(0).bytes(mib << 20)


def _opts() -> list[tuple[str, int]]:
    n = MAX_MB << 20
    return [("grpc.max_send_message_length", n), ("grpc.max_receive_message_length", n)]


def _cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of process ``pid``."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(into: tuple[list[float], list[float]], server_pid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, its wall seconds and the CPU seconds of this process and the server appended to ``into``."""
    c0, s0, t0 = _cpu(), _cpu(server_pid), time.perf_counter()
    out = fn(*args)
    into[0].append(time.perf_counter() - t0)
    into[1].append(_cpu() - c0 + _cpu(server_pid) - s0)
    return out


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- server processes
def serve_lada(port: int, mib: int, chunk_kb: int) -> int:
    """The real LaDa server side with one published blob; prints its id, serves until killed."""
    from lada.server.auth import Credentials
    from lada.server.transport.grid import GrpcGrid
    from lada.server.transport.serve import start_server

    data = payload(mib)
    max_blob = (mib << 20) + (1 << 20)
    grid = GrpcGrid(Credentials(b"b" * 32, TOKEN), max_blob=max_blob, chunk_size=chunk_kb << 10, timeout=600,
                    store_bytes=4 * max_blob)
    server, _ = start_server(grid, f"127.0.0.1:{port}", {}, MAX_MB, max_workers=8)
    bid = grid.blobs.put(data, pin=True)
    del data
    print(bid, flush=True)
    server.wait_for_termination()
    return 0


def serve_raw(port: int, mib: int) -> int:
    """A plain grpcio server: Down streams the payload in messages of the requested size, Up counts."""
    from concurrent import futures

    import grpc

    data = payload(mib)

    def down(req: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
        cs = int.from_bytes(req, "little")
        for i in range(0, len(data), cs):
            yield data[i:i + cs]

    def up(it: Iterator[bytes], ctx: grpc.ServicerContext) -> bytes:
        parts = [m for m in it]  # kept, as a receiver keeps what it is sent
        return sum(map(len, parts)).to_bytes(8, "little")

    handler = grpc.method_handlers_generic_handler("bench.Raw", {
        "Down": grpc.unary_stream_rpc_method_handler(down),
        "Up": grpc.stream_unary_rpc_method_handler(up),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler], options=_opts())
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()
    return 0


# ---------------------------------------------------------------------- the clients
def raw_download(ch: object, cs: int, n: int) -> None:
    call = ch.unary_stream(RAW + "Down")  # type: ignore[attr-defined]
    parts = list(call(cs.to_bytes(8, "little"), timeout=600))
    assert sum(map(len, parts)) == n, "raw download lost bytes"


def raw_upload(ch: object, data: bytes, cs: int) -> None:
    call = ch.stream_unary(RAW + "Up")  # type: ignore[attr-defined]
    got = int.from_bytes(call((data[i:i + cs] for i in range(0, len(data), cs)), timeout=600), "little")
    assert got == len(data), "raw upload lost bytes"


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip() if p.stdout else ""
    if not line:
        p.kill()
        raise RuntimeError(f"server {args[0]} did not start (exit {p.wait()})")
    return p, line


def run(mib: int, sizes_kb: list[int], reps: int) -> list[dict]:
    import grpc
    from lada.client.runtime import Connection

    data = payload(mib)
    n = len(data)
    raw_port = _free_port()
    raw, _ = _start(["serve-raw", "--port", str(raw_port), "--mib", str(mib)])
    rows = []
    try:
        raw_ch = grpc.insecure_channel(f"127.0.0.1:{raw_port}", _opts())
        grpc.channel_ready_future(raw_ch).result(timeout=30)
        for kb in sizes_kb:
            port = _free_port()
            lada, bid = _start(["serve-lada", "--port", str(port), "--mib", str(mib), "--chunk-kb", str(kb)])
            try:
                conn = Connection(f"127.0.0.1:{port}", "bench-1", TOKEN, "m", "d", max_message_mb=MAX_MB,
                                  chunk_kb=kb, call_timeout=600)
                conn.register()
                keys = ("lada_down", "raw_down", "lada_up", "raw_up")
                times: dict[str, list[float]] = {k: [] for k in keys}
                cpus: dict[str, list[float]] = {k: [] for k in keys}
                m = {k: (times[k], cpus[k]) for k in keys}
                for rep in range(reps):
                    got = _timed(m["lada_down"], lada.pid, conn.download, bid, n)
                    assert len(got) == n and got[:64] == data[:64] and got[-64:] == data[-64:]
                    del got
                    _timed(m["raw_down"], raw.pid, raw_download, raw_ch, kb << 10, n)
                    blob = bytearray(data)
                    blob[0] = (blob[0] + 1 + rep) % 256  # bytes the server does not hold yet
                    blob = bytes(blob)
                    _timed(m["lada_up"], lada.pid, conn.upload, blob)
                    del blob
                    _timed(m["raw_up"], raw.pid, raw_upload, raw_ch, data, kb << 10)
                conn.channel.close()
            finally:
                lada.kill()
                lada.wait()
            mbs = {k: n / min(v) / 1e6 for k, v in times.items()}
            paired = {d: statistics.median(r / t for r, t in zip(times[f"raw_{d}"], times[f"lada_{d}"]))
                      for d in ("down", "up")}
            cpu = {f"cpu_{k}": min(v) for k, v in cpus.items()}
            rows.append({"chunk_kb": kb, **mbs, "down_ratio": mbs["lada_down"] / mbs["raw_down"],
                         "up_ratio": mbs["lada_up"] / mbs["raw_up"], "down_paired": paired["down"],
                         "up_paired": paired["up"], **cpu})
            r = rows[-1]
            print(f"{kb:>8} {r['lada_down']:>10.0f} {r['raw_down']:>10.0f} {r['down_ratio']:>7.2f}x "
                  f"{r['down_paired']:>7.2f}x {r['lada_up']:>10.0f} {r['raw_up']:>10.0f} {r['up_ratio']:>7.2f}x "
                  f"{r['up_paired']:>7.2f}x", flush=True)
        raw_ch.close()
    finally:
        raw.kill()
        raw.wait()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    for name in ("serve-lada", "serve-raw"):
        s = sub.add_parser(name, help="(internal) a server process")
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--mib", type=int, required=True)
        s.add_argument("--chunk-kb", type=int, default=256)
    ap.add_argument("--mib", type=int, default=256, help="blob size in MiB")
    ap.add_argument("--chunk-kb", default="64,256,1024,4096", help="chunk sizes in KiB, comma-separated")
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions; the best of each is kept")
    args = ap.parse_args(argv)
    if args.cmd == "serve-lada":
        return serve_lada(args.port, args.mib, args.chunk_kb)
    if args.cmd == "serve-raw":
        return serve_raw(args.port, args.mib)
    sizes = [int(x) for x in args.chunk_kb.split(",") if x]
    if args.mib < 1 or args.reps < 1 or not sizes or any(s < 1 or s > 4096 for s in sizes):
        ap.error("--mib and --reps must be >= 1 and every --chunk-kb in [1, 4096]")
    print(f"{args.mib} MiB, best of {args.reps}, MB/s (10^6 bytes/s), LaDa / raw grpcio (ratio: of the best; "
          f"paired: median of back-to-back pairs); load average {_load()}")
    print(f"{'chunk KiB':>8} {'LaDa down':>10} {'raw down':>10} {'ratio':>8} {'paired':>8} {'LaDa up':>10} "
          f"{'raw up':>10} {'ratio':>8} {'paired':>8}")
    rows = run(args.mib, sizes, args.reps)
    worst = min(min(r["down_ratio"], r["up_ratio"]) for r in rows)
    worst_paired = min(min(r["down_paired"], r["up_paired"]) for r in rows)
    print(f"lowest ratio: {worst:.2f}x (paired {worst_paired:.2f}x); load average {_load()}")
    print("CPU seconds per transfer, client + server process, least of the repetitions (ratio: raw / LaDa)")
    print(f"{'chunk KiB':>8} {'LaDa down':>10} {'raw down':>10} {'ratio':>8} {'LaDa up':>10} {'raw up':>10} "
          f"{'ratio':>8}")
    for r in rows:
        print(f"{r['chunk_kb']:>8} {r['cpu_lada_down']:>10.2f} {r['cpu_raw_down']:>10.2f} "
              f"{r['cpu_raw_down'] / max(r['cpu_lada_down'], 1e-9):>7.2f}x {r['cpu_lada_up']:>10.2f} "
              f"{r['cpu_raw_up']:>10.2f} {r['cpu_raw_up'] / max(r['cpu_lada_up'], 1e-9):>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
