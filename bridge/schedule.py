"""The ``schedule:`` of a rule file: which jobs run when, as plain data, and their occurrences.

Pure and clock-free: ``parse`` turns the YAML's plain values into a ``Schedule`` (or problems,
each with the key path it is about, for the loader to place at file:line:col); ``occurrences``,
``next_occurrence`` and ``latest_due`` answer in aware UTC datetimes for any instant given.

A job runs ``at`` a local time each day (``nightly`` = at 02:00) or ``every`` an interval
(``hourly`` = every 1h), optionally only on the local days ``from`` … ``until`` (inclusive).
Days are counted in the schedule's ``timezone`` (zoneinfo, default UTC), so DST changes
are safe: a local time that does not exist that day (spring forward) runs once, at the
instant the clock jumps to (02:30 → 03:30); one that happens twice (fall back) runs once,
the first time. ``every`` is elapsed time from local midnight of the window's first day (or
of 2000-01-01), so an hourly job runs every 60 minutes across a change too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError

JOBS = ("reconcile", "deltas", "training")
"""``reconcile``: drift reconcile of the rule file's target, applied; ``deltas``: plan + apply
of the rule file's changes; ``training``: completion read back from the LMS."""
SHORT_FORMS = {"nightly": "at 02:00", "hourly": "every 1h"}
DAY = timedelta(days=1)
MIN_EVERY = timedelta(minutes=1)
_EPOCH = date(2000, 1, 1)
_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_EVERY = re.compile(r"^(\d+)\s*(m|min|h|d)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days"}
_JOB_KEYS = ("at", "every", "from", "until")


@dataclass(frozen=True)
class Job:
    """One scheduled job of a rule file: ``at`` a local time each day or ``every`` interval."""

    name: str
    timezone: str = "UTC"
    at: time | None = None
    every: timedelta | None = None
    start: date | None = None
    """``from``: the first local day it runs (None: always)."""
    until: date | None = None
    """The last local day it runs, inclusive (None: always)."""

    @property
    def period(self) -> timedelta:
        """How often it runs: a day, or the interval."""
        return self.every if self.every is not None else DAY

    def describe(self) -> str:
        when = f"at {self.at:%H:%M}" if self.at is not None else f"every {_interval(self.period)}"
        window = ""
        if self.start is not None or self.until is not None:
            window = f" from {self.start or '…'} until {self.until or '…'}"
        return f"{when} {self.timezone}{window}"


@dataclass(frozen=True)
class Schedule:
    """The jobs of one rule file (empty: nothing scheduled)."""

    timezone: str = "UTC"
    jobs: tuple[Job, ...] = ()

    def job(self, name: str) -> Job | None:
        return next((job for job in self.jobs if job.name == name), None)


@dataclass(frozen=True)
class Problem:
    """Why a schedule is refused, at ``path`` (keys from ``schedule:`` down), with a hint."""

    path: tuple[str, ...]
    message: str
    hint: str = ""


def _interval(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // 60}m"


def parse_at(value: object) -> time | None:
    """``"02:00"`` → 02:00; None when it is not a 24-hour ``HH:MM``."""
    found = _AT.match(value.strip()) if isinstance(value, str) else None
    return time(int(found.group(1)), int(found.group(2))) if found else None


def parse_every(value: object) -> timedelta | None:
    """``"1h"``, ``"30m"``, ``"1d"`` → the interval; None when it is none of those (or < 1m)."""
    found = _EVERY.match(value.strip()) if isinstance(value, str) else None
    if not found:
        return None
    interval = timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    return interval if interval >= MIN_EVERY else None


def _day(value: object) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def zone(name: str) -> ZoneInfo | None:
    """The IANA time zone called ``name``, or None when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _job(name: str, value: object, timezone: str, problems: list[Problem]) -> Job | None:
    path = (name,)
    if isinstance(value, str):
        if value in ("nightly", "daily"):
            return Job(name, timezone, at=time(2, 0))
        if value == "hourly":
            return Job(name, timezone, every=timedelta(hours=1))
        problems.append(
            Problem(
                path,
                f"unknown schedule {value!r} for {name}",
                hint='nightly, hourly, or {at: "02:00"} / {every: 1h} with optional from/until',
            )
        )
        return None
    if not isinstance(value, Mapping):
        problems.append(
            Problem(path, f"{name} must be nightly, hourly or a mapping", hint='{at: "02:00"}')
        )
        return None
    ok = True
    for key in value:
        if key not in _JOB_KEYS:
            problems.append(
                Problem(
                    (*path, str(key)),
                    f"unknown key {key!r} in schedule of {name}",
                    hint=f"one of {', '.join(_JOB_KEYS)}",
                )
            )
            ok = False
    at = every = None
    if "at" in value:
        at = parse_at(value["at"])
        if at is None:
            problems.append(
                Problem(
                    (*path, "at"),
                    f"bad time {value['at']!r}",
                    hint='a 24-hour local time in quotes: at: "02:00"',
                )
            )
            ok = False
    if "every" in value:
        every = parse_every(value["every"])
        if every is None:
            problems.append(
                Problem(
                    (*path, "every"),
                    f"bad interval {value['every']!r}",
                    hint="a number and a unit, at least a minute: 15m, 1h, 1d",
                )
            )
            ok = False
    if ("at" in value) == ("every" in value):
        problems.append(
            Problem(path, f"{name} needs one of `at` or `every`", hint='at: "02:00" or every: 1h')
        )
        ok = False
    window: dict[str, date | None] = {}
    for key in ("from", "until"):
        window[key] = None
        if key in value:
            window[key] = _day(value[key])
            if window[key] is None:
                problems.append(
                    Problem((*path, key), f"bad date {value[key]!r}", hint="YYYY-MM-DD")
                )
                ok = False
    start, until = window["from"], window["until"]
    if start is not None and until is not None and start > until:
        problems.append(
            Problem(
                (*path, "from"),
                f"`from` {start} is after `until` {until}",
                hint="the window runs from its first day to its last, inclusive",
            )
        )
        ok = False
    return Job(name, timezone, at, every, start, until) if ok else None


def parse_job(name: str, value: object, timezone: str = "UTC") -> tuple[Job | None, list[Problem]]:
    """One job's ``when`` outside a rule file's ``schedule:`` (a feed's ``export.schedule``):
    ``nightly``, ``hourly``, ``{at: "02:00"}`` or ``{every: 1h}``, with ``from``/``until``;
    ``timezone`` is known (``zone_problem``). Problem paths are below the job's value."""
    problems: list[Problem] = []
    job = _job(name, value, timezone, problems)
    return job, [Problem(p.path[1:], p.message, p.hint) for p in problems]


def zone_problem(named: object) -> Problem | None:
    """Why ``named`` is not a time zone (at the key ``timezone``); None when it is one."""
    if isinstance(named, str) and zone(named) is not None:
        return None
    return Problem(
        ("timezone",),
        f"unknown time zone {named!r}",
        hint="an IANA name: Europe/Berlin, America/New_York, UTC",
    )


def parse(value: object) -> tuple[Schedule, list[Problem]]:
    """A rule file's ``schedule:`` (plain YAML values) → the Schedule and every problem."""
    problems: list[Problem] = []
    if value is None:
        return Schedule(), problems
    if not isinstance(value, Mapping):
        problems.append(
            Problem((), "schedule must be a mapping of job → when", hint="reconcile: nightly")
        )
        return Schedule(), problems
    timezone = "UTC"
    if "timezone" in value:
        wrong = zone_problem(value["timezone"])
        if wrong is not None:
            problems.append(wrong)
        else:
            timezone = str(value["timezone"])
    jobs = []
    for name, when in value.items():
        if name == "timezone":
            continue
        if name not in JOBS:
            problems.append(
                Problem(
                    (str(name),),
                    f"unknown scheduled job {name!r}",
                    hint=f"one of {', '.join(JOBS)} (or timezone)",
                )
            )
            continue
        job = _job(str(name), when, timezone, problems)
        if job is not None:
            jobs.append(job)
    return Schedule(timezone, tuple(jobs)), problems


# -- occurrences -------------------------------------------------------------------------------


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """``at`` on local ``day`` as UTC: fold=0 takes the first of a repeated time, and a time
    the clock skips maps to the instant after the jump (the offset before it, applied)."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _days(job: Job, first: date, last: date) -> Iterator[date]:
    day = max(first, job.start) if job.start is not None else first
    end = min(last, job.until) if job.until is not None else last
    while day <= end:
        yield day
        day += DAY


def _window(job: Job, tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """The window as UTC instants: [local midnight of ``from``, local midnight after
    ``until``)."""
    begin = _local(job.start, time(0), tz) if job.start is not None else None
    end = _local(job.until + DAY, time(0), tz) if job.until is not None else None
    return begin, end


def occurrences(job: Job, after: datetime, before: datetime) -> list[datetime]:
    """Every time ``job`` runs with ``after < t <= before``, in order (aware, UTC)."""
    tz = ZoneInfo(job.timezone)
    after, before = after.astimezone(UTC), before.astimezone(UTC)
    if before <= after:
        return []
    if job.at is not None:
        first = after.astimezone(tz).date() - DAY
        last = before.astimezone(tz).date() + DAY
        found = (_local(day, job.at, tz) for day in _days(job, first, last))
        return [t for t in found if after < t <= before]
    assert job.every is not None
    begin, end = _window(job, tz)
    anchor = begin if begin is not None else _local(_EPOCH, time(0), tz)
    low = max(after, begin - timedelta(microseconds=1)) if begin is not None else after
    high = min(before, end - timedelta(microseconds=1)) if end is not None else before
    if high <= low:
        return []
    step = job.every
    count = (low - anchor) // step + 1
    out = []
    t = anchor + count * step
    while t <= high:
        if t > low:
            out.append(t)
        t += step
    return out


def next_occurrence(job: Job, after: datetime) -> datetime | None:
    """The first time ``job`` runs after ``after``; None when its window is over."""
    horizon = max(job.period, DAY) * 2
    tz = ZoneInfo(job.timezone)
    begin, end = _window(job, tz)
    if end is not None and after >= end:
        return None
    if begin is not None and after < begin:
        after_begin = begin - timedelta(microseconds=1)
        found = occurrences(job, after_begin, after_begin + horizon)
    else:
        found = occurrences(job, after, after + horizon)
    return found[0] if found else None


def latest_due(job: Job, now: datetime) -> datetime | None:
    """The last time ``job`` was due at ``now``, if no longer ago than one period: the one
    occurrence a scheduler that was down (or busy) runs late; earlier ones are not run.
    (A local day is 23 to 25 hours long: a daily job looks back 25.)"""
    lookback = job.period if job.at is None else DAY + timedelta(hours=1)
    found = occurrences(job, now - lookback, now)
    return found[-1] if found else None
