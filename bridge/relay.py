"""The relay: claim due outbox rows → deliver to the target → settle (DESIGN §2, §7).

At-least-once with per-person order: a person's rows go one at a time, oldest first; a row
claimed by a relay that died is reclaimed when its lease expires; targets make redelivery
harmless (look up before create, repeat-safe enrolment). Every outcome is journalled.
A target with ``deliver_many`` gets the claimed rows in batches (one row per person, so a
batch never holds two of a person's intents); the others get one row per call.
The retry policy (``bridge.retry``) and what a delivery confirms (``bridge.confirmed``) are
pure functions, tested without a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import cast

from bridge.confirmed import confirm
from bridge.retry import Decision
from bridge.retry import RetryPolicy
from bridge.store import health
from bridge.store import journal
from bridge.store import links
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.store.raw import read_time
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.base import Target
from bridge.targets.batching import BATCHED_CLAIM
from bridge.targets.batching import CLAIM
from bridge.targets.batching import BatchTarget
from bridge.targets.batching import Row
from bridge.targets.batching import batch_size
from bridge.targets.batching import by_target
from bridge.targets.batching import chunks
from bridge.targets.circuit import Breaker
from bridge.targets.preflight import Verdict
from bridge.telemetry import Telemetry

__all__ = ["Decision", "Preflight", "Relay", "RetryPolicy", "confirm"]

log = logging.getLogger("bridge.relay")

Preflight = Callable[[str], Awaitable[Verdict]]
"""Re-check one target's setup (``bridge.provision.preflight``), given by the composition root."""


Outcome = tuple[Row, Result]


def _resumed(name: str) -> None:
    log.info(
        "target %s passes preflight: its intents go again",
        name,
        extra={"target": name, "verdict": "passed"},
    )


class Relay:
    """One relay process (or task): many may share a PostgreSQL outbox.

    Each cycle claims up to ``batch`` due rows (default: ``BATCHED_CLAIM`` when a target
    takes batches, else ``CLAIM``) and sends them at once, whatever is due: a batch is never
    held back to fill up. ``batch_sizes``: rows per ``deliver_many`` call by target (the
    target's ``options.batch_size``; 1: one intent per call).

    Before each claim the relay asks which targets it may send to: a target whose circuit
    breaker is open (``bridge.targets.circuit``) is probed with backoff instead; a target
    whose preflight failed (``bridge.store.health``: misconfigured) waits, re-checked every
    ``recheck_seconds`` through ``preflight``. Rows that met an outage or a failing preflight
    go back to wait without being charged an attempt.
    """

    def __init__(
        self,
        db: Database,
        targets: Mapping[str, Target],
        *,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        worker: str | None = None,
        lease_seconds: float = 60.0,
        batch: int | None = None,
        batch_sizes: Mapping[str, int] | None = None,
        per_target: int = 8,
        rng: random.Random | None = None,
        preflight: Preflight | None = None,
        recheck_seconds: float = 30.0,
        probe_base: float = 0.5,
        probe_cap: float = 5.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.db = db
        self.targets = targets
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.worker = worker or f"relay-{uuid.uuid4().hex[:8]}"
        self.lease = timedelta(seconds=lease_seconds)
        configured = batch_sizes or {}
        # target → rows per deliver_many call, for the targets that take batches
        self.batch_sizes = {
            name: size
            for name, target in targets.items()
            if (size := batch_size(target, configured.get(name))) is not None
        }
        self.batch = batch if batch is not None else (BATCHED_CLAIM if self.batch_sizes else CLAIM)
        self.limits = {name: asyncio.Semaphore(per_target) for name in targets}
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.preflight = preflight
        self.recheck_every = timedelta(seconds=recheck_seconds)
        self.breakers = {name: Breaker(base=probe_base, cap=probe_cap) for name in targets}
        self.waiting: dict[str, str] = {}  # misconfigured target → why its intents wait
        self._rechecked: dict[str, datetime] = {}
        self._health_read: datetime | None = None
        self._verified: set[str] = set()  # targets whose stored "unreachable" was checked
        self._recheck_all = preflight is not None  # every target is checked when the relay starts
        self.telemetry = telemetry
        """Where settled rows are counted (deliveries, retries, dead letters, write → confirmed
        latency); None: not counted."""

    def recheck(self) -> None:
        """Check every target again before the next claim (the rules were reloaded).

        Safe to call from another thread: it only raises a flag the relay's loop reads.
        """
        self._recheck_all = self.preflight is not None

    # -- which targets may be sent to ------------------------------------------------------------

    def _read_health(self) -> tuple[dict[str, str], set[str]]:
        """Misconfigured targets (→ why), and targets recorded unreachable."""
        with self.db.read() as conn:
            found = health.all_of(conn)
        mine = {name: h for name, h in found.items() if name in self.targets}
        waiting = {n: h.waiting() for n, h in mine.items() if h.state == health.MISCONFIGURED}
        return waiting, {n for n, h in mine.items() if h.state == health.UNREACHABLE}

    async def sendable(self) -> list[str]:
        """The targets the relay may send to now; probes and re-checks the others when due."""
        now = self.clock()
        if self._health_read is None or now - self._health_read >= timedelta(seconds=1):
            self._health_read = now
            waiting, unreachable = await asyncio.to_thread(self._read_health)
            for name in unreachable - self._verified:
                # Recorded unreachable by a relay that stopped meanwhile: ask the target once.
                self._verified.add(name)
                if not self.breakers[name].open and await self.probe(name):
                    await asyncio.to_thread(self._save_reachable, name)
            for name in set(self.waiting) - set(waiting):
                _resumed(name)
            self.waiting = waiting
        if self._recheck_all:
            self._recheck_all = False
            for name in self.targets:
                self._rechecked[name] = now
                await self._run_preflight(name)
        for name in list(self.waiting):
            last = self._rechecked.get(name)
            if self.preflight is not None and (last is None or now - last >= self.recheck_every):
                self._rechecked[name] = now
                await self._run_preflight(name)
        for name, breaker in self.breakers.items():
            if breaker.due(now):
                await self.probe(name)
        return [
            name
            for name in self.targets
            if name not in self.waiting and not self.breakers[name].open
        ]

    async def _run_preflight(self, name: str) -> bool:
        """Re-check a target's setup; True when it passes (its intents may go)."""
        assert self.preflight is not None
        try:
            verdict = await self.preflight(name)
        except Exception:
            log.exception("preflight of target %s failed to run", name)
            return False
        if verdict.unreachable:
            await self._trip(name, verdict.reason() or f"target {name} is unreachable", None)
            return False
        if verdict.passed:
            if self.waiting.pop(name, None) is not None:
                _resumed(name)
            return True
        reason = verdict.reason()
        if self.waiting.get(name) != reason:
            log.warning(
                "target %s: its intents wait: %s",
                name,
                reason,
                extra={"target": name, "verdict": "failed", "reason": reason},
            )
        self.waiting[name] = reason
        self._rechecked[name] = self.clock()
        return False

    async def probe(self, name: str) -> bool:
        """Ask a target whether it answers at all; True when it does (its breaker closes).

        A target without a ``probe`` cannot be asked: its failures count as before.
        """
        target, breaker = self.targets[name], self.breakers[name]
        ask = getattr(target, "probe", None)
        if ask is None:
            return True
        breaker.probing = True
        try:
            result = await ask()
        except Exception as exc:  # a probe must never stop the relay
            result = Result.retry(f"{type(exc).__name__}: {exc}")
        finally:
            breaker.probing = False
        now = self.clock()
        if result.status == Status.retry:
            if breaker.open:
                breaker.failed_probe(now, result.message, result.retry_after)
                log.debug(
                    "target %s still unreachable (probe %d): %s; next probe at %s",
                    name,
                    breaker.probes,
                    result.message,
                    breaker.next_probe,
                    extra={"target": name, "reason": result.message},
                )
                await asyncio.to_thread(self._save_unreachable, name, breaker)
            else:
                await self._trip(name, result.message, result.retry_after)
            return False
        if breaker.open:
            seconds = breaker.close(now)
            log.info(
                "target %s reachable again after %.1fs: resuming delivery",
                name,
                seconds,
                extra={"target": name, "outage_seconds": round(seconds, 3)},
            )
            await asyncio.to_thread(self._save_reachable, name)
        return True

    async def _trip(self, name: str, reason: str, retry_after: float | None) -> None:
        breaker = self.breakers[name]
        if breaker.trip(self.clock(), reason, retry_after):
            log.warning(
                "target %s unreachable: %s; sending nothing to it and probing until it "
                "answers (waiting rows are not charged an attempt)",
                name,
                reason,
                extra={"target": name, "reason": reason},
            )
        await asyncio.to_thread(self._save_unreachable, name, breaker)

    def _save_unreachable(self, name: str, breaker: Breaker) -> None:
        with self.db.write() as conn:
            found = health.get(conn, name)
            if found is not None and found.state == health.MISCONFIGURED:
                return
            health.save(
                conn,
                name,
                health.UNREACHABLE,
                now=self.clock(),
                reason=f"target {name} is unreachable: {breaker.reason}",
                next_probe=breaker.next_probe,
            )

    def _save_reachable(self, name: str) -> None:
        with self.db.write() as conn:
            found = health.get(conn, name)
            if found is not None and found.state == health.UNREACHABLE:
                health.save(conn, name, health.OK, now=self.clock())

    # -- claim, deliver, settle ------------------------------------------------------------------

    def _claim(self, targets: list[str] | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        with self.db.write() as conn:
            return outbox.claim(
                conn,
                now=now,
                lease_until=now + self.lease,
                worker=self.worker,
                limit=self.batch,
                skip_locked=not self.db.is_sqlite,
                targets=list(self.targets) if targets is None else targets,
            )

    def _deliveries(self, rows: Sequence[Row]) -> dict[int, Delivery]:
        """What the bridge knows of each row's person in its LMS, read in one transaction."""
        found: dict[int, Delivery] = {}
        with self.db.read() as conn:
            for row in rows:
                intent, target = row["intent"], row["target"]
                link = links.get(conn, target, intent["person"])
                account = links.account(conn, target, intent["person"])
                found[row["id"]] = Delivery(
                    intent=intent, lms_user_id=link[0] if link else None, account=account
                )
        return found

    async def _deliver(self, row: Row, delivery: Delivery) -> list[Outcome]:
        target = self.targets.get(row["target"])
        if target is None:
            missing = f"no target named {row['target']!r} is configured"
            return [(row, Result.dead(Category.configuration, missing))]
        async with self.limits[row["target"]]:
            try:
                result = await target.deliver(delivery)
            except Exception as exc:  # a target bug must not stop the relay; retried, then dead
                log.exception("target %s failed on outbox row %s", row["target"], row["id"])
                result = Result.retry(f"{type(exc).__name__}: {exc}")
        return [(row, result)]

    async def _deliver_many(
        self, name: str, rows: Sequence[Row], deliveries: Mapping[int, Delivery]
    ) -> list[Outcome]:
        """One ``deliver_many`` call for ``rows`` of one target, under its concurrency limit.

        A batch still running at 80 % of the lease is given up (its rows retried, none
        charged twice by another relay taking them over when the lease ends).
        """
        target = cast(BatchTarget, self.targets[name])  # batch_size checked it has one

        async def send() -> list[Result]:
            async with self.limits[name]:
                return list(await target.deliver_many([deliveries[row["id"]] for row in rows]))

        try:
            results = await asyncio.wait_for(send(), timeout=0.8 * self.lease.total_seconds())
            if len(results) != len(rows):
                raise ValueError(f"{len(results)} results for {len(rows)} deliveries")
        except Exception as exc:  # a target bug must not stop the relay; retried, then dead
            log.exception(
                "target %s failed on a batch of %d outbox rows (%s…)",
                name,
                len(rows),
                rows[0]["id"],
            )
            if isinstance(exc, TimeoutError):
                lease = self.lease.total_seconds()
                exc = TimeoutError(f"the batch outlasted 80 % of the {lease:g} s lease")
            failed = Result.retry(f"{type(exc).__name__}: {exc}")
            results = [failed] * len(rows)
        return list(zip(rows, results, strict=True))

    async def _excused(self, outcomes: list[Outcome]) -> dict[str, str]:
        """Targets whose failures in this batch are the target's, not the rows': name → why.

        A transient failure is an outage when a probe of the target fails too; a
        configuration failure is the target's while its preflight fails.
        """
        excused: dict[str, str] = {}
        transient = {row["target"] for row, r in outcomes if r.status == Status.retry}
        for name in sorted(transient & set(self.targets)):
            if self.breakers[name].open or not await self.probe(name):
                excused[name] = f"target {name} is unreachable: {self.breakers[name].reason}"
        configuration = {
            row["target"]
            for row, r in outcomes
            if r.status == Status.dead and r.category == Category.configuration
        }
        if self.preflight is not None:
            for name in sorted((configuration & set(self.targets)) - set(excused)):
                if not await self._run_preflight(name):
                    excused[name] = self.waiting.get(name) or (
                        f"target {name} is unreachable: {self.breakers[name].reason}"
                    )
        return excused

    def _settle(
        self,
        outcomes: list[Outcome],
        excused: Mapping[str, str] | None = None,
    ) -> None:
        now = self.clock()
        excused = excused or {}
        settled: list[tuple[Row, Result, Decision, bool]] = []
        with self.db.write() as conn:
            for row, result in outcomes:
                waits = row["target"] in excused and (
                    result.status == Status.retry
                    or (result.status == Status.dead and result.category == Category.configuration)
                )
                if waits:
                    decision = Decision(
                        outbox.RETRY, 0.0, error=f"{result.message} — {excused[row['target']]}"
                    )
                else:
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
                    charged=not waits,
                )
                if not kept:
                    log.warning(
                        "outbox row %s: lease lost to another relay; its outcome is dropped",
                        row["id"],
                    )
                    continue
                intent = row["intent"]
                settled.append((row, result, decision, waits))
                self._log(row, result, decision, waits)
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
                        op=f"deliver.{'wait' if waits else decision.status}",
                        resource_type="User",
                        resource_id=intent["person"],
                        detail={
                            "outbox": row["id"],
                            "caused_by": row.get("journal_seq"),
                            "run": row.get("run_id"),
                            "target": row["target"],
                            "intent": intent,
                            "attempt": row["attempts"] - (1 if waits else 0),
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
                            "waiting": excused.get(row["target"]) if waits else None,
                        },
                    ),
                )
        for row, result, decision, waits in settled:  # counted once committed
            self._count(row, result, decision, waits, now)

    def _count(
        self, row: Row, result: Result, decision: Decision, waits: bool, now: datetime
    ) -> None:
        telemetry = self.telemetry
        if telemetry is None:
            return
        target = row["target"]
        failed = decision.status != outbox.DONE
        category = decision.category or (result.category if failed else None) or "none"
        telemetry.deliveries.labels(target, "wait" if waits else decision.status, category).inc()
        if waits:
            return
        if decision.status == outbox.RETRY:
            telemetry.retries.labels(target, category).inc()
        elif decision.status == outbox.DEAD:
            telemetry.dead_letters.labels(target, category).inc()
        elif decision.status == outbox.DONE and row.get("created") is not None:
            # The row was written in the write's own transaction: its ``created`` is the write.
            waited = (now - read_time(row["created"])).total_seconds()
            telemetry.confirm_seconds.labels(target).observe(max(waited, 0.0))

    def _log(self, row: dict[str, Any], result: Result, decision: Decision, waits: bool) -> None:
        intent = row["intent"]
        what = f"{intent.get('kind')} {intent.get('ref') or ''}".strip()
        extra = {
            "outbox": row["id"],
            "journal_seq": row.get("journal_seq"),
            "person": intent.get("person"),
            "target": row["target"],
            "intent": what,
            "attempt": row["attempts"],
            "category": decision.category,
            "reason": decision.error or result.message,
        }
        if decision.status == outbox.DEAD:
            log.error(
                "dead letter %s: %s for person %s on %s [%s]: %s",
                row["id"],
                what,
                intent.get("person"),
                row["target"],
                decision.category,
                decision.error,
                extra=extra,
            )
        elif decision.status == outbox.RETRY and not waits:
            log.debug(
                "retry of %s (%s for person %s on %s) in %.1fs after attempt %d: %s",
                row["id"],
                what,
                intent.get("person"),
                row["target"],
                decision.delay,
                row["attempts"],
                decision.error,
                extra=extra,
            )

    async def run_once(self) -> int:
        """Claim what is due, deliver it, settle it; the number of rows settled.

        A batching target's rows go in ``deliver_many`` calls of at most its batch size, the
        others' one per call; all of them at once, bounded per target by ``per_target``.
        """
        targets = await self.sendable()
        if not targets:
            return 0
        rows = await asyncio.to_thread(self._claim, targets)
        if not rows:
            return 0
        deliveries = await asyncio.to_thread(self._deliveries, rows)
        calls: list[Awaitable[list[Outcome]]] = []
        for name, group in by_target(rows).items():
            size = self.batch_sizes.get(name)
            if size is None:
                calls.extend(self._deliver(row, deliveries[row["id"]]) for row in group)
            else:
                calls.extend(
                    self._deliver_many(name, part, deliveries) for part in chunks(group, size)
                )
        found = await asyncio.gather(*calls)
        outcomes = sorted((o for part in found for o in part), key=lambda o: int(o[0]["id"]))
        excused = await self._excused(outcomes)
        await asyncio.to_thread(self._settle, outcomes, excused)
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
        await self.aclose()

    async def aclose(self) -> None:
        """Close every target's HTTP client (``run`` does it on stop; ``run_once`` callers,
        once done)."""
        for target in self.targets.values():
            await target.aclose()
