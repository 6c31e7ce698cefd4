"""HR webhook events: the durable queue and dedup of ``POST /hris/v1/events/{feed}``.

An event is stored once per (feed, event id): the insert that lands queues it, a replay finds
the row and stores nothing. The applier takes queued events oldest event time first (so each
person's events come in their own order), and finishes each in the transaction of the write
it made: applied, ignored (older than the person's last applied event) or failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store.raw import utc
from bridge.store.tables import ResourceRow
from bridge.store.tables import WebhookEventRow

EVENTS = WebhookEventRow.__table__  # type: ignore[attr-defined]
R = ResourceRow.__table__  # type: ignore[attr-defined]
QUEUED, APPLIED, IGNORED, FAILED = "queued", "applied", "ignored", "failed"
STATES = (QUEUED, APPLIED, IGNORED, FAILED)


@dataclass(frozen=True)
class Event:
    """One stored event, as plain data."""

    id: int
    feed: str
    event_id: str
    event_type: str
    external_id: str
    occurred: datetime
    received: datetime
    payload: dict[str, Any]
    state: str
    detail: str | None = None
    journal_seq: int | None = None
    attempts: int = 0


def _stored(value: datetime) -> datetime:
    """Every time is stored as UTC (SQLite keeps it naive and compares it as text)."""
    return value.astimezone(UTC)


def _event(row: Any) -> Event:
    found = dict(row._mapping)
    payload = found["payload"]
    return Event(
        id=int(found["id"]),
        feed=found["feed"],
        event_id=found["event_id"],
        event_type=found["event_type"],
        external_id=found["external_id"],
        occurred=utc(found["occurred"]),
        received=utc(found["received"]),
        payload=json.loads(payload) if isinstance(payload, str) else dict(payload),
        state=found["state"],
        detail=found["detail"],
        journal_seq=found["journal_seq"],
        attempts=int(found["attempts"] or 0),
    )


def enqueue(
    conn: Connection,
    *,
    feed: str,
    event_id: str,
    event_type: str,
    external_id: str,
    occurred: datetime,
    received: datetime,
    payload: dict[str, Any],
) -> int | None:
    """Queue an event: its row id, or None when the feed sent this event id before."""
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    statement = (
        dialect_insert(EVENTS)
        .values(
            feed=feed,
            event_id=event_id,
            event_type=event_type,
            external_id=external_id,
            occurred=_stored(occurred),
            received=_stored(received),
            payload=payload,
            state=QUEUED,
        )
        .on_conflict_do_nothing(index_elements=["feed", "event_id"])
        .returning(EVENTS.c.id)
    )
    found = conn.execute(statement).scalar()
    return None if found is None else int(found)


def next_queued(conn: Connection, now: datetime) -> Event | None:
    """The queued event with the oldest event time (then the first to arrive) that is due,
    and is its person's oldest: a person's later events wait behind one held back."""
    earlier = EVENTS.alias("earlier")
    waiting = (
        select(earlier.c.id)
        .where(
            earlier.c.state == QUEUED,
            earlier.c.feed == EVENTS.c.feed,
            earlier.c.external_id == EVENTS.c.external_id,
            (earlier.c.occurred < EVENTS.c.occurred)
            | ((earlier.c.occurred == EVENTS.c.occurred) & (earlier.c.id < EVENTS.c.id)),
        )
        .exists()
    )
    row = conn.execute(
        select(EVENTS)
        .where(
            EVENTS.c.state == QUEUED,
            EVENTS.c.next_attempt.is_(None) | (EVENTS.c.next_attempt <= _stored(now)),
            ~waiting,
        )
        .order_by(EVENTS.c.occurred, EVENTS.c.id)
        .limit(1)
    ).first()
    return None if row is None else _event(row)


def postpone(conn: Connection, event_id: int, *, until: datetime, detail: str) -> None:
    """Hold a queued event back until ``until`` (one more attempt counted), saying why."""
    conn.execute(
        update(EVENTS)
        .where(EVENTS.c.id == event_id, EVENTS.c.state == QUEUED)
        .values(attempts=EVENTS.c.attempts + 1, next_attempt=_stored(until), detail=detail)
    )


def claim(conn: Connection, event_id: int) -> bool:
    """Take a queued event in the transaction that applies it: False when another process
    has finished it meanwhile (on PostgreSQL the row stays locked until this one commits)."""
    result = conn.execute(
        update(EVENTS)
        .where(EVENTS.c.id == event_id, EVENTS.c.state == QUEUED)
        .values(state=QUEUED)  # the row lock: a second claimer waits, then sees it finished
    )
    return bool(result.rowcount)


def finish(
    conn: Connection,
    event_id: int,
    *,
    state: str,
    now: datetime,
    detail: str | None = None,
    journal_seq: int | None = None,
) -> None:
    conn.execute(
        update(EVENTS)
        .where(EVENTS.c.id == event_id)
        .values(state=state, detail=detail, journal_seq=journal_seq, finished=_stored(now))
    )


def last_applied(conn: Connection, feed: str, external_id: str) -> datetime | None:
    """The event time of the person's latest applied event of this feed."""
    found = conn.execute(
        select(func.max(EVENTS.c.occurred)).where(
            EVENTS.c.feed == feed,
            EVENTS.c.external_id == external_id,
            EVENTS.c.state == APPLIED,
        )
    ).scalar()
    return None if found is None else utc(found)


def get(conn: Connection, feed: str, event_id: str) -> Event | None:
    row = conn.execute(
        select(EVENTS).where(EVENTS.c.feed == feed, EVENTS.c.event_id == event_id)
    ).first()
    return None if row is None else _event(row)


def of_state(
    conn: Connection, state: str, *, feed: str | None = None, limit: int = 100
) -> list[Event]:
    """Events in one state, latest first (``failed``: the events rejected, and why)."""
    query = select(EVENTS).where(EVENTS.c.state == state)
    if feed is not None:
        query = query.where(EVENTS.c.feed == feed)
    rows = conn.execute(query.order_by(EVENTS.c.id.desc()).limit(limit))
    return [_event(row) for row in rows]


def feeds(conn: Connection) -> list[str]:
    """The feeds that have events stored."""
    return [str(row[0]) for row in conn.execute(select(EVENTS.c.feed).distinct())]


def counts(conn: Connection, feed: str | None = None) -> dict[str, int]:
    """How many events are in each state."""
    query = select(EVENTS.c.state, func.count()).group_by(EVENTS.c.state)
    if feed is not None:
        query = query.where(EVENTS.c.feed == feed)
    found = {state: 0 for state in STATES}
    found.update({str(state): int(n) for state, n in conn.execute(query)})
    return found


def person_with(conn: Connection, external_id: str) -> str | None:
    """The id of the user holding this externalId (unique per resource type)."""
    found = conn.execute(
        select(R.c.id).where(R.c.type == "User", R.c.external_id == external_id)
    ).scalar()
    return None if found is None else str(found)
