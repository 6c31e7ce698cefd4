"""Replicas starting together migrate once: ``Database.upgrade`` holds a PostgreSQL advisory
lock for the whole upgrade, so processes upgrading a fresh database at the same moment all
succeed, one after the other, and the version table names one head. On SQLite the upgrade
runs in ``BEGIN IMMEDIATE`` as before, and the same race ends the same way.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy import create_engine
from sqlalchemy import inspect
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bridge.store.engine import MIGRATION_LOCK_KEY
from bridge.store.engine import MIGRATIONS
from bridge.store.engine import connect
from tests.conftest import PG_ENV

REPLICAS = 6


def head() -> str:
    revision = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert revision is not None
    return revision


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """An empty PostgreSQL database (no table at all), dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("BRIDGE_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is not set but PostgreSQL tests are required")
        pytest.skip(f"{PG_ENV} is not set")
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"bridge_migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    return str(request.getfixturevalue("fresh_postgres"))


def upgrade_at_once(url: str, replicas: int) -> list[str]:
    """``replicas`` processes (forked, so they start together), each upgrading ``url`` the
    moment all are ready; the errors they reported."""
    fork = multiprocessing.get_context("fork")
    start = fork.Barrier(replicas)
    errors: multiprocessing.queues.Queue[str] = fork.Queue()

    def replica() -> None:
        db = connect(url, pool_size=1)
        try:
            start.wait(timeout=60)
            db.upgrade()
        except BaseException as exc:  # reported to the test, which fails naming it
            errors.put(f"{type(exc).__name__}: {exc}")
        finally:
            db.dispose()

    processes = [fork.Process(target=replica) for _ in range(replicas)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    alive = [process for process in processes if process.is_alive()]
    for process in alive:
        process.kill()
    assert not alive, "an upgrade never finished"
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found


def versions(url: str) -> list[str]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def test_replicas_upgrading_a_fresh_database_together_all_succeed(fresh_database: str) -> None:
    errors = upgrade_at_once(fresh_database, REPLICAS)
    assert errors == []
    assert versions(fresh_database) == [head()]


def test_an_upgrade_waits_for_the_lock_before_it_reads_the_version_table(
    fresh_postgres: str,
) -> None:
    """Another process holds the migration lock: the upgrade waits on it without having
    created anything, and migrates to head once the lock is released."""
    holder = create_engine(fresh_postgres)
    db = connect(fresh_postgres, pool_size=1)
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            db.upgrade()
        except BaseException as exc:  # handed to the test, which fails naming it
            errors.append(exc)

    try:
        with holder.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            thread = threading.Thread(target=upgrade)
            thread.start()
            assert wait_for_lock_waiter(conn), "the upgrade never queued on the migration lock"
            assert not inspect(conn).has_table("alembic_version")
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert errors == []
        assert versions(fresh_postgres) == [head()]
    finally:
        db.dispose()
        holder.dispose()


def wait_for_lock_waiter(conn: Connection, timeout: float = 30.0) -> bool:
    """Whether another session came to wait on the migration lock within ``timeout``."""
    # pg_locks splits a 64-bit advisory key into classid (high half) and objid (low half).
    unsigned = MIGRATION_LOCK_KEY & 0xFFFF_FFFF_FFFF_FFFF
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = :high AND objid = :low"
    )
    params = {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = conn.execute(query, params).scalar()
        conn.commit()
        if waiting:
            return True
        time.sleep(0.05)
    return False
