"""Canvas (LMS.md, Canvas section): the simulator behaves like Canvas, and the target copes.

Simulator tests speak raw HTTP to ``bridge.lmssim.canvas`` the way Canvas is documented to
answer; target tests run ``CanvasTarget`` through ``httpx.ASGITransport`` against the simulator
behind the misbehaviour knobs; the pure builders and classifiers are tested on plain data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_CANVAS_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app
from bridge.lmssim.canvas import CanvasSite
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Status
from bridge.targets.canvas import THROTTLE_DELAY
from bridge.targets.canvas import CanvasTarget
from bridge.targets.canvas import Profile
from bridge.targets.canvas import changes
from bridge.targets.canvas import classify
from bridge.targets.canvas import course_ref
from bridge.targets.canvas import create_user
from bridge.targets.canvas import describe
from bridge.targets.canvas import enrollment_type
from bridge.targets.canvas import list_enrollments
from bridge.targets.canvas import next_link
from bridge.targets.canvas import retry_after
from bridge.targets.canvas import sis
from bridge.targets.canvas import taken

BASE = "http://canvas.test"
TOKEN = SIM_CANVAS_TOKEN
NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}
TAKEN = {
    "attribute": "unique_id",
    "type": "taken",
    "message": "ID already in use for this account and authentication provider",
}
JANE = {
    "idnumber": "E12345",
    "username": "j.smith",
    "email": "j.smith@example.com",
    "firstname": "Jane",
    "lastname": "Smith",
    "title": "Claims Specialist",
    "roles": ["BEN_CHOICE_2026"],
}


@dataclass
class Sim:
    app: Starlette
    site: CanvasSite
    knobs: Knobs


@pytest.fixture
def sim() -> Sim:
    """The simulator app (Moodle and Canvas behind the misbehaviour knobs)."""
    knobs = Knobs()
    app = create_app(knobs, canvas_token=TOKEN)
    return Sim(app, app.state.canvas, knobs)


@pytest.fixture
async def api(sim: Sim) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim.app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as client:
        yield client


def make_target(sim: Sim, token: str = TOKEN, **options: Any) -> CanvasTarget:
    config = TargetConfig(
        "canvas", "canvas", BASE, {"token": "CANVAS_TOKEN"}, {"account_id": 1, **options}
    )
    return CanvasTarget(config, token, transport=httpx.ASGITransport(app=sim.app))


@pytest.fixture
async def target(sim: Sim) -> AsyncIterator[CanvasTarget]:
    target = make_target(sim)
    yield target
    await target.aclose()


def delivery(
    intent_kind: str,
    ref: str | None = None,
    /,
    *,
    lms_user_id: str | None = None,
    account: dict[str, Any] | None = None,
    **data: Any,
) -> Delivery:
    intent: dict[str, Any] = {
        "kind": intent_kind,
        "person": "p-1",
        "target": "canvas",
        "rule": "benefits",
    }
    if ref is not None:
        intent["ref"] = ref
    if data:
        intent["data"] = data
    return Delivery(intent, lms_user_id, dict(JANE) if account is None else account)


def create(**attributes: Any) -> Delivery:
    return delivery("upsert_account", create=True, attributes={**JANE, **attributes})


def states(site: CanvasSite, user_id: str) -> dict[str, str]:
    """Enrollment type → state of one user in BEN-2026."""
    course = site.find_course("sis_course_id:BEN-2026")
    return {
        e.type: e.enrollment_state
        for e in site.enrollments.values()
        if e.user_id == int(user_id) and e.course_id == course.id
    }


def paths(result: Any) -> list[str]:
    return [f"{call['method']} {call['path'].split('?')[0]}" for call in result.detail["calls"]]


# --- The simulator answers as Canvas does -------------------------------------------------


async def test_canvas_bearer_token_or_401(sim: Sim) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=BASE) as raw:
        missing = await raw.get("/api/v1/users/1")
        wrong = await raw.get("/api/v1/users/1", headers={"Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json() == {"errors": [{"message": "Invalid access token."}]}
    assert missing.json()["errors"] == [{"message": "user authorization required"}]
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'


async def test_canvas_ids_may_be_written_as_sis_ids(sim: Sim, api: httpx.AsyncClient) -> None:
    jane = sim.site.add_user("j.smith", "Jane Smith", sis_user_id="E.1/2", email="j@example.com")
    by_id = (await api.get(f"/api/v1/users/{jane.id}")).json()
    by_hex = (await api.get(f"/api/v1/users/hex:sis_user_id:{b'E.1/2'.hex()}")).json()
    by_login = (await api.get("/api/v1/users/sis_login_id:J.SMITH")).json()
    assert by_id == by_hex == by_login
    assert by_id["sis_user_id"] == "E.1/2" and by_id["sortable_name"] == "Smith, Jane"
    missing = await api.get("/api/v1/users/sis_user_id:E404")
    assert missing.status_code == 404 and missing.json() == NOT_FOUND
    course = (await api.get("/api/v1/courses/sis_course_id:BEN-2026/enrollments")).status_code
    assert course == 200
    assert (await api.get("/api/v1/courses/sis_course_id:NOPE/enrollments")).json() == NOT_FOUND


async def test_canvas_create_user_form_or_json(sim: Sim, api: httpx.AsyncClient) -> None:
    form = {
        "user[name]": "Jane Smith",
        "pseudonym[unique_id]": "j.smith",
        "pseudonym[sis_user_id]": "E1",
        "communication_channel[address]": "j.smith@example.com",
        "enable_sis_reactivation": "true",
    }
    made = await api.post("/api/v1/accounts/1/users", data=form)
    body = {
        "user": {"name": "Maria Jones"},
        "pseudonym": {"unique_id": "m.jones", "sis_user_id": "E2"},
    }
    also = await api.post("/api/v1/accounts/self/users", json=body)
    assert made.status_code == also.status_code == 200  # Canvas answers 200, not 201
    assert made.json()["sis_user_id"] == "E1" and also.json()["login_id"] == "m.jones"
    state = (await api.get("/_sim/state")).json()["canvas"]
    assert [u["email"] for u in state["users"]] == ["j.smith@example.com", None]
    assert (await api.post("/api/v1/accounts/2/users", data=form)).status_code == 404
    unknown = await api.patch("/api/v1/users/1")
    assert unknown.json() == NOT_FOUND and "X-Request-Cost" in unknown.headers


async def test_canvas_taken_login_is_a_400_field_error(sim: Sim, api: httpx.AsyncClient) -> None:
    sim.site.add_user("J.Smith", "Jane Smith")
    form = {"user[name]": "Jane", "pseudonym[unique_id]": "j.smith", "pseudonym[sis_user_id]": "E1"}
    answer = await api.post("/api/v1/accounts/1/users", data=form)
    assert answer.status_code == 400  # logins compare case-insensitively
    assert answer.json()["errors"]["pseudonym"] == {"unique_id": [TAKEN]}
    assert len(sim.site.users) == 1


async def test_canvas_create_drops_an_invalid_email_silently(
    sim: Sim, api: httpx.AsyncClient
) -> None:
    form = {"pseudonym[unique_id]": "j.smith", "communication_channel[address]": "not-an-email"}
    answer = await api.post("/api/v1/accounts/1/users", data=form)
    assert answer.status_code == 200
    assert sim.site.users[answer.json()["id"]].email is None
    assert answer.json()["name"] == "j.smith"  # no user[name]: the login


async def test_canvas_sis_reactivation_restores_a_deleted_login(
    sim: Sim, api: httpx.AsyncClient
) -> None:
    gone = sim.site.add_user("j.smith", "Jane Smith", sis_user_id="E1")
    gone.state = "deleted"
    assert (await api.get("/api/v1/users/sis_user_id:E1")).status_code == 404
    form = {"pseudonym[unique_id]": "j.smith", "pseudonym[sis_user_id]": "E1"}
    refused = await api.post("/api/v1/accounts/1/users", data=form)
    assert refused.json()["errors"]["pseudonym"]["sis_user_id"][0]["type"] == "taken"
    back = await api.post("/api/v1/accounts/1/users", data={**form, "enable_sis_reactivation": "1"})
    assert back.json()["id"] == gone.id and gone.state == "active"


async def test_canvas_update_user_and_suspend_event(sim: Sim, api: httpx.AsyncClient) -> None:
    jane = sim.site.add_user("j.smith", "Jane Smith", sis_user_id="E1")
    url = "/api/v1/users/sis_user_id:E1"
    put = await api.put(url, data={"user[name]": "Jane Doe", "user[email]": "jd@example.com"})
    assert put.json()["sortable_name"] == "Doe, Jane" and put.json()["email"] == "jd@example.com"
    await api.put(url, json={"user": {"event": "suspend"}})
    assert jane.state == "suspended"
    await api.put(url, data={"user[event]": "unsuspend"})
    assert jane.state == "active"
    bad = await api.put(url, data={"user[email]": "jd@"})
    assert bad.status_code == 400 and bad.json()["errors"]["email"][0]["type"] == "invalid"
    # A field the caller may not manage (profiles are off) is refused as unauthorized.
    assert (await api.put(url, data={"user[title]": "Boss"})).status_code == 401


async def enrol_raw(
    api: httpx.AsyncClient, user: str, kind: str = "StudentEnrollment"
) -> httpx.Response:
    form = {
        "enrollment[user_id]": user,
        "enrollment[type]": kind,
        "enrollment[enrollment_state]": "active",
    }
    return await api.post("/api/v1/courses/sis_course_id:BEN-2026/enrollments", data=form)


async def test_canvas_enrol_reuses_the_users_enrollment(sim: Sim, api: httpx.AsyncClient) -> None:
    sim.site.add_user("j.smith", "Jane Smith", sis_user_id="E1")
    first = (await enrol_raw(api, "sis_user_id:E1")).json()
    again = (await enrol_raw(api, "sis_user_id:E1")).json()
    assert first["id"] == again["id"] and again["enrollment_state"] == "active"
    course = "/api/v1/courses/sis_course_id:BEN-2026/enrollments"
    await api.delete(f"{course}/{first['id']}", params={"task": "deactivate"})
    back = (await enrol_raw(api, "sis_user_id:E1")).json()
    assert back["id"] == first["id"] and back["enrollment_state"] == "active"
    assert len(sim.site.enrollments) == 1
    assert (await enrol_raw(api, "sis_user_id:E404")).json() == NOT_FOUND
    bad = await enrol_raw(api, "sis_user_id:E1", kind="Learner")
    assert bad.status_code == 400 and bad.json() == {"message": "Invalid type"}


async def test_canvas_enrollments_of_a_user_default_to_active_and_invited(
    sim: Sim, api: httpx.AsyncClient
) -> None:
    sim.site.add_user("j.smith", "Jane Smith", sis_user_id="E1")
    made = (await enrol_raw(api, "sis_user_id:E1")).json()
    course = "/api/v1/courses/sis_course_id:BEN-2026/enrollments"
    await api.delete(f"{course}/{made['id']}", params={"task": "deactivate"})
    default = await api.get(course, params={"user_id": "sis_user_id:E1"})
    asked = await api.get(course, params={"user_id": "sis_user_id:E1", "state[]": "inactive"})
    roster = await api.get(course)  # an admin reading the roster sees inactive ones
    assert default.json() == []
    assert [e["enrollment_state"] for e in asked.json()] == ["inactive"]
    assert [e["id"] for e in roster.json()] == [made["id"]]


async def test_canvas_lists_page_with_opaque_link_bookmarks(
    sim: Sim, api: httpx.AsyncClient
) -> None:
    for n in range(5):
        sim.site.add_user(f"u{n}", f"User {n}", sis_user_id=f"E{n}")
        await enrol_raw(api, f"sis_user_id:E{n}")
    seen, url, pages = [], "/api/v1/courses/sis_course_id:BEN-2026/enrollments?per_page=2", 0
    while url:
        answer = await api.get(url)
        seen += [e["sis_user_id"] for e in answer.json()]
        url, pages = next_link(answer.headers.get("link")) or "", pages + 1
        assert "page=bookmark" in url or not url
    assert pages == 3 and seen == [f"E{n}" for n in range(5)]
    assert 'rel="current"' in answer.headers["link"] and 'rel="first"' in answer.headers["link"]


async def test_canvas_delete_enrollment_tasks_and_reactivate(
    sim: Sim, api: httpx.AsyncClient
) -> None:
    sim.site.add_user("j.smith", "Jane Smith", sis_user_id="E1")
    made = (await enrol_raw(api, "sis_user_id:E1")).json()
    one = f"/api/v1/courses/sis_course_id:BEN-2026/enrollments/{made['id']}"
    not_inactive = await api.put(f"{one}/reactivate")
    assert not_inactive.status_code == 400 and not_inactive.json() == {
        "error": "enrollment not inactive"
    }
    assert (await api.delete(one)).json()["enrollment_state"] == "completed"  # default: conclude
    assert (await api.delete(one, params={"task": "deactivate"})).json()[
        "enrollment_state"
    ] == "inactive"
    assert (await api.put(f"{one}/reactivate")).json()["enrollment_state"] == "active"
    assert (await api.delete(one, params={"task": "delete"})).json()[
        "enrollment_state"
    ] == "deleted"
    assert (await api.delete(one)).status_code == 404  # a deleted enrollment is gone


async def test_canvas_rate_limit_headers_and_403_throttle(sim: Sim, api: httpx.AsyncClient) -> None:
    answers = [await api.get("/api/v1/users/1"), await api.get("/api/v1/users/sis_user_id:E1")]
    for answer in answers:
        assert float(answer.headers["X-Request-Cost"]) > 0
    remaining = [float(a.headers["X-Rate-Limit-Remaining"]) for a in answers]
    assert remaining[0] > remaining[1]
    sim.site.high_water = 0.01  # the per-token leaky bucket overflows
    throttled = await api.get("/api/v1/users/1")
    assert throttled.status_code == 403 and "Rate Limit Exceeded" in throttled.text
    assert "Retry-After" not in throttled.headers and "X-Rate-Limit-Remaining" in throttled.headers


# --- Pure parts of the target ---------------------------------------------------------------


def test_sis_ids_with_special_characters_are_hex_encoded() -> None:
    assert sis("sis_user_id", "E12345") == "sis_user_id:E12345"
    assert sis("sis_login_id", "j.smith") == "hex:sis_login_id:6a2e736d697468"
    assert course_ref("BEN-2026") == "sis_course_id:BEN-2026"
    assert course_ref("sis_course_id:X") == "sis_course_id:X"


def test_profile_from_mapped_attributes() -> None:
    profile = Profile.of(JANE)
    assert profile == Profile(
        "E12345", "j.smith", "Jane Smith", "Smith, Jane", "j.smith@example.com"
    )
    assert Profile.of({"idnumber": "E1", "email": "a@b.example"}).login == "a@b.example"
    assert Profile.of({"idnumber": "E1", "username": "x"}).create_problem() is None
    assert "idnumber" in (Profile.of({"username": "x"}).create_problem() or "")
    assert "drop it silently" in (Profile.of({**JANE, "email": "jane@"}).create_problem() or "")


def test_changes_only_what_differs() -> None:
    current = {"name": "Jane Smith", "sortable_name": "Smith, Jane", "email": "J.Smith@Example.com"}
    assert changes(Profile.of(JANE), current) == {}
    assert changes(Profile.of({**JANE, "lastname": "Doe"}), current) == {
        "name": "Jane Doe",
        "sortable_name": "Doe, Jane",
    }


def test_requests_are_built_as_canvas_documents_them() -> None:
    call = create_user("1", Profile.of(JANE))
    form = dict(call.form)
    assert (call.method, call.url) == ("POST", "/api/v1/accounts/1/users")
    assert form["pseudonym[sis_user_id]"] == "E12345" and form["enable_sis_reactivation"] == "true"
    assert form["communication_channel[address]"] == "j.smith@example.com"
    listing = list_enrollments("sis_course_id:X", "sis_user_id:E1", states=("active", "inactive"))
    assert ("state[]", "inactive") in listing.params and (
        "user_id",
        "sis_user_id:E1",
    ) in listing.params
    assert enrollment_type("student", {"student": "StudentEnrollment"}) == "StudentEnrollment"
    assert enrollment_type("TaEnrollment", {}) == "TaEnrollment"
    assert enrollment_type("learner", {"student": "StudentEnrollment"}) is None


def test_next_link_is_taken_as_given() -> None:
    header = (
        '<https://x.test/api/v1/c?page=first&per_page=2>; rel="current",'
        '<https://x.test/api/v1/c?page=bookmark:WzFd&per_page=2>; rel="next",'
        '<https://x.test/api/v1/c?page=first&per_page=2>; rel="first"'
    )
    assert next_link(header) == "https://x.test/api/v1/c?page=bookmark:WzFd&per_page=2"
    assert next_link(header.replace('rel="next"', 'rel="prev"')) is None
    assert next_link(None) is None


def test_canvas_error_bodies_are_read() -> None:
    body = {"errors": {"user": {}, "pseudonym": {"unique_id": [TAKEN]}, "recaptcha": None}}
    assert taken(body, "unique_id") and not taken(body, "sis_user_id")
    assert describe(body) == f"pseudonym.unique_id: {TAKEN['message']}"
    assert describe(NOT_FOUND) == "The specified resource does not exist."
    assert describe({"message": "Invalid type"}) == "Invalid type"
    assert describe({"error": "enrollment not inactive"}) == "enrollment not inactive"


def test_retry_after_seconds_or_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after({"retry-after": "7"}, None) == 7.0
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, None, now) == 30.0
    assert retry_after({}, 2.0) == 2.0


@pytest.mark.parametrize(
    ("answer", "status", "category", "after"),
    [
        (httpx.Response(200, json={}), None, None, None),
        (
            httpx.Response(401, json={"errors": [{"message": "Invalid access token."}]}),
            Status.dead,
            Category.configuration,
            None,
        ),
        (
            httpx.Response(403, text="403 Forbidden (Rate Limit Exceeded)"),
            Status.retry,
            Category.transient,
            THROTTLE_DELAY,
        ),
        (
            httpx.Response(429, headers={"Retry-After": "9"}),
            Status.retry,
            Category.transient,
            9.0,
        ),
        (
            httpx.Response(403, json={"status": "unauthorized", "errors": []}),
            Status.dead,
            Category.configuration,
            None,
        ),
        (
            httpx.Response(503, text="Service Unavailable", headers={"Retry-After": "1"}),
            Status.retry,
            Category.transient,
            1.0,
        ),
        (httpx.Response(502, text="Bad Gateway"), Status.retry, Category.transient, None),
        (
            httpx.Response(
                400, json={"errors": {"email": [{"type": "invalid", "message": "bad"}]}}
            ),
            Status.dead,
            Category.data_quality,
            None,
        ),
        (httpx.Response(404, json=NOT_FOUND), Status.dead, Category.configuration, None),
    ],
)
def test_classify_canvas_answers(
    answer: httpx.Response, status: Status | None, category: Category | None, after: float | None
) -> None:
    result = classify(answer)
    if status is None:
        assert result is None
        return
    assert result is not None
    assert (result.status, result.category, result.retry_after) == (status, category, after)


# --- The target against the simulator -------------------------------------------------------


async def test_create_then_redeliver_makes_one_user(sim: Sim, target: CanvasTarget) -> None:
    first = await target.deliver(create())
    again = await target.deliver(create())
    assert first.status == again.status == Status.done
    assert first.lms_user_id == again.lms_user_id and first.lms_user_id is not None
    assert paths(first) == ["GET /api/v1/users/sis_user_id:E12345", "POST /api/v1/accounts/1/users"]
    assert paths(again) == ["GET /api/v1/users/sis_user_id:E12345"]  # up to date: no PUT
    [user] = sim.site.snapshot()["users"]
    assert (user["login_id"], user["email"], user["sortable_name"]) == (
        "j.smith",
        JANE["email"],
        "Smith, Jane",
    )


async def test_update_sends_only_what_canvas_keeps(sim: Sim, target: CanvasTarget) -> None:
    made = await target.deliver(create())
    renamed = await target.deliver(
        delivery(
            "upsert_account",
            lms_user_id=made.lms_user_id,
            account={**JANE, "lastname": "Doe"},
            create=False,
            attributes={"lastname": "Doe"},
        )
    )
    assert renamed.status == Status.done and "updated name, sortable_name" in renamed.message
    assert sim.site.users[int(str(made.lms_user_id))].sortable_name == "Doe, Jane"
    title_only = delivery(
        "upsert_account", lms_user_id=made.lms_user_id, create=False, attributes={"title": "Boss"}
    )
    untouched = await target.deliver(title_only)
    assert untouched.status == Status.done and untouched.detail["calls"] == []


async def test_taken_login_switches_to_update(sim: Sim, target: CanvasTarget) -> None:
    manual = sim.site.add_user("J.Smith", "jane smith")  # made by hand in Canvas, no SIS id
    result = await target.deliver(create())
    assert result.status == Status.done and result.lms_user_id == str(manual.id)
    assert "adopted" in result.message and len(sim.site.users) == 1
    assert "login stays 'J.Smith'" not in result.message  # logins compare case-insensitively
    assert manual.name == "Jane Smith" and manual.email == JANE["email"]
    assert paths(result)[1:] == [
        "POST /api/v1/accounts/1/users",
        "GET /api/v1/users/hex:sis_login_id:6a2e736d697468",
        f"PUT /api/v1/users/{manual.id}",
    ]
    # Later intents find the adopted user through the link's Canvas id.
    enrolled = await target.deliver(
        delivery("enrol", "BEN-2026", lms_user_id=result.lms_user_id, role="student")
    )
    assert enrolled.status == Status.done and states(sim.site, str(manual.id)) == {
        "StudentEnrollment": "active"
    }


async def test_login_held_by_another_sis_id_is_dead(sim: Sim, target: CanvasTarget) -> None:
    sim.site.add_user("j.smith", "Jane Other", sis_user_id="E999")
    result = await target.deliver(create())
    assert (result.status, result.category) == (Status.dead, Category.data_quality)
    assert "E999" in result.message and len(sim.site.users) == 1


async def test_enrol_twice_gives_one_active_enrollment(sim: Sim, target: CanvasTarget) -> None:
    user_id = (await target.deliver(create())).lms_user_id
    first = await target.deliver(delivery("enrol", "BEN-2026", role="student"))
    again = await target.deliver(delivery("enrol", "BEN-2026", role="student"))
    assert first.status == again.status == Status.done and first.lms_user_id == user_id
    assert "already enrolled" in again.message and paths(again) == [
        "GET /api/v1/courses/sis_course_id:BEN-2026/enrollments"
    ]
    assert len(sim.site.enrollments) == 1 and states(sim.site, str(user_id)) == {
        "StudentEnrollment": "active"
    }


async def test_suspend_enrolment_finds_the_enrollment_across_pages(sim: Sim) -> None:
    target = make_target(sim, per_page=2)
    user_id = str((await target.deliver(create())).lms_user_id)
    for other in range(3):  # classmates: the lookup must filter by user
        sim.site.add_user(f"u{other}", f"User {other}", sis_user_id=f"E{other}")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url=BASE) as api:
        api.headers["Authorization"] = f"Bearer {TOKEN}"
        for kind in (
            "StudentEnrollment",
            "TeacherEnrollment",
            "TaEnrollment",
            "DesignerEnrollment",
            "ObserverEnrollment",
        ):
            await enrol_raw(api, "sis_user_id:E12345", kind)
        for other in range(3):
            await enrol_raw(api, f"sis_user_id:E{other}")
    result = await target.deliver(delivery("suspend_enrolment", "BEN-2026", kind="enrolment"))
    await target.aclose()
    assert result.status == Status.done
    listed = [c for c in result.detail["calls"] if c["method"] == "GET"]
    assert len(listed) == 3 and "page=bookmark" in listed[-1]["path"]  # Link URLs followed as given
    assert set(states(sim.site, user_id).values()) == {"inactive"}  # progress kept
    assert {
        e.enrollment_state for e in sim.site.enrollments.values() if e.user_id != int(user_id)
    } == {"active"}


async def test_enrol_after_suspension_reactivates_the_same_enrollment(
    sim: Sim, target: CanvasTarget
) -> None:
    await target.deliver(create())
    made = await target.deliver(delivery("enrol", "BEN-2026", role="student"))
    await target.deliver(delivery("suspend_enrolment", "BEN-2026", kind="enrolment"))
    again = await target.deliver(delivery("suspend_enrolment", "BEN-2026", kind="enrolment"))
    assert again.status == Status.done and "nothing to deactivate" in again.message
    back = await target.deliver(delivery("enrol", "BEN-2026", role="student"))
    assert back.status == Status.done and "reactivated" in back.message
    assert paths(back)[-1].endswith("/reactivate")
    [enrollment] = sim.site.enrollments.values()
    assert enrollment.enrollment_state == "active" and str(enrollment.user_id) == made.lms_user_id


async def test_unenrol_concludes_by_default_or_deletes(sim: Sim, target: CanvasTarget) -> None:
    user_id = str((await target.deliver(create())).lms_user_id)
    await target.deliver(delivery("enrol", "BEN-2026", role="student"))
    concluded = await target.deliver(delivery("unenrol", "BEN-2026", kind="enrolment"))
    assert concluded.status == Status.done and states(sim.site, user_id) == {
        "StudentEnrollment": "completed"
    }
    deleting = make_target(sim, unenrol_task="delete")
    deleted = await deleting.deliver(delivery("unenrol", "BEN-2026", kind="enrolment"))
    await deleting.aclose()
    assert deleted.status == Status.done and states(sim.site, user_id) == {
        "StudentEnrollment": "deleted"
    }
    twice = await target.deliver(delivery("unenrol", "BEN-2026", kind="enrolment"))
    assert twice.status == Status.done and "no enrollment" in twice.message


async def test_suspend_and_reactivate_account(sim: Sim, target: CanvasTarget) -> None:
    user_id = str((await target.deliver(create())).lms_user_id)
    suspended = await target.deliver(delivery("suspend_account", reason="inactive"))
    assert suspended.status == Status.done and sim.site.users[int(user_id)].state == "suspended"
    back = await target.deliver(delivery("reactivate_account"))
    assert back.status == Status.done and back.lms_user_id == user_id
    assert sim.site.users[int(user_id)].state == "active"
    assert paths(back) == ["PUT /api/v1/users/sis_user_id:E12345"]


async def test_cohort_intents_are_dead_mappings(target: CanvasTarget) -> None:
    for kind in ("add_cohort_member", "remove_cohort_member"):
        result = await target.deliver(delivery(kind, "BEN2026"))
        assert (result.status, result.category) == (Status.dead, Category.configuration)
        assert result.message == "Canvas has no cohorts; use sections or a course"


async def test_unknown_course_is_a_dead_mapping(target: CanvasTarget) -> None:
    await target.deliver(create())
    result = await target.deliver(delivery("enrol", "BEN-1999", role="student"))
    assert (result.status, result.category) == (Status.dead, Category.configuration)
    assert "sis_course_id:BEN-1999" in result.message


async def test_enrolling_a_user_canvas_does_not_have_is_dead(target: CanvasTarget) -> None:
    result = await target.deliver(delivery("enrol", "BEN-2026", role="student"))
    assert (result.status, result.category) == (Status.dead, Category.configuration)
    assert "was the account created" in result.message
    unknown_role = await target.deliver(delivery("enrol", "BEN-2026", role="learner"))
    assert (unknown_role.status, unknown_role.category) == (Status.dead, Category.configuration)


async def test_bad_token_is_dead_provisioning_and_never_journalled(sim: Sim) -> None:
    secret = "wrong-secret-token"
    target = make_target(sim, token=secret)
    result = await target.deliver(create())
    await target.aclose()
    assert (result.status, result.category) == (Status.dead, Category.configuration)
    assert "Invalid access token." in result.message
    assert secret not in json.dumps(result.detail) + result.message
    assert result.detail["calls"] == [
        {"method": "GET", "path": "/api/v1/users/sis_user_id:E12345", "status": 401}
    ]


async def test_rate_limit_403_is_retried_after_the_wait(sim: Sim, target: CanvasTarget) -> None:
    sim.knobs.rate_limit_per_s, sim.knobs.burst = 0.1, 1  # the bucket starts empty: ~10 s
    result = await target.deliver(create())
    assert (result.status, result.category) == (Status.retry, Category.transient)
    assert "Rate Limit Exceeded" in result.message
    assert result.retry_after is not None and 9 <= result.retry_after <= 11  # Retry-After honoured
    sim.knobs.rate_limit_per_s = None
    sim.site.high_water = 0.01  # Canvas's own bucket: 403 without Retry-After
    own = await target.deliver(create())
    assert own.status == Status.retry and own.retry_after == THROTTLE_DELAY


async def test_outage_503_is_retried(sim: Sim, target: CanvasTarget) -> None:
    sim.knobs.outage(60)
    result = await target.deliver(create())
    assert (result.status, result.retry_after) == (Status.retry, 1.0)
    assert result.detail["calls"][0]["status"] == 503


async def test_timeouts_are_retried() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    config = TargetConfig("canvas", "canvas", BASE, {}, {"account_id": 1})
    target = CanvasTarget(config, TOKEN, transport=httpx.MockTransport(slow))
    result = await target.deliver(create())
    await target.aclose()
    assert result.status == Status.retry and "ReadTimeout" in result.message
    assert result.detail["calls"] == [
        {"method": "GET", "path": "/api/v1/users/sis_user_id:E12345", "error": "ReadTimeout"}
    ]


async def test_bad_email_is_dead_data_quality(sim: Sim, target: CanvasTarget) -> None:
    on_create = await target.deliver(create(email="jane@"))
    assert (on_create.status, on_create.category) == (Status.dead, Category.data_quality)
    assert paths(on_create) == ["GET /api/v1/users/sis_user_id:E12345"]  # no account without it
    made = await target.deliver(create())
    bad = {**JANE, "email": "jane@nowhere"}
    on_update = await target.deliver(
        delivery(
            "upsert_account",
            lms_user_id=made.lms_user_id,
            account=bad,
            create=False,
            attributes={"email": "jane@nowhere"},
        )
    )
    assert (on_update.status, on_update.category) == (Status.dead, Category.data_quality)
    assert 'email: "jane@nowhere" is not a valid email address' in on_update.message


async def test_changed_idnumber_finds_the_user_by_the_linked_canvas_id(
    sim: Sim, target: CanvasTarget
) -> None:
    made = await target.deliver(create())
    moved = await target.deliver(
        delivery(
            "upsert_account",
            lms_user_id=made.lms_user_id,
            account={**JANE, "idnumber": "E777"},
            create=False,
            attributes={"idnumber": "E777"},
        )
    )
    assert moved.status == Status.done and moved.lms_user_id == made.lms_user_id
    assert "SIS id stays 'E12345'" in moved.message and len(sim.site.users) == 1
    assert paths(moved) == [
        "GET /api/v1/users/sis_user_id:E777",
        f"GET /api/v1/users/{made.lms_user_id}",
    ]
