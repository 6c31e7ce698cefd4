"""Runs: plans applied (or quarantined until approved) and who approved them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from bridge.store.tables import RunRow

RUNS = RunRow.__table__  # type: ignore[attr-defined]


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
        insert(RUNS).values(
            id=run_id,
            kind=kind,
            status=status,
            rules_version=rules_version,
            summary={**(summary or {}), "actor": actor},
            created=now,
        )
    )


def get(conn: Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    if isinstance(found.get("summary"), str):
        found["summary"] = json.loads(found["summary"])
    return found


def approve(conn: Connection, run_id: str, *, actor: str, now: datetime) -> None:
    conn.execute(
        update(RUNS)
        .where(RUNS.c.id == run_id)
        .values(status="approved", approved_by=actor, approved_at=now)
    )
