"""The decision on dead letters (``bridge errors retry|skip``, the admin page): each row back
to pending with a fresh attempt count, or given up on (the person's later intents may go), and
the decision in the person's journal with who took it, in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bridge.store import journal
from bridge.store import outbox

RETRY = "errors.retry"
SKIP = "errors.skip"


def decide(conn: Any, rows: Sequence[dict[str, Any]], *, op: str, actor: str, now: datetime) -> int:
    """Retry (``op`` RETRY) or skip (SKIP) these outbox rows, those still dead; each decision
    journalled on its person. How many rows changed."""
    dead = [row for row in rows if row["status"] == outbox.DEAD]
    ids = [int(row["id"]) for row in dead]
    if not ids:
        return 0
    changed = outbox.requeue(conn, ids, now) if op == RETRY else outbox.skip(conn, ids)
    for row in dead:
        journal.append(
            conn,
            journal.Entry(
                at=now,
                actor=actor,
                op=op,
                resource_type="User",
                resource_id=str(row["ordering_key"]),
                detail={
                    "outbox": row["id"],
                    "target": row["target"],
                    "intent": row["intent"],
                    "category": row.get("category"),
                    "last_error": row.get("last_error"),
                },
            ),
        )
    return changed
