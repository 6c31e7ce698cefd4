"""What each admin page shows, read through the store and the use cases the CLI uses: the
journal (``bridge journal``), a person's timeline (``bridge explain`` and the journal, outbox
and training rows of one person), the dead letters (``bridge errors``), the runs awaiting a
decision (``bridge plan --run``) and the training report (``bridge training``).

Synchronous: the app runs each on a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import date
from datetime import datetime
from typing import Any

from bridge.admin import charts
from bridge.provision.brake import RunError
from bridge.provision.brake import stored_plan
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.provision.training import Training
from bridge.provision.training import TrainingRow
from bridge.provision.training import build_rows
from bridge.provision.training import counts
from bridge.provision.training import grouped
from bridge.rules.explain import Explanation
from bridge.rules.explain_render import render_explanation
from bridge.rules.plan import render_text
from bridge.store import admin_views
from bridge.store import health
from bridge.store import outbox
from bridge.store.admin_views import JournalFilter
from bridge.store.admin_views import Person
from bridge.store.engine import Database
from bridge.store.journal import Entry

SCIM_OPS = {"create", "replace", "patch", "members", "delete", "revert"}


def kind_of(entry: Entry) -> str:
    """What a journal entry is, for the timeline: a SCIM write, an LMS answer, an HR event,
    or an admin's decision."""
    if entry.op in SCIM_OPS:
        return "write"
    family = entry.op.split(".", 1)[0]
    return {"deliver": "lms", "hris": "hr", "errors": "admin"}.get(family, "admin")


def changes(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *, shown: int = 4
) -> list[str]:
    """What a SCIM write changed, attribute by attribute, for a journal line: ``active:
    true → false`` for a simple value, ``emails changed`` for a complex one (the journal
    keeps the whole before and after images)."""
    if before is None or after is None:
        return []
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key in ("meta", "id", "schemas") or before.get(key) == after.get(key):
            continue
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict | list) or isinstance(new, dict | list):
            lines.append(f"{key.rsplit(':', 1)[-1]} changed")
        else:
            lines.append(f"{key}: {_shown(old)} → {_shown(new)}")
    return lines[:shown] + ([f"+{len(lines) - shown} more"] if len(lines) > shown else [])


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Timeline:
    """One person, as every part of the bridge sees them."""

    person: Person
    entries: list[Entry]
    intents: list[dict[str, Any]]
    training: list[TrainingRow]
    explanation: Explanation | None
    explanation_text: str
    explain_error: str | None = None
    runs: set[str] = field(default_factory=set)


class Views:
    """The pages' reads over one database."""

    def __init__(self, db: Database, planner: Planner, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.planner = planner
        self.clock = clock

    @property
    def username_policy(self) -> str:
        return str(self.planner.store.username_policy)

    def overview(self) -> dict[str, Any]:
        with self.db.read() as conn:
            statuses = outbox.counts(conn)
            latest = admin_views.journal_page(conn, JournalFilter(), limit=15)
            return {
                "outbox": statuses,
                "dead": statuses.get(outbox.DEAD, 0),
                "awaiting": admin_views.runs_awaiting(conn),
                "targets": health.all_of(conn),
                "latest": latest,
                "names": admin_views.labels(conn, {e.resource_id for e in latest if e.resource_id}),
            }

    def journal(self, where: JournalFilter, *, limit: int = 100) -> list[Entry]:
        with self.db.read() as conn:
            return admin_views.journal_page(conn, where, limit=limit)

    def find(self, text: str) -> list[Person]:
        with self.db.read() as conn:
            return admin_views.find_people(conn, text, policy=self.username_policy)

    def labels(self, ids: set[str]) -> dict[str, str]:
        with self.db.read() as conn:
            return admin_views.labels(conn, ids)

    def timeline(self, person_id: str) -> Timeline | None:
        today = self.clock().date()
        with self.db.read() as conn:
            person = admin_views.person(conn, person_id)
            if person is None:
                return None
            entries = admin_views.person_journal(conn, person_id)
            intents = admin_views.outbox_of(conn, person_id)
            inputs = admin_views.training_of(conn, person_id)
        explanation, text, error = None, "", None
        try:
            explanation = self.planner.explain(person_id)
            text = render_explanation(explanation)
        except PlanError as exc:
            error = str(exc)
        return Timeline(
            person=person,
            entries=entries,
            intents=intents,
            training=build_rows(*inputs, today),
            explanation=explanation,
            explanation_text=text,
            explain_error=error,
            runs={str(row["run_id"]) for row in intents if row.get("run_id")},
        )

    def dead_letters(self, category: str | None, target: str | None) -> dict[str, Any]:
        with self.db.read() as conn:
            rows = outbox.dead_letters(conn, category=category, target=target)
            behind = outbox.blocked_behind(conn, rows)
            names = admin_views.labels(conn, {str(r["ordering_key"]) for r in rows})
            waiting = {
                name: found.waiting() for name, found in health.all_of(conn).items() if not found.ok
            }
        return {"rows": rows, "behind": behind, "names": names, "waiting": waiting}

    def runs(self) -> dict[str, Any]:
        with self.db.read() as conn:
            return {
                "awaiting": admin_views.runs_awaiting(conn),
                "decided": admin_views.runs_decided(conn),
            }

    def run(self, run_id: str) -> dict[str, Any]:
        """A run and its plan as ``bridge plan --run`` shows it; ``error`` when it cannot be."""
        ruleset = self.planner.rules()
        if ruleset is None:
            return {"run": None, "plan": None, "text": "", "error": "no rules loaded"}
        try:
            run, plan = stored_plan(self.db, self.planner.store, ruleset, run_id, now=self.clock())
        except RunError as exc:
            return {"run": None, "plan": None, "text": "", "error": str(exc)}
        with self.db.read() as conn:
            rows = outbox.of_run(conn, run_id)
            names = admin_views.labels(conn, {str(row["ordering_key"]) for row in rows})
        return {
            "run": run,
            "plan": plan,
            "text": render_text(plan),
            "rows": rows,
            "names": names,
            "error": None,
        }

    def training(self, as_of: date) -> dict[str, Any]:
        """The training report (``bridge training``), with its two charts."""
        rows = Training(self.db).rows(as_of)
        now = self.clock()
        departments = grouped(rows, "department")
        ages = [
            now - row.read_at if row.read_at is not None else None for row in rows if row.enrolled
        ]
        times = sorted(r.read_at for r in rows if r.read_at is not None)
        return {
            "as_of": as_of,
            "rows": rows,
            "totals": counts(rows),
            "departments": departments,
            "bars": charts.completion_bars(departments),
            "columns": charts.freshness_columns(ages),
            "oldest": times[0] if times else None,
            "newest": times[-1] if times else None,
            "segments": charts.SEGMENTS,
        }
