"""The database engine: SQLite (embedded default) or PostgreSQL, migrations and write transactions.

SQLite is run as a server database (DESIGN §4): WAL, a busy timeout, ``synchronous=FULL`` so
a committed 201 survives a power cut, and writers serialised in ``BEGIN IMMEDIATE`` behind a
process lock, so a burst of parallel writes queues instead of failing with "database is locked".
A read may run under a ``QueryBudget``: a deadline the database enforces, and a cancel button.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bridge.store.raw import driver

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 6450779377933473682
"""The PostgreSQL advisory-lock key every upgrade takes: the first 8 bytes of
sha256("scim-lms-bridge/migrations") as a signed 64-bit number (fixed: every version of the
bridge must take the same lock)."""


MAX_GROUP_COMMIT = 64
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
INLINE_BUSY_MS = 1000
SQLITE_PROGRESS_OPS = 1000
"""SQLite virtual-machine instructions between two looks at a read's deadline (some µs)."""
CANCEL_TIMEOUT_SECONDS = 5.0
PG_QUERY_CANCELED = "57014"
T = TypeVar("T")
log = logging.getLogger("bridge.store.engine")


class _Job:
    """One write waiting for the SQLite writer thread."""

    __slots__ = ("work", "result", "error", "done", "future")

    def __init__(
        self, work: Callable[[Connection], Any], future: Future[Any] | None = None
    ) -> None:
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.future = future

    def finish(self) -> None:
        if self.future is not None and not self.future.cancelled():
            if self.error is not None:
                self.future.set_exception(self.error)
            else:
                self.future.set_result(self.result)
        self.done.set()


class DatabaseBusy(Exception):
    """The database could not take the work in time (locked, or out of connections)."""


class QueryBudgetExceeded(Exception):
    """A read ran over its time budget and the database stopped it; nothing was written."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the query ran over its {seconds:g} s budget")
        self.seconds = seconds


class QueryCancelled(Exception):
    """A read was stopped by ``QueryBudget.cancel`` before it finished (its client went away)."""


class QueryBudget:
    """The time one read may take, and a handle that stops it early from another thread.

    The database keeps the deadline: ``SET LOCAL statement_timeout`` on PostgreSQL (for each
    statement of the read transaction), a progress handler on SQLite (for the whole read).
    ``cancel`` reaches the driver only while the read holds its connection, under a lock, so
    it never stops the work of whoever the pool hands the connection to next.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cancelled = False
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None

    def cancel(self) -> None:
        """Stop the read, now or as it starts; on PostgreSQL a network round trip (psycopg's
        ``cancel_safe``), so call it off the event loop."""
        with self._lock:
            self.cancelled = True
            if self._stop is not None:
                self._stop()

    @contextmanager
    def _holding(self, stop: Callable[[], None]) -> Iterator[None]:
        with self._lock:
            if self.cancelled:
                raise QueryCancelled("the read was cancelled before it started")
            self._stop = stop
        try:
            yield
        finally:
            with self._lock:
                self._stop = None


def scim_fold(value: Any) -> Any:
    """The comparison key of a case-insensitive string: NFC, lower-cased, NFC (RFC 7643 §2.1)."""
    if not isinstance(value, str):
        return value
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).lower())


def _sqlite_on_connect(mmap_bytes: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA mmap_size={int(mmap_bytes)}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()
        dbapi_connection.create_function("scim_fold", 1, scim_fold, deterministic=True)

    return on_connect


def _sqlite_on_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    # On the driver: a statement through SQLAlchemy costs more than the BEGIN itself.
    driver(connection).execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass
class Database:
    """An engine plus how to run a write transaction on it."""

    engine: Engine
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: queue.SimpleQueue[_Job | None] = field(default_factory=queue.SimpleQueue)
    _writer: threading.Thread | None = None
    _writer_guard: threading.Lock = field(default_factory=threading.Lock)
    _inline: threading.local = field(default_factory=threading.local)
    _inline_connections: list[Connection] = field(default_factory=list)
    _lock_fd: int | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def read(self, budget: QueryBudget | None = None) -> Iterator[Connection]:
        """A connection for reads; SQLite readers see a consistent WAL snapshot.

        ``budget``: the read raises ``QueryBudgetExceeded`` past its deadline, and
        ``QueryCancelled`` once ``budget.cancel()`` stopped it.
        """
        with _busy_as_error(), self.engine.connect() as connection:
            if self.is_sqlite:
                with connection.begin(), _within(budget, connection):
                    yield connection
            else:
                with _within(budget, connection):
                    yield connection
                connection.rollback()  # also ends the SET LOCAL of the budget

    @contextmanager
    def read_inline(self, budget: QueryBudget | None = None) -> Iterator[Connection]:
        """A read on this thread's own connection, never waiting for the pool.

        For the point reads an event loop runs itself on SQLite (one index read costs less
        than handing it to a thread): the connection stays with the thread, so the loop never
        blocks on a pool that worker threads have emptied. Other databases use ``read``.
        """
        if not self.is_sqlite:
            with self.read(budget) as connection:
                yield connection
            return
        own: Connection | None = getattr(self._inline, "connection", None)
        if own is None or own.closed:
            with _busy_as_error():
                own = self.engine.connect()
                # WAL readers wait only in rare recoveries; the loop must not wait 30 s there.
                own.exec_driver_sql(f"PRAGMA busy_timeout={INLINE_BUSY_MS}")
                own.commit()
            self._inline.connection = own
            with self._writer_guard:
                self._inline_connections.append(own)
        with _busy_as_error(), own.begin(), _within(budget, own):
            yield own

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
            self._writers_of_the_file(),
            self.engine.connect().execution_options(sqlite_immediate=True) as connection,
            connection.begin(),
        ):
            yield connection

    @contextmanager
    def _writers_of_the_file(self) -> Iterator[None]:
        """Queue behind the other processes writing this SQLite file (``serve --workers``, a
        CLI command): an advisory lock on ``<file>-writer.lock`` wakes the next writer the
        moment one commits, where SQLite's own busy handler would have it sleep and poll."""
        if self._lock_fd is None:
            database = self.engine.url.database
            if not database or database == ":memory:" or database.startswith("file:"):
                yield
                return
            with self._writer_guard:
                if self._lock_fd is None:
                    self._lock_fd = os.open(
                        f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600
                    )
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction of its own, committed before this returns.

        On SQLite, concurrent calls are group-committed: one writer thread runs every job
        waiting in the queue in one ``BEGIN IMMEDIATE`` transaction, each job in a savepoint
        of its own (a failing job rolls back alone), with one durable commit for the batch.
        On PostgreSQL each call is its own transaction (the server group-commits itself).
        """
        if not self.is_sqlite:
            with self.write() as connection:
                return work(connection)
        job: _Job = _Job(work)
        self._ensure_writer()
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    async def run_async(self, work: Callable[[Connection], T]) -> T:
        """``run`` for an event loop: on SQLite the writer thread answers the loop directly,
        so a write costs one thread handoff instead of two (a pool thread waiting on the
        writer); on PostgreSQL the write runs on a pool thread."""
        if not self.is_sqlite:
            return await asyncio.to_thread(self.run, work)
        future: Future[T] = Future()
        self._ensure_writer()
        self._jobs.put(_Job(work, future))
        return await asyncio.wrap_future(future)

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_guard:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="sqlite-writer", daemon=True
                )
                self._writer.start()

    def _write_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_GROUP_COMMIT:
                try:
                    following = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                batch.append(following)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        try:
            with self.write() as connection:
                # Savepoints in SQL on the driver: SQLAlchemy's own cost more than the write.
                sqlite = driver(connection)
                for job in batch:
                    sqlite.execute("SAVEPOINT job")
                    try:
                        job.result = job.work(connection)
                    except BaseException as exc:  # the job's own failure, handed back to it
                        job.error = exc
                        sqlite.execute("ROLLBACK TO SAVEPOINT job")
                    sqlite.execute("RELEASE SAVEPOINT job")
        except BaseException as exc:  # the commit itself failed: no job of the batch is durable
            for job in batch:
                if job.error is None:
                    job.error = exc
        finally:
            for job in batch:
                job.finish()

    def upgrade(self) -> None:
        """Create or migrate the schema to the newest revision (alembic).

        On PostgreSQL the whole upgrade is one transaction holding the migration lock
        (``_hold_migration_lock``): replicas starting together migrate once, one after the
        other, and each that comes later finds the schema at head and does nothing.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.write() as connection:
            _hold_migration_lock(connection)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        with self._writer_guard:
            for connection in self._inline_connections:
                connection.close()
            self._inline_connections.clear()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        self.engine.dispose()


def _hold_migration_lock(connection: Connection) -> None:
    """Take the migration lock for the rest of ``connection``'s transaction (PostgreSQL; an
    SQLite upgrade runs in ``BEGIN IMMEDIATE``, which already admits one writer at a time).

    A transaction advisory lock, taken before alembic reads its version table: two processes
    upgrading a fresh database at once would otherwise both create it and every table, and
    one would fail on a duplicate. Released by the commit (or the rollback of a failed
    migration), also when the process dies. A process that has to wait says so, once.
    """
    if connection.dialect.name != "postgresql":
        return
    key = {"key": MIGRATION_LOCK_KEY}
    if connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), key).scalar():
        return
    log.info("waiting for another process to finish migrating the database")
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)


@contextmanager
def _within(budget: QueryBudget | None, connection: Connection) -> Iterator[None]:
    """The body of a read transaction under ``budget``, its deadline set on the connection
    for this transaction only: SQLite's progress handler is cleared before the transaction
    ends (the connection may be a thread's own, shared by every inline read and the token
    lookups), PostgreSQL's ``SET LOCAL`` ends with it.
    """
    if budget is None:
        yield
        return
    raw = driver(connection)
    sqlite = connection.dialect.name == "sqlite"
    deadline = time.monotonic() + budget.seconds
    stop: Callable[[], None]
    if sqlite:

        def stop_here() -> int:
            return int(budget.cancelled or time.monotonic() >= deadline)

        # Besides the deadline, the handler sees a cancel that fell between two statements:
        # sqlite3_interrupt() stops only the statements running when it is called.
        raw.set_progress_handler(stop_here, SQLITE_PROGRESS_OPS)
        stop = raw.interrupt
    else:
        milliseconds = max(1, round(budget.seconds * 1000))
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")

        def stop() -> None:
            raw.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)

    try:
        with budget._holding(stop):
            yield
    except Exception as exc:
        if not _stopped(exc):
            raise
        if budget.cancelled:
            raise QueryCancelled("the read was cancelled") from exc
        if time.monotonic() >= deadline:
            raise QueryBudgetExceeded(budget.seconds) from exc
        raise  # stopped by someone else (pg_cancel_backend): not ours to explain
    finally:
        if sqlite:
            raw.set_progress_handler(None, 0)


def _stopped(exc: BaseException) -> bool:
    """Whether a driver error (raw, or wrapped by SQLAlchemy) says a statement was stopped."""
    error = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(error, sqlite3.OperationalError):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT
    return getattr(error, "sqlstate", None) == PG_QUERY_CANCELED


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


def connect(url: str, *, pool_size: int = 16, serving: bool = False) -> Database:
    """Build the engine for a database URL (nothing is created at import time).

    ``serving``: for a server's many connections, SQLite pages are read through a memory map,
    not a read() each — every connection re-reads the pages another connection (or worker
    process) changed, which is every page a write touches. A one-shot command scanning the
    whole database (``bridge plan``) reads through the page cache instead: mapped, every page
    it touched would stay in its resident memory.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        mmap_bytes = SQLITE_MMAP_BYTES if serving else 0
        event.listen(engine, "connect", _sqlite_on_connect(mmap_bytes))
        event.listen(engine, "begin", _sqlite_on_begin)
    else:
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    return Database(engine)
