"""Target health: whether the relay may send to a target now, and why not (DESIGN §4).

One row per target: ``ok``; ``unreachable`` (the circuit breaker is open: connection errors,
5xx or throttling — the relay probes it with backoff); ``misconfigured`` (the last preflight
failed — its findings say what to fix, and intents wait until it passes). ``plan``,
``explain`` and ``errors`` read it to say why intents wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import update

from bridge.store.raw import read_object
from bridge.store.raw import read_time
from bridge.store.tables import TargetHealthRow

HEALTH = TargetHealthRow.__table__  # type: ignore[attr-defined]

OK = "ok"
UNREACHABLE = "unreachable"
MISCONFIGURED = "misconfigured"


@dataclass(frozen=True)
class Health:
    target: str
    state: str
    reason: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    since: datetime | None = None
    checked: datetime | None = None
    next_probe: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.state == OK

    def waiting(self) -> str:
        """Why this target's intents wait (empty when they do not)."""
        if self.state == OK:
            return ""
        return self.reason or f"target {self.target} is {self.state}"


def _health(row: Any) -> Health:
    findings = read_object(row.findings) if row.findings is not None else {}
    return Health(
        target=row.target,
        state=row.state,
        reason=row.reason or "",
        findings=list(findings.get("findings", [])) if isinstance(findings, dict) else [],
        since=read_time(row.since),
        checked=read_time(row.checked),
        next_probe=read_time(row.next_probe) if row.next_probe is not None else None,
    )


def get(conn: Connection, target: str) -> Health | None:
    row = conn.execute(select(HEALTH).where(HEALTH.c.target == target)).first()
    return _health(row) if row is not None else None


def all_of(conn: Connection) -> dict[str, Health]:
    return {row.target: _health(row) for row in conn.execute(select(HEALTH))}


def save(
    conn: Connection,
    target: str,
    state: str,
    *,
    now: datetime,
    reason: str = "",
    findings: list[dict[str, Any]] | None = None,
    next_probe: datetime | None = None,
) -> Health:
    """Record a target's state; ``since`` moves only when the state changes."""
    found = get(conn, target)
    since = found.since if found is not None and found.state == state and found.since else now
    values = {
        "state": state,
        "reason": reason,
        "findings": {"findings": findings or []},
        "since": since,
        "checked": now,
        "next_probe": next_probe,
    }
    if found is None:
        conn.execute(insert(HEALTH).values(target=target, **values))
    else:
        conn.execute(update(HEALTH).where(HEALTH.c.target == target).values(values))
    return Health(target, state, reason, list(findings or []), since, now, next_probe)
