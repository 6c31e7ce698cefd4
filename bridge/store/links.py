"""Links: a person in one LMS — the account id there and the state the LMS confirmed."""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from bridge.store.raw import read_object
from bridge.store.raw import read_time
from bridge.store.tables import LinkRow
from bridge.store.tables import ProjectionRow

LINKS = LinkRow.__table__  # type: ignore[attr-defined]
PROJECTIONS = ProjectionRow.__table__  # type: ignore[attr-defined]


def get(
    conn: Connection, target: str, resource_id: str
) -> tuple[str | None, dict[str, Any]] | None:
    row = conn.execute(
        select(LINKS.c.lms_user_id, LINKS.c.confirmed).where(
            LINKS.c.target == target, LINKS.c.resource_id == resource_id
        )
    ).first()
    return (row.lms_user_id, read_object(row.confirmed)) if row is not None else None


def account(conn: Connection, target: str, resource_id: str) -> dict[str, Any]:
    """The projected account attributes of a person in a target (any rule file driving it)."""
    row = conn.execute(
        select(PROJECTIONS.c.state).where(
            PROJECTIONS.c.target == target, PROJECTIONS.c.resource_id == resource_id
        )
    ).first()
    return dict(read_object(row.state).get("account", {})) if row is not None else {}


def assignments_of(confirmed: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A confirmed document's assignments, each as a dict (``status``, ``rule``, ``kind``,
    ``ref``, ``at``, ``due``); documents written before that shape held a bare status."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in (confirmed.get("assignments") or {}).items():
        if isinstance(value, Mapping):
            found[key] = dict(value)
        else:
            prefix, _, ref = str(key).partition(":")
            kind = "cohort" if prefix == "cohort" else ("path" if prefix == "path" else "enrolment")
            found[key] = {"status": str(value), "kind": kind, "ref": ref}
    return found


def save(
    conn: Connection,
    target: str,
    resource_id: str,
    *,
    lms_user_id: str | None,
    confirmed: dict[str, Any],
    now: datetime,
    existed: bool,
) -> None:
    values = {"lms_user_id": lms_user_id, "confirmed": confirmed, "updated": now}
    if existed:
        conn.execute(
            update(LINKS)
            .where(LINKS.c.target == target, LINKS.c.resource_id == resource_id)
            .values(values)
        )
    else:
        conn.execute(insert(LINKS).values(target=target, resource_id=resource_id, **values))


def all_of(conn: Connection, target: str | None = None) -> list[dict[str, Any]]:
    query = select(LINKS)
    if target is not None:
        query = query.where(LINKS.c.target == target)
    return [
        {**dict(row._mapping), "confirmed": read_object(row.confirmed)}
        for row in conn.execute(query)
    ]


def confirmed_of(
    conn: Connection, target: str, resource_ids: Collection[str]
) -> dict[str, tuple[str | None, dict[str, Any], datetime]]:
    """What one LMS confirmed holding for some people: id → (LMS account id, the confirmed
    document with its assignments in the current shape (see ``assignments_of``), when the LMS
    last confirmed anything for the person)."""
    chosen = list(dict.fromkeys(resource_ids))
    found: dict[str, tuple[str | None, dict[str, Any], datetime]] = {}
    for start in range(0, len(chosen), 1000):
        rows = conn.execute(
            select(
                LINKS.c.resource_id, LINKS.c.lms_user_id, LINKS.c.confirmed, LINKS.c.updated
            ).where(LINKS.c.target == target, LINKS.c.resource_id.in_(chosen[start : start + 1000]))
        )
        for row in rows:
            document = read_object(row.confirmed)
            document["assignments"] = assignments_of(document)
            found[row.resource_id] = (row.lms_user_id, document, read_time(row.updated))
    return found


def page(
    conn: Connection, target: str, *, after: str | None = None, limit: int = 500
) -> list[tuple[str, str | None, dict[str, Any]]]:
    """One page of a target's links in resource id order, after ``after`` (keyset paging, for
    a reconcile): (resource id, LMS account id, the confirmed document as ``confirmed_of``)."""
    query = select(LINKS.c.resource_id, LINKS.c.lms_user_id, LINKS.c.confirmed).where(
        LINKS.c.target == target
    )
    if after is not None:
        query = query.where(LINKS.c.resource_id > after)
    found = []
    for row in conn.execute(query.order_by(LINKS.c.resource_id).limit(limit)):
        document = read_object(row.confirmed)
        document["assignments"] = assignments_of(document)
        found.append((row.resource_id, row.lms_user_id, document))
    return found
