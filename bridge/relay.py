"""The relay: claim due outbox rows → deliver to the target → settle (DESIGN §2, §7).

At-least-once with per-person order: a person's rows go one at a time, oldest first; a row
claimed by a relay that died is reclaimed when its lease expires; targets make redelivery
harmless (look up before create, repeat-safe enrolment). Every outcome is journalled.
The retry policy is a pure function (``RetryPolicy.decide``), tested without a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from bridge.store import journal
from bridge.store import links
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.base import Target

log = logging.getLogger("bridge.relay")


@dataclass(frozen=True)
class Decision:
    """What becomes of a row after one attempt."""

    status: str  # outbox.DONE | outbox.RETRY | outbox.DEAD
    delay: float = 0.0  # seconds until the next attempt (RETRY)
    category: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped; ``Retry-After`` wins when the LMS gives one.

    ``decide(result, attempts, jitter)`` is pure: ``jitter`` is a number in [0, 1) drawn by
    the caller, so the policy is tested with plain values.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 900.0
    jitter: float = 0.25  # ± this share of the delay
    max_attempts: int = 10

    def delay(self, attempts: int, retry_after: float | None, jitter: float) -> float:
        backoff = min(self.cap, self.base * self.factor ** max(attempts - 1, 0))
        backoff *= 1 + self.jitter * (2 * jitter - 1)
        if retry_after is not None:
            return max(retry_after, 0.0)
        return max(backoff, 0.0)

    def decide(self, result: Result, attempts: int, jitter: float) -> Decision:
        if result.status == Status.done:
            return Decision(outbox.DONE)
        if result.status == Status.dead:
            category = (result.category or Category.configuration).value
            return Decision(outbox.DEAD, category=category, error=result.message)
        if attempts >= self.max_attempts:
            return Decision(
                outbox.DEAD,
                category=Category.transient.value,
                error=f"gave up after {attempts} attempts: {result.message}",
            )
        return Decision(
            outbox.RETRY, self.delay(attempts, result.retry_after, jitter), error=result.message
        )


def confirm(
    state: Mapping[str, Any], intent: Mapping[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """The LMS state a delivered intent confirms (pure): the ``links.confirmed`` document.

    Assignments are kept in the shape of a projection (``status``, ``rule``, ``kind``,
    ``ref``) plus when the LMS confirmed them (``at``) and, for an enrolment whose rule has
    ``due:``, the due date the bridge keeps (from the confirmed enrolment; never an LMS end).
    """
    confirmed: dict[str, Any] = {
        "account": dict(state.get("account", {})),
        "active": state.get("active", True),
        "assignments": links.assignments_of(state),
    }
    kind, ref, data = intent["kind"], intent.get("ref"), intent.get("data") or {}
    at = now.isoformat() if now is not None else None
    key = None
    if ref is not None:
        prefix = (
            "cohort"
            if kind in ("add_cohort_member", "remove_cohort_member")
            else data.get("kind", "course")
        )
        key = f"{'course' if prefix in ('enrolment', 'course') else prefix}:{ref}"
    if kind == "upsert_account":
        confirmed["account"].update(data.get("attributes", {}))
        confirmed["account"] = {k: v for k, v in confirmed["account"].items() if v is not None}
        confirmed["account_at"] = at
    elif kind in ("suspend_account", "reactivate_account"):
        confirmed["active"] = kind == "reactivate_account"
    elif kind in ("enrol", "add_cohort_member") and key:
        before = confirmed["assignments"].get(key) or {}
        entry: dict[str, Any] = {
            "status": "active",
            "rule": intent.get("rule"),
            "kind": "cohort" if kind == "add_cohort_member" else data.get("kind", "enrolment"),
            "ref": ref,
            "at": at,
        }
        due_days = data.get("due_days")
        if before.get("status") == "active" and before.get("due"):
            entry["due"] = before["due"]  # re-asserted: the first confirmed enrolment counts
        elif due_days is not None and now is not None:
            entry["due"] = (now + timedelta(days=int(due_days))).date().isoformat()
        confirmed["assignments"][key] = entry
    elif kind == "suspend_enrolment" and key:
        before = confirmed["assignments"].get(key) or {
            "rule": intent.get("rule"),
            "kind": data.get("kind", "enrolment"),
            "ref": ref,
        }
        confirmed["assignments"][key] = {**before, "status": "suspended", "at": at}
    elif kind in ("unenrol", "remove_cohort_member") and key:
        confirmed["assignments"].pop(key, None)
    return confirmed


class Relay:
    """One relay process (or task): many may share a PostgreSQL outbox."""

    def __init__(
        self,
        db: Database,
        targets: Mapping[str, Target],
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        worker: str | None = None,
        lease_seconds: float = 60.0,
        batch: int = 64,
        per_target: int = 8,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.targets = targets
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.worker = worker or f"relay-{uuid.uuid4().hex[:8]}"
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        self.limits = {name: asyncio.Semaphore(per_target) for name in targets}
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    def _claim(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.db.write() as conn:
            return outbox.claim(
                conn,
                now=now,
                lease_until=now + self.lease,
                worker=self.worker,
                limit=self.batch,
                skip_locked=not self.db.is_sqlite,
                targets=list(self.targets),
            )

    def _delivery(self, row: dict[str, Any]) -> Delivery:
        intent = row["intent"]
        with self.db.read() as conn:
            link = links.get(conn, row["target"], intent["person"])
            account = links.account(conn, row["target"], intent["person"])
        return Delivery(intent=intent, lms_user_id=link[0] if link else None, account=account)

    async def _deliver(self, row: dict[str, Any]) -> tuple[dict[str, Any], Result]:
        target = self.targets.get(row["target"])
        if target is None:
            return row, Result.dead(
                Category.configuration, f"no target named {row['target']!r} is configured"
            )
        delivery = await asyncio.to_thread(self._delivery, row)
        async with self.limits[row["target"]]:
            try:
                result = await target.deliver(delivery)
            except Exception as exc:  # a target bug must not stop the relay; retried, then dead
                log.exception("target %s failed on outbox row %s", row["target"], row["id"])
                result = Result.retry(f"{type(exc).__name__}: {exc}")
        return row, result

    def _settle(self, outcomes: list[tuple[dict[str, Any], Result]]) -> None:
        now = self.clock()
        with self.db.write() as conn:
            for row, result in outcomes:
                decision = self.policy.decide(result, row["attempts"], self.rng.random())
                next_at = (
                    now + timedelta(seconds=decision.delay)
                    if decision.status == outbox.RETRY
                    else None
                )
                kept = outbox.settle(
                    conn,
                    row["id"],
                    worker=self.worker,
                    status=decision.status,
                    now=now,
                    next_attempt_at=next_at,
                    error=decision.error,
                    category=decision.category,
                )
                if not kept:
                    log.warning(
                        "outbox row %s: lease lost to another relay; its outcome is dropped",
                        row["id"],
                    )
                    continue
                intent = row["intent"]
                if decision.status == outbox.DONE:
                    found = links.get(conn, row["target"], intent["person"])
                    links.save(
                        conn,
                        row["target"],
                        intent["person"],
                        lms_user_id=result.lms_user_id or (found[0] if found else None),
                        confirmed=confirm(found[1] if found else {}, intent, now),
                        now=now,
                        existed=found is not None,
                    )
                journal.append(
                    conn,
                    journal.Entry(
                        at=now,
                        actor=self.worker,
                        request_id=str(row["id"]),
                        op=f"deliver.{decision.status}",
                        resource_type="User",
                        resource_id=intent["person"],
                        detail={
                            "outbox": row["id"],
                            "caused_by": row.get("journal_seq"),
                            "run": row.get("run_id"),
                            "target": row["target"],
                            "intent": intent,
                            "attempt": row["attempts"],
                            "lms": {
                                "status": result.status.value,
                                "message": result.message,
                                "lms_user_id": result.lms_user_id,
                                **result.detail,
                            },
                            "retry_in": round(decision.delay, 3)
                            if decision.status == outbox.RETRY
                            else None,
                            "category": decision.category,
                        },
                    ),
                )

    async def run_once(self) -> int:
        """Claim one batch, deliver it, settle it; the number of rows settled."""
        rows = await asyncio.to_thread(self._claim)
        if not rows:
            return 0
        outcomes = await asyncio.gather(*(self._deliver(row) for row in rows))
        await asyncio.to_thread(self._settle, list(outcomes))
        return len(rows)

    async def run(self, stop: asyncio.Event, *, idle: float = 0.2, pipelines: int = 2) -> None:
        """Relay until ``stop`` is set; database trouble is logged and retried, never fatal.

        ``pipelines`` cycles overlap, so the next batch is claimed while the slowest deliveries
        of the last one finish; per-person order holds (a running row blocks its successors).
        """
        log.info(
            "relay %s started for targets %s",
            self.worker,
            ", ".join(sorted(self.targets)) or "(none)",
        )

        async def cycle() -> None:
            while not stop.is_set():
                try:
                    settled = await self.run_once()
                except Exception:
                    log.exception("relay cycle failed; retrying")
                    settled = 0
                if settled == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=idle)

        await asyncio.gather(*(cycle() for _ in range(max(pipelines, 1))))
        for target in self.targets.values():
            await target.aclose()
