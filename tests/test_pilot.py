"""A capped pilot is a draw (bridge/rules/pilot.py): the same members whatever order the IdP
pushes people in, drawn by ``bridge plan`` + ``bridge apply`` and never filled by SCIM writes;
and ``bridge explain`` is the plan restricted to one person, so the two always agree.

The pure rule is checked on plain data over many orders (a seeded generator); the rest
through the real SCIM write path (``Provisioner`` with the shipped rules), the planner and the
relay on a real database.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.engine import in_sample
from bridge.rules.engine import sample_rank
from bridge.rules.model import Pilot
from bridge.rules.pilot import ADMITTED
from bridge.rules.pilot import OUTSIDE_FILTER
from bridge.rules.pilot import WAITING
from bridge.rules.pilot import Draw
from bridge.rules.pilot import admission
from bridge.rules.pilot import draw
from bridge.rules.plan import Plan
from bridge.rules.plan import Tracked
from bridge.schemas import Catalog
from bridge.store import projections
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.targets.moodle import MoodleTarget
from tests.conftest import ENTERPRISE
from tests.conftest import HR
from tests.conftest import NOW
from tests.conftest import clean_database
from tests.conftest import employee
from tests.conftest import queued
from tests.conftest import shipped_rules
from tests.pilots import CAP

TODAY = NOW.date()
RULE_FILE = "benefits-2026"


# -- the rule, on plain data ------------------------------------------------------------------


def population(size: int, rng: random.Random) -> list[tuple[str, str, bool]]:
    """(person id, key, in the scope filter) — keys named so that sorting them is meaningful."""
    return [(f"id-{n}", f"E{n:05d}", rng.random() < 0.7) for n in range(size)]


def drawn(
    pilot: Pilot, people: list[tuple[str, str, bool]], staying: Collection[str] = ()
) -> frozenset[str]:
    in_filter = [(person, key) for person, key, matches in people if matches]
    return draw(pilot, in_filter, staying=staying, today=TODAY).admitted


def eligible(pilot: Pilot, key: str) -> bool:
    """In the sample and the pilot not ended (worked out apart from the code under test)."""
    return in_sample(pilot, key) and (pilot.ends is None or pilot.ends >= TODAY)


def top(pilot: Pilot, people: list[tuple[str, str, bool]], seats: int) -> set[str]:
    """The first ``seats`` eligible people by hash rank: what the draw must pick."""
    ranked = sorted(
        (sample_rank(pilot, key), person)
        for person, key, matches in people
        if matches and eligible(pilot, key)
    )
    return {person for _, person in ranked[:seats]}


@pytest.mark.parametrize("sample_percent", [None, 40.0])
def test_a_draw_is_the_same_in_any_order_and_takes_the_top_by_hash(
    sample_percent: float | None,
) -> None:
    rng = random.Random(2026)
    for trial in range(30):
        pilot = Pilot(
            max_people=rng.randint(1, 40), sample_percent=sample_percent, seed=f"s{trial}"
        )
        people = population(rng.randint(0, 120), rng)
        expected = drawn(pilot, people)
        by_key = sorted(people, key=lambda p: p[1])
        orders = [by_key, by_key[::-1], *(rng.sample(people, len(people)) for _ in range(5))]
        assert all(drawn(pilot, order) == expected for order in orders)
        assert expected == top(pilot, people, pilot.max_people or 0)
        assert len(expected) <= (pilot.max_people or 0)


def test_the_draw_admits_exactly_whom_admission_takes_with_it() -> None:
    rng = random.Random(7)
    for trial in range(30):
        pilot = Pilot(
            max_people=rng.choice([None, 5, 30]),
            sample_percent=rng.choice([None, 50.0]),
            seed=str(trial),
            ends=rng.choice([None, TODAY, TODAY - timedelta(days=1)]),
        )
        people = population(60, rng)
        staying = {person for person, _, _ in people if rng.random() < 0.1}
        in_filter = [(person, key) for person, key, matches in people if matches]
        result = draw(pilot, in_filter, staying=staying, today=TODAY)
        for person, key, matches in people:
            seat = admission(
                pilot,
                person,
                key,
                admitted=person in staying,
                in_filter=matches,
                today=TODAY,
                draw=result,
            )
            assert seat.admitted == (person in result.admitted), (trial, person, seat)
            if not matches:
                assert seat == admission(
                    pilot, person, key, admitted=True, in_filter=False, today=TODAY
                )
                assert seat.reason == OUTSIDE_FILTER and not seat.admitted


def test_who_is_admitted_stays_and_only_free_seats_are_drawn() -> None:
    pilot = Pilot(max_people=5, seed="benefits-2026")
    people = [(f"id-{n}", f"E{n:05d}", True) for n in range(20)]
    ranked = sorted(people, key=lambda p: sample_rank(pilot, p[1]))
    worst = {ranked[-1][0], ranked[-2][0]}  # admitted before, however poor their rank
    outside = ("id-out", "E99999", False)  # projected in scope once, no longer in the filter
    admitted = drawn(pilot, [*people, outside], staying={*worst, "id-out"})
    assert worst < admitted and "id-out" not in admitted
    assert admitted - worst == {person for person, _, _ in ranked[:3]}  # 5 seats − 2 taken
    full = drawn(pilot, people, staying={person for person, _, _ in ranked[-5:]})
    assert full == {person for person, _, _ in ranked[-5:]}  # nobody new: the pilot is full


def test_each_verdict_says_why() -> None:
    pilot = Pilot(max_people=2, sample_percent=50, seed="x", ends=date(2027, 6, 30))
    keys = [f"E{n:05d}" for n in range(40)]
    inside = [k for k in keys if eligible(pilot, k)]
    outside = [k for k in keys if k not in inside]
    assert inside and outside
    seats = draw(pilot, [(k, k) for k in inside], staying=(), today=TODAY)
    order = sorted(inside, key=lambda k: sample_rank(pilot, k))

    def why(key: str, **kwargs: Any) -> tuple[bool, str]:
        options = {"admitted": False, "in_filter": True, "today": TODAY, "draw": seats} | kwargs
        seat = admission(pilot, key, key, **options)
        return seat.admitted, seat.reason

    n = len(inside)
    assert why(order[0]) == (
        True,
        f"drawn: rank 1 of {n} for 2 free seats (admitted by the next `bridge apply`)",
    )
    assert why(order[2]) == (
        False,
        f"not drawn: rank 3 of {n} for 2 free seats: the pilot is full (2 people)",
    )
    assert why(order[2], draw=None) == (False, WAITING)  # a live write
    assert why(order[2], admitted=True) == (True, ADMITTED)
    assert why(outside[0]) == (False, "outside the 50% sample")
    assert why(order[0], today=date(2027, 7, 1)) == (False, "the pilot ended on 2027-06-30")
    assert why(order[0], today=date(2027, 7, 1), admitted=True) == (True, ADMITTED)
    assert why(order[0], in_filter=False, admitted=True) == (False, OUTSIDE_FILTER)
    uncapped = Pilot(sample_percent=50, seed="x")
    assert admission(uncapped, order[5], order[5], admitted=False, in_filter=True, today=TODAY) == (
        admission(
            uncapped, order[5], order[5], admitted=False, in_filter=True, today=TODAY, draw=Draw()
        )
    )
    assert admission(
        uncapped, order[5], order[5], admitted=False, in_filter=True, today=TODAY
    ).admitted
    assert admission(None, "p", "p", admitted=False, in_filter=True, today=TODAY).admitted


# -- through the SCIM write path, plan and apply ------------------------------------------------


@dataclass
class Bridge:
    """One fresh database with rules of a rules directory: SCIM writes, plans, deliveries."""

    db: Database
    catalog: Catalog
    book: RuleBook
    clock: Callable[[], datetime] = lambda: NOW

    @property
    def scim(self) -> Provisioner:
        return Provisioner(self.db, self.catalog, rules=self.book.current, clock=self.clock)

    @property
    def planner(self) -> Planner:
        return Planner(self.db, self.scim.store, self.catalog, self.book.current, self.clock)

    def push(self, docs: list[dict[str, Any]]) -> dict[str, str]:
        """The IdP's push, in the order given; externalId → SCIM id."""
        return {
            str(doc["externalId"]): self.scim.create(Cause("okta"), "User", doc).record.id
            for doc in docs
        }

    def apply(self) -> int:
        planner = self.planner
        run_id, status, written = planner.apply(planner.plan_document(), actor="admin")
        assert status == "applied", run_id
        return written

    def in_scope(self) -> set[str]:
        with self.db.read() as conn:
            found = projections.of_rule_file(conn, RULE_FILE)
        return {person for person, projection in found.items() if projection.in_scope}

    def admitted(self) -> set[str]:
        """Whom the scope takes in a plan now: the admitted, and the drawn."""
        standing = self.planner.compute().standing
        assert standing is not None
        return set(standing.draws[RULE_FILE].admitted)


def rules(directory: Path, *, cap: int, sample: float | None = None) -> Path:
    """The shipped rules with the pilot capped at ``cap`` (and a ``sample_percent``)."""
    found = shipped_rules(directory)
    path = found / "benefits-2026.yaml"
    text = path.read_text()
    pilot = f"    max_people: {cap}\n" + (f"    sample_percent: {sample}\n" if sample else "")
    assert CAP in text
    path.write_text(text.replace(CAP, pilot))
    return found


def load(directory: Path, catalog: Catalog) -> RuleBook:
    book = RuleBook(directory, lambda d: check_directory(d, catalog))
    book.load()
    return book


def hr_population(size: int, rng: random.Random) -> list[dict[str, Any]]:
    """People in and out of the Claims scope, terminated, some without a work email."""
    docs = []
    for number in range(size):
        doc = employee(
            number,
            codes=["BEN_CHOICE_2026", "MANAGER"] if rng.random() < 0.2 else ["BEN_CHOICE_2026"],
            department="Claims" if rng.random() < 0.75 else "Sales",
            email=rng.random() > 0.1,
        )
        doc["name"]["familyName"] = rng.choice(["Adams", "Baker", "Chen", "Diaz", "Evans"])
        if rng.random() < 0.1:
            doc[HR]["employmentStatus"] = "terminated"
        docs.append(doc)
    return docs


def eligible_top(docs: list[dict[str, Any]], pilot: Pilot, seats: int) -> set[str]:
    """The externalIds of the first ``seats`` eligible people by hash: who must be drawn."""
    ranked = sorted(
        (sample_rank(pilot, str(doc["externalId"])), str(doc["externalId"]))
        for doc in docs
        if doc[ENTERPRISE]["department"] == "Claims"
        and doc[HR]["employmentStatus"] != "terminated"
        and eligible(pilot, str(doc["externalId"]))
    )
    return {key for _, key in ranked[:seats]}


def fresh(
    kind: str,
    directory: Path,
    sqlite_template: Path,
    postgres_url: str | None,
    catalog: Catalog,
    rules_dir: Path,
) -> Bridge:
    directory.mkdir()
    url = clean_database(kind, directory, sqlite_template, postgres_url)
    db = connect(url)
    db.upgrade()
    return Bridge(db, catalog, load(rules_dir, catalog))


def test_every_eligible_person_missing_a_required_value_is_listed_seat_or_not(
    database_url: str,
    sqlite_template: Path,
    postgres_url: str | None,
    tmp_path: Path,
    catalog: Catalog,
) -> None:
    """An eligible person with no work email is an attention item whether the draw seated
    them or the pilot was full, and an unknown role code counts its unseated holders too:
    nobody vanishes from the list."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    docs = hr_population(48, random.Random(11))
    pilot = Pilot(max_people=9, seed="benefits-2026")
    eligible_without_email = {
        str(doc["externalId"])
        for doc in docs
        if doc[ENTERPRISE]["department"] == "Claims"
        and doc[HR]["employmentStatus"] != "terminated"
        and not doc["emails"]
    }
    seated = eligible_top(docs, pilot, 9)
    assert eligible_without_email - seated, "some must be left without a seat"
    misspelt = [
        doc
        for doc in docs
        if doc[ENTERPRISE]["department"] == "Claims"
        and doc[HR]["employmentStatus"] != "terminated"
        and str(doc["externalId"]) not in seated
    ][:2]
    for doc in misspelt:  # HR's typo, on people the draw leaves out
        doc[HR]["roleCodes"] = ["BEN-CHOICE-2026"]
    bridge = fresh(
        kind, tmp_path / "db", sqlite_template, postgres_url, catalog, rules(tmp_path, cap=9)
    )
    try:
        ids = bridge.push(docs)
        bridge.apply()
        plan = bridge.planner.compute().plan
    finally:
        bridge.db.dispose()
    external = {scim_id: key for key, scim_id in ids.items()}
    listed = {
        external[item.person]
        for item in plan.attention
        if item.kind == "problem" and item.person and "missing required email" in item.reason
    }
    assert listed == eligible_without_email
    unseated = [
        item.reason
        for item in plan.attention
        if item.person and external[item.person] in eligible_without_email - seated
    ]
    assert unseated and all("eligible, not drawn (rank " in reason for reason in unseated)
    (code,) = [item for item in plan.attention if item.kind == "unknown-role-code"]
    assert code.details["code"] == "BEN-CHOICE-2026" and code.details["count"] == 2
    assert {external[p] for p in code.people} == {str(d["externalId"]) for d in misspelt}


@pytest.mark.parametrize("sample", [None, 60.0])
def test_one_population_pushed_in_any_order_draws_the_same_pilot(
    database_url: str,
    sqlite_template: Path,
    postgres_url: str | None,
    tmp_path: Path,
    catalog: Catalog,
    sample: float | None,
) -> None:
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    rng = random.Random(11)
    docs = hr_population(48, rng)
    by_name = sorted(docs, key=lambda d: (d["name"]["familyName"], d["name"]["givenName"]))
    orders = {
        "by name": by_name,
        "reversed": by_name[::-1],
        "shuffled": rng.sample(docs, len(docs)),
        "shuffled again": rng.sample(docs, len(docs)),
    }
    rules_dir = rules(tmp_path, cap=9, sample=sample)
    pilot = Pilot(max_people=9, sample_percent=sample, seed="benefits-2026")
    expected = eligible_top(docs, pilot, 9)
    assert len(expected) == 9  # more eligible people than seats: the cap bites
    without_email = {str(d["externalId"]) for d in docs if not d["emails"]}
    members = {}
    for number, (name, order) in enumerate(orders.items()):
        bridge = fresh(
            kind, tmp_path / f"order{number}", sqlite_template, postgres_url, catalog, rules_dir
        )
        try:
            ids = bridge.push(order)
            assert queued(bridge.db) == [] and bridge.in_scope() == set(), name  # nobody filled
            external = {scim_id: key for key, scim_id in ids.items()}
            bridge.apply()
            members[name] = {external[p] for p in bridge.admitted()}
            # the drawn are projected in scope; one without a work email holds the seat in
            # the plan (a problem to fix) but has no account to project yet
            assert {external[p] for p in bridge.in_scope()} == members[name] - without_email
            assert bridge.apply() == 0, name  # drawn once: nothing left to change
        finally:
            bridge.db.dispose()
    assert all(found == expected for found in members.values()), members


async def test_seats_stay_taken_and_a_wider_pilot_draws_the_next_by_hash(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    rules_dir = rules(tmp_path, cap=5)
    bridge = Bridge(db, catalog, load(rules_dir, catalog))
    pilot = Pilot(max_people=5, seed="benefits-2026")
    first = [employee(n, codes=["BEN_CHOICE_2026"]) for n in range(20)]
    ids = bridge.push(first)
    assert bridge.apply() == 15  # 5 people × (account, course, cohort)
    day0 = {ids[key] for key in eligible_top(first, pilot, 5)}
    assert bridge.in_scope() == day0

    # Newcomers, some ranked before everyone admitted: they wait, nobody is displaced.
    later = [employee(n, codes=["BEN_CHOICE_2026"]) for n in range(20, 60)]
    ids |= bridge.push(later)
    worst = max(sample_rank(pilot, key) for key in eligible_top(first, pilot, 5))
    assert any(sample_rank(pilot, str(d["externalId"])) < worst for d in later)
    assert bridge.in_scope() == day0 and bridge.admitted() == day0
    explained = bridge.planner.explain("E00020").files[0]
    assert not explained.admitted and "the pilot is full (5 people)" in explained.admission_reason
    assert bridge.apply() == 0

    # Someone admitted leaves the scope: their seat goes to the best-ranked candidate.
    leaver = next(iter(day0))
    bridge.scim.patch(
        Cause("okta"),
        "User",
        leaver,
        [{"op": "replace", "path": f"{HR}:employmentStatus", "value": "terminated"}],
    )
    remaining = [d for d in first + later if ids[str(d["externalId"])] not in day0]
    (successor,) = eligible_top(remaining, pilot, 1)
    assert bridge.apply() > 0
    assert bridge.in_scope() == day0 - {leaver} | {ids[successor]}

    # Roll out: raise the cap, and the next apply draws the next people by hash.
    path = rules_dir / "benefits-2026.yaml"
    path.write_text(path.read_text().replace("max_people: 5", "max_people: 12"))
    assert bridge.book.reload()
    before = bridge.in_scope()
    waiting = [d for d in remaining if str(d["externalId"]) != successor]
    assert bridge.apply() == 7 * 3
    assert bridge.in_scope() == before | {ids[key] for key in eligible_top(waiting, pilot, 7)}

    # After the end date nobody new is admitted; who is in stays.
    path.write_text(path.read_text().replace("ends: 2027-06-30", "ends: 2026-10-31"))
    assert bridge.book.reload()
    path.write_text(path.read_text().replace("max_people: 12", "max_people: 40"))
    assert bridge.book.reload()
    kept = bridge.in_scope()
    assert bridge.apply() == 0 and bridge.in_scope() == kept
    outsider = next(key for key, person in ids.items() if person not in kept)
    ended = bridge.planner.explain(outsider).files[0]
    assert (ended.admitted, ended.admission_reason) == (False, "the pilot ended on 2026-10-31")


# -- explain is the plan restricted to one person ----------------------------------------------


def entries(plan: Plan, person: str) -> list[tuple[Any, ...]]:
    return evidence([e for e in (*plan.tracked, *plan.in_flight) if e.intent.person == person])


def evidence(tracked: list[Tracked]) -> list[tuple[Any, ...]]:
    """Per intent: everything plan and explain must agree on (the intent, its state, its row)."""
    return sorted(
        (
            e.intent.rule,
            e.intent.kind.value,
            e.intent.ref or "",
            repr(sorted(e.intent.data.items())),
            e.state,
            e.row.id if e.row else 0,
            e.blocked_by.id if e.blocked_by else 0,
            e.waiting or "",
        )
        for e in tracked
    )


def assert_explain_is_the_plan(bridge: Bridge, stage: str) -> None:
    planner = bridge.planner
    computed = planner.compute()
    plan, standing = computed.plan, computed.standing
    assert standing is not None
    ruleset = bridge.book.current()
    assert ruleset is not None
    rule_file = ruleset.files[0]
    scope = rule_file.scope.filter
    assert scope is not None
    with bridge.db.read() as conn:
        people = [(pid, key) for pid, key in bridge.scim.store.keys(conn, "User")]
    for person, _ in people:
        (file,) = planner.explain(person).files
        where = (stage, person, file.admission_reason)
        assert file.scope_verdict == (person in standing.matches[scope]), where
        assert file.admitted == standing.admitted(rule_file, person), where
        if not file.scope_verdict:
            assert not file.admitted and file.admission_reason == OUTSIDE_FILTER, where
        assert file.in_scope == file.admitted, where
        assert evidence(file.tracked) == entries(plan, person), where


async def test_explain_agrees_with_the_plan_for_everyone_at_every_stage(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    rng = random.Random(5)
    clock = [NOW]
    bridge = Bridge(
        db, catalog, load(rules(tmp_path, cap=8, sample=70.0), catalog), lambda: clock[0]
    )
    simulator = create_simulator(Knobs(seed=4))
    docs = hr_population(36, rng)

    async def deliver() -> None:
        ruleset = bridge.book.current()
        assert ruleset is not None
        target = MoodleTarget(
            ruleset.targets["moodle"],
            SIM_MOODLE_TOKEN,
            transport=httpx.ASGITransport(app=simulator),
        )
        relay = Relay(
            db,
            {"moodle": target},
            clock=lambda: clock[0],
            policy=RetryPolicy(base=30, cap=60, jitter=0, max_attempts=5),
        )
        for _ in range(200):
            if not await relay.run_once():
                break
        await target.aclose()

    # Stored before the rules existed: never projected.
    bare = Provisioner(db, catalog, clock=lambda: clock[0])
    for doc in docs[:20]:
        bare.create(Cause("hris"), "User", doc)
    assert_explain_is_the_plan(bridge, "stored, never projected")

    # Live writes: newcomers wait for the draw, changes to the stored people too.
    ids = bridge.push(docs[20:])
    assert queued(db) == []
    assert_explain_is_the_plan(bridge, "after live writes")

    bridge.apply()
    assert_explain_is_the_plan(bridge, "drawn, not delivered")

    # An account the LMS already holds under one drawn person's email: their create fails.
    with db.read() as conn:
        drawn_docs = [bridge.scim.store.get(conn, "User", p) for p in sorted(bridge.in_scope())]
    emails = [
        r.doc["emails"][0]["value"] for r in drawn_docs if r is not None and r.doc.get("emails")
    ]
    simulator.state.moodle.add_user("stale.one", email=emails[0], firstname="O", lastname="X")
    clock[0] += timedelta(seconds=5)
    await deliver()
    assert_explain_is_the_plan(bridge, "delivered")

    # Day 2: role codes lost, a termination, more newcomers; some delivered, some not.
    admitted = sorted(bridge.in_scope())
    for person in admitted[:2]:
        bridge.scim.patch(
            Cause("okta"),
            "User",
            person,
            [{"op": "replace", "path": f"{HR}:roleCodes", "value": ["EMPLOYEE"]}],
        )
    bridge.scim.patch(
        Cause("okta"),
        "User",
        admitted[2],
        [{"op": "replace", "path": f"{HR}:employmentStatus", "value": "terminated"}],
    )
    ids |= bridge.push(hr_population(44, random.Random(6))[36:])
    assert_explain_is_the_plan(bridge, "day 2, queued")
    clock[0] += timedelta(seconds=5)
    await deliver()
    assert_explain_is_the_plan(bridge, "day 2, delivered")
    bridge.apply()
    assert_explain_is_the_plan(bridge, "day 2, drawn again")
    assert ids


def test_someone_seated_before_takes_a_free_seat_back_and_ranks_first_in_a_draw(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    """A termination reverted (or a rehire) gives the seat back while it is free; once the
    draw has given it away, the returning person waits and is drawn before any newcomer."""
    rules_dir = rules(tmp_path, cap=3)
    bridge = Bridge(db, catalog, load(rules_dir, catalog))
    pilot = Pilot(max_people=3, seed="benefits-2026")
    people = [employee(n, codes=["BEN_CHOICE_2026"]) for n in range(12)]
    ids = bridge.push(people)
    bridge.apply()
    seated = bridge.in_scope()
    ranked = sorted(
        seated, key=lambda p: sample_rank(pilot, next(k for k, v in ids.items() if v == p))
    )
    leaver = ranked[-1]  # the worst-ranked of the seated: any newcomer drawn first would beat it

    def status(value: str) -> None:
        bridge.scim.patch(
            Cause("okta"),
            "User",
            leaver,
            [{"op": "replace", "path": f"{HR}:employmentStatus", "value": value}],
        )

    status("terminated")
    assert bridge.in_scope() == seated - {leaver}
    status("active")  # the termination reverted: the seat is still free
    assert bridge.in_scope() == seated
    assert queued(bridge.db)[-1]["kind"] == "reactivate_account"

    status("terminated")
    bridge.apply()  # the draw gives the freed seat to the best-ranked newcomer
    assert len(bridge.in_scope()) == 3 and leaver not in bridge.in_scope()
    status("active")  # back, but the pilot is full: waits, displaces nobody
    assert leaver not in bridge.in_scope()
    explained = bridge.planner.explain(leaver).files[0]
    assert not explained.admitted and "the pilot is full" in explained.admission_reason

    path = rules_dir / "benefits-2026.yaml"
    path.write_text(path.read_text().replace("max_people: 3", "max_people: 4"))
    assert bridge.book.reload()
    explained = bridge.planner.explain(leaver).files[0]
    assert explained.admitted and "rank 1 of" in explained.admission_reason
    bridge.apply()
    assert leaver in bridge.in_scope()
