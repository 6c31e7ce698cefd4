"""What a Canvas account holds for a reconcile: its users and course enrollments (LMS.md).

Reads only, paged with Canvas's ``Link`` header (``rel="next"`` URLs followed as given: the
page tokens are opaque; ``per_page`` is at most 100). Users come from the account's users list
(``GET /api/v1/accounts/:id/users?include[]=email``), read once and kept as compact rows of the
fields a reconcile compares — one call per 100 users, where a ``sis_user_id:`` probe per person
would be one call each. A course's enrollments come from ``GET /api/v1/courses/:id/enrollments``
with ``state[]=active&state[]=invited&state[]=inactive`` (a concluded or deleted enrollment is
gone from the course), the course addressed by its SIS id as the target does. Throttling (403
"Rate Limit Exceeded", 429) and 5xx answers are waited out a few times; anything else stops the
reconcile with :class:`CanvasReadError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

import httpx

from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.targets.base import Status
from bridge.targets.canvas_api import Profile
from bridge.targets.canvas_api import classify
from bridge.targets.canvas_api import course_ref
from bridge.targets.canvas_api import json_body
from bridge.targets.canvas_api import next_link
from bridge.targets.moodle_reconcile import Participants

ENROLLMENT_STATES = ("active", "invited", "inactive")
"""What a course holds: active (and invited: asked in, not yet accepted) and inactive
(deactivated: progress kept, no access). Concluded and deleted enrollments are not held."""
RETRIES = 5
MAX_PAGES = 1_000_000
"""A guard only: a Link chain this long does not end."""


class CanvasReadError(Exception):
    """A read Canvas refused or answered wrongly: the reconcile stops, nothing compared."""


class _User(NamedTuple):
    """The fields of a Canvas user a reconcile compares (one compact row per user)."""

    name: str | None
    sortable_name: str | None
    email: str | None
    login_id: str | None
    sis_user_id: str | None
    suspended: bool

    def as_dict(self, user_id: str) -> dict[str, Any]:
        return {"id": int(user_id), **self._asdict()}


def _row(user: Mapping[str, Any]) -> _User:
    def optional(key: str) -> str | None:
        value = user.get(key)
        return None if value is None else str(value)

    return _User(
        optional("name"),
        optional("sortable_name"),
        optional("email"),
        optional("login_id"),
        optional("sis_user_id"),
        str(user.get("workflow_state") or "active") == "suspended",
    )


def text(value: Any) -> str:
    return "" if value is None else str(value)


def field_drift(
    account: Mapping[str, Any], user: Mapping[str, Any], renames: Mapping[str, str]
) -> dict[str, str]:
    """Mapped attributes whose value in Canvas differs from the one it confirmed: name → the
    value held. Canvas keeps a name (and a sortable "Last, First"), and an email; the SIS id
    and login cannot be changed through the users API and are not compared."""
    del renames  # Canvas has no custom profile fields
    drift: dict[str, str] = {}
    profile = Profile.of(account)
    held_name = text(user.get("name"))
    held_last, _, held_first = text(user.get("sortable_name")).partition(", ")
    held = {"firstname": held_first, "lastname": held_last, "name": held_name}
    renamed = bool(profile.name) and profile.name != held_name
    for key in ("name", "firstname", "lastname"):
        value = account.get(key)
        if value is None or (key != "name" and "name" in account):
            continue
        if renamed or text(value).strip() != held[key]:
            drift[key] = held_name if renamed else held[key]
    email = account.get("email")
    if email is not None and text(email).strip().lower() != text(user.get("email")).lower():
        drift["email"] = text(user.get("email"))
    return drift


Sleep = Callable[[float], Awaitable[None]]


class CanvasReader:
    """The reads of one Canvas target, through its HTTP client (base URL and token)."""

    lms = "Canvas"
    reads = frozenset({AssignmentKind.enrolment})
    """Canvas has no cohorts: enrollments only."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        account_id: str,
        *,
        per_page: int = 100,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.account_id = account_id
        self.per_page = min(max(per_page, 1), 100)
        self.sleep = sleep
        self.calls = 0
        self._users: dict[int, _User] | None = None

    async def _get(self, url: str, params: tuple[tuple[str, str], ...] = ()) -> httpx.Response:
        """One GET, throttling and 5xx waited out up to ``RETRIES`` times."""
        for attempt in range(RETRIES + 1):
            self.calls += 1
            try:
                response = await self.client.get(url, params=params or None)
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise CanvasReadError(f"Canvas unreachable: {type(exc).__name__}") from exc
                await self.sleep(1.0)
                continue
            if response.status_code == 404:
                return response
            failed = classify(response)
            if failed is None:
                return response
            if failed.status is not Status.retry or attempt == RETRIES:
                raise CanvasReadError(f"GET {httpx.URL(url).path}: {failed.message}")
            await self.sleep(failed.retry_after if failed.retry_after is not None else 1.0)
        raise AssertionError("unreachable")

    async def _pages(
        self, path: str, params: tuple[tuple[str, str], ...]
    ) -> AsyncIterator[list[dict[str, Any]] | None]:
        """Every page of a list (None once: the first page was a 404), ``Link`` followed
        as given, on the same host only."""
        response = await self._get(path, params)
        if response.status_code == 404:
            yield None
            return
        base = self.client.base_url
        previous: set[str] = set()
        while True:
            body = json_body(response)
            if not isinstance(body, list):
                raise CanvasReadError(f"GET {path}: Canvas answered without a JSON list")
            yield [item for item in body if isinstance(item, dict)]
            url = next_link(response.headers.get("link"))
            if url is None:
                return
            target = httpx.URL(url)
            if target.is_absolute_url and (target.scheme, target.host, target.port) != (
                base.scheme,
                base.host,
                base.port,
            ):
                raise CanvasReadError(f"Link to another host refused: {target.host}")
            if url in previous or len(previous) >= MAX_PAGES:
                raise CanvasReadError("Canvas's Link pagination does not end")
            previous.add(url)
            response = await self._get(url)
            if response.status_code == 404:
                raise CanvasReadError(f"GET {path}: a page of the list answered 404")

    async def _read_users(self) -> dict[int, _User]:
        users: dict[int, _User] = {}
        path = f"/api/v1/accounts/{self.account_id}/users"
        params = (("include[]", "email"), ("per_page", str(self.per_page)))
        async for page in self._pages(path, params):
            if page is None:
                raise CanvasReadError(f"Canvas has no account {self.account_id!r}")
            for user in page:
                if "id" in user:
                    users[int(user["id"])] = _row(user)
        return users

    async def users(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The live users among ``ids`` (Canvas ids), by id; a deleted one is absent. The
        account's list is read on the first call, page by page."""
        if self._users is None:
            self._users = await self._read_users()
        found: dict[str, dict[str, Any]] = {}
        for user_id in ids:
            row = self._users.get(int(user_id)) if str(user_id).isdigit() else None
            if row is not None:
                found[str(user_id)] = row.as_dict(str(user_id))
        return found

    async def holders(self, assignment: Assignment) -> Participants | None:
        """A course's enrollments by user: active (or invited) and inactive only; None when
        Canvas has no such course."""
        path = f"/api/v1/courses/{course_ref(assignment.ref)}/enrollments"
        params = (
            *(("state[]", state) for state in ENROLLMENT_STATES),
            ("per_page", str(self.per_page)),
        )
        active: set[int] = set()
        inactive: set[int] = set()
        courseid = 0
        async for page in self._pages(path, params):
            if page is None:
                return None
            for enrollment in page:
                user_id = int(enrollment["user_id"])
                courseid = int(enrollment.get("course_id") or courseid)
                state = enrollment.get("enrollment_state")
                (active if state in ("active", "invited") else inactive).add(user_id)
        return Participants(courseid, frozenset(active), frozenset(inactive - active))
