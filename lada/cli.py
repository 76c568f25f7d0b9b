"""``lada``: demo, server, client, dashboard, experiment, export, models build|eval, db upgrade|current.

Every setting is a ``--section.knob`` of ``LadaConfig`` (also YAML and
``LADA_SECTION__KNOB``), so it is stored with the run and has one default. The
few plain flags choose what one invocation does, not how the system behaves:
``--config``, the client's ``--name`` (which client of the shared config this
process is), ``--quiet``, demo's ``--no-dashboard``/``--keep-dashboard``,
experiment's matrix (``--methods --seeds --out --workers --redraw``), ``models
eval``'s ``--names --samples`` and ``db upgrade --revision``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lada import pipes, preflight
from lada.common.config import ConfigError, LadaConfig, add_config_flags, config_from_args

Command = Callable[[LadaConfig, argparse.Namespace], int]

if TYPE_CHECKING:
    from lada.server.transport.grid import GrpcGrid


def _server(cfg: LadaConfig, args: argparse.Namespace) -> int:
    import torch

    from lada.server.auth import Credentials, default_token_exposed, load_secret
    from lada.server.db.writer import DatabaseGone, Store
    from lada.server.federation import Federation, RoundFailed
    from lada.server.heartbeats import HeartbeatRecorder
    from lada.server.lock import ServerLock, ServerLocked
    from lada.server.tls import server_credentials
    from lada.server.transport.grid import GrpcGrid
    from lada.server.transport.serve import start_server

    if default_token_exposed(cfg.server.address, cfg.server.join_token):
        msg = (f"server.address {cfg.server.address} is reachable from other hosts but server.join_token is the "
               "public default: anyone could enrol; set --server.join_token (or LADA_SERVER__JOIN_TOKEN)")
        if not cfg.transport.allow_default_token:
            print(f"[lada] error: {msg} (or --transport.allow_default_token true on a closed network)",
                  file=sys.stderr, flush=True)
            return 2
        print(f"[lada] WARNING: {msg}", file=sys.stderr, flush=True)
    torch.set_num_threads(cfg.run.threads)
    try:  # one server per data dir and database (server/lock.py): a second is refused before any work
        lock = ServerLock(cfg.server.data_dir, cfg.db_url, cfg.run.name).acquire()
    except ServerLocked as e:
        print(f"[lada] error: {e}", file=sys.stderr, flush=True)
        return 4
    t = cfg.transport
    tls = server_credentials(t.tls_cert, t.tls_key, t.tls_client_ca)
    store = Store(cfg.db_url)
    creds = Credentials(load_secret(cfg.server.data_dir), cfg.server.join_token, ttl_s=t.credential_ttl)
    grid = GrpcGrid(creds, max_blob=cfg.max_blob_bytes, store_bytes=cfg.store_bytes,
                    chunk_size=cfg.server.chunk_kb * 1024, timeout=cfg.server.round_timeout,
                    heartbeat_s=t.heartbeat, liveness_s=t.liveness,
                    bind_peer_names=bool(t.tls_client_ca) and t.tls_name_binding)
    grid.candidate_delta = t.candidate_delta
    fed = Federation(cfg, grid, store, resume=cfg.server.resume)  # loads the LLM before accepting clients
    fed.llm.learner.progress = "LLM"  # its generation and evaluation (minutes on a CPU) show a bar
    server, port = start_server(grid, cfg.server.address, cfg.data.client_domains, cfg.server.max_message_mb,
                                max_workers=t.max_workers, tls=tls, models=cfg.models.clients, limits=t)
    mode = "mutual TLS" if t.tls_client_ca else "TLS" if tls else "plaintext"
    print(f"[lada] server listening on {cfg.server.address} (port {port}, {mode}); database {cfg.db_url}",
          file=sys.stderr, flush=True)

    def on_event(kind: str, subject: str, message: str) -> None:
        grid.run_id = fed.run_id
        store.event(fed.run_id or None, kind, subject, message)
        if kind == "leave" and fed.run_id:
            store.set_client_state(fed.run_id, subject, "left")

    grid.on_event = on_event
    # the clients' last heartbeats, written once per interval for all of them, off the RPC threads
    beats = HeartbeatRecorder(grid, store, lambda: fed.run_id, t.heartbeat).start()
    try:
        fed.run()
        print(fed.summary_table(), flush=True)
        _linger(grid, t.linger)
    except (RoundFailed, DatabaseGone) as e:
        print(f"[lada] run {fed.run_id} failed: {e}", file=sys.stderr, flush=True)
        _linger(grid, t.linger)
        return 2
    finally:
        beats.stop()
        server.stop(grace=2)
        lock.release()
    return 0


def _linger(grid: GrpcGrid, most_s: float) -> None:
    """Stay up until every client still running has pulled its STOP and left (at most ``most_s``;
    see ``GrpcGrid.wait_until_clients_leave``)."""
    still = grid.wait_until_clients_leave(most_s)
    if still:
        print(f"[lada] {len(still)} client(s) had not pulled STOP after {most_s:g}s (transport.linger): "
              f"{', '.join(still[:10])}", file=sys.stderr, flush=True)


def _client(cfg: LadaConfig, args: argparse.Namespace) -> int:
    from lada.client.app import ClientApp, check_client_name
    from lada.client.runtime import Connection, SupersededError, TransportMismatch, configure_logging, run_client
    from lada.common.state import StateError
    from lada.common.tls import channel_credentials

    try:  # a name the config lacks is a usage error, before the model loads
        check_client_name(cfg, args.name)
    except ValueError as e:
        args.parser.exit(2, f"{args.parser.prog}: error: {e}\n")
    configure_logging(logging.INFO if not args.quiet else logging.WARNING)
    c = cfg.client
    tls = channel_credentials(c.tls_ca, c.tls_cert, c.tls_key, tls=c.tls)
    state_dir = (c.state_dir or Path(cfg.server.data_dir) / "clients" / args.name) if c.save_state else None
    try:
        app = ClientApp(cfg, args.name, state_dir=state_dir)
    except StateError as e:  # another client's or model's state folder: refused, nothing trained
        logging.getLogger("lada.client").error("%s", e)
        return 2
    conn = Connection(cfg.server.address, args.name, cfg.server.join_token, app.model_name, app.domain,
                      cfg.server.max_message_mb, cfg.server.chunk_kb, tls=tls, server_name=c.tls_server_name,
                      give_up_after=c.give_up_after)
    # SIGTERM (docker stop, systemd): leave cleanly instead of being dropped at the next deadline
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        n = run_client(conn, app)
    except SupersededError as e:
        logging.getLogger("lada.client").error("%s; exiting", e)
        return 3
    except TransportMismatch as e:  # TLS on one end only: retrying cannot help
        logging.getLogger("lada.client").error("%s", e)
        return 2
    logging.getLogger("lada.client").info("%s: %d tasks done, leaving", args.name, n)
    return 0


def _models_build(cfg: LadaConfig, args: argparse.Namespace) -> int:
    import torch

    from lada.common.models import resolve_model

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    names = sorted({cfg.models.llm, *cfg.models.clients.values()})
    for name in names:
        path = resolve_model(name, cfg.models, seed=cfg.data.seed)
        print(f"{name:<22} -> {path}", flush=True)
    return 0


def _models_eval(cfg: LadaConfig, args: argparse.Namespace) -> int:
    """Build (or reuse) embedded models, time it, then each one's greedy accuracy and generation time."""
    import torch

    from lada.common.data import build_splits
    from lada.common.models import build_embedded_models, evaluate_models

    torch.set_num_threads(cfg.run.threads)
    t0 = time.perf_counter()
    paths = build_embedded_models(cfg.models, seed=cfg.data.seed, names=args.names)
    print(f"build wall time: {time.perf_counter() - t0:.1f}s", flush=True)
    if args.samples:
        d = cfg.data
        public = build_splits(d.client_domains, d.n_train, d.n_test, d.n_public, d.n_server_test,
                              seed=d.seed).public[: args.samples]
        for row in evaluate_models(paths, public, max_new_tokens=cfg.train.max_new_tokens):
            print(f"{row['name']:<10} {row['params'] / 1e6:.3f}M params  acc {100 * row['accuracy']:5.1f}%  "
                  f"evaluate {row['seconds']:5.1f}s / {len(public)} samples", flush=True)
    return 0


def _demo(cfg: LadaConfig, args: argparse.Namespace) -> int:
    """Build models, then a server and one process per client on localhost."""
    t_start = time.perf_counter()
    data_dir = Path(cfg.server.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.server.db:
        db = data_dir / "lada.db"
        cfg = LadaConfig.load(overrides={**cfg.flat(), "server.db": f"sqlite:///{db.resolve()}"}, env=False)
    cfg.server.wait_clients = len(cfg.data.client_domains)
    cfg_path = data_dir / "demo-config.yaml"
    cfg_path.write_text(cfg.dump_yaml())
    print(f"[demo] config written to {cfg_path}", flush=True)
    t0 = time.perf_counter()
    _models_build(cfg, args)
    t_build = time.perf_counter() - t0
    print(f"[demo] models ready in {t_build:.1f}s", flush=True)
    py = sys.executable
    base = [py, "-m", "lada.cli"]
    procs: list[subprocess.Popen] = []
    dash = None
    try:
        if not args.no_dashboard:
            log = data_dir / "dashboard.log"
            with open(log, "wb") as fh:  # its errors stay readable, not sent to /dev/null
                dash = subprocess.Popen([*base, "dashboard", "--config", str(cfg_path)],
                                        stdout=fh, stderr=subprocess.STDOUT)
            if not _listening(dash, cfg.dashboard.host, cfg.dashboard.port):
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                print(f"[demo] error: the dashboard did not start on {cfg.dashboard.host}:{cfg.dashboard.port} "
                      f"(log {log}):", *tail, sep="\n  ", file=sys.stderr, flush=True)
                return 2
            print(f"[demo] dashboard: http://{cfg.dashboard.host}:{cfg.dashboard.port}/", flush=True)
        server = subprocess.Popen([*base, "server", "--config", str(cfg_path)])
        procs.append(server)
        for name in cfg.data.client_domains:
            procs.append(subprocess.Popen([*base, "client", "--config", str(cfg_path), "--name", name, "--quiet"]))
        rc = server.wait()
        for p in procs[1:]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()
        took = time.perf_counter() - t_start
        if rc != 0:  # the last line says what happened: the server's reason is the [lada] line above
            print(f"[demo] FAILED after {took:.1f}s: the server exited {rc} (its error is above); the run's "
                  f"events are in {cfg.db_url}", file=sys.stderr, flush=True)
            return rc
        print(f"[demo] finished in {took:.1f}s (model build {t_build:.1f}s); results in {cfg.db_url}", flush=True)
        if dash is not None and args.keep_dashboard:
            print("[demo] dashboard still running; Ctrl-C to stop", flush=True)
            dash.wait()
        return rc
    finally:
        for p in procs + ([dash] if dash else []):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)


def _listening(proc: subprocess.Popen, host: str, port: int, wait_s: float = 60.0) -> bool:
    """Whether ``proc`` accepts connections on ``host:port`` before it exits or ``wait_s`` passes."""
    import socket

    end = time.monotonic() + wait_s
    while time.monotonic() < end and proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def _dashboard(cfg: LadaConfig, args: argparse.Namespace) -> int:
    from lada.server.dashboard.app import serve

    serve(cfg.db_url, cfg.dashboard)
    return 0


def _experiment(cfg: LadaConfig, args: argparse.Namespace) -> int:
    from lada.experiment import METHODS, join, redraw, run_matrix

    if args.join:
        try:
            join([Path(p) for p in args.join.split(",") if p.strip()], Path(args.out),
                 Path(args.doc) if args.doc else None)
        except ValueError as e:
            args.parser.exit(2, f"{args.parser.prog}: error: {e}\n")
        return 0
    if args.redraw:
        redraw(Path(args.out))
        return 0
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    run_matrix(cfg, methods, seeds, Path(args.out), workers=args.workers)
    return 0


def _export(cfg: LadaConfig, args: argparse.Namespace) -> int:
    """A learner's final adapter as a standard peft folder (``PeftModel.from_pretrained``)."""
    from lada.export import ExportError, export_adapter

    try:
        out = export_adapter(cfg, args.learner, args.out, state=args.state)
    except (ExportError, FileNotFoundError) as e:
        args.parser.exit(2, f"{args.parser.prog}: error: {e}\n")
    print(f"[lada] {args.learner}'s adapter -> {out} (load: PeftModel.from_pretrained(base, {str(out)!r}))",
          flush=True)
    return 0


def _db(cfg: LadaConfig, args: argparse.Namespace) -> int:
    """Schema migrations of the run database (Alembic): upgrade, or show the revision."""
    from lada.server.db import migrations
    from lada.server.db.engine import make_engine

    engine = make_engine(cfg.db_url)
    try:
        if args.db_cmd == "upgrade":
            rev = migrations.upgrade(engine, args.revision)
            print(f"[lada] database {engine.url.render_as_string(hide_password=True)} at revision {rev}", flush=True)
            return 0
        with engine.connect() as conn:
            rev = migrations.current_revision(conn)
        head = migrations.head_revision()
        print(f"current {rev or '(none)'}; head {head}", flush=True)
        return 0 if rev == head else 1
    finally:
        engine.dispose()


# the sections (or single knobs) each command reads; the run's commands take every section but the
# dashboard's, since server, clients and model builds share one command line (demo: all of them)
_DB_ONLY = ("server.db", "server.data_dir")
_RUN = tuple(s for s in LadaConfig.model_fields if s != "dashboard")
_EXAMPLES = {
    "demo": ["lada demo", "lada demo --run.rounds 5 --run.method random --no-dashboard",
             "lada demo --run.name trial-1 --keep-dashboard   # then open http://127.0.0.1:8765/"],
    "server": ["lada server --config run.yaml",
               "lada server --server.address 0.0.0.0:50051 --server.join_token \"$TOKEN\" --run.rounds 10"],
    "client": ["lada client --config run.yaml --name client-1",
               "lada client --name client-2 --server.address lada.example:50051 --client.tls_ca ca.pem"],
    "dashboard": ["lada dashboard --server.db sqlite:///.lada/lada.db",
                  "LADA_DASHBOARD__TOKEN=secret lada dashboard --config run.yaml --dashboard.port 9000"],
    "experiment": ["lada experiment --methods lada,random --seeds 0,1 --out results/exp",
                   "lada experiment --out results/exp --redraw",
                   "lada experiment --join results/a,results/b --out results/ab"],
    "build": ["lada models build", "lada models build --models.build_steps_llm 300 --models.cache_dir /tmp/m"],
    "eval": ["lada models eval --names llm slm-gpt2 --samples 200"],
    "export": ["lada export client-1 --config run.yaml --out adapters/client-1",
               "lada export llm --server.data_dir .lada --out adapters/llm"],
    "upgrade": ["lada db upgrade --server.db postgresql://lada:pw@localhost/lada"],
    "current": ["lada db current --server.db sqlite:///.lada/lada.db"],
}


def _command(sub: argparse._SubParsersAction, name: str, help_: str, fn: Command,
             only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """A subcommand with the config knobs it reads as flags (``only``: sections or knobs; None: all),
    examples in its epilog; ``parser`` lets ``main`` report a bad value as usage."""
    examples = "\n".join(f"  {line}" for line in _EXAMPLES.get(name, []))
    sp = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
                        usage="%(prog)s [options] [--section.knob VALUE ...]",
                        epilog=f"examples:\n{examples}" if examples else None)
    add_config_flags(sp, only)
    sp.set_defaults(fn=fn, parser=sp)
    return sp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lada", description="Federated reasoning distillation (LaDa)",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  lada demo\n  lada server --help\n"
                                       "  lada client --config run.yaml --name client-1")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    d = _command(sub, "demo", "everything locally on the embedded default: models, server, 3 clients", _demo)
    d.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard process")
    d.add_argument("--keep-dashboard", action="store_true", help="keep serving the dashboard after the run")

    _command(sub, "server", "the LaDa server: coordinator, allocation, LLM host (gRPC)", _server, only=_RUN)

    c = _command(sub, "client", "an edge client: dials the server, learns on its private data", _client,
                 only=_RUN)
    c.add_argument("--name", required=True, metavar="NAME", help="this client's name (a key of data.client_domains)")
    c.add_argument("--quiet", action="store_true", help="log warnings only")
    c.usage = "%(prog)s --name NAME [options] [--section.knob VALUE ...]"

    _command(sub, "dashboard", "web dashboard over the run database (server.db)", _dashboard,
             only=(*_DB_ONLY, "dashboard"))

    e = _command(sub, "experiment", "method x seed matrix -> metrics CSV, markdown table, plots", _experiment,
                 only=("run", "data", "models", "lora", "train", "distill", "filter", "server"))
    e.add_argument("--methods", default="all", metavar="M1,M2",
                   help="comma-separated (see lada.experiment.METHODS) or all [all]")
    e.add_argument("--seeds", default="0,1,2", metavar="S1,S2", help="comma-separated run seeds [0,1,2]")
    e.add_argument("--out", default="results/experiment", metavar="DIR",
                   help="folder for metrics, table and plots [results/experiment]")
    e.add_argument("--workers", type=int, default=2, metavar="N", help="runs in parallel (one CPU thread each) [2]")
    e.add_argument("--redraw", action="store_true", help="rewrite the table and plots of --out from its metrics")
    e.add_argument("--join", metavar="DIR1,DIR2", help="one matrix in --out from these results folders of the "
                   "same scenario (no run; a method and seed from the first folder that has it)")
    e.add_argument("--doc", metavar="FILE", help="with --join: also put the table and plots into FILE, between "
                   "its '<!-- lada experiment --join: begin/end -->' lines")

    x = _command(sub, "export", "write a client's (or the LLM's) final LoRA adapter as a standard peft folder",
                 _export, only=("models", "lora", "train", "distill", "data.seed", "run.seed", "server.data_dir",
                                "client.state_dir"))
    x.add_argument("learner", metavar="LEARNER", help="a client name (a key of models.clients) or 'llm'")
    x.add_argument("--out", required=True, metavar="DIR", help="new folder for adapter_config.json + weights")
    x.add_argument("--from", dest="state", default=None, metavar="DIR",
                   help="this state folder instead of the newest one (client state-N/ or server round-N/)")

    m = sub.add_parser("models", help="embedded model management")
    msub = m.add_subparsers(dest="models_cmd", required=True, metavar="COMMAND")
    _command(msub, "build", "build (or reuse) the config's models in the cache", _models_build, only=_RUN)
    me = _command(msub, "eval", "build embedded models, then measure each one's greedy accuracy and speed "
                  "on the public mix (threads: run.threads)", _models_eval, only=_RUN)
    me.add_argument("--names", nargs="*", default=None, metavar="NAME", help="embedded models to measure [all]")
    me.add_argument("--samples", type=int, default=500, metavar="N",
                    help="public samples to evaluate on (0: build only) [500]")

    dbp = sub.add_parser("db", help="run database schema (Alembic migrations) of server.db")
    dsub = dbp.add_subparsers(dest="db_cmd", required=True, metavar="COMMAND")
    du = _command(dsub, "upgrade", "bring the schema up to date (the server also does this when it starts)", _db,
                  only=_DB_ONLY)
    du.add_argument("--revision", default="head", metavar="REV", help="target revision [head]")
    _command(dsub, "current", "print the database's revision and the newest one (exit 1 if behind)", _db,
             only=_DB_ONLY)
    return p


def _check_devices(cfg: LadaConfig, args: argparse.Namespace) -> None:
    """A GPU the command's learners ask for (server.device, client.device) that is not there is a usage
    error before anything loads; torch is imported only when a GPU is asked for."""
    sections = {"server": ("server",), "client": ("client",), "demo": ("server", "client"),
                "experiment": ("server", "client")}.get(args.cmd, ())
    wanted = {f"{s}.device": getattr(cfg, s).device for s in sections}
    if any(v.startswith("cuda") for v in wanted.values()):
        from lada.common.models import torch_device

        for knob, v in wanted.items():
            try:
                torch_device(v)
            except ValueError as e:
                raise ValueError(f"{knob}: {e}") from None


def main(argv: list[str] | None = None) -> None:
    pipes.install()  # `lada demo | head`: a reader that leaves is not a run failure
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # named by the subcommand, not by bare `lada`, with where to find the flags it takes
        args.parser.error(f"unrecognized arguments: {' '.join(extra)} (see {args.parser.prog} --help)")
    try:
        cfg = config_from_args(args)
        preflight.check(cfg, args)  # the models resolve and the ports are free, before any work
        _check_devices(cfg, args)
    except (ConfigError, OSError, ValueError) as e:  # a usage error, before anything loads
        args.parser.exit(2, f"{args.parser.prog}: error: {e}\n")
    sys.exit(args.fn(cfg, args))


if __name__ == "__main__":
    main()
