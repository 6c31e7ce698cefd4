"""The scheduler of ``bridge serve``, on both databases: each occurrence of a rule file's job
runs exactly once across processes, a missed one once at start (never a backlog), a failing
job is recorded and the loop goes on; the real jobs reconcile, apply and read back against the
LMS simulator; ``bridge runs`` lists what ran and what runs next."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bridge.cli.serving import build_scheduler
from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.provision import Provisioner
from bridge.provision.resources import now_utc
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.schedule import next_occurrence
from bridge.scheduler import JobRun
from bridge.scheduler import Scheduler
from bridge.scheduler import Work
from bridge.scheduler import job_key
from bridge.schemas import Catalog
from bridge.store import outbox
from bridge.store import runs
from bridge.store import schedule_runs
from bridge.store.engine import Database
from bridge.store.engine import connect
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.test_reconcile import deliver
from tests.test_reconcile import provision
from tests.test_reconcile import relay

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTLY = 'schedule:\n  reconcile: {at: "02:00"}\n  training: {at: "03:00"}\n'
RECONCILE = job_key("benefits-2026", "reconcile")
TRAINING = job_key("benefits-2026", "training")


class Clock:
    """The scheduler's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def rules_with(tmp_path: Path, block: str) -> Path:
    """The shipped rules with ``block`` as their schedule."""
    rules = shipped_rules(tmp_path)
    path = rules / "benefits-2026.yaml"
    head, _, _ = path.read_text().partition("schedule:")
    path.write_text(head + block)
    return rules


def book_of(rules: Path, catalog: Catalog) -> RuleBook:
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    return book


class Jobs:
    """Job runners standing in for the LMS work: they record each call; ``failing`` raise."""

    def __init__(self, *, failing: tuple[str, ...] = (), delay: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failing = failing
        self.delay = delay

    def runners(self) -> dict[str, JobRun]:
        def runner(name: str) -> JobRun:
            async def run(rule_file: RuleFile, ruleset: RuleSet) -> dict[str, Any]:
                self.calls.append((rule_file.name, name))
                await asyncio.sleep(self.delay)
                if name in self.failing:
                    raise RuntimeError(f"{name} broke")
                return {"found": 2, "did": 1}

            return run

        return {name: runner(name) for name in ("reconcile", "deltas", "training")}


def seen(db: Database, book: RuleBook, at: datetime) -> None:
    """A bridge that ran at ``at`` (its jobs then seen for the first time: nothing missed)."""
    jobs = Jobs()
    assert (
        asyncio.run(Scheduler(db, book.current, jobs.runners(), clock=Clock(at)).run_once()) == []
    )
    assert jobs.calls == []


def stored(db: Database, key: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        return schedule_runs.of_job(conn, key)


# -- claims ----------------------------------------------------------------------------------


def test_an_occurrence_is_claimed_once(db: Database) -> None:
    due = utc(2026, 12, 7, 2)

    def claim(worker: str) -> int | None:
        return db.run(
            lambda conn: schedule_runs.claim(
                conn,
                job_key=RECONCILE,
                rule_file="benefits-2026",
                job="reconcile",
                occurrence=due,
                worker=worker,
                now=due,
            )
        )

    assert claim("a") is not None
    assert claim("b") is None
    assert claim("c") is None
    [row] = stored(db, RECONCILE)
    assert (row["worker"], row["state"], row["occurrence"]) == ("a", "running", due)


def test_two_schedulers_racing_on_one_occurrence_run_it_once(
    tmp_path: Path, catalog: Catalog, database_url: str
) -> None:
    book = book_of(rules_with(tmp_path, NIGHTLY), catalog)
    jobs = Jobs(delay=0.2)
    clock = Clock(utc(2026, 12, 7, 9))
    start = threading.Barrier(2)
    history = connect(database_url)
    seen(history, book, utc(2026, 12, 6, 12))
    history.dispose()

    def process(worker: str) -> list[dict[str, Any]]:
        db = connect(database_url)  # a database (pool, connections) of its own
        try:
            scheduler = Scheduler(db, book.current, jobs.runners(), clock=clock, worker=worker)
            start.wait()
            return asyncio.run(scheduler.run_once())
        finally:
            db.dispose()

    with ThreadPoolExecutor(2) as pool:
        ran = list(pool.map(process, ["one", "two"]))
    assert sorted(jobs.calls) == [("benefits-2026", "reconcile"), ("benefits-2026", "training")]
    assert sum(len(found) for found in ran) == 2
    db = connect(database_url)
    try:
        for key in (RECONCILE, TRAINING):
            skipped, row = stored(db, key)
            assert skipped["state"] == "skipped"
            assert row["state"] == "done" and row["summary"] == {"found": 2, "did": 1}
            assert row["worker"] in ("one", "two") and row["finished"] >= row["started"]
    finally:
        db.dispose()


def test_a_job_another_process_runs_now_waits_for_it(
    tmp_path: Path, catalog: Catalog, db: Database
) -> None:
    book = book_of(rules_with(tmp_path, 'schedule:\n  reconcile: {at: "02:00"}\n'), catalog)
    jobs = Jobs()
    seen(db, book, utc(2026, 12, 6, 12))
    scheduler = Scheduler(db, book.current, jobs.runners(), clock=Clock(utc(2026, 12, 7, 9)))
    with schedule_runs.job_lock(db, RECONCILE) as held:  # as a process running the job holds it
        assert held
        assert asyncio.run(scheduler.run_once()) == []
        assert jobs.calls == [] and [r["state"] for r in stored(db, RECONCILE)] == ["skipped"]
    [ran] = asyncio.run(scheduler.run_once())
    assert ran["occurrence"] == utc(2026, 12, 7, 2) and ran["state"] == "done"
    assert jobs.calls == [("benefits-2026", "reconcile")]


def test_a_run_left_running_by_a_process_that_died_is_failed(
    tmp_path: Path, catalog: Catalog, db: Database
) -> None:
    if db.is_sqlite:
        pytest.skip("a PostgreSQL advisory lock tells a dead process from a live one")
    book = book_of(rules_with(tmp_path, 'schedule:\n  reconcile: {at: "02:00"}\n'), catalog)
    db.run(
        lambda conn: schedule_runs.claim(
            conn,
            job_key=RECONCILE,
            rule_file="benefits-2026",
            job="reconcile",
            occurrence=utc(2026, 12, 6, 2),
            worker="gone",
            now=utc(2026, 12, 6, 2),
        )
    )
    scheduler = Scheduler(db, book.current, Jobs().runners(), clock=Clock(utc(2026, 12, 7, 9)))
    asyncio.run(scheduler.run_once())
    orphan, today = stored(db, RECONCILE)
    assert orphan["state"] == "failed" and orphan["error"] == schedule_runs.ABANDONED
    assert today["state"] == "done"


# -- missed runs -----------------------------------------------------------------------------


def test_a_missed_run_runs_once_at_start_and_never_a_backlog(
    tmp_path: Path, catalog: Catalog, db: Database
) -> None:
    book = book_of(rules_with(tmp_path, NIGHTLY), catalog)
    jobs = Jobs()
    seen(db, book, utc(2026, 12, 6, 12))  # the bridge ran on the 6th…
    clock = Clock(utc(2026, 12, 7, 9))  # …and was down at 02:00 and 03:00 on the 7th
    first = Scheduler(db, book.current, jobs.runners(), clock=clock)
    ran = asyncio.run(first.run_once())
    assert [(r["job_key"], r["occurrence"]) for r in ran] == [
        (RECONCILE, utc(2026, 12, 7, 2)),
        (TRAINING, utc(2026, 12, 7, 3)),
    ]
    assert asyncio.run(first.run_once()) == []
    restarted = Scheduler(db, book.current, jobs.runners(), clock=clock)
    assert asyncio.run(restarted.run_once()) == []  # the row says it ran
    assert len(jobs.calls) == 2

    clock.now = utc(2026, 12, 10, 9)  # down three nights: the latest runs, once
    ran = asyncio.run(restarted.run_once())
    assert [(r["job_key"], r["occurrence"]) for r in ran] == [
        (RECONCILE, utc(2026, 12, 10, 2)),
        (TRAINING, utc(2026, 12, 10, 3)),
    ]
    assert [(r["occurrence"], r["state"]) for r in stored(db, RECONCILE)] == [
        (utc(2026, 12, 6, 2), "skipped"),
        (utc(2026, 12, 7, 2), "done"),
        (utc(2026, 12, 10, 2), "done"),
    ]
    clock.now = utc(2026, 12, 11, 1, 59)
    assert asyncio.run(restarted.run_once()) == []
    clock.now = utc(2026, 12, 11, 2, 0)
    assert [r["job_key"] for r in asyncio.run(restarted.run_once())] == [RECONCILE]
    assert len(jobs.calls) == 5


def test_a_job_seen_for_the_first_time_has_missed_nothing(
    tmp_path: Path, catalog: Catalog, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A new install (or a schedule just added) at 09:00 does not run the 02:00 reconcile it
    never had: the occurrence is recorded skipped, and the job starts at the next one."""
    book = book_of(rules_with(tmp_path, NIGHTLY), catalog)
    jobs = Jobs()
    clock = Clock(utc(2026, 12, 7, 9))
    scheduler = Scheduler(db, book.current, jobs.runners(), clock=clock)
    with caplog.at_level(logging.INFO, logger="bridge.scheduler"):
        assert asyncio.run(scheduler.run_once()) == []
    assert jobs.calls == []
    [first] = stored(db, RECONCILE)
    assert (first["occurrence"], first["state"]) == (utc(2026, 12, 7, 2), "skipped")
    assert first["summary"] == {"reason": schedule_runs.FIRST_SEEN}
    assert any("seen for the first time" in r.getMessage() for r in caplog.records)
    restarted = Scheduler(db, book.current, jobs.runners(), clock=clock)
    assert asyncio.run(restarted.run_once()) == []  # a restart the same day: still nothing
    clock.now = utc(2026, 12, 8, 2, 1)
    assert [r["job_key"] for r in asyncio.run(restarted.run_once())] == [RECONCILE]


# -- failures --------------------------------------------------------------------------------


def test_a_failing_job_is_logged_recorded_failed_and_the_loop_goes_on(
    tmp_path: Path, catalog: Catalog, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    book = book_of(rules_with(tmp_path, NIGHTLY), catalog)
    jobs = Jobs(failing=("reconcile",))
    seen(db, book, utc(2026, 12, 6, 12))
    clock = Clock(utc(2026, 12, 7, 9))
    scheduler = Scheduler(db, book.current, jobs.runners(), clock=clock, poll=0.05)

    async def loop() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(stop))
        for _ in range(200):
            if stored(db, TRAINING)[-1]["state"] not in ("skipped", "running"):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task

    with caplog.at_level(logging.ERROR, logger="bridge.scheduler"):
        asyncio.run(loop())
    failed = stored(db, RECONCILE)[-1]
    assert failed["state"] == "failed" and failed["error"] == "RuntimeError: reconcile broke"
    assert failed["summary"] is None and failed["finished"] is not None
    done = stored(db, TRAINING)[-1]
    assert done["state"] == "done"  # the next job still ran
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "reconcile" in errors[0].getMessage() and "benefits-2026" in errors[0].getMessage()
    assert jobs.calls == [("benefits-2026", "reconcile"), ("benefits-2026", "training")]
    # the failed occurrence is not retried; the next one runs
    assert asyncio.run(scheduler.run_once()) == []
    clock.now = utc(2026, 12, 8, 2, 30)
    [again] = asyncio.run(scheduler.run_once())
    assert again["job_key"] == RECONCILE and again["state"] == "failed"


# -- the real jobs, against the LMS simulator ------------------------------------------------


def work_for(db: Database, catalog: Catalog, clock: Clock) -> Work:
    store = Provisioner(db, catalog).store
    return Work(db, store, catalog, {"MOODLE_TOKEN": SIM_MOODLE_TOKEN}, clock)


def test_the_nightly_reconcile_repairs_drift_planted_in_moodle(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)  # the shipped schedule: 02:00 and 03:00, Berlin
    provision(db, catalog, settings, rules, 3)
    deliver(database_url, rules, tmp_path, catalog)
    site = simulator.state.moodle
    site.user_named("emp1@example.com").suspended = True  # by hand, in the LMS
    book = book_of(rules, catalog)
    seen(db, book, datetime(2026, 12, 6, 12, tzinfo=BERLIN).astimezone(UTC))
    clock = Clock(datetime(2026, 12, 7, 9, tzinfo=BERLIN).astimezone(UTC))
    scheduler = Scheduler(db, book.current, work_for(db, catalog, clock).runners(), clock=clock)

    ran = asyncio.run(scheduler.run_once())
    assert [r["job_key"] for r in ran] == [RECONCILE, TRAINING]  # deltas: outside its window
    reconciled = stored(db, RECONCILE)[-1]
    assert reconciled["state"] == "done", reconciled["error"]
    summary = reconciled["summary"]
    assert summary["target"] == "moodle" and summary["to_reassert"] == 1
    assert (summary["status"], summary["written"]) == ("applied", 1)
    with db.read() as conn:
        run = runs.get(conn, summary["run"])
    assert run is not None and run["kind"] == "reconcile" and run["summary"]["actor"] == "scheduler"
    trained = stored(db, TRAINING)[-1]
    assert trained["state"] == "done", trained["error"]
    assert trained["summary"]["failed"] == 0 and trained["summary"]["read"] >= 3

    relay(database_url, rules, catalog)
    assert not site.user_named("emp1@example.com").suspended  # repaired


def test_hourly_deltas_apply_the_rule_files_changes_in_the_window(
    tmp_path: Path, catalog: Catalog, settings: Settings, db: Database
) -> None:
    rules = shipped_rules(tmp_path)
    provision(db, catalog, settings, rules, 3)  # written by SCIM; the pilot not applied yet
    book = book_of(rules, catalog)
    clock = Clock(datetime(2026, 11, 2, 10, 20, tzinfo=BERLIN).astimezone(UTC))
    seen(db, book, clock.now - timedelta(hours=1))
    work = work_for(db, catalog, clock)
    jobs = {**Jobs().runners(), "deltas": work.deltas}  # the nightly ones stand in
    scheduler = Scheduler(db, book.current, jobs, clock=clock)
    first = asyncio.run(scheduler.run_once())
    assert [r["job_key"] for r in first] == ["benefits-2026/deltas"]  # the nightly ones: seen
    skipped, applied = stored(db, "benefits-2026/deltas")
    assert skipped["summary"] == {"reason": schedule_runs.FIRST_SEEN}
    summary = applied["summary"]
    assert summary["status"] == "applied" and summary["written"] == summary["intents"] > 0
    with db.read() as conn:
        pending = outbox.pending(conn, limit=1000)
    assert {row["run_id"] for row in pending} == {summary["run"]}
    clock.now += timedelta(hours=1)  # nothing changed since: nothing applied
    asyncio.run(scheduler.run_once())
    latest = stored(db, "benefits-2026/deltas")[-1]
    assert latest["state"] == "done" and latest["summary"] == {
        "intents": 0,
        "counts": {},
        "run": None,
    }


# -- wiring and `bridge runs` ----------------------------------------------------------------


def test_bridge_scheduler_setting(tmp_path: Path, catalog: Catalog, db: Database) -> None:
    assert Settings.from_env({}).scheduler is True
    assert Settings.from_env({"BRIDGE_SCHEDULER": "OFF"}).scheduler is False
    with pytest.raises(ValueError, match="BRIDGE_SCHEDULER must be 'on' or 'off'"):
        Settings.from_env({"BRIDGE_SCHEDULER": "sometimes"})
    book = book_of(shipped_rules(tmp_path), catalog)
    provisioner = Provisioner(db, catalog, rules=book.current)
    assert build_scheduler(provisioner, catalog, book, Settings(scheduler=False)) is None
    scheduler = build_scheduler(provisioner, catalog, book, Settings())
    assert scheduler is not None and set(scheduler.jobs) == {
        "reconcile",
        "deltas",
        "training",
        "sync",
    }


def test_bridge_runs_lists_past_runs_and_the_next_ones(
    tmp_path: Path, catalog: Catalog, db: Database, database_url: str
) -> None:
    rules = shipped_rules(tmp_path)
    book = book_of(rules, catalog)
    clock = Clock(now_utc() - timedelta(hours=1))
    seen(db, book, clock.now - timedelta(days=1))
    jobs = Jobs(failing=("training",))
    asyncio.run(Scheduler(db, book.current, jobs.runners(), clock=clock).run_once())
    assert len(jobs.calls) == 2  # reconcile and training were due within a day
    db.run(
        lambda conn: runs.create(
            conn,
            "run1",
            kind="apply",
            status="applied",
            rules_version="v",
            summary={"enrol": {"count": 3}},
            now=now_utc(),
            actor="cli:admin",
        )
    )
    before = now_utc()
    result = run_cli(database_url, rules, "runs", "--json")
    after = now_utc()
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format"] == "bridge-runs/1" and document["rules_error"] is None
    past = [(r["source"], r["kind"], r["state"]) for r in document["runs"]]
    assert past[0] == ("runs", "apply", "applied")  # newest first
    assert sorted(past[1:]) == [
        ("schedule", "reconcile", "done"),
        ("schedule", "reconcile", "skipped"),
        ("schedule", "training", "failed"),
        ("schedule", "training", "skipped"),
    ]
    failed = next(r for r in document["runs"] if r["state"] == "failed")
    assert (
        failed["error"] == "RuntimeError: training broke" and failed["rule_file"] == "benefits-2026"
    )
    assert document["runs"][0]["worker"] == "cli:admin"
    upcoming = {item["job"]: item for item in document["next"]}
    assert set(upcoming) == {"reconcile", "training", "deltas"}
    ruleset = book.current()
    assert ruleset is not None
    for name, item in upcoming.items():
        job = ruleset.files[0].schedule.job(name)
        assert job is not None
        expected = {next_occurrence(job, before), next_occurrence(job, after)}
        assert item["next"] in {t.isoformat() if t else None for t in expected}
    assert upcoming["training"]["last"]["state"] == "failed"
    assert upcoming["deltas"]["last"] is None

    limited = json.loads(run_cli(database_url, rules, "runs", "--json", "--limit", "1").stdout)
    assert [r["kind"] for r in limited["runs"]] == ["apply"]
    text = run_cli(database_url, rules, "runs")
    assert text.exit_code == 0
    assert "scheduled reconcile" in text.output and "RuntimeError: training broke" in text.output
    assert "Next runs" in text.output and "at 02:00 Europe/Berlin" in text.output
