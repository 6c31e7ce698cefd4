"""The simulated Canvas's routes: LMS.md's subset of Canvas's REST API under ``/api/v1``.

Every call is checked against the site's bearer token and charged to its leaky bucket
(``X-Request-Cost`` / ``X-Rate-Limit-Remaining``, 403 "Rate Limit Exceeded" when it overflows),
then takes the time a real request would (``bridge.lmssim.cost``) when the service times say so.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import PlainTextResponse
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route

from bridge.lmssim.canvas_wire import NotFound
from bridge.lmssim.canvas_wire import Refused
from bridge.lmssim.canvas_wire import bookmark
from bridge.lmssim.canvas_wire import create_errors
from bridge.lmssim.canvas_wire import field_errors
from bridge.lmssim.canvas_wire import last_name_first
from bridge.lmssim.canvas_wire import listed
from bridge.lmssim.canvas_wire import page_links
from bridge.lmssim.canvas_wire import parameters
from bridge.lmssim.canvas_wire import parse_id
from bridge.lmssim.canvas_wire import per_page
from bridge.lmssim.canvas_wire import section
from bridge.lmssim.canvas_wire import truthy
from bridge.lmssim.canvas_wire import unbookmark
from bridge.lmssim.canvas_wire import valid_email
from bridge.lmssim.cost import ServiceTime
from bridge.lmssim.cost import canvas_seconds
from bridge.lmssim.cost import spend

if TYPE_CHECKING:
    from bridge.lmssim.canvas import CanvasSite
    from bridge.lmssim.canvas import Enrollment
    from bridge.lmssim.canvas import User

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

Handler = Callable[[Request, dict[str, Any]], Awaitable[tuple[int, Any, dict[str, str]]]]

COSTS = {"GET": 0.05, "POST": 0.2, "PUT": 0.2, "DELETE": 0.2}
NO_PROGRESS = {
    "error": {
        "message": "no progress available because this course is not module based (has modules "
        "and module completion requirements) or the user is not enrolled as a student in this "
        "course"
    }
}


def routes(site: CanvasSite, times: ServiceTime | None = None) -> list[BaseRoute]:
    """Canvas's REST subset of LMS.md under ``/api/v1``, each request taking ``times``."""

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
            if times is not None:  # before the request runs: its effects show when it answers
                await spend(canvas_seconds(times))
            site.completion.catch_up()  # the learners' days that passed since the last call
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

    async def list_users(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """accounts_controller#users (an admin): the account's users, deleted ones only with
        ``include_deleted_users``, ``sort`` username (sortable name, the default), sis_id or
        id, ``include[]=email``; ``per_page`` ≤ 100, pages by opaque bookmark (``Link``)."""
        account(request)
        sort = str(params.get("sort") or "username")
        if sort not in ("username", "sis_id", "id"):
            sort = "username"
        deleted = truthy(params.get("include_deleted_users"))

        def key(user: User) -> tuple[str, str, int]:
            value = {"username": user.sortable_name, "sis_id": user.sis_user_id or ""}
            return "user", value.get(sort, ""), user.id

        found = sorted((u for u in site.users.values() if deleted or u.state != "deleted"), key=key)
        if str(params.get("order") or "asc") == "desc":
            found.reverse()
        size = per_page(params)
        after = unbookmark(str(params.get("page") or ""))
        if after is not None:
            reverse = str(params.get("order") or "asc") == "desc"
            found = [u for u in found if (key(u) < after if reverse else key(u) > after)]
        page = found[:size]
        email = "email" in listed(params.get("include"))
        kept = [
            (k, v)
            for k, v in request.query_params.multi_items()
            if k not in ("page", "per_page", "access_token")
        ]
        base = f"{request.base_url}api/v1/accounts/{request.path_params['account_id']}/users?"
        following = bookmark(key(page[-1])) if len(found) > size else None
        header = page_links(base, kept, str(params.get("page") or "first"), following, size)
        return 200, [site.account_user_json(u, email=email) for u in page], {"Link": header}

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
            found = site.add_enrollment(user.id, course.id, kind, state)
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

    async def user_progress(
        request: Request, params: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """courses_controller#user_progress: the user must be in the course (404), as a student
        in a module-based course (else 400 with CourseProgress's error)."""
        course = site.find_course(request.path_params["course_id"])
        user = site.find_user(request.path_params["user_id"])
        kinds = {
            e.type
            for e in site.enrollments.values()
            if (e.course_id, e.user_id) == (course.id, user.id) and e.enrollment_state != "deleted"
        }
        if not kinds:  # api_find(@context.users, …)
            raise NotFound(request.path_params["user_id"])
        if not course.requirements or "StudentEnrollment" not in kinds:
            raise Refused(400, NO_PROGRESS)
        return 200, site.progress_json(course, user.id), {}

    async def unknown(request: Request, params: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        raise NotFound(request.url.path)

    enrollments = "/api/v1/courses/{course_id}/enrollments"
    return [
        Route("/api/v1/users/{user_id}", endpoint(show_user), methods=["GET"]),
        Route("/api/v1/users/{user_id}", endpoint(update_user), methods=["PUT"]),
        Route("/api/v1/accounts/{account_id}/users", endpoint(create_user), methods=["POST"]),
        Route("/api/v1/accounts/{account_id}/users", endpoint(list_users), methods=["GET"]),
        Route(enrollments, endpoint(enrol), methods=["POST"]),
        Route(enrollments, endpoint(list_enrollments), methods=["GET"]),
        Route(enrollments + "/{enrollment_id}", endpoint(end_enrollment), methods=["DELETE"]),
        Route(enrollments + "/{enrollment_id}/reactivate", endpoint(reactivate), methods=["PUT"]),
        Route(
            "/api/v1/courses/{course_id}/users/{user_id}/progress",
            endpoint(user_progress),
            methods=["GET"],
        ),
        # Anything else under /api (another route, another method) is Canvas's JSON 404.
        Route(
            "/api/{rest:path}", endpoint(unknown), methods=["GET", "POST", "PUT", "DELETE", "PATCH"]
        ),
    ]
