"""Paging (RFC 7644 §3.4.2.4), sorting (§3.4.2.3) and cursors (RFC 9865) of ``GET /Users``.

450 users, more than two pages of the default ``max_page_size`` (200), are written once per
database through the Provisioner; every test only reads them through the real ASGI app.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.store.engine import connect
from bridge.store.engine import scim_fold
from tests.conftest import HR
from tests.conftest import user_payload
from tests.test_filters import CAUSE
from tests.test_filters import Clock
from tests.test_filters import fresh_database_url
from tests.test_filters import http_client
from tests.test_filters import serve

USERS = 450
MAX_PAGE = 200  # Settings.max_page_size
STATUSES = ["active", "Leave", "terminated", "ACTIVE", "pre-hire"]
HIRE_DATES = ["2021-01-15T00:00:00+02:00", "2021-01-14T23:00:00Z", "2019-06-01T09:00:00-05:00"]


@dataclass(frozen=True)
class Person:
    id: str
    user_name: str
    status: str | None
    hired: datetime | None
    even: bool
    email: str  # the primary email, else the first


@dataclass
class Crowd:
    app: ASGIApp
    people: list[Person]  # in creation order: by meta.created, and by the default order


def person_payload(index: int) -> dict[str, Any]:
    """userNames are a permutation of the creation order, in both cases."""
    number = (index * 7) % USERS
    user_name = f"{'U' if number % 2 else 'u'}ser{number:03d}"
    hr: dict[str, Any] = {}
    if index % 4:
        hr["employmentStatus"] = STATUSES[index % len(STATUSES)]
    if index % 3:
        hr["hireDate"] = HIRE_DATES[index % len(HIRE_DATES)]
    kind = "even" if index % 2 == 0 else "odd"
    emails = [{"type": "work", "value": f"{user_name}@{kind}.example"}]
    if index % 10 == 0:  # a second, primary, email: the one sortBy=emails.value uses
        emails.append({"type": "home", "value": f"{index:03d}@primary.example", "primary": True})
    return user_payload(user_name, emails=emails, **{HR: hr})


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def crowd(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
    postgres_url: str | None,
    catalog: Catalog,
) -> Iterator[Crowd]:
    url = fresh_database_url(request.param, tmp_path_factory, sqlite_template, postgres_url)
    db = connect(url)
    db.upgrade()
    clock = Clock()
    provisioner = Provisioner(db, catalog, clock=clock)
    people = []
    with provisioner.transaction() as tx:  # one commit for all: a second, not a minute
        for index in range(USERS):
            clock.at(index)
            payload = person_payload(index)
            record = provisioner.create(CAUSE, "User", payload, conn=tx).record
            hr = payload[HR]
            hired = datetime.fromisoformat(hr["hireDate"]) if "hireDate" in hr else None
            email = payload["emails"][-1]["value"]
            status = hr.get("employmentStatus")
            people.append(Person(record.id, record.name, status, hired, index % 2 == 0, email))
    yield Crowd(serve(db, url, provisioner, catalog), people)
    db.dispose()


@pytest.fixture
async def http(crowd: Crowd) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(crowd.app) as client:
        yield client


async def page(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/Users", params={"attributes": "userName", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["itemsPerPage"] == len(body.get("Resources", []))
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [resource["id"] for resource in body.get("Resources", [])]


async def walk_by_index(http: httpx.AsyncClient, count: int, **params: Any) -> list[str]:
    """Every id, page after page by startIndex; checks totalResults on each page."""
    seen: list[str] = []
    first = await page(http, startIndex=1, count=count, **params)
    total = first["totalResults"]
    body = first
    while True:
        assert body["totalResults"] == total
        assert body["startIndex"] == len(seen) + 1
        seen += ids(body)
        if len(seen) >= total or not body["Resources"]:
            return seen
        body = await page(http, startIndex=len(seen) + 1, count=count, **params)


async def walk_by_cursor(http: httpx.AsyncClient, count: int, **params: Any) -> list[str]:
    """Every id, page after page by cursor (RFC 9865), from ``cursor=`` to no nextCursor."""
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        body = await page(http, cursor=cursor, count=count, **params)
        pages += 1
        assert pages <= USERS, "the cursor walk does not end"
        seen += ids(body)
        if "nextCursor" not in body:
            assert len(seen) == body["totalResults"]
            return seen
        assert len(ids(body)) == count
        cursor = body["nextCursor"]


def in_creation_order(crowd: Crowd) -> list[str]:
    return [person.id for person in crowd.people]


# -- startIndex and count --------------------------------------------------------------------


async def test_total_results_counts_every_match_not_the_page(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    body = await page(http, count=10)
    assert body["totalResults"] == USERS
    assert body["itemsPerPage"] == 10
    assert body["startIndex"] == 1


async def test_start_index_is_one_based(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, startIndex=11, count=10)
    assert ids(body) == in_creation_order(crowd)[10:20]
    assert body["startIndex"] == 11


async def test_start_index_below_one_is_one(http: httpx.AsyncClient, crowd: Crowd) -> None:
    first = await page(http, count=5)
    for start in ("0", "-3"):
        body = await page(http, startIndex=start, count=5)
        assert ids(body) == ids(first)
        assert body["startIndex"] == 1


async def test_start_index_past_the_end_is_an_empty_page(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    body = await page(http, startIndex=USERS + 1, count=10)
    assert body["totalResults"] == USERS
    assert ids(body) == []


async def test_last_page_is_short(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, startIndex=441, count=25)
    assert ids(body) == in_creation_order(crowd)[440:]


async def test_count_zero_returns_only_total_results(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, count=0)
    assert body["totalResults"] == USERS
    assert body["itemsPerPage"] == 0
    assert ids(body) == []


async def test_negative_count_is_zero(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, count=-5)
    assert body["totalResults"] == USERS
    assert ids(body) == []


async def test_count_is_capped_at_max_page_size(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, count=1000)
    assert body["totalResults"] == USERS
    assert body["itemsPerPage"] == MAX_PAGE


async def test_default_count_is_max_page_size(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http)
    assert body["itemsPerPage"] == MAX_PAGE


async def test_walking_pages_by_start_index_sees_everyone_once(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    seen = await walk_by_index(http, MAX_PAGE)
    assert seen == in_creation_order(crowd)  # no duplicate, no gap, stable order


async def test_filter_and_start_index_paging_agree(http: httpx.AsyncClient, crowd: Crowd) -> None:
    even = [p.id for p in crowd.people if p.even]
    seen = await walk_by_index(
        http, 40, filter='emails[type eq "work" and value ew "@even.example"]'
    )
    assert seen == even


async def test_search_request_pages_like_a_query(http: httpx.AsyncClient, crowd: Crowd) -> None:
    response = await http.post(
        "/Users/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "u"',
            "startIndex": 3,
            "count": 4,
            "sortBy": "userName",
        },
    )
    assert response.status_code == 200, response.text
    expected = await page(http, filter='userName sw "u"', startIndex=3, count=4, sortBy="userName")
    assert ids(response.json()) == ids(expected)
    assert response.json()["totalResults"] == USERS


# -- sortBy and sortOrder --------------------------------------------------------------------


def by_user_name(crowd: Crowd) -> list[str]:
    return [p.id for p in sorted(crowd.people, key=lambda p: scim_fold(p.user_name))]


async def test_sort_by_user_name_ignores_case(http: httpx.AsyncClient, crowd: Crowd) -> None:
    assert await walk_by_index(http, MAX_PAGE, sortBy="userName") == by_user_name(crowd)


async def test_sort_by_user_name_descending(http: httpx.AsyncClient, crowd: Crowd) -> None:
    seen = await walk_by_index(http, MAX_PAGE, sortBy="userName", sortOrder="descending")
    assert seen == by_user_name(crowd)[::-1]


async def test_sort_by_meta_created(http: httpx.AsyncClient, crowd: Crowd) -> None:
    assert await walk_by_index(http, MAX_PAGE, sortBy="meta.created") == in_creation_order(crowd)


async def test_sort_by_meta_created_descending(http: httpx.AsyncClient, crowd: Crowd) -> None:
    seen = await walk_by_index(http, MAX_PAGE, sortBy="meta.created", sortOrder="descending")
    assert seen == in_creation_order(crowd)[::-1]


def statuses(crowd: Crowd, seen: list[str]) -> list[str | None]:
    status = {p.id: p.status for p in crowd.people}
    return [scim_fold(status[id_]) if status[id_] else None for id_ in seen]


async def test_sort_by_extension_attribute_puts_missing_values_last(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    # RFC 7644 §3.4.2.3: without a value, last when ascending (and first when descending).
    seen = await walk_by_index(http, MAX_PAGE, sortBy=f"{HR}:employmentStatus")
    values = statuses(crowd, seen)
    present = [value for value in values if value is not None]
    assert values == present + [None] * (USERS - len(present))
    assert present == sorted(present)  # case-insensitively: "ACTIVE" is with "active"
    assert len(seen) == len(set(seen)) == USERS


async def test_sort_by_extension_attribute_descending_puts_missing_values_first(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    seen = await walk_by_index(
        http, MAX_PAGE, sortBy=f"{HR}:employmentStatus", sortOrder="descending"
    )
    values = statuses(crowd, seen)
    present = [value for value in values if value is not None]
    assert values == [None] * (USERS - len(present)) + present
    assert present == sorted(present, reverse=True)


async def test_sort_by_datetime_extension_attribute_orders_instants(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    # "2021-01-14T23:00:00Z" is after "2021-01-15T00:00:00+02:00", though it reads earlier.
    seen = await walk_by_index(http, MAX_PAGE, sortBy=f"{HR}:hireDate")
    hired = {p.id: p.hired for p in crowd.people}
    times = [hired[id_] for id_ in seen if hired[id_] is not None]
    assert times == sorted(times)
    assert all(hired[id_] is None for id_ in seen[len(times) :])


async def test_sort_by_multi_valued_attribute_uses_the_primary_value(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    # RFC 7644 §3.4.2.3: the primary value if any, else the first one.
    seen = await walk_by_index(http, MAX_PAGE, sortBy="emails.value")
    expected = sorted(crowd.people, key=lambda p: scim_fold(p.email))
    assert seen == [p.id for p in expected]


async def test_sort_applies_before_paging(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, sortBy="userName", startIndex=101, count=7)
    assert ids(body) == by_user_name(crowd)[100:107]


# -- cursors (RFC 9865) ----------------------------------------------------------------------


async def test_empty_cursor_starts_cursor_paging(http: httpx.AsyncClient, crowd: Crowd) -> None:
    body = await page(http, cursor="", count=10)
    assert ids(body) == in_creation_order(crowd)[:10]
    assert body["totalResults"] == USERS
    assert isinstance(body["nextCursor"], str) and body["nextCursor"]


async def test_next_cursor_continues_where_the_page_ended(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    first = await page(http, cursor="", count=10)
    second = await page(http, cursor=first["nextCursor"], count=10)
    assert ids(second) == in_creation_order(crowd)[10:20]
    assert second["totalResults"] == USERS


async def test_walking_with_a_cursor_sees_everyone_once(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    assert await walk_by_cursor(http, 100) == in_creation_order(crowd)


async def test_last_cursor_page_has_no_next_cursor(http: httpx.AsyncClient, crowd: Crowd) -> None:
    hundred = 'userName sw "user0"'  # user000 … user099, in either case
    body = await page(http, cursor="", count=99, filter=hundred)
    assert body["totalResults"] == 100
    assert "nextCursor" in body
    body = await page(http, cursor="", count=100, filter=hundred)
    assert len(ids(body)) == 100
    assert "nextCursor" not in body  # exactly one full page: nothing after it


async def test_cursor_walk_with_sort_descending(http: httpx.AsyncClient, crowd: Crowd) -> None:
    seen = await walk_by_cursor(http, 64, sortBy="userName", sortOrder="descending")
    assert seen == by_user_name(crowd)[::-1]


async def test_cursor_walk_by_datetime_sort(http: httpx.AsyncClient, crowd: Crowd) -> None:
    seen = await walk_by_cursor(http, 150, sortBy="meta.created", sortOrder="descending")
    assert seen == in_creation_order(crowd)[::-1]


async def test_cursor_walk_by_sort_with_missing_values(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    by_index = await walk_by_index(http, MAX_PAGE, sortBy=f"{HR}:employmentStatus")
    assert await walk_by_cursor(http, 45, sortBy=f"{HR}:employmentStatus") == by_index


async def test_filter_and_cursor_paging_agree(http: httpx.AsyncClient, crowd: Crowd) -> None:
    even = [p.id for p in crowd.people if p.even]
    seen = await walk_by_cursor(http, 50, filter='emails.value ew "@even.example"')
    assert seen == even


async def cursor_error(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/Users", params={"count": "10", **params})
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    "forged",
    [
        "not-a-cursor",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(json.dumps(["user001", "1", "0" * 12]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"pk": 3}).encode()).decode(),
    ],
)
async def test_forged_cursor_is_invalid_cursor(
    http: httpx.AsyncClient, crowd: Crowd, forged: str
) -> None:
    body = await cursor_error(http, cursor=forged)
    assert body["scimType"] == "invalidCursor"


async def test_cursor_of_another_query_is_invalid_cursor(
    http: httpx.AsyncClient, crowd: Crowd
) -> None:
    first = await page(http, cursor="", count=10, sortBy="userName")
    body = await cursor_error(http, cursor=first["nextCursor"], sortBy="meta.created")
    assert body["scimType"] == "invalidCursor"
    body = await cursor_error(http, cursor=first["nextCursor"], filter='userName sw "u"')
    assert body["scimType"] == "invalidCursor"


def well_formed_cursor(sort_value: Any, pk: Any) -> str:
    """A cursor as ResourceStore encodes them, for the default query: its fingerprint is
    a plain hash of the query, which any client can compute."""
    query = json.dumps([["User"], "", "", False])
    fingerprint = hashlib.sha256(query.encode()).hexdigest()[:12]
    raw = json.dumps([sort_value, pk, fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort_value", "pk"), [([1, 2], 1), (1, 10**30)], ids=["list-sort-value", "huge-pk"]
)
async def test_well_formed_forged_cursor_is_invalid_cursor(
    http: httpx.AsyncClient, crowd: Crowd, sort_value: Any, pk: Any
) -> None:
    body = await cursor_error(http, cursor=well_formed_cursor(sort_value, pk))
    assert body["scimType"] == "invalidCursor"
