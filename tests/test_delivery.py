"""Delivery to the LMS simulator, however it misbehaves: kill -9 of the relay, an outage, a 429
storm. Nothing is lost and nothing is made twice (DESIGN §2: at-least-once, effectively-once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.rules import check_rules
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.model import Target as TargetConfig
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.moodle import MoodleTarget
from tests.conftest import ROOT
from tests.conftest import employee
from tests.conftest import shipped_rules
from tests.pilots import draw

CAUSE = Cause("hris")


def moodle_config(base_url: str = "http://moodle.test") -> TargetConfig:
    return TargetConfig("moodle", "moodle", base_url, {"token": "MOODLE_TOKEN"}, {"auth": "oauth2"})


def now() -> datetime:
    return datetime.now(UTC)


def seed(provisioner: Provisioner, people: int, codes: list[str] | None = None) -> None:
    """People provisioned over SCIM, then the capped pilot drawn (plan + apply) as on day 0."""
    for number in range(people):
        provisioner.create(CAUSE, "User", employee(number, codes=codes or ["BEN_CHOICE_2026"]))
    draw(provisioner)


def backlog(db: Database) -> int:
    with db.read() as conn:
        return outbox.backlog(conn)


def assert_effectively_once(state: dict[str, Any], people: int) -> None:
    users = [u for u in state["users"] if not u.get("deleted") and u["username"].startswith("emp")]
    assert len(users) == people
    assert len({u["username"] for u in users}) == people
    keys = Counter((e["userid"], e["course"]) for e in state["enrolments"])
    assert all(count == 1 for count in keys.values())
    enrolled = {e["userid"] for e in state["enrolments"] if e["course"] == "BEN-2026"}
    assert len(enrolled) == people


async def relay_until_drained(relay: Relay, db: Database, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while backlog(db) and time.monotonic() < deadline:
        if not await relay.run_once():
            await asyncio.sleep(0.02)
    assert backlog(db) == 0


@pytest.fixture
def ruled_now(db: Database, catalog: Catalog, book: RuleBook) -> Provisioner:
    return Provisioner(db, catalog, rules=book.current)


async def test_an_outage_is_ridden_out_and_the_backlog_drains(
    ruled_now: Provisioner, db: Database
) -> None:
    simulator = create_simulator(Knobs(seed=1))
    seed(ruled_now, 20)
    knobs: Knobs = simulator.state.knobs
    knobs.outage(1.0)  # the guide's 2-minute outage, scaled down
    target = MoodleTarget(
        moodle_config(), SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=simulator)
    )
    relay = Relay(
        db, {"moodle": target}, clock=now, policy=RetryPolicy(base=0.05, cap=0.3, max_attempts=100)
    )
    await relay.run_once()
    with db.read() as conn:
        waited = [e for e in journal.read(conn) if e.op == "deliver.wait"]
    assert waited, "the outage must have been met (and waited out, not charged)"
    await relay_until_drained(relay, db)
    assert_effectively_once(simulator.state.moodle.snapshot(), 20)
    with db.read() as conn:
        assert outbox.dead_letters(conn) == []


async def test_an_outage_longer_than_the_whole_retry_budget_drains_once_it_ends(
    ruled_now: Provisioner, db: Database
) -> None:
    """Three attempts of budget, an outage of many times that: nothing dead-letters, no
    attempt is charged, and everything arrives once within seconds of recovery."""
    simulator = create_simulator(Knobs(seed=3))
    seed(ruled_now, 12)
    knobs: Knobs = simulator.state.knobs
    knobs.outage(2.0)
    target = MoodleTarget(
        moodle_config(), SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=simulator)
    )
    relay = Relay(
        db,
        {"moodle": target},
        clock=now,
        policy=RetryPolicy(base=0.01, cap=0.05, max_attempts=3),
        probe_base=0.05,
        probe_cap=0.2,
    )
    deadline = time.monotonic() + 1.8
    while time.monotonic() < deadline:  # the outage outlasts the retry budget many times
        if not await relay.run_once():
            await asyncio.sleep(0.02)
    assert relay.breakers["moodle"].open
    with db.read() as conn:
        assert outbox.dead_letters(conn) == []
        charged = conn.exec_driver_sql("SELECT max(attempts) FROM outbox").scalar()
    assert (charged or 0) <= 1
    while time.monotonic() < deadline + 0.3:
        await asyncio.sleep(0.05)  # the outage ends
    recovered = time.monotonic()
    await relay_until_drained(relay, db, timeout=10)
    assert time.monotonic() - recovered < 5
    assert_effectively_once(simulator.state.moodle.snapshot(), 12)
    with db.read() as conn:
        assert outbox.dead_letters(conn) == []


async def test_a_429_storm_honours_retry_after(ruled_now: Provisioner, db: Database) -> None:
    simulator = create_simulator(Knobs(rate_limit_per_s=40, burst=5, seed=2))
    seed(ruled_now, 15)
    target = MoodleTarget(
        moodle_config(), SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=simulator)
    )
    relay = Relay(
        db, {"moodle": target}, clock=now, policy=RetryPolicy(base=0.05, cap=0.5, max_attempts=200)
    )
    await relay_until_drained(relay, db, timeout=90)
    with db.read() as conn:
        met = [e for e in journal.read(conn) if e.op in ("deliver.retry", "deliver.wait")]
    assert met, "the rate limit must have been met"
    waits = [e.detail for e in met if e.op == "deliver.retry" and e.detail]
    assert all(
        w["retry_in"] >= 1 for w in waits if "429" in str(w["lms"]) or w["lms"].get("retry_after")
    )
    assert simulator.state.counters.throttled > 0
    assert_effectively_once(simulator.state.moodle.snapshot(), 15)


# -- a real process killed with SIGKILL ----------------------------------------------------------


def test_kill_9_of_the_relay_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, catalog: Catalog, simulator_url: tuple[str, Any], database_url: str
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    book = RuleBook(rules, lambda d: check_rules(d, catalog))
    book.load()
    from bridge.store.engine import connect

    db = connect(database_url)
    people = 200  # 200 people x (account, course, cohort [, manager module]) = 600+ intents
    seed(Provisioner(db, catalog, rules=book.current), people)
    assert backlog(db) >= 600
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_RULES": str(rules),
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
        "MOODLE_TOKEN": SIM_MOODLE_TOKEN,
        "BRIDGE_RELAY_LEASE_SECONDS": "2",
    }
    command = [sys.executable, "-c", "from bridge.cli import main; main()", "relay"]
    first = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while backlog(db) > 450 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    left = backlog(db)
    assert 0 < left < 600, "killed mid-delivery"
    second = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while backlog(db) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    assert backlog(db) == 0
    with db.read() as conn:
        assert outbox.dead_letters(conn) == []
    assert_effectively_once(simulator.state.moodle.snapshot(), people)
    db.dispose()
