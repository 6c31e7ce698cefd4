"""``bridge training``: the guide's question — who must take the benefits course, who is
enrolled, who started, completed, and who is overdue against the due date the bridge keeps.

End to end on both databases: people provisioned over SCIM with the shipped rules, enrolled by
the relay into the Moodle simulator (the due date kept from the confirmed enrolment, P30D),
learners moved with the simulator's completion API, then ``bridge training --refresh`` reads
``core_completion_get_course_completion_status`` back over HTTP. The Moodle and Canvas answer
parsers are checked on the shapes the simulator and the LMSs' own sources document.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_CANVAS_TOKEN
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.lmssim.clock import SimClock
from bridge.lmssim.moodle import MoodleSite
from bridge.provision import Provisioner
from bridge.provision.training import TrainingRow
from bridge.provision.training import build_rows
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.model import Target as TargetConfig
from bridge.schemas import Catalog
from bridge.store.engine import Database
from bridge.store.training import Person
from bridge.store.training import Status
from bridge.targets.canvas import CanvasTarget
from bridge.targets.canvas_completion import parse_progress
from bridge.targets.completion import Ask
from bridge.targets.completion import Reading
from bridge.targets.completion import read_all
from bridge.targets.completion import reader_for
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_completion import first_activity_done
from bridge.targets.moodle_completion import parse_course_status
from tests.conftest import NOW
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.pilots import uncapped

BEN, BEN_MGR = 2, 3  # the simulator's seeded Moodle course ids of BEN-2026, BEN-2026-MGR
AS_OF = "2026-12-10"  # the first wave's due date (2026-12-01) has passed, the second's not
LATER = NOW + timedelta(days=20)  # the second wave is enrolled then: due 2026-12-21
T = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp())


# -- pure: the LMS answers ------------------------------------------------------------------------


def criterion(timecompleted: int | None) -> dict[str, Any]:
    return {"type": 4, "complete": timecompleted is not None, "timecompleted": timecompleted}


def test_moodle_course_status_derives_start_and_completion_from_the_criteria() -> None:
    """get_course_completion_status has no course-level times: started is the first criterion
    met, completed the last (completion/classes/external.php)."""

    def answer(completed: bool, *times: int | None) -> dict[str, Any]:
        rows = [criterion(t) for t in times]
        return {"completionstatus": {"completed": completed, "completions": rows}}

    assert parse_course_status(answer(False, None, None)) == Reading("not_started")
    assert parse_course_status(answer(False, T, None)) == Reading(
        "in_progress", datetime.fromtimestamp(T, UTC)
    )
    assert parse_course_status(answer(True, T + 60, T)) == Reading(
        "complete", datetime.fromtimestamp(T, UTC), datetime.fromtimestamp(T + 60, UTC)
    )
    broken = parse_course_status({"exception": "x"})
    assert broken.state is None and broken.error is not None


def test_moodle_course_completed_by_any_criterion_completes_at_the_first() -> None:
    """``aggregation`` 2 (COMPLETION_AGGREGATION_ANY): the first criterion met completed it."""
    rows = [criterion(T + 60), criterion(T)]
    answer = {"completionstatus": {"completed": True, "aggregation": 2, "completions": rows}}
    first = datetime.fromtimestamp(T, UTC)
    assert parse_course_status(answer) == Reading("complete", first, first)
    bare = {"completionstatus": {"completed": True, "aggregation": 1, "completions": []}}
    assert parse_course_status(bare) == Reading("complete")


def test_canvas_progress_completed_at_and_requirements_met() -> None:
    """CourseProgress#to_json: completed_at set → complete; requirement_completed_count > 0 →
    started; Canvas has no start time."""
    base = {"requirement_count": 2, "next_requirement_url": None, "completed_at": None}
    assert parse_progress({**base, "requirement_completed_count": 0}) == Reading("not_started")
    assert parse_progress({**base, "requirement_completed_count": 1}) == Reading("in_progress")
    done = {**base, "requirement_completed_count": 2, "completed_at": "2026-11-20T12:00:00Z"}
    assert parse_progress(done) == Reading("complete", None, datetime.fromtimestamp(T, UTC))
    assert parse_progress({"error": {"message": "no progress"}}).error is not None


def test_moodle_activities_status_tells_a_start_before_any_criterion() -> None:
    """An activity complete outside the criteria (or before the first is met) is a start."""
    statuses = [
        {"cmid": 1, "state": 0, "timecompleted": 0},
        {"cmid": 2, "state": 1, "timecompleted": T},
    ]
    assert first_activity_done({"statuses": statuses, "warnings": []}) == T
    assert first_activity_done({"statuses": statuses[:1], "warnings": []}) is None
    with pytest.raises(ValueError, match="unexpected answer"):
        first_activity_done(None)


def row_of(due: str | None, enrolled: bool, state: str | None) -> TrainingRow:
    """One person-course joined as on 2026-12-01, from plain data."""
    assignment = {"status": "active", "kind": "enrolment", "ref": "BEN-2026", "rule": "r"}
    held = {**assignment, "at": "2026-11-01T09:00:00+00:00", **({"due": due} if due else {})}
    confirmed = [("moodle", "p1", "7", {"assignments": {"course:BEN-2026": held}})]
    read_at = datetime(2026, 11, 30, tzinfo=UTC)
    stored = {}
    if state is not None:
        status = Status("moodle", "p1", "BEN-2026", state, None, None, read_at)
        stored[status.key] = status
    (row,) = build_rows(
        [("moodle", "p1", {"assignments": {"course:BEN-2026": assignment}})],
        confirmed if enrolled else [],
        stored,
        {"p1": Person("p1", "ada@example.com", "E1", {})},
        date(2026, 12, 1),
    )
    return row


def test_overdue_is_a_due_date_passed_without_completion_or_no_enrolment_at_all() -> None:
    assert row_of("2026-11-30", True, "in_progress").overdue
    assert not row_of("2026-12-01", True, "in_progress").overdue  # due today: not yet
    assert not row_of("2026-11-30", True, "complete").overdue
    assert row_of("2026-11-30", True, None).status == "not_read"
    assert row_of("2026-11-30", True, None).overdue  # not read is not complete
    assert not row_of(None, True, "not_started").overdue  # no due: never overdue
    never = row_of(None, False, "complete")  # a reading of an enrolment no longer held
    assert (never.status, never.overdue, never.read_at) == ("not_enrolled", True, None)


async def test_canvas_progress_is_read_through_the_canvas_target() -> None:
    """CanvasCompletion reads …/users/sis_user_id:E/progress from the simulator: complete,
    started, not started; a teacher (400) and a stranger (404) are per-person errors."""
    simulator = create_simulator(Knobs(seed=3), clock=SimClock.frozen(T))
    config = TargetConfig("canvas", "canvas", "http://lms.test", options={"account_id": 1})
    target = CanvasTarget(config, SIM_CANVAS_TOKEN, transport=httpx.ASGITransport(app=simulator))
    kinds = {"E1": "StudentEnrollment", "E2": "StudentEnrollment", "E3": "StudentEnrollment"}
    kinds["E4"] = "TeacherEnrollment"
    for sis_id, kind in [*kinds.items(), ("E5", None)]:
        user = {"user[name]": sis_id, "pseudonym[unique_id]": f"{sis_id.lower()}@example.com"}
        user["pseudonym[sis_user_id]"] = sis_id
        assert (await target.client.post("/api/v1/accounts/1/users", data=user)).is_success
        if kind is not None:
            enrolment = {"enrollment[user_id]": f"sis_user_id:{sis_id}", "enrollment[type]": kind}
            path = "/api/v1/courses/sis_course_id:BEN-2026/enrollments"
            assert (await target.client.post(path, data=enrolment)).is_success
    site = simulator.state.canvas
    course = site.find_course("sis_course_id:BEN-2026").id
    for sis_id, state in (("E1", "complete"), ("E2", "inprogress")):
        site.completion.mark(course, site.find_user(f"sis_user_id:{sis_id}").id, state, at=T)
    reader = reader_for(target)
    assert reader is not None
    asks = [Ask(f"p{n}", None, f"E{n}", "BEN-2026") for n in range(1, 6)]
    readings = await read_all(reader, asks, concurrency=2)
    await target.aclose()
    assert [r.state for r in readings] == ["complete", "in_progress", "not_started", None, None]
    assert readings[0].completed_at == datetime.fromtimestamp(T, UTC)
    assert readings[3].error is not None and readings[3].error.startswith("Canvas 400")
    assert readings[4].error is not None and readings[4].error.startswith("Canvas 404")


# -- end to end through SCIM, the relay, the simulator and the CLI -------------------------------


@pytest.fixture
def rules_dir(tmp_path: Path, simulator_url: tuple[str, Starlette]) -> Path:
    """The shipped rules pointed at the simulator, uncapped, and in scope beyond Claims (so
    that departments can be compared)."""
    rules = uncapped(shipped_rules(tmp_path, simulator_url[0]))
    path = rules / "benefits-2026.yaml"
    text = path.read_text()
    assert 'department eq "Claims" and ' in text
    path.write_text(text.replace('department eq "Claims" and ', ""))
    return rules


class Pilot:
    """The bridge and the simulator: SCIM writes at the tests' ``NOW``, relay at its clock."""

    def __init__(
        self, db: Database, catalog: Catalog, book: RuleBook, simulator: Starlette, scim: Any
    ) -> None:
        self.db, self.catalog, self.book, self.simulator, self.scim = (
            db,
            catalog,
            book,
            simulator,
            scim,
        )

    async def hire(self, number: int, codes: list[str], department: str = "Claims") -> str:
        answer = await self.scim.post(
            "/Users", json=employee(number, codes=codes, department=department)
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def deliver(self, at: datetime) -> None:
        ruleset = self.book.current()
        assert ruleset is not None
        target = MoodleTarget(
            ruleset.targets["moodle"],
            SIM_MOODLE_TOKEN,
            transport=httpx.ASGITransport(app=self.simulator),
        )
        relay = Relay(
            self.db,
            {"moodle": target},
            clock=lambda: at,
            policy=RetryPolicy(base=30, cap=60, jitter=0, max_attempts=1),
        )
        for _ in range(50):
            if not await relay.run_once():
                break
        await target.aclose()

    def moodle_id(self, number: int) -> int:
        site: MoodleSite = self.simulator.state.moodle
        return next(u.id for u in site.users.values() if u.username == f"emp{number}@example.com")

    def mark(self, number: int, course: int, state: str) -> None:
        self.simulator.state.moodle.completion.mark(course, self.moodle_id(number), state, at=T)


@pytest.fixture
async def pilot(
    db: Database,
    catalog: Catalog,
    book: RuleBook,
    ruled: Provisioner,
    simulator_url: tuple[str, Starlette],
    scim: httpx.AsyncClient,
) -> AsyncIterator[Pilot]:
    """Five people as the guide's pilot has them, enrolled in two waves and partly trained:

    1 Claims, complete · 2 Claims, in progress, overdue · 3 Claims manager: BEN-2026 not
    started (overdue), BEN-2026-MGR complete · 4 Payroll, second wave, not started, not yet
    due · 5 Payroll, refused by Moodle (another account holds the email): never enrolled.
    """
    world = Pilot(db, catalog, book, simulator_url[1], scim)
    ben = ["BEN_CHOICE_2026"]
    for number in (1, 2):
        await world.hire(number, ben)
    await world.hire(3, [*ben, "MANAGER"])
    await world.deliver(NOW)
    simulator_url[1].state.moodle.add_user(
        "old.account5", email="emp5@example.com", firstname="Old", lastname="X"
    )
    await world.hire(4, ben, department="Payroll")
    await world.hire(5, ben, department="Payroll")
    await world.deliver(LATER)
    world.mark(1, BEN, "complete")
    world.mark(2, BEN, "inprogress")
    world.mark(3, BEN_MGR, "complete")
    yield world


def training(database_url: str, rules_dir: Path, *args: str) -> Any:
    return run_cli(
        database_url, rules_dir, "training", *args, "--as-of", AS_OF, MOODLE_TOKEN=SIM_MOODLE_TOKEN
    )


def people(document: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    return [(p["externalId"], p["course"], p["status"], p["overdue"]) for p in document["people"]]


def test_training_refresh_reads_completion_and_answers_the_guide(
    pilot: Pilot, database_url: str, rules_dir: Path
) -> None:
    never = training(database_url, rules_dir, "--json")
    assert never.exit_code == 0, never.output
    unread = json.loads(never.output)
    assert unread["read"] == {"oldest": None, "newest": None, "refreshed": None}
    assert unread["totals"]["not_read"] == 5 and unread["totals"]["enrolled"] == 5

    result = training(database_url, rules_dir, "--refresh", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["format"] == "bridge-training/1"
    assert document["as_of"] == AS_OF
    assert document["read"]["refreshed"] == {"read": 5, "failed": 0}
    assert people(document) == [
        ("E00001", "BEN-2026", "complete", False),
        ("E00002", "BEN-2026", "in_progress", True),
        ("E00003", "BEN-2026", "not_started", True),
        ("E00004", "BEN-2026", "not_started", False),
        ("E00005", "BEN-2026", "not_enrolled", True),
        ("E00003", "BEN-2026-MGR", "complete", False),
    ]
    assert document["totals"] == {
        "desired": 6,
        "enrolled": 5,
        "not_enrolled": 1,
        "not_read": 0,
        "error": 0,
        "not_started": 2,
        "in_progress": 1,
        "complete": 2,
        "started": 3,
        "overdue": 3,
    }
    assert document["courses"]["BEN-2026-MGR"]["complete"] == 1
    first, second = document["people"][0], document["people"][3]
    assert (first["due"], second["due"]) == ("2026-12-01", "2026-12-21")
    assert first["completed_at"] == datetime.fromtimestamp(T, UTC).isoformat()
    assert document["people"][1]["started_at"] == datetime.fromtimestamp(T, UTC).isoformat()
    assert document["people"][4]["enrolled"] is False and document["people"][4]["desired"]

    # Stored: without --refresh the same answer, with when it was read.
    again = json.loads(training(database_url, rules_dir, "--json").output)
    assert people(again) == people(document)
    assert again["read"]["oldest"] is not None and again["read"]["refreshed"] is None

    grouped = json.loads(training(database_url, rules_dir, "--by", "department", "--json").output)
    assert grouped["by"] == "department"
    claims, payroll = grouped["groups"]["Claims"], grouped["groups"]["Payroll"]
    assert (claims["desired"], claims["complete"], claims["overdue"]) == (4, 2, 2)
    assert (payroll["desired"], payroll["not_enrolled"], payroll["overdue"]) == (2, 1, 1)

    by_role = json.loads(training(database_url, rules_dir, "--by", "role_code", "--json").output)
    assert by_role["groups"]["MANAGER"]["desired"] == 2
    assert by_role["groups"]["BEN_CHOICE_2026"]["desired"] == 6

    overdue = json.loads(training(database_url, rules_dir, "--overdue", "--json").output)
    assert [(p["externalId"], p["status"]) for p in overdue["people"]] == [
        ("E00002", "in_progress"),
        ("E00003", "not_started"),
        ("E00005", "not_enrolled"),
    ]

    mgr = json.loads(training(database_url, rules_dir, "--course", "BEN-2026-MGR", "--json").output)
    assert people(mgr) == [("E00003", "BEN-2026-MGR", "complete", False)]

    table = training(database_url, rules_dir)
    assert table.exit_code == 0
    assert (
        "5 people must take 6 course(s) between them; 5 enrolled, 3 started, 2 complete, "
        "3 overdue (1 not enrolled), 0 not readable." in table.output
    )
    assert "Completion as read from the LMS" in table.output
    assert "emp5@example.com" in table.output and "not enrolled" in table.output


def test_training_csv_is_one_line_per_person_and_course(
    pilot: Pilot, database_url: str, rules_dir: Path
) -> None:
    result = training(database_url, rules_dir, "--refresh", "--csv", "--overdue")
    assert result.exit_code == 0, result.output
    lines = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["externalId"], r["course"], r["status"], r["due"]) for r in lines] == [
        ("E00002", "BEN-2026", "in_progress", "2026-12-01"),
        ("E00003", "BEN-2026", "not_started", "2026-12-01"),
        ("E00005", "BEN-2026", "not_enrolled", ""),
    ]
    assert lines[1]["role_codes"] == "BEN_CHOICE_2026;MANAGER"
    assert {r["overdue"] for r in lines} == {"True"}


def test_a_course_without_completion_tracking_is_a_read_error_per_person(
    pilot: Pilot, database_url: str, rules_dir: Path
) -> None:
    """Moodle answers ``cannotviewreport`` when completion is off on the course: each person
    of that course shows it, the other course is read, and the exit code is 1."""
    pilot.simulator.state.moodle.courses[BEN].enablecompletion = False
    result = training(database_url, rules_dir, "--refresh", "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.output)
    assert document["read"]["refreshed"] == {"read": 1, "failed": 4}
    errors = [(p["externalId"], p["error"]) for p in document["people"] if p["status"] == "error"]
    assert [e[0] for e in errors] == ["E00001", "E00002", "E00003", "E00004"]
    assert all("cannotviewreport" in str(error) for _, error in errors)
    assert document["totals"]["error"] == 4
    # Stored with the error: the report without --refresh says so too, and still exits 1.
    stored = training(database_url, rules_dir)
    assert stored.exit_code == 1
    assert "cannotviewreport" in stored.output
    # The other course alone reads clean.
    assert training(database_url, rules_dir, "--course", "BEN-2026-MGR").exit_code == 0


@pytest.mark.parametrize(
    "missing",
    [
        ("core_completion_get_course_completion_status",),
        (
            "core_completion_get_activities_completion_status",
            "core_course_get_courses_by_field",
        ),
    ],
)
def test_a_function_outside_the_token_service_is_named_with_where_to_add_it(
    pilot: Pilot, database_url: str, rules_dir: Path, missing: tuple[str, ...]
) -> None:
    """Reading needs both completion functions and the course lookup in the token's service
    (without one, Moodle answers ``accessexception``): the refresh asks the site once and
    refuses before reading anything, naming each missing function and where an admin adds
    it; the readings already stored are kept, not overwritten with the refusal."""
    first = training(database_url, rules_dir, "--refresh", "--json")
    assert first.exit_code == 0, first.output
    before = people(json.loads(first.output))
    site = pilot.simulator.state.moodle
    for function in missing:
        site.service_functions.discard(function)
    result = training(database_url, rules_dir, "--refresh", "--json")
    assert result.exit_code == 1
    error = " ".join(result.output.split())
    assert "target moodle: bridge training --refresh needs web-service functions" in error
    assert all(function in error for function in missing)
    assert "Site administration → Server → Web services → External services" in error
    kept = training(database_url, rules_dir, "--json")
    assert kept.exit_code == 0, kept.output
    assert people(json.loads(kept.output)) == before


def test_json_and_csv_together_is_a_usage_error(database_url: str, tmp_path: Path) -> None:
    result = run_cli(database_url, tmp_path, "training", "--json", "--csv")
    assert result.exit_code == 2
