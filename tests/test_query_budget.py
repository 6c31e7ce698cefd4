"""Every SCIM read runs under ``query_timeout_seconds``, and stops when its client goes away.

A filtered list or search over its budget is 400 ``tooMany`` (RFC 7644 §3.4.2.2, "more than
the server is willing to calculate"), an unfiltered read 503 with ``Retry-After``; either way
the database itself stops the query (PostgreSQL ``statement_timeout``, a SQLite progress
handler), and a client that hangs up has its query cancelled (psycopg ``cancel_safe``,
``sqlite3.Connection.interrupt``). The slow query is real and within the filter limits: 300
people each with 17 string attributes of 2,000 decomposed characters, which a filter of 64
``co`` terms over those attributes composes to NFC, attribute by attribute, row after row —
about half a second on SQLite and two on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import create_engine
from sqlalchemy import text
from starlette.types import Message

from bridge.config import Settings
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store.engine import Database
from bridge.store.engine import QueryBudget
from bridge.store.engine import connect
from bridge.store.engine import normalize_url
from bridge.store.raw import driver
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import user_payload
from tests.test_body_timeout import asgi_request

PEOPLE = 300
LONG = "e\u0301" * 1000  # decomposed: folding it (NFC) composes 1,000 pairs
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
FIELDS = ["title", "nickName", "userType", "locale", "timezone", "preferredLanguage"]
NAME = ["formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"]
WORK = ["department", "organization", "division", "costCenter", "employeeNumber"]
ATTRIBUTES = FIELDS + [f"name.{n}" for n in NAME] + [f"{ENTERPRISE}:{w}" for w in WORK]
SLOW_FILTER = " or ".join(
    f'{attribute} co "zq{term:02d}"' for term, attribute in enumerate((ATTRIBUTES * 4)[:64])
)
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
TINY = 0.05

Client = Callable[[float], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def people(db: Database, provisioner: Provisioner) -> None:
    with db.write() as conn:
        for number in range(PEOPLE):
            payload = user_payload(f"u{number}", **{f: f"{LONG} {number}" for f in FIELDS})
            payload["name"] = {n: f"{LONG} {number}" for n in NAME}
            payload[ENTERPRISE] = {w: f"{LONG} {number}" for w in WORK}
            payload["schemas"] = [*payload["schemas"], ENTERPRISE]
            provisioner.create(Cause("test"), "User", payload, conn=conn)


@pytest.fixture
def budgeted(
    provisioner: Provisioner, catalog: Catalog, settings: Settings, db: Database
) -> Client:
    """An HTTP client on the real app whose reads have ``seconds`` each."""

    @asynccontextmanager
    async def client(seconds: float) -> AsyncIterator[httpx.AsyncClient]:
        budget = settings.model_copy(update={"query_timeout_seconds": seconds})
        app = create_app(provisioner, catalog, budget, Authenticator(db, env_token=TOKEN))
        async with app_client(app) as http:
            yield http

    return client


def running_title_filters(database_url: str) -> int:
    """How many backends of this database are running the slow filter (PostgreSQL; else 0)."""
    if not database_url.startswith("postgresql"):
        return 0
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND state = 'active'"
                        " AND query LIKE '%strpos%'"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["list", "search"])
async def test_a_filter_over_its_budget_is_too_many_and_stops_the_query(
    people: None, budgeted: Client, database_url: str, how: str
) -> None:
    async with budgeted(TINY) as client:
        started = time.monotonic()
        if how == "list":
            response = await client.get("/Users", params={"filter": SLOW_FILTER})
        else:
            search = {"schemas": [SEARCH], "filter": SLOW_FILTER}
            response = await client.post("/Users/.search", json=search)
        elapsed = time.monotonic() - started
        body = assert_scim(response, 400)
        assert body["scimType"] == "tooMany"
        assert body["detail"] == f"the query ran over its {TINY:g} s budget; narrow the filter"
        assert elapsed < 1  # unstopped, the query runs for seconds
        assert running_title_filters(database_url) == 0

        found = assert_scim(await client.get("/Users", params={"filter": 'userName eq "u7"'}), 200)
        assert [r["userName"] for r in found["Resources"]] == ["u7"]


async def test_an_unfiltered_list_over_its_budget_is_503_with_retry_after(
    people: None, budgeted: Client
) -> None:
    # Sorting by title folds every title: tens of milliseconds on either database.
    async with budgeted(0.002) as client:
        response = await client.get("/Users", params={"sortBy": "title"})
        body = assert_scim(response, 503)
        assert "scimType" not in body
        assert body["detail"] == "the query ran over its 0.002 s budget; retry later"
        assert response.headers["retry-after"] == "1"
    async with budgeted(10) as client:
        listed = assert_scim(await client.get("/Users", params={"sortBy": "title"}), 200)
        assert listed["totalResults"] == PEOPLE


async def test_a_search_whose_client_hangs_up_is_cancelled(
    people: None,
    provisioner: Provisioner,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    app = create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))
    body = httpx.Request("POST", "/", json={"schemas": [SEARCH], "filter": SLOW_FILTER}).content
    body_sent = False
    hung_up = asyncio.Event()

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    request = asyncio.ensure_future(asgi_request(app, "POST", "/scim/v2/Users/.search", receive))
    await asyncio.sleep(0.2)
    assert not request.done()  # the search is running, with its default 10 s budget
    assert running_title_filters(database_url) == (0 if db.is_sqlite else 1)

    hung_up.set()
    started = time.monotonic()
    answer = await asyncio.wait_for(request, timeout=5)
    assert time.monotonic() - started < 0.5
    assert answer.status == 499  # the read ended cancelled: stopped in the database
    assert running_title_filters(database_url) == 0
    assert [r for r in caplog.records if r.exc_info] == []
    assert sum("went away" in r.getMessage() for r in caplog.records) == 1


def test_a_budget_ends_with_its_read(database_url: str) -> None:
    """The deadline is the read's own: later reads on the same pooled connection, and on the
    event loop's own inline connection, run as long as they need."""
    db = connect(database_url, pool_size=1)
    slow = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000)"
        " SELECT count(*) FROM c"
        if db.is_sqlite
        else "SELECT count(*) FROM pg_sleep(0.15)"
    )
    try:
        with db.read_inline(QueryBudget(TINY)) as conn:
            inline = driver(conn)
        with db.read(QueryBudget(TINY)) as conn:
            pooled = driver(conn)
        time.sleep(2 * TINY)  # both deadlines are past
        with db.read() as conn:
            assert driver(conn) is pooled
            conn.exec_driver_sql(slow).scalar_one()
        with db.read_inline() as conn:
            assert driver(conn) is inline
            conn.exec_driver_sql(slow).scalar_one()
    finally:
        db.dispose()
