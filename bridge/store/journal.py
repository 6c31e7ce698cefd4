"""The change journal: one append-only row per write, in the write's own transaction."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import select

from bridge.store.raw import Sql
from bridge.store.raw import execute
from bridge.store.raw import read_json
from bridge.store.raw import stored_json
from bridge.store.raw import stored_time
from bridge.store.raw import utc
from bridge.store.tables import JournalRow

J = JournalRow.__table__  # type: ignore[attr-defined]
_APPEND = Sql(
    "INSERT INTO journal"
    " (at, actor, request_id, op, resource_type, resource_id, before, after, tolerances, detail)"
    " VALUES (:at, :actor, :request_id, :op, :resource_type, :resource_id, :before, :after,"
    " :tolerances, :detail) RETURNING seq"
)


@dataclass
class Entry:
    """One journal entry, as plain data."""

    at: datetime
    actor: str
    op: str
    resource_type: str | None = None
    resource_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    tolerances: list[str] = field(default_factory=list)
    detail: dict[str, Any] | None = None
    request_id: str | None = None
    seq: int | None = None


def append(conn: Connection, entry: Entry) -> int:
    """Append an entry; its ``seq``, the delta cursor."""
    seq = execute(
        conn,
        _APPEND,
        {
            "at": stored_time(conn, entry.at),
            "actor": entry.actor,
            "request_id": entry.request_id,
            "op": entry.op,
            "resource_type": entry.resource_type,
            "resource_id": entry.resource_id,
            "before": stored_json(conn, entry.before),
            "after": stored_json(conn, entry.after),
            "tolerances": stored_json(conn, entry.tolerances or None),
            "detail": stored_json(conn, entry.detail),
        },
    ).fetchone()[0]
    entry.seq = int(seq)
    return entry.seq


def read(
    conn: Connection, *, since: int = 0, resource_id: str | None = None, limit: int = 1000
) -> list[Entry]:
    """Entries after ``since`` in ``seq`` order, optionally of one resource."""
    query = select(J).where(J.c.seq > since)
    if resource_id is not None:
        query = query.where(J.c.resource_id == resource_id)
    rows = conn.execute(query.order_by(J.c.seq).limit(limit))
    return [entry_of(row) for row in rows]


def entry_of(row: Any) -> Entry:
    """One journal row (all its columns) as an Entry."""
    return Entry(
        seq=row.seq,
        at=utc(row.at),
        actor=row.actor,
        request_id=row.request_id,
        op=row.op,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        before=read_json(row.before),
        after=read_json(row.after),
        tolerances=read_json(row.tolerances) or [],
        detail=read_json(row.detail),
    )
