"""What a call costs in time on a real LMS, and how the simulator spends it.

LMS.md, observed on a small Moodle 4.3 site: about 36 ms a web-service call; 200 users in one
``core_user_create_users`` take about 2 s, 200 single calls about 7 s. A call is therefore
charged ``moodle_call_ms`` for its first row and ``moodle_row_ms`` for every further row it
carries (36 + 199 × 10 ms ≈ 2 s; 200 × 36 ms ≈ 7 s). A Canvas request is charged
``canvas_request_ms`` (LMS.md gives no figure; ``REAL_SITE`` takes Moodle's). The time is spent
with ``asyncio.sleep`` before the call runs, so its effects appear when the answer goes out and
the server keeps serving other calls meanwhile. All 0 by default: the tests stay fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

REAL_SITE = {"moodle_call_ms": 36.0, "moodle_row_ms": 10.0, "canvas_request_ms": 36.0}
"""The service times of a small real site (LMS.md), for ``bridge lmssim`` and the benches."""


class ServiceTime(Protocol):
    """Where the simulator reads its service times (the app's ``Knobs``), in milliseconds."""

    moodle_call_ms: float
    moodle_row_ms: float
    canvas_request_ms: float


def moodle_rows(variables: Mapping[str, object]) -> int:
    """The rows a web-service call carries: its longest list parameter (``users``, ``userids``,
    ``values``, ``members``, ``enrolments``…; not ``options``, which are settings), at least 1.
    ``variables`` are the PHP form arrays: a list is an array with integer keys."""
    lengths = [
        len(value)
        for name, value in variables.items()
        if name != "options" and isinstance(value, Mapping) and all(k.isdigit() for k in value)
    ]
    return max([1, *lengths])


def moodle_seconds(times: ServiceTime, rows: int) -> float:
    return (times.moodle_call_ms + times.moodle_row_ms * max(0, rows - 1)) / 1000


def canvas_seconds(times: ServiceTime) -> float:
    return times.canvas_request_ms / 1000


async def spend(seconds: float) -> None:
    """Take ``seconds`` to answer, without holding up the other calls."""
    if seconds > 0:
        await asyncio.sleep(seconds)
