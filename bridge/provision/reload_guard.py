"""The reload guard: a rules reload is held to the rule files' safety thresholds.

A running bridge projects its rules on every SCIM write, so a reload that narrows a scope,
drops a rule, lowers a pilot cap or deletes a rule file removes people as they are written.
The guard is the gate of the bridge's RuleBook (``bridge.rules.book.Gate``): it plans the
rule files a reload changes over the stored population (``Planner.compute``), under the new
rules and under the rules in force, and counts what only the new rules do — the removal
intents and the people they remove — plus everyone a deleted rule file holds in scope (each
loses what it gave them, counted against that file's own ``safety``). Over a threshold the
reload is quarantined until a run of ``bridge apply`` for the new rules version reaches the
LMS after the decision (applied, or approved when apply quarantined it).

The decision is a run (``kind="reload"``) in the database: the first process to see a change
evaluates it, and every process of the bridge (``serve --workers``, ``bridge relay``) follows
that one decision, so no two of them run different rules.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.rules.engine import REMOVALS
from bridge.rules.engine import Desired
from bridge.rules.engine import Intent
from bridge.rules.engine import diff
from bridge.rules.model import RuleSet
from bridge.rules.plan import PersonOutcome
from bridge.rules.plan import Plan
from bridge.rules.plan import SafetyVerdict
from bridge.rules.plan import build_plan
from bridge.schemas import Catalog
from bridge.store import projections
from bridge.store import runs
from bridge.store.engine import Database
from bridge.store.resources import ResourceStore

log = logging.getLogger("bridge.rules")

RELOAD = "reload"
"""The kind of the runs that record reload decisions."""
EVALUATING, TAKEN, QUARANTINED = "evaluating", "taken", "quarantined"

PROCEED = (
    "to take them: review with `bridge plan` (it plans with the rules on disk), save it with "
    "`bridge plan --out plan.json`, enqueue it with `bridge apply plan.json` and, if apply "
    "quarantines it, release it with `bridge approve RUN`; the next reload takes this version. "
    "To keep the rules in force instead, restore the rule files."
)


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else (many or one + 's')}"


@dataclass(frozen=True)
class FileImpact:
    """What a reload does to the people of one rule file (changed, added or deleted)."""

    rule_file: str
    path: str
    deleted: bool
    people: int
    """People it sends any intent for."""
    removed: int
    """People it removes: out of scope, or losing an enrolment, cohort or path."""
    removals: int
    """Removal intents (what the safety threshold counts)."""
    intents: int
    safety: SafetyVerdict

    def describe(self) -> str:
        label = Path(self.path).name + (" (deleted)" if self.deleted else "")
        return (
            f"{label}: {_count(self.people, 'person', 'people')} touched, {self.removed} removed, "
            f"{_count(self.removals, 'removal intent')} of {_count(self.intents, 'intent')}"
            f" — {self.safety.reason}"
        )


@dataclass(frozen=True)
class Impact:
    """What taking a new rule set does to the stored people, per rule file."""

    files: tuple[FileImpact, ...]
    people: int
    removed: int

    @property
    def removals(self) -> int:
        return sum(f.removals for f in self.files)

    @property
    def quarantined(self) -> bool:
        return any(f.safety.quarantined for f in self.files)

    def summary(self) -> str:
        """``touches 3 people: removes 1 (1 removal intent) — benefits-2026.yaml: …``."""
        if not self.files:
            return "touches nobody"
        removes = (
            f"removes {self.removed} ({_count(self.removals, 'removal intent')})"
            if self.removals
            else "removes nobody"
        )
        files = "; ".join(f.describe() for f in self.files)
        return f"touches {_count(self.people, 'person', 'people')}: {removes} — {files}"

    def refusal(self) -> str:
        """Why the reload is quarantined, per rule file, and how to proceed."""
        lines = [
            f"the new rules would remove {_count(self.removed, 'person', 'people')} "
            f"({_count(self.removals, 'removal intent')}), over the safety threshold:"
        ]
        lines += [f"  {f.describe()}" for f in self.files if f.removals or f.safety.quarantined]
        return "\n".join([*lines, PROCEED])


def _key(intent: Intent) -> tuple[str, str, str | None, str]:
    return intent.person, intent.kind.value, intent.ref, intent.rule


def _decision_id(latest: dict[str, Any] | None, was: str, new: str) -> str:
    """The same for every process that sees the same change after the same last decision."""
    text = f"{latest['id'] if latest else ''}|{was}|{new}"
    return "reload-" + hashlib.sha256(text.encode()).hexdigest()[:20]


class ReloadGuard:
    """The gate of a RuleBook: (rules in force, new rules) → None to take them, or why not."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        catalog: Catalog,
        *,
        clock: Callable[[], datetime] = now_utc,
        lease_seconds: float = 600.0,
        poll_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        """How long another process's evaluation is waited for before this one takes over."""
        self.poll_seconds = poll_seconds
        self.sleep = sleep
        self.evaluator = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._decided: tuple[str, str, str] | None = None  # (from, to, the decision's run id)

    def __call__(self, old: RuleSet | None, new: RuleSet) -> str | None:
        was = old.version if old is not None else "none"
        if old is not None and old.files == new.files:
            log.info("rules version %s (was %s): no rule file changed", new.version, was)
            return None
        run = self._decision(old, new)
        summary = run["summary"]
        if run["status"] != QUARANTINED:  # taken (or a reload run released by `bridge approve`)
            log.log(
                logging.WARNING if summary.get("removals") else logging.INFO,
                "rules version %s (was %s) %s",
                new.version,
                was,
                summary.get("log"),
            )
            return None
        with self.db.read() as conn:
            released = runs.released_since(conn, new.version, run["created"])
        if released is None:
            return str(summary.get("reason"))
        how = (
            f"approved by {released['approved_by']}"
            if released["status"] == "approved"
            else "applied"
        )
        log.warning(
            "rules version %s (was %s) taken out of quarantine: run %s of `bridge apply` for it "
            "was %s; it %s",
            new.version,
            was,
            released["id"],
            how,
            summary.get("log"),
        )
        return None

    def _decision(self, old: RuleSet | None, new: RuleSet) -> dict[str, Any]:
        """The reload run deciding ``old`` → ``new``: found, or claimed and evaluated here."""
        was = old.version if old is not None else "none"
        if self._decided is not None and self._decided[:2] == (was, new.version):
            with self.db.read() as conn:  # a quarantine asked about again: one point read
                found = runs.get(conn, self._decided[2])
            if found is not None and found["status"] != EVALUATING:
                return found
        with self.db.write() as conn:
            latest = runs.latest(conn, kind=RELOAD)
            if (
                latest is not None
                and latest["rules_version"] == new.version
                and (latest["summary"] or {}).get("from") == was
            ):
                run = latest
            else:
                run = runs.create_once(
                    conn,
                    _decision_id(latest, was, new.version),
                    kind=RELOAD,
                    status=EVALUATING,
                    rules_version=new.version,
                    summary={"from": was, "evaluator": self.evaluator},
                    now=self.clock(),
                    actor=self.evaluator,
                )
        while run["status"] == EVALUATING:
            mine = (run["summary"] or {}).get("evaluator") == self.evaluator
            if mine or self.clock() - run["created"] > self.lease:
                self._evaluate(run["id"], old, new)
            else:
                self.sleep(self.poll_seconds)  # another process is evaluating it
            with self.db.read() as conn:
                found = runs.get(conn, run["id"])
            if found is None:
                raise LookupError(f"the reload run {run['id']} is gone")
            run = found
        self._decided = (was, new.version, run["id"])
        return run

    def _evaluate(self, run_id: str, old: RuleSet | None, new: RuleSet) -> None:
        found = self.impact(old, new)
        summary = {
            "from": old.version if old is not None else "none",
            "evaluator": self.evaluator,
            "actor": self.evaluator,
            "people": found.people,
            "removed": found.removed,
            "removals": found.removals,
            "files": {
                f.rule_file: {
                    "deleted": f.deleted,
                    "people": f.people,
                    "removed": f.removed,
                    "removals": f.removals,
                    "intents": f.intents,
                    "safety": f.safety.verdict,
                }
                for f in found.files
            },
            "log": found.summary(),
            "reason": found.refusal() if found.quarantined else None,
        }
        status = QUARANTINED if found.quarantined else TAKEN
        with self.db.write() as conn:
            runs.settle(conn, run_id, status=status, summary=summary, expected=EVALUATING)

    def _plan(self, ruleset: RuleSet, only: set[str]) -> Plan:
        planner = Planner(self.db, self.store, self.catalog, lambda: ruleset, self.clock)
        return planner.compute(only=only).plan

    def impact(self, old: RuleSet | None, new: RuleSet) -> Impact:
        """What taking ``new`` instead of ``old`` does to the stored people (read-only).

        Intents the rules in force would send as well (a dead letter, drift) are not the
        reload's doing and are left out.
        """
        before = {f.name: f for f in old.files} if old is not None else {}
        changed = {f.name for f in new.files if before.get(f.name) != f}
        intents: dict[tuple[str, str], list[Intent]] = {}  # (rule file, person) → new intents
        projected: dict[str, int] = {}
        population = 0
        covered: set[str] = set()  # rule files the plan of the new rules speaks for
        if changed:
            plan = self._plan(new, changed)
            population = plan.population
            common = changed & before.keys()
            already = (
                {_key(t.intent) for t in self._plan(old, common).tracked}
                if old is not None and common
                else set()
            )
            for entry in plan.tracked:
                if _key(entry.intent) not in already:
                    rule_file = plan.rules[entry.intent.rule].rule_file
                    intents.setdefault((rule_file, entry.intent.person), []).append(entry.intent)
            projected.update({v.rule_file: v.projected for v in plan.safety})
            covered = {v.rule_file for v in plan.safety}
            covered.update(count.rule_file for count in plan.rules.values())
        deleted = [f for name, f in before.items() if new.file(name) is None]
        deleted = [f for f in deleted if f.name not in covered]
        if deleted:
            with self.db.read() as conn:
                for gone in deleted:
                    held = projections.in_scope_of(conn, gone.name)
                    projected[gone.name] = len(held)
                    for projection in held:
                        out, _ = diff(
                            projection.resource_id, Desired(in_scope=False), projection.state, gone
                        )
                        if out:
                            intents[(gone.name, projection.resource_id)] = out
        files = (*(f for f in new.files if f.name in changed), *deleted)
        outcomes = [
            PersonOutcome(person, person, name, found[0].target, False, found, [])
            for (name, person), found in intents.items()
        ]
        safety = build_plan(
            replace(new, files=files),
            outcomes,
            population=population,
            projected_counts=projected,
            generated_at=self.clock().isoformat(),
            rules_version=new.version,
        ).safety
        verdicts = {v.rule_file: v for v in safety}
        removed_by_file: dict[str, set[str]] = {f.name: set() for f in files}
        touched_by_file: dict[str, set[str]] = {f.name: set() for f in files}
        counts = dict.fromkeys(removed_by_file, 0)
        for (name, person), found in intents.items():
            touched_by_file[name].add(person)
            counts[name] += len(found)
            if any(i.kind in REMOVALS for i in found):
                removed_by_file[name].add(person)
        names_deleted = {f.name for f in deleted}
        impacts = tuple(
            FileImpact(
                rule_file=f.name,
                path=f.path,
                deleted=f.name in names_deleted,
                people=len(touched_by_file[f.name]),
                removed=len(removed_by_file[f.name]),
                removals=verdicts[f.name].removals,
                intents=counts[f.name],
                safety=verdicts[f.name],
            )
            for f in files
            if counts[f.name] or verdicts[f.name].quarantined
        )
        return Impact(
            impacts,
            people=len(set[str]().union(*touched_by_file.values())),
            removed=len(set[str]().union(*removed_by_file.values())),
        )
