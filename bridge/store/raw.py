"""The statements every SCIM request runs, on the driver's own connection.

SQLAlchemy Core builds, caches and post-processes each statement it runs: about 30 µs a
statement on this kind of machine, three times what the driver itself needs, and a SCIM
write runs a dozen. The few statements of the hot paths are written here once, in SQL with
``:name`` parameters, and run through the driver's cursor inside the caller's SQLAlchemy
transaction (same connection, same transaction, same savepoints).

Values are bound the way SQLAlchemy binds them for these columns, so a row written here
reads the same through SQLAlchemy and back: JSON as ``json.dumps`` text (``null`` included),
times as naive UTC text on SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``) and ``timestamptz`` on
PostgreSQL, booleans as 0/1 on SQLite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class Sql:
    """One statement, written with ``:name`` parameters, in each driver's parameter style."""

    __slots__ = ("sqlite", "postgresql")

    def __init__(self, text: str) -> None:
        self.sqlite = " ".join(text.split())
        self.postgresql = _NAMED.sub(r"%(\1)s", self.sqlite)

    def text(self, dialect: str) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgresql


def driver(conn: Connection) -> Any:
    """The driver's own connection under a SQLAlchemy connection (sqlite3 or psycopg)."""
    found = conn.connection.driver_connection
    assert found is not None
    return found


def execute(conn: Connection, sql: Sql, params: Mapping[str, Any]) -> Any:
    """Run one statement; the driver's cursor (rows are plain tuples)."""
    return driver(conn).execute(sql.text(conn.dialect.name), params)


def execute_many(conn: Connection, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> None:
    if conn.dialect.name == "sqlite":
        driver(conn).executemany(sql.sqlite, rows)
    else:
        with driver(conn).cursor() as cursor:
            cursor.executemany(sql.postgresql, rows)


def stored_time(conn: Connection, value: datetime) -> Any:
    """A time as SQLAlchemy's ``DateTime(timezone=True)`` stores it on this database."""
    if conn.dialect.name != "sqlite":
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_time(value: Any) -> datetime:
    """A stored time back as an aware UTC datetime (SQLite hands back text)."""
    return utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def stored_json(conn: Connection, value: Any) -> Any:
    """A JSON value as SQLAlchemy's ``JSON``/``JSONB`` stores it (``None`` as JSON null)."""
    if conn.dialect.name == "sqlite":
        return json.dumps(value)
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def read_json(value: Any) -> Any:
    """A stored JSON value back (SQLite hands back text, PostgreSQL the decoded value)."""
    return json.loads(value) if isinstance(value, str) else value


def read_object(value: Any) -> dict[str, Any]:
    """A stored JSON object back as a dict; JSON null as ``{}``."""
    return dict(read_json(value) or {})


def stored_bool(conn: Connection, value: bool | None) -> Any:
    if value is None or conn.dialect.name != "sqlite":
        return value
    return 1 if value else 0
