"""Pacing requests to an LMS: a token bucket at the LMS's documented rate, and a pause for the
whole target when it answers 429/503 with Retry-After (instead of every in-flight delivery
hitting the limit on its own); for an LMS that reports its own leaky bucket in each answer
(Canvas: ``X-Rate-Limit-Remaining``, ``X-Request-Cost``), calls spaced before it runs dry."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from bridge.targets.circuit import capped

_THROTTLED = (429, 503)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return capped(float(value))
    except ValueError:
        return None


class PacedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: at most ``rate`` requests a second (``burst`` saved up)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rate: float, burst: int = 1) -> None:
        self.inner = inner
        self.rate = rate
        self.burst = max(burst, 1)
        self.tokens = float(self.burst)
        self.updated = time.monotonic()
        self.paused_until = 0.0
        self.lock = asyncio.Lock()

    async def _take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._take()
        response = await self.inner.handle_async_request(request)
        if response.status_code in _THROTTLED:
            wait = _retry_after(response)
            if wait:
                self.paused_until = max(self.paused_until, time.monotonic() + wait)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- a leaky bucket the LMS reports in its answers (Canvas) ---------------------------------------

LEAK_PER_S = 10.0
"""How fast Canvas's bucket drains, units a second (canvas-lms ``request_throttle.outflow``)."""
LOW_WATER_SHARE = 0.1
"""Below this share of the fullest allowance seen, calls are spaced so the bucket refills."""
MAX_PAUSE = 2.0
"""The longest a throttled answer pauses the transport (seconds): a longer ``Retry-After`` is
the relay's to wait out (the delivery is retried after it; the breaker holds the target)."""


def _number(response: httpx.Response, header: str) -> float | None:
    value = response.headers.get(header)
    if value is None:
        return None
    try:
        found = float(value)
    except ValueError:
        return None
    return found if math.isfinite(found) and found >= 0 else None


@dataclass
class Allowance:
    """A leaky bucket seen from the client (pure; times passed in, monotonic seconds).

    Canvas reports, on every answer, what a call cost (``X-Request-Cost``) and what is left
    (``X-Rate-Limit-Remaining``); the bucket drains at ``leak_per_s``. Once the allowance,
    estimated from the last answer, the time since and the calls still in flight, would fall
    under the low-water mark, calls wait until the bucket has drained enough — so a burst
    slows down before Canvas refuses with 403 "Rate Limit Exceeded" (LMS.md). A throttled
    answer pauses every call for a moment (``throttled``).
    """

    leak_per_s: float = LEAK_PER_S
    low_water: float | None = None  # None: LOW_WATER_SHARE of the fullest allowance seen
    remaining: float | None = None  # what the last answer said was left
    seen_at: float = 0.0
    fullest: float = 0.0
    cost: float = 0.0  # what a call may cost: the dearest X-Request-Cost lately
    in_flight: int = 0
    paused_until: float = 0.0

    def mark(self) -> float:
        """The low-water mark: calls are spaced below it."""
        return self.low_water if self.low_water is not None else LOW_WATER_SHARE * self.fullest

    def estimate(self, now: float) -> float | None:
        """The allowance left now: the last answer's, drained since, less the calls in flight."""
        if self.remaining is None:
            return None
        drained = self.leak_per_s * max(0.0, now - self.seen_at)
        return self.remaining + drained - self.cost * self.in_flight

    def wait(self, now: float) -> float:
        """Seconds before the next call may go (0: now)."""
        if now < self.paused_until:
            return self.paused_until - now
        left = self.estimate(now)
        need = self.mark() + self.cost
        if left is None or left >= need:
            return 0.0
        return (need - left) / self.leak_per_s

    def observe(self, now: float, remaining: float | None, cost: float | None) -> None:
        """An answer's rate-limit headers (either may be missing)."""
        if cost is not None and cost > 0:  # the dearest call lately: a burst of them may come
            self.cost = max(cost, 0.9 * self.cost)
        if remaining is not None:
            self.remaining, self.seen_at = remaining, now
            self.fullest = max(self.fullest, remaining)

    def throttled(self, now: float, retry_after: float | None) -> float:
        """A call was refused as throttled: pause every call until the bucket has drained to
        the low-water mark (or for ``Retry-After``), at most ``MAX_PAUSE``; the pause."""
        pause = retry_after
        if pause is None:
            left = self.estimate(now)
            pause = (self.mark() + self.cost - (left or 0.0)) / self.leak_per_s
        pause = min(max(pause, 1 / self.leak_per_s), MAX_PAUSE)
        self.paused_until = max(self.paused_until, now + pause)
        return pause


async def _raw(response: httpx.Response) -> bytes:
    """A transport's answer body as sent (not decoded), its stream closed."""
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        return response.content
    try:
        return b"".join([part async for part in stream])
    finally:
        await stream.aclose()


def _throttled(response: httpx.Response) -> bool:
    """429, or Canvas's 403 "Rate Limit Exceeded" (its body says so; another 403 is not)."""
    if response.status_code == 429:
        return True
    return response.status_code == 403 and b"rate limit exceeded" in response.content.lower()


class AllowanceTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: every call waits on the ``Allowance`` and feeds it the answer's
    rate-limit headers; a throttled answer pauses the whole target."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        allowance: Allowance | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.allowance = allowance or Allowance()
        self.clock = clock
        self.lock = asyncio.Lock()
        self.throttles = 0  # throttled answers seen

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        allowance = self.allowance
        async with self.lock:  # one waiter at a time: each takes its share before the next
            while (wait := allowance.wait(self.clock())) > 0:
                await asyncio.sleep(wait)
            allowance.in_flight += 1
        try:
            response = await self.inner.handle_async_request(request)
        finally:
            allowance.in_flight -= 1
        now = self.clock()
        allowance.observe(
            now, _number(response, "x-rate-limit-remaining"), _number(response, "x-request-cost")
        )
        if response.status_code in (403, 429):
            # Read to tell a throttle from another refusal (small bodies), raw as sent, so the
            # client decodes it once as usual.
            body = await _raw(response)
            response = httpx.Response(
                response.status_code,
                headers=response.headers,
                content=body,
                request=request,
                extensions=response.extensions,
            )
            if _throttled(response):
                self.throttles += 1
                allowance.throttled(now, _retry_after(response))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
