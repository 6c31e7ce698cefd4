"""The relay: pure retry policy, per-person order, leases, dead letters, journalled outcomes.

The LMS here is a recording target that answers from a script (it stands for an LMS, not for
our own code); the real targets are tested against the simulator in their own files.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest

from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.relay import confirm
from bridge.store import journal
from bridge.store import links
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedLms:
    """A target whose answers are scripted per (person, kind); records every delivery."""

    kind = "test"

    def __init__(self, name: str = "lms") -> None:
        self.name = name
        self.delivered: list[Delivery] = []
        self.script: dict[tuple[str, str], list[Result]] = {}

    async def deliver(self, delivery: Delivery) -> Result:
        self.delivered.append(delivery)
        answers = self.script.get((delivery.intent["person"], delivery.kind))
        if answers:
            return answers.pop(0)
        return Result.done(lms_user_id=f"lms-{delivery.intent['person']}")

    async def aclose(self) -> None:
        return None


def intent(person: str, kind: str, ref: str | None = None, target: str = "lms") -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "person": person, "target": target, "rule": "r"}
    if ref:
        body["ref"] = ref
    if kind == "upsert_account":
        body["data"] = {"create": True, "attributes": {"username": person}}
    return body


def enqueue(db: Database, clock: Clock, *intents: dict[str, Any]) -> None:
    with db.write() as conn:
        outbox.enqueue(conn, intents, now=clock())


def statuses(db: Database) -> list[tuple[str, str, str]]:
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT ordering_key, intent, status FROM outbox ORDER BY id"
        ).all()
    import json

    return [
        (r[0], (json.loads(r[1]) if isinstance(r[1], str) else r[1])["kind"], r[2]) for r in rows
    ]


# -- the pure parts ---------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(base=1, factor=2, cap=60, jitter=0)
    assert [policy.delay(n, None, 0.5) for n in (1, 2, 3, 4, 10)] == [1, 2, 4, 8, 60]


def test_jitter_spreads_the_delay_within_its_share() -> None:
    policy = RetryPolicy(base=10, factor=2, cap=1000, jitter=0.25)
    assert policy.delay(1, None, 0.0) == pytest.approx(7.5)
    assert policy.delay(1, None, 0.999999) == pytest.approx(12.5, rel=1e-3)


def test_retry_after_from_the_lms_wins() -> None:
    decision = RetryPolicy().decide(Result.retry("429", after=30), attempts=1, jitter=0.5)
    assert decision.status == "retry" and decision.delay == 30


def test_dead_after_max_attempts() -> None:
    decision = RetryPolicy(max_attempts=3).decide(Result.retry("503"), attempts=3, jitter=0.5)
    assert decision.status == "dead"
    assert decision.category == "transient"
    assert "gave up after 3 attempts" in (decision.error or "")


def test_a_permanent_failure_keeps_its_category() -> None:
    decision = RetryPolicy().decide(
        Result.dead(Category.data_quality, "bad email"), attempts=1, jitter=0.5
    )
    assert (decision.status, decision.category, decision.error) == (
        "dead",
        "data_quality",
        "bad email",
    )


def test_confirm_follows_each_intent() -> None:
    state = confirm({}, intent("p", "upsert_account"))
    state = confirm(state, {**intent("p", "enrol", "C1"), "data": {"kind": "enrolment"}})
    state = confirm(state, intent("p", "add_cohort_member", "K"))
    statuses = {key: value["status"] for key, value in state["assignments"].items()}
    assert statuses == {"course:C1": "active", "cohort:K": "active"}
    state = confirm(
        state, {**intent("p", "suspend_enrolment", "C1"), "data": {"kind": "enrolment"}}
    )
    state = confirm(state, intent("p", "suspend_account"))
    assert state["assignments"]["course:C1"]["status"] == "suspended"
    assert state["active"] is False
    assert state["account"] == {"username": "p"}


def test_due_date_is_kept_by_the_bridge_from_the_confirmed_enrolment() -> None:
    enrol = {**intent("p", "enrol", "C1"), "data": {"kind": "enrolment", "due_days": 30}}
    first = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    state = confirm({}, enrol, first)
    assert state["assignments"]["course:C1"]["due"] == "2026-12-31"
    assert state["assignments"]["course:C1"]["at"] == first.isoformat()
    again = confirm(state, enrol, first + timedelta(days=5))  # re-asserted: the due date stays
    assert again["assignments"]["course:C1"]["due"] == "2026-12-31"


def test_when_the_account_was_confirmed_survives_later_deliveries() -> None:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    state = confirm({}, intent("p", "upsert_account"), at)
    state = confirm(state, intent("p", "add_cohort_member", "K"), at + timedelta(hours=1))
    assert state["account_at"] == at.isoformat()


def test_confirmed_documents_of_the_bare_status_shape_still_read() -> None:
    old = {"assignments": {"course:C1": "active", "cohort:K": "suspended"}}
    state = confirm(old, intent("p", "suspend_account"))
    assert state["assignments"]["course:C1"] == {
        "status": "active",
        "kind": "enrolment",
        "ref": "C1",
    }
    assert state["assignments"]["cohort:K"]["kind"] == "cohort"


# -- against a real database --------------------------------------------------------------------


async def drain(relay: Relay, clock: Clock, rounds: int = 50, step: float = 0.0) -> None:
    for _ in range(rounds):
        if not await relay.run_once():
            if step:
                clock.advance(step)
                continue
            return


async def test_a_persons_intents_go_in_order_one_at_a_time(db: Database) -> None:
    clock = Clock()
    lms = ScriptedLms()
    enqueue(
        db,
        clock,
        intent("alice", "upsert_account"),
        intent("bob", "upsert_account"),
        intent("alice", "enrol", "C1"),
        intent("alice", "add_cohort_member", "K"),
    )
    relay = Relay(db, {"lms": lms}, clock=clock)
    assert await relay.run_once() == 2  # one per person: alice's upsert and bob's
    await drain(relay, clock)
    order = [(d.intent["person"], d.kind) for d in lms.delivered if d.intent["person"] == "alice"]
    assert order == [
        ("alice", "upsert_account"),
        ("alice", "enrol"),
        ("alice", "add_cohort_member"),
    ]
    assert {s for _, _, s in statuses(db)} == {"done"}


async def test_the_link_learnt_on_create_is_handed_to_later_intents(db: Database) -> None:
    clock = Clock()
    lms = ScriptedLms()
    enqueue(db, clock, intent("carol", "upsert_account"), intent("carol", "enrol", "C1"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    await drain(relay, clock)
    assert lms.delivered[1].lms_user_id == "lms-carol"
    with db.read() as conn:
        found = links.get(conn, "lms", "carol")
    assert found is not None and found[0] == "lms-carol"


async def test_retry_waits_then_delivers(db: Database) -> None:
    clock = Clock()
    lms = ScriptedLms()
    lms.script[("dave", "upsert_account")] = [Result.retry("503 outage", after=30)]
    enqueue(db, clock, intent("dave", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    await relay.run_once()
    assert statuses(db) == [("dave", "upsert_account", "retry")]
    assert await relay.run_once() == 0  # not due yet
    clock.advance(31)
    await relay.run_once()
    assert statuses(db) == [("dave", "upsert_account", "done")]


async def test_a_dead_letter_holds_the_persons_later_intents_until_skipped(db: Database) -> None:
    clock = Clock()
    lms = ScriptedLms()
    lms.script[("erin", "upsert_account")] = [Result.dead(Category.data_quality, "Invalid email")]
    enqueue(db, clock, intent("erin", "upsert_account"), intent("erin", "enrol", "C1"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    await drain(relay, clock)
    assert statuses(db) == [("erin", "upsert_account", "dead"), ("erin", "enrol", "pending")]
    with db.read() as conn:
        dead = outbox.dead_letters(conn)
    assert dead[0]["category"] == "data_quality" and dead[0]["last_error"] == "Invalid email"
    with db.write() as conn:
        assert outbox.skip(conn, [dead[0]["id"]]) == 1
    await drain(relay, clock)
    assert statuses(db)[1] == ("erin", "enrol", "done")


async def test_retry_a_dead_letter_after_the_fix(db: Database) -> None:
    clock = Clock()
    lms = ScriptedLms()
    lms.script[("fay", "upsert_account")] = [Result.dead(Category.configuration, "invalidtoken")]
    enqueue(db, clock, intent("fay", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    await drain(relay, clock)
    with db.write() as conn:
        assert outbox.requeue(conn, [outbox.dead_letters(conn)[0]["id"]], clock()) == 1
    await drain(relay, clock)
    assert statuses(db) == [("fay", "upsert_account", "done")]


async def test_a_row_claimed_by_a_relay_that_died_is_reclaimed_after_its_lease(
    db: Database,
) -> None:
    clock = Clock()
    enqueue(db, clock, intent("gus", "upsert_account"))
    dead_relay = Relay(db, {"lms": ScriptedLms()}, clock=clock, lease_seconds=60)
    assert len(dead_relay._claim()) == 1  # claimed, then the process "dies"
    survivor_lms = ScriptedLms()
    survivor = Relay(db, {"lms": survivor_lms}, clock=clock, lease_seconds=60)
    assert await survivor.run_once() == 0  # the lease still holds
    clock.advance(61)
    assert await survivor.run_once() == 1
    assert statuses(db) == [("gus", "upsert_account", "done")]
    assert len(survivor_lms.delivered) == 1


async def test_every_outcome_is_journalled_with_its_cause(db: Database) -> None:
    clock = Clock()
    lms = ScriptedLms()
    lms.script[("hal", "upsert_account")] = [Result.retry("429", after=1)]
    with db.write() as conn:
        outbox.enqueue(conn, [intent("hal", "upsert_account")], now=clock(), journal_seq=77)
    relay = Relay(db, {"lms": lms}, clock=clock)
    await relay.run_once()
    clock.advance(2)
    await relay.run_once()
    with db.read() as conn:
        entries = [e for e in journal.read(conn) if e.op.startswith("deliver")]
    assert [e.op for e in entries] == ["deliver.retry", "deliver.done"]
    assert entries[0].detail is not None and entries[0].detail["caused_by"] == 77
    assert entries[1].detail is not None and entries[1].detail["intent"]["kind"] == "upsert_account"


async def test_a_target_that_raises_is_retried_not_fatal(db: Database) -> None:
    class Broken(ScriptedLms):
        async def deliver(self, delivery: Delivery) -> Result:
            raise RuntimeError("bug")

    clock = Clock()
    enqueue(db, clock, intent("ida", "upsert_account"))
    await Relay(db, {"lms": Broken()}, clock=clock).run_once()
    assert statuses(db) == [("ida", "upsert_account", "retry")]


async def test_rows_of_an_unconfigured_target_wait(db: Database) -> None:
    clock = Clock()
    enqueue(db, clock, intent("jo", "upsert_account", target="canvas"))
    assert await Relay(db, {"lms": ScriptedLms()}, clock=clock).run_once() == 0
    assert statuses(db) == [("jo", "upsert_account", "pending")]


async def test_two_relays_never_deliver_a_row_twice(db: Database) -> None:
    clock = Clock()
    people = [f"p{i}" for i in range(60)]
    enqueue(db, clock, *(intent(p, kind) for p in people for kind in ("upsert_account",)))
    enqueue(db, clock, *(intent(p, "enrol", "C1") for p in people))
    first, second = ScriptedLms(), ScriptedLms()
    relays = [
        Relay(db, {"lms": first}, clock=clock, batch=7),
        Relay(db, {"lms": second}, clock=clock, batch=7),
    ]

    async def loop(relay: Relay) -> None:
        for _ in range(100):
            await relay.run_once()
            await asyncio.sleep(0)

    await asyncio.gather(*(loop(r) for r in relays))
    delivered = [(d.intent["person"], d.kind) for d in first.delivered + second.delivered]
    assert len(delivered) == len(set(delivered)) == 120
    assert {s for _, _, s in statuses(db)} == {"done"}
    assert Status.done.value == "done"
