"""``bridge explain`` for people: the explanation as text (``render_explanation``).

Per rule file: scope and pilot, each mapping with its value, each condition's verdict, the
LMS account as confirmed, and per intent where it stands — desired, pending (attempt, next
try, reason), waiting (why its target waits), failed, or confirmed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.explain import Explanation
from bridge.rules.explain import FileExplanation
from bridge.rules.plan_model import TO_MAKE
from bridge.rules.plan_model import Tracked

_VALUE_WIDTH = 40
_SYMBOLS = {
    IntentKind.upsert_account: "+",
    IntentKind.reactivate_account: "~",
    IntentKind.enrol: "+",
    IntentKind.add_cohort_member: "+",
    IntentKind.suspend_enrolment: "-",
    IntentKind.unenrol: "-",
    IntentKind.remove_cohort_member: "-",
    IntentKind.suspend_account: "-",
}


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > _VALUE_WIDTH:
        text = text[: _VALUE_WIDTH - 1] + "…"
    return text


def _mark(verdict: bool | None) -> str:
    if verdict is None:
        return "?"
    return "✓" if verdict else "✗"


def _intent_text(intent: Intent) -> str:
    symbol = _SYMBOLS.get(intent.kind, "~")
    if intent.kind == IntentKind.upsert_account and not intent.data.get("create"):
        symbol = "~"
    parts = [f"{symbol} {intent.kind.value}"]
    if intent.ref is not None:
        parts.append(intent.ref)
    parts.append(f"[{intent.rule}]")
    data = dict(intent.data)
    if intent.kind == IntentKind.upsert_account:
        parts.append("create" if data.pop("create", False) else "update")
        attributes = data.pop("attributes", {})
        if isinstance(attributes, dict) and attributes:
            parts.append(
                ", ".join(
                    f"{k}={'(cleared)' if v is None else _show(v)}" for k, v in attributes.items()
                )
            )
    data.pop("kind", None)
    if data:
        parts.append(" ".join(f"{k}={_show(v)}" for k, v in data.items()))
    return " ".join(parts)


def _render_file(file: FileExplanation) -> list[str]:
    out = [f"{file.rule_file}  ({file.path} → {file.target})"]
    if file.scope_filter is None:
        out.append("  scope    ✓ everyone (no scope filter)")
    else:
        out.append(f"  scope    {_mark(file.scope_verdict)} {file.scope_filter}")
    if file.pilot is None:
        out.append("  pilot    - no pilot")
    else:
        limits = []
        if file.pilot.get("max_people") is not None:
            limits.append(f"max {file.pilot['max_people']} people")
        if file.pilot.get("sample_percent") is not None:
            limits.append(f"{file.pilot['sample_percent']:g}% sample")
        if file.pilot.get("ends") is not None:
            limits.append(f"ends {file.pilot['ends']}")
        out.append(f"  pilot    {_mark(file.admitted)} {_admission(file)} ({', '.join(limits)})")
    if file.in_scope:
        active = "" if file.active else " (inactive: the account is suspended)"
        out.append(f"  → in scope{active}")
    else:
        out.append("  → not in scope: no mapping; any account from this file is suspended")
    out.extend(_lms_lines(file))

    if file.mappings:
        out.append("")
        out.append("  mapping")
        width = max(len(m.attribute) for m in file.mappings)
        sources = [f"← {m.source}" if m.source is not None else "= constant" for m in file.mappings]
        source_width = max(len(s) for s in sources)
        values = [_show(m.source_value) for m in file.mappings]
        value_width = max(len(v) for v in values)
        for mapping, source, value in zip(file.mappings, sources, values, strict=True):
            flags = []
            if mapping.required:
                flags.append("required")
            if mapping.on_create_only:
                flags.append("on create")
            suffix = f"  ({', '.join(flags)})" if flags else ""
            head = f"    {mapping.attribute:<{width}}  {source:<{source_width}}  "
            if not mapping.evaluated:
                out.append(f"{head}-  not mapped (out of scope){suffix}")
            elif mapping.problem is not None:
                out.append(f"{head}{value:<{value_width}}  ✗  {mapping.problem}")
            else:
                out.append(f"{head}{value:<{value_width}}  →  {_show(mapping.result)}{suffix}")

    if file.assignments:
        out.append("")
        out.append("  rules")
        id_width = max(len(a.id) for a in file.assignments)
        where_width = max(len(a.where) for a in file.assignments)
        for assignment in file.assignments:
            held = _held(assignment.confirmed) if file.looked_up else ""
            out.append(
                f"    {_mark(assignment.verdict)} {assignment.id:<{id_width}}  "
                f"{assignment.where:<{where_width}}  {assignment.condition}"
                f"  → {assignment.kind} {assignment.ref}{held}"
            )

    out.append("")
    tracked = file.tracked or [Tracked(intent) for intent in file.intents]
    if tracked:
        out.append("  intents  (desired, not confirmed by the LMS)")
        for entry in tracked:
            out.append(f"    {_intent_text(entry.intent)}")
            if file.looked_up or entry.state != TO_MAKE:
                out.append(f"        ↳ {entry.describe()}")
    else:
        out.append(f"  intents  none: {_nothing_to_send(file)}")
    if file.problems:
        out.append("  problems")
        out.extend(f"    ! {problem.reason}" for problem in file.problems)
    return out


def _admission(file: FileExplanation) -> str:
    """``admitted to the pilot``, ``drawn: rank 3 of 9…``, ``not admitted: waiting for…``."""
    reason = file.admission_reason
    if not reason:
        return "admitted" if file.admitted else "not admitted"
    if file.admitted or reason.startswith("not "):
        return reason
    return f"not admitted: {reason}"


def _lms_lines(file: FileExplanation) -> list[str]:
    out = []
    if file.looked_up:
        lms = file.lms
        if lms is None or not lms.has_account:
            out.append(f"  LMS      no account confirmed in {file.target}")
        else:
            who = f"account {lms.lms_user_id}" if lms.lms_user_id else "an account"
            state = "active" if lms.active else "suspended"
            when = f", confirmed {lms.confirmed_at}" if lms.confirmed_at else ""
            out.append(f"  LMS      {file.target} {who} ({state}){when}")
    if file.waiting:
        out.append(f"  target   {file.target}: waiting — {file.waiting}")
    if file.blocked:
        out.append(f"  blocked  {file.blocked}")
    return out


def _held(confirmed: Mapping[str, Any] | None) -> str:
    if confirmed is None:
        return "  · LMS: not held"
    text = f"  · LMS: {confirmed.get('status', 'active')}"
    if confirmed.get("at"):
        text += f" (confirmed {confirmed['at']})"
    if confirmed.get("due"):
        text += f", due {confirmed['due']}"
    return text


def _nothing_to_send(file: FileExplanation) -> str:
    if any(p.reason.startswith("missing required") for p in file.problems):
        return "the problems below hold the account back"
    if not file.looked_up:
        return "nothing to change"
    if file.lms is not None and file.lms.has_account:
        at = file.lms.confirmed_at
        return f"the LMS already matches (confirmed {at})" if at else "the LMS already matches"
    return f"no account in {file.target}, and none wanted"


def render_explanation(exp: Explanation) -> str:
    """The explanation for people: aligned columns, ✓/✗ per condition."""
    out = [f"Explain {exp.label} (person {exp.person_id}) — rules {exp.rules_version}"]
    if not exp.files:
        out.extend(["", "no rule file applies"])
    for file in exp.files:
        out.append("")
        out.extend(_render_file(file))
    return "\n".join(out) + "\n"
