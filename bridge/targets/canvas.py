"""The Canvas target: intents → Canvas REST calls (LMS.md, Canvas), users addressed by SIS id.

Pure: id addressing (``sis_user_id:`` / ``hex:``), the account ``Profile``, request builders
(``Call``), ``Link`` parsing, Canvas's error bodies and ``classify``. ``CanvasTarget.deliver``
is the shell: it sends the calls one intent needs and journals each as (method, path, status).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result

THROTTLE_DELAY = 2.0  # seconds: Canvas's 403 "Rate Limit Exceeded" carries no Retry-After
MAX_PAGES = 200
ROLE_TYPES = {
    "student": "StudentEnrollment",
    "teacher": "TeacherEnrollment",
    "ta": "TaEnrollment",
    "designer": "DesignerEnrollment",
    "observer": "ObserverEnrollment",
}
NO_COHORTS = "Canvas has no cohorts; use sections or a course"
# Attributes Canvas keeps (the rest of the mapping — title, department, roles — has no home in
# the users API, so a change to them alone makes no call).
CANVAS_KEYS = frozenset({"idnumber", "username", "email", "firstname", "lastname", "name"})
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_\-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LINK = re.compile(r"<([^>]*)>([^<]*)")


def sis(column: str, value: str) -> str:
    """``sis_user_id:E12345``; other characters than letters, digits, ``_`` and ``-`` are
    hex-encoded (``hex:sis_user_id:…``, canvas-lms lib/api.rb) so '.', '/' or '?' in an SIS id
    cannot break the path."""
    if _PLAIN_ID.match(value):
        return f"{column}:{value}"
    return f"hex:{column}:{value.encode().hex()}"


def course_ref(ref: str) -> str:
    """A rule's course ref is the course's SIS id unless it is already a Canvas id form."""
    return ref if ref.startswith(("sis_course_id:", "hex:")) else sis("sis_course_id", ref)


def enrollment_type(role: Any, roles: Mapping[str, str]) -> str | None:
    """A rule's role (``student``…) as a Canvas enrollment type; None if it has none."""
    name = str(role or "student").strip()
    return name if name in ROLE_TYPES.values() else roles.get(name.lower())


@dataclass(frozen=True)
class Profile:
    """What Canvas keeps of an account: SIS id, login (pseudonym), names and email."""

    sis_user_id: str | None
    login: str | None
    name: str | None
    sortable_name: str | None
    email: str | None

    @classmethod
    def of(cls, attributes: Mapping[str, Any]) -> Profile:
        def text(key: str) -> str | None:
            value = attributes.get(key)
            return (str(value).strip() or None) if value is not None else None

        first, last = text("firstname"), text("lastname")
        parts = [p for p in (first, last) if p]
        sortable = ", ".join(p for p in (last, first) if p) or None
        return cls(
            sis_user_id=text("idnumber"),
            login=text("username") or text("email"),
            name=text("name") or " ".join(parts) or None,
            sortable_name=sortable if parts else None,
            email=text("email"),
        )

    def create_problem(self) -> str | None:
        """Why this profile cannot become a Canvas user, before any call is made."""
        if not self.sis_user_id:
            return "no idnumber: Canvas users are created with, and found by, their sis_user_id"
        if not self.login:
            return "no username or email for the Canvas login (pseudonym[unique_id])"
        if self.email and not _EMAIL.match(self.email):
            # Canvas would create the user and silently drop the address (users#create).
            return f"email {self.email!r} is not a valid address; Canvas would drop it silently"
        return None


def changes(profile: Profile, current: Mapping[str, Any]) -> dict[str, str]:
    """The ``user[...]`` fields to PUT so that Canvas holds ``profile``: only those that differ."""
    wanted: dict[str, str] = {}
    if profile.name and profile.name != current.get("name"):
        wanted["name"] = profile.name
    if profile.sortable_name and profile.sortable_name != current.get("sortable_name"):
        wanted["sortable_name"] = profile.sortable_name
    if profile.email and profile.email.lower() != str(current.get("email") or "").lower():
        wanted["email"] = profile.email
    return wanted


def drift(profile: Profile, current: Mapping[str, Any]) -> list[str]:
    """What differs but ``PUT /users/:id`` cannot change: the login and the SIS id."""
    notes = []
    login = str(current.get("login_id") or "")
    if profile.login and login.lower() != profile.login.lower():
        notes.append(f"login stays {login!r}")
    theirs = current.get("sis_user_id")
    if theirs and profile.sis_user_id and theirs != profile.sis_user_id:
        notes.append(f"SIS id stays {theirs!r}")
    return notes


@dataclass(frozen=True)
class Call:
    """One Canvas request: method, path (or an absolute Link URL), query and form fields."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()


def get_user(user: str) -> Call:
    return Call("GET", f"/api/v1/users/{user}")


def create_user(account_id: str, profile: Profile, provider: str | None = None) -> Call:
    form = [
        ("user[name]", profile.name or profile.login or ""),
        ("pseudonym[unique_id]", profile.login or ""),
        ("pseudonym[sis_user_id]", profile.sis_user_id or ""),
        ("enable_sis_reactivation", "true"),  # a login deleted in Canvas comes back, same id
    ]
    if profile.sortable_name:
        form.append(("user[sortable_name]", profile.sortable_name))
    if provider:
        form.append(("pseudonym[authentication_provider_id]", provider))
    if profile.email:
        form += [
            ("communication_channel[type]", "email"),
            ("communication_channel[address]", profile.email),
            ("communication_channel[skip_confirmation]", "true"),
        ]
    return Call("POST", f"/api/v1/accounts/{account_id}/users", form=tuple(form))


def update_user(user: str, fields: Mapping[str, str]) -> Call:
    return Call(
        "PUT", f"/api/v1/users/{user}", form=tuple((f"user[{k}]", v) for k, v in fields.items())
    )


def enrol(course: str, user: str, kind: str) -> Call:
    form = (
        ("enrollment[user_id]", user),
        ("enrollment[type]", kind),
        ("enrollment[enrollment_state]", "active"),
        ("enrollment[notify]", "false"),
    )
    return Call("POST", f"/api/v1/courses/{course}/enrollments", form=form)


def list_enrollments(
    course: str, user: str, *, states: Sequence[str], types: Sequence[str] = (), per_page: int = 100
) -> Call:
    params = [("user_id", user), *(("state[]", s) for s in states), *(("type[]", t) for t in types)]
    params.append(("per_page", str(per_page)))
    return Call("GET", f"/api/v1/courses/{course}/enrollments", params=tuple(params))


def end_enrollment(course: str, enrollment_id: str, task: str) -> Call:
    return Call(
        "DELETE", f"/api/v1/courses/{course}/enrollments/{enrollment_id}", params=(("task", task),)
    )


def reactivate_enrollment(course: str, enrollment_id: str) -> Call:
    return Call("PUT", f"/api/v1/courses/{course}/enrollments/{enrollment_id}/reactivate")


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` URL of a Link header, as given: Canvas's page tokens are opaque."""
    for url, parameters in _LINK.findall(header or ""):
        if re.search(r'rel\s*=\s*"?([^";,]*\s)?next[\s";,]', parameters + ";"):
            return str(url)
    return None


def errors(body: Any) -> list[tuple[str, str, str]]:
    """Canvas error bodies → (field path, type, message): field errors nested by model
    (``{"errors": {"pseudonym": {"unique_id": [...]}}}``), ``{"errors": [{"message"}]}``,
    ``{"message"}`` (enrollments) and ``{"error"}`` (reactivate)."""
    if not isinstance(body, dict):
        return []
    if isinstance(body.get("errors"), dict | list):
        return _field_errors(body["errors"], "")
    said = body.get("message") or body.get("error")
    return [("", "", str(said))] if said else []


def _field_errors(node: Any, path: str) -> list[tuple[str, str, str]]:
    if isinstance(node, dict):
        found: list[tuple[str, str, str]] = []
        for key, value in node.items():
            found += _field_errors(value, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(node, list):
        return [
            (path, str(item.get("type") or ""), str(item.get("message") or ""))
            if isinstance(item, dict)
            else (path, "", str(item))
            for item in node
        ]
    return []


def describe(body: Any) -> str:
    return "; ".join(f"{path}: {message}" if path else message for path, _, message in errors(body))


def taken(body: Any, field: str) -> bool:
    return any(path.split(".")[-1] == field and kind == "taken" for path, kind, _ in errors(body))


def retry_after(
    headers: Mapping[str, str], default: float | None, now: datetime | None = None
) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), else ``default``."""
    value = headers.get("retry-after")
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def classify(
    response: httpx.Response, *, bad_request: Category = Category.data_quality
) -> Result | None:
    """None for a 2xx; otherwise the outcome the answer means. Throttling is 403 "Rate Limit
    Exceeded" (newer docs: 429) and, like 5xx, is retried; 401 is the token; 400 is the data."""
    status = response.status_code
    if status < 300:
        return None
    said = describe(_json(response)) or response.text.strip()[:200] or response.reason_phrase
    if status == 429 or (status == 403 and "rate limit exceeded" in response.text.lower()):
        after = retry_after(response.headers, THROTTLE_DELAY)
        return Result.retry(f"Canvas throttled the call ({status}): {said}", after=after)
    if status >= 500 or status == 408:
        return Result.retry(
            f"Canvas answered {status}: {said}", after=retry_after(response.headers, None)
        )
    if status == 401:
        return Result.dead(Category.provisioning, f"Canvas refused the token (401): {said}")
    if status in (400, 422):
        return Result.dead(bad_request, f"Canvas rejected the request ({status}): {said}")
    return Result.dead(Category.provisioning, f"Canvas answered {status}: {said}")


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
        found = _json(response)
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
            return Result.dead(Category.mapping, NO_COHORTS)
        if kind == "upsert_account":
            return await self.upsert()
        if kind in ("suspend_account", "reactivate_account"):
            return await self.account_event("suspend" if kind == "suspend_account" else "unsuspend")
        if kind == "enrol":
            return await self.enrol()
        if kind in ("suspend_enrolment", "unenrol"):
            return await self.remove(kind)
        return Result.dead(Category.mapping, f"the canvas target does not handle {kind!r}")

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
            answer = _json(response)
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
                Category.provisioning, f"no Canvas user {self.users[0]} to reactivate"
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
            page = _json(response)
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
                        Category.provisioning, f"Link to another host refused: {target.host}"
                    )
                )
            if url in seen or len(seen) >= MAX_PAGES:
                raise _Stop(
                    Result.dead(Category.provisioning, "Canvas's Link pagination does not end")
                )
            seen.add(url)
            response = await self.send(Call("GET", url))

    async def missing(self, course: str, *, removal: bool) -> Result:
        """A 404 from a course-scoped call: the course or the user does not exist — ask which."""
        if await self.find_user() is not None:
            return Result.dead(Category.mapping, f"Canvas has no course {course}")
        if removal:
            return Result.done(None, "no such Canvas user: nothing to remove")
        message = f"Canvas has no user {self.users[0]}: was the account created? (see its upsert)"
        return Result.dead(Category.provisioning, message)

    async def enrol(self) -> Result:
        kind = enrollment_type(self.delivery.data.get("role"), self.target.roles)
        if kind is None:
            role = self.delivery.data.get("role")
            return Result.dead(
                Category.mapping, f"role {role!r} has no Canvas enrollment type (options.roles)"
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
            self.check(response, Category.mapping)
            return Result.done(str(inactive["user_id"]), f"reactivated enrollment {inactive['id']}")
        # Canvas reuses a concluded or deleted enrollment of this type in the default section.
        response = await self.user_call(lambda user: enrol(course, user, kind))
        if response.status_code == 404:
            return await self.missing(course, removal=False)
        self.check(response, Category.mapping)
        made = self.body(response)
        return Result.done(str(made["user_id"]), f"enrolled as {kind} (enrollment {made['id']})")

    async def remove(self, kind: str) -> Result:
        role = self.delivery.data.get("role")
        # Without a role the intent means "off this course": every type the user holds there.
        kinds = (enrollment_type(role, self.target.roles),) if role else ()
        if None in kinds:
            return Result.dead(
                Category.mapping, f"role {role!r} has no Canvas enrollment type (options.roles)"
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
                self.check(response, Category.mapping)
        user_id = str(found[0]["user_id"]) if found else self.delivery.lms_user_id
        if not todo:
            held = sorted({str(e.get("enrollment_state")) for e in found}) or ["no enrollment"]
            return Result.done(user_id, f"nothing to {task}: {', '.join(held)}")
        ids = ", ".join(str(e["id"]) for e in todo)
        return Result.done(user_id, f"{task}: enrollment {ids}")
