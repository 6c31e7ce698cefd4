"""HR webhooks and export uploads refused before anything was stored, counted per feed.

A refusal (unsigned, forged, stale, too large…) keeps nothing of the body: one row per
declared feed, kind (``event`` or ``export``) and error counts how often, with the last reason
and when, so ``bridge quality`` can say "37 webhooks refused as forged since Monday: check the
secret" after the process restarted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store.tables import WebhookRefusalRow

REFUSALS = WebhookRefusalRow.__table__  # type: ignore[attr-defined]
EVENT = "event"
EXPORT = "export"
MAX_REASON = 500


def record(
    conn: Connection, *, feed: str, kind: str, error: str, reason: str, now: datetime
) -> None:
    """Count one refusal (an upsert: concurrent refusals add up)."""
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    insert = dialect_insert(REFUSALS).values(
        feed=feed,
        kind=kind,
        error=error[:32],
        count=1,
        last_reason=reason[:MAX_REASON],
        first_at=now,
        last_at=now,
    )
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["feed", "kind", "error"],
            set_={
                "count": REFUSALS.c.count + 1,
                "last_reason": insert.excluded.last_reason,
                "last_at": insert.excluded.last_at,
            },
        )
    )


def of_feed(conn: Connection, feed: str) -> list[dict[str, Any]]:
    """The feed's refusals, the most frequent first."""
    rows = conn.execute(
        select(REFUSALS).where(REFUSALS.c.feed == feed).order_by(REFUSALS.c.count.desc())
    )
    return [dict(row._mapping) for row in rows]
