"""Schedule runs: each occurrence of a scheduled job, claimed by exactly one process.

The claim is a unique insert on (job key, occurrence), on SQLite and PostgreSQL alike. On
PostgreSQL a session advisory lock keyed on the job is held while it runs as well, so two
processes never run one job at the same time (an occurrence still running when the next is
due makes the next wait, not run beside it).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store.engine import Database
from bridge.store.raw import utc
from bridge.store.runs import RUNS
from bridge.store.tables import ScheduleRunRow

SCHEDULE_RUNS = ScheduleRunRow.__table__  # type: ignore[attr-defined]
RUNNING, DONE, FAILED, SKIPPED = "running", "done", "failed", "skipped"
FIRST_SEEN = "first seen: the schedule starts at the next occurrence (nothing was missed)"
ABANDONED = "abandoned: the process running it stopped before it finished"


def _stored(value: datetime) -> datetime:
    """Every time is stored as UTC (SQLite keeps it naive: the unique index compares text)."""
    return value.astimezone(UTC)


def _row(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    if isinstance(found.get("summary"), str):
        found["summary"] = json.loads(found["summary"])
    for column in ("occurrence", "started", "finished"):
        if isinstance(found.get(column), datetime):
            found[column] = utc(found[column])
    return found


def claim(
    conn: Connection,
    *,
    job_key: str,
    rule_file: str,
    job: str,
    occurrence: datetime,
    worker: str,
    now: datetime,
) -> int | None:
    """Claim one occurrence: the new row's id (run it), or None when another process (or an
    earlier run of this one) holds it already."""
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    statement = (
        dialect_insert(SCHEDULE_RUNS)
        .values(
            job_key=job_key,
            rule_file=rule_file,
            job=job,
            occurrence=_stored(occurrence),
            state=RUNNING,
            started=_stored(now),
            worker=worker,
        )
        .on_conflict_do_nothing(index_elements=["job_key", "occurrence"])
        .returning(SCHEDULE_RUNS.c.id)
    )
    found = conn.execute(statement).scalar()
    return None if found is None else int(found)


def known(conn: Connection, job_key: str) -> bool:
    """Whether the job has any row: a job never seen before has missed nothing."""
    row = conn.execute(
        select(SCHEDULE_RUNS.c.id).where(SCHEDULE_RUNS.c.job_key == job_key).limit(1)
    ).first()
    return row is not None


def claimed(conn: Connection, job_key: str, occurrence: datetime) -> bool:
    """Whether the occurrence has a row (running, done or failed)."""
    row = conn.execute(
        select(SCHEDULE_RUNS.c.id).where(
            SCHEDULE_RUNS.c.job_key == job_key,
            SCHEDULE_RUNS.c.occurrence == _stored(occurrence),
        )
    ).first()
    return row is not None


def finish(
    conn: Connection,
    run_id: int,
    *,
    state: str,
    now: datetime,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    conn.execute(
        update(SCHEDULE_RUNS)
        .where(SCHEDULE_RUNS.c.id == run_id)
        .values(state=state, finished=_stored(now), summary=summary, error=error)
    )


def abandon(conn: Connection, job_key: str, *, now: datetime) -> int:
    """Mark the job's runs still ``running`` failed (called holding the job's lock: no live
    process runs them); how many."""
    result = conn.execute(
        update(SCHEDULE_RUNS)
        .where(SCHEDULE_RUNS.c.job_key == job_key, SCHEDULE_RUNS.c.state == RUNNING)
        .values(state=FAILED, finished=_stored(now), error=ABANDONED)
    )
    return int(result.rowcount or 0)


def recent(conn: Connection, *, limit: int) -> list[dict[str, Any]]:
    """The latest runs, newest first."""
    rows = conn.execute(
        select(SCHEDULE_RUNS)
        .order_by(SCHEDULE_RUNS.c.started.desc(), SCHEDULE_RUNS.c.id.desc())
        .limit(limit)
    )
    return [_row(row) for row in rows]


def of_job(conn: Connection, job_key: str) -> list[dict[str, Any]]:
    """Every run of one job, oldest occurrence first."""
    rows = conn.execute(
        select(SCHEDULE_RUNS)
        .where(SCHEDULE_RUNS.c.job_key == job_key)
        .order_by(SCHEDULE_RUNS.c.occurrence, SCHEDULE_RUNS.c.id)
    )
    return [_row(row) for row in rows]


def plan_runs(conn: Connection, *, limit: int) -> list[dict[str, Any]]:
    """The latest runs of the ``runs`` table (apply, reconcile, …; not the reload decisions),
    newest first, for ``bridge runs``."""
    rows = conn.execute(
        select(RUNS)
        .where(RUNS.c.kind != "reload")
        .order_by(RUNS.c.created.desc(), RUNS.c.id.desc())
        .limit(limit)
    )
    found = []
    for row in rows:
        run = dict(row._mapping)
        if isinstance(run.get("summary"), str):
            run["summary"] = json.loads(run["summary"])
        for column in ("created", "approved_at"):
            if isinstance(run.get(column), datetime):
                run[column] = utc(run[column])
        found.append(run)
    return found


def last_of(conn: Connection, job_key: str) -> dict[str, Any] | None:
    """The job's run of the latest occurrence, if any."""
    row = conn.execute(
        select(SCHEDULE_RUNS)
        .where(SCHEDULE_RUNS.c.job_key == job_key)
        .order_by(SCHEDULE_RUNS.c.occurrence.desc(), SCHEDULE_RUNS.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _row(row)


def lock_key(job_key: str) -> int:
    """The job's advisory-lock key: a signed 64-bit number from its name."""
    return int.from_bytes(hashlib.sha256(job_key.encode()).digest()[:8], "big", signed=True)


_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


@contextmanager
def job_lock(db: Database, job_key: str) -> Iterator[bool]:
    """Hold the job's lock while the block runs: True when this process holds it, False when
    another does (then do not run the job). On PostgreSQL a session advisory lock on a
    connection of its own; on SQLite (served by one process) a lock of this process."""
    if db.is_sqlite:
        with _LOCAL_GUARD:
            lock = _LOCAL_LOCKS.setdefault(f"{db.engine.url}|{job_key}", threading.Lock())
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()
        return
    key = lock_key(job_key)
    with db.engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
