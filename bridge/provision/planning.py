"""Plans over the whole stored population: plan, apply (one transaction), approve, explain.

Conditions are evaluated in SQL (the same translator as SCIM filters: one query per
condition, never a Python scan of every row) and each capped pilot is drawn over the
population (:mod:`bridge.provision.standing`); mappings and diffs run in the pure engine.
``apply`` is where a capped pilot's newcomers are admitted (live writes never fill one), and
``explain`` is the plan restricted to one person: the same standing, desired state and evidence.

The three states are never confused (DESIGN §4): ``plan`` and ``explain`` diff *desired*
against what the LMS *confirmed* (``links``; a dead letter is a change still to make, not a
change made), then look each intent up in the outbox and the target's health: *pending*
intents are shown, not enqueued again, *waiting* ones wait for their target. Projections
stay the last projected state (what the SCIM write path diffs against) and ``apply`` saves
them as before. Links and outbox rows are read per batch of people, so memory stays flat.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from bridge.provision import brake
from bridge.provision.evidence import Evidence
from bridge.provision.evidence import evidence
from bridge.provision.evidence import waiting_targets
from bridge.provision.projection import person_document
from bridge.provision.projection import uses_groups
from bridge.provision.standing import Standing
from bridge.provision.standing import read_standing
from bridge.rules.engine import Desired
from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import desired_state
from bridge.rules.engine import diff
from bridge.rules.engine import state_key
from bridge.rules.explain import Explanation
from bridge.rules.explain import build_explanation
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.plan import FAILED
from bridge.rules.plan import PersonOutcome
from bridge.rules.plan import Plan
from bridge.rules.plan import Tracked
from bridge.rules.plan import build_plan
from bridge.rules.plan import confirmed_view
from bridge.rules.plan import kept_intents
from bridge.rules.plan import plan_from_json
from bridge.rules.plan import plan_to_json
from bridge.rules.plan import select_rules
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import outbox
from bridge.store import projections
from bridge.store import refusals
from bridge.store import runs
from bridge.store.engine import Database
from bridge.store.projections import Projection
from bridge.store.resources import Record
from bridge.store.resources import ResourceStore

HR_ROLE_CODES = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"


class PlanError(Exception):
    """A plan cannot be computed or applied (stale plan, unknown run…)."""


@dataclass
class Computed:
    """A plan plus what applying it writes: the new projections."""

    plan: Plan
    standing: Standing | None = None
    """The conditions' matches, the projections and the pilot draws the plan was made from."""
    projections: list[tuple[Projection, bool]] = field(default_factory=list)
    tracked: list[Tracked] = field(default_factory=list)
    """The intents apply enqueues (still to make) or requeues in place (failed)."""

    @property
    def intents(self) -> list[Intent]:
        return [entry.intent for entry in self.tracked]

    @property
    def fingerprint(self) -> str:
        """What apply would write: each intent, its state and the dead letter it requeues.

        A pending intent that is delivered meanwhile leaves it alone; one that dies, or a
        target that recovers, makes the plan stale (apply would do what nobody reviewed).
        """
        return intents_fingerprint(
            [
                {
                    **entry.intent.as_dict(),
                    "state": entry.state,
                    "requeues": entry.row.id if entry.state == FAILED and entry.row else None,
                }
                for entry in self.tracked
            ]
        )


def intents_fingerprint(intents: list[dict[str, Any]]) -> str:
    text = json.dumps(intents, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_run(
    conn: Any,
    plan: Plan,
    tracked: list[Tracked],
    *,
    kind: str,
    rules_version: str,
    actor: str,
    now: datetime,
) -> tuple[str, str, int]:
    """Record a run of ``plan`` and enqueue its intents (in the caller's transaction),
    quarantined when the plan is over a safety threshold; (run id, status, written).
    ``bridge apply`` and ``bridge reconcile --apply`` share it."""
    quarantined = plan.status == "quarantined"
    run_id = uuid.uuid4().hex[:12]
    status = "quarantined" if quarantined else "applied"
    runs.create(
        conn,
        run_id,
        kind=kind,
        status=status,
        rules_version=rules_version,
        summary=plan_to_json(plan)["counts"],
        now=now,
        actor=actor,
    )
    written = enqueue_tracked(conn, tracked, run_id=run_id, quarantined=quarantined, now=now)
    return run_id, status, written


def enqueue_tracked(
    conn: Any, tracked: list[Tracked], *, run_id: str, quarantined: bool, now: datetime
) -> int:
    """Write a plan's intents to the outbox for run ``run_id`` (in the caller's transaction);
    how many were written. ``bridge apply`` and ``bridge reconcile --apply`` share it.

    A failed intent goes again in its dead letter's place (same id): the rows blocked behind
    it keep their order, and no new row queues behind it. In a quarantined run it stays dead
    (still holding them back) until approved; fresh rows wait as quarantined.
    """
    fresh: list[Intent] = []
    requeued = 0
    for entry in tracked:
        if entry.state == FAILED and entry.row is not None:
            intent = entry.intent.as_dict()
            if (
                outbox.hold_for_approval(conn, entry.row.id, intent, run_id)
                if quarantined
                else outbox.requeue_as(conn, entry.row.id, intent, now=now, run_id=run_id)
            ):
                requeued += 1
                continue
        fresh.append(entry.intent)  # (a dead letter retried meanwhile: a new row)
    return requeued + outbox.enqueue(
        conn,
        (i.as_dict() for i in fresh),
        now=now,
        run_id=run_id,
        status=outbox.QUARANTINED if quarantined else outbox.PENDING,
    )


def _role_codes(doc: dict[str, Any]) -> list[str]:
    extension = doc.get(HR_ROLE_CODES) or {}
    codes = extension.get("roleCodes") if isinstance(extension, dict) else None
    return [str(c) for c in codes] if isinstance(codes, list) else []


class Planner:
    """Plans over every stored person, for every rule file."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        catalog: Catalog,
        rules: Callable[[], RuleSet | None],
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.store = store
        self.catalog = catalog
        self.rules = rules
        self.clock = clock
        self.selected: set[str] | None = None

    def _ruleset(self) -> RuleSet:
        ruleset = self.rules()
        if ruleset is None:
            raise PlanError("no rules loaded")
        return ruleset

    def compute(self, *, only: set[str] | None = None) -> Computed:
        """Desired vs last projected state over the whole population (read-only)."""
        ruleset = self._ruleset()
        try:
            self.selected = select_rules(ruleset, only)
        except ValueError as exc:
            raise PlanError(str(exc)) from exc
        now = self.clock()
        with self.db.read() as conn:
            standing = read_standing(conn, self.store, ruleset, now.date())
            projected = standing.projected
            follow_groups = uses_groups(ruleset)
            targets = {f.target for f in ruleset.files}
            waiting = waiting_targets(conn)
            unresolved = refusals.unresolved(conn)
            outcomes: list[PersonOutcome] = []
            computed = Computed(plan=None, standing=standing)  # type: ignore[arg-type]
            population = 0
            seen: set[str] = set()
            for batch in self.store.scan(conn, "User"):
                population += len(batch)
                groups = self.store.groups_of(conn, [r.id for r in batch]) if follow_groups else {}
                seen.update(record.id for record in batch)
                # out of every scope and never projected: nothing to do, nothing to read
                planned = [
                    (record, relevant)
                    for record in batch
                    if (
                        relevant := [
                            f
                            for f in ruleset.files
                            if standing.admitted(f, record.id) or record.id in projected[f.name]
                        ]
                    )
                ]
                known = evidence(conn, targets, [record.id for record, _ in planned], waiting)
                self._unseated(outcomes, standing, ruleset, batch, groups)
                for record, relevant in planned:
                    doc = person_document(record, groups.get(record.id, ()))
                    verdicts = standing.verdicts(record.id)
                    for rule_file in relevant:
                        self._entry(
                            computed, outcomes, standing, rule_file, record, doc, verdicts, known
                        )
            gone = sorted({pid for found in projected.values() for pid in found if pid not in seen})
            for start in range(0, len(gone), 2000):  # people deleted since they were projected
                chunk = gone[start : start + 2000]
                known = evidence(conn, targets, chunk, waiting)
                for rule_file in ruleset.files:
                    for person_id in chunk:
                        previous = projected[rule_file.name].get(person_id)
                        if previous is None:
                            continue
                        self._settle(
                            computed,
                            outcomes,
                            rule_file,
                            person_id,
                            person_id,
                            {},
                            Desired(in_scope=False),
                            previous,
                            known,
                        )
        counts = {
            name: sum(1 for p in found.values() if p.in_scope) for name, found in projected.items()
        }
        computed.plan = build_plan(
            ruleset,
            outcomes,
            population=population,
            projected_counts=counts,
            generated_at=now.isoformat(),
            only=only,
            rules_version=ruleset.version,
            refusals=unresolved,
        )
        computed.tracked = list(computed.plan.tracked)
        return computed

    def _unseated(
        self,
        outcomes: list[PersonOutcome],
        standing: Standing,
        ruleset: RuleSet,
        batch: list[Record],
        groups: dict[str, Any],
    ) -> None:
        """Eligible people the draw did not seat still need their data fixed: each missing
        required value is an attention item, and their role codes count among the unknown
        ones, whether or not a seat was free."""
        for rule_file in ruleset.files:
            draw = standing.draws[rule_file.name]
            for record in batch:
                rank = draw.ranked.get(record.id)
                if rank is None or record.id in draw.admitted:
                    continue
                doc = person_document(record, groups.get(record.id, ()))
                desired = desired_state(
                    record.id, doc, rule_file, standing.verdicts(record.id), admitted=True
                )
                missing = [p for p in desired.problems if p.reason.startswith("missing required")]
                codes = _role_codes(doc)
                if not missing and not codes:
                    continue
                seat = f"eligible, not drawn (rank {rank} of {draw.candidates})"
                outcomes.append(
                    PersonOutcome(
                        person_id=record.id,
                        label=record.name,
                        rule_file=rule_file.name,
                        target=rule_file.target,
                        in_scope=False,
                        intents=[],
                        problems=[
                            dataclasses.replace(p, reason=f"{p.reason} — {seat}") for p in missing
                        ],
                        role_codes=codes,
                        eligible=True,
                    )
                )

    def _entry(
        self,
        computed: Computed,
        outcomes: list[PersonOutcome],
        standing: Standing,
        rule_file: RuleFile,
        record: Record,
        doc: dict[str, Any],
        verdicts: dict[str, bool],
        known: Evidence,
    ) -> tuple[Desired, PersonOutcome]:
        """One stored person under one rule file: desired (the scope after the draw) and the
        plan's entry — for ``plan`` and ``explain`` alike."""
        desired = desired_state(
            record.id,
            doc,
            rule_file,
            verdicts,
            admitted=standing.admitted(rule_file, record.id),
        )
        previous = standing.projected[rule_file.name].get(record.id)
        outcome = self._settle(
            computed, outcomes, rule_file, record.id, record.name, doc, desired, previous, known
        )
        return desired, outcome

    def _settle(
        self,
        computed: Computed,
        outcomes: list[PersonOutcome],
        rule_file: RuleFile,
        person_id: str,
        label: str,
        doc: dict[str, Any],
        desired: Any,
        previous: Projection | None,
        known: Evidence,
    ) -> PersonOutcome:
        """The plan's entry for one person under one rule file (``explain`` reads the same)."""
        ledger, confirmed = known
        before = previous.state if previous else None
        lms = confirmed[rule_file.target].get(person_id)
        intents, _ = diff(person_id, desired, confirmed_view(rule_file, before, lms), rule_file)
        _, state = diff(person_id, desired, before, rule_file)  # the projection, as before
        blocked = ledger.blocked_reason(rule_file.target, person_id)
        outcome = PersonOutcome(
            person_id=person_id,
            label=label,
            rule_file=rule_file.name,
            target=rule_file.target,
            in_scope=desired.in_scope,
            intents=intents,
            problems=desired.problems,
            role_codes=_role_codes(doc),
            account=desired.account,
            tracked=[ledger.track(intent, label) for intent in intents],
            blocked=[blocked] if blocked else [],
        )
        outcomes.append(outcome)
        if self.selected is not None and rule_file.name not in self.selected:
            # A plan restricted with --only projects only what it sends.
            state = _narrowed(
                previous.state if previous else None,
                state,
                kept_intents(outcome, self.selected),
                rule_file,
            )
        if state is not None and (
            previous is None or state != previous.state or desired.in_scope != previous.in_scope
        ):
            computed.projections.append(
                (
                    Projection(
                        rule_file.name, person_id, rule_file.target, desired.in_scope, state
                    ),
                    previous is not None,
                )
            )
        return outcome

    def plan_document(self, *, only: set[str] | None = None) -> dict[str, Any]:
        computed = self.compute(only=only)
        document = plan_to_json(computed.plan)
        document["fingerprint"] = computed.fingerprint
        return document

    def apply(self, document: dict[str, Any], *, actor: str) -> tuple[str, str, int]:
        """Enqueue a saved plan in one transaction; (run id, status, intents enqueued).

        The plan is recomputed first: if the population or the rules changed since it was
        saved, it is stale and nothing is written (plan again, review, apply).
        """
        ruleset = self._ruleset()
        try:
            plan_from_json(document)
        except ValueError as exc:
            raise PlanError(f"not a plan file: {exc}") from exc
        if document.get("rules_version") != ruleset.version:
            raise PlanError(
                f"the plan was made with rules {document.get('rules_version')}, the bridge has {ruleset.version}: plan again"
            )
        only = set(document.get("only") or []) or None
        computed = self.compute(only=only)
        if computed.fingerprint != document.get("fingerprint"):
            raise PlanError(
                "the plan is stale: people or projections changed since it was made; plan again"
            )
        now = self.clock()
        with self.db.write() as conn:
            run_id, status, written = open_run(
                conn,
                computed.plan,
                computed.tracked,
                kind="apply",
                rules_version=ruleset.version,
                actor=actor,
                now=now,
            )
            for projection, existed in computed.projections:
                projections.save(
                    conn, projection, existed=existed, rules_version=ruleset.version, now=now
                )
        return run_id, status, written

    def approve(self, run_id: str, *, actor: str) -> int:
        """Release a quarantined run to the relay; the number of intents released. A held
        run's removals that a later write undid are cancelled instead (``brake``). The
        decision is journalled (op ``approve``) in the same transaction, as a rejection is."""
        with self.db.write() as conn:
            run = runs.get(conn, run_id)
            if run is None:
                raise PlanError(f"no run {run_id!r}")
            if run["status"] != "quarantined":
                raise PlanError(f"run {run_id} is {run['status']}, not quarantined")
            now = self.clock()
            if run["kind"] == runs.HELD:  # what the IdP restored since is not removed after all
                brake.drop_superseded(conn, run)
            released = outbox.release(conn, run_id) + outbox.release_held(conn, run_id, now)
            runs.approve(conn, run_id, actor=actor, now=now)
            journal.append(
                conn,
                journal.Entry(
                    at=now,
                    actor=actor,
                    op="approve",
                    detail={
                        "run": run_id,
                        "kind": run["kind"],
                        "target": (run.get("summary") or {}).get("target"),
                        "released": released,
                    },
                ),
            )
        return released

    def explain(self, key: str) -> Explanation:
        """Why a person gets what they get: the plan restricted to one person.

        The same standing (the conditions' SQL matches, the projections, each pilot's draw
        over the population), the same desired state and the same evidence as ``plan``, for
        one person: scope, pilot, mappings, each condition and each intent with where it
        stands, desired against what the LMS confirmed.
        """
        ruleset = self._ruleset()
        today = self.clock().date()
        with self.db.read() as conn:
            record = self.store.find_person(conn, key)
            if record is None:
                raise PlanError(f"no person with id, externalId or userName {key!r}")
            standing = read_standing(conn, self.store, ruleset, today)
            doc = person_document(record, self.store.groups_of(conn, [record.id])[record.id])
            targets = {f.target for f in ruleset.files}
            known = evidence(conn, targets, [record.id])
        ledger, confirmed = known
        verdicts = standing.verdicts(record.id)
        scratch = Computed(plan=None, standing=standing)  # type: ignore[arg-type]
        per_file = {}
        for rule_file in ruleset.files:
            desired, outcome = self._entry(
                scratch, [], standing, rule_file, record, doc, verdicts, known
            )
            seat = standing.admission(rule_file, record.id, record.external_id or record.id)
            per_file[rule_file.name] = (
                verdicts,
                seat.admitted,
                seat.reason,
                desired,
                outcome.intents,
            )
        return build_explanation(
            record.id,
            record.name,
            ruleset,
            per_file,
            ledger=ledger,
            confirmed={t: confirmed[t].get(record.id) for t in targets},
        )


_ACCOUNT_KINDS = {
    IntentKind.upsert_account,
    IntentKind.reactivate_account,
    IntentKind.suspend_account,
}


def _narrowed(
    previous: dict[str, Any] | None,
    new: dict[str, Any] | None,
    kept: list[Intent],
    rule_file: RuleFile,
) -> dict[str, Any] | None:
    """The previous projection with only the changes the kept intents send applied."""
    if new is None or not kept:
        return previous
    if previous is None and not any(i.kind == IntentKind.upsert_account for i in kept):
        return None
    state: dict[str, Any] = {
        "account": dict((previous or {}).get("account", {})),
        "active": (previous or {}).get("active", True),
        "assignments": dict((previous or {}).get("assignments", {})),
    }
    if any(i.kind in _ACCOUNT_KINDS for i in kept):
        state["account"], state["active"] = new["account"], new["active"]
    by_id = {a.id: state_key(a) for a in rule_file.assignments}
    for intent in kept:
        if intent.ref is None:
            continue
        key = by_id.get(intent.rule) or next(
            (
                k
                for k, v in state["assignments"].items()
                if v.get("rule") == intent.rule and v.get("ref") == intent.ref
            ),
            None,
        )
        if key is None:
            continue
        if key in new["assignments"]:
            state["assignments"][key] = new["assignments"][key]
        else:
            state["assignments"].pop(key, None)
    return state
