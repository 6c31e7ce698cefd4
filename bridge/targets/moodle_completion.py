"""Course completion read from Moodle: ``core_completion_get_course_completion_status``, and
``core_completion_get_activities_completion_status`` for a learner who met no criterion yet.

Moodle's answer has no course-level ``timestarted``/``timecompleted`` (completion/classes/
external.php returns the criteria only), so the state is derived: complete when
``completionstatus.completed``; in progress when any criterion has a ``timecompleted``, or,
when none has, any activity of the course is complete (activities outside the criteria count
as a start); not started otherwise. Started at the earliest completion seen, completed at the
latest criterion met (the earliest, when ``aggregation`` is 2: any criterion completes the
course) — on a Moodle 4.3 site the same times as its ``course_completions`` row. The course
needs completion tracking (else ``cannotviewreport``, also the answer when the token's user
lacks ``report/completion:view``) and criteria (``nocriteriaset``); a learner without an active
student enrolment is ``usernotenroled``; the activities need ``report/progress:view``. The token's service must hold both
functions and the course lookup: the reader asks the site once (``core_webservice_get_site_info``)
and, when one is missing, answers every read with what to add and where
(``bridge.targets.moodle_preflight``, whose ``bridge targets check`` warns of it too).
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
ANY = 2  # COMPLETION_AGGREGATION_ANY: one criterion met completes the course
HINTS = {
    # completion_can_view_data() is false for both (observed on Moodle 4.3)
    "cannotviewreport": "completion tracking is off on the course, or the token's user lacks "
    "the capability report/completion:view",
    "nopermissions": "the token's user lacks a capability the read needs "
    "(report/progress:view for activity completion)",
}
"""What a Moodle error code means for a completion read, where its message does not say."""


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
        if not met:
            return Reading(COMPLETE)
        done = met[0] if status.get("aggregation") == ANY else met[-1]
        return Reading(COMPLETE, from_epoch(met[0]), from_epoch(done))
    if met:
        return Reading(IN_PROGRESS, from_epoch(met[0]))
    return Reading(NOT_STARTED)


def read_error(error: MoodleError) -> str:
    """A failed read in Moodle's words ("function: errorcode: message", as
    ``moodle_ws.parse_answer`` words it) and, for an ambiguous code, what it can mean (pure)."""
    code, said = error.errorcode, error.message
    if code and code not in said:
        said = f"{said} ({code})"
    hint = HINTS.get(code or "")
    return f"{said}: {hint}" if hint else said


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
    then shortname, looked up once per reader; the service's functions checked once)."""

    def __init__(self, target: MoodleTarget) -> None:
        self.target = target
        self._courses: dict[str, int | str] = {}  # ref → course id, or why it was not found
        self._lookup = asyncio.Lock()  # concurrent reads of one course look it up once
        self._service = asyncio.Lock()
        self._refusal: str | None = None
        self._checked = False

    async def _refused(self) -> str | None:
        """Why no read can succeed: a function missing from the token's service (asked once)."""
        # Imported here: moodle_preflight names this module's functions.
        from bridge.targets.moodle_preflight import TRAINING
        from bridge.targets.moodle_preflight import read_refusal

        async with self._service:
            if not self._checked:
                self._refusal = await read_refusal(self.target, TRAINING)
                self._checked = True
        return self._refusal

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
        refused = await self._refused()
        if refused is not None:
            return Reading.failed(refused)
        try:
            course = await self._course(ask.course)
            params = {"courseid": course, "userid": int(ask.lms_user_id)}
            reading = parse_course_status(await self.target.call(Run(), FUNCTION, params))
            if reading.state == NOT_STARTED:
                started = first_activity_done(await self.target.call(Run(), ACTIVITIES, params))
                if started is not None:
                    reading = Reading(IN_PROGRESS, from_epoch(started))
        except MoodleError as error:
            return Reading.failed(read_error(error))
        except ValueError as exc:
            return Reading.failed(str(exc))
        return reading
