"""``bridge demo`` reads back what happened: the bridge's database and the simulator's state.

Everything the report shows comes from here, never from the generated sample.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.provision.resources import now_utc
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import links
from bridge.store import outbox
from bridge.store import projections
from bridge.store.engine import Database
from bridge.targets.moodle_findings import PROBE_IDNUMBER

TARGET = "moodle"
CATEGORIES = {
    "data_quality": "Data: fix the HR record",
    "configuration": "Setup: fix the LMS link or rules",
    "transient": "Temporary: LMS down or busy",
}
"""The dead letters' categories (``bridge errors``), in words for an HR admin."""


_MISSING = re.compile(r"^missing required (?P<attribute>\S+) \(from (?P<source>.+?)\)")
_WHAT = {
    "problems": "missing data",
    "duplicates": "shared id",
    "unknown_role_codes": "unknown code",
    "blocked": "waiting",
}


def _plain_reason(reason: str, details: Mapping[str, Any]) -> str:
    """The rules engine's reason, said for an HR admin (attribute paths left out)."""
    found = _MISSING.match(reason)
    if found is not None:
        return f"no {found['attribute']} in the HR record; the LMS needs one"
    if details.get("code") and details.get("count") == 1:
        suggestion = details.get("suggestion")
        return f"{details['code']}" + (f": did you mean {suggestion}?" if suggestion else "")
    return reason


def problems(
    rejected: Sequence[Mapping[str, Any]], attention: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Every person the bridge held back before the LMS, one row each: the records SCIM
    refused (``rejected``, from the day-1 answers) and the plan's attention items.

    Each row is ``{"what", "person", "why", "category"}``; ``category`` is the dead-letter
    category the problem belongs to (``data_quality``), or None for a person waiting behind
    a failed change (that change is counted as a dead letter already). The report lists
    these rows and counts them by category, so its list and its counts cannot disagree.
    """
    rows: list[dict[str, Any]] = []
    for item in rejected:
        duplicate = item.get("scimType") == "uniqueness"
        if duplicate:
            holder = item.get("held_by") or "another record"
            why = f"employee id {item['externalId']} already belongs to {holder}"
        else:
            why = f"the bridge refused this record (HTTP {item['status']}): {item['detail']}"
        rows.append(
            {
                "what": "duplicate id" if duplicate else "refused",
                "person": item["userName"],
                "why": why,
                "category": "data_quality",
            }
        )
    for kind, what in _WHAT.items():
        for item in attention.get(kind, ()):
            person = item["person"]
            examples = (item.get("details") or {}).get("examples") or []
            if kind == "unknown_role_codes" and len(examples) == 1:
                person = examples[0]
            rows.append(
                {
                    "what": what,
                    "person": person,
                    "why": _plain_reason(item["reason"], item.get("details") or {}),
                    "category": None if kind == "blocked" else "data_quality",
                }
            )
    return rows


def errors_by_category(
    rows: Sequence[Mapping[str, Any]], dead_letters: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """Per category: problems the bridge caught before the LMS (``rows`` of :func:`problems`)
    and changes the LMS refused (dead letters), and their total."""
    out: dict[str, dict[str, int]] = {}
    for name in CATEGORIES:
        held = sum(1 for row in rows if row["category"] == name)
        refused = int(dead_letters.get(name, 0))
        out[name] = {"held_back": held, "refused_by_lms": refused, "total": held + refused}
    return out


def journal_since(db: Database, since: int) -> list[journal.Entry]:
    entries: list[journal.Entry] = []
    with db.read() as conn:
        while True:
            page = journal.read(conn, since=since, limit=1000)
            if not page:
                return entries
            entries.extend(page)
            since = int(page[-1].seq or since)


def last_seq(db: Database, since: int = 0) -> int:
    entries = journal_since(db, since)
    return int(entries[-1].seq or since) if entries else since


FAILED = (outbox.DEAD, outbox.SKIPPED)
"""Outbox statuses of a change given up: a dead letter, or one an admin skipped."""


def outbox_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return outbox.counts(conn)


def lms_report(state: dict[str, Any], baseline: set[int]) -> dict[str, Any]:
    """Accounts, enrolments and cohort members the bridge made in the simulated Moodle."""
    moodle = state["moodle"]
    users = [
        u
        for u in moodle["users"]
        if u["id"] not in baseline
        and not u["deleted"]
        and u.get("idnumber") != PROBE_IDNUMBER  # the preflight's own probe account
    ]
    ours = {u["id"] for u in users}
    courses: dict[str, dict[str, int]] = {}
    for row in moodle["enrolments"]:
        if row["userid"] in ours:
            found = courses.setdefault(row["course"], {"active": 0, "suspended": 0})
            found[row["status"]] += 1
    cohort_names = {c["id"]: c["idnumber"] for c in moodle["cohorts"]}
    cohorts = Counter(
        cohort_names[m["cohortid"]] for m in moodle["cohort_members"] if m["userid"] in ours
    )
    return {
        "accounts": len(users),
        "accounts_active": sum(1 for u in users if not u["suspended"]),
        "accounts_suspended": sum(1 for u in users if u["suspended"]),
        "accounts_without_email": sum(1 for u in users if not u["email"]),
        "enrolments": dict(sorted(courses.items())),
        "cohort_members": dict(sorted(cohorts.items())),
        "web_service_calls": sum(moodle["calls"].values()),
        "calls": dict(sorted(moodle["calls"].items())),
    }


def bridge_report(
    db: Database,
    provisioner: Provisioner,
    catalog: Catalog,
    book: RuleBook,
    day_one_seq: int,
) -> dict[str, Any]:
    """What the bridge's database holds: outbox, dead letters, journal, scope, attention."""
    with db.read() as conn:
        counts = outbox.counts(conn)
        dead = outbox.dead_letters(conn, limit=100_000)
        linked = links.all_of(conn, TARGET)
        ruleset = book.current()
        files = ruleset.files if ruleset is not None else []
        in_scope = {f.name: projections.count_in_scope(conn, f.name) for f in files}
    planner = Planner(db, provisioner.store, catalog, book.current, now_utc)
    plan = planner.compute().plan
    entries = journal_since(db, day_one_seq)
    writes = [e for e in entries if not e.op.startswith("deliver.") and e.resource_type]
    deliveries = [e for e in entries if e.op.startswith("deliver.")]
    tolerances = Counter(t for e in writes for t in e.tolerances)
    attention: dict[str, list[dict[str, Any]]] = {
        "problems": [],
        "duplicates": [],
        "unknown_role_codes": [],
        "refused_duplicates": [],
        "blocked": [],
    }
    key = {
        "problem": "problems",
        "duplicate": "duplicates",
        "unknown-role-code": "unknown_role_codes",
        "duplicate-refused": "refused_duplicates",
        "blocked": "blocked",
    }
    for item in plan.attention:
        # an item about several people (one per unknown code, per refusal) has no label
        count = len(item.people)
        who = item.label or f"{count} {'person' if count == 1 else 'people'}"
        attention[key.get(item.kind, "problems")].append(
            {
                "person": who,
                "rule_file": item.rule_file,
                "reason": item.reason,
                "details": item.details,
            }
        )
    return {
        "outbox": dict(sorted(counts.items())),
        "dead_letters_by_category": {
            name: sum(1 for row in dead if row.get("category") == name) for name in CATEGORIES
        },
        "dead_letters": [
            {
                "id": row["id"],
                "category": row.get("category"),
                "intent": f"{row['intent'].get('kind')} {row['intent'].get('ref') or ''}".strip(),
                "error": str(row.get("last_error") or "")[:120],
            }
            for row in dead[:20]
        ],
        "linked_accounts": sum(1 for row in linked if row.get("lms_user_id")),
        "in_scope": in_scope,
        "population": plan.population,
        "pending_changes": len(plan.intents),
        "attention": attention,
        "people_needing_attention": plan.people_needing_attention,
        "journal": {
            "day1_last_seq": day_one_seq,
            "day2_first_seq": int(entries[0].seq or 0) if entries else None,
            "day2_last_seq": int(entries[-1].seq or 0) if entries else None,
            "day2_since": entries[0].at.isoformat() if entries else None,
            "day2_writes": len(writes),
            "day2_deliveries": len(deliveries),
            "day2_decisions": len(entries) - len(writes) - len(deliveries),
            "day2_tolerances": dict(sorted(tolerances.items())),
        },
    }
