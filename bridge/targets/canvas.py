"""The Canvas target: intents → Canvas REST calls (LMS.md, Canvas), users addressed by SIS id.

``CanvasTarget.deliver`` is the shell: it sends the calls one intent needs and journals each as
(method, path, status). The pure part — id addressing, the account ``Profile``, request builders,
``Link`` parsing, Canvas's error bodies and ``classify`` — is ``bridge.targets.canvas_api``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx

from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.canvas_api import CANVAS_KEYS
from bridge.targets.canvas_api import MAX_PAGES
from bridge.targets.canvas_api import NO_COHORTS
from bridge.targets.canvas_api import ROLE_TYPES
from bridge.targets.canvas_api import THROTTLE_DELAY
from bridge.targets.canvas_api import Call
from bridge.targets.canvas_api import Profile
from bridge.targets.canvas_api import changes
from bridge.targets.canvas_api import classify
from bridge.targets.canvas_api import course_ref
from bridge.targets.canvas_api import create_user
from bridge.targets.canvas_api import describe
from bridge.targets.canvas_api import drift
from bridge.targets.canvas_api import end_enrollment
from bridge.targets.canvas_api import enrol
from bridge.targets.canvas_api import enrollment_type
from bridge.targets.canvas_api import errors
from bridge.targets.canvas_api import get_user
from bridge.targets.canvas_api import json_body
from bridge.targets.canvas_api import list_enrollments
from bridge.targets.canvas_api import next_link
from bridge.targets.canvas_api import reactivate_enrollment
from bridge.targets.canvas_api import retry_after
from bridge.targets.canvas_api import sis
from bridge.targets.canvas_api import taken
from bridge.targets.canvas_api import update_user
from bridge.targets.pacing import LEAK_PER_S
from bridge.targets.pacing import Allowance
from bridge.targets.pacing import AllowanceTransport

__all__ = [
    "CANVAS_KEYS",
    "MAX_PAGES",
    "NO_COHORTS",
    "ROLE_TYPES",
    "THROTTLE_DELAY",
    "Call",
    "CanvasTarget",
    "Profile",
    "changes",
    "classify",
    "course_ref",
    "create_user",
    "describe",
    "drift",
    "end_enrollment",
    "enrol",
    "enrollment_type",
    "errors",
    "get_user",
    "list_enrollments",
    "next_link",
    "reactivate_enrollment",
    "retry_after",
    "sis",
    "taken",
    "update_user",
]


def _number(options: Mapping[str, Any], name: str, default: float | None) -> float | None:
    """A numeric option (None: not set and no default); ValueError unless a number ≥ 0."""
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number from 0 up, not {value!r}")
    return float(value)


class _Stop(Exception):
    """Ends a delivery early with an outcome (a classified answer mid-way)."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


class CanvasTarget:
    """Canvas through its REST API with an account admin's token (``options.account_id``).

    Options: ``account_id`` (default ``self``, the root account), ``per_page`` (enrollment
    lookups, ≤ 100), ``unenrol_task`` (``conclude``, the default: the enrollment is kept,
    read-only, with its grades — completion records stay; or ``delete``), ``roles`` (extra
    role → enrollment type names), ``authentication_provider_id`` (SSO logins), ``timeout``.

    Throttling (``bridge.targets.pacing.Allowance``): every answer's ``X-Rate-Limit-Remaining``
    and ``X-Request-Cost`` are read, and calls are spaced once the allowance would fall under
    ``throttle_low_water`` (default: a tenth of the fullest seen), given that the bucket drains
    at ``throttle_leak_per_s`` (default 10, Canvas's); a 403 "Rate Limit Exceeded" pauses
    every call of the target. ``throttle_pacing: false`` turns that off.
    """

    kind = "canvas"

    def __init__(
        self,
        config: TargetConfig,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = config.options
        self.name = config.name
        self.account_id = str(options.get("account_id", "self"))
        self.per_page = min(max(int(options.get("per_page", 100)), 1), 100)
        self.unenrol_task = str(options.get("unenrol_task", "conclude"))
        if self.unenrol_task not in ("conclude", "delete"):
            raise ValueError(f"target {config.name!r}: unenrol_task must be conclude or delete")
        extra = options.get("roles") or {}
        self.roles = {**ROLE_TYPES, **{str(k).lower(): str(v) for k, v in dict(extra).items()}}
        provider = options.get("authentication_provider_id")
        self.provider = str(provider) if provider is not None else None
        self.pacing: AllowanceTransport | None = None
        if options.get("throttle_pacing", True):
            self.pacing = AllowanceTransport(
                transport or httpx.AsyncHTTPTransport(),
                Allowance(
                    leak_per_s=max(_number(options, "throttle_leak_per_s", LEAK_PER_S) or 0, 0.01),
                    low_water=_number(options, "throttle_low_water", None),
                ),
            )
            transport = self.pacing
        self.client = httpx.AsyncClient(
            base_url=config.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            transport=transport,
            timeout=float(options.get("timeout", 30.0)),
        )

    async def deliver(self, delivery: Delivery) -> Result:
        attempt = _Attempt(self, delivery)
        try:
            result = await attempt.run()
        except _Stop as stop:
            result = stop.result
        except httpx.TransportError as exc:  # timeouts included: the call may be retried
            result = Result.retry(f"Canvas unreachable: {type(exc).__name__}: {exc}")
        detail: dict[str, Any] = {"calls": attempt.calls, **result.detail}
        if attempt.remaining is not None:
            detail["rate_limit_remaining"] = attempt.remaining
        return replace(result, detail=detail)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def probe(self) -> Result:
        """Whether Canvas answers and takes the token: ``GET /api/v1/users/self``.

        Retry: unreachable or throttled; dead: it answered but refused (401: the token);
        done: it answered. ``detail``: ``http_status`` and, on 200, the token's ``user``.
        """
        try:
            response = await self.client.get("/api/v1/users/self")
        except httpx.TransportError as exc:
            return Result.retry(f"Canvas unreachable: {type(exc).__name__}: {exc}")
        failed = classify(response, bad_request=Category.configuration)
        status = response.status_code
        if failed is not None and (failed.status is Status.retry or status == 401):
            return replace(failed, detail={"http_status": status})
        body = json_body(response) if status == 200 else None
        user = body.get("name") if isinstance(body, dict) else None
        return Result.done(message=f"Canvas answered {status}", http_status=status, user=user)


class _Attempt:
    """One delivery: its calls so far (the journal) and the ways to address the user."""

    def __init__(self, target: CanvasTarget, delivery: Delivery) -> None:
        self.target = target
        self.delivery = delivery
        self.calls: list[dict[str, Any]] = []
        self.remaining: float | None = None
        attributes = delivery.data.get("attributes")
        merged = {**delivery.account, **(attributes if isinstance(attributes, dict) else {})}
        self.profile = Profile.of(merged)
        # By SIS id first (stable when links are lost or Canvas merges users), then by the
        # Canvas id the link remembers (a login adopted without SIS id, a changed idnumber).
        self.users = (
            [sis("sis_user_id", self.profile.sis_user_id)] if self.profile.sis_user_id else []
        )
        if delivery.lms_user_id:
            self.users.append(str(delivery.lms_user_id))

    async def send(self, call: Call) -> httpx.Response:
        client = self.target.client
        form = dict(call.form) if call.form else None
        request = client.build_request(
            call.method, call.url, params=list(call.params) or None, data=form
        )
        entry: dict[str, Any] = {
            "method": call.method,
            "path": request.url.raw_path.decode("ascii"),
        }
        self.calls.append(entry)
        try:
            response = await client.send(request)
        except httpx.TransportError as exc:
            entry["error"] = type(exc).__name__
            raise
        entry["status"] = response.status_code
        remaining = response.headers.get("x-rate-limit-remaining")
        with contextlib.suppress(ValueError):
            self.remaining = float(remaining) if remaining is not None else self.remaining
        return response

    def check(
        self, response: httpx.Response, bad_request: Category = Category.data_quality
    ) -> None:
        result = classify(response, bad_request=bad_request)
        if result is not None:
            raise _Stop(result)

    def body(self, response: httpx.Response) -> dict[str, Any]:
        found = json_body(response)
        if not isinstance(found, dict) or "id" not in found:
            raise _Stop(
                Result.retry(f"Canvas answered {response.status_code} without the expected JSON")
            )
        return found

    async def user_call(self, build: Callable[[str], Call]) -> httpx.Response:
        """``build`` addressed to the user by SIS id, then by Canvas id if Canvas said 404."""
        if not self.users:
            message = (
                "no idnumber to address the Canvas user by sis_user_id, and no linked Canvas id"
            )
            raise _Stop(Result.dead(Category.data_quality, message))
        response = await self.send(build(self.users[0]))
        for user in self.users[1:]:
            if response.status_code != 404:
                break
            response = await self.send(build(user))
        return response

    async def find_user(self) -> dict[str, Any] | None:
        response = await self.user_call(get_user)
        if response.status_code == 404:
            return None
        self.check(response)
        return self.body(response)

    async def run(self) -> Result:
        kind = self.delivery.kind
        if kind in ("add_cohort_member", "remove_cohort_member"):
            return Result.dead(Category.configuration, NO_COHORTS)
        if kind == "upsert_account":
            return await self.upsert()
        if kind in ("suspend_account", "reactivate_account"):
            return await self.account_event("suspend" if kind == "suspend_account" else "unsuspend")
        if kind == "enrol":
            return await self.enrol()
        if kind in ("suspend_enrolment", "unenrol"):
            return await self.remove(kind)
        return Result.dead(Category.configuration, f"the canvas target does not handle {kind!r}")

    async def upsert(self) -> Result:
        data, lms_user_id = self.delivery.data, self.delivery.lms_user_id
        changed = data.get("attributes")
        relevant = CANVAS_KEYS.intersection(changed) if isinstance(changed, dict) else CANVAS_KEYS
        if data.get("create") is False and lms_user_id and not relevant:
            return Result.done(lms_user_id, "no attribute Canvas keeps has changed")
        current = await self.find_user()  # the upsert probe: 404 → create, 200 → update
        note = ""
        if current is None:
            problem = self.profile.create_problem()
            if problem:
                return Result.dead(Category.data_quality, problem)
            response = await self.send(
                create_user(self.target.account_id, self.profile, self.target.provider)
            )
            if response.is_success:
                return Result.done(str(self.body(response)["id"]), "created")
            answer = json_body(response)
            if response.status_code == 400 and taken(answer, "sis_user_id"):
                return Result.retry(
                    "the SIS id appeared in Canvas after the probe; probing again", after=1.0
                )
            if response.status_code != 400 or not taken(answer, "unique_id"):
                self.check(response)
            current, note = await self.adopt()
        fields, user_id = changes(self.profile, current), str(current["id"])
        notes = [note] if note else []
        notes += [f"{n} (the Logins API changes it)" for n in drift(self.profile, current)]
        if fields:
            ours = current.get("sis_user_id") == self.profile.sis_user_id
            response = await self.send(update_user(self.users[0] if ours else user_id, fields))
            self.check(response)
            notes.append(f"updated {', '.join(sorted(fields))}")
        return Result.done(user_id, "; ".join(notes) or "up to date")

    async def adopt(self) -> tuple[dict[str, Any], str]:
        """The login is taken (LMS.md: the user exists): the user holding it, if it is ours."""
        login = self.profile.login or ""
        response = await self.send(get_user(sis("sis_login_id", login)))
        if response.status_code == 404:
            raise _Stop(
                Result.retry(f"login {login!r} is taken but not found; probing again", after=1.0)
            )
        self.check(response)
        holder = self.body(response)
        theirs = holder.get("sis_user_id")
        if theirs and theirs != self.profile.sis_user_id:
            message = (
                f"login {login!r} belongs to Canvas user {holder['id']} with SIS id {theirs!r},"
                f" not {self.profile.sis_user_id!r}"
            )
            raise _Stop(Result.dead(Category.data_quality, message))
        if theirs:
            return holder, "created meanwhile by another delivery"
        return (
            holder,
            f"login {login!r} was held by Canvas user {holder['id']} without SIS id: adopted",
        )

    async def account_event(self, event: str) -> Result:
        response = await self.user_call(lambda user: update_user(user, {"event": event}))
        if response.status_code == 404:
            if event == "suspend":
                return Result.done(None, "no such Canvas user: nothing to suspend")
            return Result.dead(
                Category.configuration, f"no Canvas user {self.users[0]} to reactivate"
            )
        self.check(response)
        done = {"suspend": "suspended", "unsuspend": "reactivated"}[event]
        return Result.done(str(self.body(response)["id"]), done)

    async def enrollments(self, course: str, types: Sequence[str]) -> list[dict[str, Any]] | None:
        """The user's enrollments in the course, every page (None: Canvas said 404)."""
        states = ("active", "invited", "inactive", "completed")  # without state[]: active only
        response = await self.user_call(
            lambda user: list_enrollments(
                course, user, states=states, types=types, per_page=self.target.per_page
            )
        )
        if response.status_code == 404:
            return None
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        base = self.target.client.base_url
        while True:
            self.check(response)
            page = json_body(response)
            found += [e for e in page if isinstance(e, dict)] if isinstance(page, list) else []
            url = next_link(response.headers.get("link"))
            if url is None:
                return found
            target = httpx.URL(url)
            if target.is_absolute_url and (target.scheme, target.host, target.port) != (
                base.scheme,
                base.host,
                base.port,
            ):
                raise _Stop(
                    Result.dead(
                        Category.configuration, f"Link to another host refused: {target.host}"
                    )
                )
            if url in seen or len(seen) >= MAX_PAGES:
                raise _Stop(
                    Result.dead(Category.configuration, "Canvas's Link pagination does not end")
                )
            seen.add(url)
            response = await self.send(Call("GET", url))

    async def missing(self, course: str, *, removal: bool) -> Result:
        """A 404 from a course-scoped call: the course or the user does not exist — ask which."""
        if await self.find_user() is not None:
            return Result.dead(Category.configuration, f"Canvas has no course {course}")
        if removal:
            return Result.done(None, "no such Canvas user: nothing to remove")
        message = f"Canvas has no user {self.users[0]}: was the account created? (see its upsert)"
        return Result.dead(Category.configuration, message)

    async def enrol(self) -> Result:
        kind = enrollment_type(self.delivery.data.get("role"), self.target.roles)
        if kind is None:
            role = self.delivery.data.get("role")
            return Result.dead(
                Category.configuration,
                f"role {role!r} has no Canvas enrollment type (options.roles)",
            )
        course = course_ref(self.delivery.ref or "")
        found = await self.enrollments(course, (kind,))
        if found is None:
            return await self.missing(course, removal=False)
        active = next((e for e in found if e.get("enrollment_state") == "active"), None)
        if active is not None:
            return Result.done(
                str(active["user_id"]), f"already enrolled (enrollment {active['id']})"
            )
        inactive = next((e for e in found if e.get("enrollment_state") == "inactive"), None)
        if inactive is not None:  # suspended earlier: bring it back with its progress
            response = await self.send(reactivate_enrollment(course, str(inactive["id"])))
            self.check(response, Category.configuration)
            return Result.done(str(inactive["user_id"]), f"reactivated enrollment {inactive['id']}")
        # Canvas reuses a concluded or deleted enrollment of this type in the default section.
        response = await self.user_call(lambda user: enrol(course, user, kind))
        if response.status_code == 404:
            return await self.missing(course, removal=False)
        self.check(response, Category.configuration)
        made = self.body(response)
        return Result.done(str(made["user_id"]), f"enrolled as {kind} (enrollment {made['id']})")

    async def remove(self, kind: str) -> Result:
        role = self.delivery.data.get("role")
        # Without a role the intent means "off this course": every type the user holds there.
        kinds = (enrollment_type(role, self.target.roles),) if role else ()
        if None in kinds:
            return Result.dead(
                Category.configuration,
                f"role {role!r} has no Canvas enrollment type (options.roles)",
            )
        course = course_ref(self.delivery.ref or "")
        found = await self.enrollments(course, [k for k in kinds if k])
        if found is None:
            return await self.missing(course, removal=True)
        if kind == "suspend_enrolment":  # deactivate: the user keeps progress, cannot take part
            task, states = "deactivate", {"active", "invited"}
        else:
            task, states = self.target.unenrol_task, {"active", "invited", "inactive"}
            states |= {"completed"} if task == "delete" else set()
        todo = [e for e in found if e.get("enrollment_state") in states]
        for enrollment in todo:
            response = await self.send(end_enrollment(course, str(enrollment["id"]), task))
            if response.status_code != 404:  # 404: deleted meanwhile, nothing left to end
                self.check(response, Category.configuration)
        user_id = str(found[0]["user_id"]) if found else self.delivery.lms_user_id
        if not todo:
            held = sorted({str(e.get("enrollment_state")) for e in found}) or ["no enrollment"]
            return Result.done(user_id, f"nothing to {task}: {', '.join(held)}")
        ids = ", ".join(str(e["id"]) for e in todo)
        return Result.done(user_id, f"{task}: enrollment {ids}")
