"""Freshness and error figures of the changes the bridge owes the LMS (``bridge stats``).

A *change* is one outbox row: one LMS call a write implies. It is *written* when the SCIM
write committed — the time of the journal entry its ``journal_seq`` names, written in that
write's own transaction — or, for a row without one (a plan applied by ``bridge apply``), when
the row itself was written (``created``, in the apply's transaction). It is *confirmed* at
``delivered_at``, when the relay settled the LMS's answer. Its latency is confirmed − written.

Every figure is an SQL aggregate, percentiles included (window functions, nearest rank), so a
few rows come back however many changes there are and memory stays flat. Neither database
offers a percentile both can run (SQLite has none), hence the ranks by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import Float
from sqlalchemy import Integer
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import case
from sqlalchemy import cast
from sqlalchemy import extract
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import null
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import true

from bridge.store.raw import read_time
from bridge.store.tables import JournalRow
from bridge.store.tables import OutboxRow

OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
JOURNAL = JournalRow.__table__  # type: ignore[attr-defined]

FORMAT = "bridge-stats/1"
"""The ``--json`` format (documented in ``bridge.cli.stats``)."""
PERCENTILES = (50, 95, 99)
CATEGORIES = ("data_quality", "configuration", "transient")
"""The three error categories (``bridge.targets.base.Category``), in the order reports show them."""

OUTCOMES = {
    "done": "delivered",
    "dead": "dead",
    "skipped": "skipped",
    "pending": "pending",
    "running": "pending",  # claimed and being sent now: not confirmed yet
    "retry": "retrying",
    "quarantined": "quarantined",
}
"""Outbox status → outcome; a status not named here is reported under its own name."""
OPEN = ("pending", "retrying", "quarantined", "dead")
"""Outcomes of a change still to make: shown whatever their age (``Open``)."""

_DELIVERY = ("deliver.done", "deliver.retry", "deliver.dead", "deliver.wait")
_DEAD_OP = "deliver.dead"
_FINAL_FAILURES = ("dead", "skipped")


# -- the figures, as plain data -------------------------------------------------------------------


@dataclass
class Open:
    """Changes in one open outcome now, of any age: how many, how many before the window, and
    when the oldest was written."""

    count: int = 0
    before_window: int = 0
    oldest: datetime | None = None

    def add(self, count: int, in_window: int, oldest: datetime | None) -> None:
        self.count += count
        self.before_window += count - in_window
        if oldest is not None and (self.oldest is None or oldest < self.oldest):
            self.oldest = oldest

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "count": self.count,
            "before_window": self.before_window,
            "oldest_written_at": self.oldest.isoformat() if self.oldest else None,
            "oldest_age_seconds": _seconds((now - self.oldest).total_seconds())
            if self.oldest
            else None,
        }


@dataclass
class Figures:
    """The figures of one target (or of all): see ``bridge.cli.stats`` for each definition."""

    outcomes: Counter[str] = field(default_factory=Counter)
    """Changes written in the window, by outcome."""
    open: dict[str, Open] = field(default_factory=lambda: {name: Open() for name in OPEN})
    confirmed: int = 0
    """Delivered changes of the window whose confirmation time is known (the latency's n)."""
    latency: dict[str, float] = field(default_factory=dict)
    """``p50``, ``p95``, ``p99``, ``max``: seconds (nearest rank)."""
    failed: Counter[str] = field(default_factory=Counter)
    """Changes of the window that dead-lettered at least once, by their last dead letter's
    category."""
    failed_unconfirmed: int = 0
    """Of ``failed``, those not delivered since (dead, skipped, or sent again and waiting)."""
    attempts: int = 0
    failed_attempts: Counter[str] = field(default_factory=Counter)
    waits: int = 0
    """Of ``failed_attempts``, those that met an outage or a failing preflight (not charged)."""

    @property
    def changes(self) -> int:
        return sum(self.outcomes.values())

    @property
    def decided(self) -> int:
        """Changes with an outcome: delivered, or dead-lettered at least once."""
        return self.outcomes["delivered"] + self.failed_unconfirmed

    def as_dict(self, now: datetime) -> dict[str, Any]:
        outcomes = {name: 0 for name in dict.fromkeys(OUTCOMES.values())}
        outcomes.update(self.outcomes)
        return {
            "changes": self.changes,
            "outcomes": outcomes,
            "latency_seconds": {
                "confirmed": self.confirmed,
                "unknown": self.outcomes["delivered"] - self.confirmed,
                **{name: self.latency.get(name) for name in (*_names(PERCENTILES), "max")},
            },
            "open": {name: found.as_dict(now) for name, found in self.open.items()},
            "errors": {
                "decided": self.decided,
                "changes": _by_category(self.failed),
                "per_1000": _per_1000(self.failed, self.decided),
            },
            "attempts": {
                "total": self.attempts,
                "failed": _by_category(self.failed_attempts),
                "waits": self.waits,
                "per_1000": _per_1000(self.failed_attempts, self.attempts),
            },
        }


@dataclass
class Stats:
    """Figures per target and over all of them, as of ``now``, for changes written since
    ``since`` (None: ever)."""

    now: datetime
    since: datetime | None
    target: str | None
    total: Figures = field(default_factory=Figures)
    targets: dict[str, Figures] = field(default_factory=dict)

    def each(self, target: str) -> Iterable[Figures]:
        """The figures a row of ``target`` counts in: its own and the total."""
        yield self.targets.setdefault(target, Figures())
        yield self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "generated_at": self.now.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "target": self.target,
            "total": self.total.as_dict(self.now),
            "targets": {
                name: self.targets[name].as_dict(self.now) for name in sorted(self.targets)
            },
        }


def _names(percentiles: Iterable[int]) -> list[str]:
    return [f"p{p}" for p in percentiles]


def _seconds(value: float) -> float:
    # SQLite keeps milliseconds of a time through julianday(); so does every figure.
    return round(value, 3)


def _by_category(counts: Mapping[str, int]) -> dict[str, int]:
    found = {name: counts.get(name, 0) for name in CATEGORIES}
    found.update({name: n for name, n in counts.items() if name not in found})
    found["total"] = sum(counts.values())
    return found


def _per_1000(counts: Mapping[str, int], out_of: int) -> dict[str, float] | None:
    if not out_of:
        return None
    return {name: round(1000 * n / out_of, 2) for name, n in _by_category(counts).items()}


def rank(percentile: int, n: int) -> int:
    """The nearest rank of a percentile among ``n`` sorted values: ⌈p·n/100⌉ (1-based)."""
    return (percentile * n + 99) // 100


def attempt_category(op: str, category: str | None, lms_status: str | None) -> str | None:
    """The category of one failed delivery attempt (a ``deliver.*`` journal entry); None for a
    success. A retry is transient; a wait (not charged) is transient, or configuration when
    the target's preflight failed (the LMS refused the call as misconfigured)."""
    if op == "deliver.done":
        return None
    if op == "deliver.dead":
        return category or "unknown"
    if op == "deliver.wait" and lms_status == "dead":
        return "configuration"
    return "transient"


# -- the queries ----------------------------------------------------------------------------------


class _Window:
    """The SQL of one report: written time, the window, the dialect's few differences."""

    def __init__(self, conn: Connection, since: datetime | None, target: str | None) -> None:
        self.sqlite = conn.dialect.name == "sqlite"
        self.written_entry = JOURNAL.alias("written_entry")
        self.source = OUTBOX.outerjoin(
            self.written_entry, self.written_entry.c.seq == OUTBOX.c.journal_seq
        )
        self.written = func.coalesce(self.written_entry.c.at, OUTBOX.c.created)
        self.since = since.astimezone(UTC) if since is not None else None
        self.target = target

    def within(self) -> Any:
        """Changes written in the window (and of the target asked for)."""
        terms = [] if self.since is None else [self.written >= self.since]
        if self.target is not None:
            terms.append(OUTBOX.c.target == self.target)
        return and_(true(), *terms)

    def of_target(self) -> Any:
        return true() if self.target is None else OUTBOX.c.target == self.target

    def latency(self) -> Any:
        """Seconds from written to confirmed, as a float on both databases."""
        if self.sqlite:
            days = func.julianday(OUTBOX.c.delivered_at) - func.julianday(self.written)
            return days * 86400.0
        return cast(extract("epoch", OUTBOX.c.delivered_at - self.written), Float)

    def detail(self, table: Any, *keys: str) -> Any:
        """A text value inside a journal entry's ``detail``."""
        if self.sqlite:
            return func.json_extract(table.c.detail, "$." + ".".join(keys))
        return func.jsonb_extract_path_text(table.c.detail, *keys)


def _outcomes(w: _Window) -> Select[Any]:
    in_window = literal(True) if w.since is None else w.written >= w.since
    return (
        select(
            OUTBOX.c.target,
            OUTBOX.c.status,
            func.count().label("changes"),
            func.count().filter(in_window).label("in_window"),
            func.min(w.written).label("oldest"),
            func.count(OUTBOX.c.delivered_at).filter(in_window).label("confirmed"),
        )
        .select_from(w.source)
        .where(w.of_target())
        .group_by(OUTBOX.c.target, OUTBOX.c.status)
    )


def _latencies(w: _Window, *, per_target: bool) -> Select[Any]:
    """The latencies at the ranks of the percentiles and of the maximum, per target or over all."""
    measured = (
        select(OUTBOX.c.target.label("target"), w.latency().label("seconds"))
        .select_from(w.source)
        .where(OUTBOX.c.status == "done", OUTBOX.c.delivered_at.isnot(None), w.within())
        .subquery("measured")
    )
    partition = [measured.c.target] if per_target else []
    ranked = select(
        (measured.c.target if per_target else null()).label("target"),
        measured.c.seconds,
        func.row_number()
        .over(partition_by=partition, order_by=measured.c.seconds)
        .label("position"),
        func.count().over(partition_by=partition).label("n"),
    ).subquery("ranked")
    wanted = [ranked.c.position == (p * ranked.c.n + 99) // 100 for p in PERCENTILES]
    return select(ranked.c.target, ranked.c.n, ranked.c.position, ranked.c.seconds).where(
        or_(*wanted, ranked.c.position == ranked.c.n)
    )


def _attempts(w: _Window) -> Select[Any]:
    """Delivery attempts (``deliver.*`` journal entries) on changes of the window.

    The entries are counted per outbox row first, so the database can look them up from the
    outbox side too (SQLite: an automatic index), whichever side it starts from.
    """
    entry = JOURNAL.alias("attempt")
    outbox_id = cast(entry.c.request_id, Integer).label("outbox_id")
    category = w.detail(entry, "category").label("category")
    lms_status = w.detail(entry, "lms", "status").label("lms_status")
    tried = (
        select(outbox_id, entry.c.op, category, lms_status, func.count().label("n"))
        .where(entry.c.op.in_(_DELIVERY))
        .group_by(entry.c.request_id, entry.c.op, category, lms_status)
        .subquery("tried")
    )
    return (
        select(
            OUTBOX.c.target,
            tried.c.op,
            tried.c.category,
            tried.c.lms_status,
            func.sum(tried.c.n).label("attempts"),
        )
        .select_from(w.source.join(tried, tried.c.outbox_id == OUTBOX.c.id))
        .where(w.within())
        .group_by(OUTBOX.c.target, tried.c.op, tried.c.category, tried.c.lms_status)
    )


def _failed(w: _Window) -> Select[Any]:
    """Changes of the window that dead-lettered at least once, with the category of their last
    dead letter (the row's own while it is dead or skipped) and their status now."""
    entry = JOURNAL.alias("dead_entry")
    dead = (
        select(
            cast(entry.c.request_id, Integer).label("outbox_id"),
            func.max(entry.c.seq).label("last"),
        )
        .where(entry.c.op == _DEAD_OP)
        .group_by(entry.c.request_id)
        .subquery("dead")
    )
    last = JOURNAL.alias("last_dead")
    category = case(
        (OUTBOX.c.status.in_(_FINAL_FAILURES), OUTBOX.c.category), else_=w.detail(last, "category")
    )
    changes = (
        select(
            OUTBOX.c.target.label("target"),
            OUTBOX.c.status.label("status"),
            category.label("category"),
        )
        .select_from(
            w.source.outerjoin(dead, dead.c.outbox_id == OUTBOX.c.id).outerjoin(
                last, last.c.seq == dead.c.last
            )
        )
        .where(w.within(), or_(OUTBOX.c.status.in_(_FINAL_FAILURES), dead.c.last.isnot(None)))
        .subquery("failed")
    )
    return select(
        changes.c.target, changes.c.status, changes.c.category, func.count().label("changes")
    ).group_by(changes.c.target, changes.c.status, changes.c.category)


def read(
    conn: Connection, *, now: datetime, since: datetime | None = None, target: str | None = None
) -> Stats:
    """The figures of changes written since ``since`` (None: ever), of one target or all,
    read in one transaction (a consistent snapshot on both databases)."""
    if conn.dialect.name != "sqlite" and not conn.in_transaction():
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    w = _Window(conn, since, target)
    stats = Stats(now=now, since=w.since, target=target)
    for row in conn.execute(_outcomes(w)):
        outcome = OUTCOMES.get(row.status, row.status)
        oldest = read_time(row.oldest) if row.oldest is not None else None
        for figures in stats.each(row.target):
            if row.in_window:
                figures.outcomes[outcome] += row.in_window
            if outcome in figures.open:
                figures.open[outcome].add(row.changes, row.in_window, oldest)
            if outcome == "delivered":
                figures.confirmed += row.confirmed
    for per_target in (True, False):
        for row in conn.execute(_latencies(w, per_target=per_target)):
            figures = stats.targets.setdefault(row.target, Figures()) if per_target else stats.total
            seconds = _seconds(float(row.seconds))
            for p in PERCENTILES:
                if row.position == rank(p, row.n):
                    figures.latency[f"p{p}"] = seconds
            if row.position == row.n:
                figures.latency["max"] = seconds
    for row in conn.execute(_attempts(w)):
        failure = attempt_category(row.op, row.category, row.lms_status)
        for figures in stats.each(row.target):
            figures.attempts += int(row.attempts)
            if failure is not None:
                figures.failed_attempts[failure] += int(row.attempts)
            if row.op == "deliver.wait":
                figures.waits += int(row.attempts)
    for row in conn.execute(_failed(w)):
        for figures in stats.each(row.target):
            figures.failed[row.category or "unknown"] += row.changes
            if row.status != "done":
                figures.failed_unconfirmed += row.changes
    return stats
