"""The simulator's ``core_completion`` web-service functions and the activities they report on.

Read from Moodle's ``completion/classes/external.php`` (4.3/4.4) and checked against a Moodle 4.3
site: both functions find the course (``invalidrecord``) and the user (``invaliduser``: a
``dml_missing_record_exception`` on table user; ``userdeleted``, whose message is the bare
string key ``error/userdeleted``; ``guestsarenotallowed``) first; a suspended account is no
error. ``core_completion_get_course_completion_status`` then wants completion enabled on the
course (else ``cannotviewreport``; the site course asks the site, which has it), the user
tracked — an active enrolment with the student role (else ``usernotenroled``, or ``notenroled``
when the token's user asks about themself) — and completion criteria (else ``nocriteriaset``);
it answers one row per criterion.
``core_completion_get_activities_completion_status`` needs none of that: it lists the activities
with completion tracking and the user's state in each, tracked or not. A seeded course requires
its activities, all of them (aggregation 1, "all"); progress lives in ``bridge.lmssim.completion``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from bridge.lmssim.completion import Key
from bridge.lmssim.moodle_ws import Functions
from bridge.lmssim.moodle_ws import Value
from bridge.lmssim.moodle_ws import WsError
from bridge.lmssim.moodle_ws import missing_record

if TYPE_CHECKING:
    from bridge.lmssim.moodle import Course
    from bridge.lmssim.moodle import MoodleSite
    from bridge.lmssim.moodle import User

FUNCTIONS = Functions()
NONE, MANUAL, AUTOMATIC = 0, 1, 2  # COMPLETION_TRACKING_*
CRITERIA_TYPE_ACTIVITY = 4  # COMPLETION_CRITERIA_TYPE_ACTIVITY
AGGREGATION_ALL = 1  # COMPLETION_AGGREGATION_ALL: the default when none is set
STUDENT = 5  # the archetype with moodle/course:isincompletionreports
SITE_COURSE = 1
MODULE_NAMES = {"page": "Page", "quiz": "Quiz", "assign": "Assignment", "scorm": "SCORM package"}


@dataclass
class Activity:
    """A course module and its completion settings."""

    id: int  # cmid
    courseid: int
    modname: str
    instance: int
    name: str
    tracking: int = AUTOMATIC
    completionview: bool = False  # automatic: complete when viewed
    completiongrade: bool = False  # automatic: complete when graded
    criterion: bool = True  # named by the course completion criteria


def activities(site: MoodleSite, courseid: int) -> list[Activity]:
    """The course's activities with completion tracking, in course order."""
    return sorted(
        (a for a in site.activities.values() if a.courseid == courseid and a.tracking != NONE),
        key=lambda a: a.id,
    )


def requirements(site: MoodleSite, courseid: int) -> list[int]:
    """What the course completion criteria require: their activities' cmids."""
    return [a.id for a in activities(site, courseid) if a.criterion]


def is_tracked(site: MoodleSite, courseid: int, userid: int, at: float | None = None) -> bool:
    """``completion_info::is_tracked_user``: an active enrolment (status, instance, dates) and
    the student role in the course."""
    if not any(r[:3] == (courseid, userid, STUDENT) for r in site.roles):
        return False
    return any(
        site.instances[row.instanceid].courseid == courseid and site.is_active(row, at)
        for row in site.enrolments.values()
        if row.userid == userid
    )


def learners(site: MoodleSite, at: float) -> Iterator[Key]:
    """Who progresses on their own: tracked learners of courses with completion enabled who
    can log in (not suspended, not deleted). One pass: the bench tracks thousands."""
    students = {(r[0], r[1]) for r in site.roles if r[2] == STUDENT}
    for row in site.enrolments.values():
        courseid = site.instances[row.instanceid].courseid
        if (courseid, row.userid) not in students or not site.is_active(row, at):
            continue
        course, user = site.courses[courseid], site.users.get(row.userid)
        if user is not None and not (user.deleted or user.suspended) and course.enablecompletion:
            yield courseid, row.userid


def _course_and_user(site: MoodleSite, params: dict[str, Any]) -> tuple[Course, User]:
    """``get_course`` and ``core_user::get_user(MUST_EXIST)`` + ``require_active_user``."""
    course = site.courses.get(params["courseid"])
    if course is None:
        raise missing_record("course")
    user = site.users.get(params["userid"])
    if user is None:  # dml_missing_record_exception names table user so
        raise WsError("invaliduser", "Invalid user", exception="dml_missing_record_exception")
    if user.deleted:  # moodle_exception('userdeleted'): no such string in lang/en/moodle.php
        raise WsError("userdeleted", "error/userdeleted")
    if user.username == "guest":
        raise WsError("guestsarenotallowed", "The guest user is not allowed to do this")
    return course, user


def _requirement_text(activity: Activity) -> str:
    """``completion_criteria_activity::get_details``: what the activity asks of the learner."""
    if activity.tracking == MANUAL:
        return "Marking yourself complete"
    parts = []
    if activity.completionview:
        module = MODULE_NAMES.get(activity.modname, activity.modname).lower()
        parts.append(f"Viewing the {module}")
    if activity.completiongrade:
        parts.append("Achieving grade")
    return ", ".join(parts)


@FUNCTIONS.register(
    "core_completion_get_course_completion_status", courseid=Value("int"), userid=Value("int")
)
def get_course_completion_status(site: MoodleSite, params: dict[str, Any]) -> Any:
    course, user = _course_and_user(site, params)
    # completion_can_view_data(): the course's setting; for the site course, the site's (on)
    if not course.enablecompletion and course.id != SITE_COURSE:
        raise WsError("cannotviewreport", "You cannot view this report")
    if not is_tracked(site, course.id, user.id):
        if user.username == "admin":  # the token's own user
            raise WsError("notenroled", "You are not enrolled in this course")
        raise WsError("usernotenroled", "User is not enrolled in this course")
    criteria = [a for a in activities(site, course.id) if a.criterion]
    if not criteria:
        raise WsError("nocriteriaset", "No completion criteria set for this course")
    progress = site.completion.of(course.id, user.id)
    completions = []
    for activity in criteria:
        met = progress.met.get(activity.id)
        link = f"{site.wwwroot}/mod/{activity.modname}/view.php?id={activity.id}"
        completions.append(
            {
                "type": CRITERIA_TYPE_ACTIVITY,
                "title": "Activity completion",
                "status": "Yes" if met else "No",
                "complete": met is not None,
                "timecompleted": met,  # null until the criterion is met
                "details": {
                    "type": "Activity completion",
                    "criteria": f'<a href="{link}">{activity.name}</a>',
                    "requirement": _requirement_text(activity),
                    "status": "",
                },
            }
        )
    return {
        "completionstatus": {
            "completed": bool(progress.timecompleted),
            "aggregation": AGGREGATION_ALL,
            "completions": completions,
        },
        "warnings": [],
    }


@FUNCTIONS.register(
    "core_completion_get_activities_completion_status", courseid=Value("int"), userid=Value("int")
)
def get_activities_completion_status(site: MoodleSite, params: dict[str, Any]) -> Any:
    course, user = _course_and_user(site, params)
    progress = site.completion.of(course.id, user.id)
    tracked = is_tracked(site, course.id, user.id)
    statuses = []
    for activity in activities(site, course.id):
        met = progress.met.get(activity.id)
        state = 0 if met is None else 1  # COMPLETION_INCOMPLETE / COMPLETION_COMPLETE
        details = []
        if activity.tracking == AUTOMATIC:  # cm_completion_details: automatic rules only
            if activity.completionview:
                details.append(_rule("completionview", state, "View"))
            if activity.completiongrade:
                details.append(_rule("completionusegrade", state, "Receive a grade"))
        statuses.append(
            {
                "cmid": activity.id,
                "modname": activity.modname,
                "instance": activity.instance,
                "state": state,
                "timecompleted": met or 0,
                "tracking": activity.tracking,
                "overrideby": None,
                "valueused": False,
                "hascompletion": course.enablecompletion,
                "isautomatic": activity.tracking == AUTOMATIC,
                "istrackeduser": tracked,
                "uservisible": True,
                "details": details,
            }
        )
    return {"statuses": statuses, "warnings": []}


def _rule(name: str, status: int, description: str) -> dict[str, Any]:
    return {"rulename": name, "rulevalue": {"status": status, "description": description}}
