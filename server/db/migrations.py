"""Schema migrations of the run database through Alembic (SQLite and PostgreSQL).

``upgrade(engine)`` brings a database to the newest revision in
``server/migrations/versions``; ``Store`` calls it when it opens a database
and ``lada db upgrade`` calls it on its own. It is safe to call from several
processes at once (a server, ``lada db upgrade``, a test): the upgrade runs
under a lock (a PostgreSQL advisory lock held for the migration's
transaction; a file lock beside an SQLite file), and whoever gets the lock
second finds the schema current and does nothing.

Fast path: a database already at the head revision costs one ``SELECT`` of
``alembic_version`` (the head is read from the scripts once per process), so
opening a current database does not load Alembic's command machinery at all.

A database created before migrations existed (tables, no ``alembic_version``)
is stamped with the initial revision it was built by, then upgraded.
The dashboard never migrates: it opens the database read-only.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"  # server/migrations (package data)
INITIAL = "0001"  # the revision equal to the tables create_all used to make
_PG_LOCK_KEY = 0x1ADA5C4E  # advisory lock id for LaDa migrations


def alembic_config(connection: Connection | None = None, url: str | None = None):  # -> alembic.config.Config
    """A programmatic Alembic config (no ini file needed) pointing at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The database's revision, or None when it has no ``alembic_version`` table (or row)."""
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def is_current(engine: Engine) -> bool:
    with engine.connect() as conn:
        return current_revision(conn) == head_revision()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    db = engine.url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        yield
        return
    import fcntl

    lock_path = Path(db).resolve().with_name(Path(db).name + ".migrate.lock")
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database at ``engine`` to ``revision`` (default: head); returns the revision it ends at."""
    if revision in ("head", head_revision()) and is_current(engine):
        return head_revision()  # fast path: one SELECT
    from alembic import command

    sqlite = engine.dialect.name == "sqlite"
    with _sqlite_file_lock(engine) if sqlite else contextlib.nullcontext(), engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # held until this transaction commits
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        cfg = alembic_config(connection=conn)
        rev = current_revision(conn)
        if rev is None and engine.dialect.has_table(conn, "runs"):
            command.stamp(cfg, INITIAL)  # made by create_all before migrations existed
        command.upgrade(cfg, revision)
        return current_revision(conn)
