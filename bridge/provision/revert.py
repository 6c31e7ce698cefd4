"""Reversal from the journal: the inverse of a change, a run, or everything since a time.

Resource writes are undone by writing their before-images back through the Provisioner, so
the rules project the result and the outbox carries it to the LMS like any change: a created
user is deactivated (never deleted), a replaced or patched one restored, a membership change
inverted, a deleted one re-created. A run (an applied plan) is undone by its inverse intents
(enrol ↔ suspend enrolment, create ↔ suspend account, cohort add ↔ remove). A value changed
by someone else since stops the revert with a conflict instead of overwriting it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from bridge.provision.resources import Cause
from bridge.provision.resources import Provisioner
from bridge.store import journal
from bridge.store import outbox
from bridge.store import projections
from bridge.store import runs

_RESOURCE_OPS = ("create", "replace", "patch", "members", "delete")
_INVERSE = {
    "enrol": "suspend_enrolment",
    "suspend_enrolment": "enrol",
    "add_cohort_member": "remove_cohort_member",
    "remove_cohort_member": "add_cohort_member",
    "suspend_account": "reactivate_account",
    "reactivate_account": "suspend_account",
}


class RevertError(Exception):
    """Nothing to revert, or the selection is wrong."""


@dataclass
class Step:
    """One inverse change."""

    action: str  # deactivate | restore | members | recreate | intent
    seq: int | None
    resource_type: str
    resource_id: str
    label: str
    payload: Any = None
    conflict: str | None = None

    def describe(self) -> str:
        symbol = {
            "deactivate": "-",
            "restore": "~",
            "members": "~",
            "recreate": "+",
            "intent": "~",
        }[self.action]
        where = f" (seq {self.seq})" if self.seq is not None else ""
        text = f"  {symbol} {self.action:<10} {self.resource_type} {self.label}{where}"
        if self.action == "intent":
            text += f": {self.payload['kind']} {self.payload.get('ref') or ''}".rstrip()
        if self.conflict:
            text += f"\n      ! conflict: {self.conflict}"
        return text


@dataclass
class RevertPlan:
    selection: str
    steps: list[Step] = field(default_factory=list)
    run: str | None = None

    @property
    def conflicts(self) -> list[Step]:
        return [s for s in self.steps if s.conflict]

    def render(self) -> str:
        lines = [f"Revert {self.selection}: {len(self.steps)} change(s)"]
        lines += [step.describe() for step in self.steps]
        if self.conflicts:
            lines.append(f"{len(self.conflicts)} conflict(s): nothing is applied while any remain.")
        elif not self.steps:
            lines.append("Nothing to revert.")
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        if self.conflicts:
            return 1
        return 2 if self.steps else 0


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


class Reverter:
    """Builds and applies revert plans."""

    def __init__(self, provisioner: Provisioner) -> None:
        self.provisioner = provisioner
        self.db = provisioner.db
        self.store = provisioner.store

    # -- planning --------------------------------------------------------------------------

    def plan(
        self,
        *,
        seq: int | None = None,
        run: str | None = None,
        since: datetime | None = None,
        person: str | None = None,
    ) -> RevertPlan:
        if run is not None:
            return self._plan_run(run)
        with self.db.read() as conn:
            person_id = None
            if person is not None:
                found = self.store.find_person(conn, person)
                person_id = found.id if found is not None else person
            entries = [
                e
                for e in journal.read(conn, resource_id=person_id, limit=1_000_000)
                if e.op in _RESOURCE_OPS
            ]
            if seq is not None:
                entries = [e for e in entries if e.seq == seq]
                if not entries:
                    raise RevertError(f"seq {seq} is not a change of a user or group")
                selection = f"seq {seq}"
            elif since is not None:
                entries = [e for e in entries if _as_datetime(e.at) >= since]
                selection = f"changes since {since.isoformat()}"
            else:
                raise RevertError("give a SEQ, --run RUN or --since TIME")
            if person is not None:
                selection += f" of {person}"
            plan = RevertPlan(selection)
            by_resource: dict[str, list[journal.Entry]] = {}
            for entry in entries:
                by_resource.setdefault(str(entry.resource_id), []).append(entry)
            for resource_id, changes in by_resource.items():
                plan.steps.extend(self._steps(conn, resource_id, changes))
        return plan

    def _steps(self, conn: Any, resource_id: str, changes: list[journal.Entry]) -> list[Step]:
        """Undo a resource's changes (oldest first in ``changes``) back to before the first."""
        first = changes[0]
        resource_type = str(first.resource_type)
        current = self.store.get(conn, resource_type, resource_id)
        label = str(
            (first.before or first.after or {}).get("userName")
            or (first.before or first.after or {}).get("displayName")
            or resource_id
        )
        steps: list[Step] = []
        member_steps = [
            c
            for c in changes
            if c.detail and ({"added", "removed"} & set(c.detail)) and c.op != "delete"
        ]
        if first.op == "create":
            if current is None:
                return []
            if resource_type == "User":
                # Deactivation overwrites no value, so later changes by others are no conflict.
                if current.active is False:
                    return []
                return [Step("deactivate", first.seq, resource_type, resource_id, label)]
            return [
                Step(
                    "members",
                    first.seq,
                    resource_type,
                    resource_id,
                    label,
                    payload={"add": [], "remove": _members_now(self.store, conn, resource_id)},
                )
            ]
        if first.op == "delete":
            if current is not None:
                return []
            taken = self.store.find_person(conn, label) if resource_type == "User" else None
            conflict = f"{label} exists again (id {taken.id})" if taken is not None else None
            return [
                Step(
                    "recreate",
                    first.seq,
                    resource_type,
                    resource_id,
                    label,
                    payload=first.before,
                    conflict=conflict,
                )
            ]
        if current is None:
            return [
                Step(
                    "restore",
                    first.seq,
                    resource_type,
                    resource_id,
                    label,
                    conflict="the resource was deleted since",
                )
            ]
        documents = [c for c in changes if c.op in ("replace", "patch") and c.before is not None]
        if documents:
            expected = documents[-1].after
            conflict = None
            if expected is not None and current.doc != expected:
                conflict = (
                    "changed by someone else since (the current value is not what the change wrote)"
                )
            steps.append(
                Step(
                    "restore",
                    documents[0].seq,
                    resource_type,
                    resource_id,
                    label,
                    payload=documents[0].before,
                    conflict=conflict,
                )
            )
        if member_steps:
            add: list[str] = []
            remove: list[str] = []
            for change in reversed(member_steps):
                remove += change.detail.get("added", []) if change.detail else []
                add += change.detail.get("removed", []) if change.detail else []
            steps.append(
                Step(
                    "members",
                    member_steps[0].seq,
                    resource_type,
                    resource_id,
                    label,
                    payload={"add": add, "remove": remove},
                )
            )
        return steps

    def _plan_run(self, run_id: str) -> RevertPlan:
        with self.db.read() as conn:
            if runs.get(conn, run_id) is None:
                raise RevertError(f"no run {run_id!r}")
            rows = outbox.of_run(conn, run_id)
        plan = RevertPlan(f"run {run_id}", run=run_id)
        for row in reversed(rows):
            intent = dict(row["intent"])
            kind = intent["kind"]
            if kind == "upsert_account" and (intent.get("data") or {}).get("create"):
                inverse = {
                    **intent,
                    "kind": "suspend_account",
                    "data": {"reason": f"revert of run {run_id}"},
                }
            elif kind in _INVERSE:
                inverse = {**intent, "kind": _INVERSE[kind]}
            else:
                plan.steps.append(
                    Step(
                        "intent",
                        None,
                        "User",
                        intent["person"],
                        intent["person"],
                        payload=intent,
                        conflict="an attribute update has no before-image in the outbox; revert the SCIM change instead",
                    )
                )
                continue
            plan.steps.append(
                Step("intent", None, "User", intent["person"], intent["person"], payload=inverse)
            )
        return plan

    # -- applying --------------------------------------------------------------------------

    def apply(self, plan: RevertPlan, *, actor: str) -> list[int]:
        """Apply a conflict-free plan; the journal seqs it wrote."""
        if plan.conflicts:
            raise RevertError(f"{len(plan.conflicts)} conflict(s): resolve them first")
        if plan.run is not None:
            return self._apply_run(plan, actor)
        seqs: list[int] = []
        for step in plan.steps:
            cause = Cause(actor, f"revert-of-{step.seq}")
            if step.action == "deactivate":
                outcome = self.provisioner.patch(
                    cause,
                    step.resource_type,
                    step.resource_id,
                    [{"op": "replace", "path": "active", "value": False}],
                )
            elif step.action == "restore":
                outcome = self.provisioner.replace(
                    cause, step.resource_type, step.resource_id, dict(step.payload)
                )
            elif step.action == "members":
                operations = []
                if step.payload["remove"]:
                    operations.append(
                        {
                            "op": "remove",
                            "path": "members",
                            "value": [{"value": i} for i in step.payload["remove"]],
                        }
                    )
                if step.payload["add"]:
                    operations.append(
                        {
                            "op": "add",
                            "path": "members",
                            "value": [{"value": i} for i in step.payload["add"]],
                        }
                    )
                if not operations:
                    continue
                outcome = self.provisioner.patch(
                    cause, step.resource_type, step.resource_id, operations
                )
            else:  # recreate
                outcome = self.provisioner.create(cause, step.resource_type, dict(step.payload))
            if outcome.seq is not None:
                seqs.append(outcome.seq)
        return seqs

    def _apply_run(self, plan: RevertPlan, actor: str) -> list[int]:
        now = self.provisioner.clock()
        run_id = f"revert-{uuid.uuid4().hex[:8]}"
        intents = [step.payload for step in plan.steps]
        with self.db.write() as conn:
            runs.create(
                conn,
                run_id,
                kind="revert",
                status="applied",
                rules_version="-",
                summary={"reverts": plan.run, "intents": len(intents)},
                now=now,
                actor=actor,
            )
            outbox.enqueue(conn, intents, now=now, run_id=run_id)
            for intent in intents:
                _project_inverse(conn, intent, now)
            seq = journal.append(
                conn,
                journal.Entry(
                    at=now,
                    actor=actor,
                    op="revert",
                    detail={"run": plan.run, "revert_run": run_id, "intents": len(intents)},
                ),
            )
        return [seq]


def _members_now(store: Any, conn: Any, group_id: str) -> list[str]:
    return [m.value for m in store.members_of(conn, [group_id])[group_id]]


def _project_inverse(conn: Any, intent: dict[str, Any], now: datetime) -> None:
    """Keep the projections in step with an inverse intent enqueued for a run revert."""
    for projection in projections.of_person(conn, intent["person"], intent["target"]):
        state = projection.state
        ref = intent.get("ref")
        kind = intent["kind"]
        if kind in ("suspend_account", "reactivate_account"):
            state["active"] = kind == "reactivate_account"
        for key, value in list(state.get("assignments", {}).items()):
            if ref is None or value.get("ref") != ref:
                continue
            if kind == "suspend_enrolment":
                value["status"] = "suspended"
            elif kind in ("enrol", "add_cohort_member"):
                value["status"] = "active"
            elif kind == "remove_cohort_member":
                del state["assignments"][key]
        projections.save(conn, projection, existed=True, rules_version="revert", now=now)
