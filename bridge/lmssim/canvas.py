"""The simulated Canvas: users with SIS ids, courses and enrollments behind a bearer token.

Only LMS.md's Canvas subset, but as strict as Canvas itself: ``sis_user_id:`` / ``sis_course_id:``
/ ``sis_login_id:`` / ``hex:`` ids, Canvas's error bodies, a 400 for a taken login, enrolment
that reuses the user's enrollment in the course, ``Link`` pagination with opaque bookmarks,
``state[]`` defaults, and a leaky bucket per token reported in ``X-Request-Cost`` /
``X-Rate-Limit-Remaining`` (403 "Rate Limit Exceeded" when it overflows). Written by hand from
canvas-lms's own sources (``users_controller``, ``enrollments_api_controller``, ``lib/api.rb``):
no library simulates Canvas.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import PlainTextResponse
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route

NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}
INVALID_TOKEN = {"errors": [{"message": "Invalid access token."}]}
NO_TOKEN = {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
UNAUTHORIZED = {
    "status": "unauthorized",
    "errors": [{"message": "user not authorized to perform that action"}],
}
ENROLLMENT_TYPES = (
    "StudentEnrollment",
    "TeacherEnrollment",
    "TaEnrollment",
    "DesignerEnrollment",
    "ObserverEnrollment",
)
# PUT /users/:id answers 401 for any user[...] key outside what the caller may manage
# (users_controller#update); profiles are off, so user[title] and user[bio] are refused too.
USER_FIELDS = frozenset(
    {"name", "short_name", "sortable_name", "email", "event", "time_zone", "locale"}
)
DEFAULT_COURSES = (
    ("BEN-2026", "Benefits 2026"),
    ("BEN-2026-MGR", "Benefits 2026 for managers"),
    ("SEC-101", "Security awareness"),
    ("ONB-2026", "Onboarding 2026"),
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SIS_ID = re.compile(r"^(sis_[a-z_]+):(.+)$", re.DOTALL)


class NotFound(Exception):
    """Canvas's ActiveRecord::RecordNotFound: 404 with the generic message."""


class Refused(Exception):
    """An answer other than 200, with Canvas's body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


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


@dataclass
class Enrollment:
    id: int
    user_id: int
    course_id: int
    type: str
    enrollment_state: str  # active | invited | inactive | completed | deleted


def last_name_first(name: str) -> str:
    """Canvas's inferred sortable name: "Jane Smith" → "Smith, Jane"."""
    first, _, last = name.strip().rpartition(" ")
    return f"{last}, {first}" if first else last


def valid_email(address: str) -> bool:
    return bool(_EMAIL.match(address))


def parse_id(ref: str) -> tuple[str, str]:
    """``12`` → ("id", "12"); ``sis_user_id:E1`` / ``hex:sis_user_id:4531`` → ("sis_user_id", "E1")."""
    ref = ref.strip()
    if ref.startswith("hex:"):
        found = _SIS_ID.match(ref[4:])
        if found is None:
            return "", ""
        try:
            return found.group(1), bytes.fromhex(found.group(2)).decode()
        except (ValueError, UnicodeDecodeError):
            return "", ""
    found = _SIS_ID.match(ref)
    if found is not None:
        return found.group(1), found.group(2)
    return ("id", ref) if ref.isdigit() else ("", "")


class CanvasSite:
    """One Canvas root account in memory, with its token and its rate-limit bucket."""

    def __init__(
        self,
        token: str,
        *,
        account_id: int = 1,
        courses: Iterable[tuple[str, str]] = DEFAULT_COURSES,
        high_water: float = 700.0,
        leak_per_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.account_id = account_id
        self.users: dict[int, User] = {}
        self.courses: dict[int, Course] = {}
        self.enrollments: dict[int, Enrollment] = {}
        # Distinct ranges, so a user id passed where an enrollment id belongs finds nothing.
        self._next = {"user": 101, "course": 11, "enrollment": 5001}
        self.high_water = high_water
        self.leak_per_s = leak_per_s
        self.clock = clock
        self.level = 0.0
        self.updated = clock()
        for sis_course_id, name in courses:
            self.add_course(sis_course_id, name)

    def new_id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind] - 1

    def add_course(self, sis_course_id: str | None, name: str) -> Course:
        course = Course(self.new_id("course"), sis_course_id, name)
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

    def enrollment_json(self, enrollment: Enrollment) -> dict[str, Any]:
        user = self.users[enrollment.user_id]
        course = self.courses[enrollment.course_id]
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
        }


# Request parameters: Rails merges the query string and the body, form-encoded or JSON.


def nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rack's nested keys: ``user[name]=x`` → {"user": {"name": "x"}}, ``state[]=a`` → a list."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *re.findall(r"([^\[\]]*)\]", "[" + rest)] if rest else [head]
        node = out
        for index, part in enumerate(parts[:-1]):
            if parts[index + 1] == "" and index + 2 == len(parts):
                listed = node.get(part)
                node[part] = [*listed, value] if isinstance(listed, list) else [value]
                break
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        else:
            node[parts[-1]] = value
    return out


def section(params: dict[str, Any], key: str) -> dict[str, Any]:
    """``params[key]`` when it is a nested group (``user[...]``), else an empty one."""
    found = params.get(key)
    return found if isinstance(found, dict) else {}


def truthy(value: Any) -> bool:
    """Canvas's ``value_to_boolean``."""
    return str(value).strip().lower() in {"1", "true", "t", "yes", "y", "on"}


def listed(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


async def parameters(request: Request) -> dict[str, Any]:
    params = nest(request.query_params.multi_items())
    raw = await request.body()
    if not raw:
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise Refused(400, {"errors": [{"message": "Invalid JSON body"}]}) from exc
        if isinstance(body, dict):
            params.update(body)
        return params
    if kind.startswith("multipart/"):  # Canvas takes -F too; python-multipart is not a dependency
        raise Refused(415, {"errors": [{"message": "multipart bodies are not simulated"}]})
    params.update(nest(parse_qsl(raw.decode(), keep_blank_values=True)))
    return params


def field_errors(**fields: tuple[str, str]) -> dict[str, Any]:
    """ActiveModel errors as Canvas renders them: {field: [{attribute, type, message}]}."""
    return {
        name: [{"attribute": name, "type": kind, "message": message}]
        for name, (kind, message) in fields.items()
    }


def create_errors(pseudonym: dict[str, Any]) -> dict[str, Any]:
    """users_controller#create_user's 400 body."""
    return {
        "errors": {
            "user": {},
            "pseudonym": pseudonym,
            "observee": {},
            "pairing_code": {},
            "recaptcha": None,
        }
    }


# Bookmarked pagination (Canvas's BookmarkedCollection): the page token is opaque to clients.


def bookmark(key: tuple[str, str, int]) -> str:
    return "bookmark:" + base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def unbookmark(page: str | None) -> tuple[str, str, int] | None:
    if not page or not page.startswith("bookmark:"):
        return None
    try:
        kind, name, ident = json.loads(base64.urlsafe_b64decode(page[9:].encode()))
        return str(kind), str(name), int(ident)
    except (ValueError, TypeError, binascii.Error):
        return None


Handler = Callable[[Request, dict[str, Any]], Awaitable[tuple[int, Any, dict[str, str]]]]

COSTS = {"GET": 0.05, "POST": 0.2, "PUT": 0.2, "DELETE": 0.2}


def routes(site: CanvasSite) -> list[BaseRoute]:
    """Canvas's REST subset of LMS.md under ``/api/v1``."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else None
            token = token or request.query_params.get("access_token")
            rate = {"X-Request-Cost": "0", "X-Rate-Limit-Remaining": f"{site.remaining():.4f}"}
            if not token or not secrets.compare_digest(token.encode(), site.token.encode()):
                challenge = {**rate, "WWW-Authenticate": 'Bearer realm="canvas-lms"'}
                return JSONResponse(INVALID_TOKEN if token else NO_TOKEN, 401, challenge)
            cost = COSTS.get(request.method, 0.05)
            left = site.charge(cost)
            if left is None:  # Canvas sends no Retry-After: clients back off on their own
                return PlainTextResponse("403 Forbidden (Rate Limit Exceeded)", 403, rate)
            rate = {"X-Request-Cost": f"{cost:.4f}", "X-Rate-Limit-Remaining": f"{left:.4f}"}
            try:
                status, body, headers = await handler(request, await parameters(request))
            except NotFound:
                return JSONResponse(NOT_FOUND, 404, rate)
            except Refused as refused:
                return JSONResponse(refused.body, refused.status, rate)
            return JSONResponse(body, status, {**rate, **headers})

        return run

    def account(request: Request) -> None:
        ref = request.path_params["account_id"]
        if ref != "self" and parse_id(ref) != ("id", str(site.account_id)):
            raise NotFound(ref)

    async def show_user(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        return 200, site.user_json(site.find_user(request.path_params["user_id"])), {}

    async def create_user(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        account(request)
        user_params, pseudonym = section(params, "user"), section(params, "pseudonym")
        channel = params.get("communication_channel")
        login = str(pseudonym.get("unique_id") or "").strip()
        sis_user_id = str(pseudonym.get("sis_user_id") or "") or None
        # An invalid address is dropped without a word (users_controller#create_user):
        # the user is created with no email channel at all.
        address = str(channel.get("address") or "") if isinstance(channel, dict) else login
        email = address if address and valid_email(address) else None
        name = str(user_params.get("name") or "") or login
        sortable = str(user_params.get("sortable_name") or "") or last_name_first(name)
        short = str(user_params.get("short_name") or "") or name
        if sis_user_id and truthy(params.get("enable_sis_reactivation")):
            deleted = next(
                (
                    u
                    for u in site.users.values()
                    if u.sis_user_id == sis_user_id and u.state == "deleted"
                ),
                None,
            )
            if deleted is not None:  # the deleted login comes back, with its id and history
                deleted.state = "active"
                deleted.name, deleted.sortable_name, deleted.short_name = name, sortable, short
                deleted.email = email or deleted.email
                return 200, site.user_json(deleted, email=False), {}
        problems: dict[str, Any] = {}
        if not login:
            problems.update(field_errors(unique_id=("blank", "can't be blank")))
        elif site.login(login) is not None:
            problems.update(
                field_errors(
                    unique_id=(
                        "taken",
                        "ID already in use for this account and authentication provider",
                    )
                )
            )
        if sis_user_id and any(u.sis_user_id == sis_user_id for u in site.users.values()):
            problems.update(
                field_errors(sis_user_id=("taken", f'SIS ID "{sis_user_id}" is already in use'))
            )
        if problems:
            raise Refused(400, create_errors(problems))
        user = site.add_user(
            login, name, sis_user_id=sis_user_id, email=email, sortable_name=sortable
        )
        user.short_name = short
        return 200, site.user_json(user, email=False), {}

    async def update_user(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        user = site.find_user(request.path_params["user_id"])
        fields = section(params, "user")
        if not fields or set(fields) - USER_FIELDS:
            raise Refused(401, UNAUTHORIZED)
        email = fields.get("email")
        if email is not None and not valid_email(str(email)):
            message = f'"{email}" is not a valid email address'
            raise Refused(400, {"errors": field_errors(email=("invalid", message))})
        if fields.get("name"):
            user.name = str(fields["name"])
            user.sortable_name = str(fields.get("sortable_name") or last_name_first(user.name))
        elif fields.get("sortable_name"):
            user.sortable_name = str(fields["sortable_name"])
        if fields.get("short_name"):
            user.short_name = str(fields["short_name"])
        if email is not None:
            user.email = str(email)
        event = fields.get("event")
        if event in ("suspend", "unsuspend"):  # other values are ignored, as Canvas does
            user.state = "suspended" if event == "suspend" else "active"
        return 200, site.user_json(user), {}

    async def enrol(request: Request, params: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        course = site.find_course(request.path_params["course_id"])
        wanted = params.get("enrollment")
        if not isinstance(wanted, dict) or not wanted:
            raise Refused(400, {"message": "No parameters given"})
        kind = str(wanted.get("type") or "StudentEnrollment")
        if kind not in ENROLLMENT_TYPES:
            raise Refused(400, {"message": "Invalid type"})
        if not wanted.get("user_id"):
            message = "Can't create an enrollment without a user. Include enrollment[user_id] to create an enrollment"
            raise Refused(400, {"message": message})
        user = site.find_user(str(wanted["user_id"]))
        state = str(wanted.get("enrollment_state") or "invited")
        state = state if state in ("active", "invited", "inactive") else "invited"
        # Course#enroll_user reuses the user's enrollment of that type in the section, whatever
        # its state, and moves it to the state asked for unless it is active already.
        found = next(
            (
                e
                for e in site.enrollments.values()
                if (e.user_id, e.course_id, e.type) == (user.id, course.id, kind)
            ),
            None,
        )
        if found is None:
            found = Enrollment(site.new_id("enrollment"), user.id, course.id, kind, state)
            site.enrollments[found.id] = found
        elif found.enrollment_state != "active":
            found.enrollment_state = state
        return 200, site.enrollment_json(found), {}

    async def list_enrollments(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        course = site.find_course(request.path_params["course_id"])
        found = [e for e in site.enrollments.values() if e.course_id == course.id]
        states = listed(params.get("state"))
        if params.get("user_id"):
            user = site.find_user(str(params["user_id"]))
            found = [e for e in found if e.user_id == user.id]
            # user_index_enrollments: without state[], only active and invited enrollments.
            states = states or ["active", "invited"]
        else:  # an admin reading the roster also sees inactive ones (all_active_or_pending)
            states = states or ["active", "invited", "creation_pending", "inactive"]
        found = [e for e in found if e.enrollment_state in states]
        if types := listed(params.get("type")):
            found = [e for e in found if e.type in types]

        def key(e: Enrollment) -> tuple[str, str, int]:
            return e.type, site.users[e.user_id].sortable_name, e.id

        found.sort(key=key)
        try:
            per_page = min(max(int(params.get("per_page") or 10), 1), 100)
        except ValueError:
            per_page = 10
        after = unbookmark(str(params.get("page") or ""))
        if after is not None:
            found = [e for e in found if key(e) > after]
        page, more = found[:per_page], len(found) > per_page
        kept = [
            (k, v)
            for k, v in request.query_params.multi_items()
            if k not in ("page", "per_page", "access_token")
        ]
        base = f"{request.base_url}api/v1/courses/{course.id}/enrollments?"

        def link(token: str, rel: str) -> str:
            query = urlencode([*kept, ("page", token), ("per_page", str(per_page))])
            return f'<{base}{query}>; rel="{rel}"'

        links = [link(str(params.get("page") or "first"), "current")]
        if more:
            links.append(link(bookmark(key(page[-1])), "next"))
        links.append(link("first", "first"))
        return 200, [site.enrollment_json(e) for e in page], {"Link": ",".join(links)}

    async def end_enrollment(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        course = site.find_course(request.path_params["course_id"])
        enrollment = site.find_enrollment(course, request.path_params["enrollment_id"])
        task = str(params.get("task") or "conclude")
        enrollment.enrollment_state = {
            "delete": "deleted",
            "deactivate": "inactive",
            "inactivate": "inactive",
        }.get(task, "completed")
        return 200, site.enrollment_json(enrollment), {}

    async def reactivate(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        course = site.find_course(request.path_params["course_id"])
        enrollment = site.find_enrollment(course, request.path_params["enrollment_id"])
        if enrollment.enrollment_state != "inactive":
            raise Refused(400, {"error": "enrollment not inactive"})
        enrollment.enrollment_state = "active"
        return 200, site.enrollment_json(enrollment), {}

    async def unknown(request: Request, params: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        raise NotFound(request.url.path)

    enrollments = "/api/v1/courses/{course_id}/enrollments"
    return [
        Route("/api/v1/users/{user_id}", endpoint(show_user), methods=["GET"]),
        Route("/api/v1/users/{user_id}", endpoint(update_user), methods=["PUT"]),
        Route("/api/v1/accounts/{account_id}/users", endpoint(create_user), methods=["POST"]),
        Route(enrollments, endpoint(enrol), methods=["POST"]),
        Route(enrollments, endpoint(list_enrollments), methods=["GET"]),
        Route(enrollments + "/{enrollment_id}", endpoint(end_enrollment), methods=["DELETE"]),
        Route(enrollments + "/{enrollment_id}/reactivate", endpoint(reactivate), methods=["PUT"]),
        # Anything else under /api (another route, another method) is Canvas's JSON 404.
        Route(
            "/api/{rest:path}", endpoint(unknown), methods=["GET", "POST", "PUT", "DELETE", "PATCH"]
        ),
    ]
