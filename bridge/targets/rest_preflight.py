"""REST target preflight: what a declarative ``rest`` target can verify before it sends.

A ``rest`` target declares requests for people (a lookup needs a person), not a probe, so
its credentials are not verified (one warning says so); what is checked is that it declares
a request for every intent kind the rules can produce. Pure.
"""

from __future__ import annotations

from collections.abc import Collection

from bridge.targets.preflight import WARNING
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirements
from bridge.targets.preflight import Verdict
from bridge.targets.rest import RestTarget


def request_findings(target: str, needs: Requirements, declared: Collection[str]) -> list[Finding]:
    """An error per intent kind the rules produce that the target has no request for."""
    findings = []
    for intent in needs.intents:
        request = "create_account" if intent.subject == "upsert_account" else intent.subject
        if request in declared:
            continue
        findings.append(
            Finding(
                target,
                "request",
                False,
                f"the target declares no {request} request: every {intent.subject} intent "
                "would be a dead letter",
                subject=request,
                where=intent.where,
                fix=f"add a {request} request to the target's options in targets.yaml (see "
                f"rules/examples/docebo), or remove the rules at {intent.where}",
            )
        )
    return findings


def check(target: RestTarget, needs: Requirements) -> Verdict:
    """Every finding of one rest target against what the rules need of it (no I/O)."""
    unverified = Finding(
        target.name,
        "credential",
        True,
        "not verified: a rest target declares no probe request",
        severity=WARNING,
        where=needs.where,
    )
    findings = [unverified, *request_findings(target.name, needs, target.spec.requests)]
    return Verdict(target.name, tuple(findings))
