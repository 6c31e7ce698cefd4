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

from bridge.provision import dead_letters
from bridge.provision.brake import RunError
from bridge.provision.brake import reject
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.store import outbox
from bridge.store.engine import Database

RETRY_OP = dead_letters.RETRY
SKIP_OP = dead_letters.SKIP


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
            if not dead_letters.decide(conn, [row], op=op, actor=actor, now=now):
                raise ActionRefused(f"outbox row {row_id} was settled meanwhile")
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
            count = dead_letters.decide(conn, rows, op=RETRY_OP, actor=actor, now=now)
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
