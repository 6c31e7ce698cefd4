"""``bridge stats``: how fresh the LMS is and how often changes fail, per target and in total —
the before/after figures of the integration guide ("errors and stale data").

Definitions (computed by ``bridge.store.stats``, in SQL):

- A **change** is one outbox row: one LMS call a write implies. It is **written** when the
  SCIM write committed (the time of its journal entry, written in the same transaction); a
  row a plan applied (``bridge apply``: no journal entry) is timed from the row's own
  ``created``, the apply's transaction. ``--since`` selects changes written since then (with
  ``--target``, of one target); the window ends now.
- **Latency** = LMS confirmation (the outbox row's ``delivered_at``, when the relay settled
  the LMS's answer) − written, over the window's delivered changes; p50/p95/p99/max by
  nearest rank (p95: the smallest latency within which at least 95 % were confirmed).
- **Outcomes**: delivered, dead (a dead letter: still to make), skipped (a dead letter given
  up), pending (queued or being sent), retrying, quarantined (waits for ``bridge approve``).
- **Open**: changes still to make now — pending, retrying, quarantined, dead — *whatever their
  age*, with how many were written before the window and the age of the oldest: a change
  still waiting is never left out because it is old.
- **Errors per 1,000 changes**, by category: changes that dead-lettered at least once (dead
  now, skipped, or sent again since: the category of their last dead letter) per 1,000
  *decided* changes — delivered, or dead-lettered at least once. A change still waiting for
  its first outcome is counted in neither.
- **Failed attempts per 1,000 attempts**: every delivery attempt on the window's changes (the
  journal's ``deliver.*`` entries): a retry is transient; a dead letter has its category; a
  wait (the target unreachable or failing preflight: not charged to the change) is
  transient, or configuration when its preflight failed. ``waits`` counts those.

``--json`` prints ``bridge-stats/1``::

    {"format": "bridge-stats/1", "generated_at": ISO, "since": ISO | null, "target": str | null,
     "total": FIGURES, "targets": {name: FIGURES}}
    FIGURES = {
      "changes": int,
      "outcomes": {"delivered", "dead", "skipped", "pending", "retrying", "quarantined": int,
                   any other outbox status: int},
      "latency_seconds": {"confirmed": int, "unknown": int (delivered, no confirmation time),
                          "p50", "p95", "p99", "max": float | null},
      "open": {"pending" | "retrying" | "quarantined" | "dead": {"count", "before_window": int,
               "oldest_written_at": ISO | null, "oldest_age_seconds": float | null}},
      "errors": {"decided": int, "changes": {"data_quality", "configuration", "transient",
                 "total": int}, "per_1000": {same keys: float} | null},
      "attempts": {"total": int, "failed": {same keys: int}, "waits": int,
                   "per_1000": {same keys: float} | null}}

Exits 0 (a report); a ``--since`` it cannot read is a usage error (2).
"""

from __future__ import annotations

import json
import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.settings import load_settings
from bridge.provision.resources import now_utc
from bridge.store import stats
from bridge.targets.base import GUIDE_TERMS
from bridge.targets.base import Category

_DURATION = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_OPEN_TITLES = {
    "pending": "pending (queued or being sent)",
    "retrying": "retrying",
    "quarantined": "quarantined (`bridge approve`)",
    "dead": "dead letters (`bridge errors`)",
}


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: a duration back from now (``90m``, ``24h``, ``7d``, ``2w``, ``1d12h``), an
    ISO date (midnight UTC) or an ISO date-time (UTC unless it says otherwise)."""
    value = text.strip()
    if value and _DURATION.sub("", value) == "":
        back = timedelta()
        for amount, unit in _DURATION.findall(value):
            back += timedelta(**{_UNITS[unit]: int(amount)})
        return now - back
    try:
        found = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither a duration (24h, 7d, 2w, 90m) nor an ISO date or date-time"
        ) from exc
    found = found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
    if found > now:
        raise ValueError(f"{text!r} is in the future")
    return found


def duration(seconds: float | None) -> str:
    """Seconds for people: ``850ms``, ``12.3s``, ``4m05s``, ``3h04m``, ``2d03h``."""
    if seconds is None:
        return "-"
    sign, value = ("-" if seconds < 0 else ""), abs(seconds)
    if value < 1:
        return f"{sign}{value * 1000:.0f}ms"
    if value < 60:
        return f"{sign}{value:.1f}s"
    whole = int(value)
    if whole < 3600:
        return f"{sign}{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{sign}{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{sign}{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _rate(per_1000: dict[str, float] | None, name: str) -> str:
    return "-" if per_1000 is None else f"{per_1000[name]:g}"


def _rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One row per target, and one for all of them when there are several."""
    rows = list(report["targets"].items())
    if len(rows) > 1:
        rows.append(("all targets", report["total"]))
    return rows


def _freshness(report: dict[str, Any]) -> Table:
    table = Table(
        "target",
        "changes",
        "delivered",
        "p50",
        "p95",
        "p99",
        "max",
        "pending",
        "retrying",
        "quarantined",
        "dead",
        "skipped",
        title="Freshness: SCIM write → LMS confirmation",
    )
    for name, figures in _rows(report):
        out, latency = figures["outcomes"], figures["latency_seconds"]
        table.add_row(
            escape(name),
            str(figures["changes"]),
            str(out["delivered"]),
            *(duration(latency[p]) for p in ("p50", "p95", "p99", "max")),
            *(str(out[k]) for k in ("pending", "retrying", "quarantined", "dead", "skipped")),
        )
    return table


def _errors(report: dict[str, Any]) -> Table:
    table = Table(
        "target",
        "decided",
        *(f"{name} /1,000" for name in stats.CATEGORIES),
        "total /1,000",
        "attempts",
        "failed /1,000 attempts",
        "waits",
        title="Errors per 1,000 changes (dead-lettered at least once), by category",
    )
    for name, figures in _rows(report):
        errors, attempts = figures["errors"], figures["attempts"]
        table.add_row(
            escape(name),
            str(errors["decided"]),
            *(
                f"{_rate(errors['per_1000'], c)} ({errors['changes'][c]})"
                for c in (*stats.CATEGORIES, "total")
            ),
            str(attempts["total"]),
            f"{_rate(attempts['per_1000'], 'total')} ({attempts['failed']['total']})",
            str(attempts["waits"]),
        )
    return table


def _open_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, figures in _rows(report):
        for state, found in figures["open"].items():
            if not found["count"]:
                continue
            before = found["before_window"]
            lines.append(
                f"  {name} — {_OPEN_TITLES[state]}: {found['count']}, the oldest written "
                f"{duration(found['oldest_age_seconds'])} ago ({found['oldest_written_at']})"
                + (f"; {before} written before the window" if before else "")
            )
    return lines or ["  none"]


def render(report: dict[str, Any], console: Console) -> None:
    """The report for people: freshness, what is still to make, the error rates."""
    window = f"since {report['since']}" if report["since"] else "ever"
    scope = f"target {report['target']}" if report["target"] else "all targets"
    console.print(
        escape(f"Changes written {window} ({scope}), as of {report['generated_at']}"),
        highlight=False,
    )
    if not report["targets"]:
        console.print("no changes", highlight=False)
        return
    console.print(_freshness(report))
    console.print("Still to make now, whatever their age:", highlight=False)
    console.print(escape("\n".join(_open_lines(report))), highlight=False)
    console.print(_errors(report))
    legend = [
        "decided: delivered, or dead-lettered at least once; a rate is of decided changes "
        "(count in brackets). Attempts: every delivery attempt on these changes; waits met "
        "an outage or a failing preflight and were not charged to the change.",
        *(f"{c}: {GUIDE_TERMS[Category(c)]}" for c in stats.CATEGORIES),
    ]
    console.print(escape("\n".join(legend)), highlight=False)


@click.command(name="stats")
@click.option(
    "--since",
    "since_text",
    default=None,
    metavar="WHEN",
    help="Changes written since: a duration (24h, 7d, 2w) or an ISO date / date-time (UTC).",
)
@click.option("--target", default=None, help="One target's changes only.")
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON (bridge-stats/1).")
def stats_command(since_text: str | None, target: str | None, as_json: bool) -> None:
    """Freshness (p50/p95/p99 of SCIM write → LMS confirmation), what is still to make, and
    errors per 1,000 changes by category, per target and in total. Exits 0 (a report)."""
    now = now_utc()
    since = None
    if since_text is not None:
        try:
            since = parse_since(since_text, now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from exc
    with database(load_settings()) as db, db.read() as conn:
        report = stats.read(conn, now=now, since=since, target=target).as_dict()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        render(report, Console())
