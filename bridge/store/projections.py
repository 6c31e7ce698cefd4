"""Projected LMS state per (rule file, person): what the last plan or write asked the LMS for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import delete
from sqlalchemy import select

from bridge.store.raw import Sql
from bridge.store.raw import execute
from bridge.store.raw import read_object
from bridge.store.raw import stored_bool
from bridge.store.raw import stored_json
from bridge.store.raw import stored_time
from bridge.store.tables import ProjectionRow

P = ProjectionRow.__table__  # type: ignore[attr-defined]

# The statements every projected SCIM write runs (see raw).
_GET = Sql(
    "SELECT target, in_scope, state FROM projections"
    " WHERE rule_file = :rule_file AND resource_id = :resource_id"
)
_COUNT_IN_SCOPE = Sql(
    "SELECT count(*) FROM projections WHERE rule_file = :rule_file AND in_scope = :in_scope"
)
_UPDATE = Sql(
    "UPDATE projections SET target = :target, in_scope = :in_scope, state = :state,"
    " rules_version = :rules_version, updated = :updated"
    " WHERE rule_file = :rule_file AND resource_id = :resource_id"
)
_INSERT = Sql(
    "INSERT INTO projections (rule_file, resource_id, target, in_scope, state, rules_version,"
    " updated) VALUES (:rule_file, :resource_id, :target, :in_scope, :state, :rules_version,"
    " :updated)"
)


@dataclass
class Projection:
    rule_file: str
    resource_id: str
    target: str
    in_scope: bool
    state: dict[str, Any]


def get(conn: Connection, rule_file: str, resource_id: str) -> Projection | None:
    row = execute(conn, _GET, {"rule_file": rule_file, "resource_id": resource_id}).fetchone()
    if row is None:
        return None
    target, in_scope, state = row
    return Projection(rule_file, resource_id, target, bool(in_scope), read_object(state))


def of_rule_file(conn: Connection, rule_file: str) -> dict[str, Projection]:
    rows = conn.execute(select(P).where(P.c.rule_file == rule_file))
    return {
        row.resource_id: Projection(
            row.rule_file, row.resource_id, row.target, row.in_scope, read_object(row.state)
        )
        for row in rows
    }


def in_scope_of(conn: Connection, rule_file: str) -> list[Projection]:
    """The people a rule file holds in scope (e.g. one deleted from the rules: all of them
    lose what it gave them)."""
    rows = conn.execute(select(P).where(P.c.rule_file == rule_file, P.c.in_scope))
    return [
        Projection(r.rule_file, r.resource_id, r.target, r.in_scope, read_object(r.state))
        for r in rows
    ]


def of_person(conn: Connection, resource_id: str, target: str) -> list[Projection]:
    rows = conn.execute(select(P).where(P.c.resource_id == resource_id, P.c.target == target))
    return [
        Projection(r.rule_file, r.resource_id, r.target, r.in_scope, read_object(r.state))
        for r in rows
    ]


def count_in_scope(conn: Connection, rule_file: str) -> int:
    params = {"rule_file": rule_file, "in_scope": stored_bool(conn, True)}
    return int(execute(conn, _COUNT_IN_SCOPE, params).fetchone()[0])


def save(
    conn: Connection,
    projection: Projection,
    *,
    existed: bool,
    rules_version: str,
    now: datetime,
) -> None:
    values = {
        "rule_file": projection.rule_file,
        "resource_id": projection.resource_id,
        "target": projection.target,
        "in_scope": stored_bool(conn, projection.in_scope),
        "state": stored_json(conn, projection.state),
        "rules_version": rules_version,
        "updated": stored_time(conn, now),
    }
    execute(conn, _UPDATE if existed else _INSERT, values)


def forget(conn: Connection, rule_files: Iterable[str]) -> None:
    """Drop projections of rule files that no longer exist."""
    names = list(rule_files)
    if names:
        conn.execute(delete(P).where(P.c.rule_file.in_(names)))
