"""Property-based fuzzing of the SCIM surface (RFC 7644), on SQLite and PostgreSQL.

Whatever a client sends (tests/fuzz_strategies.py), every answer keeps these properties:

- no 5xx, except 501 for ``/Me`` (and a 503 with ``Retry-After`` when the database is busy,
  counted and reported: the fuzzer is its only client, so it should never be);
- every 4xx is an RFC 7644 §3.12 Error: ``application/scim+json``, the Error schema, ``status``
  the string of the HTTP status, a ``scimType`` from §3.12 (or RFC 9865's cursor types, for
  a request that sent a cursor);
- a request that failed, and every read, leaves the stored rows as they were;
- a BulkResponse's operations are results or Errors of the same shape, and a Bulk whose every
  operation failed wrote nothing;
- the server still answers ``GET /ServiceProviderConfig`` afterwards, and lists (renders)
  every user and group that was stored, none without its required userName or displayName.

Each example starts from the same seeded database (two users, two groups). Bounded by
``BRIDGE_FUZZ_EXAMPLES`` (per test and database) and deterministic unless ``BRIDGE_FUZZ_SEED``
is set; ``BRIDGE_FUZZ_REPORT=path`` appends one JSON line per test and database.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any
from urllib.parse import quote
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import seed
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import text
from starlette.applications import Starlette

from bridge.store.engine import Database
from bridge.store.tables import metadata
from tests import fuzz_strategies as fs
from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import SCIM_JSON
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA

# A falsifying example may hold 10 KB strings; Hypothesis warns that printing it is costly.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "120"))
SEED = os.environ.get("BRIDGE_FUZZ_SEED")
REPORT = os.environ.get("BRIDGE_FUZZ_REPORT")

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SCIM_TYPES = {
    *("invalidFilter", "tooMany", "uniqueness", "mutability", "invalidSyntax", "invalidPath"),
    *("noTarget", "invalidValue", "invalidVers", "sensitive"),
}
"""RFC 7644 §3.12, Table 9."""
CURSOR_SCIM_TYPES = {"invalidCursor", "expiredCursor"}
"""RFC 9865 §2 (cursor pagination), for a request that sent a cursor."""
READS = {"GET", "HEAD", "OPTIONS"}
# Rows of the tables a SCIM write touches; ``refusals`` is left out: a refused duplicate is
# kept there on purpose, after its 409 (bridge/store/refusals.py).
SNAPSHOT = (
    "SELECT id, version, name, external_id, display, active, doc FROM resources ORDER BY id",
    "SELECT group_id, member_id, member_type FROM memberships ORDER BY group_id, member_id",
    "SELECT resource_pk, path, position, value_key FROM attribute_values"
    " ORDER BY resource_pk, path, position",
    "SELECT count(*), max(seq) FROM journal",
    "SELECT count(*) FROM outbox",
)


NOT_CREATED = "00000000-0000-4000-8000-000000000000"
"""``@new@`` before the example created anything: an id no resource has."""
KEPT_TABLES = {"tokens", "server_secrets"}
"""Left alone by the reset: no SCIM request writes them (the cursor key lives in the latter)."""


@dataclass
class Tally:
    """What one test saw on one database."""

    test: str
    database: str
    examples: int = 0
    requests: int = 0
    five_xx: int = 0
    busy: int = 0
    worst_ms: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


class Fuzzer:
    """The real ASGI app on a real database, driven synchronously from Hypothesis examples."""

    def __init__(self, app: Starlette, db: Database, tally: Tally) -> None:
        self.db = db
        self.tally = tally
        self.runner = asyncio.Runner()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bridge.test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        self.names: dict[str, str] = {}
        """What each placeholder of tests/fuzz_strategies.py stands for, in this example."""

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty every table, then seed two users and two groups through the API."""
        with self.db.write() as conn:
            for table in reversed(metadata.sorted_tables):
                if table.name not in KEPT_TABLES:
                    conn.execute(table.delete())
        other = self._seed("/Users", _seed_user("seed.bob", "E2"))
        user_body = _seed_user("seed.alice", "E1")
        user_body[ENTERPRISE]["manager"] = {"value": other["id"]}
        user = self._seed("/Users", user_body)
        group = self._seed("/Groups", _seed_group("Seed group", user["id"]))
        self._seed("/Groups", _seed_group("Second group", other["id"]))
        self.names = {
            fs.USER: user["id"],
            fs.OTHER: other["id"],
            fs.GROUP: group["id"],
            fs.ETAG: user["meta"]["version"],
            fs.NEW: NOT_CREATED,
        }

    def fill(self, value: str) -> str:
        for placeholder, real in self.names.items():
            value = value.replace(placeholder, real)
        return value

    def remember(self, response: httpx.Response) -> None:
        """``@new@``: the resource this example created last (by POST or in a Bulk)."""
        if response.status_code == 201:
            self.names[fs.NEW] = str(response.json().get("id", NOT_CREATED))
        elif response.status_code == 200 and response.request.url.path.endswith("/Bulk"):
            for result in response.json().get("Operations", []):
                if isinstance(result, dict) and result.get("status") == "201":
                    self.names[fs.NEW] = str(result.get("location", "")).rsplit("/", 1)[-1]

    def _seed(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._send("POST", f"/scim/v2{path}", content=json.dumps(body).encode())
        assert response.status_code == 201, response.text
        return dict(response.json())

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        with self.db.read() as conn:
            return [[tuple(row) for row in conn.execute(text(sql))] for sql in SNAPSHOT]

    # -- requests ---------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, url, **kwargs))

    def send(self, request: fs.Request) -> httpx.Response:
        """Send a request (placeholders filled in) and check every property on its answer."""
        method, url, content, headers = self.prepare(request)
        before = self.snapshot()
        started = time.perf_counter()
        response = self._send(method, url, content=content, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        after = self.snapshot()
        self.count(response, elapsed)
        problems = violations(method, url, response, before == after)
        if problems:
            raise AssertionError(describe(problems, method, url, headers, content, response))
        self.remember(response)
        return response

    def prepare(self, request: fs.Request) -> tuple[str, str, bytes | None, dict[str, str | bytes]]:
        fill = self.fill
        path = quote(fill("/scim/v2" + request.path), safe="/", errors="surrogatepass")
        params = {
            key: self.cursor(request, value) if isinstance(value, fs.CursorEdit) else fill(value)
            for key, value in request.params.items()
        }
        url = path + ("?" + urlencode(params, errors="surrogatepass") if params else "")
        headers = {
            key: fill(value) if isinstance(value, str) else value
            for key, value in request.headers.items()
        }
        content: bytes | None = request.raw
        if request.body is not fs.NO_BODY:
            body = self.cursors_in(request, request.body)
            text_body = fill(json.dumps(body, ensure_ascii=request.ascii))
            content = text_body.encode("utf-8", "surrogatepass")
        if content is not None and "Content-Type" not in headers:
            headers["Content-Type"] = SCIM_JSON
        return request.method, url, content, headers

    def cursors_in(self, request: fs.Request, body: Any) -> Any:
        if isinstance(body, dict):
            return {
                key: self.cursor(request, value) if isinstance(value, fs.CursorEdit) else value
                for key, value in body.items()
            }
        return body

    def cursor(self, request: fs.Request, edit: fs.CursorEdit) -> str:
        """A real ``nextCursor`` of the same query (its first page of one), then ``edit``-ed."""
        paging = ("startindex", "count", "cursor")
        if request.method == "GET":
            params = {k: v for k, v in request.params.items() if k.lower() not in paging}
            first = replace(request, params={**params, "count": "1", "cursor": ""})
        else:
            body = {k: v for k, v in request.body.items() if k.lower() not in paging}
            first = replace(request, body={**body, "count": 1, "cursor": ""}, raw=None)
        response = self.send(first)
        found = response.json().get("nextCursor", "") if response.status_code == 200 else ""
        return fs.tamper(str(found), edit)

    def count(self, response: httpx.Response, elapsed_ms: float) -> None:
        tally = self.tally
        tally.requests += 1
        tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
        tally.worst_ms = max(tally.worst_ms, elapsed_ms)
        if response.status_code >= 500 and response.status_code != 501:
            tally.five_xx += 1
        if response.status_code == 503:
            tally.busy += 1

    def alive(self) -> None:
        """The server answers, and can still list (render) everything that was stored, each
        with the attribute RFC 7643 requires of it (§4.1.1 userName, §4.2 displayName)."""
        response = self._send("GET", "/scim/v2/ServiceProviderConfig")
        assert response.status_code == 200, f"the server no longer answers: {response.text}"
        for endpoint, required in (("/Users", "userName"), ("/Groups", "displayName")):
            listed = self.send(fs.Request("GET", endpoint))
            assert listed.status_code == 200, f"GET {endpoint} after the example: {listed.text}"
            for resource in listed.json()["Resources"]:
                value = resource.get(required)
                assert isinstance(value, str) and value, f"stored without a {required}: {resource}"

    def run(self, requests: list[fs.Request]) -> None:
        """One example: a fresh seeded database, the requests in order, then a liveness check."""
        self.tally.examples += 1
        self.reset()
        for request in requests:
            self.send(request)
        self.alive()


# -- the properties -----------------------------------------------------------------------------


def violations(method: str, url: str, response: httpx.Response, unchanged: bool) -> list[str]:
    """Every property this answer breaks (empty when it keeps them all)."""
    problems: list[str] = []
    status = response.status_code
    path = response.request.url.path  # as sent: httpx resolves ``..`` segments
    is_me = path == "/scim/v2/Me" or path.startswith("/scim/v2/Me/")
    # ``/Users/..`` is ``/scim/v2``: outside the SCIM surface, whose errors need not be SCIM's.
    scim = path.startswith("/scim/v2/")
    if status >= 500:
        if status == 503 and "retry-after" in response.headers:
            pass  # counted in Tally.busy and reported
        elif not (status == 501 and is_me):
            problems.append(f"{status}: a server error")
    if status >= 400 and scim:
        sent_cursor = "cursor=" in url.lower() or b'"cursor"' in (response.request.content or b"")
        problems += error_problems(response, method, sent_cursor)
    is_search = path.endswith("/.search")
    if (method in READS or is_search or status >= 400) and not unchanged:
        problems.append("the stored rows changed, though the request was a read or failed")
    if 200 <= status < 300 and response.content and method != "HEAD":
        try:
            body = response.json()
        except ValueError:
            problems.append("a 2xx body that is not JSON")
        else:
            if path.rstrip("/").endswith("/Bulk") and method == "POST":
                problems += bulk_problems(body, unchanged)
    request_id = response.headers.get("x-request-id", "")
    redirect = 300 <= status < 400 and status != 304  # Starlette's router, before any endpoint
    if (
        scim
        and not redirect
        and not (0 < len(request_id) <= 64 and request_id.isascii() and request_id.isprintable())
    ):
        problems.append(f"X-Request-Id {request_id!r} is not 1-64 printable characters")
    return problems


def error_problems(response: httpx.Response, method: str, sent_cursor: bool) -> list[str]:
    """How a 4xx/5xx answer fails to be an RFC 7644 §3.12 Error."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if media_type != SCIM_JSON:
        return [f"an error with content-type {media_type!r}, not {SCIM_JSON}"]
    if method == "HEAD":
        return []  # RFC 9110 §9.3.2: no content
    try:
        body = response.json()
    except ValueError:
        return ["an error whose body is not JSON"]
    return error_body_problems(body, response.status_code, sent_cursor)


def error_body_problems(body: Any, status: int, sent_cursor: bool) -> list[str]:
    if not isinstance(body, dict):
        return [f"an error body that is not an object: {body!r}"]
    problems = []
    if ERROR_SCHEMA not in (body.get("schemas") or []):
        problems.append(f"an error without the schema {ERROR_SCHEMA}")
    if body.get("status") != str(status):
        problems.append(f"an error whose status is {body.get('status')!r}, not {str(status)!r}")
    allowed = SCIM_TYPES | (CURSOR_SCIM_TYPES if sent_cursor else set())
    if "scimType" in body and body["scimType"] not in allowed:
        problems.append(f"scimType {body['scimType']!r} is not one of RFC 7644 §3.12")
    if "detail" in body and not isinstance(body["detail"], str):
        problems.append(f"detail {body['detail']!r} is not a string")
    return problems


def bulk_problems(body: Any, unchanged: bool) -> list[str]:
    """RFC 7644 §3.7.3: a BulkResponse of results and Errors; all failed, nothing written."""
    if not isinstance(body, dict) or BULK_RESPONSE not in (body.get("schemas") or []):
        return ["a 200 from /Bulk that is not a BulkResponse"]
    results = body.get("Operations")
    if not isinstance(results, list):
        return [f"a BulkResponse whose Operations are {results!r}"]
    problems = []
    succeeded = False
    for result in results:
        status = result.get("status") if isinstance(result, dict) else None
        if not (isinstance(status, str) and status.isdigit() and len(status) == 3):
            problems.append(f"a bulk operation without a 3-digit status: {result!r}")
        elif int(status) >= 500:
            problems.append(f"a bulk operation answered {status}: {result}")
        elif int(status) >= 400:
            problems += [
                f"bulk operation: {problem}"
                for problem in error_body_problems(result.get("response"), int(status), False)
            ]
        elif 200 <= int(status) < 300:
            succeeded = True
        else:
            problems.append(f"a bulk operation with status {status}")
    if not succeeded and not unchanged:
        problems.append("every bulk operation failed, yet the stored rows changed")
    return problems


def describe(
    problems: list[str],
    method: str,
    url: str,
    headers: dict[str, str | bytes],
    content: bytes | None,
    response: httpx.Response,
) -> str:
    def cut(data: bytes | str, limit: int = 1500) -> str:
        shown = repr(data[:limit])
        return shown + (f" … ({len(data)} in all)" if len(data) > limit else "")

    return "\n".join(
        [
            *problems,
            f"request: {method} {cut(url, 600)}",
            f"headers: {headers}" if headers else "headers: (none besides auth)",
            f"body: {cut(content)}" if content is not None else "body: (none)",
            f"answer: {response.status_code} {dict(response.headers)}",
            f"answer body: {cut(response.content)}",
        ]
    )


def _seed_group(display_name: str, member: str) -> dict[str, Any]:
    return {"schemas": [GROUP_SCHEMA], "displayName": display_name, "members": [{"value": member}]}


def _seed_user(user_name: str, external_id: str) -> dict[str, Any]:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE, HR],
        "userName": user_name,
        "externalId": external_id,
        "name": {"givenName": "Seed", "familyName": user_name},
        "emails": [
            {"value": f"{user_name}@example.com", "type": "work", "primary": True},
            {"value": f"{user_name}@home.example", "type": "home"},
        ],
        "active": True,
        ENTERPRISE: {"department": "Claims", "employeeNumber": external_id},
        HR: {"roleCodes": ["R1", "R2"], "hireDate": "2021-01-15T00:00:00+02:00"},
    }


# -- running, bounded and deterministic -----------------------------------------------------------


def fuzz(strategy: st.SearchStrategy[Any]) -> Callable[[Callable[[Any], None]], Callable[[], None]]:
    """Decorate an example function: ``BRIDGE_FUZZ_EXAMPLES`` examples, derandomised unless
    ``BRIDGE_FUZZ_SEED`` is set; no example database (CI runs from a fresh clone)."""

    def wrap(function: Callable[[Any], None]) -> Callable[[], None]:
        run = given(strategy)(function)
        run = settings(
            max_examples=EXAMPLES,
            derandomize=SEED is None,
            deadline=None,
            database=None,
            print_blob=False,
            # A fuzzer's examples are large and slow on purpose (10 KB strings, 2,000 terms).
            suppress_health_check=list(HealthCheck),
        )(run)
        if SEED is not None:
            run = seed(int(SEED))(run)
        return run

    return wrap


@pytest.fixture
def fuzzer(request: pytest.FixtureRequest, app: Starlette, db: Database) -> Iterator[Fuzzer]:
    """A Fuzzer on the real app; afterwards one summary line (``-s``) and, with
    ``BRIDGE_FUZZ_REPORT``, a JSON line. ``examples`` counts every run, shrinking included."""
    tally = Tally(request.node.originalname, db.dialect)
    started = time.perf_counter()
    fuzzer = Fuzzer(app, db, tally)
    try:
        yield fuzzer
    finally:
        fuzzer.close()
        seconds = time.perf_counter() - started
        print(
            f"\nfuzz {tally.test}[{tally.database}]: {tally.examples} examples,"
            f" {tally.requests} requests, {tally.five_xx} 5xx ({tally.busy} busy),"
            f" worst {tally.worst_ms:.0f} ms, {seconds:.1f} s,"
            f" statuses {dict(sorted(tally.statuses.items()))}"
        )
        if REPORT:
            line = {
                "test": tally.test,
                "database": tally.database,
                "examples": tally.examples,
                "five_xx": tally.five_xx,
                "worst_ms": round(tally.worst_ms, 1),
            }
            with open(REPORT, "a", encoding="utf-8") as report:
                report.write(json.dumps(line) + "\n")


def requests(strategy: st.SearchStrategy[fs.Request]) -> st.SearchStrategy[list[fs.Request]]:
    return st.lists(strategy, min_size=1, max_size=3)


# -- the tests ----------------------------------------------------------------------------------


def test_rfc7644_3_3_any_user_or_group_body_is_a_resource_or_an_error(fuzzer: Fuzzer) -> None:
    @fuzz(requests(st.one_of(fs.resource_writes("User"), fs.resource_writes("Group"))))
    def example(sent: list[fs.Request]) -> None:
        fuzzer.run(sent)

    example()


def test_rfc7644_3_5_2_any_patch_is_applied_or_an_error(fuzzer: Fuzzer) -> None:
    @fuzz(requests(fs.patches()))
    def example(sent: list[fs.Request]) -> None:
        fuzzer.run(sent)

    example()


def test_rfc7644_3_4_2_any_filter_or_list_query_is_a_page_or_an_error(fuzzer: Fuzzer) -> None:
    @fuzz(requests(fs.list_requests()))
    def example(sent: list[fs.Request]) -> None:
        fuzzer.run(sent)

    example()


def test_rfc7644_3_7_any_bulk_request_is_a_bulk_response_or_an_error(fuzzer: Fuzzer) -> None:
    @fuzz(requests(fs.bulk_requests()))
    def example(sent: list[fs.Request]) -> None:
        fuzzer.run(sent)

    example()


def test_any_method_id_and_header_is_an_answer_or_an_error(fuzzer: Fuzzer) -> None:
    @fuzz(requests(fs.any_requests()))
    def example(sent: list[fs.Request]) -> None:
        fuzzer.run(sent)

    example()


def test_any_sequence_of_requests_leaves_a_server_that_answers(fuzzer: Fuzzer) -> None:
    """Writes, reads and Bulk interleaved: state one request leaves is what the next meets."""
    anything = st.one_of(
        fs.resource_writes("User"),
        fs.resource_writes("Group"),
        fs.patches(),
        fs.list_requests(),
        fs.bulk_requests(),
        fs.plain_requests(),
    )

    @fuzz(st.lists(anything, min_size=2, max_size=6))
    def example(sent: list[fs.Request]) -> None:
        fuzzer.run(sent)

    example()
