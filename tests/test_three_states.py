"""Desired, pending, confirmed are never confused (DESIGN §4): ``plan`` and ``explain`` diff the
rules against what the LMS confirmed, and say what is on its way, what failed and what waits.

Every situation is made by real deliveries: the relay against the Moodle simulator (an
account the LMS refuses because another holds its email, the guide's data-quality case), or
against an LMS answering from a script where a retry must be forced; a misconfigured target
is a ``target_health`` row, as a failed preflight writes it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.explain import Explanation
from bridge.rules.explain import explanation_to_json
from bridge.rules.explain_render import render_explanation
from bridge.rules.plan import Plan
from bridge.rules.plan import Tracked
from bridge.rules.plan import plan_from_json
from bridge.rules.plan import plan_to_json
from bridge.rules.plan import render_text
from bridge.schemas import Catalog
from bridge.store import health
from bridge.store import links
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.moodle import MoodleTarget
from tests.conftest import HR
from tests.conftest import employee
from tests.conftest import shipped_rules
from tests.pilots import uncapped

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
PREFLIGHT = (
    "target moodle fails preflight: auth 'oauth2' is not enabled on the site "
    "(rules/benefits-2026.yaml:46:3); fix: enable the OAuth 2 authentication plugin"
)


class Clock:
    """One clock for the SCIM writes, the relay and the plans: rows are due when it says."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedLms:
    """An LMS answering from a script per (person, intent kind); done when nothing is scripted.

    It stands for an LMS (a retry with Retry-After is hard to get from the simulator on cue);
    it has no ``probe``, so the relay charges its retries as it would any LMS's.
    """

    kind = "test"

    def __init__(self, name: str = "moodle") -> None:
        self.name = name
        self.script: dict[tuple[str, str], list[Result]] = {}

    async def deliver(self, delivery: Delivery) -> Result:
        answers = self.script.get((delivery.intent["person"], delivery.kind))
        if answers:
            return answers.pop(0)
        return Result.done(lms_user_id=f"lms-{delivery.intent['person'][:8]}")

    async def aclose(self) -> None:
        return None


@dataclasses.dataclass
class World:
    """The bridge on a real database with the shipped rules, and an LMS behind the relay."""

    db: Database
    catalog: Catalog
    book: RuleBook
    clock: Clock
    simulator: Any
    lms: Any = None

    @property
    def ruled(self) -> Provisioner:
        return Provisioner(self.db, self.catalog, rules=self.book.current, clock=self.clock)

    @property
    def planner(self) -> Planner:
        return Planner(self.db, self.ruled.store, self.catalog, self.book.current, self.clock)

    @property
    def site(self) -> Any:
        return self.simulator.state.moodle

    def relay(self) -> Relay:
        target = self.lms
        if target is None:
            ruleset = self.book.current()
            assert ruleset is not None
            target = MoodleTarget(
                ruleset.targets["moodle"],
                SIM_MOODLE_TOKEN,
                transport=httpx.ASGITransport(app=self.simulator),
            )
        return Relay(
            self.db,
            {"moodle": target},
            clock=self.clock,
            policy=RetryPolicy(base=30, cap=60, jitter=0, max_attempts=5),
        )

    def hire(self, number: int, codes: list[str] | None = None, **extra: Any) -> str:
        """A person provisioned over SCIM: the write projects the rules and fills the outbox."""
        payload = employee(number, codes=codes or ["BEN_CHOICE_2026"], **extra)
        return self.ruled.create(Cause("okta"), "User", payload).record.id

    def seed(self, number: int) -> str:
        """A person stored before any rule existed: never projected, nothing ever sent."""
        bare = Provisioner(self.db, self.catalog, clock=self.clock)
        payload = employee(number, codes=["BEN_CHOICE_2026"])
        return bare.create(Cause("hris"), "User", payload).record.id

    async def deliver(self) -> int:
        """Relay until nothing more is due now; how many rows were settled."""
        relay, settled = self.relay(), 0
        for _ in range(100):
            done = await relay.run_once()
            if not done:
                break
            settled += done
        for target in relay.targets.values():
            await target.aclose()
        return settled

    def plan(self) -> Plan:
        return self.planner.compute().plan

    def rows(self, person: str) -> list[dict[str, Any]]:
        """A person's outbox rows, oldest first."""
        table = outbox.OUTBOX
        with self.db.read() as conn:
            ids = conn.execute(
                select(table.c.id).where(table.c.ordering_key == person).order_by(table.c.id)
            ).scalars()
            rows = [outbox.get(conn, int(row_id)) for row_id in ids]
        return [row for row in rows if row is not None]

    def stale_account(self, number: int) -> None:
        """An account made in the LMS by hand that already holds this employee's email."""
        self.site.add_user(
            f"old.account{number}", email=f"emp{number}@example.com", firstname="Old", lastname="X"
        )


def make_world(db: Database, catalog: Catalog, book: RuleBook) -> World:
    return World(db, catalog, book, Clock(), create_simulator(Knobs(seed=5)))


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The shipped rules with the pilot's cap off: each SCIM write admits its person, so
    ``hire`` fills the outbox (a capped pilot waits for the draw: tests/test_pilot.py)."""
    return uncapped(shipped_rules(tmp_path))


@pytest.fixture
def world(db: Database, catalog: Catalog, book: RuleBook) -> World:
    return make_world(db, catalog, book)


def entries(plan: Plan, person: str) -> list[Tracked]:
    return [e for e in (*plan.tracked, *plan.in_flight) if e.intent.person == person]


def states(tracked: list[Tracked]) -> list[tuple[str, str | None, str]]:
    return sorted((e.intent.kind.value, e.intent.ref, e.state) for e in tracked)


def evidence(tracked: list[Tracked]) -> list[tuple[Any, ...]]:
    """Everything plan and explain must agree on, per intent."""
    return sorted(
        (
            e.intent.rule,
            e.intent.kind.value,
            e.intent.ref or "",
            e.state,
            e.row.id if e.row else 0,
            e.blocked_by.id if e.blocked_by else 0,
            e.waiting or "",
        )
        for e in tracked
    )


def explained(exp: Explanation) -> list[Tracked]:
    return [entry for file in exp.files for entry in file.tracked]


# -- a refused create: a change still to make, the rest blocked behind it ------------------------


async def test_a_refused_create_is_still_to_make_and_its_followers_wait_behind_it(
    world: World,
) -> None:
    world.stale_account(1)
    person = world.hire(1)
    await world.deliver()
    upsert, enrol, cohort = world.rows(person)
    assert (upsert["status"], upsert["category"]) == ("dead", "data_quality")
    refused = upsert["last_error"]
    assert "emp1@example.com" in refused  # the LMS's own words, whatever they are
    assert (enrol["status"], cohort["status"]) == ("pending", "pending")

    plan = world.plan()
    assert plan.status == "changes" and plan.exit_code == 2
    assert states(entries(plan, person)) == [
        ("add_cohort_member", "BEN2026", "pending"),
        ("enrol", "BEN-2026", "pending"),
        ("upsert_account", None, "failed"),
    ]
    (failed,) = plan.tracked
    assert failed.row is not None and failed.row.id == upsert["id"]
    assert failed.intent.data["create"] is True
    assert all(e.blocked_by is not None and e.blocked_by.id == upsert["id"] for e in plan.in_flight)
    assert plan.count("create_account") == 1 and plan.count("enrol") == 0
    assert plan.state_counts() == {"to_make": 0, "failed": 1, "pending": 2, "waiting": 0}

    (blocked,) = [a for a in plan.attention if a.kind == "blocked"]
    assert blocked.person == person
    assert f"blocked behind dead letter #{upsert['id']} upsert_account" in blocked.reason
    assert "2 later intents" in blocked.reason

    document = plan_to_json(plan)
    assert document["states"] == {"to_make": 0, "failed": 1, "pending": 2, "waiting": 0}
    (entry,) = document["intents"]
    assert entry["state"] == "failed"
    assert entry["outbox"]["id"] == upsert["id"]
    assert entry["outbox"]["category"] == "data_quality"
    assert entry["outbox"]["last_error"] == refused
    assert {e["state"] for e in document["in_flight"]} == {"pending"}
    assert all(e["blocked_by"]["id"] == upsert["id"] for e in document["in_flight"])
    assert plan_from_json(document) == plan

    text = render_text(plan)
    assert "! failed, still to make — apply sends them again in place (1):" in text
    assert f"data_quality: {refused[:60]}" in text
    assert f"blocked behind dead letter #{upsert['id']} upsert_account" in text
    assert "1 change failed before (apply sends it again)" in text
    assert "2 intents pending in the outbox" in text

    explanation = world.planner.explain("E00001")
    assert evidence(explained(explanation)) == evidence(entries(plan, person))
    shown = render_explanation(explanation)
    assert "the LMS already matches" not in shown
    assert "LMS      no account confirmed in moodle" in shown
    assert f"↳ failed — data_quality: {refused[:60]}" in shown
    assert f"blocked  2 later intents in moodle blocked behind dead letter #{upsert['id']}" in shown


async def test_after_the_fix_apply_requeues_the_dead_row_in_place_and_then_nothing_is_left(
    world: World,
) -> None:
    world.stale_account(2)
    person = world.hire(2)
    await world.deliver()
    before = world.rows(person)
    dead = before[0]
    assert dead["status"] == "dead"

    # Fixed in the LMS (the stale account goes), not in the data: nothing in the bridge moved.
    for user in world.site.users.values():
        if user.username == "old.account2":
            user.deleted = True
    planner = world.planner
    document = planner.plan_document()
    assert document["exit_code"] == 2
    world.clock.advance(1)
    run_id, status, written = planner.apply(document, actor="test")
    assert (status, written) == ("applied", 1)

    after = world.rows(person)
    assert [row["id"] for row in after] == [row["id"] for row in before]  # no row behind it
    requeued = after[0]
    assert requeued["status"] == "pending" and requeued["attempts"] == 0
    assert requeued["last_error"] is None and requeued["category"] is None
    assert requeued["run_id"] == run_id
    fresh = {k: v for k, v in document["intents"][0].items() if k not in ("state", "outbox")}
    assert requeued["intent"] == fresh  # the intent as planned now, not the refused one
    assert fresh["kind"] == "upsert_account" and fresh["data"]["create"] is True

    pending = world.plan()  # applied, not delivered: on its way, not a change to make again
    assert pending.exit_code == 0 and pending.status == "no-changes"
    assert states(entries(pending, person)) == [
        ("add_cohort_member", "BEN2026", "pending"),
        ("enrol", "BEN-2026", "pending"),
        ("upsert_account", None, "pending"),
    ]
    assert planner.apply(planner.plan_document(), actor="test")[2] == 0

    await world.deliver()
    assert {row["status"] for row in world.rows(person)} == {"done"}
    done = world.plan()
    assert done.status == "no-changes" and done.exit_code == 0
    assert entries(done, person) == [] and done.attention == []
    assert plan_to_json(done)["states"] == {"to_make": 0, "failed": 0, "pending": 0, "waiting": 0}
    explanation = world.planner.explain(person)
    assert explained(explanation) == []
    text = render_explanation(explanation)
    assert "intents  none: the LMS already matches (confirmed 2026-11-01T09:00:01" in text
    with world.db.read() as conn:
        link = links.get(conn, "moodle", person)
    assert link is not None and link[0] is not None
    assert f"LMS      moodle account {link[0]} (active), confirmed 2026-11-01T09:00:01" in text
    assert "· LMS: active (confirmed 2026-11-01T09:00:01" in text


async def test_a_dead_letter_retried_by_hand_keeps_its_fresh_intent_out_of_the_plan(
    world: World,
) -> None:
    """After `bridge errors retry`, the row is pending again: the plan shows it on its way."""
    world.stale_account(3)
    person = world.hire(3)
    await world.deliver()
    dead = world.rows(person)[0]
    with world.db.write() as conn:
        assert outbox.requeue(conn, [dead["id"]], world.clock()) == 1
    plan = world.plan()
    assert plan.exit_code == 0
    upsert = next(e for e in plan.in_flight if e.intent.kind.value == "upsert_account")
    assert upsert.state == "pending" and upsert.row is not None and upsert.row.id == dead["id"]
    assert upsert.blocked_by is None
    assert "pending: outbox #" in upsert.describe() and "attempt 1 at" in upsert.describe()


# -- pending: attempt n, next try, last error; never enqueued twice ------------------------------


async def test_pending_rows_show_their_attempts_next_try_and_last_error(world: World) -> None:
    scripted = ScriptedLms()
    world.lms = scripted
    person = world.hire(4)
    scripted.script[(person, "upsert_account")] = [
        Result.retry("HTTP 503: Service Unavailable", after=120)
    ]
    await world.deliver()
    upsert = world.rows(person)[0]
    assert (upsert["status"], upsert["attempts"]) == ("retry", 1)

    plan = world.plan()
    assert plan.status == "no-changes" and plan.exit_code == 0
    assert plan.tracked == []
    by_kind = {e.intent.kind.value: e for e in entries(plan, person)}
    assert {e.state for e in by_kind.values()} == {"pending"}
    retrying = by_kind["upsert_account"]
    assert retrying.row is not None and retrying.row.attempts == 1
    assert retrying.row.next_attempt_at == (START + timedelta(seconds=120)).isoformat()
    assert retrying.row.last_error == "HTTP 503: Service Unavailable"
    assert retrying.describe() == (
        f"pending: outbox #{upsert['id']}, attempt 2 at 2026-11-01T09:02:00+00:00 "
        "(1 attempt so far; last error: HTTP 503: Service Unavailable)"
    )
    assert by_kind["enrol"].blocked_by is None  # behind a retry, not a dead letter
    text = render_text(plan)
    assert "No changes. 3 intents pending in the outbox;" in text
    assert "attempt 2 at 2026-11-01T09:02:00+00:00" in text

    planner = world.planner
    assert planner.apply(planner.plan_document(), actor="test")[2] == 0
    assert len(world.rows(person)) == 3
    explanation = planner.explain(person)
    assert evidence(explained(explanation)) == evidence(entries(plan, person))
    assert "attempt 2 at 2026-11-01T09:02:00+00:00" in render_explanation(explanation)

    world.clock.advance(121)
    await world.deliver()
    assert world.plan().exit_code == 0 and entries(world.plan(), person) == []


# -- waiting: a target whose health is not ok ----------------------------------------------------


def misconfigure(world: World) -> None:
    with world.db.write() as conn:
        health.save(
            conn,
            "moodle",
            health.MISCONFIGURED,
            now=world.clock(),
            reason=PREFLIGHT,
            findings=[{"target": "moodle", "check": "auth", "ok": False, "message": "no"}],
        )


async def test_a_misconfigured_target_makes_its_intents_wait_with_the_reason(
    world: World,
) -> None:
    """Queued intents wait with the preflight's reason; intents never sent stay changes to make
    (shown with the reason): apply enqueues them, and they wait in the outbox until it passes."""
    never_sent = world.seed(5)
    misconfigure(world)
    queued = world.hire(6)  # the SCIM write path enqueues; the relay sends nothing to moodle
    assert await world.deliver() == 0

    plan = world.plan()
    assert plan.exit_code == 2
    assert plan.state_counts() == {"to_make": 3, "failed": 0, "pending": 0, "waiting": 3}
    assert {e.waiting for e in plan.in_flight} == {PREFLIGHT}
    assert all(e.row is None and e.state == "to_make" for e in entries(plan, never_sent))
    assert all(e.waiting == PREFLIGHT for e in entries(plan, never_sent))
    assert all(e.row is not None and e.row.status == "pending" for e in entries(plan, queued))
    document = plan_to_json(plan)
    assert {e["state"] for e in document["in_flight"]} == {"waiting"}
    assert document["in_flight"][0]["waiting"] == PREFLIGHT
    assert {e["waiting"] for e in document["intents"]} == {PREFLIGHT}
    text = render_text(plan)
    assert f"{PREFLIGHT}: 3 intents (" in text
    assert "3 intents waiting on a target" in text
    assert f"its target waits — {PREFLIGHT}" in text

    planner = world.planner
    for person in (never_sent, queued):
        explanation = planner.explain(person)
        assert evidence(explained(explanation)) == evidence(entries(plan, person))
        assert f"target   moodle: waiting — {PREFLIGHT}" in render_explanation(explanation)
        (file,) = explanation_to_json(explanation)["rule_files"]
        assert file["waiting"] == PREFLIGHT
    assert planner.apply(planner.plan_document(), actor="test")[2] == 3
    assert {row["status"] for row in world.rows(never_sent)} == {"pending"}
    after = world.plan()
    assert after.exit_code == 0
    assert {e.state for e in entries(after, never_sent)} == {"waiting"}

    with world.db.write() as conn:  # the preflight passes again
        health.save(conn, "moodle", health.OK, now=world.clock())
    again = world.plan()
    assert again.exit_code == 0
    assert {e.state for e in entries(again, never_sent)} == {"pending"}
    assert {e.state for e in entries(again, queued)} == {"pending"}


# -- plan and explain agree for everyone ---------------------------------------------------------


async def test_plan_and_explain_agree_for_every_person(world: World) -> None:
    delivered = world.hire(10)
    world.stale_account(11)
    dead = world.hire(11)
    leaving = world.hire(12, codes=["BEN_CHOICE_2026", "MANAGER"])
    await world.deliver()
    # Delivered, then losing the role code: the suspensions are queued, not delivered.
    world.ruled.patch(
        Cause("okta"),
        "User",
        leaving,
        [{"op": "replace", "path": f"{HR}:roleCodes", "value": ["EMPLOYEE"]}],
    )
    pending = world.hire(13)
    never_sent = world.seed(14)
    elsewhere = world.hire(15, department="Sales")

    plan = world.plan()
    expected = {
        delivered: [],
        dead: [
            ("add_cohort_member", "BEN2026", "pending"),
            ("enrol", "BEN-2026", "pending"),
            ("upsert_account", None, "failed"),
        ],
        leaving: [
            ("remove_cohort_member", "BEN2026", "pending"),
            ("suspend_enrolment", "BEN-2026", "pending"),
            ("suspend_enrolment", "BEN-2026-MGR", "pending"),
            ("upsert_account", None, "pending"),
        ],
        pending: [
            ("add_cohort_member", "BEN2026", "pending"),
            ("enrol", "BEN-2026", "pending"),
            ("upsert_account", None, "pending"),
        ],
        never_sent: [
            ("add_cohort_member", "BEN2026", "to_make"),
            ("enrol", "BEN-2026", "to_make"),
            ("upsert_account", None, "to_make"),
        ],
        elsewhere: [],
    }
    for person, wanted in expected.items():
        assert states(entries(plan, person)) == wanted, person
        explanation = world.planner.explain(person)
        assert evidence(explained(explanation)) == evidence(entries(plan, person)), person
        text = render_explanation(explanation)
        assert ("the LMS already matches" in text) == (person == delivered), person
    assert plan.exit_code == 2
    assert {e.intent.person for e in plan.tracked} == {dead, never_sent}


# -- errors: each dead letter with what it holds back; targets that wait ------------------------


async def test_errors_read_the_rows_a_dead_letter_holds_back(world: World) -> None:
    world.stale_account(20)
    person = world.hire(20)
    other = world.hire(21)
    await world.deliver()
    dead, enrol, cohort = world.rows(person)
    with world.db.read() as conn:
        letters = outbox.dead_letters(conn)
        behind = outbox.blocked_behind(conn, letters)
        waiting = outbox.open_by_target(conn)
    assert [row["id"] for row in letters] == [dead["id"]]
    assert [row["id"] for row in behind[dead["id"]]] == [enrol["id"], cohort["id"]]
    assert waiting == {"moodle": 2}
    assert {row["status"] for row in world.rows(other)} == {"done"}


async def test_a_quarantined_apply_holds_a_dead_letter_until_it_is_approved(
    world: World,
) -> None:
    leavers = [world.hire(number) for number in range(40, 51)]
    world.stale_account(51)
    stuck = world.hire(51)
    await world.deliver()
    hris = Provisioner(world.db, world.catalog, clock=world.clock)  # no rules: nothing projected
    for person in leavers:
        replace = {"op": "replace", "path": f"{HR}:roleCodes", "value": ["EMPLOYEE"]}
        hris.patch(Cause("hris"), "User", person, [replace])
    planner = world.planner
    document = planner.plan_document()
    assert document["status"] == "quarantined"  # 22 removals the LMS confirmed holding
    assert document["states"]["failed"] == 1
    dead = world.rows(stuck)[0]

    run_id, status, written = planner.apply(document, actor="test")
    assert status == "quarantined"
    held = world.rows(stuck)[0]
    assert (held["id"], held["status"], held["run_id"]) == (dead["id"], "dead", run_id)
    (failed,) = [e for e in document["intents"] if e["state"] == "failed"]
    assert held["intent"] == {k: v for k, v in failed.items() if k not in ("state", "outbox")}
    assert await world.deliver() == 0  # quarantined: nothing goes, the dead letter still blocks

    for user in world.site.users.values():
        if user.username == "old.account51":
            user.deleted = True
    assert planner.approve(run_id, actor="admin") == written
    released = world.rows(stuck)[0]
    assert (released["id"], released["status"], released["attempts"]) == (dead["id"], "pending", 0)
    await world.deliver()
    after = world.plan()
    assert after.exit_code == 0 and after.state_counts() == dict.fromkeys(
        ("to_make", "failed", "pending", "waiting"), 0
    )
