"""Canvas throttling (LMS.md): a leaky bucket per token, reported on every answer in
``X-Rate-Limit-Remaining`` / ``X-Request-Cost``; an overflow answers 403 "Rate Limit Exceeded".

The target reads both headers and spaces its calls before the bucket runs dry
(``bridge.targets.pacing.Allowance``, pure, tested with plain numbers); against the simulator a
burst of deliveries meets no 403 with pacing on, and many without.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_CANVAS_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app
from bridge.relay import Relay
from bridge.rules.model import Target as TargetConfig
from bridge.store import journal
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.canvas import CanvasTarget
from bridge.targets.pacing import MAX_PAUSE
from bridge.targets.pacing import Allowance
from bridge.targets.pacing import AllowanceTransport

BASE = "http://canvas.test"
HIGH_WATER = 2.0  # a small bucket, so that a burst of a few dozen calls overflows it


# --- the allowance, pure --------------------------------------------------------------------


def test_calls_go_at_once_until_an_answer_says_what_is_left() -> None:
    allowance = Allowance()
    assert allowance.wait(0.0) == 0.0
    allowance.observe(0.0, remaining=600.0, cost=0.2)
    assert allowance.mark() == pytest.approx(60.0)  # a tenth of the fullest seen
    assert allowance.wait(0.0) == 0.0


def test_under_the_low_water_mark_calls_wait_for_the_bucket_to_drain() -> None:
    allowance = Allowance(leak_per_s=10.0)
    allowance.observe(0.0, remaining=100.0, cost=1.0)
    allowance.observe(1.0, remaining=5.0, cost=1.0)  # the mark stays 10 (of 100 seen)
    assert allowance.wait(1.0) == pytest.approx((10 + 1 - 5) / 10)
    assert allowance.wait(1.6) == pytest.approx(0.0)  # drained 6 units meanwhile


def test_calls_in_flight_count_against_the_allowance() -> None:
    allowance = Allowance(leak_per_s=10.0, low_water=1.0)
    allowance.observe(0.0, remaining=4.0, cost=1.0)
    assert allowance.wait(0.0) == 0.0
    allowance.in_flight = 3  # each may cost as much as the dearest call seen
    assert allowance.wait(0.0) == pytest.approx((1 + 1 - (4 - 3)) / 10)


def test_the_dearest_recent_cost_is_reserved() -> None:
    allowance = Allowance()
    allowance.observe(0.0, remaining=10.0, cost=0.2)
    allowance.observe(0.0, remaining=10.0, cost=0.05)
    assert allowance.cost == pytest.approx(0.18)  # decays slowly, never to the cheapest at once


def test_a_throttled_answer_pauses_every_call_until_the_bucket_refills() -> None:
    allowance = Allowance(leak_per_s=10.0)
    allowance.observe(0.0, remaining=100.0, cost=1.0)
    allowance.observe(1.0, remaining=0.0, cost=None)
    assert allowance.throttled(1.0, retry_after=None) == pytest.approx((10 + 1) / 10)
    assert allowance.wait(1.5) == pytest.approx(2.1 - 1.5)
    assert allowance.throttled(1.0, retry_after=60.0) == MAX_PAUSE  # the relay waits the rest
    assert allowance.wait(1.0) == pytest.approx(MAX_PAUSE)


async def test_a_403_rate_limit_is_seen_and_another_403_is_not() -> None:
    answers = iter(
        [
            httpx.Response(403, text="403 Forbidden (Rate Limit Exceeded)"),
            httpx.Response(403, json={"status": "unauthorized"}),
        ]
    )
    transport = AllowanceTransport(httpx.MockTransport(lambda request: next(answers)))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        first = await client.get("/api/v1/users/self")
        assert first.text == "403 Forbidden (Rate Limit Exceeded)"  # still readable
        transport.allowance.paused_until = 0.0
        second = await client.get("/api/v1/users/self")
        assert second.json() == {"status": "unauthorized"}
    assert transport.throttles == 1


# --- against the Canvas simulator -----------------------------------------------------------


def simulator() -> Starlette:
    app = create_app(Knobs(), canvas_token=SIM_CANVAS_TOKEN)
    app.state.canvas.high_water = HIGH_WATER
    return app


def canvas(app: Starlette, **options: Any) -> CanvasTarget:
    config = TargetConfig(
        "canvas", "canvas", BASE, {"token": "CANVAS_TOKEN"}, {"account_id": 1, **options}
    )
    return CanvasTarget(config, SIM_CANVAS_TOKEN, transport=httpx.ASGITransport(app=app))


def account(number: int) -> dict[str, Any]:
    return {
        "idnumber": f"E{number:05d}",
        "username": f"emp{number}",
        "email": f"emp{number}@example.com",
        "firstname": f"Given{number}",
        "lastname": "Family",
    }


def upsert(number: int, target: str = "canvas") -> dict[str, Any]:
    return {
        "kind": "upsert_account",
        "person": f"p{number}",
        "target": target,
        "rule": "benefits",
        "data": {"create": True, "attributes": account(number)},
    }


def throttled(results: list[Result]) -> int:
    return sum(call.get("status") == 403 for r in results for call in r.detail["calls"])


async def burst(target: CanvasTarget, people: int, concurrency: int = 8) -> list[Result]:
    """``people`` accounts created at once, ``concurrency`` deliveries in flight (the relay's)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(number: int) -> Result:
        async with limit:
            return await target.deliver(Delivery(upsert(number), None, account(number)))

    try:
        return list(await asyncio.gather(*(one(n) for n in range(people))))
    finally:
        await target.aclose()


async def test_a_burst_overflows_canvas_without_pacing() -> None:
    results = await burst(canvas(simulator(), throttle_pacing=False), 30)
    assert throttled(results) > 0
    assert any(r.status == Status.retry for r in results)


async def test_a_burst_meets_no_403_with_pacing() -> None:
    app = simulator()
    target = canvas(app)
    results = await burst(target, 30)
    assert throttled(results) == 0
    assert [r.status for r in results] == [Status.done] * 30
    assert len(app.state.canvas.users) == 30
    assert target.pacing is not None and target.pacing.allowance.fullest > 0  # headers read


async def test_the_relay_drains_a_burst_to_canvas_without_a_403(db: Database) -> None:
    app = simulator()
    now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    with db.write() as conn:
        outbox.enqueue(conn, [upsert(n) for n in range(40)], now=now)
    relay = Relay(db, {"canvas": canvas(app)}, clock=lambda: now)
    try:
        while await relay.run_once():
            pass
    finally:
        await relay.aclose()
    with db.read() as conn:
        entries = [e for e in journal.read(conn) if e.op.startswith("deliver.")]
        left = outbox.backlog(conn)
    assert left == 0 and len(entries) == 40
    calls = [c for e in entries if e.detail for c in e.detail["lms"]["calls"]]
    assert calls and all(c["status"] != 403 for c in calls)
    assert {e.op for e in entries} == {"deliver.done"}
