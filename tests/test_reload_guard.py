"""Removals by configuration are guarded: a rules reload that would remove people over a rule
file's safety threshold is quarantined — the running bridge keeps the rules in force — until a
plan of the new rules is applied (and approved when quarantined); within it, the reload is
taken and the log says how many people it touches. On a real database with the shipped rules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bridge.cli.serving import build_app
from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.provision.reload_guard import QUARANTINED
from bridge.provision.reload_guard import RELOAD
from bridge.provision.reload_guard import TAKEN
from bridge.provision.reload_guard import ReloadGuard
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.model import RuleSet
from bridge.schemas import Catalog
from bridge.store import runs
from bridge.store.engine import Database
from bridge.targets.moodle import MoodleTarget
from tests.conftest import NOW
from tests.conftest import employee
from tests.conftest import queued
from tests.conftest import shipped_rules
from tests.pilots import uncapped

PEOPLE = 30
BENEFITS = "benefits-2026.yaml"


class Clock:
    """The bridge's time in these tests: moves only when told to."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> None:
        self.now += timedelta(minutes=1)


@dataclass
class Bridge:
    """One running bridge process: its rule book (with the guard) and its SCIM write path."""

    book: RuleBook
    provisioner: Provisioner


def start(rules_dir: Path, db: Database, catalog: Catalog, clock: Clock) -> Bridge:
    book = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    book.load()
    provisioner = Provisioner(db, catalog, rules=book.current, clock=clock)
    book.gate = ReloadGuard(db, provisioner.store, catalog, clock=clock)
    return Bridge(book, provisioner)


def hire(bridge: Bridge, number: int, codes: list[str] | None = None) -> str:
    person = employee(number, codes=codes or ["BEN_CHOICE_2026", "EMPLOYEE"])
    outcome = bridge.provisioner.create(Cause("test"), "User", person)
    return str(outcome.record.id)


async def deliver(db: Database, ruleset: RuleSet | None, clock: Clock) -> None:
    """The relay delivers the outbox to the LMS simulator: the LMS confirms what it holds."""
    assert ruleset is not None
    target = MoodleTarget(
        ruleset.targets["moodle"],
        SIM_MOODLE_TOKEN,
        transport=httpx.ASGITransport(app=create_simulator(Knobs(seed=1))),
    )
    relay = Relay(db, {"moodle": target}, clock=clock)
    while await relay.run_once():
        pass


def edit(rules_dir: Path, old: str, new: str) -> None:
    path = rules_dir / BENEFITS
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def admin_plans_applies_and_approves(
    rules_dir: Path, db: Database, catalog: Catalog, clock: Clock
) -> tuple[str, str]:
    """What `bridge plan --out`, `bridge apply` and (if quarantined) `bridge approve` do: the
    rules directory as it is on disk."""
    disk = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    disk.load()
    planner = Planner(db, Provisioner(db, catalog).store, catalog, disk.current, clock)
    run_id, status, _ = planner.apply(planner.plan_document(), actor="cli:admin")
    if status == QUARANTINED:
        planner.approve(run_id, actor="cli:admin")
    return run_id, status


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def reload_runs(db: Database) -> dict[str, object] | None:
    with db.read() as conn:
        return runs.latest(conn, kind=RELOAD)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The shipped rules without the pilot's cap: each SCIM write admits its person."""
    return uncapped(shipped_rules(tmp_path))


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def bridge(rules_dir: Path, db: Database, catalog: Catalog, clock: Clock) -> Bridge:
    """The shipped rules, 30 Claims people holding BEN_CHOICE_2026 projected by SCIM writes
    and confirmed by the LMS."""
    running = start(rules_dir, db, catalog, clock)
    for number in range(PEOPLE):
        hire(running, number)
    await deliver(db, running.book.current(), clock)
    clock.tick()
    return running


# -- (a) a deleted rule file ---------------------------------------------------------------------


async def test_deleting_a_rule_file_with_people_in_scope_is_quarantined(
    bridge: Bridge, rules_dir: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    before = bridge.book.current()
    assert before is not None
    (rules_dir / BENEFITS).unlink()
    caplog.set_level(logging.INFO, logger="bridge")

    assert not bridge.book.reload()

    assert bridge.book.current() is before
    assert bridge.book.quarantined is not None and not bridge.book.quarantined.files
    [error] = lines(caplog, logging.ERROR)
    assert f"quarantined rules version {bridge.book.quarantined.version}" in error
    assert f"keeping version {before.version}" in error
    assert "would remove 30 people (30 removal intents), over the safety threshold" in error
    assert "benefits-2026.yaml (deleted): 30 people touched, 30 removed" in error
    assert "30 removals exceed max_removals 20" in error
    assert "bridge plan" in error and "bridge apply" in error and "bridge approve RUN" in error

    caplog.clear()
    assert not bridge.book.reload()  # asked again at the next poll, logged once
    assert lines(caplog, logging.ERROR) == []
    assert bridge.book.current() is before

    # live writes still project the rules in force
    hire(bridge, 100)
    assert {(i["kind"], i.get("ref")) for i in queued(db)} == {
        ("upsert_account", None),
        ("enrol", "BEN-2026"),
        ("add_cohort_member", "BEN2026"),
    }
    decision = reload_runs(db)
    assert decision is not None and decision["status"] == QUARANTINED


async def test_a_deleted_rule_file_is_taken_once_a_plan_of_the_new_rules_is_applied(
    bridge: Bridge, rules_dir: Path, db: Database, catalog: Catalog, clock: Clock
) -> None:
    (rules_dir / BENEFITS).unlink()
    assert not bridge.book.reload()
    clock.tick()

    admin_plans_applies_and_approves(rules_dir, db, catalog, clock)

    assert bridge.book.reload()
    current = bridge.book.current()
    assert current is not None and current.files == ()
    assert bridge.book.quarantined is None


# -- (b) approval ---------------------------------------------------------------------------------


async def test_a_quarantined_reload_is_taken_once_its_plan_is_approved(
    bridge: Bridge,
    rules_dir: Path,
    db: Database,
    catalog: Catalog,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = bridge.book.current()
    edit(rules_dir, "course: BEN-2026\n", "course: BEN-2027\n")  # 30 suspended enrolments
    assert not bridge.book.reload()
    assert "30 removal intents" in str(bridge.book.quarantine_reason)
    clock.tick()

    disk = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    disk.load()
    planner = Planner(db, bridge.provisioner.store, catalog, disk.current, clock)
    run_id, status, _ = planner.apply(planner.plan_document(), actor="cli:admin")
    assert status == QUARANTINED
    assert not bridge.book.reload()  # quarantined as a run, not approved yet
    assert bridge.book.current() is before

    clock.tick()
    planner.approve(run_id, actor="cli:admin")
    caplog.set_level(logging.INFO, logger="bridge")
    assert bridge.book.reload()

    current = bridge.book.current()
    assert current is not None and current.version == disk.current().version  # type: ignore[union-attr]
    [warning] = lines(caplog, logging.WARNING)
    assert f"taken out of quarantine: run {run_id}" in warning
    assert "approved by cli:admin" in warning
    assert "touches 30 people: removes 30 (30 removal intents)" in warning


def test_only_a_run_released_after_the_quarantine_releases_it(db: Database) -> None:
    def run(run_id: str, status: str, at: datetime, version: str = "v2") -> None:
        with db.write() as conn:
            runs.create(
                conn,
                run_id,
                kind="apply",
                status=status,
                rules_version=version,
                summary=None,
                now=at,
                actor="cli:admin",
            )

    def released(since: datetime) -> str | None:
        with db.read() as conn:
            found = runs.released_since(conn, "v2", since)
        return None if found is None else str(found["id"])

    minute = timedelta(minutes=1)
    run("old", "applied", NOW)  # applied before the reload was quarantined
    run("other-version", "applied", NOW + 3 * minute, version="v3")
    run("held", "quarantined", NOW + minute)
    assert released(NOW + 2 * minute) is None
    with db.write() as conn:
        runs.approve(conn, "held", actor="cli:admin", now=NOW + 4 * minute)
    assert released(NOW + 2 * minute) == "held"  # quarantined before, approved after
    assert released(NOW + 5 * minute) is None


# -- (c), (d) within the threshold ----------------------------------------------------------------


async def test_a_reload_within_the_threshold_is_taken_with_a_warning_counting_the_people(
    bridge: Bridge, rules_dir: Path, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    edit(
        rules_dir,
        """filter: 'department eq "Claims" and employmentStatus ne "terminated"'""",
        """filter: 'department eq "Claims" and employmentStatus ne "terminated" and userName ne "emp3@example.com"'""",
    )

    assert bridge.book.reload()

    [warning] = lines(caplog, logging.WARNING)
    assert "touches 1 person: removes 1 (1 removal intent)" in warning
    assert (
        "benefits-2026.yaml: 1 person touched, 1 removed, 1 removal intent of 1 intent" in warning
    )
    assert "1 removals of 30 projected (3.3%)" in warning
    assert lines(caplog, logging.ERROR) == []
    decision = reload_runs(db)
    assert decision is not None and decision["status"] == TAKEN


async def test_an_additive_reload_is_taken_with_an_info_line(
    bridge: Bridge, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    edit(
        rules_dir,
        "\ncohorts:\n",
        "\n  - id: code-of-conduct\n"
        "    when: 'roleCodes eq \"EMPLOYEE\"'\n"
        "    course: COC-2026\n"
        "\ncohorts:\n",
    )

    assert bridge.book.reload()

    assert lines(caplog, logging.WARNING) == []
    assert any("touches 30 people: removes nobody" in line for line in lines(caplog, logging.INFO))


# -- one decision for every process ---------------------------------------------------------------


async def test_every_process_follows_the_first_decision(
    rules_dir: Path, db: Database, catalog: Catalog, clock: Clock
) -> None:
    edit(rules_dir, "  max_removals_percent: 10\n", "")  # count only: 20 people
    first = start(rules_dir, db, catalog, clock)
    second = start(rules_dir, db, catalog, clock)  # another worker of the same serve
    people = [hire(first, number) for number in range(PEOPLE)]
    kept = second.book.current()
    (rules_dir / BENEFITS).unlink()
    assert not first.book.reload()

    for person in people[:15]:  # leavers: suspended under the rules in force
        first.provisioner.delete(Cause("test"), "User", person)
    assert kept is not None
    fresh = ReloadGuard(db, first.provisioner.store, catalog, clock=clock)
    on_disk, _ = check_directory(rules_dir, catalog)
    assert on_disk is not None
    assert not fresh.impact(kept, on_disk).quarantined  # 15 left: within the threshold now

    assert not second.book.reload()  # yet the second process follows the first's decision
    assert second.book.current() is kept
    assert second.book.quarantine_reason == first.book.quarantine_reason


def test_serve_guards_its_rules_reloads(
    rules_dir: Path, db: Database, catalog: Catalog, settings: Settings, clock: Clock
) -> None:
    running = start(rules_dir, db, catalog, clock)
    for number in range(PEOPLE):
        hire(running, number)
    served = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    served.load()
    app = build_app(settings, served, relay_in_process=False)
    try:
        (rules_dir / BENEFITS).unlink()

        assert not served.reload()
        assert "benefits-2026.yaml (deleted)" in str(served.quarantine_reason)
    finally:
        app.state.server.provisioner.db.dispose()


# -- the book's gate, on plain data ---------------------------------------------------------------


def test_the_book_asks_the_gate_at_every_poll_and_logs_a_refusal_once(
    rules_dir: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    answers: list[str | None] = []
    asked: list[tuple[str | None, str]] = []

    def gate(old: RuleSet | None, new: RuleSet) -> str | None:
        asked.append((old.version if old else None, new.version))
        return answers.pop(0)

    book = RuleBook(rules_dir, lambda d: check_directory(d, catalog), gate=gate)
    first = book.load()
    assert asked == []  # the first load has nothing to keep
    edit(rules_dir, "max_removals: 20", "max_removals: 10")
    answers[:] = ["too many", "too many", None]

    assert not book.reload()
    assert not book.reload()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert book.current() is first
    assert book.reload()
    assert book.current() is not first and book.quarantined is None
    assert len(asked) == 3 and asked[0] == asked[2] and asked[0][0] == first.version
    assert not book.reload()  # taken: nothing to ask until the files change
    assert len(asked) == 3


def test_a_gate_that_fails_keeps_the_rules_in_force(rules_dir: Path, catalog: Catalog) -> None:
    def gate(old: RuleSet | None, new: RuleSet) -> str | None:
        raise ConnectionError("database unreachable")

    book = RuleBook(rules_dir, lambda d: check_directory(d, catalog), gate=gate)
    first = book.load()
    edit(rules_dir, "max_removals: 20", "max_removals: 10")

    assert not book.reload()
    assert book.current() is first
    assert "database unreachable" in str(book.quarantine_reason)
