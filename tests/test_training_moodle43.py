"""Completion read-back as a Moodle 4.3 site answered it (observed 2026-12 on a stock 4.3 site
with completion tracking, two activity criteria, aggregation "all"), replayed against the
simulator and through ``MoodleCompletion``.

The facts the simulator once had wrong are pinned here: a user id that does not exist is
``invaliduser`` ("Invalid user", a ``dml_missing_record_exception``), not ``invalidrecord``; a
deleted user's message is Moodle's bare string key ``error/userdeleted``; the site course does
not answer ``cannotviewreport`` (the site has completion on) but ``usernotenroled``. And the
facts it had right, checked on the site too: a suspended account is still read; an enrolment
that is suspended, ended or not started yet is ``usernotenroled``; the activities answer
lists every tracked activity for anyone, ``istrackeduser`` false for a non-learner. A token
whose user lacks ``report/completion:view`` gets ``cannotviewreport`` too, as for a course
without completion tracking: the reader says it can be either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.rules.model import Target as TargetConfig
from bridge.targets.completion import Ask
from bridge.targets.completion import Reading
from bridge.targets.completion import read_all
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_completion import MoodleCompletion
from bridge.targets.moodle_completion import parse_course_status
from bridge.targets.moodle_ws import deleted_by_moodle
from tests.test_lmssim_completion import BEN
from tests.test_lmssim_completion import DAY
from tests.test_lmssim_completion import LIBRARY
from tests.test_lmssim_completion import T0
from tests.test_lmssim_completion import enrol
from tests.test_lmssim_completion import learners
from tests.test_lmssim_completion import moodle_of
from tests.test_lmssim_completion import simulator
from tests.test_lmssim_completion import status
from tests.test_lmssim_completion import ws

SITE_COURSE = 1
ACTIVITIES = "core_completion_get_activities_completion_status"

# What the 4.3 site answered for a learner who met both criteria (4 s apart; its
# course_completions row: timestarted 1796651747, timecompleted 1796651751).
OBSERVED_COMPLETE = {
    "completionstatus": {
        "completed": True,
        "aggregation": 1,
        "completions": [
            {
                "type": 4,
                "title": "Activity completion",
                "status": "Yes",
                "complete": True,
                "timecompleted": 1796651747,
                "details": {
                    "type": "Activity completion",
                    "criteria": '<a href="http://127.0.0.1:8088/mod/page/view.php?id=3">'
                    "BEN-2026: read</a>",
                    "requirement": "Viewing the page",
                    "status": "",
                },
            },
            {
                "type": 4,
                "title": "Activity completion",
                "status": "Yes",
                "complete": True,
                "timecompleted": 1796651751,
                "details": {
                    "type": "Activity completion",
                    "criteria": '<a href="http://127.0.0.1:8088/mod/page/view.php?id=4">'
                    "BEN-2026: acknowledge</a>",
                    "requirement": "Marking yourself complete",
                    "status": "",
                },
            },
        ],
    },
    "warnings": [],
}


@pytest.fixture
def app() -> Starlette:
    return simulator()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as client:
        yield client


def error(answer: Any) -> tuple[str, str, str]:
    return answer["exception"], answer["errorcode"], answer["message"]


def test_the_observed_answer_reads_as_the_sites_own_completion_row() -> None:
    """Started at the first criterion met, completed at the last: the times Moodle keeps in
    ``course_completions`` but no web service returns."""
    assert parse_course_status(OBSERVED_COMPLETE) == Reading(
        "complete",
        datetime.fromtimestamp(1796651747, UTC),
        datetime.fromtimestamp(1796651751, UTC),
    )


async def test_a_missing_user_is_invaliduser_and_a_deleted_one_error_userdeleted(
    client: httpx.AsyncClient,
) -> None:
    [ada] = await learners(client, "ada")
    await enrol(client, [ada])
    await ws(client, "core_user_delete_users", {"userids": [ada]})
    for function in ("core_completion_get_course_completion_status", ACTIVITIES):
        missing = await ws(client, function, {"courseid": BEN, "userid": 99999})
        assert error(missing) == ("dml_missing_record_exception", "invaliduser", "Invalid user")
        deleted = await ws(client, function, {"courseid": BEN, "userid": ada})
        assert error(deleted) == ("moodle_exception", "userdeleted", "error/userdeleted")


async def test_the_site_course_asks_the_site_which_has_completion_on(
    client: httpx.AsyncClient,
) -> None:
    [ada] = await learners(client, "ada")
    assert error(await status(client, ada, course=SITE_COURSE)) == (
        "moodle_exception",
        "usernotenroled",
        "User is not enrolled in this course",
    )
    answer = await ws(client, ACTIVITIES, {"courseid": SITE_COURSE, "userid": ada})
    assert answer == {"statuses": [], "warnings": []}


async def test_a_suspended_account_is_read_an_inactive_enrolment_is_not(
    client: httpx.AsyncClient,
) -> None:
    held, suspended, ended, future = await learners(client, "ada", "bob", "cyd", "dee")
    await enrol(client, [held])
    await enrol(client, [suspended], suspend=1)
    await enrol(client, [ended], timeend=T0 - 3600)
    await enrol(client, [future], timestart=T0 + DAY)
    await ws(client, "core_user_update_users", {"users": [{"id": held, "suspended": 1}]})

    assert (await status(client, held))["completionstatus"]["completed"] is False
    for userid in (suspended, ended, future):
        assert (await status(client, userid))["errorcode"] == "usernotenroled"
        answer = await ws(client, ACTIVITIES, {"courseid": BEN, "userid": userid})
        assert {s["istrackeduser"] for s in answer["statuses"]} == {False}


async def test_the_reader_tells_each_person_what_moodle_said(app: Starlette) -> None:
    """Through ``MoodleCompletion``: one person complete, and Moodle's errors per person —
    course without completion tracking, not enrolled, no such user, deleted user."""
    config = TargetConfig("moodle", "moodle", "http://lms.test")
    target = MoodleTarget(config, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app))
    site = moodle_of(app)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lms.test") as client:
            done, outsider, gone = await learners(client, "ada", "bob", "cyd")
            await enrol(client, [done, gone])
            await ws(client, "core_user_delete_users", {"userids": [gone]})
        site.completion.mark(BEN, done, "complete", at=T0)
        library = site.courses[LIBRARY].idnumber
        asks = [
            Ask("p1", str(done), None, "BEN-2026"),
            Ask("p2", str(done), None, library),
            Ask("p3", str(outsider), None, "BEN-2026"),
            Ask("p4", "99999", None, "BEN-2026"),
            Ask("p5", str(gone), None, "BEN-2026"),
        ]
        readings = await read_all(MoodleCompletion(target), asks, concurrency=2)
    finally:
        await target.aclose()
    at = datetime.fromtimestamp(T0, UTC)
    assert readings[0] == Reading("complete", at, at)
    function = "core_completion_get_course_completion_status"
    assert [r.error for r in readings[1:]] == [
        f"{function}: cannotviewreport: You cannot view this report: completion tracking is "
        "off on the course, or the token's user lacks the capability report/completion:view",
        f"{function}: usernotenroled: User is not enrolled in this course",
        f"{function}: invaliduser: Invalid user",
        f"{function}: userdeleted: error/userdeleted",
    ]


# What the 4.3 site answered by id for an account deleted with core_user_delete_users: the row
# delete_user() keeps (username <email>.<time>, email the MD5 of it, no idnumber).
OBSERVED_DELETED = {
    "id": 11,
    "username": "probe712@example.com.1796651769",
    "email": "bbc253738bc3003ceffbb809c53efbc2",
    "suspended": False,
}


async def test_by_id_moodle_answers_a_deleted_account_which_the_bridge_tells_apart(
    client: httpx.AsyncClient,
) -> None:
    """core_user_get_users_by_field by id answers deleted accounts (by username or email it
    cannot find them: both are rewritten). The target, the batch path and reconcile drop them
    with ``deleted_by_moodle``, so a deleted account is missing, never "changed"."""
    assert deleted_by_moodle(OBSERVED_DELETED)
    assert not deleted_by_moodle({**OBSERVED_DELETED, "email": "probe712@example.com"})
    assert not deleted_by_moodle({"id": 3, "username": "ada", "email": "0" * 32})  # no stamp
    ada, bob = await learners(client, "ada", "bob")
    await ws(client, "core_user_delete_users", {"userids": [ada]})
    found = await ws(client, "core_user_get_users_by_field", {"field": "id", "values": [ada, bob]})
    assert [u["id"] for u in found] == [ada, bob]
    gone = found[0]
    assert deleted_by_moodle(gone) and "idnumber" not in gone
    assert gone["username"].startswith("ada@example.com.")
    assert not deleted_by_moodle(found[1])
    by_name = {"field": "username", "values": ["ada"]}
    assert await ws(client, "core_user_get_users_by_field", by_name) == []
