"""Pacing requests to an LMS: a token bucket at the LMS's documented rate, and a pause for the
whole target when it answers 429/503 with Retry-After (instead of every in-flight delivery
hitting the limit on its own)."""

from __future__ import annotations

import asyncio
import time

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
