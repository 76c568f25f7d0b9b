"""The one writer of run state: small transactions, a round's results in one.

The server is the only writer. A round's results are written in one
transaction, so a crash leaves either the whole round or none of it; redoing a
round replaces what an earlier try of it wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, delete, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from . import migrations
from .engine import make_engine
from .tables import (
    Allocation,
    Client,
    Event,
    Metric,
    PathText,
    PublicSample,
    ReasoningPath,
    Reward,
    Round,
    Run,
    text_key,
    utcnow,
)

MAX_TEXT_IDS = 2_000_000  # committed path-text ids a Store remembers (about 100 bytes each)


class DatabaseGone(RuntimeError):
    """The SQLite file the server opened was deleted or replaced: nothing more can be committed to it."""


class Store:
    """The one module that writes run state. Methods are small transactions."""

    def __init__(self, url: str, create: bool = True) -> None:
        """``create``: bring the schema up to date through the Alembic migrations
        (``migrations.upgrade``; one ``SELECT`` when it already is); False opens as is."""
        self.url = url
        self.bulk = True  # commit_round by bulk inserts (``server.bulk_record``; False: one ORM object per row)
        self._text_ids: dict[bytes, int] = {}  # sha256 -> PathText.id of committed texts (``_store_texts``)
        self.engine = make_engine(url)
        if create:
            migrations.upgrade(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._file, self._identity = _sqlite_path(self.engine), None
        if self._file is not None:
            with self.engine.connect():  # the file exists once a connection opened it
                pass
            self._identity = _file_identity(self._file)

    @contextmanager
    def session(self) -> Iterator[Session]:
        self.check_file()
        with self._session.begin() as s:
            yield s
            self.check_file()  # before the commit: never into a deleted file
        if s.info.get("text_ids"):  # committed: these path texts exist for good (never deleted)
            if len(self._text_ids) > MAX_TEXT_IDS:
                self._text_ids.clear()
            self._text_ids.update(s.info["text_ids"])

    def check_file(self) -> None:
        """Raise ``DatabaseGone`` if the SQLite file on disk is not the one opened at start.

        A deleted database stays writable through the open connection, and a new
        connection creates an empty file in its place: either way every commit from
        then on would be lost silently, so every transaction checks first."""
        if self._file is None:
            return
        now = _file_identity(self._file)
        if now != self._identity:
            what = "was deleted" if now is None else "was replaced by another file"
            raise DatabaseGone(f"the database file {self._file} {what} while the server was using it; nothing "
                               "more is committed. Restore the file (or choose another --server.db) and restart "
                               "the server")

    # ------------------------------------------------------------------ runs
    def create_run(self, name: str, method: str, config: dict, rounds_total: int) -> int:
        with self.session() as s:
            run = Run(name=name, method=method, config=config, rounds_total=rounds_total, status="running")
            s.add(run)
            s.flush()
            return run.id

    def latest_open_run(self, name: str) -> Run | None:
        with self.session() as s:
            return s.scalars(
                select(Run).where(Run.name == name, Run.status == "running").order_by(Run.id.desc())
            ).first()

    def finish_run(self, run_id: int, status: str = "finished") -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is not None:
                run.status = status
                run.finished_at = utcnow()

    def fail_run(self, run_id: int, reason: str) -> None:
        """Mark a run failed in one transaction, so nothing it leaves says otherwise: the reason on
        the run, its open (uncommitted) round failed, its clients still in it left."""
        now = utcnow()
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                return
            run.status, run.finished_at, run.reason = "failed", now, reason[:4000]
            s.execute(update(Round).where(Round.run_id == run_id, Round.status == "running")
                      .values(status="failed", finished_at=now))
            s.execute(update(Client).where(Client.run_id == run_id, Client.state.in_(("registered", "active")))
                      .values(state="left"))

    def last_committed_round(self, run_id: int) -> int:
        with self.session() as s:
            idx = s.scalars(
                select(Round.idx).where(Round.run_id == run_id, Round.status == "done").order_by(Round.idx.desc())
            ).first()
            return idx or 0

    # ------------------------------------------------------------------ clients
    def upsert_client(self, run_id: int, name: str, model: str, domain: str, state: str = "active") -> int:
        with self.session() as s:
            c = s.scalars(select(Client).where(Client.run_id == run_id, Client.name == name)).first()
            if c is None:
                c = Client(run_id=run_id, name=name, model=model, domain=domain)
                s.add(c)
            c.model, c.domain, c.state, c.last_heartbeat = model, domain, state, utcnow()
            s.flush()
            return c.id

    def set_client_state(self, run_id: int, name: str, state: str) -> None:
        with self.session() as s:
            c = s.scalars(select(Client).where(Client.run_id == run_id, Client.name == name)).first()
            if c is not None:
                c.state = state

    def heartbeat(self, run_id: int, name: str, at: dt.datetime | None = None) -> None:
        self.heartbeats(run_id, {name: at or utcnow()})

    def heartbeats(self, run_id: int, seen: Mapping[str, dt.datetime]) -> None:
        """The last heartbeat (naive UTC) of many clients of run ``run_id``, in one transaction.

        A stored time only moves forward (the join time written by ``upsert_client`` is not
        undone by an older sighting), and a name with no row in this run is skipped."""
        if not seen:
            return
        t = Client.__table__
        stmt = (update(t)
                .where(t.c.run_id == run_id, t.c.name == bindparam("b_name"),
                       or_(t.c.last_heartbeat.is_(None), t.c.last_heartbeat < bindparam("b_ts")))
                .values(last_heartbeat=bindparam("b_ts")))
        with self.session() as s:
            s.connection().execute(stmt, [{"b_name": n, "b_ts": ts} for n, ts in seen.items()])

    # ------------------------------------------------------------------ events
    def event(self, run_id: int | None, kind: str, subject: str = "", message: str = "") -> None:
        with self.session() as s:
            s.add(Event(run_id=run_id, kind=kind, subject=subject, message=message[:4000]))

    # ------------------------------------------------------------------ samples
    def add_public_samples(self, run_id: int, samples: Iterable[Any]) -> None:
        with self.session() as s:
            have = set(s.scalars(select(PublicSample.sample_id).where(PublicSample.run_id == run_id)))
            s.add_all(
                PublicSample(run_id=run_id, sample_id=x.id, domain=x.domain, question=x.question, answer=x.answer)
                for x in samples
                if x.id not in have
            )

    # ------------------------------------------------------------------ rounds
    def start_round(self, run_id: int, idx: int) -> bool:
        """Mark round ``idx`` current; True if it is new, False if an earlier try of it
        (a server that died mid-round) already has its row, which is reused, not duplicated."""
        with self.session() as s:
            r = s.scalars(select(Round).where(Round.run_id == run_id, Round.idx == idx)).first()
            if r is None:
                s.add(Round(run_id=run_id, idx=idx))
            run = s.get(Run, run_id)
            if run is not None:
                run.current_round = idx
            return r is None

    def commit_round(self, run_id: int, idx: int, record: RoundRecord) -> None:
        """Everything a round produced, in one transaction (replacing a partial earlier try).

        With ``bulk`` each table's rows go in as one executemany of plain dicts (``insert``): the
        ORM's one object per row cost 2.7 s of a 4.7 s round at 200 clients (issue 17)."""
        if self.bulk:
            self._commit_round_bulk(run_id, idx, record)
            return
        with self.session() as s:
            for model in (Allocation, Reward, ReasoningPath):
                s.query(model).filter(model.run_id == run_id, model.round_idx == idx).delete()
            s.query(Metric).filter(Metric.run_id == run_id, Metric.round_idx == idx).delete()
            # rows this round writes for other rounds (round 0: before any collaboration) are
            # replaced too, so redoing a round after a crash duplicates nothing
            for m_idx, subj, name in {(m[0], m[1], m[2]) for m in record.metrics if m[0] != idx}:
                s.query(Metric).filter(Metric.run_id == run_id, Metric.round_idx == m_idx, Metric.subject == subj,
                                       Metric.name == name).delete()
            s.add_all(
                Allocation(run_id=run_id, round_idx=idx, receiver=a[0], sender=a[1], sample_id=a[2],
                           score=float(a[3]), rank=int(a[4]))
                for a in record.allocations
            )
            s.add_all(
                Reward(run_id=run_id, round_idx=idx, receiver=r[0], sender=r[1], sample_id=r[2], value=tidy(r[3]))
                for r in record.rewards
            )
            keys = _store_texts(s, record.paths, self._text_ids)
            s.add_all(
                ReasoningPath(run_id=run_id, round_idx=idx, author=p[0], sample_id=p[1], text_id=k,
                              correct=bool(p[3]))
                for p, k in zip(record.paths, keys)
            )
            s.add_all(
                Metric(run_id=run_id, round_idx=m_idx, subject=subj, name=name, value=tidy(v))
                for (m_idx, subj, name, v) in record.metrics
            )
            r = s.scalars(select(Round).where(Round.run_id == run_id, Round.idx == idx)).first()
            if r is None:
                r = Round(run_id=run_id, idx=idx)
                s.add(r)
            r.status, r.finished_at, r.timings = "done", utcnow(), _tidy_timings(record.timings)

    def _commit_round_bulk(self, run_id: int, idx: int, record: RoundRecord) -> None:
        with self.session() as s:
            for model in (Allocation, Reward, ReasoningPath, Metric):
                s.execute(delete(model).where(model.run_id == run_id, model.round_idx == idx))
            others: dict[int, set[tuple[str, str]]] = {}  # metrics this round writes for other rounds (round 0)
            for m in record.metrics:
                if m[0] != idx:
                    others.setdefault(m[0], set()).add((m[1], m[2]))
            for m_idx, keys in others.items():
                s.execute(delete(Metric).where(Metric.run_id == run_id, Metric.round_idx == m_idx,
                                               tuple_(Metric.subject, Metric.name).in_(sorted(keys))))
            rows: list[tuple[type, list[dict[str, Any]]]] = [
                (Allocation, [{"run_id": run_id, "round_idx": idx, "receiver": a[0], "sender": a[1],
                               "sample_id": a[2], "score": float(a[3]), "rank": int(a[4])}
                              for a in record.allocations]),
                (Reward, [{"run_id": run_id, "round_idx": idx, "receiver": r[0], "sender": r[1], "sample_id": r[2],
                           "value": tidy(r[3])} for r in record.rewards]),
                (ReasoningPath, [{"run_id": run_id, "round_idx": idx, "author": p[0], "sample_id": p[1],
                                  "text_id": k, "correct": bool(p[3])}
                                 for p, k in zip(record.paths, _store_texts(s, record.paths, self._text_ids))]),
                (Metric, [{"run_id": run_id, "round_idx": m_idx, "subject": subj, "name": name, "value": tidy(v)}
                          for (m_idx, subj, name, v) in record.metrics]),
            ]
            for model, batch in rows:
                if batch:
                    s.execute(insert(model.__table__), batch)
            done = {"status": "done", "finished_at": utcnow(), "timings": _tidy_timings(record.timings)}
            if s.execute(update(Round).where(Round.run_id == run_id, Round.idx == idx).values(**done)).rowcount == 0:
                s.execute(insert(Round.__table__), [{"run_id": run_id, "idx": idx, "started_at": utcnow(), **done}])

    def set_round_timings(self, run_id: int, idx: int, timings: Mapping[str, float]) -> None:
        """A committed round's timings again, once the phases timed after its commit (``record``:
        the commit itself and the checkpoint) are known; the round's results stay as committed."""
        with self.session() as s:
            s.execute(update(Round).where(Round.run_id == run_id, Round.idx == idx)
                      .values(timings=_tidy_timings(timings)))

    def record_metrics(self, run_id: int, rows: Iterable[tuple[int, str, str, float]]) -> None:
        """Metrics outside a round (round 0: before any collaboration); idempotent."""
        with self.session() as s:
            for idx, subj, name, v in rows:
                m = s.scalars(
                    select(Metric).where(Metric.run_id == run_id, Metric.round_idx == idx,
                                         Metric.subject == subj, Metric.name == name)
                ).first()
                if m is None:
                    s.add(Metric(run_id=run_id, round_idx=idx, subject=subj, name=name, value=tidy(v)))
                else:
                    m.value = tidy(v)

    # ------------------------------------------------------------------ reads used by the server
    def metrics(self, run_id: int) -> list[Metric]:
        with self.session() as s:
            return list(s.scalars(select(Metric).where(Metric.run_id == run_id).order_by(Metric.round_idx)))


def _store_texts(s: Session, paths: list[tuple[str, str, str, bool]], known: dict[bytes, int]) -> list[int]:
    """Each path's ``PathText.id``, storing the texts ``path_texts`` lacks (one executemany of the
    new ones). ``known`` (sha256 -> id of texts already committed) spares the lookups; the ids
    this call finds or makes are added to it only by the caller, once its transaction committed.
    Texts go in before the rows that reference them."""
    keys = [text_key(p[2]) for p in paths]
    ids = {k: known[k] for k in keys if k in known}  # not a copy of all of ``known`` each round
    todo = {k: p[2] for k, p in zip(keys, paths) if k not in ids}
    if todo:
        # insert them all, a stored one ignored, and read the new ids back in the same statements;
        # then look up only the ones already stored (by an earlier run, or before a restart)
        table = PathText.__table__
        stmt = _insert_ignoring_duplicates(s, table)
        rows = [{"sha256": k, "text": t} for k, t in todo.items()]
        if stmt is None:
            ids.update(_text_ids(s, list(todo)))
            s.execute(insert(table), [r for r in rows if r["sha256"] not in ids])
        else:
            ids.update((bytes(k), tid) for tid, k in s.execute(stmt.returning(table.c.id, table.c.sha256), rows))
        ids.update(_text_ids(s, [k for k in todo if k not in ids]))
        s.info.setdefault("text_ids", {}).update({k: ids[k] for k in todo})
    return [ids[k] for k in keys]


def _text_ids(s: Session, keys: list[bytes]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    if not keys:
        return out
    for i in range(0, len(keys), 500):
        out.update((bytes(k), tid) for k, tid in s.execute(
            select(PathText.sha256, PathText.id).where(PathText.sha256.in_(keys[i:i + 500]))))
    return out


def _insert_ignoring_duplicates(s: Session, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` (SQLite, PostgreSQL), or None for another database.
    "Do nothing" also covers a key another writer of a shared database stored meanwhile."""
    name = s.get_bind().dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        return None
    return dialect_insert(table).on_conflict_do_nothing()


def tidy(v: float, digits: int = 6) -> float:
    """``v`` rounded to ``digits`` significant digits (never into its integer part), as stored for
        display: the clients report float32s, and 0.15600000321865082 is noise, not data. Whole
        numbers (bytes, counts) and non-finite values stay as they are."""
    v = float(v)
    if not math.isfinite(v) or v.is_integer():
        return v
    return float(f"{v:.{max(digits, int(math.log10(abs(v))) + 1)}g}")


def _tidy_timings(timings: Mapping[str, float]) -> dict[str, float]:
    return {str(k): tidy(v) for k, v in timings.items()}


def _sqlite_path(engine: Any) -> str | None:
    """The file of a SQLite engine, or None (another database, or in memory)."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return os.path.abspath(db)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class RoundRecord:
    """What one round wrote, collected in memory and committed at once.

    Tuples keep the hot path allocation-free:
    allocations (receiver, sender, sample_id, score, rank); rewards (receiver,
    sender, sample_id or '*', value); paths (author, sample_id, text, correct);
    metrics (round_idx, subject, name, value).
    """

    def __init__(self) -> None:
        self.allocations: list[tuple[str, str, str, float, int]] = []
        self.rewards: list[tuple[str, str, str, float]] = []
        self.paths: list[tuple[str, str, str, bool]] = []
        self.metrics: list[tuple[int, str, str, float]] = []
        self.timings: dict[str, float] = {}

    def to_json(self) -> str:
        return json.dumps({"timings": self.timings, "n_alloc": len(self.allocations)})
