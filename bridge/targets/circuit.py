"""A target's circuit breaker: whether the relay may send to an LMS now (pure; times passed in).

Closed: send. Open: the LMS is down or throttling (connection errors, 5xx, 429): send
nothing, probe it with backoff (``Retry-After`` honoured, capped), and close the moment a
probe succeeds. Rows that met the outage are not charged an attempt: only failures of the
row itself count towards its dead letter, so an outage of any length drains by itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta

RETRY_AFTER_CAP = 900.0
"""The longest any ``Retry-After`` is honoured (seconds): a huge, infinite or far-future value
is an LMS bug, and waiting on it would stall the relay for good."""


def capped(seconds: float | None, cap: float = RETRY_AFTER_CAP) -> float | None:
    """A delay the relay can schedule: not NaN, not negative, at most ``cap``."""
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)


@dataclass
class Breaker:
    """One target's circuit. ``base``/``cap``: the probe backoff (seconds)."""

    base: float = 0.5
    cap: float = 5.0
    open: bool = False
    since: datetime | None = None
    next_probe: datetime | None = None
    probes: int = 0
    reason: str = ""
    probing: bool = False

    def trip(self, now: datetime, reason: str, retry_after: float | None = None) -> bool:
        """Open (or keep open) after a failure; True when it has just opened."""
        opened = not self.open
        if opened:
            self.open, self.since, self.probes = True, now, 0
        self.reason = reason
        self._schedule(now, retry_after)
        return opened

    def failed_probe(self, now: datetime, reason: str, retry_after: float | None = None) -> None:
        self.probes += 1
        self.reason = reason
        self._schedule(now, retry_after)

    def close(self, now: datetime) -> float:
        """Close after a successful probe; the seconds it was open."""
        opened = (now - self.since).total_seconds() if self.since else 0.0
        self.open, self.since, self.next_probe, self.probes, self.reason = (
            False,
            None,
            None,
            0,
            "",
        )
        return opened

    def due(self, now: datetime) -> bool:
        """Whether a probe should go now."""
        return (
            self.open and not self.probing and (self.next_probe is None or now >= self.next_probe)
        )

    def _schedule(self, now: datetime, retry_after: float | None) -> None:
        wait = min(self.cap, self.base * 2 ** min(self.probes, 30))
        after = capped(retry_after)
        if after is not None:
            wait = max(wait, after)
        self.next_probe = now + timedelta(seconds=wait)
