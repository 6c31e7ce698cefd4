"""The plan file (pure): :func:`plan_to_json` / :func:`plan_from_json`, which ``bridge apply PLANFILE`` reads.

Plan JSON, format ``bridge-plan/1``
-----------------------------------

A single JSON object. Keys are always present (``null`` where noted); consumers must ignore
keys they do not know (the provision layer adds its own, e.g. a ``fingerprint`` of the
intents for stale-plan detection), producers add keys only in a backwards-compatible way, and
anything incompatible gets a new ``format``.

``format``
    The string ``"bridge-plan/1"``.
``generated_at``
    When the plan was computed (the caller's timestamp, ISO 8601 text, copied as given).
``rules_version``
    The content hash of the rules directory the plan was computed from (``RuleSet.version``).
    ``bridge apply`` should refuse a plan whose rules version is no longer current.
``population``
    How many stored people the plan looked at.
``only``
    ``null``, or the sorted list of assignment ids / rule-file names the plan was restricted to.
    A restricted plan holds only those rules' intents, plus the account creation (or
    reactivation) of the same rule file that a kept enrolment needs; rule files with no
    selected rule are left out of ``rules``, ``attention`` and ``safety``.
``status``
    ``"no-changes"`` (no intents), ``"changes"``, or ``"quarantined"`` (a rule file crossed a
    safety threshold: the plan needs an admin's approval before it is applied).
``exit_code``
    What ``bridge plan`` exits with: ``0`` no changes, ``2`` changes (also when quarantined).
    (``1``, an error, never appears in a plan.) Changes are the intents still to make and the
    failed ones (what ``bridge apply`` enqueues); pending and waiting intents are not.
``states``
    How many intents are in each state (DESIGN §4: desired vs confirmed, and what is on its
    way): ``{"to_make": n, "failed": n, "pending": n, "waiting": n}``, every key present.
    ``to_make`` and ``failed`` count ``intents``, ``pending`` and ``waiting`` count ``in_flight``.
``counts``
    An object with one key per *action*, every action always present, in this order:
    ``create_account``, ``update_account`` (both count ``upsert_account`` intents, split on
    ``data.create``), ``reactivate_account``, ``enrol``, ``add_cohort_member``,
    ``suspend_enrolment``, ``unenrol``, ``remove_cohort_member``, ``suspend_account``. Each value
    is ``{"kind": intent kind, "count": int, "examples": [label, ...]}`` with up to 3 distinct
    person labels (those with the smallest person ids). ``kind`` is the action itself except
    for the two account actions, whose kind is ``upsert_account``: sum the entries of a kind
    to count its intents.
``rules``
    An object: rule id (an assignment id, or a rule-file name for account intents) →
    ``{"rule_file": name, "counts": {action: int}}``; ``counts`` holds non-zero actions only.
    Every rule of the planned rule files is listed (so a rule that matched nobody shows up
    with empty counts), in rule-set order, then rules known only from projected state (a rule
    deleted from its file whose people are being suspended), sorted.
``attention``
    A list of ``{"person", "label", "rule_file", "kind", "reason", "people", "details"}``,
    sorted by kind (in the order below), reason, label, person. ``person`` (a person id) and
    ``label`` (how admins know them: the userName) are ``null`` on an item about several
    people (``unknown-role-code``, ``duplicate-refused``); ``people`` always lists every
    person id the item is about (``[person]`` on a one-person item); ``details`` is an object
    whose keys depend on the kind (``{}`` where none are listed). ``people`` and ``details``
    were added later: a plan file without them reads as ``[person]`` and ``{}``. ``kind`` is:

    ``"problem"``
        A missing required value, a transform that failed: the engine's problems; such a
        person gets no intents.
    ``"blocked"``
        A dead letter of the person holds their later intents on that target back (the relay
        keeps per-person order); reason e.g. ``2 later intents in moodle blocked behind dead
        letter #12 upsert_account (data_quality: …); fix it, then `bridge apply` or `bridge
        errors retry 12```.
    ``"duplicate-refused"``
        The SCIM server refused a write (POST, PUT, PATCH, or one in a Bulk) with 409
        ``uniqueness`` because another record already holds the identifier, and the conflict
        still holds (the holder keeps the value, nobody dismissed it); one item per refusal,
        however often the IdP retried it. ``rule_file`` is ``null``; ``people`` is the holder
        and, for a refused PUT or PATCH, the record it tried to change. ``details``:
        ``{"id" (the refusal: ``bridge quality dismiss ID``), "resource_type", "attribute"
        ("externalId" or "userName"), "value", "holder": {"id", "userName", "externalId"},
        "refused": {"id" (null for a POST), "userName", "externalId"}, "op" ("create",
        "replace", "patch"), "actor", "request_id" (of the last refused request),
        "first_seen", "last_seen" (ISO 8601), "count"}``. Reason e.g. ``duplicate externalId
        E123: create of bob@example.com refused 2 times (last …, by okta); held by
        ann@example.com; fix one of the two records, or `bridge quality dismiss 4```.
    ``"duplicate"``
        Two in-scope people map to the same ``idnumber`` / ``username`` / ``email`` of one
        target, usernames and emails compared case-insensitively; reason e.g. ``duplicate
        idnumber E123 also used by jane.smith``; everyone holding the value is listed, each
        naming the others; their intents are *not* held back.
    ``"unknown-role-code"``
        In-scope people hold a role code that is neither in the declared role-code catalogue
        nor named by any condition of any rule file (without a catalogue: named by no
        condition). One item per code; ``rule_file`` is ``null`` (the code is unknown to every
        file); ``people`` is everyone holding it; ``details`` is ``{"code", "count" (people
        holding it), "examples" (up to 3 labels, those with the smallest person ids),
        "suggestion" (the nearest known code, or null)}``; reason e.g. ``unknown role code
        BEN-CHOICE-2026 held by 3 people (ann.ko, bo.lee, cy.dunn): did you mean
        BEN_CHOICE_2026?`` (more than 3: ``(a, b, c, +2 more)``).
``safety``
    One object per planned rule file, in rule-set order: ``{"rule_file", "target",
    "removals", "projected", "removals_percent", "max_removals", "max_removals_percent",
    "verdict", "reason"}``. ``removals`` counts the intents of kinds ``suspend_enrolment``,
    ``unenrol``, ``remove_cohort_member``, ``suspend_account``; ``projected`` is how many
    people the LMS currently holds under the rule file (the percentage's base);
    ``removals_percent`` is ``removals * 100 / projected`` (``null`` when nothing is projected
    and nothing removed; 100 when there are removals but nothing projected, so that such
    inconsistent input quarantines rather than passes); the limits are ``null`` when not set;
    ``verdict`` is ``"quarantined"`` when removals > max_removals or removals_percent >
    max_removals_percent (at the limit is ``"ok"``), else ``"ok"``; ``reason`` says why, for
    people.
``intents``
    Every intent to enqueue: ``Intent.as_dict()`` (``{"kind", "person", "target", "rule",
    "ref"?, "data"?}``) plus where it stands. The plan diffs desired against what the LMS
    confirmed (``links``), so an intent here is a change the LMS does not hold yet. Ordered by
    person id, then by intent kind (account creation before enrolments before removals, the
    engine's order), then as the engine produced them, so that the same inputs always give
    the same file. Each entry also has:

    ``state``
        ``"to_make"`` (nothing in the outbox) or ``"failed"`` (its last delivery is a dead
        letter: ``bridge apply`` requeues that row in place, same id, with this intent).
    ``outbox``
        Only when the intent matched an outbox row (same target, person, kind and ref):
        ``{"id", "kind", "ref", "status", "attempts", "next_attempt_at" (ISO 8601 or null),
        "last_error", "category" (``configuration`` / ``data_quality`` / ``transient`` or
        null), "run_id"}``.
    ``blocked_by``
        Only when an earlier dead letter of the same person and target holds the row back:
        that dead letter, as ``outbox``.
    ``waiting``
        Why the target's intents wait (its health is not ok): in state ``waiting``, and on a
        ``to_make`` or ``failed`` intent whose target waits (apply enqueues it; it then waits
        in the outbox until the target passes its preflight or answers again).
``in_flight``
    The intents the plan does not enqueue, as ``intents`` (same order and keys), in state
    ``"pending"`` (a row on its way: pending, retry, running, or quarantined until approved;
    ``outbox`` says attempts, next try and last error) or ``"waiting"`` (the target is
    unreachable or fails preflight; plan again once it is ok).
"""

from __future__ import annotations

import json
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.plan_model import _KIND_OF_ACTION
from bridge.rules.plan_model import APPLIED
from bridge.rules.plan_model import STATES
from bridge.rules.plan_model import TO_MAKE
from bridge.rules.plan_model import WAITING
from bridge.rules.plan_model import ActionCount
from bridge.rules.plan_model import AttentionItem
from bridge.rules.plan_model import Plan
from bridge.rules.plan_model import QueuedRow
from bridge.rules.plan_model import RuleCount
from bridge.rules.plan_model import SafetyVerdict
from bridge.rules.plan_model import Tracked

FORMAT = "bridge-plan/1"


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan file (format ``bridge-plan/1``, documented in this module's docstring)."""
    return {
        "format": FORMAT,
        "generated_at": plan.generated_at,
        "rules_version": plan.rules_version,
        "population": plan.population,
        "only": list(plan.only) if plan.only is not None else None,
        "status": plan.status,
        "exit_code": plan.exit_code,
        "states": plan.state_counts(),
        "counts": {
            action: {
                "kind": _KIND_OF_ACTION[action],
                "count": tally.count,
                "examples": list(tally.examples),
            }
            for action, tally in plan.counts.items()
        },
        "rules": {
            rule_id: {"rule_file": rule_count.rule_file, "counts": dict(rule_count.counts)}
            for rule_id, rule_count in plan.rules.items()
        },
        "attention": [
            {
                "person": item.person,
                "label": item.label,
                "rule_file": item.rule_file,
                "kind": item.kind,
                "reason": item.reason,
                "people": list(item.people),
                "details": dict(item.details),
            }
            for item in plan.attention
        ],
        "safety": [
            {
                "rule_file": v.rule_file,
                "target": v.target,
                "removals": v.removals,
                "projected": v.projected,
                "removals_percent": v.removals_percent,
                "max_removals": v.max_removals,
                "max_removals_percent": v.max_removals_percent,
                "verdict": v.verdict,
                "reason": v.reason,
            }
            for v in plan.safety
        ],
        "intents": [_entry(entry) for entry in plan.tracked],
        "in_flight": [_entry(entry) for entry in plan.in_flight],
    }


def _entry(entry: Tracked) -> dict[str, Any]:
    out = entry.intent.as_dict()
    out.update(entry.details())
    return out


class _Reader:
    """Typed access to the plan JSON that turns every surprise into a clear ValueError."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"plan file: {where} must be an object, not {_kind(data)}")
        self.data = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], *, nullable: bool = False) -> Any:
        if key not in self.data:
            raise ValueError(f"plan file: {self.where} has no {key!r}")
        value = self.data[key]
        if value is None and nullable:
            return None
        ok = isinstance(value, kind) and not (
            isinstance(value, bool) and kind in (int, float, (int, float))
        )
        if not ok:
            raise ValueError(f"plan file: {self.where}.{key} has the wrong type ({_kind(value)})")
        return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


_INTENT_KINDS = {kind.value: kind for kind in IntentKind}


def _intent_error(index: int, raw: Any, key: str = "intents") -> ValueError:
    where = f"{key}[{index}]"
    entry = _Reader(raw, where)  # raises when not an object
    kind = entry.get("kind", str)
    if kind not in _INTENT_KINDS:
        return ValueError(
            f"plan file: {where} has unknown kind {kind!r} (known: {', '.join(_INTENT_KINDS)})"
        )
    for key in ("person", "target", "rule"):
        entry.get(key, str)
    if "ref" in raw:
        entry.get("ref", str, nullable=True)
    if "data" in raw:
        entry.get("data", dict)
    return ValueError(f"plan file: {where} is not a valid intent")


def plan_from_json(data: Any) -> Plan:
    """Read a plan file back; ValueError, saying what is wrong, on anything but bridge-plan/1."""
    if not isinstance(data, dict):
        raise ValueError(f"not a plan file: expected a JSON object, got {_kind(data)}")
    found = data.get("format")
    if found != FORMAT:
        raise ValueError(
            f"not a plan file of format {FORMAT!r} (format is {json.dumps(found)}); "
            "make the plan again with this bridge's `bridge plan --json`"
        )
    top = _Reader(data, "plan")
    status = top.get("status", str)
    if status not in ("no-changes", "changes", "quarantined"):
        raise ValueError(f"plan file: unknown status {status!r}")
    only = top.get("only", list, nullable=True)
    counts: dict[str, ActionCount] = {}
    for action, raw in top.get("counts", dict).items():
        entry = _Reader(raw, f"counts.{action}")
        if action not in _KIND_OF_ACTION:
            raise ValueError(f"plan file: counts has unknown action {action!r}")
        examples = entry.get("examples", list)
        if not all(isinstance(label, str) for label in examples):
            raise ValueError(f"plan file: counts.{action}.examples must be labels (text)")
        counts[action] = ActionCount(entry.get("count", int), list(examples))
    rules: dict[str, RuleCount] = {}
    for rule_id, raw in top.get("rules", dict).items():
        entry = _Reader(raw, f"rules.{rule_id}")
        rule_counts = entry.get("counts", dict)
        if not all(isinstance(n, int) for n in rule_counts.values()):
            raise ValueError(f"plan file: rules.{rule_id}.counts must map actions to integers")
        rules[rule_id] = RuleCount(entry.get("rule_file", str), dict(rule_counts))
    attention = [_attention(index, raw) for index, raw in enumerate(top.get("attention", list))]
    safety = []
    for index, raw in enumerate(top.get("safety", list)):
        entry = _Reader(raw, f"safety[{index}]")
        safety.append(
            SafetyVerdict(
                rule_file=entry.get("rule_file", str),
                target=entry.get("target", str),
                removals=entry.get("removals", int),
                projected=entry.get("projected", int),
                removals_percent=_number(
                    entry.get("removals_percent", (int, float), nullable=True)
                ),
                max_removals=entry.get("max_removals", int, nullable=True),
                max_removals_percent=_number(
                    entry.get("max_removals_percent", (int, float), nullable=True)
                ),
                verdict=entry.get("verdict", str),
                reason=entry.get("reason", str),
            )
        )
    tracked = _entries(top, "intents", APPLIED)
    in_flight = (
        _entries(top, "in_flight", frozenset(STATES) - APPLIED) if "in_flight" in data else []
    )
    exit_code = top.get("exit_code", int)
    if exit_code not in (0, 2):
        raise ValueError(f"plan file: exit_code must be 0 or 2, not {exit_code}")
    return Plan(
        generated_at=top.get("generated_at", str),
        rules_version=top.get("rules_version", str),
        population=top.get("population", int),
        only=[str(name) for name in only] if only is not None else None,
        status=status,
        exit_code=exit_code,
        counts=counts,
        rules=rules,
        attention=attention,
        safety=safety,
        tracked=tracked,
        in_flight=in_flight,
    )


def _attention(index: int, raw: Any) -> AttentionItem:
    """One attention entry (``people`` and ``details`` default for plan files without them)."""
    entry = _Reader(raw, f"attention[{index}]")
    for key in ("kind", "reason"):
        entry.get(key, str)
    for key in ("person", "label", "rule_file"):
        entry.get(key, str, nullable=True)
    people = raw.get("people", [raw["person"]] if raw["person"] is not None else [])
    if not isinstance(people, list) or not all(type(p) is str for p in people):
        raise ValueError(f"plan file: attention[{index}].people must be a list of person ids")
    details = raw.get("details", {})
    if not isinstance(details, dict):
        raise ValueError(f"plan file: attention[{index}].details must be an object")
    return AttentionItem(
        raw["person"],
        raw["label"],
        raw["rule_file"],
        raw["kind"],
        raw["reason"],
        people=tuple(people),
        details=details,
    )


def _tracked(intent: Intent, raw: dict[str, Any], where: str, allowed: frozenset[str]) -> Tracked:
    """One entry with its state and evidence (a plan file before states: still to make)."""
    state = raw.get("state", TO_MAKE)
    plain = not any(key in raw for key in ("outbox", "blocked_by", "waiting"))
    if state == TO_MAKE and state in allowed and plain:
        return Tracked(intent)
    if state not in allowed:
        raise ValueError(
            f"plan file: {where} has state {state!r} (here: {', '.join(sorted(allowed))})"
        )
    person, target = raw["person"], raw["target"]
    rows: dict[str, QueuedRow | None] = {}
    for key in ("outbox", "blocked_by"):
        found = raw.get(key)
        if found is None:
            rows[key] = None
            continue
        if not isinstance(found, dict):
            raise ValueError(f"plan file: {where}.{key} must be an object")
        try:
            rows[key] = QueuedRow.from_dict(found, target, person)
        except ValueError as exc:
            raise ValueError(f"plan file: {where}.{key}: {exc}") from None
    waiting = raw.get("waiting")
    if waiting is not None and type(waiting) is not str:
        raise ValueError(f"plan file: {where}.waiting must be text")
    if state == WAITING and waiting is None:
        raise ValueError(f"plan file: {where} is waiting without a reason")
    return Tracked(intent, state, rows["outbox"], rows["blocked_by"], waiting)


def _entries(top: _Reader, key: str, allowed: frozenset[str]) -> list[Tracked]:
    entries: list[Tracked] = []
    append = entries.append
    for index, raw in enumerate(top.get(key, list)):
        # fast path (a plan file holds 100,000s of intents); _intent_error explains failures
        try:
            kind = _INTENT_KINDS[raw["kind"]]
            person, target, rule = raw["person"], raw["target"], raw["rule"]
            ref, data_value = raw.get("ref"), raw.get("data", {})
        except (KeyError, TypeError, AttributeError):
            raise _intent_error(index, raw, key) from None
        if (
            type(person) is not str
            or type(target) is not str
            or type(rule) is not str
            or (ref is not None and type(ref) is not str)
            or type(data_value) is not dict
        ):
            raise _intent_error(index, raw, key)
        append(
            _tracked(
                Intent(kind, person, target, rule, ref, data_value), raw, f"{key}[{index}]", allowed
            )
        )
    return entries
