"""The simulator tracks course completion as Moodle and Canvas do, on a clock tests control.

Moodle: ``core_completion_get_course_completion_status`` and
``core_completion_get_activities_completion_status`` answer as ``completion/classes/external.php``
(Moodle 4.3/4.4) does, errors included; ``core_enrol_get_enrolled_users`` returns what
``get_enrolled_users_returns()`` keeps. Canvas: ``GET …/users/:user_id/progress`` answers
``CourseProgress#to_json`` (courses_controller#user_progress), student enrollments carry
``grades``. Learners start and finish on their own at a seeded ``Pace`` per simulated day.
Every check goes through HTTP, as a client of the real LMS would.
"""

from __future__ import annotations

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
from bridge.lmssim.clock import SimClock
from bridge.lmssim.completion import DAY
from bridge.lmssim.moodle import MoodleSite
from bridge.targets.moodle_ws import flatten

T0 = 1_800_000_000  # 2027-01-15T08:00:00Z
BEN, BEN_MGR, LIBRARY = 2, 3, 6  # the seeded Moodle courses used here
STUDENT, TEACHER = 5, 3
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CANVAS_BEN = "sis_course_id:BEN-2026"


def simulator(seed: int = 7, **options: Any) -> Starlette:
    return create_app(Knobs(seed=seed), clock=SimClock.frozen(T0), **options)


@pytest.fixture
def app() -> Starlette:
    return simulator()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as client:
        yield client


def moodle_of(app: Starlette) -> MoodleSite:
    site: MoodleSite = app.state.moodle
    return site


async def ws(client: httpx.AsyncClient, function: str, params: dict[str, Any]) -> Any:
    fields = [("wstoken", SIM_MOODLE_TOKEN), ("wsfunction", function)]
    fields += [("moodlewsrestformat", "json"), *flatten(params)]
    answer = await client.post(
        "/webservice/rest/server.php", content=urlencode(fields), headers=FORM
    )
    assert answer.status_code == 200  # Moodle answers 200, errors included
    return answer.json()


async def admin(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    answer = await client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def learners(client: httpx.AsyncClient, *names: str) -> list[int]:
    rows = [
        {
            "username": name,
            "firstname": name.title(),
            "lastname": "Example",
            "email": f"{name}@example.com",
            "auth": "oauth2",
        }
        for name in names
    ]
    made = await ws(client, "core_user_create_users", {"users": rows})
    return [int(u["id"]) for u in made]


async def enrol(
    client: httpx.AsyncClient, userids: list[int], course: int = BEN, **extra: int
) -> None:
    rows = [{"roleid": STUDENT, "userid": u, "courseid": course, **extra} for u in userids]
    assert await ws(client, "enrol_manual_enrol_users", {"enrolments": rows}) is None


async def status(client: httpx.AsyncClient, userid: int, course: int = BEN) -> Any:
    params = {"courseid": course, "userid": userid}
    return await ws(client, "core_completion_get_course_completion_status", params)


async def mark(client: httpx.AsyncClient, lms: str, course: Any, user: Any, state: str) -> Any:
    body = {"lms": lms, "course": course, "user": user, "state": state}
    return await admin(client, "/_sim/completion/mark", body)


# -- Moodle: core_completion_get_course_completion_status ---------------------------------------


async def test_moodle_course_completion_status_follows_the_learner(
    client: httpx.AsyncClient,
) -> None:
    """Read from get_course_completion_status(): one row per criterion (activity criteria are
    type 4, "Activity completion", status "Yes"/"No", timecompleted null until met), the
    course complete when every criterion is (aggregation 1: all)."""
    [ada] = await learners(client, "ada")
    await enrol(client, [ada])
    fresh = await status(client, ada)
    assert fresh["warnings"] == []
    assert (fresh["completionstatus"]["completed"], fresh["completionstatus"]["aggregation"]) == (
        False,
        1,
    )
    rows = fresh["completionstatus"]["completions"]
    assert [(r["type"], r["title"], r["status"], r["complete"]) for r in rows] == [
        (4, "Activity completion", "No", False),
        (4, "Activity completion", "No", False),
    ]
    assert [r["timecompleted"] for r in rows] == [None, None]
    assert [r["details"]["requirement"] for r in rows] == ["Viewing the page", "Achieving grade"]
    assert rows[0]["details"]["criteria"].startswith(
        '<a href="http://moodle.test/mod/page/view.php'
    )
    assert rows[0]["details"]["type"] == "Activity completion"

    started = await mark(client, "moodle", BEN, ada, "inprogress")
    assert (started["state"], started["timestarted"]) == ("inprogress", T0)
    midway = (await status(client, ada))["completionstatus"]
    assert midway["completed"] is False
    assert [(r["complete"], r["timecompleted"]) for r in midway["completions"]] == [
        (True, T0),
        (False, None),
    ]
    await admin(client, "/_sim/clock", {"days": 1})
    await mark(client, "moodle", BEN, ada, "complete")
    done = (await status(client, ada))["completionstatus"]
    assert done["completed"] is True
    assert {r["status"] for r in done["completions"]} == {"Yes"}
    assert [r["timecompleted"] for r in done["completions"]] == [T0 + DAY, T0 + DAY]


async def test_moodle_course_completion_errors_are_moodles(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Read from completion/classes/external.php and lang/en: get_course() and
    core_user::get_user(MUST_EXIST) first, then require_active_user(), then
    completion_can_view_data() (cannotviewreport), is_tracked_user() (usernotenroled, or
    notenroled for the token's own user) and the criteria (nocriteriaset)."""
    ada, bob, cyd, dee = await learners(client, "ada", "bob", "cyd", "dee")

    def error(answer: Any) -> tuple[str, str, str]:
        return answer["exception"], answer["errorcode"], answer["message"]

    assert error(await status(client, ada, course=999)) == (
        "dml_missing_record_exception",
        "invalidrecord",
        "Can't find data record in database table course.",
    )
    assert error(await status(client, 999)) == (  # observed on Moodle 4.3
        "dml_missing_record_exception",
        "invaliduser",
        "Invalid user",
    )
    assert error(await status(client, ada, course=LIBRARY)) == (
        "moodle_exception",
        "cannotviewreport",
        "You cannot view this report",
    )
    assert error(await status(client, ada)) == (
        "moodle_exception",
        "usernotenroled",
        "User is not enrolled in this course",
    )
    assert error(await status(client, 2))[1:] == (  # admin, the token's user
        "notenroled",
        "You are not enrolled in this course",
    )
    await enrol(client, [bob], suspend=1)  # suspended: not an active enrolment
    teacher = [{"roleid": TEACHER, "userid": cyd, "courseid": BEN}]
    await ws(client, "enrol_manual_enrol_users", {"enrolments": teacher})  # not tracked
    for userid in (bob, cyd):
        assert (await status(client, userid))["errorcode"] == "usernotenroled"
    await ws(client, "core_user_delete_users", {"userids": [dee]})
    assert error(await status(client, dee))[1:] == (
        "userdeleted",
        "error/userdeleted",
    )
    bare = moodle_of(app).add_course("BARE", "No criteria", activities=())
    await enrol(client, [ada], course=bare.id)
    assert error(await status(client, ada, course=bare.id))[1:] == (
        "nocriteriaset",
        "No completion criteria set for this course",
    )


async def test_moodle_completion_survives_a_suspended_enrolment(client: httpx.AsyncClient) -> None:
    """LMS.md: suspending an enrolment keeps the progress; Moodle only stops tracking it."""
    [ada] = await learners(client, "ada")
    await enrol(client, [ada])
    await mark(client, "moodle", BEN, ada, "complete")
    await enrol(client, [ada], suspend=1)
    assert (await status(client, ada))["errorcode"] == "usernotenroled"
    await enrol(client, [ada])
    assert (await status(client, ada))["completionstatus"]["completed"] is True


# -- Moodle: core_completion_get_activities_completion_status -----------------------------------


async def test_moodle_activities_completion_status_for_anyone(client: httpx.AsyncClient) -> None:
    """Read from get_activities_completion_status(): no enrolment check (istrackeduser says
    it), every activity with completion tracking, state 0/1, timecompleted 0 until met, the
    automatic rules in details (completionview "View", completionusegrade "Receive a grade")."""
    ada, bob = await learners(client, "ada", "bob")
    await enrol(client, [ada])
    await mark(client, "moodle", BEN, ada, "inprogress")
    params = {"courseid": BEN, "userid": ada}
    answer = await ws(client, "core_completion_get_activities_completion_status", params)
    assert answer["warnings"] == []
    page, quiz = answer["statuses"]
    assert (page["modname"], page["state"], page["timecompleted"], page["tracking"]) == (
        "page",
        1,
        T0,
        2,
    )
    assert (quiz["modname"], quiz["state"], quiz["timecompleted"]) == ("quiz", 0, 0)
    assert page["details"] == [
        {"rulename": "completionview", "rulevalue": {"status": 1, "description": "View"}}
    ]
    assert quiz["details"] == [
        {
            "rulename": "completionusegrade",
            "rulevalue": {"status": 0, "description": "Receive a grade"},
        }
    ]
    assert list(page) == [
        *("cmid", "modname", "instance", "state", "timecompleted", "tracking", "overrideby"),
        *("valueused", "hascompletion", "isautomatic", "istrackeduser", "uservisible", "details"),
    ]
    assert (page["hascompletion"], page["isautomatic"], page["istrackeduser"]) == (True, True, True)
    stranger = await ws(
        client, "core_completion_get_activities_completion_status", {"courseid": BEN, "userid": bob}
    )
    assert [(s["state"], s["istrackeduser"]) for s in stranger["statuses"]] == [
        (0, False),
        (0, False),
    ]
    untracked = {"courseid": LIBRARY, "userid": ada}
    assert await ws(client, "core_completion_get_activities_completion_status", untracked) == {
        "statuses": [],
        "warnings": [],
    }


async def test_moodle_completion_functions_need_the_tokens_service(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """A service is a list of functions: the completion functions answer accessexception when
    the token's service leaves them out, and site info lists them when it holds them."""
    info = await ws(client, "core_webservice_get_site_info", {})
    names = {f["name"] for f in info["functions"]}
    assert {
        "core_completion_get_course_completion_status",
        "core_completion_get_activities_completion_status",
    } <= names
    moodle_of(app).service_functions.discard("core_completion_get_course_completion_status")
    refused = await status(client, 2)
    assert (refused["exception"], refused["errorcode"]) == (
        "webservice_access_exception",
        "accessexception",
    )


async def test_moodle_enrolled_users_have_the_fields_moodle_returns(
    client: httpx.AsyncClient,
) -> None:
    """get_enrolled_users_returns(): in its order, with profile pictures, roles, the user's
    active courses (enrolledcourses) and lastcourseaccess; no groups or preferences."""
    [ada] = await learners(client, "ada")
    await enrol(client, [ada])
    await enrol(client, [ada], course=BEN_MGR)
    await admin(client, "/_sim/clock", {"seconds": 3600})
    await mark(client, "moodle", BEN, ada, "inprogress")
    [participant] = await ws(client, "core_enrol_get_enrolled_users", {"courseid": BEN})
    assert list(participant) == [
        *("id", "username", "firstname", "lastname", "fullname", "email", "department"),
        *("firstaccess", "lastaccess", "lastcourseaccess", "profileimageurlsmall"),
        *("profileimageurl", "roles", "enrolledcourses"),
    ]
    assert participant["lastcourseaccess"] == T0 + 3600
    assert participant["profileimageurl"].endswith("/u/f1")
    assert [r["shortname"] for r in participant["roles"]] == ["student"]
    assert [c["shortname"] for c in participant["enrolledcourses"]] == ["BEN-2026", "BEN-2026-MGR"]


# -- learners on their own, on the simulated clock ----------------------------------------------


async def run_cohort(app: Starlette, *, days: int) -> tuple[list[Any], list[Any]]:
    """50 Moodle students and 50 Canvas students at 20 % a day for ``days`` days."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as client:
        made = await learners(client, *(f"l{n:02d}" for n in range(50)))
        await enrol(client, made)
        canvas = {"Authorization": f"Bearer {SIM_CANVAS_TOKEN}"}
        for n in range(50):
            user = {"user[name]": f"L {n}", "pseudonym[unique_id]": f"l{n}@example.com"}
            user["pseudonym[sis_user_id]"] = f"E{n}"
            assert (
                await client.post("/api/v1/accounts/1/users", data=user, headers=canvas)
            ).is_success
            enrolment = {"enrollment[user_id]": f"sis_user_id:E{n}"}
            enrolment["enrollment[enrollment_state]"] = "active"
            path = f"/api/v1/courses/{CANVAS_BEN}/enrollments"
            assert (await client.post(path, data=enrolment, headers=canvas)).is_success
        await admin(client, "/_sim/completion", {"completion_rate": 0.2, "start_rate": 0.5})
        await admin(client, "/_sim/clock", {"days": days})
        state = (await client.get("/_sim/state")).json()
    return state["moodle"]["completion"], state["canvas"]["completion"]


async def test_a_seeded_pace_completes_a_share_of_learners_each_day_and_replays() -> None:
    """completion_rate 0.2 a day: after a day about a fifth of 50 learners are complete, some
    have only started; nothing happens between days; the same seed replays the same run, and
    every time lies within the day that passed."""
    moodle, canvas = await run_cohort(simulator(seed=7), days=1)
    for book in (moodle, canvas):
        states = [p["state"] for p in book]
        assert 3 <= states.count("complete") <= 20
        assert states.count("inprogress") >= 5
        for p in book:
            for when in (p["timestarted"], p["timecompleted"]):
                assert when == 0 or T0 <= when <= T0 + DAY
    assert await run_cohort(simulator(seed=7), days=1) == (moodle, canvas)
    assert await run_cohort(simulator(seed=8), days=1) != (moodle, canvas)
    later, _ = await run_cohort(simulator(seed=7), days=30)
    assert sum(p["state"] == "complete" for p in later) >= 45


async def test_only_tracked_learners_move_and_nothing_moves_without_a_pace(
    client: httpx.AsyncClient,
) -> None:
    """Pace 0 (the default): days pass and nobody starts. With a pace, a suspended enrolment
    and a teacher stay where they are."""
    ada, bob, cyd = await learners(client, "ada", "bob", "cyd")
    await enrol(client, [ada])
    await admin(client, "/_sim/clock", {"days": 10})
    assert (await client.get("/_sim/completion")).json()["moodle"] == {
        "notstarted": 1,
        "inprogress": 0,
        "complete": 0,
    }
    await enrol(client, [bob], suspend=1)
    teacher = [{"roleid": TEACHER, "userid": cyd, "courseid": BEN}]
    await ws(client, "enrol_manual_enrol_users", {"enrolments": teacher})
    await admin(client, "/_sim/completion", {"completion_rate": 1.0})
    answer = await admin(client, "/_sim/clock", {"days": 1})
    assert answer == {"now": T0 + 11 * DAY, "days": {"moodle": 1, "canvas": 1}}
    assert (await status(client, ada))["completionstatus"]["completed"] is True
    activities = "core_completion_get_activities_completion_status"
    for userid in (bob, cyd):
        answer = await ws(client, activities, {"courseid": BEN, "userid": userid})
        assert {s["state"] for s in answer["statuses"]} == {0}


async def test_one_clock_ends_enrolments_too(client: httpx.AsyncClient) -> None:
    """LMS.md: timeend ends access. Advancing the simulated clock past it ends it, and the
    learner is no longer tracked by completion."""
    [ada] = await learners(client, "ada")
    await enrol(client, [ada], timeend=T0 + DAY)
    assert len(await ws(client, "core_enrol_get_users_courses", {"userid": ada})) == 1
    await admin(client, "/_sim/clock", {"days": 2})
    assert await ws(client, "core_enrol_get_users_courses", {"userid": ada}) == []
    assert (await status(client, ada))["errorcode"] == "usernotenroled"


async def test_sim_completion_endpoints_refuse_what_they_cannot_do(
    client: httpx.AsyncClient,
) -> None:
    mark_path = "/_sim/completion/mark"

    def marking(lms: str, course: Any, user: Any, state: str = "complete") -> dict[str, Any]:
        return {"lms": lms, "course": course, "user": user, "state": state}

    refusals = [
        (mark_path, marking("moodle", BEN, 2, "done"), 400),  # not a state
        (mark_path, marking("blackboard", 1, 1), 400),
        (mark_path, marking("moodle", 999, 2), 404),
        (mark_path, marking("canvas", "sis_course_id:NOPE", "1"), 404),
        ("/_sim/completion", {"completion_rate": 2}, 400),  # a share: 0 to 1
        ("/_sim/completion", {"speed": 1}, 400),
        ("/_sim/clock", {"days": -1}, 400),  # the clock only moves forward
    ]
    for path, body, code in refusals:
        assert (await client.post(path, json=body)).status_code == code, (path, body)
    assert (await client.get("/_sim/clock")).json()["now"] == T0


# -- Canvas: course progress and grades ---------------------------------------------------------


@pytest.fixture
async def canvas(client: httpx.AsyncClient) -> httpx.AsyncClient:
    client.headers["Authorization"] = f"Bearer {SIM_CANVAS_TOKEN}"
    for sis, kind in (("E1", "StudentEnrollment"), ("E2", "TeacherEnrollment")):
        user = {"user[name]": f"User {sis}", "pseudonym[unique_id]": f"{sis.lower()}@example.com"}
        user["pseudonym[sis_user_id]"] = sis
        assert (await client.post("/api/v1/accounts/1/users", data=user)).is_success
        enrolment = {"enrollment[user_id]": f"sis_user_id:{sis}", "enrollment[type]": kind}
        enrolment["enrollment[enrollment_state]"] = "active"
        path = f"/api/v1/courses/{CANVAS_BEN}/enrollments"
        assert (await client.post(path, data=enrolment)).is_success
    return client


async def progress(canvas: httpx.AsyncClient, user: str) -> httpx.Response:
    return await canvas.get(f"/api/v1/courses/{CANVAS_BEN}/users/{user}/progress")


async def test_canvas_course_progress_follows_the_student(canvas: httpx.AsyncClient) -> None:
    """CourseProgress#to_json (read only): the count of module requirements and of those met,
    the next item's URL while the student is on their way through a sequential module, and
    the completion time in ISO 8601 UTC once all are met."""
    fresh = await progress(canvas, "sis_user_id:E1")
    assert fresh.status_code == 200
    assert fresh.json() == {
        "requirement_count": 2,
        "requirement_completed_count": 0,
        "next_requirement_url": None,
        "completed_at": None,
    }
    assert "X-Rate-Limit-Remaining" in fresh.headers
    await mark(canvas, "canvas", CANVAS_BEN, "sis_user_id:E1", "inprogress")
    midway = (await progress(canvas, "sis_user_id:E1")).json()
    assert midway["requirement_completed_count"] == 1
    assert midway["next_requirement_url"] == "http://canvas.test/courses/11/modules/items/9002"
    await admin(canvas, "/_sim/clock", {"seconds": 90})
    await mark(canvas, "canvas", CANVAS_BEN, "sis_user_id:E1", "complete")
    assert (await progress(canvas, "sis_user_id:E1")).json() == {
        "requirement_count": 2,
        "requirement_completed_count": 2,
        "next_requirement_url": None,
        "completed_at": "2027-01-15T08:01:30Z",
    }


async def test_canvas_progress_is_for_students_of_the_course(canvas: httpx.AsyncClient) -> None:
    """courses_controller#user_progress: a teacher gets CourseProgress's 400 error, a user
    outside the course Canvas's 404."""
    teacher = await progress(canvas, "sis_user_id:E2")
    assert teacher.status_code == 400
    assert teacher.json()["error"]["message"].startswith("no progress available because")
    outsider = {"user[name]": "Out Sider", "pseudonym[unique_id]": "out@example.com"}
    made = (await canvas.post("/api/v1/accounts/1/users", data=outsider)).json()
    stranger = await progress(canvas, str(made["id"]))
    assert stranger.status_code == 404
    assert stranger.json() == {"errors": [{"message": "The specified resource does not exist."}]}


async def test_canvas_student_enrollments_carry_grades(canvas: httpx.AsyncClient) -> None:
    """enrollment_json: ``grades`` for student enrollments only; the current score counts the
    graded items, the final score the ungraded as zero; no grading scheme, no letter grades."""
    await mark(canvas, "canvas", CANVAS_BEN, "sis_user_id:E1", "inprogress")
    listed = (await canvas.get(f"/api/v1/courses/{CANVAS_BEN}/enrollments")).json()
    by_type = {e["type"]: e for e in listed}
    assert "grades" not in by_type["TeacherEnrollment"]
    grades = by_type["StudentEnrollment"]["grades"]
    assert (grades["current_score"], grades["final_score"], grades["current_grade"]) == (
        100.0,
        50.0,
        None,
    )
    assert grades["html_url"].endswith(
        f"/courses/11/grades/{by_type['StudentEnrollment']['user_id']}"
    )
    assert by_type["StudentEnrollment"]["last_activity_at"] == "2027-01-15T08:00:00Z"
