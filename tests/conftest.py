"""Fixtures: every integration test runs on SQLite and on PostgreSQL, through the real ASGI app.

PostgreSQL is used when ``BRIDGE_TEST_POSTGRES_URL`` names a server (a database URL whose
database the tests may create and drop); ``.ci/run`` sets it. Without it the PostgreSQL cases
are skipped, unless ``BRIDGE_TEST_REQUIRE_POSTGRES=1``, which makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from click.testing import Result
from sqlalchemy import create_engine
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bridge.cli import main
from bridge.config import Settings
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.store.tables import metadata

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"
PG_ENV = "BRIDGE_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(ROOT / "schemas")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "bridge.db"
    db = connect(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A fresh database on the PostgreSQL server, migrated once for the session."""
    base = os.environ.get(PG_ENV)
    if not base:
        yield None
        return
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"bridge_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    test_url = url.set(database=name).render_as_string(hide_password=False)
    db = connect(test_url)
    db.upgrade()
    db.dispose()
    yield test_url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path, postgres_url: str | None
) -> Iterator[str]:
    """A clean, migrated database of each kind."""
    yield clean_database(request.param, tmp_path, sqlite_template, postgres_url)


def clean_database(
    kind: str, directory: Path, sqlite_template: Path, postgres_url: str | None
) -> str:
    """The URL of an empty, migrated database: a copy of the SQLite template in ``directory``,
    or the session's PostgreSQL database truncated (skipped, or failed when required, without one)."""
    if kind == "sqlite":
        path = directory / "bridge.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    if postgres_url is None:
        if os.environ.get("BRIDGE_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is not set but PostgreSQL tests are required")
        pytest.skip(f"{PG_ENV} is not set")
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return postgres_url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = connect(database_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, scim_token=TOKEN, schemas_dir=ROOT / "schemas")


@pytest.fixture
def provisioner(db: Database, catalog: Catalog) -> Provisioner:
    return Provisioner(db, catalog)


@pytest.fixture
def app(provisioner: Provisioner, catalog: Catalog, settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    return create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))


def app_client(app: Any, token: str = TOKEN) -> httpx.AsyncClient:
    """An HTTP client on a real ASGI app at its SCIM base, with a bearer token."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bridge.test/scim/v2",
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """An HTTP client on the real ASGI app, authenticated with a full-scope token."""
    async with app_client(app) as http:
        yield http


USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


SCIM_JSON = "application/scim+json"


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(operations)}


def assert_scim(response: httpx.Response, status: int) -> Any:
    """The status, the SCIM media type, and the JSON body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == SCIM_JSON
    return response.json()


def user_payload(user_name: str, **extra: object) -> dict[str, object]:
    return {"schemas": [USER_SCHEMA], "userName": user_name, **extra}


# -- the shipped rules, on a real database (projection, plan, revert) ----------------------------

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return shipped_rules(tmp_path)


@pytest.fixture
def book(rules_dir: Path, catalog: Catalog) -> RuleBook:
    rules = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    rules.load()
    return rules


@pytest.fixture
def ruled(db: Database, catalog: Catalog, book: RuleBook) -> Provisioner:
    return Provisioner(db, catalog, rules=book.current, clock=lambda: NOW)


@pytest.fixture
async def scim(
    ruled: Provisioner, catalog: Catalog, settings: Any, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ruled, catalog, settings, Authenticator(db, env_token=TOKEN))
    async with app_client(app) as client:
        yield client


def employee(
    number: int, *, codes: list[str], department: str = "Claims", email: bool = True
) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE, HR],
        "userName": f"emp{number}@example.com",
        "externalId": f"E{number:05d}",
        "name": {"givenName": f"Given{number}", "familyName": "Family"},
        "emails": [{"value": f"emp{number}@example.com", "type": "work"}] if email else [],
        ENTERPRISE: {"department": department},
        HR: {"roleCodes": codes, "employmentStatus": "active"},
    }


def queued(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [row["intent"] for row in outbox.pending(conn, limit=10_000)]


# -- the LMS simulator, served on a real port -------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def simulator_url() -> Iterator[tuple[str, Any]]:
    """The LMS simulator on a free port, served from this process (its state is read directly)."""
    app = create_simulator(Knobs(latency_ms=2, seed=3))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=10)


def shipped_rules(directory: Path, simulator_url: str | None = None) -> Path:
    """``directory``/rules holding the shipped benefits rules and targets; with
    ``simulator_url``, the Moodle target pointed at the LMS simulator there."""
    rules = directory / "rules"
    rules.mkdir()
    for name in ("targets.yaml", "benefits-2026.yaml"):
        shutil.copy(ROOT / "rules" / name, rules / name)
    if simulator_url is not None:
        targets = rules / "targets.yaml"
        targets.write_text(targets.read_text().replace("http://127.0.0.1:8100", simulator_url, 1))
    return rules


@pytest.fixture
def feed_rules(tmp_path: Path) -> Path:
    """The shipped benefits rules, uncapped (each write admits its person), and feeds.yaml."""
    from tests.pilots import uncapped

    rules = uncapped(shipped_rules(tmp_path))
    shutil.copy(ROOT / "rules" / "feeds.yaml", rules / "feeds.yaml")
    return rules


def run_cli(database_url: str, rules_dir: Path, *args: str, **more_env: str) -> Result:
    """``bridge ARGS`` against a test database and rules directory (wide output, no token;
    ``more_env``: credentials and other variables)."""
    env: dict[str, str | None] = {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_RULES": str(rules_dir),
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
        "BRIDGE_SCIM_TOKEN": None,
        "BRIDGE_LOG_FORMAT": None,
        "COLUMNS": "200",
        **more_env,
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
