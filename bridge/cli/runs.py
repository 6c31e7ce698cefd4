"""``bridge runs``: what ran — the rules' scheduled jobs and the plans applied — and when each
scheduled job runs next.

Past runs, newest first: each occurrence of a scheduled job (``schedule_runs``: the job, the
occurrence it was due, when it started and finished, which process ran it, what it found and
did, why it failed) and each run of the ``runs`` table (``bridge apply``, ``reconcile
--apply``, ``revert``: its status and counts). Then every job of the rules' ``schedule:``
with its next occurrence and its last run.

``--json`` prints ``bridge-runs/1``::

    {"format": "bridge-runs/1", "generated_at": ISO, "rules_version": str | null,
     "runs": [{"source": "schedule" | "runs", "id": str, "kind": str,
               "rule_file": str | null, "occurrence": ISO | null, "started": ISO,
               "finished": ISO | null, "state": str, "worker": str | null,
               "summary": object | null, "error": str | null}],
     (a run of the runs table: no rule file, occurrence or finish; its actor as worker,
      its counts as summary, with approved_by / approved_at once approved)
     "next": [{"rule_file": str, "job": str, "job_key": str, "when": str,
               "next": ISO | null (its window is over),
               "last": {"occurrence": ISO, "state": str, "finished": ISO | null} | null}],
     "rules_error": str | null}

Exit 0, or 1 when the rules do not load (the past runs are still listed; no next run).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridge.cli.database import database
from bridge.cli.rules import rule_book
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.provision.resources import now_utc
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.scheduler import next_runs
from bridge.store import schedule_runs

FORMAT = "bridge-runs/1"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _scheduled(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "schedule",
        "id": str(run["id"]),
        "kind": run["job"],
        "rule_file": run["rule_file"],
        "occurrence": _iso(run["occurrence"]),
        "started": _iso(run["started"]),
        "finished": _iso(run["finished"]),
        "state": run["state"],
        "worker": run["worker"],
        "summary": run["summary"],
        "error": run["error"],
    }


def _planned(run: dict[str, Any]) -> dict[str, Any]:
    summary = dict(run.get("summary") or {})
    if run.get("approved_by"):
        summary["approved_by"] = run["approved_by"]
        summary["approved_at"] = _iso(run.get("approved_at"))
    return {
        "source": "runs",
        "id": str(run["id"]),
        "kind": run["kind"],
        "rule_file": None,
        "occurrence": None,
        "started": _iso(run["created"]),
        "finished": None,
        "state": run["status"],
        "worker": summary.pop("actor", None),
        "summary": summary,
        "error": None,
    }


def document(
    past: list[dict[str, Any]],
    ruleset: RuleSet | None,
    lasts: dict[str, dict[str, Any] | None],
    now: datetime,
    rules_error: str | None = None,
) -> dict[str, Any]:
    """The ``bridge-runs/1`` document from the runs read and the rules (pure)."""
    upcoming = []
    for entry, when in next_runs(ruleset, now):
        last = lasts.get(entry.key)
        upcoming.append(
            {
                "rule_file": entry.owner,
                "job": entry.job.name,
                "job_key": entry.key,
                "when": entry.job.describe(),
                "next": _iso(when),
                "last": None
                if last is None
                else {
                    "occurrence": _iso(last["occurrence"]),
                    "state": last["state"],
                    "finished": _iso(last["finished"]),
                },
            }
        )
    return {
        "format": FORMAT,
        "generated_at": now.isoformat(),
        "rules_version": ruleset.version if ruleset is not None else None,
        "runs": past,
        "next": upcoming,
        "rules_error": rules_error,
    }


def _did(summary: Any) -> str:
    """What a run found and did, on one line: its scalar figures, then its counts."""
    if not isinstance(summary, dict):
        return ""
    parts: list[str] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            figures = {k: v.get("count") if isinstance(v, dict) else v for k, v in value.items()}
            parts.extend(f"{k} {v}" for k, v in figures.items() if isinstance(v, int | float))
        elif value is not None and not isinstance(value, list):
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _when(value: str | None) -> str:
    return value[:16].replace("T", " ") + "Z" if value else ""


def render(doc: dict[str, Any], console: Console) -> None:
    past = Table("started (UTC)", "kind", "rule file", "due", "state", "found and did", "by")
    for run in doc["runs"]:
        kind = f"scheduled {run['kind']}" if run["source"] == "schedule" else run["kind"]
        did = _did(run["summary"])
        if run["error"]:
            did = f"{did}; {run['error']}" if did else run["error"]
        state = run["state"]
        if run["source"] == "runs" and state == "quarantined":
            state = f"quarantined, awaiting approval (bridge approve/reject {run['id']})"
        past.add_row(
            _when(run["started"]),
            kind,
            escape(run["rule_file"] or ""),
            _when(run["occurrence"]),
            escape(state),
            escape(did),
            escape(run["worker"] or ""),
        )
    console.print("[bold]Past runs[/bold] (newest first)")
    if doc["runs"]:
        console.print(past)
    else:
        console.print("  none yet")
    console.print("[bold]Next runs[/bold]")
    if doc["rules_error"] is not None:
        console.print(f"  the rules do not load:\n{escape(doc['rules_error'])}")
        return
    if not doc["next"]:
        console.print("  no rule file has a schedule")
        return
    upcoming = Table("rule file", "job", "when", "next (UTC)", "last run")
    for item in doc["next"]:
        last = item["last"]
        upcoming.add_row(
            escape(item["rule_file"]),
            item["job"],
            item["when"],
            _when(item["next"]) or "window over",
            f"{last['state']} (due {_when(last['occurrence'])})" if last else "never",
        )
    console.print(upcoming)


@click.command(name="runs")
@click.option("--json", "as_json", is_flag=True, help="One bridge-runs/1 JSON document.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="Past runs shown.",
)
def runs_command(as_json: bool, limit: int) -> None:
    """Past runs (scheduled jobs, plans applied, reconciles) and the next scheduled ones."""
    settings = load_settings()
    now = now_utc()
    ruleset, rules_error = None, None
    try:
        ruleset = rule_book(settings, load_schemas(settings)).current()
    except RuleErrors as exc:
        rules_error = render_errors(exc.errors)
    with database(settings) as db, db.read() as conn:
        past = [_scheduled(r) for r in schedule_runs.recent(conn, limit=limit)]
        past += [_planned(r) for r in schedule_runs.plan_runs(conn, limit=limit)]
        keys = [entry.key for entry, _ in next_runs(ruleset, now)]
        lasts = {key: schedule_runs.last_of(conn, key) for key in keys}
    past.sort(key=lambda run: (run["started"] or "", run["id"]), reverse=True)
    doc = document(past[:limit], ruleset, lasts, now, rules_error)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        render(doc, Console(soft_wrap=False))
    sys.exit(1 if rules_error is not None else 0)
