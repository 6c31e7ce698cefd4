"""Where a planned intent stands (pure): the three states (DESIGN §4) never confused.

A plan diffs *desired* against what the LMS *confirmed* (:func:`confirmed_view` turns a
``links.confirmed`` document into the ``before`` of ``diff``), then looks each intent up in
the outbox and the target's health (a :class:`Ledger`): :data:`PENDING` (a row on its way),
:data:`WAITING` (its target is not ok), :data:`FAILED` (a dead letter: a change still to make)
or :data:`TO_MAKE`.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import state_key
from bridge.rules.model import RuleFile

TO_MAKE = "to_make"
"""Desired, not confirmed by the LMS, nothing in the outbox: ``bridge apply`` enqueues it."""
FAILED = "failed"
"""Desired, not confirmed, its delivery a dead letter: still to make (apply requeues the row)."""
PENDING = "pending"
"""Desired, not confirmed, a row on its way in the outbox (pending, retry, running, quarantined)."""
WAITING = "waiting"
"""Desired, not confirmed, and its target is not ok (unreachable or misconfigured)."""
STATES = (TO_MAKE, FAILED, PENDING, WAITING)
APPLIED = frozenset({TO_MAKE, FAILED})
"""The states ``bridge apply`` acts on."""

_ON_ITS_WAY = frozenset({"pending", "retry", "running", "quarantined"})
_HELD_BACK = frozenset({"pending", "retry"})
_DEAD = "dead"


@dataclass(frozen=True, slots=True)
class QueuedRow:
    """An outbox row as a plan reads it: the delivery of one intent, not settled for good."""

    id: int
    target: str
    person: str
    kind: str
    ref: str | None
    status: str
    """``pending``, ``retry``, ``running``, ``quarantined`` or ``dead``."""
    attempts: int = 0
    next_attempt_at: str | None = None
    """ISO 8601 text."""
    last_error: str | None = None
    category: str | None = None
    """Of a dead letter: ``configuration``, ``data_quality`` or ``transient``."""
    run_id: str | None = None

    def what(self) -> str:
        """``#12 enrol BEN-2026``."""
        return f"#{self.id} {self.kind}" + (f" {self.ref}" if self.ref else "")

    def failure(self) -> str:
        """``data_quality: <the LMS's words>`` (shortened)."""
        return f"{self.category or 'uncategorised'}: {_short(self.last_error or 'no message')}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "ref": self.ref,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "category": self.category,
            "run_id": self.run_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], target: str, person: str) -> QueuedRow:
        """Back from ``as_dict`` (ValueError when it is not one)."""
        try:
            row = cls(
                id=data["id"],
                target=target,
                person=person,
                kind=data["kind"],
                ref=data.get("ref"),
                status=data["status"],
                attempts=data.get("attempts", 0),
                next_attempt_at=data.get("next_attempt_at"),
                last_error=data.get("last_error"),
                category=data.get("category"),
                run_id=data.get("run_id"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an outbox row: {exc}") from None
        if type(row.id) is not int or type(row.attempts) is not int:
            raise ValueError("an outbox row's id and attempts are integers")
        texts = (row.kind, row.status)
        optional = (row.ref, row.next_attempt_at, row.last_error, row.category, row.run_id)
        if not all(type(t) is str for t in texts) or not all(
            t is None or type(t) is str for t in optional
        ):
            raise ValueError("an outbox row's kind, status and messages are text")
        return row


@dataclass(frozen=True, slots=True)
class Tracked:
    """One intent and where it stands: to make, failed, pending or waiting."""

    intent: Intent
    state: str = TO_MAKE
    row: QueuedRow | None = None
    """The outbox row the intent matched: the one on its way, or its dead letter."""
    blocked_by: QueuedRow | None = None
    """An earlier dead letter of the same person and target that holds ``row`` back."""
    waiting: str | None = None
    """Why the target's intents wait (its health is not ok)."""
    label: str = field(default="", compare=False)
    """How admins know the person (for text; not stored in the plan file)."""

    def details(self) -> dict[str, Any]:
        """The state and its evidence, as the plan file and ``explain --json`` carry them."""
        out: dict[str, Any] = {"state": self.state}
        if self.row is not None:
            out["outbox"] = self.row.as_dict()
        if self.blocked_by is not None:
            out["blocked_by"] = self.blocked_by.as_dict()
        if self.waiting is not None:
            out["waiting"] = self.waiting
        return out

    def describe(self) -> str:
        """The state for people: ``pending: outbox #3, attempt 2, next try …, last error …``."""
        row = self.row
        if self.state == WAITING:
            text = f"waiting — {self.waiting}"
            if row is not None and row.status == _DEAD:
                text += f"; its last delivery failed ({_failure(row)})"
            elif row is not None:
                text += f"; outbox #{row.id} ({row.status})"
            return text
        held = f"; its target waits — {self.waiting}" if self.waiting else ""
        if self.state == FAILED and row is not None:
            return (
                f"failed — {_failure(row)} (outbox #{row.id}, {_attempts(row.attempts)}); "
                f"still to make: `bridge apply` sends it again in place{held}"
            )
        if self.state == PENDING and row is not None:
            if row.status == "quarantined":
                text = f"pending: outbox #{row.id} quarantined until `bridge approve {row.run_id}`"
            elif row.status == "running":
                text = f"pending: outbox #{row.id} being delivered (attempt {row.attempts})"
            else:
                when = row.next_attempt_at or "now"
                text = f"pending: outbox #{row.id}, attempt {row.attempts + 1} at {when}"
                if row.attempts:
                    text += f" ({_attempts(row.attempts)} so far"
                    text += f"; last error: {_short(row.last_error)})" if row.last_error else ")"
            if self.blocked_by is not None:
                text += (
                    f"; blocked behind dead letter {self.blocked_by.what()} "
                    f"({_failure(self.blocked_by)})"
                )
            return text
        return f"to make: the LMS has not confirmed it and nothing is on its way{held}"


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _failure(row: QueuedRow) -> str:
    return row.failure()


def _attempts(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


class Ledger:
    """The outbox rows and target health intents are looked up in (pure; the caller reads them).

    ``rows``: rows not settled for good and dead letters, of the people being planned;
    ``waiting``: target → why its intents wait, for each target whose health is not ok.
    """

    def __init__(self, rows: Iterable[QueuedRow] = (), waiting: Mapping[str, str] | None = None):
        self.waiting = dict(waiting or {})
        self._rows: dict[tuple[str, str, str, str | None], list[QueuedRow]] = {}
        self._first_dead: dict[tuple[str, str], QueuedRow] = {}
        self._held: dict[tuple[str, str], list[QueuedRow]] = {}
        for row in sorted(rows, key=lambda r: r.id):
            self._rows.setdefault((row.target, row.person, row.kind, row.ref), []).append(row)
            queue = (row.target, row.person)
            if row.status == _DEAD:
                self._first_dead.setdefault(queue, row)
            elif row.status in _HELD_BACK:
                self._held.setdefault(queue, []).append(row)

    def track(self, intent: Intent, label: str = "") -> Tracked:
        """Where one intent stands (same target, person, kind and ref in the outbox).

        A row on its way that no dead letter holds back → pending; else a dead letter of the
        intent → failed (requeued in place, the rows behind it follow); else a row held back
        by another dead letter → pending, blocked; else to make. While the target's health
        is not ok a row on its way is waiting; an intent still to make (or failed) stays a
        change to make — apply enqueues it and it waits in the outbox — with the reason.
        """
        target, person = intent.target, intent.person
        rows = self._rows.get((target, person, intent.kind.value, intent.ref), [])
        first_dead = self._first_dead.get((target, person))
        on_its_way = [r for r in rows if r.status in _ON_ITS_WAY]
        free = [r for r in on_its_way if first_dead is None or r.id < first_dead.id]
        dead = [r for r in rows if r.status == _DEAD]
        row: QueuedRow | None
        blocked_by: QueuedRow | None = None
        if free:
            state, row = PENDING, free[-1]
        elif dead:
            state, row = FAILED, dead[-1]
        elif on_its_way:
            state, row, blocked_by = PENDING, on_its_way[-1], first_dead
        else:
            state, row = TO_MAKE, None
        waiting = self.waiting.get(target)
        if waiting is not None and state == PENDING:
            state = WAITING
        return Tracked(intent, state, row, blocked_by, waiting, label)

    def blocked(self, target: str, person: str) -> tuple[QueuedRow, list[QueuedRow]] | None:
        """The first dead letter of a person in a target and the rows it holds back (if any)."""
        dead = self._first_dead.get((target, person))
        if dead is None:
            return None
        behind = [row for row in self._held.get((target, person), []) if row.id > dead.id]
        return (dead, behind) if behind else None

    def blocked_reason(self, target: str, person: str) -> str | None:
        """Why a person's intents in a target are held back, for the attention list."""
        found = self.blocked(target, person)
        if found is None:
            return None
        dead, behind = found
        count = f"{len(behind)} later intent" + ("" if len(behind) == 1 else "s")
        return (
            f"{count} in {target} blocked behind dead letter {dead.what()} ({_failure(dead)}); "
            f"fix it, then `bridge apply` or `bridge errors retry {dead.id}`"
        )


@dataclass(frozen=True)
class Confirmed:
    """What one LMS confirmed holding for one person (``links``): the account id and the
    confirmed document (``account``, ``account_at``, ``active``, ``assignments`` as dicts)."""

    lms_user_id: str | None
    document: Mapping[str, Any]
    updated: str | None = None
    """When the LMS last confirmed anything for the person (ISO 8601)."""

    @property
    def has_account(self) -> bool:
        document = self.document
        return bool(self.lms_user_id or document.get("account_at") or document.get("account"))

    @property
    def account_at(self) -> str | None:
        found = self.document.get("account_at")
        return str(found) if found else None

    @property
    def confirmed_at(self) -> str | None:
        """When the account was confirmed, else when anything last was."""
        return self.account_at or self.updated

    @property
    def active(self) -> bool:
        return self.document.get("active", True) is not False

    def assignment(self, key: str) -> dict[str, Any] | None:
        found = (self.document.get("assignments") or {}).get(key)
        return dict(found) if isinstance(found, Mapping) else None


def confirmed_view(
    rule_file: RuleFile, projected: Mapping[str, Any] | None, confirmed: Confirmed | None
) -> dict[str, Any] | None:
    """The rule file's projection restricted to what the LMS confirmed: the ``before`` of
    ``diff`` for ``plan`` and ``explain`` (a dead letter is a change still to make).

    Account attributes are the rule file's (those it projected, and those its mapping
    writes), with the values the LMS confirmed: one never confirmed is missing, so it is
    sent; one the LMS holds but the person lost is cleared. ``active`` is as confirmed.
    Assignments are the rule file's (keyed like the projection: those it projected, those
    its rules name, those the LMS confirmed for one of its rules), with the confirmed status:
    one never confirmed is missing, one the projection already dropped but the LMS still
    holds is removed again. Nothing projected, or no account confirmed: no account (None).
    """
    if projected is None or confirmed is None or not confirmed.has_account:
        return None
    held = confirmed.document.get("account") or {}
    attributes = dict.fromkeys(projected.get("account") or {})
    attributes.update(dict.fromkeys(m.attribute for m in rule_file.mapping if not m.on_create_only))
    account = {key: held[key] for key in attributes if key in held}
    shapes: dict[str, Mapping[str, Any]] = {}
    for key, shape in (projected.get("assignments") or {}).items():
        shapes[key] = shape if isinstance(shape, Mapping) else {}
    rules = {assignment.id for assignment in rule_file.assignments}
    for assignment in rule_file.assignments:
        shapes.setdefault(state_key(assignment), {})
    for key, found in (confirmed.document.get("assignments") or {}).items():
        if isinstance(found, Mapping) and found.get("rule") in rules:
            shapes.setdefault(key, {})
    assignments: dict[str, Any] = {}
    for key, shape in sorted(shapes.items()):
        found = confirmed.assignment(key)
        if found is None:
            continue
        entry = {k: found[k] for k in ("rule", "kind", "ref") if found.get(k) is not None}
        entry.update({k: shape[k] for k in ("rule", "kind", "ref") if k in shape})
        entry["status"] = str(found.get("status", "active"))
        assignments[key] = entry
    return {"account": account, "active": confirmed.active, "assignments": assignments}
