"""Alembic environment for the LaDa run database (SQLite and PostgreSQL).

The target schema is ``lada.server.db.tables.Base.metadata``. Three ways in:

* programmatically, from ``lada.server.db.migrations.upgrade`` (what ``Store`` and
  ``lada db upgrade`` use): the caller hands over an open connection in
  ``config.attributes["connection"]``;
* the ``alembic`` command line: ``alembic -c server/alembic.ini upgrade head``
  with the URL from ``-x db=URL``, else ``$LADA_SERVER__DB``, else the ini's
  ``sqlalchemy.url``;
* offline (``--sql``): renders the SQL for the URL's dialect without connecting.

SQLite cannot ``ALTER`` most things, so migrations render in batch mode there
(copy-and-move tables); PostgreSQL runs each upgrade in one transaction.
"""

from __future__ import annotations

import os

from alembic import context
from lada.server.db.engine import make_engine
from lada.server.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    x = context.get_x_argument(as_dictionary=True)
    url = x.get("db") or os.environ.get("LADA_SERVER__DB") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x db=URL or set LADA_SERVER__DB")
    return url


def _configure(**kw: object) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kw)


def run_offline() -> None:
    url = _url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:  # handed over by lada.server.db.migrations (already inside a transaction)
        _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
