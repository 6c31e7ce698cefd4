"""The simulated LMSs' wall clock: real time, or a fixed start, plus what an admin advanced it by.

Moodle compares enrolment ``timestart``/``timeend`` with it, and learners progress through
courses as its simulated days pass (``bridge.lmssim.completion``). ``speed`` runs it faster than
real time (86400: a real second is a simulated day); a fixed ``start`` and ``speed=0`` make it
stand still between ``advance`` calls, which is what deterministic tests want.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class SimClock:
    """Seconds since the epoch, as the simulated sites see them."""

    def __init__(
        self,
        start: float | None = None,
        *,
        speed: float = 1.0,
        real: Callable[[], float] = time.time,
    ) -> None:
        self.real = real
        self.started = real()
        self.start = self.started if start is None else start
        self.speed = speed
        self.offset = 0.0

    def __call__(self) -> float:
        return self.start + (self.real() - self.started) * self.speed + self.offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward (never back); the new time."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"the simulated clock only moves forward, by a finite time: {seconds}")
        self.offset += seconds
        return self()

    @classmethod
    def frozen(cls, start: float) -> SimClock:
        """A clock that stands at ``start`` until advanced."""
        return cls(start, speed=0.0)
