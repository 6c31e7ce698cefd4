"""The people each HR feed owns (``feed_people``), and the last export of a feed that
``bridge sync`` accepted (a run of kind ``sync`` in the ``runs`` table).

A person is owned by a feed when the feed created or last synced them: a later export that
no longer lists them deactivates them. Every read here is batched or keyed, so a sync of a
100,000-person export never holds one huge statement.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.store.tables import FeedPersonRow
from bridge.store.tables import ResourceRow
from bridge.store.tables import RunRow

FEED_PEOPLE = FeedPersonRow.__table__  # type: ignore[attr-defined]
R = ResourceRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]

KIND = "sync"
"""The kind of the runs ``bridge sync`` records."""
BATCH = 500
"""Keys per ``IN (…)`` list."""


@dataclass(frozen=True, slots=True)
class Owned:
    """A person a feed owns: the resource, the hash of what the feed last mapped for them
    (None: not synced since the feed adopted or deactivated them), whether a sync
    deactivated them."""

    resource_id: str
    content_hash: str | None
    deactivated: bool


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored user found by externalId: its id and whether it is active."""

    resource_id: str
    active: bool | None


def _chunks(items: Sequence[str], size: int = BATCH) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def owned(conn: Connection, feed: str) -> dict[str, Owned]:
    """Every person ``feed`` owns, by externalId."""
    rows = conn.execute(
        select(
            FEED_PEOPLE.c.external_id,
            FEED_PEOPLE.c.resource_id,
            FEED_PEOPLE.c.content_hash,
            FEED_PEOPLE.c.deactivated,
        ).where(FEED_PEOPLE.c.feed == feed)
    )
    return {
        row[0]: Owned(row[1], row[2], row[3] is not None)
        for row in rows  # plain tuples: 100k rows
    }


def users_by_external_id(conn: Connection, external_ids: Sequence[str]) -> dict[str, Stored]:
    """The stored users holding these externalIds (absent: no such user)."""
    found: dict[str, Stored] = {}
    for chunk in _chunks(external_ids):
        rows = conn.execute(
            select(R.c.external_id, R.c.id, R.c.active).where(
                R.c.type == "User", R.c.external_id.in_(chunk)
            )
        )
        found.update({row[0]: Stored(row[1], row[2]) for row in rows})
    return found


def users_by_id(conn: Connection, resource_ids: Sequence[str]) -> dict[str, Stored]:
    """The stored users of these ids, by id (absent: deleted meanwhile)."""
    found: dict[str, Stored] = {}
    for chunk in _chunks(resource_ids):
        rows = conn.execute(select(R.c.id, R.c.active).where(R.c.type == "User", R.c.id.in_(chunk)))
        found.update({row[0]: Stored(row[0], row[1]) for row in rows})
    return found


def keep(
    conn: Connection,
    feed: str,
    people: Iterable[tuple[str, str, str | None]],
    *,
    run_id: str,
    now: datetime,
) -> None:
    """Record that the export of run ``run_id`` listed these people, each as
    ``(externalId, resource id, content hash)``: the feed owns them, active."""
    rows = [
        {
            "feed": feed,
            "external_id": external_id,
            "resource_id": resource_id,
            "content_hash": content_hash,
            "run_id": run_id,
            "seen_at": now,
            "deactivated": None,
        }
        for external_id, resource_id, content_hash in people
    ]
    if not rows:
        return
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    statement = dialect_insert(FEED_PEOPLE)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["feed", "external_id"],
            set_={
                name: statement.excluded[name]
                for name in ("resource_id", "content_hash", "run_id", "seen_at", "deactivated")
            },
        ),
        rows,
    )


def seen(conn: Connection, feed: str, external_ids: Sequence[str], *, run_id: str) -> None:
    """Mark unchanged people as listed by the export of run ``run_id`` (no time: the hash
    and the run say enough, and the write stays one small UPDATE per batch)."""
    for chunk in _chunks(external_ids):
        conn.execute(
            update(FEED_PEOPLE)
            .where(FEED_PEOPLE.c.feed == feed, FEED_PEOPLE.c.external_id.in_(chunk))
            .values(run_id=run_id)
        )


def deactivated(
    conn: Connection, feed: str, external_ids: Sequence[str], *, run_id: str, now: datetime
) -> None:
    """Mark people deactivated because the export of run ``run_id`` no longer listed them;
    their hash is cleared so that an export listing them again reactivates them."""
    for chunk in _chunks(external_ids):
        conn.execute(
            update(FEED_PEOPLE)
            .where(FEED_PEOPLE.c.feed == feed, FEED_PEOPLE.c.external_id.in_(chunk))
            .values(deactivated=now, content_hash=None, run_id=run_id)
        )


def forget(conn: Connection, feed: str, external_ids: Sequence[str]) -> None:
    """Drop people whose resource no longer exists (deleted over SCIM meanwhile)."""
    for chunk in _chunks(external_ids):
        conn.execute(
            delete(FEED_PEOPLE).where(
                FEED_PEOPLE.c.feed == feed, FEED_PEOPLE.c.external_id.in_(chunk)
            )
        )


def last_accepted(conn: Connection, feed: str) -> dict[str, Any] | None:
    """The summary of the last export of ``feed`` a sync applied (its ``people`` count is
    what the truncation guard compares a new export with), with the run's id and time."""
    rows = conn.execute(
        select(RUNS.c.id, RUNS.c.created, RUNS.c.summary)
        .where(RUNS.c.kind == KIND, RUNS.c.status == "applied")
        .order_by(RUNS.c.created.desc(), RUNS.c.id.desc())
    )
    for run_id, created, summary in rows:
        found = json.loads(summary) if isinstance(summary, str) else summary
        if isinstance(found, dict) and found.get("feed") == feed:
            return {**found, "run_id": run_id, "created": created}
    return None


def active_people(conn: Connection, feed: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The feed's people a sync has not deactivated, still active: (externalId, userName,
    SCIM document), streamed (``bridge quality``'s per-feed checks)."""
    rows = conn.execution_options(yield_per=BATCH).execute(
        select(FEED_PEOPLE.c.external_id, R.c.name, R.c.doc)
        .join(R, R.c.id == FEED_PEOPLE.c.resource_id)
        .where(
            FEED_PEOPLE.c.feed == feed,
            FEED_PEOPLE.c.deactivated.is_(None),
            R.c.active.is_not(False),
        )
        .order_by(FEED_PEOPLE.c.external_id)
    )
    for external_id, name, doc in rows:
        yield external_id, name, json.loads(doc) if isinstance(doc, str) else dict(doc)
