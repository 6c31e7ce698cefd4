"""What an outbound SCIM service provider holds for a reconcile: its Users (RFC 7644).

The ``scim`` target provisions accounts only (no LMS in LMS.md enrols through SCIM), so a
reconcile reads accounts only: each linked user by its id (``GET /Users/{id}``, RFC 7644
§3.4.1, which every service provider answers — a filter over many ids or a full listing is
not supported everywhere), a few at a time, page of links by page of links. A 404 is an account
deleted by hand; ``active: false`` one suspended by hand; the mapped attributes (the target's
vocabulary and ``options.attributes``) are compared with what the bridge wrote. An attribute
the LMS does not answer with is not compared: many LMSs keep only part of a SCIM User.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.targets.base import Status
from bridge.targets.moodle_reconcile import Participants
from bridge.targets.scim import SCIM_PATHS
from bridge.targets.scim import classify
from bridge.targets.scim import scim_error

CONCURRENCY = 8
RETRIES = 5
_MISSING = object()


class ScimReadError(Exception):
    """A read the SCIM service provider refused: the reconcile stops, nothing compared."""


def _at(doc: Mapping[str, Any], path: str) -> Any:
    """The value at ``name.givenName`` or ``urn:…:User:department`` (``_MISSING``: absent)."""
    urn, _, attribute = path.rpartition(":")
    node: Any = doc.get(urn, _MISSING) if urn else doc
    for part in attribute.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _email(doc: Mapping[str, Any]) -> Any:
    emails = doc.get("emails")
    if not isinstance(emails, list) or not emails:
        return _MISSING
    chosen = next((e for e in emails if isinstance(e, dict) and e.get("primary")), None)
    chosen = chosen or next((e for e in emails if isinstance(e, dict)), {})
    return chosen.get("value", "")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def field_drift(
    extra: Mapping[str, str],
) -> Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, str]], dict[str, str]]:
    """How a SCIM target's mapped attributes compare (``extra``: ``options.attributes``):
    account attribute → the value the LMS holds where it differs. ``userName`` and emails
    compare without case (RFC 7643 §4.1: caseExact false); ``externalId`` exactly."""
    paths = {**SCIM_PATHS, **extra}

    def compare(
        account: Mapping[str, Any], user: Mapping[str, Any], renames: Mapping[str, str]
    ) -> dict[str, str]:
        del renames
        drift: dict[str, str] = {}
        for name, value in account.items():
            path = paths.get(name)
            if path is None or path == "active" or value is None:
                continue
            held = _email(user) if path == "emails" else _at(user, path)
            if held is _MISSING:
                continue
            wanted, have = _text(value).strip(), _text(held).strip()
            if path in ("userName", "emails"):
                wanted, have = wanted.casefold(), have.casefold()
            if wanted != have:
                drift[name] = _text(held)
        return drift

    return compare


Sleep = Callable[[float], Awaitable[None]]


class ScimReader:
    """The reads of one ``scim`` target, through its HTTP client (base URL and credentials)."""

    lms = "SCIM"
    reads: frozenset[AssignmentKind] = frozenset()
    """Accounts only: the target enrols no one."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        concurrency: int = CONCURRENCY,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.client = client
        self.concurrency = max(concurrency, 1)
        self.sleep = sleep
        self.calls = 0

    async def _user(self, user_id: str) -> dict[str, Any] | None:
        for attempt in range(RETRIES + 1):
            self.calls += 1
            try:
                response = await self.client.get(f"/Users/{quote(user_id, safe='')}")
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise ScimReadError(f"the LMS is unreachable: {type(exc).__name__}") from exc
                await self.sleep(1.0)
                continue
            if response.status_code == 404:
                return None
            result = classify(response.status_code, response.headers, response.content)
            if result.status is Status.done:
                try:
                    doc = response.json()
                except ValueError:
                    doc = None
                if not isinstance(doc, dict):
                    raise ScimReadError(f"GET /Users/{user_id}: not a SCIM User")
                return {**doc, "suspended": doc.get("active") is False}
            if result.status is not Status.retry or attempt == RETRIES:
                detail, _ = scim_error(response.content)
                raise ScimReadError(
                    f"GET /Users/{user_id}: HTTP {response.status_code}: {detail or result.message}"
                )
            await self.sleep(result.retry_after if result.retry_after is not None else 1.0)
        raise AssertionError("unreachable")

    async def users(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The accounts among ``ids`` (the LMS's user ids), by id; one deleted is absent."""
        wanted = list(dict.fromkeys(str(i) for i in ids if i))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), self.concurrency):
            batch = wanted[start : start + self.concurrency]
            answers = await asyncio.gather(*(self._user(user_id) for user_id in batch))
            for user_id, user in zip(batch, answers, strict=True):
                if user is not None:
                    found[user_id] = user
        return found

    async def holders(self, assignment: Assignment) -> Participants | None:
        """Never asked (``reads`` is empty): a SCIM LMS holds no courses or cohorts here."""
        return None
