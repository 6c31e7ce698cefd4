"""Course completion in a simulated LMS: each learner's progress through a course's requirements,
and learners who start and finish on their own as simulated days pass.

A course lists its requirements (Moodle: the activities its completion criteria name, all of them
needed; Canvas: its module items' completion requirements). A learner has not started (nothing
met), is in progress (``timestarted``) or is complete (every requirement met, ``timecompleted``
the last of them). ``Pace`` makes a share of the tracked learners start or complete each
simulated day, drawn from a seeded RNG so that a run replays exactly; ``Completion.mark`` sets a
learner's state by hand. Progress outlives the enrolment, as in both LMSs: unenrol and enrol
again, and the learner is where they were. Written by hand: nothing simulates learners.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

DAY = 86400
NOT_STARTED, IN_PROGRESS, COMPLETE = "notstarted", "inprogress", "complete"
STATES = (NOT_STARTED, IN_PROGRESS, COMPLETE)

Key = tuple[int, int]
"""(course id, user id)."""


@dataclass
class Progress:
    """One learner in one course."""

    timeenrolled: int = 0
    timestarted: int = 0
    timecompleted: int = 0
    met: dict[int, int] = field(default_factory=dict)  # requirement id → when it was met
    scores: dict[int, float] = field(default_factory=dict)  # requirement id → score, percent

    @property
    def state(self) -> str:
        if self.timecompleted:
            return COMPLETE
        return IN_PROGRESS if self.timestarted else NOT_STARTED

    @property
    def last_activity(self) -> int:
        return max([self.timestarted, *self.met.values()])


@dataclass
class Pace:
    """How fast the simulated learners go, per simulated day.

    ``completion_rate``: the share of tracked learners not yet complete who complete the course
    that day (starting it too, if they had not). ``start_rate``: the share of those not started
    who start (meet their first requirement) without finishing. Both 0 by default: nobody moves
    unless told to.
    """

    completion_rate: float = 0.0
    start_rate: float = 0.0

    def update(self, values: dict[str, Any]) -> None:
        for name in ("completion_rate", "start_rate"):
            if name in values:
                rate = float(values[name])
                if not 0.0 <= rate <= 1.0:
                    raise ValueError(f"{name} is a share of learners per day, 0 to 1: {rate}")
                setattr(self, name, rate)


class Completion:
    """The progress of every learner of one LMS, and the days that move it.

    ``requirements(course)``: the ids of what a course requires, in course order;
    ``tracked(at)``: the (course, user) pairs whose progress is tracked at time ``at``
    (the LMS's active learners). Days end every ``DAY`` seconds from the clock's start;
    ``catch_up`` plays the days that ended since it last ran.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        requirements: Callable[[int], Sequence[int]],
        tracked: Callable[[float], Iterable[Key]],
        pace: Pace,
        *,
        seed: int | str | None = None,
    ) -> None:
        self.clock = clock
        self.requirements = requirements
        self.tracked = tracked
        self.pace = pace
        self.random = random.Random(seed)  # noqa: S311 - simulated learners, not secrets
        self.progress: dict[Key, Progress] = {}
        self.day_ended = clock()

    def of(self, course: int, user: int) -> Progress:
        """The learner's progress (a blank one, not kept, if they have none)."""
        return self.progress.get((course, user)) or Progress()

    def enrolled(self, course: int, user: int) -> None:
        """Called on enrolment: the first enrolment's time is kept (``timeenrolled``)."""
        progress = self.progress.setdefault((course, user), Progress())
        progress.timeenrolled = progress.timeenrolled or int(self.clock())

    def meet(
        self, course: int, user: int, requirement: int, *, at: int, score: float = 100.0
    ) -> Progress:
        """The learner met one requirement at ``at``; the last one completes the course."""
        progress = self.progress.setdefault((course, user), Progress())
        if requirement not in progress.met:
            progress.met[requirement] = at
            progress.scores[requirement] = score
        progress.timestarted = progress.timestarted or at
        required = self.requirements(course)
        if required and not progress.timecompleted and set(required) <= set(progress.met):
            progress.timecompleted = max(progress.met[r] for r in required)
        return progress

    def mark(self, course: int, user: int, state: str, *, at: int | None = None) -> Progress:
        """Set a learner's state by hand: ``notstarted`` forgets their progress, ``inprogress``
        starts them (with their first requirement met when there are several), ``complete``
        meets every requirement."""
        if state not in STATES:
            raise ValueError(f"unknown completion state {state!r}: one of {', '.join(STATES)}")
        when = int(self.clock()) if at is None else at
        old = self.progress.get((course, user)) or Progress()
        progress = self.progress[(course, user)] = Progress(timeenrolled=old.timeenrolled)
        required = list(self.requirements(course))
        if state == IN_PROGRESS:
            progress.timestarted = when
            if len(required) > 1:
                self.meet(course, user, required[0], at=when)
        elif state == COMPLETE:
            progress.timestarted = when
            for requirement in required:
                self.meet(course, user, requirement, at=when)
            progress.timecompleted = when
        return progress

    def catch_up(self) -> int:
        """Play every simulated day that ended since the last call; how many there were."""
        days = int((self.clock() - self.day_ended) // DAY)
        if days <= 0:
            return 0
        if not (self.pace.completion_rate or self.pace.start_rate):  # nobody moves: skip ahead
            self.day_ended += days * DAY
            return days
        for _ in range(days):
            self.day_ended += DAY
            self._day(int(self.day_ended))
        return days

    def _day(self, end: int) -> None:
        for course, user in sorted(set(self.tracked(end))):
            required = list(self.requirements(course))
            progress = self.progress.get((course, user)) or Progress()
            if not required or progress.timecompleted:
                continue
            earliest = min(max(end - DAY, progress.timeenrolled, progress.last_activity), end)
            if self.random.random() < self.pace.completion_rate:
                at = earliest + int(self.random.random() * (end - earliest))
                for requirement in required:
                    self.meet(course, user, requirement, at=at, score=self._score())
            elif not progress.timestarted and self.random.random() < self.pace.start_rate:
                at = earliest + int(self.random.random() * (end - earliest))
                started = self.progress.setdefault((course, user), progress)
                started.timestarted = at
                if len(required) > 1:
                    self.meet(course, user, required[0], at=at, score=self._score())

    def _score(self) -> float:
        return round(60 + 40 * self.random.random(), 1)

    def counts(self, keys: Iterable[Key]) -> dict[str, int]:
        """How many of ``keys`` are in each state."""
        found = dict.fromkeys(STATES, 0)
        for course, user in set(keys):
            found[self.of(course, user).state] += 1
        return found

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"courseid": course, "userid": user, "state": p.state, **asdict(p)}
            for (course, user), p in sorted(self.progress.items())
        ]
