"""The transactional outbox: LMS calls written with the change that implies them (DESIGN §2)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import and_
from sqlalchemy import distinct
from sqlalchemy import exists
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update

from bridge.store.raw import Sql
from bridge.store.raw import execute_many
from bridge.store.raw import read_time
from bridge.store.raw import stored_json
from bridge.store.raw import stored_time
from bridge.store.tables import JournalRow
from bridge.store.tables import OutboxRow

OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]

PENDING = "pending"
QUARANTINED = "quarantined"
REJECTED = "rejected"
"""Terminal: a quarantined row an admin refused (``bridge reject RUN``); never sent."""

_ENQUEUE = Sql(
    "INSERT INTO outbox"
    " (target, ordering_key, intent, status, attempts, next_attempt_at, journal_seq, run_id,"
    " created)"
    " VALUES (:target, :ordering_key, :intent, :status, 0, :now, :journal_seq, :run_id, :now)"
)


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
    at = stored_time(conn, now)
    rows = [
        {
            "target": intent["target"],
            "ordering_key": intent["person"],
            "intent": stored_json(conn, intent),
            "status": status,
            "now": at,
            "journal_seq": journal_seq,
            "run_id": run_id,
        }
        for intent in intents
    ]
    if rows:
        execute_many(conn, _ENQUEUE, rows)
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


def reject(conn: Connection, run_id: str) -> int:
    """Quarantined rows of a run are never sent (``bridge reject RUN``)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.run_id == run_id, OUTBOX.c.status == QUARANTINED)
        .values(status=REJECTED)
    )
    return int(result.rowcount)


def _live_removals(target: str, since: datetime, kinds: Collection[str]) -> Any:
    """Rows live writes (rows of no run) enqueued for ``target`` since ``since`` whose intent
    is one of ``kinds``, whatever became of them; the kind read in SQL (JSON / JSONB)."""
    return and_(
        OUTBOX.c.target == target,
        OUTBOX.c.run_id.is_(None),
        OUTBOX.c.created >= since,
        OUTBOX.c.intent["kind"].as_string().in_(list(kinds)),
    )


def removers_since(conn: Connection, target: str, since: datetime, kinds: Collection[str]) -> int:
    """How many people live writes removed something from on ``target`` since ``since``:
    what the brake counts against the threshold (counted in the database, not in Python)."""
    query = select(func.count(distinct(OUTBOX.c.ordering_key))).where(
        _live_removals(target, since, kinds)
    )
    return int(conn.execute(query).scalar() or 0)


def removers_among(
    conn: Connection,
    target: str,
    since: datetime,
    kinds: Collection[str],
    people: Collection[str],
) -> set[str]:
    """Which of ``people`` are already among those counted by ``removers_since``."""
    chosen = list(dict.fromkeys(people))
    found: set[str] = set()
    for start in range(0, len(chosen), _CHUNK):
        query = (
            select(OUTBOX.c.ordering_key)
            .where(
                _live_removals(target, since, kinds),
                OUTBOX.c.ordering_key.in_(chosen[start : start + _CHUNK]),
            )
            .distinct()
        )
        found.update(str(person) for (person,) in conn.execute(query))
    return found


def later_of(
    conn: Connection, target: str, people: Collection[str], after_id: int
) -> list[dict[str, Any]]:
    """Rows of ``people`` on ``target`` written after row ``after_id``, whatever their status,
    oldest first (what a held removal may have been undone by)."""
    chosen = list(dict.fromkeys(people))
    found: list[dict[str, Any]] = []
    for start in range(0, len(chosen), _CHUNK):
        query = select(OUTBOX).where(
            OUTBOX.c.target == target,
            OUTBOX.c.id > after_id,
            OUTBOX.c.ordering_key.in_(chosen[start : start + _CHUNK]),
        )
        found.extend(_row(row) for row in conn.execute(query))
    found.sort(key=lambda row: int(row["id"]))
    return found


def cancel(conn: Connection, ids: Collection[int]) -> int:
    """Quarantined rows that will never be sent (their change was undone meanwhile)."""
    if not ids:
        return 0
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(list(ids)), OUTBOX.c.status == QUARANTINED)
        .values(status=REJECTED)
    )
    return int(result.rowcount)


def lock_target(conn: Connection, target: str) -> None:
    """Serialise the brake's count-then-enqueue per target until the transaction ends (on
    PostgreSQL a transaction advisory lock; SQLite has one writer at a time anyway)."""
    if conn.dialect.name != "postgresql":
        return
    key = int.from_bytes(
        hashlib.sha256(f"brake|{target}".encode()).digest()[:8], "big", signed=True
    )
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


RUNNING = "running"
RETRY = "retry"
DONE = "done"
DEAD = "dead"
SKIPPED = "skipped"
# An earlier row in one of these states holds a person's later rows back (per-person order).
_BLOCKING = (PENDING, RETRY, RUNNING, DEAD)


def claim(
    conn: Connection,
    *,
    now: datetime,
    lease_until: datetime,
    worker: str,
    limit: int,
    skip_locked: bool,
    targets: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Claim due rows, at most one per person, oldest first; expired leases are reclaimed.

    On PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED``, so any number of
    relays share the work without waiting on each other or delivering a row twice.
    """
    earlier = OUTBOX.alias("earlier")
    due = or_(
        and_(OUTBOX.c.status.in_((PENDING, RETRY)), OUTBOX.c.next_attempt_at <= now),
        and_(OUTBOX.c.status == RUNNING, OUTBOX.c.lease_until < now),
    )
    blocked = exists().where(
        earlier.c.target == OUTBOX.c.target,
        earlier.c.ordering_key == OUTBOX.c.ordering_key,
        earlier.c.id < OUTBOX.c.id,
        earlier.c.status.in_(_BLOCKING),
    )
    query = select(OUTBOX.c.id).where(due, ~blocked)
    if targets is not None:
        query = query.where(OUTBOX.c.target.in_(list(targets)))
    query = query.order_by(OUTBOX.c.id).limit(limit)
    if skip_locked:
        query = query.with_for_update(skip_locked=True, of=OUTBOX)
    ids = [row.id for row in conn.execute(query)]
    if not ids:
        return []
    conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(ids))
        .values(
            status=RUNNING,
            lease_until=lease_until,
            claimed_by=worker,
            attempts=OUTBOX.c.attempts + 1,
        )
    )
    rows = conn.execute(select(OUTBOX).where(OUTBOX.c.id.in_(ids)).order_by(OUTBOX.c.id))
    return [_row(row) for row in rows]


def _row(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    if isinstance(found.get("intent"), str):
        found["intent"] = json.loads(found["intent"])
    return found


def settle(
    conn: Connection,
    row_id: int,
    *,
    worker: str,
    status: str,
    now: datetime,
    next_attempt_at: datetime | None = None,
    error: str | None = None,
    category: str | None = None,
    charged: bool = True,
) -> bool:
    """Record how a claimed row ended; False when the lease was lost to another relay.

    ``charged=False``: the attempt met an outage or a failing preflight, not a fault of the
    row, so the claim's attempt is given back (waiting never counts towards a dead letter).
    """
    values: dict[str, Any] = {
        "status": status,
        "lease_until": None,
        "last_error": error,
        "category": category,
    }
    if not charged:
        values["attempts"] = OUTBOX.c.attempts - 1
    if status == DONE:
        values["delivered_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id == row_id, OUTBOX.c.status == RUNNING, OUTBOX.c.claimed_by == worker)
        .values(values)
    )
    return bool(result.rowcount)


def dead_letters(
    conn: Connection, *, category: str | None = None, target: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    query = select(OUTBOX).where(OUTBOX.c.status == DEAD)
    if category:
        query = query.where(OUTBOX.c.category == category)
    if target:
        query = query.where(OUTBOX.c.target == target)
    return [_row(row) for row in conn.execute(query.order_by(OUTBOX.c.id).limit(limit))]


def get(conn: Connection, row_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(OUTBOX).where(OUTBOX.c.id == row_id)).first()
    return _row(row) if row is not None else None


def requeue(conn: Connection, ids: list[int], now: datetime) -> int:
    """Dead letters go back to pending, with a fresh attempt count (``bridge errors retry``)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == DEAD)
        .values(status=PENDING, attempts=0, next_attempt_at=now, last_error=None, category=None)
    )
    return int(result.rowcount)


def skip(conn: Connection, ids: list[int]) -> int:
    """Dead letters are given up on; the person's later rows may go (``bridge errors skip``)."""
    result = conn.execute(
        update(OUTBOX).where(OUTBOX.c.id.in_(ids), OUTBOX.c.status == DEAD).values(status=SKIPPED)
    )
    return int(result.rowcount)


def backlog(conn: Connection) -> int:
    """Rows not yet settled for good (pending, retry, running)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(OUTBOX)
            .where(OUTBOX.c.status.in_((PENDING, RETRY, RUNNING)))
        ).scalar_one()
    )


def of_run(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The rows an applied plan (a run) enqueued, in order."""
    rows = conn.execute(select(OUTBOX).where(OUTBOX.c.run_id == run_id).order_by(OUTBOX.c.id))
    return [_row(row) for row in rows]


def of_request(conn: Connection, request_id: str) -> list[dict[str, Any]]:
    """The rows the writes of one request or run enqueued (their journal entries carry its
    id: an export sync's run), in order."""
    journal = JournalRow.__table__  # type: ignore[attr-defined]
    rows = conn.execute(
        select(OUTBOX)
        .join(journal, journal.c.seq == OUTBOX.c.journal_seq)
        .where(journal.c.request_id == request_id)
        .order_by(OUTBOX.c.id)
    )
    return [_row(row) for row in rows]


# -- read by ``plan``, ``explain`` and ``errors`` (DESIGN §4: pending is not confirmed) ----------

UNSETTLED = (PENDING, RETRY, RUNNING, QUARANTINED)
"""Rows not settled for good: the intents a plan shows as pending (quarantined: until approved)."""
_HELD_BACK = (PENDING, RETRY)
_CHUNK = 1000
_LEDGER_COLUMNS = (
    OUTBOX.c.id,
    OUTBOX.c.target,
    OUTBOX.c.ordering_key,
    OUTBOX.c.intent,
    OUTBOX.c.status,
    OUTBOX.c.attempts,
    OUTBOX.c.next_attempt_at,
    OUTBOX.c.last_error,
    OUTBOX.c.category,
    OUTBOX.c.run_id,
)


def _ledger_row(row: Any) -> dict[str, Any]:
    found = _row(row)
    if found.get("next_attempt_at") is not None:
        found["next_attempt_at"] = read_time(found["next_attempt_at"])
    return found


def unsettled(
    conn: Connection,
    *,
    targets: Collection[str] | None = None,
    people: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows not settled for good and dead letters, oldest first (of some people, or everyone).

    Where ``plan`` and ``explain`` look an intent up: a row pending, retrying, running or
    quarantined is the intent on its way; a dead letter is a change still to make.
    """
    query = select(*_LEDGER_COLUMNS).where(OUTBOX.c.status.in_((*UNSETTLED, DEAD)))
    if targets is not None:
        query = query.where(OUTBOX.c.target.in_(list(targets)))
    if people is None:
        return [_ledger_row(row) for row in conn.execute(query.order_by(OUTBOX.c.id))]
    chosen = list(dict.fromkeys(people))
    found: list[dict[str, Any]] = []
    for start in range(0, len(chosen), _CHUNK):
        part = query.where(OUTBOX.c.ordering_key.in_(chosen[start : start + _CHUNK]))
        found.extend(_ledger_row(row) for row in conn.execute(part))
    found.sort(key=lambda row: int(row["id"]))
    return found


def blocked_behind(
    conn: Connection, dead: Sequence[Mapping[str, Any]]
) -> dict[int, list[dict[str, Any]]]:
    """For each dead letter, the rows it holds back, oldest first.

    The relay keeps per-person order: a dead row blocks the rows of the same target and
    person with a later id that are not settled (pending, retry) until it is retried or
    skipped (``bridge errors``).
    """
    found: dict[int, list[dict[str, Any]]] = {int(row["id"]): [] for row in dead}
    by_target: dict[str, dict[str, list[int]]] = {}
    for row in dead:
        person = str(row.get("ordering_key") or row["intent"].get("person"))
        by_target.setdefault(str(row["target"]), {}).setdefault(person, []).append(int(row["id"]))
    for target, people in by_target.items():
        keys = list(people)
        for start in range(0, len(keys), _CHUNK):
            query = (
                select(*_LEDGER_COLUMNS)
                .where(
                    OUTBOX.c.target == target,
                    OUTBOX.c.status.in_(_HELD_BACK),
                    OUTBOX.c.ordering_key.in_(keys[start : start + _CHUNK]),
                )
                .order_by(OUTBOX.c.id)
            )
            for found_row in conn.execute(query):
                waiting = _ledger_row(found_row)
                for dead_id in people[waiting["ordering_key"]]:
                    if dead_id < int(waiting["id"]):
                        found[dead_id].append(waiting)
    return found


def open_by_target(conn: Connection) -> dict[str, int]:
    """How many rows each target has not settled (pending, retry, running)."""
    rows = conn.execute(
        select(OUTBOX.c.target, func.count())
        .where(OUTBOX.c.status.in_((PENDING, RETRY, RUNNING)))
        .group_by(OUTBOX.c.target)
    )
    return {row[0]: int(row[1]) for row in rows}


def requeue_as(
    conn: Connection,
    row_id: int,
    intent: dict[str, Any],
    *,
    now: datetime,
    run_id: str | None = None,
) -> bool:
    """A dead letter made again in place (``bridge apply`` of a failed intent): the fresh
    intent, a fresh attempt count, the same id — so the person's order holds. False when the
    row is no longer dead (retried or skipped meanwhile)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id == row_id, OUTBOX.c.status == DEAD)
        .values(
            intent=intent,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            last_error=None,
            category=None,
            lease_until=None,
            claimed_by=None,
            run_id=run_id,
        )
    )
    return bool(result.rowcount)


def hold_for_approval(conn: Connection, row_id: int, intent: dict[str, Any], run_id: str) -> bool:
    """A dead letter takes a quarantined run's fresh intent and stays dead (still holding the
    person's later rows back) until ``bridge approve`` sends it again (``release_held``)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.id == row_id, OUTBOX.c.status == DEAD)
        .values(intent=intent, run_id=run_id)
    )
    return bool(result.rowcount)


def release_held(conn: Connection, run_id: str, now: datetime) -> int:
    """The dead letters a quarantined run holds go again in place (``bridge approve RUN``)."""
    result = conn.execute(
        update(OUTBOX)
        .where(OUTBOX.c.run_id == run_id, OUTBOX.c.status == DEAD)
        .values(status=PENDING, attempts=0, next_attempt_at=now, last_error=None, category=None)
    )
    return int(result.rowcount)
