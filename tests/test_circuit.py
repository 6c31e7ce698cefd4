"""An outage is not a data error: the circuit breaker, waiting on a failing preflight, capped
Retry-After, and the log lines an operator follows (one per dead letter, retry, outage,
recovery)."""

from __future__ import annotations

import json
import logging
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.cli.logs import JsonFormatter
from bridge.relay import Relay
from bridge.relay import RetryPolicy
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.store import health
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Category
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.circuit import RETRY_AFTER_CAP
from bridge.targets.circuit import Breaker
from bridge.targets.circuit import capped
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Verdict
from tests.test_relay import Clock
from tests.test_relay import ScriptedLms
from tests.test_relay import enqueue
from tests.test_relay import intent
from tests.test_relay import statuses

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


class FlakyLms(ScriptedLms):
    """A target that is down (every call and probe: HTTP 503) until told it is up."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.probes = 0

    async def deliver(self, delivery):  # type: ignore[no-untyped-def]
        if not self.up:
            self.delivered.append(delivery)
            return Result.retry("HTTP 503")
        return await super().deliver(delivery)

    async def probe(self) -> Result:
        self.probes += 1
        return Result.done() if self.up else Result.retry("HTTP 503")


# -- the pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        (float("nan"), None),
        (-3.0, 0.0),
        (12.0, 12.0),
        (float("inf"), RETRY_AFTER_CAP),
    ],
)
def test_absurd_retry_after_values_are_capped(given: float | None, expected: float | None) -> None:
    assert capped(given) == expected


@pytest.mark.parametrize("after", [float("inf"), 1e300, 10.0**9, float("nan")])
def test_the_retry_policy_never_fails_on_an_absurd_retry_after(after: float) -> None:
    decision = RetryPolicy().decide(Result(Status.retry, retry_after=after), 1, 0.5)
    assert decision.status == "retry"
    assert 0 <= decision.delay <= RETRY_AFTER_CAP
    T0 + timedelta(seconds=decision.delay)  # what settling computes must not overflow


def test_result_retry_caps_what_a_target_read_from_retry_after() -> None:
    assert Result.retry("429", after=float("inf")).retry_after == RETRY_AFTER_CAP


def test_the_breaker_probes_with_backoff_up_to_its_cap_and_honours_retry_after() -> None:
    breaker = Breaker(base=0.5, cap=4.0)
    assert breaker.trip(T0, "HTTP 503") is True
    assert breaker.next_probe == T0 + timedelta(seconds=0.5)
    assert not breaker.due(T0) and breaker.due(T0 + timedelta(seconds=0.5))
    waits = []
    for _ in range(5):
        breaker.failed_probe(T0, "HTTP 503")
        assert breaker.next_probe is not None
        waits.append((breaker.next_probe - T0).total_seconds())
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    breaker.failed_probe(T0, "HTTP 429", retry_after=30)
    assert breaker.next_probe == T0 + timedelta(seconds=30)
    assert breaker.trip(T0, "again") is False  # already open
    assert breaker.close(T0 + timedelta(seconds=90)) == 90.0
    assert not breaker.open and not breaker.due(T0)


# -- the relay against a database ---------------------------------------------------------------


async def test_an_outage_longer_than_the_retry_budget_dead_letters_nothing(db: Database) -> None:
    clock, lms = Clock(), FlakyLms()
    people = [f"p{n}" for n in range(5)]
    enqueue(db, clock, *(intent(p, "upsert_account") for p in people))
    enqueue(db, clock, *(intent(p, "enrol", "C1") for p in people))
    relay = Relay(db, {"lms": lms}, clock=clock, policy=RetryPolicy(max_attempts=3), probe_cap=2.0)
    lms.up = False
    for _ in range(40):  # far more cycles than max_attempts, each past the next probe
        await relay.run_once()
        clock.advance(2.5)
    assert relay.breakers["lms"].open
    assert lms.probes >= 10
    assert {s for _, _, s in statuses(db)} == {"retry", "pending"}
    with db.read() as conn:
        assert outbox.dead_letters(conn) == []
        rows = conn.exec_driver_sql("SELECT attempts FROM outbox").all()
        assert all(r[0] == 0 for r in rows), "waiting on an open breaker is never charged"
        state = health.get(conn, "lms")
    assert state is not None and state.state == health.UNREACHABLE
    assert "HTTP 503" in state.reason
    lms.up = True
    clock.advance(2.5)
    for _ in range(3):
        await relay.run_once()
    assert {s for _, _, s in statuses(db)} == {"done"}
    done = [d.intent["person"] for d in lms.delivered if d.kind == "upsert_account"]
    assert sorted(set(done)) == people
    with db.read() as conn:
        state = health.get(conn, "lms")
    assert state is not None and state.state == health.OK


async def test_while_the_breaker_is_open_nothing_is_sent_but_probes(db: Database) -> None:
    clock, lms = Clock(), FlakyLms()
    enqueue(db, clock, intent("a", "upsert_account"), intent("b", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    lms.up = False
    await relay.run_once()
    sent = len(lms.delivered)
    for _ in range(5):
        assert await relay.run_once() == 0  # the next probe is not due yet
    assert len(lms.delivered) == sent


async def test_a_row_that_fails_while_the_target_answers_is_charged(db: Database) -> None:
    clock, lms = Clock(), FlakyLms()
    lms.script[("poison", "upsert_account")] = [Result.retry("HTTP 500")] * 5
    enqueue(db, clock, intent("poison", "upsert_account"), intent("fine", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock, policy=RetryPolicy(max_attempts=3))
    for _ in range(10):
        await relay.run_once()
        clock.advance(60)
    assert statuses(db) == [
        ("poison", "upsert_account", "dead"),
        ("fine", "upsert_account", "done"),
    ]
    assert not relay.breakers["lms"].open  # the probes answered: the row's fault, not an outage


def failing(reason: str = "auth 'saml2' is not installed on the site") -> Verdict:
    finding = Finding(
        "lms",
        "auth",
        False,
        reason,
        subject="saml2",
        where="rules/targets.yaml:7:7",
        fix="set options.auth to oauth2",
    )
    return Verdict("lms", (finding,))


async def test_a_target_failing_preflight_holds_its_intents_until_it_passes(db: Database) -> None:
    clock, lms = Clock(), ScriptedLms()
    verdicts = [failing()]

    async def preflight(name: str) -> Verdict:
        return verdicts[-1]

    with db.write() as conn:
        health.save(
            conn,
            "lms",
            health.MISCONFIGURED,
            now=clock(),
            reason=failing().reason(),
            findings=[f.as_dict() for f in failing().findings],
        )
    enqueue(db, clock, intent("a", "upsert_account"), intent("a", "enrol", "C1"))
    relay = Relay(db, {"lms": lms}, clock=clock, preflight=preflight, recheck_seconds=10)
    for _ in range(5):
        assert await relay.run_once() == 0
        clock.advance(3)
    assert lms.delivered == []
    assert (
        "auth 'saml2'" in relay.waiting["lms"] and "rules/targets.yaml:7:7" in relay.waiting["lms"]
    )
    verdicts.append(Verdict("lms", ()))
    clock.advance(10)
    await relay.run_once()
    await relay.run_once()
    assert {s for _, _, s in statuses(db)} == {"done"}


async def test_a_configuration_failure_while_preflight_fails_waits_instead_of_dying(
    db: Database,
) -> None:
    """The site lost its auth plugin after the relay started: the refused create waits for
    the preflight to pass again, uncharged, instead of becoming a dead letter."""
    clock, lms = Clock(), ScriptedLms()
    lms.script[("a", "upsert_account")] = [
        Result.dead(Category.configuration, "invalidparameter: Invalid authentication type")
    ]
    site = {"auth plugin": True}

    async def preflight(name: str) -> Verdict:
        return Verdict("lms", ()) if site["auth plugin"] else failing()

    enqueue(db, clock, intent("a", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock, preflight=preflight, recheck_seconds=5)
    assert await relay.sendable() == ["lms"]  # checked at start: it passes
    site["auth plugin"] = False
    await relay.run_once()
    with db.read() as conn:
        row = outbox.get(conn, 1)
        state = health.get(conn, "lms")
    assert row is not None and (row["status"], row["attempts"]) == ("retry", 0)
    assert "fails preflight" in str(row["last_error"])
    assert "lms" in relay.waiting and state is None  # scripted: nothing recorded in health
    site["auth plugin"] = True
    clock.advance(5)
    await relay.run_once()
    assert statuses(db) == [("a", "upsert_account", "done")]


async def test_a_configuration_failure_that_preflight_does_not_explain_is_a_dead_letter(
    db: Database,
) -> None:
    clock, lms = Clock(), ScriptedLms()
    lms.script[("a", "enrol")] = [Result.dead(Category.configuration, "no course X")]

    async def preflight(name: str) -> Verdict:
        return Verdict("lms", ())

    enqueue(db, clock, intent("a", "enrol", "X"))
    await Relay(db, {"lms": lms}, clock=clock, preflight=preflight).run_once()
    assert statuses(db) == [("a", "enrol", "dead")]


async def test_operators_get_one_line_per_dead_letter_outage_and_recovery(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock, lms = Clock(), FlakyLms()
    lms.script[("erin", "upsert_account")] = [
        Result.dead(Category.data_quality, "email 'erín@example.com' is not ASCII")
    ]
    enqueue(db, clock, intent("erin", "upsert_account"), intent("finn", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    caplog.set_level(logging.DEBUG, logger="bridge.relay")
    await relay.run_once()  # erin dead, finn done
    lms.up = False
    enqueue(db, clock, intent("gail", "upsert_account"))
    await relay.run_once()  # gail meets the outage
    lms.up = True
    clock.advance(1)
    await relay.run_once()  # probe succeeds: recovered
    records = [r for r in caplog.records if r.name == "bridge.relay"]
    dead = [r for r in records if r.levelno == logging.ERROR]
    assert len(dead) == 1 and "dead letter" in dead[0].getMessage()
    body = json.loads(JsonFormatter().format(dead[0]))
    assert (body["person"], body["target"], body["intent"], body["category"]) == (
        "erin",
        "lms",
        "upsert_account",
        "data_quality",
    )
    assert "not ASCII" in body["reason"]
    assert (
        sum("unreachable" in r.getMessage() for r in records if r.levelno == logging.WARNING) == 1
    )
    assert sum("reachable again" in r.getMessage() for r in records) == 1


async def test_an_unreachable_state_left_by_a_stopped_relay_is_cleared_once_the_target_answers(
    db: Database,
) -> None:
    clock, lms = Clock(), FlakyLms()
    with db.write() as conn:
        health.save(conn, "lms", health.UNREACHABLE, now=clock(), reason="HTTP 503")
    enqueue(db, clock, intent("a", "upsert_account"))
    relay = Relay(db, {"lms": lms}, clock=clock)
    await relay.run_once()
    with db.read() as conn:
        state = health.get(conn, "lms")
    assert state is not None and state.state == health.OK
    assert statuses(db) == [("a", "upsert_account", "done")]
    assert lms.probes == 1


async def test_a_rules_reload_has_every_target_checked_again(
    db: Database, rules_dir: Path, catalog: Catalog
) -> None:
    checked: list[str] = []

    async def preflight(name: str) -> Verdict:
        checked.append(name)
        return Verdict(name, ())

    book = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    book.load()
    relay = Relay(db, {"lms": ScriptedLms()}, clock=Clock(), preflight=preflight)
    book.listeners.append(lambda _ruleset: relay.recheck())
    await relay.run_once()
    assert checked == ["lms"]  # when the relay starts
    await relay.run_once()
    assert checked == ["lms"]  # not again while nothing changed
    rule_file = rules_dir / "benefits-2026.yaml"
    rule_file.write_text(rule_file.read_text().replace("max_people: 200", "max_people: 250"))
    assert book.reload()
    await relay.run_once()
    assert checked == ["lms", "lms"]
