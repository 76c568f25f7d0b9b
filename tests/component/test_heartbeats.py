"""Clients' heartbeats reach the run database, the dashboard API and /metrics.

A real gRPC server (the production servicers) around a ``GrpcGrid``, a real
``client.runtime.Connection`` running its heartbeat loop, and the
``HeartbeatRecorder`` that ``lada server`` runs, writing into a SQLite run
database that the dashboard app then reads.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from pathlib import Path

from fastapi.testclient import TestClient
from lada.client.runtime import Connection, _heartbeats
from lada.common.proto.lada.v1 import coordinator_pb2
from lada.server.dashboard.app import create_app
from lada.server.db.tables import Client
from lada.server.db.writer import Store
from lada.server.heartbeats import HeartbeatRecorder
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.support.transport import TOKEN, grpc_server, register, stubs, wait_until

ADVANCE = dt.timedelta(seconds=0.6)  # several heartbeat intervals past the join


def _stored(store: Store, run_id: int, name: str = "client-1") -> dt.datetime | None:
    with store.session() as s:
        return s.scalars(select(Client.last_heartbeat).where(Client.run_id == run_id, Client.name == name)).one()


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.timezone.utc)


def test_heartbeats_advance_last_heartbeat_in_dashboard_and_metrics(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lada.db'}"
    store = Store(url)
    run_id = store.create_run("hb", "lada", {}, 1)
    calls: list[tuple[str, str]] = []
    with grpc_server(heartbeat_s=0.1) as srv:
        conn = Connection(srv.address, "client-1", TOKEN, "m", "arith",
                          observer=lambda what, _s, code: calls.append((what, code)))
        conn.register()
        assert abs(conn.heartbeat_s - 0.1) < 1e-6  # the server's interval, from the enrol reply
        store.upsert_client(run_id, "client-1", "m", "arith")  # what the Federation writes when it joins
        joined = _stored(store, run_id)
        assert joined is not None

        beats = HeartbeatRecorder(srv.grid, store, lambda: run_id, interval=0.1).start()
        stop = threading.Event()
        hb = threading.Thread(target=_heartbeats, args=(conn, stop), daemon=True)
        hb.start()
        try:
            assert wait_until(lambda: (_stored(store, run_id) or joined) > joined + ADVANCE, timeout=15), \
                f"stored last heartbeat stayed at {_stored(store, run_id)} (joined {joined})"
        finally:
            stop.set()
            hb.join(timeout=5)
            beats.stop()
            conn.channel.close()
    assert ("Heartbeat", "OK") in calls and {w for w, _ in calls} == {"Register", "Heartbeat"}
    last = _stored(store, run_id)
    assert last is not None and last > joined + ADVANCE

    with TestClient(create_app(url)) as web:
        (info,) = web.get(f"/api/runs/{run_id}/clients").json()
        shown = dt.datetime.fromisoformat(info["last_heartbeat"].replace("Z", "+00:00"))
        assert shown == _utc(last)
        assert shown - dt.datetime.fromisoformat(info["joined_at"].replace("Z", "+00:00")) > ADVANCE
        text = web.get("/metrics").text
    m = re.search(rf'^lada_client_last_heartbeat_timestamp_seconds{{run_id="{run_id}",client="client-1"}} (\S+)$',
                  text, re.M)
    assert m, text
    assert abs(float(m.group(1)) - _utc(last).timestamp()) < 1e-3
    assert float(m.group(1)) > _utc(joined + ADVANCE).timestamp()


def test_only_the_current_run_is_written_and_a_failing_write_fails_no_rpc(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'lada.db'}")
    old = store.create_run("hb", "lada", {}, 1)
    store.upsert_client(old, "client-1", "m", "arith")
    run_id = store.create_run("hb", "lada", {}, 1)
    store.upsert_client(run_id, "client-1", "m", "arith")
    before_old, before = _stored(store, old), _stored(store, run_id)
    current = {"id": 0}
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1")
        rec = HeartbeatRecorder(srv.grid, store, lambda: current["id"], interval=60)

        def beat() -> None:
            s.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(client_id="client-1"), metadata=s.md, timeout=10)

        beat()
        assert rec.flush() == 0 and _stored(store, run_id) == before  # no run open yet: nothing written

        current["id"] = run_id
        real = store.heartbeats

        def broken(*_a: object) -> None:
            raise OperationalError("UPDATE clients", {}, Exception("database is locked"))

        store.heartbeats = broken
        beat()  # the RPC does not touch the database, so it cannot fail with it
        assert rec.flush() == 0  # logged, not raised
        store.heartbeats = real
        beat()
        assert rec.flush() == 1 and rec.flush() == 0  # the retry writes; an unchanged sighting is not rewritten
        seen = srv.grid.last_seen()["client-1"]
    assert _stored(store, run_id) == dt.datetime.fromtimestamp(seen, dt.timezone.utc).replace(tzinfo=None)
    assert _stored(store, run_id) > before and _stored(store, old) == before_old
