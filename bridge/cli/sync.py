"""``bridge sync FILE --feed NAME``: reconcile the people of an HR feed with its nightly full
export (CSV or JSON lines, ``-`` for stdin), through the same path as a SCIM write.

``--dry-run`` shows what would change and writes nothing. ``--json`` prints ``bridge-sync/1``::

    {"format": "bridge-sync/1", "feed": str, "file": str, "dry_run": bool,
     "status": "applied" | "planned" | "refused" | "nothing to do",
     "rows": int, "people": int, "baseline": int | null, "min_percent": float,
     "counts": {"create", "update", "deactivate", "unchanged", "rejected", "failed": int},
     "examples": {"create" | "update" | "deactivate": [externalId]},
     "rejected": [{"line", "field", "fix", "external_id"}],   (the first 100)
     "failed": [{"line", "field", "fix", "external_id"}],
     "refusal": str | null, "run_id": str | null}

Exit 0 applied or nothing to do, 1 refused (empty or truncated export, broken rules) or rows
rejected or failed (the others are applied), 2 usage.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn
from rich.progress import MofNCompleteColumn
from rich.progress import Progress
from rich.progress import TaskID
from rich.progress import TextColumn
from rich.progress import TimeElapsedColumn

from bridge.cli.database import database
from bridge.cli.plans import actor
from bridge.cli.rules import rule_book
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.provision import Provisioner
from bridge.provision.sync import FORMAT
from bridge.provision.sync import Applied
from bridge.provision.sync import Survey
from bridge.provision.sync import Sync
from bridge.provision.sync import opener
from bridge.rules.check import render_errors
from bridge.rules.feeds import Feed
from bridge.rules.model import RuleErrors


def document(found: Survey, file: str, *, dry_run: bool, applied: Applied | None) -> dict[str, Any]:
    """The ``bridge-sync/1`` document of a survey and, once applied, of what was written."""
    counts: dict[str, int] = {**found.counts(), "failed": 0}
    if applied is not None:
        counts = dict(applied.counts)
    changes = sum(counts[k] for k in ("create", "update", "deactivate"))
    if found.refusal is not None:
        status = "refused"
    elif applied is not None:
        status = "applied" if changes or counts["failed"] else "nothing to do"
    else:
        status = "planned" if changes else "nothing to do"
    return {
        "format": FORMAT,
        "feed": found.feed.name,
        "file": file,
        "dry_run": dry_run,
        "status": status,
        "rows": found.rows,
        "people": found.people,
        "baseline": found.baseline,
        "min_percent": found.feed.export.min_percent,
        "counts": counts,
        "examples": found.examples() if found.refusal is None else {},
        "rejected": [r.to_json() for r in found.rejected],
        "failed": [r.to_json() for r in applied.failed] if applied is not None else [],
        "refusal": found.refusal,
        "run_id": applied.run_id if applied is not None else None,
    }


def exit_code(doc: dict[str, Any]) -> int:
    counts = doc["counts"]
    return 1 if doc["refusal"] is not None or counts["rejected"] or counts["failed"] else 0


def render(doc: dict[str, Any], console: Console) -> None:
    """The document as text: the counts, examples, the rows to fix in the HRIS."""
    head = f"feed {doc['feed']}, {escape(doc['file'])}: {doc['rows']} row(s), "
    head += f"{doc['people']} people"
    if doc["baseline"] is not None:
        head += f" (last accepted export: {doc['baseline']})"
    console.print(head)
    if doc["refusal"] is not None:
        console.print(f"[red]{escape(doc['refusal'])}[/red]")
    else:
        verb = "would" if doc["dry_run"] else "did"
        counts = doc["counts"]
        figures = ", ".join(f"{counts[k]} {k}" for k in counts if counts[k] or k != "failed")
        console.print(f"{doc['status']}: {verb} {figures}")
        for kind, people in doc["examples"].items():
            if people and doc["counts"].get(kind):
                console.print(
                    f"  {kind}: {escape(', '.join(people))}"
                    + ("…" if len(people) < counts[kind] else "")
                )
    for title, rows in (("rejected", doc["rejected"]), ("failed", doc["failed"])):
        if not rows:
            continue
        total = doc["counts"][title]
        console.print(f"{title} row(s) ({total}; fix them in the HRIS, they were not applied):")
        for row in rows:
            where = f"line {row['line']}" if row["line"] else "person"
            who = f" ({row['external_id']})" if row["external_id"] else ""
            console.print(f"  {where}{escape(who)}: {escape(row['field'])}: {escape(row['fix'])}")
        if total > len(rows):
            console.print(f"  … and {total - len(rows)} more")
    if doc["run_id"]:
        console.print(
            f"run {doc['run_id']}: `bridge plan --run {doc['run_id']}` shows the LMS changes "
            "it caused (see also `bridge runs`)"
        )


@contextmanager
def _spooled(stream: Any) -> Iterator[Path]:
    """Standard input copied to a temporary file, chunk by chunk: each pass re-reads it."""
    handle, name = tempfile.mkstemp(prefix="bridge-sync-", suffix=".export")
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        yield Path(name)
    finally:
        os.unlink(name)


def _feed(feeds: dict[str, Any], name: str | None) -> Feed:
    if name is None:
        if len(feeds) != 1:
            known = ", ".join(sorted(feeds)) or "none (declare one in feeds.yaml)"
            raise click.UsageError(f"name the feed with --feed (feeds: {known})")
        name = next(iter(feeds))
    feed = feeds.get(name)
    if not isinstance(feed, Feed):
        known = ", ".join(sorted(feeds)) or "none (declare one in feeds.yaml)"
        raise click.UsageError(f"no feed {name!r} (feeds: {known})")
    return feed


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A progress bar on a terminal: rows read, then changes written."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                label = "reading the export" if phase == "read" else "writing changes"
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield advance


@click.command(name="sync")
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--feed", "feed_name", default=None, help="The feed of feeds.yaml (if several).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="One bridge-sync/1 JSON document.")
@click.option(
    "--force",
    is_flag=True,
    help="Accept an export the truncation guard refuses (after checking it).",
)
def sync_command(
    file: Path, feed_name: str | None, dry_run: bool, as_json: bool, force: bool
) -> None:
    """Reconcile an HR feed's people with its full export (CSV or JSON lines, - for stdin).

    Creates the people it adds, updates those whose mapped attributes changed, and
    deactivates (never deletes) the people the feed owns that it no longer lists. An empty
    export, or one under the feed's min_percent of the last accepted one, is refused.
    """
    settings = load_settings()
    catalog = load_schemas(settings)
    try:
        book = rule_book(settings, catalog)
    except RuleErrors as exc:
        click.echo(render_errors(exc.errors), err=True)
        sys.exit(1)
    ruleset = book.current()
    feed = _feed(dict(ruleset.feeds) if ruleset is not None else {}, feed_name)
    stdin = str(file) == "-"
    if not stdin and not file.is_file():
        raise click.UsageError(f"{file}: no such file")
    shown = "-" if stdin else str(file)
    with ExitStack() as stack:
        path = file
        if stdin:
            path = stack.enter_context(_spooled(sys.stdin.buffer))
        open_export = opener(path)
        db = stack.enter_context(database(settings, create=True))
        provisioner = Provisioner(db, catalog, rules=book.current, **store_options(settings))
        sync = Sync(
            provisioner,
            feed,
            actor=actor(),
            rules_version=ruleset.version if ruleset is not None else "",
        )
        progress = stack.enter_context(_progress(sys.stdout.isatty() and not as_json))
        try:
            found = sync.survey(open_export, force=force, progress=progress)
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"{shown}: not UTF-8 text ({exc.reason})") from exc
        applied = None
        if found.refusal is None and not dry_run:
            applied = sync.apply(found, open_export, progress)
    doc = document(found, shown, dry_run=dry_run, applied=applied)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        render(doc, Console(soft_wrap=True))
    sys.exit(exit_code(doc))
