"""The relay's retry policy: what becomes of an outbox row after one attempt (pure).

Exponential backoff with jitter, capped; ``Retry-After`` wins when the LMS gives one (capped
too); a row dead-letters after ``max_attempts`` attempts charged to it. ``decide`` takes the
jitter as a number, so the policy is tested with plain values, without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.store import outbox
from bridge.targets.base import Category
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.circuit import RETRY_AFTER_CAP
from bridge.targets.circuit import capped


@dataclass(frozen=True)
class Decision:
    """What becomes of a row after one attempt."""

    status: str  # outbox.DONE | outbox.RETRY | outbox.DEAD
    delay: float = 0.0  # seconds until the next attempt (RETRY)
    category: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped; ``Retry-After`` wins when the LMS gives one.

    ``decide(result, attempts, jitter)`` is pure: ``jitter`` is a number in [0, 1) drawn by
    the caller, so the policy is tested with plain values.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 900.0
    jitter: float = 0.25  # ± this share of the delay
    max_attempts: int = 10

    def delay(self, attempts: int, retry_after: float | None, jitter: float) -> float:
        """Seconds until the next attempt; an absurd ``Retry-After`` (huge, ``inf``, NaN, a
        date far ahead) is capped, so settling never fails on it."""
        backoff = min(self.cap, self.base * self.factor ** min(max(attempts - 1, 0), 64))
        backoff *= 1 + self.jitter * (2 * jitter - 1)
        after = capped(retry_after, max(self.cap, RETRY_AFTER_CAP))
        if after is not None:
            return after
        return max(backoff, 0.0)

    def decide(self, result: Result, attempts: int, jitter: float) -> Decision:
        if result.status == Status.done:
            return Decision(outbox.DONE)
        if result.status == Status.dead:
            category = (result.category or Category.configuration).value
            return Decision(outbox.DEAD, category=category, error=result.message)
        if attempts >= self.max_attempts:
            return Decision(
                outbox.DEAD,
                category=Category.transient.value,
                error=f"gave up after {attempts} attempts: {result.message}",
            )
        return Decision(
            outbox.RETRY, self.delay(attempts, result.retry_after, jitter), error=result.message
        )
