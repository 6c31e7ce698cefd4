"""The integration guide's sequence, end to end, on both databases: one test, one clock.

hris-lms-guide.txt: start with a 200-person pilot in one department, enrol everyone holding
BEN_CHOICE_2026 in the benefits course before open enrolment, keep the LMS in step nightly,
and know who is overdue on the due date. Here, with the shipped rules and their shipped
schedule (hourly deltas in the open-enrolment window, reconcile at 02:00 and completion read
back at 03:00, Europe/Berlin), against the Moodle simulator over HTTP:

1. 260 Claims employees and 20 Payroll employees arrive over SCIM (the IdP's push);
2. the first hourly delta in the window draws the pilot: 200 of the 260, none from Payroll;
3. the relay delivers them to Moodle in batches: accounts, enrolments, cohort memberships;
4. learners progress in Moodle; an LMS admin unenrols one learner and suspends another;
5. the nightly reconcile finds exactly those two hand changes and re-asserts them through
   the outbox; the relay repairs Moodle; the next reconcile finds nothing;
6. the nightly completion read brings everyone's progress back;
7. ``bridge training`` on the due date: nobody overdue yet; the day after: exactly the
   learners who have not completed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from collections.abc import Mapping
from datetime import UTC
from datetime import date
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from starlette.applications import Starlette

from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.moodle import MoodleSite
from bridge.provision import Provisioner
from bridge.provision.events import EventApplier
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.feeds import Feed
from bridge.scheduler import Scheduler
from bridge.scheduler import Work
from bridge.scheduler import job_key
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.scim.hris import HrisIntake
from bridge.store import journal
from bridge.store import runs
from bridge.store import schedule_runs
from bridge.store.engine import Database
from bridge.targets.moodle import MoodleTarget
from tests.conftest import NOW
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.test_sync import export
from tests.test_sync import row
from tests.test_sync import sync
from tests.test_webhooks import standard_headers

BERLIN = ZoneInfo("Europe/Berlin")
RULES = "benefits-2026"
CLAIMS, PAYROLL, PILOT = 260, 20, 200


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class World:
    """The bridge (SCIM app, scheduler, relay) and the Moodle simulator, on one clock."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        settings: Settings,
        rules: Path,
        simulator: Starlette,
        clock: Clock,
    ) -> None:
        self.db, self.simulator, self.clock = db, simulator, clock
        self.book = RuleBook(rules, lambda d: check_directory(d, catalog))
        self.book.load()
        self.provisioner = Provisioner(db, catalog, rules=self.book.current, clock=clock)
        self.app = create_app(
            self.provisioner, catalog, settings, Authenticator(db, env_token=TOKEN)
        )
        work = Work(
            db,
            self.provisioner.store,
            catalog,
            {"MOODLE_TOKEN": SIM_MOODLE_TOKEN},
            clock,
        )
        self.scheduler = Scheduler(db, self.book.current, work.runners(), clock=clock)

    @property
    def site(self) -> MoodleSite:
        return self.simulator.state.moodle  # type: ignore[no-any-return]

    async def hire(self, numbers: range, department: str) -> None:
        async with app_client(self.app) as client:
            for number in numbers:
                body = employee(number, codes=["BEN_CHOICE_2026"], department=department)
                answer = await client.post("/Users", json=body)
                assert answer.status_code == 201, answer.text

    async def tick(self) -> dict[str, str]:
        """One scheduler pass: the jobs it ran → their state."""
        return {r["job_key"]: r["state"] for r in await self.scheduler.run_once()}

    async def deliver(self) -> int:
        """Relay until nothing is due; how many LMS calls it took."""
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
            clock=self.clock,
            batch=500,
            policy=RetryPolicy(base=30, cap=60, jitter=0, max_attempts=1),
        )
        before = sum(self.site.snapshot()["calls"].values())
        try:
            while await relay.run_once():
                pass
        finally:
            await target.aclose()
        return sum(self.site.snapshot()["calls"].values()) - before

    def summary(self, job: str) -> dict[str, Any]:
        with self.db.read() as conn:
            last = schedule_runs.last_of(conn, job_key(RULES, job))
        assert last is not None and last["state"] == "done", last
        return dict(last["summary"])

    def learners(self, course: str) -> dict[str, bool]:
        """userName → enrolment active, for one course of the simulator."""
        site = self.site
        found = next(c for c in site.courses.values() if c.shortname == course)
        instance = site.instance(found.id, "manual")
        assert instance is not None
        names = {u.id: u.username for u in site.users.values() if not u.deleted}
        return {
            names[userid]: site.is_active(enrolment)
            for (instance_id, userid), enrolment in site.enrolments.items()
            if instance_id == instance.id and userid in names
        }


def training(database_url: str, rules: Path, *args: str) -> Any:
    result = run_cli(database_url, rules, "training", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_guides_pilot_from_scim_to_the_overdue_report(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Starlette],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)  # the shipped pilot (200, Claims) and schedule
    clock = Clock(berlin(2026, 11, 2, 8, 30))
    world = World(db, catalog, settings, rules, simulator, clock)
    run: Callable[[Any], Any] = asyncio.run

    # The bridge starts before the window's first delta of the day: nothing missed.
    assert run(world.tick()) == {}

    # 1. The IdP pushes the department, and another one outside the pilot's scope.
    run(world.hire(range(1, CLAIMS + 1), "Claims"))
    run(world.hire(range(CLAIMS + 1, CLAIMS + PAYROLL + 1), "Payroll"))

    # 2. 09:00: the hourly delta draws the pilot.
    clock.now = berlin(2026, 11, 2, 9, 1)
    assert run(world.tick()) == {job_key(RULES, "deltas"): "done"}
    drawn = world.summary("deltas")
    assert drawn["status"] == "applied"
    assert drawn["counts"]["create_account"] == PILOT
    assert drawn["counts"]["enrol"] == PILOT

    # 3. The relay delivers, in batches.
    calls = run(world.deliver())
    enrolled = world.learners("BEN-2026")
    assert len(enrolled) == PILOT and all(enrolled.values())
    assert all(name.startswith("emp") for name in enrolled)
    payroll = {f"emp{n}@example.com" for n in range(CLAIMS + 1, CLAIMS + PAYROLL + 1)}
    assert not payroll & set(enrolled)
    assert calls < PILOT, f"{calls} LMS calls for {PILOT} people: not batched"

    # 4. Ten days later: learners progress; an admin changes two things by hand.
    site = world.site
    ben = next(c for c in site.courses.values() if c.shortname == "BEN-2026")
    people = sorted(enrolled)
    complete, started = people[:120], people[120:160]
    at = int(berlin(2026, 11, 12, 12).timestamp())
    for name in complete:
        site.completion.mark(ben.id, site.user_named(name).id, "complete", at=at)
    for name in started:
        site.completion.mark(ben.id, site.user_named(name).id, "inprogress", at=at)
    unenrolled, suspended = people[170], people[171]
    manual = site.instance(ben.id, "manual")
    assert manual is not None
    site.unenrol(manual, site.user_named(unenrolled).id)
    site.user_named(suspended).suspended = True

    # 5. 02:00: the nightly reconcile finds exactly the two changes and re-asserts them.
    clock.now = berlin(2026, 11, 13, 2, 30)
    ran = run(world.tick())
    assert ran[job_key(RULES, "reconcile")] == "done"
    reconciled = world.summary("reconcile")
    assert (reconciled["to_reassert"], reconciled["status"], reconciled["written"]) == (
        2,
        "applied",
        2,
    )
    run(world.deliver())
    assert world.learners("BEN-2026")[unenrolled] is True
    assert not site.user_named(suspended).suspended

    # 6. 03:00: completion read back for every enrolment the bridge made.
    clock.now = berlin(2026, 11, 13, 3, 30)
    ran = run(world.tick())
    assert ran[job_key(RULES, "training")] == "done"
    assert world.summary("training") == {"read": PILOT, "failed": 0}

    # The next night the LMS holds what the bridge confirmed: nothing to reassert.
    clock.now = berlin(2026, 11, 14, 2, 30)
    run(world.tick())
    assert world.summary("reconcile")["to_reassert"] == 0

    # 7. The overdue report. The first wave's due date is 30 days after its enrolment.
    report = training(database_url, rules, "--as-of", "2026-12-02")
    totals = report["totals"]
    assert (totals["desired"], totals["enrolled"], totals["complete"]) == (PILOT, PILOT, 120)
    assert totals["in_progress"] == 40 and totals["not_started"] == PILOT - 160
    due = {p["userName"]: p["due"] for p in report["people"]}
    assert due[people[0]] == "2026-12-02"
    assert totals["overdue"] == 0  # due today is not overdue yet
    late = training(database_url, rules, "--as-of", "2026-12-03", "--overdue")
    overdue = {p["userName"] for p in late["people"]}
    not_complete = set(people) - set(complete)
    # The learner unenrolled by hand and re-enrolled keeps the first due date: a repair
    # does not extend anyone's deadline.
    assert overdue == not_complete
    assert date.fromisoformat(due[unenrolled]) == date(2026, 12, 2)
    assert {p["status"] for p in late["people"]} == {"in_progress", "not_started"}


def test_the_guides_hr_feeds_hire_export_delta_termination(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Starlette],
) -> None:
    """The guide's hybrid cadence with the shipped feed and schedule: a hire arrives as a
    signed webhook, the nightly export brings the rest of the department, the open-enrolment
    hourly delta draws the pilot and the relay enrols them, and a termination webhook
    suspends the leaver's account — each step journalled with its cause."""
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    shutil.copy(ROOT / "rules" / "feeds.yaml", rules / "feeds.yaml")
    clock = Clock(berlin(2026, 11, 2, 8, 30))
    world = World(db, catalog, settings, rules, simulator, clock)
    run: Callable[[Any], Any] = asyncio.run
    assert run(world.tick()) == {}

    secret = "the workday feed's secret"
    env = {"HRIS_WEBHOOK_SECRET": secret}
    intake = HrisIntake(world.provisioner, settings, env, clock=lambda: NOW.timestamp())
    app = create_app(
        world.provisioner, catalog, settings, Authenticator(db, env_token=TOKEN), hris=intake
    )

    def feeds() -> Mapping[str, Feed]:
        ruleset = world.book.current()
        assert ruleset is not None
        return ruleset.feeds

    applier = EventApplier(world.provisioner, feeds, clock=clock)

    async def webhook(event_id: str, kind: str, when: str) -> None:
        payload = {
            "id": event_id,
            "event": kind,
            "timestamp": when,
            "data": {
                "externalId": "E9001",
                "email": "new.hire@example.com",
                "first_name": "New",
                "last_name": "Hire",
                "department": "Claims",
                "role_codes": ["BEN_CHOICE_2026"],
            },
        }
        body = json.dumps(payload).encode()
        headers = standard_headers(body, event_id, secret)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            answer = await client.post("/hris/v1/events/workday", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        assert await applier.drain() == 1

    # 1. A hire, pushed by the HRIS the moment it happens.
    run(webhook("wh_hire", "user.create", "2026-11-02T07:40:00Z"))

    # 2. The nightly export: the department as HR holds it, the hire included.
    rows = [row(n) for n in range(1, 6)]
    rows.append("E9001,new.hire@example.com,New,Hire,Clerk,Claims,Active,BEN_CHOICE_2026")
    path = export(tmp_path, "workday.csv", *rows)
    result, synced = sync(database_url, rules, path, "--feed", "workday")
    assert result.exit_code == 0, result.output
    assert synced["counts"]["create"] == 5 and synced["counts"]["rejected"] == 0

    # 3. 09:00, inside the open-enrolment window: the hourly delta draws the pilot.
    clock.now = berlin(2026, 11, 2, 9, 1)
    assert run(world.tick()) == {job_key(RULES, "deltas"): "done"}
    assert world.summary("deltas")["counts"]["enrol"] == 6
    run(world.deliver())
    enrolled = world.learners("BEN-2026")
    assert len(enrolled) == 6 and all(enrolled.values())
    assert enrolled["new.hire@example.com"] is True

    # 4. The termination, pushed by the HRIS: the leaver's account is suspended, never deleted.
    clock.now = berlin(2026, 11, 2, 15, 0)
    run(webhook("wh_leave", "user.terminate", "2026-11-02T14:00:00Z"))
    run(world.deliver())
    leaver = world.site.user_named("new.hire@example.com")
    assert leaver is not None and leaver.suspended and not leaver.deleted
    others = [world.site.user_named(f"person{n}@example.com") for n in range(1, 6)]
    assert all(u is not None and not u.suspended for u in others)

    # Every change says where it came from: the journal's writes, the delta's run.
    with db.read() as conn:
        actors = {entry.actor for entry in journal.read(conn)}
        drawn = runs.get(conn, world.summary("deltas")["run"])
    assert {"hris:workday", "sync:workday"} <= actors, actors
    assert drawn is not None and drawn["summary"]["actor"] == "scheduler"
