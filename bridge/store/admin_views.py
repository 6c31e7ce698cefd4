"""The admin page's reads: the journal filtered, people found by what an admin knows of them,
one person's outbox rows and training inputs, the runs awaiting a decision, the session secret.

Each query is bounded (a page, a limit) and answered from an index: ``journal.seq``,
``resources`` by id / externalId / ``name_key``, ``attribute_values`` for emails,
``outbox.ordering_key``, ``runs.status``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import or_
from sqlalchemy import select

from bridge.store import cursors
from bridge.store import names
from bridge.store import training
from bridge.store.engine import scim_fold
from bridge.store.journal import Entry
from bridge.store.journal import entry_of
from bridge.store.outbox import OUTBOX
from bridge.store.raw import read_object
from bridge.store.raw import read_time
from bridge.store.raw import utc
from bridge.store.resources import person_keys
from bridge.store.runs import RUNS
from bridge.store.tables import AttributeValueRow
from bridge.store.tables import JournalRow
from bridge.store.tables import LinkRow
from bridge.store.tables import ProjectionRow
from bridge.store.tables import ResourceRow
from bridge.store.tables import TrainingStatusRow

J = JournalRow.__table__  # type: ignore[attr-defined]
R = ResourceRow.__table__  # type: ignore[attr-defined]
V = AttributeValueRow.__table__  # type: ignore[attr-defined]
P = ProjectionRow.__table__  # type: ignore[attr-defined]
L = LinkRow.__table__  # type: ignore[attr-defined]
T = TrainingStatusRow.__table__  # type: ignore[attr-defined]
EMAIL_PATH = "emails.value"


@dataclass(frozen=True)
class JournalFilter:
    """What the journal view narrows to; None: any."""

    person: str | None = None
    actor: str | None = None
    op: str | None = None
    since: datetime | None = None
    before: int | None = None
    """Entries older than this ``seq`` (the next page of a newest-first listing)."""


@dataclass(frozen=True)
class Person:
    """A User as the admin page names it."""

    id: str
    user_name: str
    external_id: str | None
    active: bool | None
    """None: the resource does not say."""
    doc: dict[str, Any]

    @property
    def emails(self) -> list[str]:
        found = self.doc.get("emails") or []
        return [str(e.get("value")) for e in found if isinstance(e, dict) and e.get("value")]


def journal_page(conn: Connection, where: JournalFilter, *, limit: int = 100) -> list[Entry]:
    """Journal entries matching ``where``, newest first. ``op`` matches itself and its
    dotted family (``deliver`` is every ``deliver.*``)."""
    query = select(J)
    if where.person is not None:
        query = query.where(J.c.resource_id == where.person)
    if where.actor is not None:
        query = query.where(J.c.actor == where.actor)
    if where.op is not None:
        family = where.op.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(J.c.op == where.op, J.c.op.like(f"{family}.%", escape="\\")))
    if where.since is not None:
        query = query.where(J.c.at >= where.since.astimezone(UTC))
    if where.before is not None:
        query = query.where(J.c.seq < where.before)
    rows = conn.execute(query.order_by(J.c.seq.desc()).limit(limit))
    return [entry_of(row) for row in rows]


def person_journal(conn: Connection, person_id: str, *, limit: int = 500) -> list[Entry]:
    """One person's journal, oldest first: their SCIM writes and the LMS's answers."""
    rows = conn.execute(
        select(J).where(J.c.resource_id == person_id).order_by(J.c.seq.desc()).limit(limit)
    )
    return [entry_of(row) for row in reversed(list(rows))]


def _person(row: Any) -> Person:
    return Person(
        row.id,
        row.name,
        row.external_id,
        None if row.active is None else bool(row.active),
        read_object(row.doc),
    )


_PERSON_COLUMNS = (R.c.pk, R.c.id, R.c.name, R.c.external_id, R.c.active, R.c.doc)


def find_people(conn: Connection, text: str, *, policy: str, limit: int = 20) -> list[Person]:
    """Users whose id, externalId, userName or an email is ``text`` (case-insensitively where
    SCIM compares so); failing that, those whose userName or externalId starts with it."""
    text = text.strip()
    if not text:
        return []
    folded = str(scim_fold(text))
    by_email = select(V.c.resource_pk).where(V.c.path == EMAIL_PATH, V.c.value_key == folded)
    exact = conn.execute(
        select(*_PERSON_COLUMNS)
        .where(R.c.type == "User")
        .where(person_keys(text, policy) | R.c.pk.in_(by_email))
        .order_by(R.c.name_key)
        .limit(limit)
    ).all()
    if exact:
        return [_person(row) for row in exact]
    prefix = names.key(text, policy).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    raw = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(
        select(*_PERSON_COLUMNS)
        .where(R.c.type == "User")
        .where(
            R.c.name_key.like(f"{prefix}%", escape="\\")
            | R.c.external_id.like(f"{raw}%", escape="\\")
        )
        .order_by(R.c.name_key)
        .limit(limit)
    )
    return [_person(row) for row in rows]


def person(conn: Connection, person_id: str) -> Person | None:
    row = conn.execute(
        select(*_PERSON_COLUMNS).where(R.c.type == "User", R.c.id == person_id)
    ).first()
    return _person(row) if row is not None else None


def labels(conn: Connection, ids: Collection[str]) -> dict[str, str]:
    """The userName of each stored resource among ``ids`` (a deleted one is missing)."""
    chosen = list(dict.fromkeys(ids))
    found: dict[str, str] = {}
    for start in range(0, len(chosen), 500):
        rows = conn.execute(select(R.c.id, R.c.name).where(R.c.id.in_(chosen[start : start + 500])))
        found.update({row.id: row.name for row in rows})
    return found


def outbox_of(conn: Connection, person_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """A person's outbox rows (every target, every status), oldest first."""
    rows = conn.execute(
        select(OUTBOX)
        .where(OUTBOX.c.ordering_key == person_id)
        .order_by(OUTBOX.c.id.desc())
        .limit(limit)
    )
    found = []
    for row in reversed(list(rows)):
        item = dict(row._mapping)
        item["intent"] = read_object(item["intent"])
        found.append(item)
    return found


def runs_awaiting(conn: Connection, *, limit: int = 200) -> list[dict[str, Any]]:
    """Runs awaiting an admin's decision (quarantined plans, held removals), oldest first."""
    rows = conn.execute(
        select(RUNS).where(RUNS.c.status == "quarantined").order_by(RUNS.c.created).limit(limit)
    )
    return [_run(row) for row in rows]


def runs_decided(conn: Connection, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest approved or rejected runs, newest first."""
    rows = conn.execute(
        select(RUNS)
        .where(RUNS.c.status.in_(("approved", "rejected")))
        .order_by(RUNS.c.created.desc())
        .limit(limit)
    )
    return [_run(row) for row in rows]


def _run(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    found["summary"] = read_object(found.get("summary"))
    for column in ("created", "approved_at"):
        if isinstance(found.get(column), datetime):
            found[column] = utc(found[column])
    return found


TrainingInputs = tuple[
    list[tuple[str, str, dict[str, Any]]],
    list[tuple[str, str, str | None, dict[str, Any]]],
    dict[tuple[str, str, str], training.Status],
    dict[str, training.Person],
]


def training_of(conn: Connection, person_id: str) -> TrainingInputs:
    """What the training report joins, for one person: (desired, confirmed, readings, people),
    in the shapes ``bridge.provision.training.build_rows`` takes."""
    desired = [
        (row.target, row.resource_id, read_object(row.state))
        for row in conn.execute(
            select(P.c.target, P.c.resource_id, P.c.state).where(
                P.c.resource_id == person_id, P.c.in_scope
            )
        )
    ]
    confirmed = [
        (row.target, row.resource_id, row.lms_user_id, read_object(row.confirmed))
        for row in conn.execute(
            select(L.c.target, L.c.resource_id, L.c.lms_user_id, L.c.confirmed).where(
                L.c.resource_id == person_id
            )
        )
    ]
    readings = {
        key: status
        for key, status in (
            (
                (row.target, row.resource_id, row.course),
                training.Status(
                    target=row.target,
                    resource_id=row.resource_id,
                    course=row.course,
                    state=row.state,
                    started_at=read_time(row.started_at) if row.started_at else None,
                    completed_at=read_time(row.completed_at) if row.completed_at else None,
                    read_at=read_time(row.read_at),
                    error=row.error,
                ),
            )
            for row in conn.execute(select(T).where(T.c.resource_id == person_id))
        )
    }
    return desired, confirmed, readings, training.people(conn, [person_id])


def session_secret(conn: Connection) -> str:
    """The database's server secret (shared by every replica), from which the admin page
    derives its own session key."""
    return cursors.database_secret(conn)
