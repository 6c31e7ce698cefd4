"""What to fix in one HR feed's records: work emails missing or not an address, and role
codes no catalogue knows, counted over the people the feed owns (``bridge quality``).

Pure: fed the feed's people one at a time; each finding says what to fix in the HRIS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bridge.rules.model import RuleSet
from bridge.rules.rolecodes import RoleCodeTally

HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
EXAMPLES = 5
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
"""An address the LMS will take: something @ a dotted domain, no spaces."""


def _emails(doc: dict[str, Any]) -> list[str]:
    found = doc.get("emails")
    values = (
        [e.get("value") for e in found if isinstance(e, dict)] if isinstance(found, list) else []
    )
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _finding(people: dict[str, str], fix: str) -> dict[str, Any]:
    return {"count": len(people), "examples": list(people.values())[:EXAMPLES], "fix": fix}


def feed_quality(
    people: Iterable[tuple[str, str, dict[str, Any]]], ruleset: RuleSet | None
) -> dict[str, Any]:
    """``(externalId, userName, SCIM document)`` of the feed's active people → the findings:
    ``missing_email``, ``invalid_email`` (count, examples, fix) and ``unknown_role_codes``
    (per code: count, examples, the nearest known code)."""
    missing: dict[str, str] = {}
    invalid: dict[str, str] = {}
    tally = RoleCodeTally(ruleset) if ruleset is not None else None
    count = 0
    for external_id, user_name, doc in people:
        count += 1
        label = f"{external_id} ({user_name})"
        emails = _emails(doc)
        if not emails:
            missing[external_id] = label
        elif not any(EMAIL.match(value) for value in emails):
            invalid[external_id] = f"{external_id}: {emails[0]!r}"
        codes = (doc.get(HR) or {}).get("roleCodes")
        if tally is not None and isinstance(codes, list):
            tally.add(external_id, label, [str(code) for code in codes])
    unknown = []
    for finding in tally.unknown() if tally is not None else []:
        fix = "correct the code in the HRIS"
        if finding.suggestion:
            fix += f" (did you mean {finding.suggestion}?)"
        fix += ", or declare it in the role-code catalogue (role-codes.yaml)"
        unknown.append(
            {
                "code": finding.code,
                "count": finding.count,
                "examples": list(finding.examples),
                "suggestion": finding.suggestion,
                "fix": fix,
            }
        )
    return {
        "people": count,
        "missing_email": _finding(
            missing, "set the work email in the HRIS: the LMS account needs one"
        ),
        "invalid_email": _finding(
            invalid, "correct the work email in the HRIS (name@company.example)"
        ),
        "unknown_role_codes": unknown,
    }
