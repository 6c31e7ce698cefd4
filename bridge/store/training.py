"""Training status: the last completion reading per (target, person, course), and the rows the
training report joins it with — who the rules want on a course, and who they are."""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import delete
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import tuple_

from bridge.store.raw import read_object
from bridge.store.raw import read_time
from bridge.store.tables import ProjectionRow
from bridge.store.tables import ResourceRow
from bridge.store.tables import TrainingStatusRow

TRAINING = TrainingStatusRow.__table__  # type: ignore[attr-defined]
PROJECTIONS = ProjectionRow.__table__  # type: ignore[attr-defined]
RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]
CHUNK = 500


@dataclass(frozen=True)
class Status:
    """One reading: ``state`` None when the read failed (``error`` says why)."""

    target: str
    resource_id: str
    course: str
    state: str | None
    started_at: datetime | None
    completed_at: datetime | None
    read_at: datetime
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.target, self.resource_id, self.course)


@dataclass(frozen=True)
class Person:
    """Who a report row is about: the SCIM id, login, externalId and document."""

    id: str
    user_name: str
    external_id: str | None
    doc: dict[str, Any]


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else read_time(value)


def save(conn: Connection, readings: Iterable[Status]) -> int:
    """Replace the stored readings of these (target, person, course) keys; how many."""
    rows = list(readings)
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        keys = [r.key for r in part]
        conn.execute(
            delete(TRAINING).where(
                tuple_(TRAINING.c.target, TRAINING.c.resource_id, TRAINING.c.course).in_(keys)
            )
        )
        conn.execute(
            insert(TRAINING),
            [
                {
                    "target": r.target,
                    "resource_id": r.resource_id,
                    "course": r.course,
                    "state": r.state,
                    "started_at": r.started_at,
                    "completed_at": r.completed_at,
                    "read_at": r.read_at,
                    "error": r.error,
                }
                for r in part
            ],
        )
    return len(rows)


def stored(conn: Connection) -> dict[tuple[str, str, str], Status]:
    """Every stored reading, by (target, person, course)."""
    found = {}
    for row in conn.execute(select(TRAINING)):
        status = Status(
            target=row.target,
            resource_id=row.resource_id,
            course=row.course,
            state=row.state,
            started_at=_optional_time(row.started_at),
            completed_at=_optional_time(row.completed_at),
            read_at=read_time(row.read_at),
            error=row.error,
        )
        found[status.key] = status
    return found


def desired_states(conn: Connection) -> list[tuple[str, str, dict[str, Any]]]:
    """(target, person, projected state) of every person a rule file holds in scope: what the
    rules last asked the LMS for (a write or an applied plan projects them)."""
    rows = conn.execute(
        select(PROJECTIONS.c.target, PROJECTIONS.c.resource_id, PROJECTIONS.c.state)
        .where(PROJECTIONS.c.in_scope)
        .order_by(PROJECTIONS.c.resource_id, PROJECTIONS.c.rule_file)
    )
    return [(row.target, row.resource_id, read_object(row.state)) for row in rows]


def people(conn: Connection, ids: Collection[str]) -> dict[str, Person]:
    """The stored Users among ``ids`` (a person deleted since is missing)."""
    chosen = list(dict.fromkeys(ids))
    found: dict[str, Person] = {}
    for start in range(0, len(chosen), CHUNK):
        rows = conn.execute(
            select(
                RESOURCES.c.id, RESOURCES.c.name, RESOURCES.c.external_id, RESOURCES.c.doc
            ).where(RESOURCES.c.type == "User", RESOURCES.c.id.in_(chosen[start : start + CHUNK]))
        )
        for row in rows:
            found[row.id] = Person(row.id, row.name, row.external_id, read_object(row.doc))
    return found
