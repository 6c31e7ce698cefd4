"""The admin page's actions, on the code paths of the CLI commands they stand for, with the
admin's token name as the actor: retry and skip a dead letter (``bridge errors retry/skip``:
``outbox.requeue`` / ``outbox.skip``, journalled in the same transaction), approve a run
(``bridge approve``: ``Planner.approve``) and reject one (``bridge reject``: ``brake.reject``).

Each returns a sentence for the page; one that cannot be done (the row is no longer a dead
letter, the run was decided meanwhile) raises ``ActionRefused`` with why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from bridge.provision.brake import RunError
from bridge.provision.brake import reject
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.store import journal
from bridge.store import outbox
from bridge.store.engine import Database

RETRY_OP = "errors.retry"
SKIP_OP = "errors.skip"


class ActionRefused(Exception):
    """The action does not apply (any more) to what it names."""


class Actions:
    """Decisions an admin takes from the page."""

    def __init__(self, db: Database, planner: Planner, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.planner = planner
        self.clock = clock

    def _settle_dead(self, row_id: int, actor: str, op: str) -> str:
        now = self.clock()
        with self.db.write() as conn:
            row = outbox.get(conn, row_id)
            if row is None:
                raise ActionRefused(f"no outbox row {row_id}")
            if row["status"] != outbox.DEAD:
                raise ActionRefused(f"outbox row {row_id} is {row['status']}, not a dead letter")
            if op == RETRY_OP:
                changed = outbox.requeue(conn, [row_id], now)
            else:
                changed = outbox.skip(conn, [row_id])
            if not changed:
                raise ActionRefused(f"outbox row {row_id} was settled meanwhile")
            _journal(conn, row, actor=actor, op=op, now=now)
        if op == RETRY_OP:
            return f"dead letter #{row_id} queued again"
        return f"dead letter #{row_id} skipped: the person's later intents may go"

    def retry(self, row_id: int, *, actor: str) -> str:
        """``bridge errors retry ID``: back to pending with a fresh attempt count."""
        return self._settle_dead(row_id, actor, RETRY_OP)

    def skip(self, row_id: int, *, actor: str) -> str:
        """``bridge errors skip ID``: given up on."""
        return self._settle_dead(row_id, actor, SKIP_OP)

    def retry_all(self, *, category: str | None, target: str | None, actor: str) -> str:
        """``bridge errors retry --all [--category C]`` (and a target): every dead letter
        listed, queued again in one transaction, each journalled."""
        now = self.clock()
        with self.db.write() as conn:
            rows = outbox.dead_letters(conn, category=category, target=target, limit=100_000)
            if not rows:
                raise ActionRefused("no dead letters to retry")
            count = outbox.requeue(conn, [int(row["id"]) for row in rows], now)
            for row in rows:
                _journal(conn, row, actor=actor, op=RETRY_OP, now=now)
        return f"{count} dead letter(s) queued again"

    def approve(self, run_id: str, *, actor: str) -> str:
        """``bridge approve RUN``: the run's intents released to the relay; the decision
        journalled by ``Planner.approve`` (as from the CLI)."""
        try:
            released = self.planner.approve(run_id, actor=actor)
        except PlanError as exc:
            raise ActionRefused(str(exc)) from exc
        return f"run {run_id} approved: {released} intent(s) released"

    def reject(self, run_id: str, *, actor: str, reason: str | None) -> str:
        """``bridge reject RUN``: the run's intents cancelled, never sent; journalled."""
        try:
            cancelled = reject(self.db, run_id, actor=actor, reason=reason, now=self.clock())
        except RunError as exc:
            raise ActionRefused(str(exc)) from exc
        return f"run {run_id} rejected: {cancelled} intent(s) cancelled"


def _journal(conn: Any, row: dict[str, Any], *, actor: str, op: str, now: datetime) -> None:
    """The decision on one dead letter, in its person's journal."""
    journal.append(
        conn,
        journal.Entry(
            at=now,
            actor=actor,
            op=op,
            resource_type="User",
            resource_id=str(row["ordering_key"]),
            detail={
                "outbox": row["id"],
                "target": row["target"],
                "intent": row["intent"],
                "category": row.get("category"),
                "last_error": row.get("last_error"),
            },
        ),
    )
