"""Drift reconciliation: what an LMS holds against what it confirmed, as a plan.

The shell around :mod:`bridge.provision.drift`: links page by page, the LMS read in batches
and pages by a reader per target kind (``bridge.targets.moodle_reconcile``,
``canvas_reconcile``, ``scim_reconcile``: the :class:`Reader` protocol), the plan built like ``bridge plan``'s (bridge-plan/1
with ``source: reconcile``, safety verdicts, intents already on their way left alone), and
applied through the same outbox code as ``bridge apply`` (quarantined over the safety
threshold). What the bridge does not own — an enrolment in a managed course it never made, an
account it never created — is reported, never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from typing import Protocol

from bridge.provision.drift import NOT_OWNED
from bridge.provision.drift import UNCHECKED
from bridge.provision.drift import Drift
from bridge.provision.drift import FieldDrift
from bridge.provision.drift import Managed
from bridge.provision.drift import compare
from bridge.provision.drift import managed_of
from bridge.provision.drift import outcomes_of
from bridge.provision.evidence import evidence
from bridge.provision.evidence import waiting_targets
from bridge.provision.planning import intents_fingerprint
from bridge.provision.planning import open_run
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import RuleSet
from bridge.rules.plan import FAILED
from bridge.rules.plan import PersonOutcome
from bridge.rules.plan import Plan
from bridge.rules.plan import build_plan
from bridge.rules.plan import plan_to_json
from bridge.store import links
from bridge.store.engine import Database
from bridge.targets.moodle_reconcile import Participants

SOURCE = "reconcile"
KINDS = ("moodle", "canvas", "scim")
"""The target kinds a reconcile can read."""


class Reader(Protocol):
    """What a reconcile reads of one target (``MoodleReader``, ``CanvasReader``,
    ``ScimReader``): accounts by LMS id, who holds a course or cohort."""

    lms: str
    """What reasons call the LMS ("Moodle")."""
    reads: frozenset[AssignmentKind]
    """The assignment kinds whose holders it reads (the others: unchecked)."""
    calls: int
    """Calls made so far."""

    async def users(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The live accounts among ``ids`` (LMS ids), by id; a deleted one is absent."""
        ...

    async def holders(self, assignment: Assignment) -> Participants | None:
        """Who holds the assignment's course or cohort (None: the LMS has no such one)."""
        ...


def label_of(user: Mapping[str, Any], userid: int) -> str:
    """How a report names an account the bridge never created."""
    for key in ("username", "login_id", "userName"):
        if user.get(key):
            return str(user[key])
    return str(userid)


class ReconcileError(Exception):
    """A reconcile cannot run: no rules, an unknown target, a kind it cannot read."""


@dataclass
class Reconciled:
    """A reconcile's plan (bridge-plan/1) and every drift item found, owned or not."""

    plan: Plan
    drift: list[Drift]
    targets: list[str]
    reads: int = 0
    """How many web-service calls the reads took."""

    @property
    def fingerprint(self) -> str:
        return intents_fingerprint(
            [
                {
                    **entry.intent.as_dict(),
                    "state": entry.state,
                    "requeues": entry.row.id if entry.state == FAILED and entry.row else None,
                }
                for entry in self.plan.tracked
            ]
        )

    @property
    def exit_code(self) -> int:
        """0 no drift the bridge owns, 2 drift to re-assert (as ``bridge plan``)."""
        return self.plan.exit_code

    def document(self) -> dict[str, Any]:
        """The plan file with ``source: reconcile``, each intent's reason, and ``drift``."""
        document = plan_to_json(self.plan)
        document["fingerprint"] = self.fingerprint
        document["source"] = SOURCE
        document["targets"] = list(self.targets)
        reasons: dict[tuple[str, str, str, str | None], list[str]] = {}
        for item in self.drift:
            if item.intent is not None:
                key = (
                    item.intent.person,
                    item.intent.target,
                    item.intent.kind.value,
                    item.intent.ref,
                )
                reasons.setdefault(key, []).append(item.reason)
        for entry in (*document["intents"], *document["in_flight"]):
            key = (entry["person"], entry["target"], entry["kind"], entry.get("ref"))
            entry["reason"] = "; ".join(reasons.get(key, []))
        document["drift"] = [item.as_dict() for item in self.drift]
        return document


class Reconciler:
    """Reconciles LMS targets against what they confirmed; applies the result as a plan."""

    def __init__(
        self,
        db: Database,
        rules: Callable[[], RuleSet | None],
        clock: Callable[[], datetime],
        *,
        page: int = 500,
    ) -> None:
        self.db = db
        self.rules = rules
        self.clock = clock
        self.page = page

    def ruleset(self) -> RuleSet:
        ruleset = self.rules()
        if ruleset is None:
            raise ReconcileError("no rules loaded")
        return ruleset

    def targets(self, name: str | None) -> list[str]:
        """The targets to reconcile: ``name``, or every one a rule file drives; a kind the
        reconcile cannot read yet is an error (nothing is compared)."""
        ruleset = self.ruleset()
        if name is not None and name not in ruleset.targets:
            known = ", ".join(sorted(ruleset.targets)) or "none"
            raise ReconcileError(f"no target {name!r} (known: {known})")
        names = [name] if name is not None else sorted({f.target for f in ruleset.files})
        for chosen in names:
            kind = ruleset.targets[chosen].kind
            if kind not in KINDS:
                raise ReconcileError(
                    f"reconcile is not available for kind {kind} yet (target {chosen!r}); "
                    f"it reads: {', '.join(KINDS)}"
                )
        return names

    def targets_named(self, names: list[str]) -> list[str]:
        """The targets a saved reconcile read (each checked as ``targets`` does)."""
        if not names:
            raise ReconcileError("the reconcile names no target: reconcile again")
        return [found for name in names for found in self.targets(name)]

    async def compute(
        self,
        readers: Mapping[str, Reader],
        fields: Mapping[str, FieldDrift | None] | None = None,
    ) -> Reconciled:
        """Read each target (links page by page, the LMS in batches) and plan the drift;
        ``fields``: per target, how its mapped fields compare (default: Moodle's)."""
        ruleset = self.ruleset()
        now = self.clock()
        outcomes: list[PersonOutcome] = []
        drift: list[Drift] = []
        population = 0
        held: dict[str, int] = {}
        with self.db.read() as conn:
            waiting = waiting_targets(conn)
        for target, reader in readers.items():
            compare_fields = (fields or {}).get(target)
            managed, unread = await self._managed(ruleset, target, reader, compare_fields)
            drift.extend(unread)
            linked: set[int] = set()
            active = 0
            after: str | None = None
            while True:
                with self.db.read() as conn:
                    page = links.page(conn, target, after=after, limit=self.page)
                    people = [person for person, _, _ in page]
                    ledger, _ = evidence(conn, {target}, people, waiting)
                if not page:
                    break
                after = page[-1][0]
                users = await reader.users(lms for _, lms, _ in page if lms)
                for person, lms_user_id, confirmed in page:
                    if not _has_account(lms_user_id, confirmed):
                        continue  # never created: nothing the LMS could have lost
                    population += 1
                    active += confirmed.get("active", True) is not False
                    if lms_user_id and lms_user_id.isdigit():
                        linked.add(int(lms_user_id))
                    user = users.get(lms_user_id) if lms_user_id else None
                    found = compare(person, lms_user_id, confirmed, user, managed)
                    drift.extend(found)
                    outcomes.extend(outcomes_of(found, ledger, managed))
            drift.extend(await self._not_owned(managed, linked, reader))
            for rule_file in ruleset.files:
                if rule_file.target == target:
                    held[rule_file.name] = active
        plan = build_plan(
            ruleset,
            outcomes,
            population=population,
            projected_counts=held,
            generated_at=now.isoformat(),
            rules_version=ruleset.version,
        )
        reads = sum(reader.calls for reader in readers.values())
        return Reconciled(plan, drift, list(readers), reads)

    async def _managed(
        self,
        ruleset: RuleSet,
        target: str,
        reader: Reader,
        compare_fields: FieldDrift | None = None,
    ) -> tuple[Managed, list[Drift]]:
        """The managed courses and cohorts with who holds them, and what cannot be checked."""
        unread: list[Drift] = []
        held: dict[AssignmentKind, dict[str, Participants]] = {}
        skeleton = managed_of(ruleset, target, {}, reads=reader.reads)
        for assignment in skeleton.assignments.values():
            holders = await reader.holders(assignment)
            if holders is None:
                what = "cohort" if assignment.kind == AssignmentKind.cohort else "course"
                unread.append(
                    Drift(
                        UNCHECKED,
                        target,
                        f"no {reader.lms} {what} {assignment.ref!r}: not checked",
                        ref=assignment.ref,
                    )
                )
                continue
            held.setdefault(assignment.kind, {})[assignment.ref] = holders
        for rule_file in ruleset.files:
            for assignment in rule_file.assignments:
                if rule_file.target == target and assignment.kind not in reader.reads:
                    unread.append(
                        Drift(
                            UNCHECKED,
                            target,
                            f"{assignment.kind.value} {assignment.ref} ({assignment.id}): "
                            f"reconcile does not read its members in {reader.lms}",
                            ref=assignment.ref,
                        )
                    )
        managed = managed_of(
            ruleset,
            target,
            held.get(AssignmentKind.enrolment, {}),
            cohorts=held.get(AssignmentKind.cohort, {}),
            reads=reader.reads,
            lms=reader.lms,
            fields=compare_fields,
        )
        return managed, unread

    async def _not_owned(self, managed: Managed, linked: set[int], reader: Reader) -> list[Drift]:
        """Participants of managed courses and members of managed cohorts whose account the
        bridge never created."""
        strangers: dict[int, list[tuple[str, str]]] = {}
        places = [
            *((f"is enrolled in {ref}", p) for ref, p in sorted(managed.courses.items())),
            *((f"is a member of cohort {ref}", p) for ref, p in sorted(managed.cohorts.items())),
        ]
        for where, participants in places:
            for userid in sorted((participants.active | participants.suspended) - linked):
                enrolled = where.startswith("is enrolled")
                status = participants.status(userid) if enrolled else None
                said = f"{where} ({status})" if status else where
                strangers.setdefault(userid, []).append((where.rsplit(" ", 1)[-1], said))
        names = await reader.users(str(userid) for userid in strangers)
        found = []
        for userid, places_held in sorted(strangers.items()):
            label = label_of(names.get(str(userid)) or {}, userid)
            for ref, said in places_held:
                found.append(
                    Drift(
                        NOT_OWNED,
                        managed.target,
                        f"{managed.lms} user {userid} ({label}) {said}: "
                        "an account the bridge never created; left alone",
                        label=label,
                        ref=ref,
                        owned=False,
                    )
                )
        return found

    def apply(self, reconciled: Reconciled, *, actor: str) -> tuple[str, str, int]:
        """Enqueue a reconcile's intents in one transaction, as ``bridge apply`` does (the
        same outbox code; quarantined over the safety threshold); (run id, status, written)."""
        version = self.ruleset().version
        now = self.clock()
        with self.db.write() as conn:
            return open_run(
                conn,
                reconciled.plan,
                reconciled.plan.tracked,
                kind=SOURCE,
                rules_version=version,
                actor=actor,
                now=now,
            )


def _has_account(lms_user_id: str | None, confirmed: Mapping[str, Any]) -> bool:
    return bool(lms_user_id or confirmed.get("account_at") or confirmed.get("account"))
