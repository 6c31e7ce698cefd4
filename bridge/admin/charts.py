"""The training report's two charts as geometry for inline SVG (pure): completion per
department as 100 % stacked bars, and how old the completion readings are as a histogram.

The templates draw what these return; no chart library, no script (the page has none).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

SEGMENTS = (
    ("complete", "complete"),
    ("in_progress", "in progress"),
    ("not_started", "not started"),
    ("not_read", "not read yet"),
    ("error", "read failed"),
    ("not_enrolled", "not enrolled"),
)
"""Statuses in the order the bars stack them, with their legend."""

AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("< 1 h", timedelta(hours=1)),
    ("1–24 h", timedelta(days=1)),
    ("1–7 d", timedelta(days=7)),
    ("7–30 d", timedelta(days=30)),
    ("> 30 d", None),
)
NEVER = "never read"


@dataclass(frozen=True)
class Segment:
    status: str
    label: str
    count: int
    x: float
    width: float


@dataclass(frozen=True)
class Bar:
    """One department's row: its segments left to right, and the share complete."""

    name: str
    y: float
    total: int
    complete_percent: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Column:
    label: str
    count: int
    x: float
    y: float
    width: float
    height: float


def completion_bars(
    groups: Mapping[str, Mapping[str, int]], *, width: float = 420.0, row: float = 24.0
) -> list[Bar]:
    """One 100 % stacked bar per group (a department), from the report's counts per group."""
    bars = []
    for index, (name, counts) in enumerate(groups.items()):
        total = sum(counts.get(status, 0) for status, _ in SEGMENTS)
        x = 0.0
        segments = []
        for status, label in SEGMENTS:
            count = counts.get(status, 0)
            if not count:
                continue
            share = width * count / total
            segments.append(Segment(status, label, count, round(x, 2), round(share, 2)))
            x += share
        complete = counts.get("complete", 0)
        bars.append(
            Bar(
                name=name,
                y=index * row,
                total=total,
                complete_percent=round(100 * complete / total) if total else 0,
                segments=tuple(segments),
            )
        )
    return bars


def age_bucket(age: timedelta | None) -> str:
    """The histogram column a reading of this age falls in (None: never read)."""
    if age is None:
        return NEVER
    for label, limit in AGE_BUCKETS:
        if limit is None or age < limit:
            return label
    raise AssertionError("the last bucket has no limit")


def freshness_columns(
    ages: Iterable[timedelta | None], *, height: float = 120.0, width: float = 60.0
) -> list[Column]:
    """One column per age bucket (and one for never read), heights scaled to the tallest."""
    labels = [label for label, _ in AGE_BUCKETS] + [NEVER]
    counts = dict.fromkeys(labels, 0)
    for age in ages:
        counts[age_bucket(age)] += 1
    tallest = max(counts.values()) or 1
    columns = []
    for index, label in enumerate(labels):
        tall = height * counts[label] / tallest
        columns.append(
            Column(
                label=label,
                count=counts[label],
                x=index * (width + 10),
                y=round(height - tall, 2),
                width=width,
                height=round(tall, 2),
            )
        )
    return columns
