"""``bridge training``: who must take each course, who is enrolled, started, complete, overdue.

Reports from the completion the bridge last read (``training_status``) joined with desired
(the rules' projection) and confirmed (``links.confirmed``) state — definitions in
``bridge.provision.training``. ``--refresh`` first reads completion from the LMS for every
confirmed course enrolment the bridge made (one call per person and course, at most
``--concurrency`` at a time per target; Moodle: ``core_completion_get_course_completion_status``,
which the token's service must hold; Canvas: the course progress API) and stores each answer,
failures included, with when it was read. Without it the report says how old the readings are.

``--json`` prints ``bridge-training/1``::

    {"format": "bridge-training/1", "generated_at": ISO, "as_of": DATE, "course": str | null,
     "overdue_only": bool,
     "read": {"oldest": ISO | null, "newest": ISO | null,
              "refreshed": {"read": int, "failed": int} | null (no --refresh)},
     "totals": COUNTS, "courses": {course: COUNTS},
     "by": "department" | "role_code" | null, "groups": {name: COUNTS} | null,
     "people": [ROW]}
    COUNTS = {"desired", "enrolled", "not_enrolled", "not_read", "error", "not_started",
              "in_progress", "complete", "started", "overdue": int}
    ROW = {"person": SCIM id, "userName", "externalId", "department": str | null,
           "role_codes": [str], "target", "course", "rule": str | null, "desired": bool,
           "enrolled": bool, "enrolled_at": ISO | null, "due": DATE | null,
           "status": "not_enrolled" | "not_read" | "error" | "not_started" | "in_progress"
                     | "complete",
           "overdue": bool, "started_at", "completed_at", "read_at": ISO | null,
           "error": str | null}

``--csv`` prints one line per person and course with ROW's fields (role codes joined by
``;``). Rows are sorted by course, target, userName.

Exit codes: 0 a report with no read error; 1 when a person's completion could not be read
(this refresh or the stored one: the ``error`` rows of the ``--course`` selected), or the
rules or a target cannot be loaded; 2 a usage error.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import date
from datetime import datetime
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.provision.resources import now_utc
from bridge.provision.training import COUNTS
from bridge.provision.training import ReadRefused
from bridge.provision.training import Report
from bridge.provision.training import Training
from bridge.provision.training import TrainingRow
from bridge.provision.training import counts
from bridge.provision.training import grouped
from bridge.provision.training import refresh_targets
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory as check_rules
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet

FIELDS = (
    "person", "userName", "externalId", "department", "role_codes", "target", "course",
    "rule", "desired", "enrolled", "enrolled_at", "due", "status", "overdue", "started_at",
    "completed_at", "read_at", "error",
)  # fmt: skip


async def _refresh(
    training: Training, ruleset: RuleSet, now: datetime, concurrency: int
) -> dict[str, int]:
    """Read every target's completion (``refresh_targets``); a refusal is a usage error."""
    try:
        return await refresh_targets(training.db, ruleset, os.environ, now, concurrency=concurrency)
    except ReadRefused as exc:
        raise click.ClickException(str(exc)) from exc


def _age(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


def render_csv(rows: list[TrainingRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        record = row.as_dict()
        record["role_codes"] = ";".join(row.role_codes)
        writer.writerow({k: "" if record[k] is None else record[k] for k in FIELDS})
    return out.getvalue()


def render_text(report: Report, console: Console) -> None:
    now = report.generated_at
    times = report.read_times
    if report.refreshed is not None:
        fresh = report.refreshed
        console.print(f"Read now: {fresh['read']} readings, {fresh['failed']} failed.")
    if times:
        console.print(
            f"Completion as read from the LMS {_age(times[0], now)} ago"
            + (f" (newest {_age(times[-1], now)} ago)" if times[-1] != times[0] else "")
            + "; `bridge training --refresh` reads it again."
        )
    elif report.rows:
        console.print("Completion never read: `bridge training --refresh` reads it.")
    totals = counts(report.rows)
    wanted = len({row.person for row in report.rows if row.desired})
    console.print(
        f"As of {report.as_of}: {wanted} people must take {totals['desired']} course(s) "
        f"between them; {totals['enrolled']} enrolled, {totals['started']} started, "
        f"{totals['complete']} complete, {totals['overdue']} overdue "
        f"({totals['not_enrolled']} not enrolled), {totals['error']} not readable."
    )
    if totals["not_enrolled"]:
        console.print("Not enrolled: `bridge explain PERSON` says why (pending, failed, blocked).")
    if report.by:
        table = Table(title=f"by {report.by}")
        table.add_column(report.by)
        for name in COUNTS:
            table.add_column(name.replace("_", " "), justify="right")
        for group, figures in grouped(report.rows, report.by).items():
            table.add_row(escape(group), *(str(figures[name]) for name in COUNTS))
        console.print(table)
        return
    table = Table()
    for title in ("person", "externalId", "department", "course", "status", "due", "overdue"):
        table.add_column(title)
    table.add_column("started")
    table.add_column("completed")
    table.add_column("read")
    table.add_column("error")
    for row in report.rows:
        table.add_row(
            escape(row.user_name),
            escape(row.external_id or ""),
            escape(row.department or ""),
            escape(row.course),
            row.status.replace("_", " "),
            row.due.isoformat() if row.due else "",
            "overdue" if row.overdue else "",
            _when(row.started_at),
            _when(row.completed_at),
            _when(row.read_at),
            escape(row.error or ""),
        )
    console.print(table)


@click.command(name="training")
@click.option("--course", help="Only this course (the rule's course ref).")
@click.option(
    "--overdue", "overdue_only", is_flag=True, help="Only the overdue (and the never enrolled)."
)
@click.option("--by", type=click.Choice(["department", "role_code"]), help="Counts per group.")
@click.option("--refresh", is_flag=True, help="Read completion from the LMS first.")
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Overdue as on this date (default today, UTC).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Reads at a time per target.",
)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    help="Rules directory (default BRIDGE_RULES).",
)
@click.option("--json", "as_json", is_flag=True, help="One bridge-training/1 JSON document.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one line per person and course.")
def training_command(
    course: str | None,
    overdue_only: bool,
    by: str | None,
    refresh: bool,
    as_of: datetime | None,
    concurrency: int,
    rules_dir: Path | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Who must take each course (desired), who is enrolled (confirmed), who started,
    completed, and who is overdue against the due date the bridge keeps."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv: choose one")
    settings = load_settings()
    now = now_utc()
    day: date = as_of.date() if as_of is not None else now.date()
    with database(settings) as db:
        training = Training(db)
        refreshed = None
        if refresh:
            catalog = load_schemas(settings)
            book = RuleBook(rules_dir or settings.rules_dir, lambda d: check_rules(d, catalog))
            try:
                ruleset = book.load()
            except RuleErrors as exc:
                click.echo(render_errors(exc.errors), err=True)
                sys.exit(1)
            refreshed = asyncio.run(_refresh(training, ruleset, now, concurrency))
        rows = training.rows(day)
    if course is not None:
        rows = [row for row in rows if row.course == course]
    failed = any(row.status == "error" for row in rows)
    if overdue_only:
        rows = [row for row in rows if row.overdue]
    report = Report(day, now, rows, course, overdue_only, by, refreshed)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    elif as_csv:
        click.echo(render_csv(rows), nl=False)
    else:
        render_text(report, Console(soft_wrap=False))
    sys.exit(1 if failed else 0)
