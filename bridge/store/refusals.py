"""Refusals: writes the SCIM server refused because another record holds the identifier.

A duplicate employee id is refused at the SCIM door (409 ``uniqueness``, RFC 7644 §3.3); which
of the two records won depends on arrival order, so the refusal is kept (:func:`record`, in a
short write of its own after the refused transaction rolled back) and reported by
``bridge plan`` and ``bridge quality`` until the conflict no longer holds. The same refusal
again (an IdP retrying) counts up one row. Whether a refusal still holds is computed when it
is read, from the records as they are now (:func:`standing`): it is resolved once no record of
the type holds the value, another record than the holder does, the refused record itself does
(the holder now has the refused userName, or the refused externalId), or an admin dismissed it
(``bridge quality dismiss ID``; the same refusal again reopens it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bridge.rules.plan_model import Refusal
from bridge.store.engine import scim_fold
from bridge.store.raw import read_time
from bridge.store.tables import RefusalRow
from bridge.store.tables import ResourceRow

REFUSALS = RefusalRow.__table__  # type: ignore[attr-defined]
R = ResourceRow.__table__  # type: ignore[attr-defined]

ATTRIBUTES = ("externalId", "userName")
"""The identifiers a refusal is kept for (a clash of generated ids is no data problem)."""


@dataclass(frozen=True)
class Refused:
    """What a refused write tried: the record as it would have been stored, and who sent it."""

    resource_type: str
    attribute: str
    """``externalId`` or ``userName``: the identifier another record holds."""
    value: str
    user_name: str
    external_id: str | None
    resource_id: str | None
    """The record a PUT or PATCH tried to change; None for a POST."""
    op: str
    actor: str
    request_id: str | None
    at: datetime


@dataclass(frozen=True)
class Held:
    """A stored record as a refusal names it."""

    id: str
    name: str
    external_id: str | None


@dataclass(frozen=True)
class Standing:
    """A kept refusal and whether it still needs attention."""

    refusal: Refusal
    resolved: str | None
    """Why it no longer does (None while it does)."""

    @property
    def open(self) -> bool:
        return self.resolved is None


def _holder(conn: Connection, resource_type: str, attribute: str, value: str) -> Held | None:
    """The record of a type holding an identifier now (both are unique per type)."""
    query = select(R.c.id, R.c.name, R.c.external_id).where(R.c.type == resource_type)
    if attribute == "externalId":
        query = query.where(R.c.external_id == value)
    else:
        query = query.where(R.c.name_key == str(scim_fold(value)))
    row = conn.execute(query.limit(1)).first()
    return Held(row.id, row.name, row.external_id) if row is not None else None


def _key(refused: Refused, holder: Held | None) -> str:
    value = refused.value if refused.attribute == "externalId" else str(scim_fold(refused.value))
    parts = [
        refused.resource_type,
        refused.attribute,
        value,
        holder.id if holder is not None else "",
        str(scim_fold(refused.user_name)),
        refused.resource_id or "",
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def record(conn: Connection, refused: Refused) -> int:
    """Keep a refusal (its holder looked up now); the same one again counts up. Its id."""
    holder = _holder(conn, refused.resource_type, refused.attribute, refused.value)
    values: dict[str, Any] = {
        "key": _key(refused, holder),
        "resource_type": refused.resource_type,
        "attribute": refused.attribute,
        "value": refused.value,
        "holder_id": holder.id if holder is not None else None,
        "holder_name": holder.name if holder is not None else None,
        "holder_external_id": holder.external_id if holder is not None else None,
        "refused_id": refused.resource_id,
        "refused_name": refused.user_name,
        "refused_external_id": refused.external_id,
        "op": refused.op,
        "actor": refused.actor,
        "request_id": refused.request_id,
        "count": 1,
        "first_seen": refused.at,
        "last_seen": refused.at,
    }
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    insert = dialect_insert(REFUSALS).values(values)
    again = insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "count": REFUSALS.c.count + 1,
            "last_seen": again.last_seen,
            "holder_name": again.holder_name,
            "holder_external_id": again.holder_external_id,
            "refused_external_id": again.refused_external_id,
            "op": again.op,
            "actor": again.actor,
            "request_id": again.request_id,
            "dismissed_at": None,  # refused again: an earlier dismissal no longer holds
            "dismissed_by": None,
        },
    ).returning(REFUSALS.c.id)
    return int(conn.execute(statement).scalar_one())


def resolution(
    refusal: Refusal,
    now_held_by: Held | None,
    dismissed_at: datetime | None = None,
    dismissed_by: str | None = None,
) -> str | None:
    """Why a refusal no longer needs attention, given who holds the value now (pure)."""
    if dismissed_at is not None:
        return f"dismissed by {dismissed_by or 'an admin'} at {dismissed_at.isoformat()}"
    what = f"{refusal.attribute} {refusal.value}"
    if now_held_by is None:
        return f"no {refusal.resource_type} holds {what} any more"
    if _is_the_refused_record(refusal, now_held_by):
        return f"the refused record ({now_held_by.name}) holds {what} now"
    if now_held_by.id != refusal.holder_id:
        return f"{refusal.holder_user_name or refusal.holder_id} no longer holds {what}"
    return None


def _is_the_refused_record(refusal: Refusal, record: Held) -> bool:
    """By id (a refused PUT or PATCH), else by the identifier not in dispute."""
    if record.id == refusal.refused_id:
        return True
    if refusal.attribute == "externalId":
        return bool(scim_fold(record.name) == scim_fold(refusal.refused_user_name))
    return bool(refusal.refused_external_id) and record.external_id == refusal.refused_external_id


def _refusal(row: Any, holder: Held | None) -> Refusal:
    return Refusal(
        id=int(row.id),
        resource_type=row.resource_type,
        attribute=row.attribute,
        value=row.value,
        holder_id=row.holder_id,
        holder_user_name=holder.name if holder is not None else row.holder_name,
        holder_external_id=holder.external_id if holder is not None else row.holder_external_id,
        refused_id=row.refused_id,
        refused_user_name=row.refused_name,
        refused_external_id=row.refused_external_id,
        op=row.op,
        actor=row.actor,
        request_id=row.request_id,
        first_seen=read_time(row.first_seen).isoformat(),
        last_seen=read_time(row.last_seen).isoformat(),
        count=int(row.count),
    )


def standing(conn: Connection) -> list[Standing]:
    """Every kept refusal, oldest first, with whether it still holds (one lookup each)."""
    out = []
    for row in conn.execute(select(REFUSALS).order_by(REFUSALS.c.id)).all():
        now_held_by = _holder(conn, row.resource_type, row.attribute, row.value)
        current = (
            now_held_by if now_held_by is not None and now_held_by.id == row.holder_id else None
        )
        refusal = _refusal(row, current)
        dismissed_at = read_time(row.dismissed_at) if row.dismissed_at is not None else None
        why = resolution(refusal, now_held_by, dismissed_at, row.dismissed_by)
        out.append(Standing(refusal, why))
    return out


def unresolved(conn: Connection) -> list[Refusal]:
    """The refusals that still need attention (for ``bridge plan`` and ``bridge quality``)."""
    return [found.refusal for found in standing(conn) if found.open]


def dismiss(conn: Connection, refusal_id: int, *, actor: str, now: datetime) -> bool:
    """An admin has dealt with a refusal (until it is refused again); False when there is none."""
    result = conn.execute(
        update(REFUSALS)
        .where(REFUSALS.c.id == refusal_id)
        .values(dismissed_at=now, dismissed_by=actor)
    )
    return bool(result.rowcount)
