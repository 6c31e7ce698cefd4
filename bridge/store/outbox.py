"""The transactional outbox: LMS calls written with the change that implies them (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from bridge.store.tables import OutboxRow

OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]

PENDING = "pending"
QUARANTINED = "quarantined"


def enqueue(
    conn: Connection,
    intents: Iterable[dict[str, Any]],
    *,
    now: datetime,
    journal_seq: int | None = None,
    run_id: str | None = None,
    status: str = PENDING,
) -> int:
    """Write intents (``Intent.as_dict()``) as outbox rows; how many were written."""
    rows = [
        {
            "target": intent["target"],
            "ordering_key": intent["person"],
            "intent": intent,
            "status": status,
            "attempts": 0,
            "next_attempt_at": now,
            "journal_seq": journal_seq,
            "run_id": run_id,
            "created": now,
        }
        for intent in intents
    ]
    if rows:
        conn.execute(insert(OUTBOX), rows)
    return len(rows)


def counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(OUTBOX.c.status, func.count()).group_by(OUTBOX.c.status))
    return {row[0]: int(row[1]) for row in rows}


def pending(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(OUTBOX).where(OUTBOX.c.status == PENDING).order_by(OUTBOX.c.id).limit(limit)
    )
    return [dict(row._mapping) for row in rows]


def release(conn: Connection, run_id: str) -> int:
    """Quarantined rows of a run become pending (``bridge approve RUN``)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.run_id == run_id, OUTBOX.c.status == QUARANTINED)
        .values(status=PENDING)
    )
    return int(result.rowcount)
