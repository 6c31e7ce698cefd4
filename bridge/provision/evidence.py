"""Where intents stand for some people: the outbox rows, the targets' health and what each
LMS confirmed — the evidence ``plan`` and ``explain`` both read, so they cannot disagree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.rules.plan_model import Confirmed
from bridge.rules.plan_model import Ledger
from bridge.rules.plan_model import QueuedRow
from bridge.store import health
from bridge.store import links
from bridge.store import outbox

Evidence = tuple[Ledger, dict[str, dict[str, Confirmed]]]
"""Where intents stand for some people: the outbox and targets' health, and per target what
its LMS confirmed for each of them."""


def queued_row(row: dict[str, Any]) -> QueuedRow:
    """An outbox row (``outbox.unsettled``) as plans read it."""
    intent = row["intent"]
    at = row.get("next_attempt_at")
    return QueuedRow(
        id=int(row["id"]),
        target=str(row["target"]),
        person=str(row["ordering_key"]),
        kind=str(intent.get("kind")),
        ref=intent.get("ref"),
        status=str(row["status"]),
        attempts=int(row.get("attempts") or 0),
        next_attempt_at=at.isoformat() if isinstance(at, datetime) else at,
        last_error=row.get("last_error"),
        category=row.get("category"),
        run_id=row.get("run_id"),
    )


def waiting_targets(conn: Any) -> dict[str, str]:
    """Targets whose health is not ok → why their intents wait."""
    return {name: found.waiting() for name, found in health.all_of(conn).items() if not found.ok}


def evidence(
    conn: Any, targets: set[str], people: list[str], waiting: dict[str, str] | None = None
) -> Evidence:
    """The outbox rows, target health and links a plan or an explanation looks people up in."""
    rows = outbox.unsettled(conn, targets=targets, people=people)
    ledger = Ledger(
        (queued_row(row) for row in rows),
        waiting_targets(conn) if waiting is None else waiting,
    )
    confirmed = {
        target: {
            person: Confirmed(lms_user_id, document, updated.isoformat())
            for person, (lms_user_id, document, updated) in links.confirmed_of(
                conn, target, people
            ).items()
        }
        for target in targets
    }
    return ledger, confirmed
