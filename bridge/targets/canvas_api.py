"""Canvas's REST API as pure data (LMS.md, Canvas): users addressed by SIS id (``sis_user_id:``
/ ``hex:``), the account ``Profile``, request builders (``Call``), ``Link`` parsing, Canvas's
error bodies and ``classify``. No I/O: ``bridge.targets.canvas`` sends the calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bridge.targets.base import Category
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


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON."""
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
    said = describe(json_body(response)) or response.text.strip()[:200] or response.reason_phrase
    if status == 429 or (status == 403 and "rate limit exceeded" in response.text.lower()):
        after = retry_after(response.headers, THROTTLE_DELAY)
        return Result.retry(f"Canvas throttled the call ({status}): {said}", after=after)
    if status >= 500 or status == 408:
        return Result.retry(
            f"Canvas answered {status}: {said}", after=retry_after(response.headers, None)
        )
    if status == 401:
        return Result.dead(Category.configuration, f"Canvas refused the token (401): {said}")
    if status in (400, 422):
        return Result.dead(bad_request, f"Canvas rejected the request ({status}): {said}")
    return Result.dead(Category.configuration, f"Canvas answered {status}: {said}")
