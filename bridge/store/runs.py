"""Runs: plans applied (or quarantined until approved) and who approved them, and the
decisions on rules reloads (``kind="reload"``) every process of a bridge follows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store.raw import utc
from bridge.store.tables import RunRow

RUNS = RunRow.__table__  # type: ignore[attr-defined]


def _values(
    run_id: str,
    kind: str,
    status: str,
    rules_version: str,
    summary: dict[str, Any] | None,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    return {
        "id": run_id,
        "kind": kind,
        "status": status,
        "rules_version": rules_version,
        "summary": {**(summary or {}), "actor": actor},
        "created": now,
    }


def _run(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    if isinstance(found.get("summary"), str):
        found["summary"] = json.loads(found["summary"])
    for column in ("created", "approved_at"):
        if isinstance(found.get(column), datetime):
            found[column] = utc(found[column])  # SQLite hands back naive UTC
    return found


def create(
    conn: Connection,
    run_id: str,
    *,
    kind: str,
    status: str,
    rules_version: str,
    summary: dict[str, Any] | None,
    now: datetime,
    actor: str,
) -> None:
    conn.execute(
        insert(RUNS).values(_values(run_id, kind, status, rules_version, summary, now, actor))
    )


def create_once(
    conn: Connection,
    run_id: str,
    *,
    kind: str,
    status: str,
    rules_version: str,
    summary: dict[str, Any] | None,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """Create the run unless one with its id exists (the first of several processes wins,
    on SQLite and PostgreSQL alike); the stored run either way."""
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    conn.execute(
        dialect_insert(RUNS)
        .values(_values(run_id, kind, status, rules_version, summary, now, actor))
        .on_conflict_do_nothing(index_elements=["id"])
    )
    found = get(conn, run_id)
    assert found is not None
    return found


def get(conn: Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    return None if row is None else _run(row)


def latest(conn: Connection, *, kind: str) -> dict[str, Any] | None:
    """The most recently created run of a kind."""
    row = conn.execute(
        select(RUNS)
        .where(RUNS.c.kind == kind)
        .order_by(RUNS.c.created.desc(), RUNS.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _run(row)


def of_status(conn: Connection, *, kind: str, status: str) -> list[dict[str, Any]]:
    """The runs of a kind in a status, oldest first."""
    rows = conn.execute(
        select(RUNS).where(RUNS.c.kind == kind, RUNS.c.status == status).order_by(RUNS.c.created)
    )
    return [_run(row) for row in rows]


def settle(
    conn: Connection, run_id: str, *, status: str, summary: dict[str, Any], expected: str
) -> bool:
    """Give a run its outcome if its status is still ``expected`` (another process may have
    settled it meanwhile: then nothing changes); True when this call settled it."""
    result = conn.execute(
        update(RUNS)
        .where(RUNS.c.id == run_id, RUNS.c.status == expected)
        .values(status=status, summary=summary)
    )
    return bool(result.rowcount == 1)


def released_since(conn: Connection, rules_version: str, since: datetime) -> dict[str, Any] | None:
    """The first run of ``bridge apply`` for ``rules_version`` that reached the LMS at or after
    ``since``: applied then (under the threshold), or approved then (it was quarantined)."""
    rows = conn.execute(
        select(RUNS).where(
            RUNS.c.kind == "apply",
            RUNS.c.rules_version == rules_version,
            RUNS.c.status.in_(("applied", "approved")),
        )
    )
    since = utc(since)
    released = []
    for row in rows:
        run = _run(row)
        at = run["approved_at"] if run["status"] == "approved" else run["created"]
        if at is not None and at >= since:
            released.append((at, run))
    return min(released, key=lambda found: (found[0], found[1]["id"]))[1] if released else None


def approve(conn: Connection, run_id: str, *, actor: str, now: datetime) -> None:
    conn.execute(
        update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(status="approved", approved_by=actor, approved_at=now)
    )


HELD = "held"
"""A run of live-write removals the brake holds back (``bridge approve`` / ``bridge reject``)."""


def open_held(conn: Connection, target: str) -> dict[str, Any] | None:
    """The held run of ``target`` still awaiting a decision, if any (the oldest)."""
    rows = conn.execute(
        select(RUNS)
        .where(RUNS.c.kind == HELD, RUNS.c.status == "quarantined")
        .order_by(RUNS.c.created, RUNS.c.id)
    )
    for row in rows:
        run = _run(row)
        if (run.get("summary") or {}).get("target") == target:
            return run
    return None


def resummarise(conn: Connection, run_id: str, summary: dict[str, Any]) -> None:
    """A run's summary brought up to date (a held run's counts grow with each write)."""
    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(summary=summary))


def reject(conn: Connection, run_id: str, *, actor: str, now: datetime, reason: str | None) -> bool:
    """Close a quarantined run as rejected, with who decided, when and why; False when it is
    no longer quarantined (approved or rejected meanwhile)."""
    run = get(conn, run_id)
    if run is None or run["status"] != "quarantined":
        return False
    summary = {
        **(run.get("summary") or {}),
        "rejected_by": actor,
        "rejected_at": now.isoformat(),
        "reason": reason,
    }
    return settle(conn, run_id, status="rejected", summary=summary, expected="quarantined")
