"""The relay hands a batching target (``deliver_many``) its claimed rows in batches.

Per-person order still holds (the claim takes one row per person, so a batch never holds two
of a person's intents); each row of a batch settles on its own: done, retry or dead letter.
The LMS in most tests is a recording target answering from a script (it stands for an LMS,
not for our own code); the last ones run ``MoodleTarget`` against the Moodle simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.relay import batch_size as configured_batch_size
from bridge.cli.relay import build_relay
from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.model import Target as TargetConfig
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import links
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import TargetConfigError
from bridge.targets.batching import BATCHED_CLAIM
from bridge.targets.batching import CLAIM
from bridge.targets.batching import DEFAULT_BATCH_SIZE
from bridge.targets.batching import batch_size
from bridge.targets.batching import chunks
from bridge.targets.moodle import MoodleTarget
from tests.conftest import employee
from tests.pilots import draw
from tests.test_relay import Clock
from tests.test_relay import ScriptedLms
from tests.test_relay import enqueue
from tests.test_relay import intent
from tests.test_relay import statuses


class BatchLms(ScriptedLms):
    """A scripted LMS that also takes batches; records each batch and how many ran at once."""

    def __init__(self, name: str = "lms") -> None:
        super().__init__(name)
        self.batches: list[list[tuple[str, str]]] = []
        self.running = 0
        self.most = 0
        self.fail: BaseException | None = None

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        self.batches.append([(d.intent["person"], d.kind) for d in deliveries])
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.01)
            if self.fail is not None:
                raise self.fail
            return [await self.deliver(d) for d in deliveries]
        finally:
            self.running -= 1


async def drain(relay: Relay, rounds: int = 50) -> None:
    for _ in range(rounds):
        if not await relay.run_once():
            return


# -- the pure parts ---------------------------------------------------------------------------


def test_rows_are_cut_into_even_batches_in_claim_order() -> None:
    rows = [{"id": n} for n in range(500)]
    parts = chunks(rows, 200)
    assert [len(p) for p in parts] == [167, 167, 166]
    assert [r["id"] for p in parts for r in p] == list(range(500))
    assert [len(p) for p in chunks(rows[:7], 3)] == [3, 2, 2]
    assert chunks(rows[:5], 200) == [rows[:5]]
    assert chunks([], 200) == []


def test_batch_size_from_options_then_the_target_then_the_default() -> None:
    assert batch_size(ScriptedLms()) is None  # no deliver_many: one intent per call
    lms = BatchLms()
    assert batch_size(lms) == DEFAULT_BATCH_SIZE
    lms.batch_size = 50  # type: ignore[attr-defined]
    assert batch_size(lms) == 50
    assert batch_size(lms, 20) == 20
    assert batch_size(lms, 1) is None  # batching off


def test_batch_size_option_must_be_a_whole_number() -> None:
    def config(**options: Any) -> TargetConfig:
        return TargetConfig("moodle", "moodle", "http://moodle.test", {}, options)

    assert configured_batch_size(config()) is None
    assert configured_batch_size(config(batch_size=1)) == 1
    for bad in (0, "200", 2.5, True):
        with pytest.raises(TargetConfigError, match="batch_size"):
            configured_batch_size(config(batch_size=bad))


def test_the_claim_is_larger_when_a_target_takes_batches(db: Database) -> None:
    clock = Clock()
    assert Relay(db, {"lms": ScriptedLms()}, clock=clock).batch == CLAIM
    assert Relay(db, {"lms": BatchLms()}, clock=clock).batch == BATCHED_CLAIM
    off = Relay(db, {"lms": BatchLms()}, clock=clock, batch_sizes={"lms": 1})
    assert off.batch == CLAIM and off.batch_sizes == {}
    assert Relay(db, {"lms": BatchLms()}, clock=clock, batch=10).batch == 10


def test_the_claim_size_is_a_setting() -> None:
    assert Settings.from_env({}).relay_batch == 0  # automatic
    assert Settings.from_env({"BRIDGE_RELAY_BATCH": "2000"}).relay_batch == 2000
    with pytest.raises(ValueError, match="BRIDGE_RELAY_BATCH must be a whole number"):
        Settings.from_env({"BRIDGE_RELAY_BATCH": "lots"})


def test_build_relay_batches_moodle_unless_its_batch_size_is_1(
    db: Database, rules_dir: Path, catalog: Catalog
) -> None:
    def built(**settings: Any) -> Relay:
        book = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
        book.load()
        relay = build_relay(
            db, book.current(), env={"MOODLE_TOKEN": "t"}, settings=Settings(**settings)
        )
        assert relay is not None
        return relay

    relay = built()
    assert (relay.batch, relay.batch_sizes) == (BATCHED_CLAIM, {"moodle": DEFAULT_BATCH_SIZE})
    assert built(relay_batch=1000).batch == 1000
    targets = rules_dir / "targets.yaml"
    text = targets.read_text().replace(
        "      student_role_id: 5\n", "      student_role_id: 5\n      batch_size: 1\n", 1
    )
    targets.write_text(text)
    relay = built()
    assert (relay.batch, relay.batch_sizes) == (CLAIM, {})


# -- against a real database --------------------------------------------------------------------


async def test_what_is_due_goes_in_one_call_and_each_persons_order_holds(db: Database) -> None:
    clock = Clock()
    lms = BatchLms()
    people = [f"p{n}" for n in range(5)]
    enqueue(db, clock, *(intent(p, "upsert_account") for p in people))
    enqueue(db, clock, *(intent(p, "enrol", "C1") for p in people))
    relay = Relay(db, {"lms": lms}, clock=clock)
    assert await relay.run_once() == 5  # what is due now, not waiting to fill a batch of 200
    assert lms.batches == [[(p, "upsert_account") for p in people]]
    assert await relay.run_once() == 5
    assert lms.batches[1] == [(p, "enrol") for p in people]
    assert await relay.run_once() == 0
    assert {s for _, _, s in statuses(db)} == {"done"}
    with db.read() as conn:
        found = links.get(conn, "lms", "p3")
    assert found is not None and found[0] == "lms-p3"  # learnt from the batch's upsert
    assert lms.delivered[-1].lms_user_id == "lms-p4"  # handed to the enrol batch


async def test_batches_are_cut_to_the_batch_size_and_bounded_per_target(db: Database) -> None:
    clock = Clock()
    lms = BatchLms()
    enqueue(db, clock, *(intent(f"p{n}", "upsert_account") for n in range(7)))
    relay = Relay(db, {"lms": lms}, clock=clock, batch_sizes={"lms": 3}, per_target=1)
    assert await relay.run_once() == 7
    assert [len(b) for b in lms.batches] == [3, 2, 2]
    assert lms.most == 1  # per_target bounds the batches in flight


async def test_a_target_without_batches_and_batch_size_1_go_row_by_row(db: Database) -> None:
    clock = Clock()
    batching, plain, off = BatchLms("a"), ScriptedLms("b"), BatchLms("c")
    for name in ("a", "b", "c"):
        enqueue(db, clock, *(intent(f"p{n}", "upsert_account", target=name) for n in range(3)))
    relay = Relay(db, {"a": batching, "b": plain, "c": off}, clock=clock, batch_sizes={"c": 1})
    assert await relay.run_once() == 9
    assert len(batching.batches) == 1 and len(batching.delivered) == 3
    assert len(plain.delivered) == 3
    assert off.batches == [] and len(off.delivered) == 3
    assert {s for _, _, s in statuses(db)} == {"done"}


async def test_each_row_of_a_batch_settles_on_its_own(db: Database) -> None:
    clock = Clock()
    lms = BatchLms()
    lms.script[("bad", "upsert_account")] = [Result.dead(Category.data_quality, "Invalid email")]
    lms.script[("slow", "upsert_account")] = [Result.retry("timeout", after=30)]
    enqueue(
        db,
        clock,
        *(intent(p, "upsert_account") for p in ("ok", "bad", "slow")),
        intent("bad", "enrol", "C1"),
    )
    relay = Relay(db, {"lms": lms}, clock=clock)
    assert await relay.run_once() == 3
    assert await relay.run_once() == 0  # bad's enrol waits behind its dead letter
    assert statuses(db) == [
        ("ok", "upsert_account", "done"),
        ("bad", "upsert_account", "dead"),
        ("slow", "upsert_account", "retry"),
        ("bad", "enrol", "pending"),
    ]
    with db.read() as conn:
        dead = outbox.dead_letters(conn)
        entries = {e.resource_id: e for e in journal.read(conn) if e.op.startswith("deliver.")}
    assert [(d["ordering_key"], d["category"], d["last_error"]) for d in dead] == [
        ("bad", "data_quality", "Invalid email")
    ]
    assert entries["slow"].op == "deliver.retry"
    assert entries["slow"].detail is not None and entries["slow"].detail["retry_in"] == 30
    assert entries["ok"].detail is not None and entries["ok"].detail["lms"]["status"] == "done"
    clock.advance(31)
    assert await relay.run_once() == 1
    assert statuses(db)[2] == ("slow", "upsert_account", "done")


async def test_a_batch_that_raises_retries_every_row_of_it(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    lms = BatchLms()
    lms.fail = RuntimeError("bug in the batch")
    enqueue(db, clock, *(intent(f"p{n}", "upsert_account") for n in range(4)))
    relay = Relay(db, {"lms": lms}, clock=clock)
    assert await relay.run_once() == 4
    assert {s for _, _, s in statuses(db)} == {"retry"}
    assert "failed on a batch of 4 outbox rows" in caplog.text
    with db.read() as conn:
        entries = [e for e in journal.read(conn) if e.op.startswith("deliver.")]
    assert entries[0].detail is not None
    assert entries[0].detail["lms"]["message"] == "RuntimeError: bug in the batch"


async def test_a_batch_with_too_few_results_retries_every_row_of_it(db: Database) -> None:
    class Short(BatchLms):
        async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
            return [Result.done("x")]

    clock = Clock()
    enqueue(db, clock, *(intent(f"p{n}", "upsert_account") for n in range(3)))
    assert await Relay(db, {"lms": Short()}, clock=clock).run_once() == 3
    assert {s for _, _, s in statuses(db)} == {"retry"}


async def test_a_batch_outlasting_the_lease_is_given_up_and_retried(db: Database) -> None:
    class Stuck(BatchLms):
        async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
            await asyncio.sleep(5)
            return [Result.done("x") for _ in deliveries]

    clock = Clock()
    enqueue(db, clock, *(intent(f"p{n}", "upsert_account") for n in range(2)))
    relay = Relay(db, {"lms": Stuck()}, clock=clock, lease_seconds=0.2)
    assert await relay.run_once() == 2  # given up at 0.16 s, long before the 5 s
    assert {s for _, _, s in statuses(db)} == {"retry"}
    with db.read() as conn:
        entry = next(e for e in journal.read(conn) if e.op.startswith("deliver."))
    assert entry.detail is not None
    assert "outlasted 80 % of the 0.2 s lease" in entry.detail["lms"]["message"]


# -- MoodleTarget against the simulator ---------------------------------------------------------


class RecordedMoodle(MoodleTarget):
    """The Moodle target, recording the size of each batch the relay hands it."""

    sizes: list[int]

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[Result]:
        self.sizes.append(len(deliveries))
        return await super().deliver_many(deliveries)


def moodle(simulator: Any) -> RecordedMoodle:
    config = TargetConfig(
        "moodle", "moodle", "http://moodle.test", {"token": "MOODLE_TOKEN"}, {"auth": "oauth2"}
    )
    target = RecordedMoodle(config, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=simulator))
    target.sizes = []
    return target


async def relay_until_settled(relay: Relay, db: Database, timeout: float = 30.0) -> None:
    """Until nothing is pending, retrying or running (a dead letter's followers stay pending)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.read() as conn:
            left = [r for r in outbox.unsettled(conn) if r["status"] in ("retry", "running")]
            due = [r for r in outbox.unsettled(conn) if r["status"] == "pending"]
        if not await relay.run_once() and not left and not (due and relay.breakers["moodle"].open):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the relay did not settle in time")


async def test_moodle_gets_batches_and_each_person_is_enrolled_after_their_account(
    db: Database, catalog: Catalog, book: RuleBook
) -> None:
    provisioner = Provisioner(db, catalog, rules=book.current)
    people = 12
    for number in range(people):
        provisioner.create(Cause("hris"), "User", employee(number, codes=["BEN_CHOICE_2026"]))
    bad = employee(99, codes=["BEN_CHOICE_2026"])
    bad["emails"] = [{"value": "józef@example.com", "type": "work"}]  # Moodle refuses it
    provisioner.create(Cause("hris"), "User", bad)
    draw(provisioner)
    simulator = create_simulator(Knobs(seed=1))
    knobs: Knobs = simulator.state.knobs
    target = moodle(simulator)
    relay = Relay(
        db,
        {"moodle": target},
        clock=lambda: datetime.now(UTC),
        policy=RetryPolicy(base=0.05, cap=0.2, max_attempts=100),
        probe_base=0.05,
        probe_cap=0.1,
    )
    knobs.error_rate = 1.0  # every call fails with a 5xx: the first batch is retried
    assert await relay.run_once() == people + 1
    assert {s for _, _, s in statuses(db)} == {"retry", "pending"}
    knobs.error_rate = 0.0
    try:
        await relay_until_settled(relay, db)
    finally:
        await relay.aclose()

    assert target.sizes[0] == people + 1  # every person's first intent in one call
    assert max(target.sizes[1:]) > 1  # and later ones in batches too
    with db.read() as conn:
        entries = [e for e in journal.read(conn, limit=10_000) if e.op.startswith("deliver.")]
        dead = outbox.dead_letters(conn)
        pending = outbox.pending(conn)
    assert any(e.op in ("deliver.retry", "deliver.wait") for e in entries)
    assert [(d["intent"]["kind"], d["category"]) for d in dead] == [
        ("upsert_account", "data_quality")
    ]
    assert {r["ordering_key"] for r in pending} == {dead[0]["ordering_key"]}  # held back
    done: dict[str, list[str]] = {}
    for entry in entries:
        if entry.op == "deliver.done" and entry.detail is not None:
            done.setdefault(str(entry.resource_id), []).append(entry.detail["intent"]["kind"])
    assert len(done) == people
    for kinds in done.values():
        assert kinds[0] == "upsert_account"  # the account before its enrolment and cohort
        assert set(kinds[1:]) >= {"enrol"}
    state = simulator.state.moodle.snapshot()
    enrolled = {e["userid"] for e in state["enrolments"]}
    assert len(enrolled) == people
    calls = simulator.state.counters.by_function
    assert calls.get("enrol_manual_enrol_users", 0) < people  # batched, not one per person
