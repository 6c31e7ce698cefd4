"""Reading course completion back from an LMS: what is asked (``Ask``), what is read
(``Reading``), and ``read_all``, which reads many with bounded concurrency per target.

One call per person and course (neither Moodle's ``core_completion`` functions nor Canvas's
``…/users/:id/progress`` take a batch); at most ``concurrency`` at a time per target. A read
that fails is a ``Reading`` with ``error`` (the LMS's words), never an exception: every
person gets an answer. The readers are ``bridge.targets.moodle_completion`` and
``bridge.targets.canvas_completion`` and, where a ``rest`` target declares it,
``bridge.targets.rest_completion``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Protocol

from bridge.targets.base import Target

NOT_STARTED, IN_PROGRESS, COMPLETE = "not_started", "in_progress", "complete"
STATES = (NOT_STARTED, IN_PROGRESS, COMPLETE)


@dataclass(frozen=True)
class Ask:
    """One enrolment to read: the person (SCIM id, LMS account id, externalId) and the course
    (the rule's ref: idnumber or shortname in Moodle, SIS id in Canvas)."""

    resource_id: str
    lms_user_id: str | None
    external_id: str | None
    course: str


@dataclass(frozen=True)
class Reading:
    """What the LMS answered for one ``Ask``: a state, or an error and no state."""

    state: str | None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Reading:
        return cls(None, error=error)


class CompletionReader(Protocol):
    """Reads one person's completion in one course; never raises for an LMS answer."""

    async def read(self, ask: Ask) -> Reading: ...


def from_epoch(seconds: int | float | None) -> datetime | None:
    """A Unix time as an aware UTC datetime; 0 and None (Moodle: never) as None."""
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def reader_for(target: Target) -> CompletionReader | None:
    """The completion reader of a built target; None for a kind that has none (scim, and a
    rest target whose options declare no ``completion`` request)."""
    from bridge.targets.canvas import CanvasTarget
    from bridge.targets.moodle import MoodleTarget
    from bridge.targets.rest import RestTarget

    if isinstance(target, MoodleTarget):
        from bridge.targets.moodle_completion import MoodleCompletion

        return MoodleCompletion(target)
    if isinstance(target, CanvasTarget):
        from bridge.targets.canvas_completion import CanvasCompletion

        return CanvasCompletion(target)
    if isinstance(target, RestTarget) and target.spec.completion is not None:
        from bridge.targets.rest_completion import RestCompletion

        return RestCompletion(target, target.spec.completion)
    return None


async def read_all(
    reader: CompletionReader, asks: Sequence[Ask], *, concurrency: int = 8
) -> list[Reading]:
    """Every ``Ask`` read, in order, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(ask: Ask) -> Reading:
        async with gate:
            try:
                return await reader.read(ask)
            except Exception as exc:  # noqa: BLE001 - recorded per person, never lost
                return Reading.failed(f"{type(exc).__name__}: {exc}")

    return list(await asyncio.gather(*(one(ask) for ask in asks)))
