"""The simulator takes the time a real LMS takes, and its batch calls fail as Moodle's do.

LMS.md: ~36 ms a Moodle web-service call on a small site; 200 users in one
``core_user_create_users`` ≈ 2 s, 200 single calls ≈ 7 s; the whole batch fails if one row is
bad. The service times are off by default; the timed tests use small values and check a lower
bound that a sleep guarantees and an upper bound generous enough never to flake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_CANVAS_TOKEN
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app
from bridge.lmssim.cost import REAL_SITE
from bridge.lmssim.cost import moodle_rows
from bridge.lmssim.cost import moodle_seconds
from bridge.lmssim.moodle_rest import php_form
from bridge.targets.moodle_ws import flatten

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SLACK = 1.0  # seconds: far above what an in-process ASGI call takes, even on a busy machine


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(create_app(Knobs())) as client:
        yield client


def client_of(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lms.test")


async def ws(client: httpx.AsyncClient, function: str, params: dict[str, Any]) -> Any:
    fields = [("wstoken", SIM_MOODLE_TOKEN), ("wsfunction", function)]
    fields += [("moodlewsrestformat", "json"), *flatten(params)]
    answer = await client.post(
        "/webservice/rest/server.php", content=urlencode(fields), headers=FORM
    )
    return answer.json() if answer.status_code == 200 else answer


def people(count: int, prefix: str = "p") -> list[dict[str, str]]:
    return [
        {
            "username": f"{prefix}{n:03d}",
            "firstname": "Pat",
            "lastname": f"Person {n}",
            "email": f"{prefix}{n:03d}@example.com",
            "auth": "oauth2",
        }
        for n in range(count)
    ]


async def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = await call
    return time.perf_counter() - started, answer


# -- the arithmetic: LMS.md's observations ------------------------------------------------------


def test_real_site_times_match_lms_md_observations() -> None:
    """36 ms a call and 10 ms each further row: a 200-user create ≈ 2 s, 200 singles ≈ 7 s."""
    real = Knobs.real_site()
    assert (real.moodle_call_ms, real.moodle_row_ms) == (36.0, 10.0)
    assert moodle_seconds(real, 200) == pytest.approx(2.026)  # LMS.md: about 2 s
    assert 200 * moodle_seconds(real, 1) == pytest.approx(7.2)  # LMS.md: about 7 s
    assert real.canvas_request_ms == REAL_SITE["canvas_request_ms"]
    off = Knobs()
    assert (off.moodle_call_ms, off.moodle_row_ms, off.canvas_request_ms) == (0.0, 0.0, 0.0)


def test_rows_are_the_longest_list_parameter() -> None:
    """A call's rows: its longest PHP array with integer keys; ``options`` and structures with
    named keys (``context``) are not rows; a call without any list is one row."""
    form = flatten({"users": people(3), "options": [{"name": "a", "value": "1"}] * 5})
    assert moodle_rows(php_form(form)) == 3
    assert moodle_rows(php_form(flatten({"values": ["a", "b"], "field": "username"}))) == 2
    context = {"query": "x", "context": {"contextid": 1, "contextlevel": "", "instanceid": 0}}
    assert moodle_rows(php_form(flatten(context))) == 1
    assert moodle_rows({}) == 1


# -- the time spent, measured -------------------------------------------------------------------


async def test_moodle_batch_call_takes_call_time_plus_row_time() -> None:
    """20 ms a call + 5 ms a further row: 9 users take ≥ 60 ms, a lookup ≥ 20 ms."""
    app = create_app(Knobs(moodle_call_ms=20, moodle_row_ms=5))
    async with client_of(app) as client:
        elapsed, made = await timed(ws(client, "core_user_create_users", {"users": people(9)}))
        assert len(made) == 9
        assert 0.060 <= elapsed < 0.060 + SLACK
        lookup = ws(client, "core_user_get_users_by_field", {"field": "id", "values": ["2"]})
        elapsed, found = await timed(lookup)
        assert [u["username"] for u in found] == ["admin"]
        assert 0.020 <= elapsed < 0.020 + SLACK


async def test_moodle_calls_spend_their_time_concurrently() -> None:
    """asyncio.sleep, not a blocking sleep: 20 calls of 100 ms at once take about 100 ms, far
    from the 2 s they would take one after the other."""
    app = create_app(Knobs(moodle_call_ms=100))
    async with client_of(app) as client:
        calls = [ws(client, "core_webservice_get_site_info", {}) for _ in range(20)]
        elapsed, answers = await timed(asyncio.gather(*calls))
    assert all(a["sitename"] == "Simulated Moodle" for a in answers)
    assert 0.100 <= elapsed < 1.0


async def test_a_batch_call_changes_nothing_until_it_answers() -> None:
    """The time is spent before the call runs, as a transaction commits at its end: while a
    slow create (about 0.5 s) is under way the site holds none of its users."""
    app = create_app(Knobs(moodle_call_ms=20, moodle_row_ms=10))
    async with client_of(app) as client:
        batch = asyncio.ensure_future(ws(client, "core_user_create_users", {"users": people(50)}))
        await asyncio.sleep(0.05)
        usernames = {
            u["username"] for u in (await client.get("/_sim/state")).json()["moodle"]["users"]
        }
        assert not batch.done() and "p000" not in usernames
        assert len(await batch) == 50
        usernames = {
            u["username"] for u in (await client.get("/_sim/state")).json()["moodle"]["users"]
        }
        assert "p000" in usernames


async def test_canvas_request_takes_its_time_and_knobs_change_it_at_run_time() -> None:
    app = create_app(Knobs(canvas_request_ms=40))
    headers = {"Authorization": f"Bearer {SIM_CANVAS_TOKEN}"}
    async with client_of(app) as client:
        elapsed, answer = await timed(client.get("/api/v1/courses/11/enrollments", headers=headers))
        assert answer.status_code == 200 and "X-Rate-Limit-Remaining" in answer.headers
        assert 0.040 <= elapsed < 0.040 + SLACK
        assert (await client.post("/_sim/knobs", json={"moodle_call_ms": 30})).is_success
        elapsed, _ = await timed(ws(client, "core_webservice_get_site_info", {}))
        assert 0.030 <= elapsed < 0.030 + SLACK


async def test_throttled_calls_answer_at_once() -> None:
    """A call the rate limit turns away never reaches the LMS: the proxy's 429 (Moodle) and
    Canvas's own 403 come back without the service time."""
    knobs = Knobs(rate_limit_per_s=0.01, burst=1, moodle_call_ms=3000, canvas_request_ms=3000)
    app = create_app(knobs)
    async with client_of(app) as client:
        elapsed, answer = await timed(ws(client, "core_webservice_get_site_info", {}))
        assert answer.status_code == 429 and elapsed < 2.0
        knobs.rate_limit_per_s = None
        app.state.canvas.high_water = 0.01
        headers = {"Authorization": f"Bearer {SIM_CANVAS_TOKEN}"}
        elapsed, answer = await timed(client.get("/api/v1/users/1", headers=headers))
        assert answer.status_code == 403 and "Rate Limit Exceeded" in answer.text
        assert elapsed < 2.0


# -- batch semantics ----------------------------------------------------------------------------


async def test_moodle_create_users_fails_whole_on_one_bad_row(client: httpx.AsyncClient) -> None:
    """LMS.md: one bad row in 200 and nothing is created; the answer is Moodle's
    invalid_parameter_exception, HTTP 200, the detail only in debuginfo with debugging on."""
    batch = people(200)
    batch[150]["email"] = "not-an-address"
    answer = await ws(client, "core_user_create_users", {"users": batch})
    assert answer == {
        "exception": "invalid_parameter_exception",
        "errorcode": "invalidparameter",
        "message": "Invalid parameter value detected",
    }
    assert (
        await ws(client, "core_user_get_users_by_field", {"field": "username", "values": ["p000"]})
        == []
    )
    assert (await client.post("/_sim/moodle", json={"debug": True})).is_success
    batch[150]["email"] = "p000@example.com"  # a duplicate inside the batch
    again = await ws(client, "core_user_create_users", {"users": batch})
    assert again["debuginfo"] == "Email address already exists: p000@example.com"
    batch[150]["email"], batch[199]["theme"] = "p150@example.com", "nosuchtheme"
    themed = await ws(client, "core_user_create_users", {"users": batch})
    assert themed["debuginfo"] == "Invalid theme: nosuchtheme"
    del batch[199]["theme"]
    assert len(await ws(client, "core_user_create_users", {"users": batch})) == 200
