"""``lada``: demo, server, client, dashboard, experiment, models build, db upgrade, bench."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lada.common.config import LadaConfig, add_config_flags, config_from_args


def _server(cfg: LadaConfig, args: argparse.Namespace) -> int:
    import torch

    from lada.server.auth import Credentials, load_secret
    from lada.server.db.writer import Store
    from lada.server.federation import Federation, RoundFailed
    from lada.server.tls import server_credentials
    from lada.server.transport.grid import GrpcGrid
    from lada.server.transport.serve import start_server

    torch.set_num_threads(cfg.run.threads)
    Path(cfg.server.data_dir).mkdir(parents=True, exist_ok=True)
    tls = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    store = Store(cfg.db_url)
    creds = Credentials(load_secret(cfg.server.data_dir), cfg.server.join_token, ttl_s=args.credential_ttl)
    grid = GrpcGrid(creds, max_blob=cfg.server.max_message_mb * 1024 * 1024 * 4,
                    chunk_size=cfg.server.chunk_kb * 1024, timeout=cfg.server.round_timeout,
                    heartbeat_s=args.heartbeat, liveness_s=args.liveness,
                    bind_peer_names=bool(args.tls_client_ca) and not args.tls_no_name_binding)
    fed = Federation(cfg, grid, store, resume=not args.no_resume)  # loads the LLM before accepting clients
    server, port = start_server(grid, cfg.server.address, cfg.data.client_domains, cfg.server.max_message_mb,
                                max_workers=args.max_workers, tls=tls)
    mode = "mutual TLS" if args.tls_client_ca else "TLS" if tls else "plaintext"
    print(f"[lada] server listening on {cfg.server.address} (port {port}, {mode}); database {cfg.db_url}",
          file=sys.stderr, flush=True)

    def on_event(kind: str, subject: str, message: str) -> None:
        grid.run_id = fed.run_id
        store.event(fed.run_id or None, kind, subject, message)
        if kind == "leave" and fed.run_id:
            store.set_client_state(fed.run_id, subject, "left")

    grid.on_event = on_event
    try:
        fed.run()
        print(fed.summary_table(), flush=True)
        time.sleep(args.linger)  # let clients pull their STOP task
    except RoundFailed as e:
        print(f"[lada] run {fed.run_id} failed: {e}", file=sys.stderr, flush=True)
        time.sleep(args.linger)
        return 2
    finally:
        server.stop(grace=2)
    return 0


def _client(cfg: LadaConfig, args: argparse.Namespace) -> int:
    from lada.client.app import ClientApp
    from lada.client.runtime import Connection, SupersededError, configure_logging, run_client
    from lada.common.tls import channel_credentials

    configure_logging(logging.INFO if not args.quiet else logging.WARNING)
    tls = channel_credentials(args.tls_ca, args.tls_cert, args.tls_key, tls=args.tls)
    state_dir = None if args.no_state else (args.state_dir or Path(cfg.server.data_dir) / "clients" / args.name)
    app = ClientApp(cfg, args.name, state_dir=state_dir)
    conn = Connection(cfg.server.address, args.name, cfg.server.join_token, app.model_name, app.domain,
                      cfg.server.max_message_mb, cfg.server.chunk_kb, tls=tls, server_name=args.tls_server_name,
                      give_up_after=args.give_up_after)
    # SIGTERM (docker stop, systemd): leave cleanly instead of being dropped at the next deadline
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        n = run_client(conn, app)
    except SupersededError as e:
        logging.getLogger("lada.client").error("%s; exiting", e)
        return 3
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
            dash = subprocess.Popen([*base, "dashboard", "--db", cfg.db_url, "--port", str(args.dashboard_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"[demo] dashboard: http://127.0.0.1:{args.dashboard_port}/", flush=True)
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
        print(f"[demo] finished in {time.perf_counter() - t_start:.1f}s (model build {t_build:.1f}s); "
              f"results in {cfg.db_url}", flush=True)
        if dash is not None and args.keep_dashboard:
            print("[demo] dashboard still running; Ctrl-C to stop", flush=True)
            dash.wait()
        return rc
    finally:
        for p in procs + ([dash] if dash else []):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)


def _dashboard(cfg: LadaConfig, args: argparse.Namespace) -> int:
    from lada.server.dashboard.app import serve

    serve(args.db or cfg.db_url, host=args.host, port=args.port, token=args.token)
    return 0


def _experiment(cfg: LadaConfig, args: argparse.Namespace) -> int:
    from lada.server.experiment import METHODS, redraw, run_matrix

    if args.redraw:
        redraw(Path(args.out))
        return 0
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    run_matrix(cfg, methods, seeds, Path(args.out), workers=args.workers)
    return 0


def _db(cfg: LadaConfig, args: argparse.Namespace) -> int:
    """Schema migrations of the run database (Alembic): upgrade, or show the revision."""
    from lada.server.db import migrations
    from lada.server.db.engine import make_engine

    url = args.db or cfg.db_url
    engine = make_engine(url)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lada", description="Federated reasoning distillation (LaDa)")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="everything locally on the embedded default: models, server, 3 clients")
    add_config_flags(d)
    d.add_argument("--dashboard-port", type=int, default=8765)
    d.add_argument("--no-dashboard", action="store_true")
    d.add_argument("--keep-dashboard", action="store_true", help="keep serving the dashboard after the run")
    d.set_defaults(fn=_demo)

    s = sub.add_parser("server", help="the LaDa server: coordinator, allocation, LLM host (gRPC)")
    add_config_flags(s)
    s.add_argument("--tls-cert"), s.add_argument("--tls-key")
    s.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    s.add_argument("--tls-no-name-binding", action="store_true",
                   help="with mutual TLS, accept a client certificate that does not name the client")
    s.add_argument("--linger", type=float, default=3.0, help="seconds to stay up after the run")
    s.add_argument("--no-resume", action="store_true",
                   help="start a new run even if one of the same run.name is still open in the database")
    s.add_argument("--heartbeat", type=float, default=5.0, help="seconds between client heartbeats [5]")
    s.add_argument("--liveness", type=float, default=None,
                   help="a client silent this long counts as gone [max(6 heartbeats, 30 s)]")
    s.add_argument("--credential-ttl", type=float, default=24 * 3600, help="seconds a client credential lives [1 day]")
    s.add_argument("--max-workers", type=int, default=256,
                   help="gRPC worker threads; long-polls may hold all but 16 of them [256]")
    s.set_defaults(fn=_server)

    c = sub.add_parser("client", help="an edge client: dials the server, learns on its private data")
    add_config_flags(c)
    c.add_argument("--name", required=True, help="this client's name (a key of data.client_domains)")
    c.add_argument("--tls-ca", help="CA that signed the server certificate (enables TLS)")
    c.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    c.add_argument("--tls-cert", help="client certificate (mutual TLS)"), c.add_argument("--tls-key")
    c.add_argument("--tls-server-name", help="expected name in the server certificate, if not the address host")
    c.add_argument("--give-up-after", type=float, default=600.0,
                   help="seconds to keep retrying an unreachable server before exiting [600]")
    c.add_argument("--state-dir", help="where this client saves its learner state (adapter, optimizer, kept paths) "
                   "each round, to resume a run after a restart [<server.data_dir>/clients/<name>]")
    c.add_argument("--no-state", action="store_true", help="keep the learner state in memory only")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(fn=_client)

    db = sub.add_parser("dashboard", help="web dashboard over a run database")
    add_config_flags(db)
    db.add_argument("--db", help="SQLAlchemy URL of the run database")
    db.add_argument("--host", default="127.0.0.1")
    db.add_argument("--port", type=int, default=8765)
    db.add_argument("--token", default=os.environ.get("LADA_DASHBOARD_TOKEN"), help="require this bearer token")
    db.set_defaults(fn=_dashboard)

    e = sub.add_parser("experiment", help="method x seed matrix -> metrics CSV, markdown table, plots")
    add_config_flags(e)
    e.add_argument("--methods", default="all", help="comma-separated (see lada.server.experiment.METHODS) or all")
    e.add_argument("--seeds", default="0,1,2")
    e.add_argument("--out", default="results/experiment")
    e.add_argument("--workers", type=int, default=2, help="runs in parallel (one CPU thread each)")
    e.add_argument("--redraw", action="store_true", help="rewrite the table and plots of --out from its metrics")
    e.set_defaults(fn=_experiment)

    m = sub.add_parser("models", help="embedded model management")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    mb = msub.add_parser("build", help="build (or reuse) the embedded models in the cache")
    add_config_flags(mb)
    mb.set_defaults(fn=_models_build)

    dbp = sub.add_parser("db", help="run database schema (Alembic migrations)")
    dsub = dbp.add_subparsers(dest="db_cmd", required=True)
    du = dsub.add_parser("upgrade", help="bring the schema up to date (the server also does this when it starts)")
    dc = dsub.add_parser("current", help="print the database's revision and the newest one (exit 1 if behind)")
    for sp in (du, dc):
        add_config_flags(sp)
        sp.add_argument("--db", help="SQLAlchemy URL (default: --server.db, else sqlite under --server.data_dir)")
        sp.set_defaults(fn=_db)
    du.add_argument("--revision", default="head", help="target revision [head]")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    sys.exit(args.fn(cfg, args))


if __name__ == "__main__":
    main()
