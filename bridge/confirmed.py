"""What a delivered intent confirms: the ``links.confirmed`` document the relay writes (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from datetime import timedelta
from typing import Any

from bridge.store import links


def confirm(
    state: Mapping[str, Any], intent: Mapping[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """The LMS state a delivered intent confirms (pure): the ``links.confirmed`` document.

    Assignments are kept in the shape of a projection (``status``, ``rule``, ``kind``,
    ``ref``) plus when the LMS confirmed them (``at``) and, for an enrolment whose rule has
    ``due:``, the due date the bridge keeps (from the confirmed enrolment; never an LMS end).
    """
    confirmed: dict[str, Any] = {
        "account": dict(state.get("account", {})),
        "active": state.get("active", True),
        "assignments": links.assignments_of(state),
    }
    if state.get("account_at"):
        confirmed["account_at"] = state["account_at"]
    kind, ref, data = intent["kind"], intent.get("ref"), intent.get("data") or {}
    at = now.isoformat() if now is not None else None
    key = None
    if ref is not None:
        prefix = (
            "cohort"
            if kind in ("add_cohort_member", "remove_cohort_member")
            else data.get("kind", "course")
        )
        key = f"{'course' if prefix in ('enrolment', 'course') else prefix}:{ref}"
    if kind == "upsert_account":
        confirmed["account"].update(data.get("attributes", {}))
        confirmed["account"] = {k: v for k, v in confirmed["account"].items() if v is not None}
        confirmed["account_at"] = at
    elif kind in ("suspend_account", "reactivate_account"):
        confirmed["active"] = kind == "reactivate_account"
    elif kind in ("enrol", "add_cohort_member") and key:
        before = confirmed["assignments"].get(key) or {}
        entry: dict[str, Any] = {
            "status": "active",
            "rule": intent.get("rule"),
            "kind": "cohort" if kind == "add_cohort_member" else data.get("kind", "enrolment"),
            "ref": ref,
            "at": at,
        }
        due_days = data.get("due_days")
        if before.get("status") == "active" and before.get("due"):
            entry["due"] = before["due"]  # re-asserted: the first confirmed enrolment counts
        elif due_days is not None and now is not None:
            entry["due"] = (now + timedelta(days=int(due_days))).date().isoformat()
        confirmed["assignments"][key] = entry
    elif kind == "suspend_enrolment" and key:
        before = confirmed["assignments"].get(key) or {
            "rule": intent.get("rule"),
            "kind": data.get("kind", "enrolment"),
            "ref": ref,
        }
        confirmed["assignments"][key] = {**before, "status": "suspended", "at": at}
    elif kind in ("unenrol", "remove_cohort_member") and key:
        confirmed["assignments"].pop(key, None)
    return confirmed
