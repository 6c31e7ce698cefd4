"""What a Moodle site holds for a reconcile: accounts by id, course participants (LMS.md).

Reads only, streamed and paged so that memory stays flat over 100,000s of people: accounts
by id in batches (``core_user_get_users_by_field`` with ``field=id`` — which, observed on
Moodle 4.3, also returns deleted accounts, dropped by ``moodle_ws.live_users``), a course's
participants page by page (``core_enrol_get_enrolled_users`` with ``limitfrom``/``limitnumber``,
once for active and once for suspended enrolments, narrowed to
``userfields=id``), a cohort's members whole (``core_cohort_get_cohort_members``: Moodle does
not page it; the cohort found by idnumber with ``core_cohort_search_cohorts`` as the target
does). A function missing from the token's service is a configuration error that names it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.targets.base import Category
from bridge.targets.moodle_findings import SERVICE
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import Run
from bridge.targets.moodle_ws import live_users

Call = Callable[[Run, str, Mapping[str, Any]], Awaitable[Any]]
"""``MoodleTarget.call``: one web-service call."""

READ_FUNCTIONS = (
    "core_user_get_users_by_field",
    "core_course_get_courses_by_field",
    "core_enrol_get_enrolled_users",
    "core_cohort_search_cohorts",
    "core_cohort_get_cohort_members",
)
"""The web-service functions a reconcile calls: the token's service must allow them."""
USERS_PER_CALL = 100
PARTICIPANTS_PER_PAGE = 1000
COHORTS_PER_SEARCH = 25


@dataclass(frozen=True)
class Participants:
    """Who a course holds: Moodle user ids with an active enrolment, and with only
    suspended (or ended) ones."""

    courseid: int
    active: frozenset[int]
    suspended: frozenset[int]

    def status(self, userid: int) -> str | None:
        """``active``, ``suspended`` or None (not a participant)."""
        if userid in self.active:
            return "active"
        return "suspended" if userid in self.suspended else None


def not_in_service(function: str) -> MoodleError:
    """The error a reconcile stops with when the token's service lacks ``function``."""
    return MoodleError(
        f"{function} is not in the token's external service (accessexception): a reconcile "
        f"reads with it; add {function} to the service under {SERVICE} → Functions",
        category=Category.configuration,
        errorcode="accessexception",
    )


class MoodleReader:
    """The reads of one Moodle target, through its ``call``."""

    lms = "Moodle"
    reads = frozenset({AssignmentKind.enrolment, AssignmentKind.cohort})
    """The assignment kinds whose members it reads."""

    def __init__(
        self,
        call: Call,
        *,
        users_per_call: int = USERS_PER_CALL,
        page: int = PARTICIPANTS_PER_PAGE,
    ) -> None:
        self._call = call
        self.users_per_call = users_per_call
        self.page = page
        self.calls = 0

    async def _ask(self, function: str, params: Mapping[str, Any]) -> Any:
        self.calls += 1
        try:
            return await self._call(Run(), function, params)
        except MoodleError as error:
            if error.errorcode == "accessexception":
                raise not_in_service(function) from error
            raise

    async def users(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The live accounts among ``ids`` (Moodle user ids), by id; a deleted one is absent
        (Moodle answers it, with the values ``delete_user()`` left: dropped here)."""
        wanted = [i for i in dict.fromkeys(str(i) for i in ids) if i.isdigit()]
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), self.users_per_call):
            batch = wanted[start : start + self.users_per_call]
            answer = await self._ask(
                "core_user_get_users_by_field", {"field": "id", "values": batch}
            )
            for user in live_users(answer):
                found[str(user["id"])] = user
        return found

    async def course(self, ref: str) -> int | None:
        """The id of the course a rule names by idnumber or shortname (None: no such course)."""
        for field_ in ("idnumber", "shortname"):
            answer = await self._ask(
                "core_course_get_courses_by_field", {"field": field_, "value": ref}
            )
            courses = answer.get("courses", []) if isinstance(answer, dict) else []
            if courses:
                return int(courses[0]["id"])
        return None

    async def _participant_ids(self, courseid: int, only: str) -> frozenset[int]:
        ids: set[int] = set()
        start = 0
        while True:
            options = [
                {"name": only, "value": "1"},
                {"name": "userfields", "value": "id"},
                {"name": "limitfrom", "value": str(start)},
                {"name": "limitnumber", "value": str(self.page)},
            ]
            answer = await self._ask(
                "core_enrol_get_enrolled_users", {"courseid": courseid, "options": options}
            )
            if not isinstance(answer, list):
                raise MoodleError(
                    f"core_enrol_get_enrolled_users: unexpected answer {answer!r:.80}"
                )
            ids.update(int(user["id"]) for user in answer)
            if len(answer) < self.page:
                return frozenset(ids)
            start += self.page

    async def participants(self, courseid: int) -> Participants:
        """A course's participants, active and suspended, read page by page."""
        active = await self._participant_ids(courseid, "onlyactive")
        suspended = await self._participant_ids(courseid, "onlysuspended")
        return Participants(courseid, active, suspended - active)

    async def cohort(self, ref: str) -> int | None:
        """The id of the cohort a rule names by idnumber (None: no such cohort), searched
        as the target does, page by page until the exact idnumber shows."""
        start = 0
        while True:
            answer = await self._ask(
                "core_cohort_search_cohorts",
                {
                    "query": ref,
                    "context": {"contextlevel": "system", "instanceid": 0},
                    "includes": "all",
                    "limitfrom": start,
                    "limitnum": COHORTS_PER_SEARCH,
                },
            )
            cohorts = answer.get("cohorts", []) if isinstance(answer, dict) else []
            exact = [c for c in cohorts if c.get("idnumber") == ref]
            if exact:
                return int(exact[0]["id"])
            if len(cohorts) < COHORTS_PER_SEARCH:
                return None
            start += COHORTS_PER_SEARCH

    async def members(self, cohortid: int) -> Participants:
        """A cohort's members (all active: a cohort has no suspended members)."""
        answer = await self._ask("core_cohort_get_cohort_members", {"cohortids": [cohortid]})
        if not isinstance(answer, list):
            raise MoodleError(f"core_cohort_get_cohort_members: unexpected answer {answer!r:.80}")
        ids = frozenset(
            int(userid)
            for entry in answer
            if isinstance(entry, dict) and int(entry.get("cohortid", -1)) == cohortid
            for userid in entry.get("userids") or []
        )
        return Participants(cohortid, ids, frozenset())

    async def holders(self, assignment: Assignment) -> Participants | None:
        """Who holds an assignment: a course's participants or a cohort's members (None: the
        course or cohort does not exist)."""
        if assignment.kind == AssignmentKind.cohort:
            cohortid = await self.cohort(assignment.ref)
            return None if cohortid is None else await self.members(cohortid)
        courseid = await self.course(assignment.ref)
        return None if courseid is None else await self.participants(courseid)
