"""Course completion read from Moodle: ``core_completion_get_course_completion_status``, and
``core_completion_get_activities_completion_status`` for a learner who met no criterion yet.

Moodle's answer has no course-level ``timestarted``/``timecompleted`` (completion/classes/
external.php returns the criteria only), so the state is derived: complete when
``completionstatus.completed``; in progress when any criterion has a ``timecompleted``, or,
when none has, any activity of the course is complete (activities outside the criteria count
as a start); not started otherwise. Started at the earliest completion seen, completed at the
latest criterion met. The course needs completion tracking and criteria, and the token's
service must hold both functions (``bridge targets check`` does not require them: only
``bridge training --refresh`` calls them; without them every read fails with
``accessexception``, shown per person).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from bridge.targets.completion import COMPLETE
from bridge.targets.completion import IN_PROGRESS
from bridge.targets.completion import NOT_STARTED
from bridge.targets.completion import Ask
from bridge.targets.completion import Reading
from bridge.targets.completion import from_epoch
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import Run

FUNCTION = "core_completion_get_course_completion_status"
ACTIVITIES = "core_completion_get_activities_completion_status"
COURSE_LOOKUP = "core_course_get_courses_by_field"
FUNCTIONS = (FUNCTION, ACTIVITIES)
"""What reading completion needs in the token's service, besides the course lookup."""


def parse_course_status(answer: Any) -> Reading:
    """``core_completion_get_course_completion_status``'s answer as a Reading (pure)."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("completionstatus"), Mapping):
        return Reading.failed(f"{FUNCTION}: unexpected answer: {answer!r:.200}")
    status = answer["completionstatus"]
    met = sorted(
        int(c["timecompleted"])
        for c in status.get("completions") or []
        if isinstance(c, Mapping) and c.get("timecompleted")
    )
    if status.get("completed"):
        return Reading(
            COMPLETE, from_epoch(met[0]) if met else None, from_epoch(met[-1]) if met else None
        )
    if met:
        return Reading(IN_PROGRESS, from_epoch(met[0]))
    return Reading(NOT_STARTED)


def first_activity_done(answer: Any) -> int | None:
    """The earliest ``timecompleted`` of a complete activity in
    ``core_completion_get_activities_completion_status``'s answer (pure); None if none is."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("statuses"), list):
        raise ValueError(f"{ACTIVITIES}: unexpected answer: {answer!r:.200}")
    times = [
        int(row.get("timecompleted") or 0)
        for row in answer["statuses"]
        if isinstance(row, Mapping) and int(row.get("state") or 0) > 0
    ]
    return min((t for t in times if t), default=None)


class MoodleCompletion:
    """Reads completion through a ``MoodleTarget``'s web-service client (courses by idnumber,
    then shortname, looked up once per reader)."""

    def __init__(self, target: MoodleTarget) -> None:
        self.target = target
        self._courses: dict[str, int | str] = {}  # ref → course id, or why it was not found
        self._lookup = asyncio.Lock()  # concurrent reads of one course look it up once

    async def _course(self, ref: str) -> int:
        async with self._lookup:
            if ref not in self._courses:
                self._courses[ref] = await self._find(ref)
        found = self._courses[ref]
        if isinstance(found, str):
            raise MoodleError(found)
        return found

    async def _find(self, ref: str) -> int | str:
        for field_ in ("idnumber", "shortname"):
            answer = await self.target.call(Run(), COURSE_LOOKUP, {"field": field_, "value": ref})
            courses = answer.get("courses", []) if isinstance(answer, dict) else []
            if courses:
                return int(courses[0]["id"])
        return f"no Moodle course with idnumber or shortname {ref!r}"

    async def read(self, ask: Ask) -> Reading:
        if not ask.lms_user_id:
            return Reading.failed("no Moodle account id confirmed for this person")
        try:
            course = await self._course(ask.course)
            params = {"courseid": course, "userid": int(ask.lms_user_id)}
            reading = parse_course_status(await self.target.call(Run(), FUNCTION, params))
            if reading.state == NOT_STARTED:
                started = first_activity_done(await self.target.call(Run(), ACTIVITIES, params))
                if started is not None:
                    reading = Reading(IN_PROGRESS, from_epoch(started))
        except MoodleError as error:
            code = f" ({error.errorcode})" if error.errorcode else ""
            return Reading.failed(f"{error.message}{code}")
        except ValueError as exc:
            return Reading.failed(str(exc))
        return reading
