"""Projected LMS state per (rule file, person): what the last plan or write asked the LMS for."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from bridge.store.tables import ProjectionRow

P = ProjectionRow.__table__  # type: ignore[attr-defined]


@dataclass
class Projection:
    rule_file: str
    resource_id: str
    target: str
    in_scope: bool
    state: dict[str, Any]


def _state(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return dict(loaded or {})


def get(conn: Connection, rule_file: str, resource_id: str) -> Projection | None:
    row = conn.execute(
        select(P).where(P.c.rule_file == rule_file, P.c.resource_id == resource_id)
    ).first()
    if row is None:
        return None
    return Projection(row.rule_file, row.resource_id, row.target, row.in_scope, _state(row.state))


def of_rule_file(conn: Connection, rule_file: str) -> dict[str, Projection]:
    rows = conn.execute(select(P).where(P.c.rule_file == rule_file))
    return {
        row.resource_id: Projection(
            row.rule_file, row.resource_id, row.target, row.in_scope, _state(row.state)
        )
        for row in rows
    }


def of_person(conn: Connection, resource_id: str, target: str) -> list[Projection]:
    rows = conn.execute(select(P).where(P.c.resource_id == resource_id, P.c.target == target))
    return [
        Projection(r.rule_file, r.resource_id, r.target, r.in_scope, _state(r.state)) for r in rows
    ]


def count_in_scope(conn: Connection, rule_file: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(P)
            .where(P.c.rule_file == rule_file, P.c.in_scope.is_(True))
        ).scalar_one()
    )


def save(
    conn: Connection,
    projection: Projection,
    *,
    existed: bool,
    rules_version: str,
    now: datetime,
) -> None:
    values = {
        "target": projection.target,
        "in_scope": projection.in_scope,
        "state": projection.state,
        "rules_version": rules_version,
        "updated": now,
    }
    if existed:
        conn.execute(
            update(P)
            .where(P.c.rule_file == projection.rule_file, P.c.resource_id == projection.resource_id)
            .values(values)
        )
    else:
        conn.execute(
            insert(P).values(
                rule_file=projection.rule_file, resource_id=projection.resource_id, **values
            )
        )


def forget(conn: Connection, rule_files: Iterable[str]) -> None:
    """Drop projections of rule files that no longer exist."""
    names = list(rule_files)
    if names:
        conn.execute(delete(P).where(P.c.rule_file.in_(names)))
