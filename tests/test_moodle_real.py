"""The guide's benefits pilot against a REAL Moodle site, checked by asking Moodle itself.

Opt-in: runs when ``BRIDGE_TEST_MOODLE_URL`` and ``BRIDGE_TEST_MOODLE_TOKEN`` name a Moodle 4.3
site and a web-service token whose service holds the bridge's functions
(``shared/moodle/ws_setup.php``) — prepared with ``php tests/moodle_site_setup.php
/path/to/moodle`` (courses BEN-2026 and BEN-2026-MGR, cohort BEN2026, profile fields ``title``
and ``roles``). CI has no Moodle: the test is skipped there.

The shipped rules (``rules/benefits-2026.yaml``, ``rules/targets.yaml``) drive a small pilot
through the real SCIM app and the relay; every check is an answer of Moodle's web services
(form-encoded POSTs to ``/webservice/rest/server.php``), never the bridge's own records. No web
service shows an enrolment's ``timeend``: when ``BRIDGE_TEST_MOODLE_DB_URL`` names the site's
database (PostgreSQL, tables prefixed ``BRIDGE_TEST_MOODLE_DB_PREFIX``, default ``mdl_``),
``mdl_user_enrolments.timeend`` is read there too — a ``due:`` must never end access (LMS.md).

The real site keeps its users between runs, so every userName, email and externalId carries a
run id. ``pytest -s`` prints what Moodle answered at each step.

The read-back is checked on the same site: ``bridge training --refresh`` reads the completion
a learner reached (activities marked complete through
``core_completion_override_activity_completion_status``, which the setup script adds to the
service for the tests alone), and ``bridge reconcile`` finds what was changed by hand through
the web services (an enrolment removed, one suspended, a cohort membership removed). With
``BRIDGE_TEST_MOODLE_DB_URL``, a read-back function is taken out of the token's service in the
site's database (and put back): preflight warns of it, ``bridge training --refresh`` names it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy import TextClause
from sqlalchemy import create_engine
from sqlalchemy import text

from bridge.cli.relay import build_relay
from bridge.cli.rules import check_rules
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.preflight import check_target
from bridge.provision.revert import Reverter
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.model import RuleSet
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import outbox
from bridge.store import runs
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Status
from bridge.targets.completion import Ask
from bridge.targets.completion import read_all
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_completion import MoodleCompletion
from bridge.targets.moodle_preflight import TRAINING
from bridge.targets.moodle_preflight import read_refusal
from bridge.targets.preflight import requirements
from tests.conftest import ENTERPRISE
from tests.conftest import HR
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import clean_database
from tests.conftest import patch_body
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.pilots import draw
from tests.pilots import planner_of

MOODLE_URL = os.environ.get("BRIDGE_TEST_MOODLE_URL", "").rstrip("/")
MOODLE_TOKEN = os.environ.get("BRIDGE_TEST_MOODLE_TOKEN", "")
MOODLE_DB_URL = os.environ.get("BRIDGE_TEST_MOODLE_DB_URL", "")
MOODLE_DB_PREFIX = os.environ.get("BRIDGE_TEST_MOODLE_DB_PREFIX", "mdl_")

pytestmark = pytest.mark.skipif(
    not (MOODLE_URL and MOODLE_TOKEN),
    reason="no real Moodle: set BRIDGE_TEST_MOODLE_URL and BRIDGE_TEST_MOODLE_TOKEN "
    "(a site prepared with tests/moodle_site_setup.php) to run it",
)

BENEFITS, MANAGER, EMPLOYEE = "BEN_CHOICE_2026", "MANAGER", "EMPLOYEE"
COURSE, MANAGER_COURSE, COHORT = "BEN-2026", "BEN-2026-MGR", "BEN2026"
COURSES = (COURSE, MANAGER_COURSE)
DRAIN_SECONDS = 180.0


# -- the pilot population ----------------------------------------------------------------------


def folded(value: str) -> str:
    """``józef`` → ``jozef``: what a stock Moodle takes as a username or an email (LMS.md)."""
    return unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")


@dataclass(frozen=True)
class Person:
    """One HR record of the pilot; names made unique per run by ``run``."""

    number: int
    given: str
    family: str
    codes: tuple[str, ...]
    run: str
    department: str = "Claims"
    work_email: bool = True
    title: str = "Claims Specialist"

    @property
    def user_name(self) -> str:
        return f"{self.given}.{self.family}.{self.run}@example.com".lower()

    @property
    def username(self) -> str:
        """The Moodle username the account must have: userName, lowercased, in ASCII."""
        return folded(self.user_name)

    @property
    def email(self) -> str:
        return folded(self.user_name)

    @property
    def external_id(self) -> str:
        return f"{self.run.upper()}-{self.number:02d}"

    @property
    def benefits(self) -> bool:
        return BENEFITS in self.codes and self.in_scope

    @property
    def manager(self) -> bool:
        return self.benefits and MANAGER in self.codes

    @property
    def in_scope(self) -> bool:
        return self.department == "Claims"

    @property
    def provisioned(self) -> bool:
        return self.in_scope and self.work_email

    def scim(self) -> dict[str, Any]:
        return {
            "schemas": [USER_SCHEMA, ENTERPRISE, HR],
            "userName": self.user_name,
            "externalId": self.external_id,
            "name": {"givenName": self.given, "familyName": self.family},
            "title": self.title,
            "emails": [{"value": self.email, "type": "work", "primary": True}]
            if self.work_email
            else [],
            ENTERPRISE: {"department": self.department, "employeeNumber": self.external_id},
            HR: {"roleCodes": list(self.codes), "employmentStatus": "active"},
        }


def pilot(run: str) -> list[Person]:
    """Eight people in Claims holding the benefits code (two managers, a unicode name, one
    without a work email) and one in Finance, outside the rules' scope."""
    ben = (BENEFITS, EMPLOYEE)
    lead = (BENEFITS, MANAGER, EMPLOYEE)
    return [
        Person(1, "Ann", "Lee", ben, run),
        Person(2, "Raj", "Patel", lead, run, title="Claims Team Lead"),
        Person(3, "Maria", "Silva", lead, run, title="Claims Manager"),
        Person(4, "Józef", "Nowak", ben, run),
        Person(5, "Tom", "Baker", ben, run),
        Person(6, "Kim", "Ho", ben, run),
        Person(7, "Lee", "Chan", ben, run, work_email=False),
        Person(8, "Ola", "Berg", ben, run),
        Person(9, "Sam", "Olsen", ben, run, department="Finance", title="Accountant"),
    ]


# -- Moodle, asked directly ------------------------------------------------------------------


class MoodleError(AssertionError):
    """Moodle answered an exception (HTTP 200 with ``exception``/``errorcode``)."""


@dataclass
class Site:
    """Read-only questions to the Moodle site, with the same token the bridge uses."""

    http: httpx.AsyncClient
    token: str = field(repr=False)  # never in a failure's traceback
    ids: dict[str, int] = field(default_factory=dict)

    async def call(self, function: str, **params: Any) -> Any:
        fields = {"wstoken": self.token, "wsfunction": function, "moodlewsrestformat": "json"}
        response = await self.http.post("/webservice/rest/server.php", data={**fields, **params})
        assert response.status_code == 200, f"{function}: HTTP {response.status_code}"
        answer = response.json()
        if isinstance(answer, dict) and "exception" in answer:
            raise MoodleError(f"{function}: {answer.get('errorcode')}: {answer.get('message')}")
        return answer

    async def user(self, field_: str, value: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.call(
            "core_user_get_users_by_field", field=field_, **{"values[0]": value}
        )
        return found

    async def course_id(self, idnumber: str) -> int:
        if idnumber not in self.ids:
            answer = await self.call(
                "core_course_get_courses_by_field", field="idnumber", value=idnumber
            )
            courses = answer["courses"]
            assert courses, f"the site has no course with idnumber {idnumber} (run the setup)"
            self.ids[idnumber] = int(courses[0]["id"])
        return self.ids[idnumber]

    async def enrolled(self, idnumber: str, *, only_active: bool) -> dict[str, dict[str, Any]]:
        """The course's participants by username (``onlyactive``: active enrolments only)."""
        options = {"options[0][name]": "onlyactive", "options[0][value]": "1"}
        users = await self.call(
            "core_enrol_get_enrolled_users",
            courseid=await self.course_id(idnumber),
            **(options if only_active else {}),
        )
        return {u["username"]: u for u in users}

    async def cohort_members(self, idnumber: str) -> set[int]:
        cohorts = await self.call("core_cohort_get_cohorts")
        found = [c for c in cohorts if c.get("idnumber") == idnumber]
        assert found, f"the site has no cohort with idnumber {idnumber} (run the setup)"
        answer = await self.call(
            "core_cohort_get_cohort_members", **{"cohortids[0]": found[0]["id"]}
        )
        return {int(i) for i in answer[0]["userids"]} if answer else set()


def enrolment_ends(run: str) -> dict[tuple[str, str], int] | None:
    """(username, course) → ``timeend`` of this run's enrolments, from the site's database
    (no web service shows it); None without ``BRIDGE_TEST_MOODLE_DB_URL``."""
    if not MOODLE_DB_URL:
        return None
    url = MOODLE_DB_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    p = MOODLE_DB_PREFIX
    query = text(
        f"SELECT u.username, c.idnumber, ue.timeend FROM {p}user_enrolments ue "  # noqa: S608 - a prefix from the test's environment
        f"JOIN {p}enrol e ON e.id = ue.enrolid JOIN {p}course c ON c.id = e.courseid "
        f"JOIN {p}user u ON u.id = ue.userid WHERE u.username LIKE :pattern"
    )
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query, {"pattern": f"%.{run}@example.com"}).all()
    finally:
        engine.dispose()
    return {(str(r.username), str(r.idnumber)): int(r.timeend) for r in rows}


# -- what Moodle shows of the pilot, and what it should show ---------------------------------


@dataclass
class Seen:
    """One person as Moodle shows them."""

    account: dict[str, Any] | None
    courses: dict[str, str] = field(default_factory=dict)  # idnumber → active | suspended
    in_cohort: bool = False
    by_idnumber: int = 0  # accounts holding the person's externalId as idnumber

    def line(self) -> str:
        if self.account is None:
            return f"no account (accounts with this idnumber: {self.by_idnumber})"
        a = self.account
        custom = {c.get("shortname"): c.get("value") for c in a.get("customfields", [])}
        courses = ", ".join(f"{c}:{s}" for c, s in sorted(self.courses.items())) or "-"
        return (
            f"id={a['id']} username={a['username']} idnumber={a.get('idnumber', '')} "
            f"auth={a.get('auth')} suspended={a.get('suspended')} "
            f"name={a.get('firstname')} {a.get('lastname')} email={a.get('email')} "
            f"department={a.get('department', '')} custom={custom} | courses {courses} | "
            f"cohort {COHORT}: {'member' if self.in_cohort else 'no'}"
        )


async def observe(site: Site, people: Iterable[Person]) -> dict[int, Seen]:
    """Every person's account, enrolments and cohort membership, as Moodle answers them."""
    everyone = {c: await site.enrolled(c, only_active=False) for c in COURSES}
    active = {c: await site.enrolled(c, only_active=True) for c in COURSES}
    members = await site.cohort_members(COHORT)
    seen: dict[int, Seen] = {}
    for person in people:
        found = await site.user("username", person.username)
        if not found and person.username != person.user_name:
            found = await site.user("username", person.user_name)
        account = found[0] if found else None
        state = Seen(account, by_idnumber=len(await site.user("idnumber", person.external_id)))
        if account is not None:
            name = account["username"]
            for course in COURSES:
                if name in active[course]:
                    state.courses[course] = "active"
                elif name in everyone[course]:
                    state.courses[course] = "suspended"
            state.in_cohort = int(account["id"]) in members
        seen[person.number] = state
    return seen


@dataclass
class Expected:
    """What the rules ask of Moodle for one person at one step."""

    account: bool
    suspended: bool = False
    courses: dict[str, str] = field(default_factory=dict)
    in_cohort: bool = False


def day_one(person: Person) -> Expected:
    if not person.provisioned:
        return Expected(account=False)
    courses = {COURSE: "active"} if person.benefits else {}
    if person.manager:
        courses[MANAGER_COURSE] = "active"
    return Expected(True, courses=courses, in_cohort=person.benefits)


def day_two_of(person: Person, *, removed: Person, terminated: Person) -> Expected:
    """Day 1, except: losing the code suspends the enrolments (progress kept) and leaves the
    cohort; a termination (out of scope) suspends the account and keeps its enrolments."""
    wanted = day_one(person)
    if person == removed:
        return Expected(True, courses={c: "suspended" for c in wanted.courses})
    if person == terminated:
        wanted.suspended = True
    return wanted


def mismatches(person: Person, seen: Seen, expected: Expected, auth: str | None) -> list[str]:
    """How Moodle's answer differs from what the rules ask (empty: it agrees)."""
    who = f"{person.given} {person.family} ({person.username})"
    account = seen.account
    if not expected.account:
        if account is not None or seen.by_idnumber:
            return [f"{who}: must have no account, Moodle has {seen.line()}"]
        return []
    if account is None:
        return [f"{who}: no account in Moodle (core_user_get_users_by_field username → [])"]
    wanted = {
        "username": person.username,
        "idnumber": person.external_id,
        "email": person.email,
        "firstname": person.given,
        "lastname": person.family,
        "department": person.department,
    }
    if auth is not None:
        wanted["auth"] = auth
    found = [
        f"{name}={account.get(name)!r} (expected {value!r})"
        for name, value in wanted.items()
        if account.get(name) != value
    ]
    if bool(account.get("suspended")) != expected.suspended:
        found.append(f"suspended={account.get('suspended')!r} (expected {expected.suspended})")
    custom = {c.get("shortname"): c.get("value") for c in account.get("customfields", [])}
    if custom.get("title") != person.title:
        found.append(
            f"custom field title={custom.get('title')!r} (expected {person.title!r}; "
            "Moodle drops a field the site does not define: tests/moodle_site_setup.php)"
        )
    if seen.courses != expected.courses:
        found.append(f"enrolments {seen.courses} (expected {expected.courses})")
    if seen.in_cohort != expected.in_cohort:
        found.append(f"cohort {COHORT} member={seen.in_cohort} (expected {expected.in_cohort})")
    return [f"{who}: {problem}" for problem in found]


# -- the bridge ------------------------------------------------------------------------------


@dataclass
class Bridge:
    """A fresh bridge: database, shipped rules pointed at the site, SCIM app and relay."""

    db: Database
    provisioner: Provisioner
    ruleset: RuleSet
    relay: Relay
    scim: httpx.AsyncClient
    database_url: str = ""
    rules: Path = Path()

    @property
    def moodle(self) -> MoodleTarget:
        target = self.relay.targets["moodle"]
        assert isinstance(target, MoodleTarget)
        return target

    async def cli(self, *args: str) -> tuple[int, str]:
        """``bridge ARGS`` on this bridge's database and rules (in a thread: the command runs
        its own event loop)."""
        result = await asyncio.to_thread(
            run_cli, self.database_url, self.rules, *args, MOODLE_TOKEN=MOODLE_TOKEN
        )
        return result.exit_code, result.output

    def stuck(self) -> int:
        """Rows not settled that a relay could still deliver (not behind a dead letter)."""
        with self.db.read() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM outbox o WHERE o.status IN (?, ?, ?) AND NOT EXISTS "
                    "(SELECT 1 FROM outbox d WHERE d.status = ? AND d.target = o.target "
                    "AND d.ordering_key = o.ordering_key AND d.id < o.id)",
                    (outbox.PENDING, outbox.RETRY, outbox.RUNNING, outbox.DEAD),
                ).scalar_one()
            )

    async def drain(self) -> float:
        """Relay until nothing deliverable is left; the seconds it took (bounded)."""
        started = time.monotonic()
        deadline = started + DRAIN_SECONDS
        while self.stuck() and time.monotonic() < deadline:
            if not await self.relay.run_once():
                await asyncio.sleep(0.05)
        assert self.stuck() == 0, f"the outbox did not drain in {DRAIN_SECONDS:.0f}s"
        return time.monotonic() - started

    def outbox_counts(self) -> dict[str, int]:
        with self.db.read() as conn:
            return outbox.counts(conn)

    def dead_letters(self) -> list[str]:
        with self.db.read() as conn:
            rows = outbox.dead_letters(conn)
        return [
            f"outbox {r['id']} {r['intent']['kind']} {r['intent'].get('ref') or ''} "
            f"for {r['intent']['person']} [{r['category']}]: {r['last_error']}"
            for r in rows
        ]


@pytest.fixture
async def bridge(tmp_path: Path, sqlite_template: Path, catalog: Catalog) -> AsyncIterator[Bridge]:
    rules = shipped_rules(tmp_path, MOODLE_URL)
    assert MOODLE_URL in (rules / "targets.yaml").read_text(), "the moodle target's base_url moved"
    book = RuleBook(rules, lambda d: check_rules(d, catalog))
    ruleset = book.load()
    database_url = clean_database("sqlite", tmp_path, sqlite_template, None)
    db = connect(database_url)
    provisioner = Provisioner(db, catalog, rules=book.current)
    relay = build_relay(db, ruleset, env={"MOODLE_TOKEN": MOODLE_TOKEN})
    assert relay is not None, "no target could be built from rules/targets.yaml"
    relay.policy = RetryPolicy(base=0.2, cap=2.0, max_attempts=6)  # bounded for a test
    settings = Settings(database_url=database_url, scim_token=TOKEN, schemas_dir=ROOT / "schemas")
    app = create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))
    async with app_client(app) as scim:
        yield Bridge(db, provisioner, ruleset, relay, scim, database_url, rules)
    for target in relay.targets.values():
        await target.aclose()
    db.dispose()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    async with httpx.AsyncClient(base_url=MOODLE_URL, timeout=30) as http:
        yield Site(http, MOODLE_TOKEN)


def rules_auth(ruleset: RuleSet) -> str | None:
    """The ``auth`` the rules give created accounts (a constant mapping, else the target's)."""
    for rules in ruleset.files:
        for mapping in rules.mapping:
            if mapping.attribute == "auth" and mapping.source is None:
                return str(mapping.value)
    options = ruleset.targets["moodle"].options
    return str(options["auth"]) if "auth" in options else None


# -- the pilot, end to end -----------------------------------------------------------------


class Report:
    """What Moodle answered at each step, and every disagreement with the rules."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.problems: list[str] = []

    def step(self, title: str) -> None:
        self.lines.append(f"\n== {title}")

    def say(self, line: str) -> None:
        self.lines.append(f"   {line}")

    def check(self, step: str, found: list[str]) -> None:
        self.problems += [f"[{step}] {problem}" for problem in found]
        for problem in found:
            self.say(f"MISMATCH {problem}")

    def seen(self, people: list[Person], seen: dict[int, Seen]) -> None:
        for person in people:
            self.say(f"{person.given} {person.family}: {seen[person.number].line()}")

    def relay(self, bridge: Bridge, seconds: float) -> None:
        self.say(f"relay drained in {seconds:.1f}s; outbox {bridge.outbox_counts()}")
        for letter in bridge.dead_letters():
            self.say(f"dead letter: {letter}")

    def print(self) -> None:
        print("\n".join(["", "What the real Moodle answered", *self.lines]))
        if self.problems:
            print(f"\n{len(self.problems)} mismatch(es) with the rules")


async def test_the_benefits_pilot_end_to_end_on_a_real_moodle(bridge: Bridge, site: Site) -> None:
    run = f"rt{uuid.uuid4().hex[:6]}"
    people = pilot(run)
    by_name = {p.given: p for p in people}
    removed, terminated = by_name["Maria"], by_name["Kim"]
    auth = rules_auth(bridge.ruleset)
    report = Report()
    try:
        # Day 1: the IdP pushes everyone over SCIM, an admin draws the capped pilot
        # (bridge plan + bridge apply), and the relay delivers it.
        report.step(f"Day 1 (run {run}): {len(people)} people over SCIM, rules auth={auth}")
        for person in people:
            assert_scim(await bridge.scim.post("/Users", json=person.scim()), 201)
        report.say(f"pilot drawn by plan + apply: {draw(bridge.provisioner)} intents enqueued")
        report.relay(bridge, await bridge.drain())
        seen = await observe(site, people)
        report.seen(people, seen)
        for person in people:
            report.check("day 1", mismatches(person, seen[person.number], day_one(person), auth))
        report.check("day 1", due_is_not_an_end(report, run))
        day_one_seen = seen

        # Day 2: one person loses the benefits code, another is terminated (Entra-style).
        report.step(f"Day 2: {removed.given} loses {BENEFITS}, {terminated.given} is terminated")
        day_two = datetime.now(UTC)
        ids = await scim_ids(bridge, [removed, terminated])
        codes = [c for c in removed.codes if c != BENEFITS]
        replace = {"op": "replace", "path": f"{HR}:roleCodes", "value": codes}
        assert_scim(await bridge.scim.patch(f"/Users/{ids[0]}", json=patch_body(replace)), 200)
        termination = patch_body(
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "path": f"{HR}:employmentStatus", "value": "terminated"},
        )
        assert_scim(await bridge.scim.patch(f"/Users/{ids[1]}", json=termination), 200)
        report.relay(bridge, await bridge.drain())
        # Two of the six people in scope lose something within the hour: past the shipped
        # 10 %, so the brake holds the second removal until an admin approves it.
        with bridge.db.read() as conn:
            held = runs.open_held(conn, "moodle")
        assert held is not None and held["summary"]["held"] == 1, held
        released = planner_of(bridge.provisioner).approve(held["id"], actor="test-moodle-real")
        report.say(f"the brake held 1 removal (run {held['id']}); approved: {released} released")
        report.relay(bridge, await bridge.drain())
        seen = await observe(site, people)
        report.seen([removed, terminated], seen)
        report.say("(everyone else as on day 1 unless a MISMATCH says otherwise)")
        for person in people:
            wanted = day_two_of(person, removed=removed, terminated=terminated)
            report.check("day 2", mismatches(person, seen[person.number], wanted, auth))

        # Revert day 2 through the bridge's own revert, from the journal's before-images.
        report.step("Revert of day 2 (Reverter.plan(since=day 2)), relayed")
        reverter = Reverter(bridge.provisioner)
        plan = reverter.plan(since=day_two)
        report.say(plan.render().replace("\n", "\n   "))
        assert not plan.conflicts, plan.render()
        restored = sorted((s.action, s.label) for s in plan.steps)
        steps = sorted(("restore", p.user_name) for p in (removed, terminated))
        report.check("revert", [] if restored == steps else [f"plan {restored}, not {steps}"])
        reverter.apply(plan, actor="test-moodle-real")
        report.relay(bridge, await bridge.drain())
        seen = await observe(site, people)
        report.seen(people, seen)
        for person in people:
            report.check("revert", mismatches(person, seen[person.number], day_one(person), auth))
            before, after = day_one_seen[person.number].account, seen[person.number].account
            if before is not None and after is not None and before["id"] != after["id"]:
                report.check(
                    "revert",
                    [f"{person.given}: a new account {after['id']} replaced {before['id']}"],
                )
        report.check("revert", due_is_not_an_end(report, run))
    finally:
        report.print()
    assert not report.problems, "\n".join(report.problems)


async def scim_ids(bridge: Bridge, people: list[Person]) -> list[str]:
    ids = []
    for person in people:
        found = assert_scim(
            await bridge.scim.get("/Users", params={"filter": f'userName eq "{person.user_name}"'}),
            200,
        )
        ids.append(str(found["Resources"][0]["id"]))
    return ids


def due_is_not_an_end(report: Report, run: str) -> list[str]:
    """The rules' ``due: P30D`` is the bridge's deadline, never Moodle's ``timeend``."""
    ends = enrolment_ends(run)
    if ends is None:
        report.say("timeend: not checked (no web service shows it; set BRIDGE_TEST_MOODLE_DB_URL)")
        return []
    report.say(
        f"timeend of this run's {len(ends)} enrolments (mdl_user_enrolments): "
        f"{sorted(set(ends.values()))}"
    )
    return [
        f"{username} in {course}: timeend={end} "
        f"({datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M}) — access ends at the due date"
        for (username, course), end in sorted(ends.items())
        if end
    ]


# -- the read-back: training completion and reconcile ------------------------------------------

OVERRIDE = "core_completion_override_activity_completion_status"
ACTIVITIES = "core_completion_get_activities_completion_status"
UNTRACKED_COURSE = "LIB"  # tests/moodle_site_setup.php: completion tracking off


async def deliver(bridge: Bridge, site: Site, people: list[Person]) -> dict[str, int]:
    """Push ``people`` over SCIM, draw the pilot, relay; their Moodle ids by given name."""
    for person in people:
        assert_scim(await bridge.scim.post("/Users", json=person.scim()), 201)
    draw(bridge.provisioner)
    await bridge.drain()
    assert not bridge.dead_letters(), bridge.dead_letters()
    ids = {}
    for person in people:
        found = await site.user("username", person.username)
        assert found, f"{person.username}: no account in Moodle after delivery"
        ids[person.given] = int(found[0]["id"])
    return ids


async def complete(site: Site, userid: int, cmid: int) -> int:
    """Mark one activity complete for a learner, as a teacher overriding it; when it was."""
    answer = await site.call(OVERRIDE, userid=userid, cmid=cmid, newstate=1)
    assert answer["state"] == 1, answer
    return int(answer["timecompleted"])


def epoch(value: str | None) -> int | None:
    return int(datetime.fromisoformat(value).timestamp()) if value else None


async def test_training_and_reconcile_read_back_from_a_real_moodle(
    bridge: Bridge, site: Site
) -> None:
    run = f"rb{uuid.uuid4().hex[:6]}"
    ann, raj, tom = (p for p in pilot(run) if p.given in ("Ann", "Raj", "Tom"))
    report = Report()
    refused = await read_refusal(bridge.moodle, TRAINING)
    assert refused is None, f"{refused} (run tests/moodle_site_setup.php on the site)"
    try:
        report.step(f"Read-back (run {run}): Ann, Raj (manager), Tom delivered")
        ids = await deliver(bridge, site, [ann, raj, tom])
        course = await site.course_id(COURSE)
        statuses = (await site.call(ACTIVITIES, courseid=course, userid=ids["Ann"]))["statuses"]
        cmids = [int(s["cmid"]) for s in statuses]
        assert len(cmids) >= 2, f"{COURSE} needs two tracked activities (run the setup): {statuses}"
        ann_times = [await complete(site, ids["Ann"], cmid) for cmid in cmids]
        raj_time = await complete(site, ids["Raj"], cmids[0])
        report.say(f"marked: Ann every activity of {COURSE} {ann_times}, Raj one {raj_time}")

        code, output = await bridge.cli("training", "--refresh", "--json")
        assert code == 0, output
        document = json.loads(output)
        rows = {(p["userName"], p["course"]): p for p in document["people"]}
        for key, row in sorted(rows.items()):
            report.say(f"training {key}: {row['status']} {row['started_at']} {row['completed_at']}")
        assert document["read"]["refreshed"] == {"read": 4, "failed": 0}
        done = rows[(ann.user_name, COURSE)]
        assert (done["status"], epoch(done["started_at"]), epoch(done["completed_at"])) == (
            "complete",
            min(ann_times),
            max(ann_times),
        )
        started = rows[(raj.user_name, COURSE)]
        assert (started["status"], epoch(started["started_at"])) == ("in_progress", raj_time)
        assert rows[(raj.user_name, MANAGER_COURSE)]["status"] == "not_started"
        assert rows[(tom.user_name, COURSE)]["status"] == "not_started"

        # Moodle's own errors, per person, through the same reader.
        asks = [
            Ask("ann-untracked", str(ids["Ann"]), None, UNTRACKED_COURSE),
            Ask("tom-not-enrolled", str(ids["Tom"]), None, MANAGER_COURSE),
            Ask("nobody", "999999", None, COURSE),
        ]
        errors = [r.error for r in await read_all(MoodleCompletion(bridge.moodle), asks)]
        report.say(f"errors: {errors}")
        codes = ["cannotviewreport", "usernotenroled", "invaliduser"]
        assert all(e is not None and c in e for e, c in zip(errors, codes, strict=True)), errors

        # Changed by hand in Moodle: the reconcile finds each, and re-asserts it.
        report.step("Reconcile after changes by hand")
        await site.call(
            "enrol_manual_unenrol_users",
            **{"enrolments[0][userid]": ids["Tom"], "enrolments[0][courseid]": course},
        )
        await site.call(
            "enrol_manual_enrol_users",
            **{
                "enrolments[0][roleid]": 5,
                "enrolments[0][userid]": ids["Ann"],
                "enrolments[0][courseid]": course,
                "enrolments[0][suspend]": 1,
            },
        )
        cohorts = await site.call("core_cohort_get_cohorts")
        cohort = next(int(c["id"]) for c in cohorts if c.get("idnumber") == COHORT)
        await site.call(
            "core_cohort_delete_cohort_members",
            **{"members[0][cohortid]": cohort, "members[0][userid]": ids["Raj"]},
        )
        code, output = await bridge.cli("reconcile", "--json", "--detailed-exitcode")
        document = json.loads(output)
        mine = {ann.user_name, raj.user_name, tom.user_name}
        drift = {
            (d["label"], d["kind"], d["ref"], d["action"])
            for d in document["drift"]
            if d["label"] in mine
        }
        for item in sorted(drift):
            report.say(f"drift {item}")
        assert code == 2, output
        assert drift == {
            (tom.user_name, "enrolment-removed", COURSE, "enrol"),
            (ann.user_name, "enrolment-suspended", COURSE, "enrol"),
            (raj.user_name, "cohort-member-removed", COHORT, "add_cohort_member"),
        }
    finally:
        report.print()


def service_functions(function: str) -> tuple[Engine, TextClause, dict[str, str]] | None:
    """An engine on the site's database, the statement that puts ``function`` back into the
    token's service, and its parameters; None without ``BRIDGE_TEST_MOODLE_DB_URL``."""
    if not MOODLE_DB_URL:
        return None
    url = MOODLE_DB_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    p = MOODLE_DB_PREFIX
    insert = text(
        f"INSERT INTO {p}external_services_functions (externalserviceid, functionname) "  # noqa: S608 - a prefix from the test's environment
        f"SELECT t.externalserviceid, :function FROM {p}external_tokens t WHERE t.token = :token"
    )
    return create_engine(url), insert, {"function": function, "token": MOODLE_TOKEN}


async def test_a_read_function_taken_out_of_the_real_service(bridge: Bridge) -> None:
    """Preflight warns (delivery passes), names the function and where to add it, and the
    training refresh answers every person with it instead of Moodle's accessexception."""
    site_db = service_functions(ACTIVITIES)
    if site_db is None:
        pytest.skip("set BRIDGE_TEST_MOODLE_DB_URL to take a function out of the service")
    engine, put_back, params = site_db
    p = MOODLE_DB_PREFIX
    remove = text(
        f"DELETE FROM {p}external_services_functions WHERE functionname = :function AND "  # noqa: S608 - a prefix from the test's environment
        f"externalserviceid = (SELECT externalserviceid FROM {p}external_tokens "
        "WHERE token = :token)"
    )
    try:
        with engine.begin() as conn:
            assert conn.execute(remove, params).rowcount == 1, f"{ACTIVITIES} not in the service"
        verdict = await check_target(bridge.moodle, requirements(bridge.ruleset, "moodle"))
        warned = [f for f in verdict.findings if f.check == "read_function" and not f.ok]
        print("\n".join(f.line() for f in warned))
        assert verdict.passed, verdict.reason()
        assert [(f.subject, f.severity) for f in warned] == [(ACTIVITIES, "warning")]
        assert "External services → the token's service → Functions" in warned[0].fix
        refused = await read_refusal(bridge.moodle, TRAINING)
        assert refused is not None and ACTIVITIES in refused
        readings = await read_all(MoodleCompletion(bridge.moodle), [Ask("p", "2", None, COURSE)])
        assert [r.error for r in readings] == [refused]
    finally:
        with engine.begin() as conn:
            conn.execute(put_back, params)
        engine.dispose()
    assert await read_refusal(bridge.moodle, TRAINING) is None


# -- batches, as the real site takes them ----------------------------------------------------


async def test_a_batch_on_the_real_site_isolates_the_row_moodle_refuses(bridge: Bridge) -> None:
    """core_user_create_users is all-or-nothing on the real site too: a chunk holding one
    taken email is refused whole, split until that row is alone, and only that person goes
    dead (data quality, naming the holder); the others are created. Cohort adds answer per
    member: an unknown cohort is that member's configuration error."""
    run = f"bt{uuid.uuid4().hex[:6]}"
    target = bridge.relay.targets["moodle"]
    assert isinstance(target, MoodleTarget)

    def upsert(n: int, email: str | None = None) -> Delivery:
        attributes = {
            "idnumber": f"{run}-{n}",
            "username": f"{run}.{n}@example.com",
            "email": email or f"{run}.{n}@example.com",
            "firstname": "Batch",
            "lastname": f"Person {n}",
            "auth": "oauth2",
        }
        intent = {
            "kind": "upsert_account",
            "person": f"{run}-{n}",
            "target": "moodle",
            "rule": "r",
            "data": {"create": True, "attributes": attributes},
        }
        return Delivery(intent, None, account=dict(attributes))

    [holder] = await target.deliver_many([upsert(0)])
    assert holder.status is Status.done, holder.message
    results = await target.deliver_many(
        [upsert(n, f"{run}.0@example.com" if n == 5 else None) for n in range(1, 13)]
    )
    assert [r.status for r in results].count(Status.done) == 11, [r.message for r in results]
    refused = results[4]
    assert refused.status is Status.dead and refused.category is Category.data_quality
    assert refused.message.startswith(
        f"email {run}.0@example.com is already used by Moodle user {holder.lms_user_id}"
    )
    creates = [c for c in results[0].detail["calls"] if c["function"] == "core_user_create_users"]
    assert creates[0]["errorcode"] == "invalidparameter" and creates[0]["batch"] == 12

    def member(result: Any, n: int, cohort: str) -> Delivery:
        intent = {"kind": "add_cohort_member", "person": f"{run}-{n}", "target": "moodle"}
        return Delivery({**intent, "rule": "r", "ref": cohort}, result.lms_user_id)

    adds = [member(r, n, COHORT) for n, r in enumerate(results) if r.status is Status.done]
    adds.append(member(results[0], 99, "NO-SUCH-COHORT"))
    added = await target.deliver_many(adds)
    assert [r.status for r in added] == [Status.done] * 11 + [Status.dead]
    assert added[-1].category is Category.configuration
    again = await target.deliver_many(adds[:3])  # repeat-safe: already a member
    assert {r.message for r in again} == {f"already in cohort {COHORT}"}
