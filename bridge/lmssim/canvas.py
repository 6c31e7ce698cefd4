"""The simulated Canvas: users with SIS ids, courses and enrollments behind a bearer token.

Only LMS.md's Canvas subset, but as strict as Canvas itself: ``sis_user_id:`` / ``sis_course_id:``
/ ``sis_login_id:`` / ``hex:`` ids, Canvas's error bodies, a 400 for a taken login, enrolment
that reuses the user's enrollment in the course, ``Link`` pagination with opaque bookmarks,
``state[]`` defaults, and a leaky bucket per token reported in ``X-Request-Cost`` /
``X-Rate-Limit-Remaining`` (403 "Rate Limit Exceeded" when it overflows). Written by hand from
canvas-lms's own sources (``users_controller``, ``enrollments_api_controller``, ``lib/api.rb``):
no library simulates Canvas. This module owns the state (``CanvasSite``); the routes are
``bridge.lmssim.canvas_api``, the HTTP conventions ``bridge.lmssim.canvas_wire``.

Each course is "module based": one module whose items carry completion requirements (two by
default), sequential progress required. Students progress through them
(``bridge.lmssim.completion``); ``CourseProgress`` (``progress_json``) and the enrollments'
``grades`` (every requirement a graded item) report it as canvas-lms does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from bridge.lmssim.canvas_api import COSTS
from bridge.lmssim.canvas_api import ENROLLMENT_TYPES
from bridge.lmssim.canvas_api import INVALID_TOKEN
from bridge.lmssim.canvas_api import NO_TOKEN
from bridge.lmssim.canvas_api import NOT_FOUND
from bridge.lmssim.canvas_api import UNAUTHORIZED
from bridge.lmssim.canvas_api import USER_FIELDS
from bridge.lmssim.canvas_api import Handler
from bridge.lmssim.canvas_api import routes
from bridge.lmssim.canvas_wire import NotFound
from bridge.lmssim.canvas_wire import Refused
from bridge.lmssim.canvas_wire import bookmark
from bridge.lmssim.canvas_wire import create_errors
from bridge.lmssim.canvas_wire import field_errors
from bridge.lmssim.canvas_wire import last_name_first
from bridge.lmssim.canvas_wire import listed
from bridge.lmssim.canvas_wire import nest
from bridge.lmssim.canvas_wire import parameters
from bridge.lmssim.canvas_wire import parse_id
from bridge.lmssim.canvas_wire import section
from bridge.lmssim.canvas_wire import truthy
from bridge.lmssim.canvas_wire import unbookmark
from bridge.lmssim.canvas_wire import valid_email
from bridge.lmssim.completion import Completion
from bridge.lmssim.completion import Key
from bridge.lmssim.completion import Pace

__all__ = [
    "COSTS",
    "DEFAULT_COURSES",
    "ENROLLMENT_TYPES",
    "INVALID_TOKEN",
    "NOT_FOUND",
    "NO_TOKEN",
    "UNAUTHORIZED",
    "USER_FIELDS",
    "CanvasSite",
    "Course",
    "Enrollment",
    "Handler",
    "NotFound",
    "Refused",
    "User",
    "bookmark",
    "create_errors",
    "field_errors",
    "last_name_first",
    "listed",
    "nest",
    "parameters",
    "parse_id",
    "routes",
    "section",
    "truthy",
    "unbookmark",
    "valid_email",
]

DEFAULT_COURSES = (
    ("BEN-2026", "Benefits 2026"),
    ("BEN-2026-MGR", "Benefits 2026 for managers"),
    ("SEC-101", "Security awareness"),
    ("ONB-2026", "Onboarding 2026"),
)


@dataclass
class User:
    id: int
    name: str
    sortable_name: str
    short_name: str
    login_id: str
    sis_user_id: str | None = None
    email: str | None = None
    state: str = "active"  # the login's workflow_state: active | suspended | deleted


@dataclass
class Course:
    id: int
    sis_course_id: str | None
    name: str
    requirements: list[int] = field(default_factory=list)  # module item ids, in order
    sequential: bool = True  # the module requires sequential progress


@dataclass
class Enrollment:
    id: int
    user_id: int
    course_id: int
    type: str
    enrollment_state: str  # active | invited | inactive | completed | deleted


class CanvasSite:
    """One Canvas root account in memory, with its token and its rate-limit bucket.

    ``clock`` times the bucket (monotonic); ``calendar`` is the wall clock the learners'
    progress follows (``completion``, moved by ``pace`` with the RNG ``seed``); ``html_url``
    is where Canvas's pages would be.
    """

    def __init__(
        self,
        token: str,
        *,
        account_id: int = 1,
        courses: Iterable[tuple[str, str]] = DEFAULT_COURSES,
        high_water: float = 700.0,
        leak_per_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        calendar: Callable[[], float] = time.time,
        pace: Pace | None = None,
        seed: int | None = None,
        html_url: str = "http://canvas.test",
    ) -> None:
        self.token = token
        self.html_url = html_url
        self.account_id = account_id
        self.users: dict[int, User] = {}
        self.courses: dict[int, Course] = {}
        self.enrollments: dict[int, Enrollment] = {}
        # Distinct ranges, so a user id passed where an enrollment id belongs finds nothing.
        self._next = {"user": 101, "course": 11, "enrollment": 5001, "item": 9001}
        self.high_water = high_water
        self.leak_per_s = leak_per_s
        self.clock = clock
        self.level = 0.0
        self.updated = clock()
        self.completion = Completion(
            calendar,
            lambda course_id: self.courses[course_id].requirements,
            self.learners,
            pace or Pace(),
            seed=None if seed is None else f"canvas-{seed}",  # its own stream of draws
        )
        for sis_course_id, name in courses:
            self.add_course(sis_course_id, name)

    def new_id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind] - 1

    def add_course(self, sis_course_id: str | None, name: str, *, requirements: int = 2) -> Course:
        """A course whose module has ``requirements`` module items to complete."""
        items = [self.new_id("item") for _ in range(requirements)]
        course = Course(self.new_id("course"), sis_course_id, name, items)
        self.courses[course.id] = course
        return course

    def add_user(
        self,
        login_id: str,
        name: str,
        *,
        sis_user_id: str | None = None,
        email: str | None = None,
        sortable_name: str | None = None,
    ) -> User:
        """A user as the Canvas UI or an SIS import would make it (tests seed with this)."""
        user = User(
            self.new_id("user"),
            name,
            sortable_name or last_name_first(name),
            name,
            login_id,
            sis_user_id,
            email,
        )
        self.users[user.id] = user
        return user

    def add_enrollment(self, user_id: int, course_id: int, kind: str, state: str) -> Enrollment:
        """A new enrollment of ``user_id`` in ``course_id`` as ``kind`` (Course#enroll_user)."""
        enrollment = Enrollment(self.new_id("enrollment"), user_id, course_id, kind, state)
        self.enrollments[enrollment.id] = enrollment
        self.completion.enrolled(course_id, user_id)
        return enrollment

    def learners(self, at: float) -> Iterator[Key]:
        """Who progresses on their own: active students whose login is active."""
        for e in self.enrollments.values():
            active = e.enrollment_state == "active" and self.users[e.user_id].state == "active"
            if e.type == "StudentEnrollment" and active:
                yield e.course_id, e.user_id

    def find_user(self, ref: str) -> User:
        """By ``id``, ``sis_user_id:`` or ``sis_login_id:`` (case-insensitive); deleted → 404."""
        column, value = parse_id(ref)
        found: User | None = None
        if column == "id":
            found = self.users.get(int(value))
        elif column == "sis_user_id":
            found = next((u for u in self.users.values() if u.sis_user_id == value), None)
        elif column == "sis_login_id":
            found = self.login(value)
        if found is None or found.state == "deleted":
            raise NotFound(ref)
        return found

    def login(self, login_id: str) -> User | None:
        """The live user holding a login; Canvas compares logins case-insensitively."""
        wanted = login_id.strip().lower()
        return next(
            (
                u
                for u in self.users.values()
                if u.login_id.lower() == wanted and u.state != "deleted"
            ),
            None,
        )

    def find_course(self, ref: str) -> Course:
        column, value = parse_id(ref)
        found: Course | None = None
        if column == "id":
            found = self.courses.get(int(value))
        elif column == "sis_course_id":
            found = next((c for c in self.courses.values() if c.sis_course_id == value), None)
        if found is None:
            raise NotFound(ref)
        return found

    def find_enrollment(self, course: Course, ref: str) -> Enrollment:
        """``course.enrollments.find(id)``: deleted enrollments are gone for this lookup."""
        found = self.enrollments.get(int(ref)) if ref.isdigit() else None
        if found is None or found.course_id != course.id or found.enrollment_state == "deleted":
            raise NotFound(ref)
        return found

    def charge(self, cost: float) -> float | None:
        """Leak the bucket, then add ``cost``: the remaining allowance, or None if throttled."""
        now = self.clock()
        self.level = max(0.0, self.level - (now - self.updated) * self.leak_per_s)
        self.updated = now
        if self.level + cost > self.high_water:
            return None
        self.level += cost
        return self.high_water - self.level

    def remaining(self) -> float:
        return max(0.0, self.high_water - self.level)

    def snapshot(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "users": [asdict(u) for u in self.users.values()],
            "courses": [asdict(c) for c in self.courses.values()],
            "enrollments": [asdict(e) for e in self.enrollments.values()],
            "completion": self.completion.snapshot(),
            "rate_limit_remaining": round(self.remaining(), 4),
        }

    # JSON as Canvas renders it (user_json / enrollment_json, admin caller)

    def user_json(self, user: User, *, email: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": user.id,
            "name": user.name,
            "sortable_name": user.sortable_name,
            "short_name": user.short_name,
            "sis_user_id": user.sis_user_id,
            "integration_id": None,
            "login_id": user.login_id,
            "locale": None,
        }
        if email:
            body["email"] = user.email
        return body

    def account_user_json(self, user: User, *, email: bool) -> dict[str, Any]:
        """A user in the account's users list: ``user_json`` (email only when included) and
        the login's ``workflow_state`` (active, suspended; deleted with
        ``include_deleted_users``), which is how a reader tells a suspended login."""
        return {**self.user_json(user, email=email), "workflow_state": user.state}

    def enrollment_json(self, enrollment: Enrollment) -> dict[str, Any]:
        user = self.users[enrollment.user_id]
        course = self.courses[enrollment.course_id]
        progress = self.completion.of(course.id, user.id)
        extra: dict[str, Any] = {
            "html_url": f"{self.html_url}/courses/{course.id}/users/{user.id}",
            "last_activity_at": _iso(progress.last_activity),
        }
        if enrollment.type == "StudentEnrollment":  # enrollment.student?
            extra["grades"] = self.grades(course, user.id)
        return {
            "id": enrollment.id,
            "user_id": user.id,
            "course_id": course.id,
            "sis_course_id": course.sis_course_id,
            "sis_user_id": user.sis_user_id,
            "course_section_id": course.id,
            "type": enrollment.type,
            "role": enrollment.type,
            "enrollment_state": enrollment.enrollment_state,
            "user": {
                "id": user.id,
                "name": user.name,
                "sortable_name": user.sortable_name,
                "short_name": user.short_name,
                "sis_user_id": user.sis_user_id,
                "login_id": user.login_id,
            },
            **extra,
        }

    def grades(self, course: Course, user_id: int) -> dict[str, Any]:
        """The enrollment's ``grades``: every requirement is a graded item of equal weight;
        the current score counts the graded ones, the final score the ungraded as zero. The
        course has no grading scheme, so there are no letter grades."""
        progress = self.completion.of(course.id, user_id)
        scores = [progress.scores[r] for r in course.requirements if r in progress.met]
        current = round(sum(scores) / len(scores), 2) if scores else None
        final = round(sum(scores) / len(course.requirements), 2) if course.requirements else None
        return {
            "html_url": f"{self.html_url}/courses/{course.id}/grades/{user_id}",
            "current_grade": None,
            "current_score": current,
            "final_grade": None,
            "final_score": final,
            "unposted_current_grade": None,
            "unposted_current_score": current,
            "unposted_final_grade": None,
            "unposted_final_score": final,
        }

    def progress_json(self, course: Course, user_id: int) -> dict[str, Any]:
        """``CourseProgress#to_json`` (read only): the next requirement's URL only while the
        learner is on their way through a sequential module."""
        progress = self.completion.of(course.id, user_id)
        met = [r for r in course.requirements if r in progress.met]
        completed = bool(course.requirements) and len(met) == len(course.requirements)
        following = next((r for r in course.requirements if r not in progress.met), None)
        url = None
        if course.sequential and progress.timestarted and following is not None:
            url = f"{self.html_url}/courses/{course.id}/modules/items/{following}"
        return {
            "requirement_count": len(course.requirements),
            "requirement_completed_count": len(met),
            "next_requirement_url": url,
            "completed_at": _iso(progress.timecompleted) if completed else None,
        }


def _iso(timestamp: int) -> str | None:
    """Canvas's timestamps: ISO 8601 in UTC (None for 0: never)."""
    if not timestamp:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
