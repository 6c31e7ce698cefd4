"""``/readyz``: whether this process should be sent traffic, with every check and its reason.

``/healthz`` stays the liveness probe (the process answers). ``/readyz`` answers 200 when every
check passes and 503 with the failing checks' reasons otherwise:

- ``database``: a query answers within ``timeout`` seconds;
- ``migrations``: the database is at the newest migration this code ships;
- ``rules``: the rule set in force and its version. A refused reload (rule files that failed
  their checks, or were quarantined by the reload guard) is reported but leaves the process
  ready: the last good set stays in force and provisioning goes on with it;
- ``targets``: each target's preflight verdict, as the relay last recorded it (``/readyz``
  never calls the LMS itself: every replica's probe would). A target that *fails* preflight
  (misconfigured: a token, a capability or a course missing) makes the bridge not ready — an
  operator must act, and a rollout should stop there. An *unreachable* target is reported but
  ready: an LMS outage is what the outbox is for, and intake must go on. A target not checked
  yet is reported as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response

from bridge.rules.book import RuleBook
from bridge.rules.model import RuleSet
from bridge.scim.metrics import refused
from bridge.store import gauges
from bridge.store import health
from bridge.store.engine import Database
from bridge.telemetry import verdict


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passes, and what it found."""

    name: str
    ok: bool
    detail: dict[str, Any]


class Readiness:
    """The checks of ``/readyz`` over one database and rule set."""

    def __init__(
        self,
        db: Database,
        rules: Callable[[], RuleSet | None],
        book: RuleBook | None = None,
        *,
        timeout: float = 2.0,
    ) -> None:
        self.db = db
        self.rules = rules
        self.book = book
        self.timeout = timeout
        self._head: str | None = None

    def head(self) -> str | None:
        if self._head is None:
            self._head = gauges.head_revision()
        return self._head

    def _read(self) -> tuple[str | None, dict[str, health.Health]]:
        with self.db.read() as conn:
            gauges.ping(conn)
            return gauges.revision(conn), health.all_of(conn)

    async def checks(self) -> list[Check]:
        try:
            at, found = await asyncio.wait_for(asyncio.to_thread(self._read), self.timeout)
        except TimeoutError:
            why = f"the database did not answer within {self.timeout:g} s"
            return [Check("database", False, {"reason": why}), self.rules_check()]
        except Exception as exc:
            why = f"the database did not answer: {type(exc).__name__}: {exc}"
            return [Check("database", False, {"reason": why}), self.rules_check()]
        head = self.head()
        migrations = {"current": at, "head": head}
        if at != head:
            migrations["reason"] = (
                f"the database is at migration {at or 'none'}, this code needs {head}: "
                "run `bridge serve` (it migrates on start) or upgrade the database"
            )
        return [
            Check("database", True, {}),
            Check("migrations", at == head, migrations),
            self.rules_check(),
            *self.target_checks(found),
        ]

    def rules_check(self) -> Check:
        ruleset = self.rules()
        detail: dict[str, Any] = {"version": ruleset.version if ruleset is not None else None}
        if ruleset is None:
            detail["note"] = "no rule set loaded: SCIM only, nothing is provisioned"
        if refused(self.book):
            assert self.book is not None
            detail["reload_refused"] = self.book.quarantine_reason or "; ".join(
                str(e) for e in self.book.last_refusal
            )
            detail["note"] = "the last good rule set stays in force"
        return Check("rules", True, detail)

    def target_checks(self, found: dict[str, health.Health]) -> list[Check]:
        ruleset = self.rules()
        names = sorted({f.target for f in ruleset.files}) if ruleset is not None else []
        checks = []
        for name in names:
            recorded = found.get(name)
            said = verdict(recorded.state if recorded is not None else None)
            detail: dict[str, Any] = {"verdict": said}
            if recorded is not None and recorded.reason:
                detail["reason"] = recorded.reason
            checks.append(Check(f"target:{name}", said != "failed", detail))
        return checks

    async def endpoint(self, request: Request) -> Response:
        checks = await self.checks()
        ready = all(c.ok for c in checks)
        body: dict[str, Any] = {
            "status": "ready" if ready else "not ready",
            "checks": {c.name: {"ok": c.ok, **c.detail} for c in checks},
        }
        if not ready:
            body["reasons"] = [
                f"{c.name}: {c.detail.get('reason', 'failed')}" for c in checks if not c.ok
            ]
        return JSONResponse(body, status_code=200 if ready else 503)
