"""The scheduler: runs each rule file's ``schedule:`` jobs in ``bridge serve`` (DESIGN §4, §8).

Every tick it asks, for each job, which occurrence was last due (``bridge.schedule``) and
claims it in ``schedule_runs`` (a unique insert: of every process that sees it due, one runs
it; on PostgreSQL also under an advisory lock on the job, so one job never runs twice at
once). Only the latest due occurrence is ever run: a bridge that was down at 02:00 runs the
02:00 job once when it starts, never a backlog. A job seen for the first time (a new install,
a schedule just added) has missed nothing: its latest due occurrence is recorded ``skipped``
and it starts at the next one, as cron and systemd's persistent timers do. A failing job is
logged, recorded failed with its error, and the loop goes on. The clock is injected.

The jobs: ``reconcile`` (drift reconcile of the rule file's target, applied through the
outbox like ``bridge reconcile --apply``; over the safety threshold it stays quarantined),
``deltas`` (plan + apply of the rule file's changes, like ``bridge plan`` + ``bridge apply``)
``training`` (completion read back, like ``bridge training --refresh``), and each HR feed's
``export.schedule``: ``sync`` (the export fetched from ``export.source`` and synced, like
``bridge sync --feed``; a refused export fails the run with its reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.provision import Provisioner
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.provision.reconcile import ReconcileError
from bridge.provision.reconcile import Reconciler
from bridge.provision.reconcile_read import read_targets
from bridge.provision.sync import Sync
from bridge.provision.sync import opener
from bridge.provision.training import ReadRefused
from bridge.provision.training import refresh_targets
from bridge.rules.feeds import Feed
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.schedule import Job
from bridge.schedule import latest_due
from bridge.schedule import next_occurrence
from bridge.schemas import Catalog
from bridge.store import schedule_runs
from bridge.store.engine import Database
from bridge.store.resources import ResourceStore
from bridge.targets.base import TargetConfigError
from bridge.targets.canvas_reconcile import CanvasReadError
from bridge.targets.hris_fetch import FetchError
from bridge.targets.hris_fetch import download_export
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.scim_reconcile import ScimReadError

log = logging.getLogger("bridge.scheduler")

ACTOR = "scheduler"
"""Who a scheduled run is journalled as."""
POLL_SECONDS = 30.0
"""The longest the loop sleeps: a rules reload is seen at most this late."""
STALE_RETRIES = 3
"""How often a delta is planned again when people changed between its plan and its apply."""


class ExportError(Exception):
    """A scheduled export that cannot be synced: no file at its source, or refused (empty,
    truncated) — what to fix, and where."""


EXPLAINED = (
    TargetConfigError,
    ReconcileError,
    PlanError,
    MoodleError,
    CanvasReadError,
    ScimReadError,
    ReadRefused,
    FetchError,
    ExportError,
)
"""Failures whose message says it all: logged without a traceback."""

JobRun = Callable[[Any, RuleSet], Awaitable[dict[str, Any]]]
"""Run one job for one rule file (a ``RuleFile``) or, ``sync``, one HR feed (a ``Feed``); what
it found and did (a JSON-able summary)."""


def job_key(rule_file: str, job: str) -> str:
    """A job's name across processes and in ``schedule_runs``: rule file + job name."""
    return f"{rule_file}/{job}"


@dataclass(frozen=True)
class Scheduled:
    """One job of one rule file, or the ``sync`` of one HR feed's export (``feed``)."""

    rule_file: RuleFile | None
    job: Job
    feed: Feed | None = None

    @property
    def owner(self) -> str:
        """The rule file's name, or ``feed:NAME``."""
        if self.feed is not None:
            return f"feed:{self.feed.name}"
        assert self.rule_file is not None
        return self.rule_file.name

    @property
    def key(self) -> str:
        return job_key(self.owner, self.job.name)

    @property
    def subject(self) -> RuleFile | Feed:
        """What the job's runner is given."""
        subject = self.feed if self.feed is not None else self.rule_file
        assert subject is not None
        return subject


def scheduled(ruleset: RuleSet | None) -> list[Scheduled]:
    """Every job of every rule file, in rule-set order, then each feed's scheduled export."""
    if ruleset is None:
        return []
    jobs = [Scheduled(f, job) for f in ruleset.files for job in f.schedule.jobs]
    for name in sorted(ruleset.feeds):
        feed = ruleset.feeds[name]
        if isinstance(feed, Feed) and feed.export.schedule is not None:
            jobs.append(Scheduled(None, feed.export.schedule, feed))
    return jobs


def next_runs(ruleset: RuleSet | None, now: datetime) -> list[tuple[Scheduled, datetime | None]]:
    """Each job with its next occurrence after ``now`` (None: its window is over)."""
    return [(entry, next_occurrence(entry.job, now)) for entry in scheduled(ruleset)]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Scheduler:
    """Claims and runs the due occurrences of the rules' jobs; many may share a database."""

    def __init__(
        self,
        db: Database,
        rules: Callable[[], RuleSet | None],
        jobs: Mapping[str, JobRun],
        *,
        clock: Callable[[], datetime],
        worker: str | None = None,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.db = db
        self.rules = rules
        self.jobs = jobs
        self.clock = clock
        self.worker = worker or worker_name()
        self.poll = poll
        self._seen: dict[str, datetime] = {}
        """Per job, the latest occurrence this scheduler knows to be claimed (no need to ask
        the database again)."""

    async def run_once(self) -> list[dict[str, Any]]:
        """Run every job whose latest due occurrence is not claimed yet, one after the other;
        the runs this call made (id, job key, occurrence, state)."""
        ran = []
        ruleset = self.rules()
        for entry in scheduled(ruleset):
            due = latest_due(entry.job, self.clock())
            seen = self._seen.get(entry.key)
            if due is None or (seen is not None and due <= seen):
                continue
            assert ruleset is not None
            outcome = await self._occurrence(entry, due, ruleset)
            if outcome is not None:
                ran.append(outcome)
        return ran

    async def _occurrence(
        self, entry: Scheduled, due: datetime, ruleset: RuleSet
    ) -> dict[str, Any] | None:
        key = entry.key
        with self.db.read() as conn:
            if schedule_runs.claimed(conn, key, due):
                self._seen[key] = due
                return None
        with contextlib.ExitStack() as stack:
            held = await asyncio.to_thread(
                stack.enter_context, schedule_runs.job_lock(self.db, key)
            )
            if not held:
                return None  # another process runs this job now; asked again next tick
            now = self.clock()
            first = not await self.db.run_async(lambda conn: schedule_runs.known(conn, key))
            if not self.db.is_sqlite:  # holding the lock: a run still "running" is orphaned
                await self.db.run_async(lambda conn: schedule_runs.abandon(conn, key, now=now))
            run_id = await self.db.run_async(
                lambda conn: schedule_runs.claim(
                    conn,
                    job_key=key,
                    rule_file=entry.owner,
                    job=entry.job.name,
                    occurrence=due,
                    worker=self.worker,
                    now=now,
                )
            )
            self._seen[key] = due
            if run_id is None:
                return None
            if first:
                await self.db.run_async(
                    lambda conn: schedule_runs.finish(
                        conn,
                        run_id,
                        state=schedule_runs.SKIPPED,
                        now=now,
                        summary={"reason": schedule_runs.FIRST_SEEN},
                    )
                )
                upcoming = next_occurrence(entry.job, now)
                log.info(
                    "scheduled %s of %s seen for the first time: it runs from %s on",
                    entry.job.name,
                    entry.owner,
                    upcoming.isoformat() if upcoming else "(its window is over)",
                    extra={"job": entry.job.name, "rule_file": entry.owner},
                )
                return None
            return await self._run(entry, due, run_id, ruleset)
        return None  # pragma: no cover (the stack never swallows)

    async def _run(
        self, entry: Scheduled, due: datetime, run_id: int, ruleset: RuleSet
    ) -> dict[str, Any]:
        name, owner = entry.job.name, entry.owner
        state, summary, error = schedule_runs.DONE, None, None
        log.info(
            "scheduled %s of %s (due %s) started",
            name,
            owner,
            due.isoformat(),
            extra={"job": name, "rule_file": owner, "run": run_id},
        )
        try:
            run = self.jobs.get(name)
            if run is None:
                raise LookupError(f"no runner for job {name!r}")
            summary = await run(entry.subject, ruleset)
        except Exception as exc:  # a failing job must not stop the loop: recorded, logged
            state, error = schedule_runs.FAILED, f"{type(exc).__name__}: {exc}"
            log.error(
                "scheduled %s of %s (due %s) failed: %s",
                name,
                owner,
                due.isoformat(),
                error,
                exc_info=None if isinstance(exc, EXPLAINED) else exc,
                extra={"job": name, "rule_file": owner, "run": run_id},
            )
        finished = self.clock()
        await self.db.run_async(
            lambda conn: schedule_runs.finish(
                conn, run_id, state=state, now=finished, summary=summary, error=error
            )
        )
        if state == schedule_runs.DONE:
            log.info(
                "scheduled %s of %s done: %s",
                name,
                owner,
                summary,
                extra={"job": name, "rule_file": owner, "run": run_id},
            )
        return {"id": run_id, "job_key": entry.key, "occurrence": due, "state": state}

    def _sleep_seconds(self) -> float:
        now = self.clock()
        upcoming = [when for _, when in next_runs(self.rules(), now) if when is not None]
        if not upcoming:
            return self.poll
        return max(0.0, min(self.poll, (min(upcoming) - now).total_seconds()))

    async def run(self, stop: asyncio.Event) -> None:
        """Schedule until ``stop`` is set; trouble (the database away) is logged, never fatal."""
        log.info("scheduler %s started", self.worker)
        while not stop.is_set():
            try:
                await self.run_once()
                wait = self._sleep_seconds()
            except Exception:
                log.exception("scheduler cycle failed; trying again")
                wait = self.poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.05))


class Work:
    """The jobs themselves, over one database and the rules' targets (credentials: ``env``)."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        catalog: Catalog,
        env: Mapping[str, str],
        clock: Callable[[], datetime],
        *,
        provisioner: Provisioner | None = None,
        rules_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.catalog = catalog
        self.env = env
        self.clock = clock
        self.provisioner = provisioner
        """Writes the feeds' exports (with the rules' projection); None: no ``sync`` job."""
        self.rules_dir = rules_dir
        """Where a feed's relative ``export.source`` is read from."""

    def runners(self) -> dict[str, JobRun]:
        return {
            "reconcile": self.reconcile,
            "deltas": self.deltas,
            "training": self.training,
            "sync": self.sync,
        }

    async def reconcile(self, rule_file: RuleFile, ruleset: RuleSet) -> dict[str, Any]:
        """Read the rule file's target, re-assert the drift the bridge owns (``bridge reconcile
        --target T --apply``): quarantined over the safety threshold."""
        reconciler = Reconciler(self.db, lambda: ruleset, self.clock)
        (name,) = reconciler.targets(rule_file.target)
        reconciled = await read_targets(reconciler, ruleset, [name], self.env)
        owned = sum(1 for item in reconciled.drift if item.intent is not None)
        summary: dict[str, Any] = {
            "target": name,
            "drift": len(reconciled.drift),
            "to_reassert": owned,
            "reported_only": len(reconciled.drift) - owned,
            "intents": len(reconciled.plan.tracked),
            "reads": reconciled.reads,
            "run": None,
        }
        if reconciled.plan.tracked:
            run_id, status, written = await asyncio.to_thread(
                reconciler.apply, reconciled, actor=ACTOR
            )
            summary.update(run=run_id, status=status, written=written)
        return summary

    async def deltas(self, rule_file: RuleFile, ruleset: RuleSet) -> dict[str, Any]:
        """Plan the rule file's changes and apply them (``bridge plan --only`` + ``apply``)."""
        return await asyncio.to_thread(self._deltas, rule_file, ruleset)

    def _deltas(self, rule_file: RuleFile, ruleset: RuleSet) -> dict[str, Any]:
        planner = Planner(self.db, self.store, self.catalog, lambda: ruleset, self.clock)
        for attempt in range(STALE_RETRIES):
            document = planner.plan_document(only={rule_file.name})
            summary: dict[str, Any] = {
                "intents": len(document["intents"]),
                "counts": {k: v["count"] for k, v in document["counts"].items() if v["count"]},
                "run": None,
            }
            if not document["intents"]:
                return summary
            try:
                run_id, status, written = planner.apply(document, actor=ACTOR)
            except PlanError as exc:
                if "stale" in str(exc) and attempt + 1 < STALE_RETRIES:
                    continue  # people changed since the plan: plan again
                raise
            return {**summary, "run": run_id, "status": status, "written": written}
        raise AssertionError("unreachable")  # pragma: no cover

    async def training(self, rule_file: RuleFile, ruleset: RuleSet) -> dict[str, Any]:
        """Read completion back from the rule file's target (``bridge training --refresh``)."""
        return await refresh_targets(
            self.db, ruleset, self.env, self.clock(), targets={rule_file.target}
        )

    async def sync(self, feed: Feed, ruleset: RuleSet) -> dict[str, Any]:
        """Fetch the feed's export from ``export.source`` (a file, or a URL streamed to a
        temporary file) and sync it (``bridge sync --feed``). A missing file, an HRIS that
        does not answer or a refused export (empty, truncated) fails the run with the reason."""
        source = feed.export.source
        if source is None:  # the loader refuses it; a rule set built otherwise may not
            raise ExportError(f"feed {feed.name!r}: export.schedule without export.source")
        if self.provisioner is None:
            raise ExportError("this bridge's scheduler was built without a provisioner to sync")
        with contextlib.ExitStack() as stack:
            if source.startswith(("https://", "http://")):
                spool = stack.enter_context(
                    tempfile.NamedTemporaryFile(prefix=f"bridge-{feed.name}-", suffix=".export")
                )
                size = await download_export(source, feed.export.token, spool, self.env)
                spool.flush()
                path = Path(spool.name)
                where = f"{source} ({size} bytes)"
            else:
                path = Path(source)
                if not path.is_absolute() and self.rules_dir is not None:
                    path = (self.rules_dir / path).resolve()
                if not path.is_file():
                    raise ExportError(
                        f"feed {feed.name!r}: no export at {path} (export.source); is the "
                        "HRIS's nightly drop there?"
                    )
                where = str(path)
            sync = Sync(self.provisioner, feed, actor=ACTOR, rules_version=ruleset.version)
            found = await asyncio.to_thread(sync.survey, opener(path), force=False)
            if found.refusal is not None:
                raise ExportError(f"feed {feed.name!r}, {where}: {found.refusal}")
            applied = await asyncio.to_thread(sync.apply, found, opener(path))
        return {
            "feed": feed.name,
            "source": where,
            "rows": found.rows,
            "people": found.people,
            "counts": {k: v for k, v in applied.counts.items() if v},
            "run": applied.run_id,
        }
