"""The database engine: SQLite (embedded default) or PostgreSQL, migrations and write transactions.

SQLite is run as a server database (DESIGN §4): WAL, a busy timeout, ``synchronous=FULL`` so
a committed 201 survives a power cut, and writers serialised in ``BEGIN IMMEDIATE`` behind a
process lock, so a burst of parallel writes queues instead of failing with "database is locked".
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseBusy(Exception):
    """The database could not take the work in time (locked, or out of connections)."""


def scim_fold(value: Any) -> Any:
    """The comparison key of a case-insensitive string: NFC, lower-cased, NFC (RFC 7643 §2.1)."""
    if not isinstance(value, str):
        return value
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).lower())


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    dbapi_connection.create_function("scim_fold", 1, scim_fold, deterministic=True)


def _sqlite_on_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass
class Database:
    """An engine plus how to run a write transaction on it."""

    engine: Engine
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads; SQLite readers see a consistent WAL snapshot."""
        with _busy_as_error(), self.engine.connect() as connection:
            if self.is_sqlite:
                with connection.begin():
                    yield connection
            else:
                yield connection
                connection.rollback()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed on exit, rolled back on any exception."""
        if not self.is_sqlite:
            with _busy_as_error(), self.engine.begin() as connection:
                yield connection
            return
        with (
            _busy_as_error(),
            self._write_lock,
            self.engine.connect().execution_options(sqlite_immediate=True) as connection,
            connection.begin(),
        ):
            yield connection

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision (alembic)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _busy_as_error() -> Iterator[None]:
    try:
        yield
    except PoolTimeoutError as exc:
        raise DatabaseBusy("no database connection free") from exc
    except OperationalError as exc:
        message = str(exc.orig).lower()
        if "locked" in message or "busy" in message:
            raise DatabaseBusy(message) from exc
        raise


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def connect(url: str, *, pool_size: int = 16) -> Database:
    """Build the engine for a database URL (nothing is created at import time)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    return Database(engine)
