"""One server per data dir and database: an exclusive lock held for the server's lifetime.

Two servers on one database would both resume the same open run and overwrite each
other's rounds, so ``lada server`` takes the lock before it does any work and a
second one is refused with a clear error. The lock is ``fcntl.flock`` on
``<data_dir>/server.lock`` and, for a SQLite file outside the data dir, on
``<db file>.server.lock`` next to it; for PostgreSQL, which may hold several
runs written at once, a session advisory lock on the run name, held by one
connection. The kernel (or PostgreSQL) drops every
lock when the process dies, even by SIGKILL, so a killed server never blocks its
restart. ``flock`` on a network file system may not be shared between hosts: keep
the data dir and a SQLite database on a local disk (docs/deploy.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from .db.engine import make_engine, normalize_url

#: first key of pg_try_advisory_lock(key, hashtext(run name)): "the LaDa server of this run"
PG_LOCK_KEY = 0x1ADA5E4E


class ServerLocked(RuntimeError):
    """Another server holds this data dir or database."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, or None (another database, or in memory)."""
    u = make_url(normalize_url(url))
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


class ServerLock:
    """The locks of one server; ``acquire`` takes all of them or none (``ServerLocked``)."""

    def __init__(self, data_dir: str | Path, db_url: str, run_name: str = "") -> None:
        self.data_dir, self.db_url, self.run_name = Path(data_dir), db_url, run_name
        self._fds: list[int] = []
        self._pg: Any = None  # (engine, connection) holding the advisory lock

    def acquire(self) -> ServerLock:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file(self.data_dir / "server.lock", f"data dir {self.data_dir}")
            db = sqlite_file(self.db_url)
            if db is not None and db.resolve().parent != self.data_dir.resolve():
                db.parent.mkdir(parents=True, exist_ok=True)
                self._lock_file(db.parent / f"{db.name}.server.lock", f"database {db}")
            elif db is None and make_url(normalize_url(self.db_url)).get_backend_name() == "postgresql":
                self._lock_pg()
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing drops the flock
        self._fds.clear()
        if self._pg is not None:
            engine, conn = self._pg
            self._pg = None
            conn.close()  # ends the session: the advisory lock goes with it
            engine.dispose()

    def __enter__(self) -> ServerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _lock_file(self, path: Path, what: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ServerLocked(f"another lada server holds the {what} (lock {path}: {holder}); stop it first, "
                               "or give this server its own --server.data_dir and --server.db") from None
        # who holds it, for the message a second server prints (the lock is the flock, not this text)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
        self._fds.append(fd)

    def _lock_pg(self) -> None:
        engine = make_engine(self.db_url)
        conn = engine.connect()
        got = conn.execute(text("select pg_try_advisory_lock(:k, hashtext(:name))"),
                           {"k": PG_LOCK_KEY, "name": self.run_name}).scalar()
        conn.commit()
        if not got:
            conn.close()
            engine.dispose()
            url = engine.url.render_as_string(hide_password=True)
            raise ServerLocked(f"another lada server holds run {self.run_name!r} of the database {url} (PostgreSQL "
                               f"advisory lock {PG_LOCK_KEY}); stop it first, or choose another --run.name or "
                               "--server.db")
        self._pg = (engine, conn)
