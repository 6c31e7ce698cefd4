"""The ``schedule:`` of a rule file, on plain data: the forms it is written in, when each job
runs (time zones, DST changes, an enrolment window) and every mistake at its file:line:col."""

from __future__ import annotations

from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.rules.check import check_directory
from bridge.schedule import Job
from bridge.schedule import latest_due
from bridge.schedule import next_occurrence
from bridge.schedule import occurrences
from bridge.schedule import parse
from bridge.schemas import Catalog
from tests.conftest import shipped_rules

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)  # type: ignore[misc]


def job(value: object, timezone: str = "Europe/Berlin") -> Job:
    schedule, problems = parse({"timezone": timezone, "reconcile": value})
    assert problems == []
    found = schedule.job("reconcile")
    assert found is not None
    return found


# -- the forms -------------------------------------------------------------------------------


def test_short_forms_nightly_is_at_two_and_hourly_every_hour_in_utc() -> None:
    schedule, problems = parse({"reconcile": "nightly", "deltas": "hourly", "training": "nightly"})
    assert problems == []
    assert schedule.timezone == "UTC"
    assert schedule.job("reconcile") == Job("reconcile", "UTC", at=time(2, 0))
    assert schedule.job("training") == Job("training", "UTC", at=time(2, 0))
    assert schedule.job("deltas") == Job("deltas", "UTC", every=timedelta(hours=1))


def test_full_form_with_timezone_times_and_an_enrolment_window() -> None:
    schedule, problems = parse(
        {
            "timezone": "Europe/Berlin",
            "reconcile": {"at": "02:00"},
            "training": {"at": "03:00"},
            "deltas": {"every": "1h", "from": date(2026, 10, 15), "until": "2026-11-15"},
        }
    )
    assert problems == []
    assert [j.name for j in schedule.jobs] == ["reconcile", "training", "deltas"]
    deltas = schedule.job("deltas")
    assert deltas == Job(
        "deltas",
        "Europe/Berlin",
        every=timedelta(hours=1),
        start=date(2026, 10, 15),
        until=date(2026, 11, 15),
    )
    assert deltas.describe() == "every 1h Europe/Berlin from 2026-10-15 until 2026-11-15"


def test_no_schedule_is_no_job() -> None:
    assert parse(None) == (parse({})[0], [])
    assert parse(None)[0].jobs == ()


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ({"backup": "nightly"}, ("backup",), "unknown scheduled job 'backup'"),
        ({"reconcile": "weekly"}, ("reconcile",), "unknown schedule 'weekly'"),
        ({"reconcile": {"at": "24:00"}}, ("reconcile", "at"), "bad time '24:00'"),
        ({"reconcile": {"at": "2am"}}, ("reconcile", "at"), "bad time '2am'"),
        ({"deltas": {"every": "30s"}}, ("deltas", "every"), "bad interval '30s'"),
        ({"deltas": {"every": "0h"}}, ("deltas", "every"), "bad interval '0h'"),
        ({"deltas": {"at": "02:00", "every": "1h"}}, ("deltas",), "one of `at` or `every`"),
        ({"deltas": {"from": "2026-10-01"}}, ("deltas",), "one of `at` or `every`"),
        ({"deltas": {"every": "1h", "on": "monday"}}, ("deltas", "on"), "unknown key 'on'"),
        ({"deltas": {"every": "1h", "until": "soon"}}, ("deltas", "until"), "bad date 'soon'"),
        ({"timezone": "Europe/Berlim"}, ("timezone",), "unknown time zone 'Europe/Berlim'"),
        (
            {"deltas": {"every": "1h", "from": "2026-11-15", "until": "2026-10-15"}},
            ("deltas", "from"),
            "`from` 2026-11-15 is after `until` 2026-10-15",
        ),
        (["nightly"], (), "schedule must be a mapping"),
    ],
)
def test_mistakes_are_problems_at_their_key(
    value: object, path: tuple[str, ...], message: str
) -> None:
    _, problems = parse(value)
    assert len(problems) == 1, problems
    assert problems[0].path == path
    assert message in problems[0].message
    assert problems[0].hint


# -- occurrences -----------------------------------------------------------------------------


def test_at_runs_once_a_local_day_at_that_local_time() -> None:
    nightly = job({"at": "02:00"})
    found = occurrences(nightly, local(2026, 12, 1, 3, 0), local(2026, 12, 4, 2, 0))
    assert found == [local(2026, 12, 2, 2, 0), local(2026, 12, 3, 2, 0), local(2026, 12, 4, 2, 0)]
    assert found[0] == utc(2026, 12, 2, 1, 0)  # CET is UTC+1
    assert occurrences(nightly, found[0], found[0]) == []  # after < t <= before


def test_a_local_time_the_clock_skips_runs_once_after_the_jump() -> None:
    # 2026-03-29, Europe/Berlin: 02:00 CET → 03:00 CEST; neither 02:00 nor 02:30 exist
    for at, expected in (("02:00", utc(2026, 3, 29, 1, 0)), ("02:30", utc(2026, 3, 29, 1, 30))):
        found = occurrences(job({"at": at}), utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
        assert found == [expected]
        assert found[0].astimezone(BERLIN).hour == 3  # the wall clock reads 03:00 / 03:30


def test_a_local_time_that_happens_twice_runs_once_the_first_time() -> None:
    # 2026-10-25, Europe/Berlin: 03:00 CEST → 02:00 CET; 02:30 happens twice
    found = occurrences(job({"at": "02:30"}), utc(2026, 10, 24, 12), utc(2026, 10, 26, 0))
    assert found == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST, not also 02:30 CET (01:30 UTC)
    day_after = occurrences(job({"at": "02:30"}), utc(2026, 10, 25, 12), utc(2026, 10, 26, 12))
    assert day_after == [utc(2026, 10, 26, 1, 30)]  # CET from now on


def test_every_is_elapsed_time_across_a_dst_change() -> None:
    hourly = job({"every": "1h"})
    # the local day of 2026-10-25 has 25 hours: 25 runs, 60 minutes apart
    found = occurrences(
        hourly,
        local(2026, 10, 25, 0, 0) - timedelta(seconds=1),
        local(2026, 10, 26) - timedelta(seconds=1),
    )
    assert len(found) == 25
    assert {b - a for a, b in zip(found, found[1:], strict=False)} == {timedelta(hours=1)}
    spring = occurrences(
        hourly, local(2026, 3, 29) - timedelta(seconds=1), local(2026, 3, 30) - timedelta(seconds=1)
    )
    assert len(spring) == 23


def test_a_window_runs_from_local_midnight_of_its_first_day_to_the_end_of_its_last() -> None:
    deltas = job({"every": "1h", "from": "2026-10-15", "until": "2026-11-15"})
    assert next_occurrence(deltas, utc(2026, 1, 1)) == local(2026, 10, 15, 0, 0)
    assert occurrences(deltas, utc(2026, 10, 1), local(2026, 10, 15, 2, 0)) == [
        local(2026, 10, 15, 0, 0),
        local(2026, 10, 15, 1, 0),
        local(2026, 10, 15, 2, 0),
    ]
    last = local(2026, 11, 15, 23, 0)
    assert next_occurrence(deltas, last - timedelta(minutes=1)) == last
    assert next_occurrence(deltas, last) is None  # the window is over
    assert occurrences(deltas, last, utc(2027, 1, 1)) == []
    nightly = job({"at": "02:00", "from": "2026-10-15", "until": "2026-10-16"})
    assert occurrences(nightly, utc(2026, 1, 1), utc(2027, 1, 1)) == [
        local(2026, 10, 15, 2, 0),
        local(2026, 10, 16, 2, 0),
    ]


def test_next_occurrence_is_strictly_after() -> None:
    nightly = job({"at": "02:00"}, timezone="UTC")
    assert next_occurrence(nightly, utc(2026, 12, 7, 1, 59)) == utc(2026, 12, 7, 2, 0)
    assert next_occurrence(nightly, utc(2026, 12, 7, 2, 0)) == utc(2026, 12, 8, 2, 0)
    every = job({"every": "15m"}, timezone="UTC")
    assert next_occurrence(every, utc(2026, 12, 7, 10, 7)) == utc(2026, 12, 7, 10, 15)


def test_latest_due_is_the_last_occurrence_within_one_period_never_older_ones() -> None:
    nightly = job({"at": "02:00"})
    assert latest_due(nightly, local(2026, 12, 7, 9, 0)) == local(2026, 12, 7, 2, 0)
    assert latest_due(nightly, local(2026, 12, 7, 1, 59)) == local(2026, 12, 6, 2, 0)
    hourly = job({"every": "1h", "from": "2026-10-15", "until": "2026-11-15"})
    assert latest_due(hourly, local(2026, 11, 1, 9, 40)) == local(2026, 11, 1, 9, 0)
    assert latest_due(hourly, local(2026, 10, 14, 23, 59)) is None  # not begun
    assert latest_due(hourly, local(2026, 11, 15, 23, 40)) == local(2026, 11, 15, 23, 0)
    assert latest_due(hourly, local(2026, 11, 16, 0, 30)) is None  # the window is over
    assert latest_due(hourly, local(2026, 11, 20)) is None  # over long ago


# -- in a rule file: `bridge rules check` places each mistake --------------------------------


def with_schedule(tmp_path: Path, block: str) -> Path:
    rules = shipped_rules(tmp_path)
    path = rules / "benefits-2026.yaml"
    text = path.read_text()
    head, _, _ = text.partition("schedule:")
    path.write_text(head + block)
    return rules


def test_the_shipped_schedule_checks_clean_with_its_open_enrolment_window(
    tmp_path: Path, catalog: Catalog
) -> None:
    ruleset, errors = check_directory(shipped_rules(tmp_path), catalog)
    assert errors == [] and ruleset is not None
    schedule = ruleset.files[0].schedule
    assert schedule.timezone == "Europe/Berlin"
    assert [j.name for j in schedule.jobs] == ["reconcile", "training", "deltas"]
    deltas = schedule.job("deltas")
    assert deltas is not None and deltas.start is not None and deltas.until is not None
    assert deltas.start.year == deltas.until.year == 2026 and deltas.start < deltas.until


def test_rules_check_reports_schedule_mistakes_at_file_line_col_with_a_hint(
    tmp_path: Path, catalog: Catalog
) -> None:
    rules = with_schedule(
        tmp_path,
        "schedule:\n"
        "  timezone: Mars/Olympus\n"
        '  reconcile: {at: "25:00"}\n'
        "  training: {at: 03:00}\n"  # unquoted: YAML 1.1 reads 180, the time is kept as written
        "  deltas: {every: 1h, from: 2026-11-15, until: 2026-10-15}\n"
        "  backups: nightly\n",
    )
    ruleset, errors = check_directory(rules, catalog)
    assert ruleset is None
    lines = (rules / "benefits-2026.yaml").read_text().splitlines()
    first = next(n for n, line in enumerate(lines, 1) if line.startswith("schedule:"))
    found = [(e.mark.line - first, e.mark.column, e.message) for e in errors]
    assert found == [
        (1, 13, "unknown time zone 'Mars/Olympus'"),
        (2, 19, "bad time '25:00'"),
        (4, 29, "`from` 2026-11-15 is after `until` 2026-10-15"),
        (5, 12, "unknown scheduled job 'backups'"),
    ]
    assert all(e.hint for e in errors)
    assert all(e.mark.file.endswith("benefits-2026.yaml") for e in errors)


def test_an_unquoted_time_is_read_as_written(tmp_path: Path, catalog: Catalog) -> None:
    rules = with_schedule(tmp_path, "schedule:\n  reconcile: {at: 02:30}\n  deltas: hourly\n")
    ruleset, errors = check_directory(rules, catalog)
    assert errors == [] and ruleset is not None
    reconcile = ruleset.files[0].schedule.job("reconcile")
    assert reconcile is not None and reconcile.at == time(2, 30)
