"""A feed's nightly export run by the schedule (``export.source`` + ``export.schedule`` in
``feeds.yaml``): read from a file drop or fetched from the HRIS over HTTPS with a bearer token,
synced like ``bridge sync --feed``; a missing file, a refused (truncated) export or an HRIS that
answers an error fails the run with the reason, and nothing is written."""

from __future__ import annotations

import asyncio
import http.server
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.rules.model import RuleErrors
from bridge.scheduler import Scheduler
from bridge.scheduler import Work
from bridge.scheduler import job_key
from bridge.schemas import Catalog
from bridge.store import schedule_runs
from bridge.store.engine import Database
from tests.test_scheduler import Clock
from tests.test_scheduler import book_of
from tests.test_scheduler import utc
from tests.test_sync import RESOURCES
from tests.test_sync import count
from tests.test_sync import export
from tests.test_sync import row

SYNC = job_key("feed:workday", "sync")
TOKEN = "s3cret"  # noqa: S105 (the test HRIS's token)


def synced_any(ran: list[dict[str, object]]) -> bool:
    return any(r["job_key"] == SYNC for r in ran)


def synced(ran: list[dict[str, object]]) -> dict[str, object]:
    """The scheduled sync among the runs one tick made (the rules' own jobs run too)."""
    (found,) = [r for r in ran if r["job_key"] == SYNC]
    return found


def with_source(rules: Path, source: str, extra: str = "") -> Path:
    """The shipped feeds.yaml with its export read from ``source`` every hour."""
    path = rules / "feeds.yaml"
    text = path.read_text()
    text = text.replace(
        "export: {format: csv, min_percent: 90}",
        f"export: {{format: csv, min_percent: 90, source: {source!r}, schedule: {{every: 1h}}"
        f"{extra}}}",
    )
    path.write_text(text)
    return rules


def scheduler(
    db: Database, catalog: Catalog, book: RuleBook, clock: Clock, token: str = TOKEN
) -> Scheduler:
    provisioner = Provisioner(db, catalog, rules=book.current, clock=clock)
    work = Work(
        db,
        provisioner.store,
        catalog,
        {"HRIS_EXPORT_TOKEN": token},
        clock,
        provisioner=provisioner,
        rules_dir=book.directory,
    )
    return Scheduler(db, book.current, work.runners(), clock=clock)


def last_run(db: Database) -> dict[str, object]:
    with db.read() as conn:
        return next(r for r in schedule_runs.recent(conn, limit=10) if r["job_key"] == SYNC)


def test_scheduled_export_from_a_file_drop_is_synced_and_a_truncated_one_fails_the_run(
    db: Database,
    catalog: Catalog,
    feed_rules: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    book = book_of(with_source(feed_rules, "../drop/people.csv"), catalog)
    clock = Clock(utc(2026, 12, 7, 0, 30))
    runner = scheduler(db, catalog, book, clock)
    assert not synced_any(
        asyncio.run(runner.run_once())
    )  # first seen: starts at the next occurrence
    assert last_run(db)["state"] == schedule_runs.SKIPPED

    clock.now += timedelta(hours=1)  # no file yet: the run fails, saying where it looked
    caplog.set_level(logging.ERROR, logger="bridge.scheduler")
    ran = synced(asyncio.run(runner.run_once()))
    assert ran["state"] == schedule_runs.FAILED
    failed = last_run(db)
    assert "no export at" in str(failed["error"]) and "people.csv" in str(failed["error"])
    assert "export.source" in caplog.text

    export(drop, "people.csv", *(row(n) for n in range(1, 21)))
    clock.now += timedelta(hours=1)
    ran = synced(asyncio.run(runner.run_once()))
    assert ran["state"] == schedule_runs.DONE
    done = last_run(db)
    summary = done["summary"]
    assert isinstance(summary, dict)
    assert summary["people"] == 20 and summary["counts"] == {"create": 20}
    assert count(db, RESOURCES, RESOURCES.c.type == "User") == 20

    export(drop, "people.csv", *(row(n) for n in range(1, 11)))  # half of the last one
    clock.now += timedelta(hours=1)
    ran = synced(asyncio.run(runner.run_once()))
    assert ran["state"] == schedule_runs.FAILED
    error = str(last_run(db)["error"])
    assert "the export lists 10 people, 50.0 % of the last accepted export's 20" in error
    assert "refused as truncated, nothing written" in error
    active = RESOURCES.c.active.is_(True)
    assert count(db, RESOURCES, RESOURCES.c.type == "User", active) == 20  # nobody deactivated


class _Hris(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def hris() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hris)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/exports/people.csv"
    server.shutdown()
    server.server_close()


def test_scheduled_export_is_fetched_from_the_hris_with_its_token(
    db: Database, catalog: Catalog, feed_rules: Path, tmp_path: Path, hris: str
) -> None:
    path = export(tmp_path, "people.csv", *(row(n) for n in range(1, 6)))
    _Hris.body = path.read_bytes()
    rules = with_source(feed_rules, hris, ", token: env:HRIS_EXPORT_TOKEN")
    book = book_of(rules, catalog)
    clock = Clock(utc(2026, 12, 7, 0, 30))
    runner = scheduler(db, catalog, book, clock)
    asyncio.run(runner.run_once())
    clock.now += timedelta(hours=1)
    ran = synced(asyncio.run(runner.run_once()))
    assert ran["state"] == schedule_runs.DONE, last_run(db)["error"]
    assert count(db, RESOURCES, RESOURCES.c.type == "User") == 5

    for token, error in (("wrong", "401"), ("", "HRIS_EXPORT_TOKEN is not set")):
        runner = scheduler(db, catalog, book, clock, token)  # a restart with another token
        clock.now += timedelta(hours=1)
        ran = synced(asyncio.run(runner.run_once()))
        assert ran["state"] == schedule_runs.FAILED
        assert error in str(last_run(db)["error"])
    assert count(db, RESOURCES, RESOURCES.c.type == "User", RESOURCES.c.active.is_(True)) == 5


@pytest.mark.parametrize(
    ("export_line", "message"),
    [
        ("{format: csv, schedule: nightly}", "export.schedule needs export.source"),
        ("{format: csv, source: 'http://hris.example.com/x.csv'}", "unencrypted"),
        ("{format: csv, source: x.csv, token: env:T}", "export.token is for a URL source"),
        ("{format: csv, source: x.csv, schedule: {at: '25:00'}}", "bad time"),
        ("{format: csv, source: x.csv, schedule: nightly, timezone: Mars/Base}", "time zone"),
        ("{format: csv, source: x.csv, schedul: nightly}", "did you mean 'schedule'"),
    ],
)
def test_export_schedule_mistakes_are_rule_errors_at_their_line(
    feed_rules: Path, catalog: Catalog, export_line: str, message: str
) -> None:
    path = feed_rules / "feeds.yaml"
    path.write_text(
        path.read_text().replace("export: {format: csv, min_percent: 90}", f"export: {export_line}")
    )
    with pytest.raises(RuleErrors) as caught:
        book_of(feed_rules, catalog)
    (error,) = [e for e in caught.value.errors if message in str(e)]
    assert error.mark.file.endswith("feeds.yaml") and error.mark.line == 10
