"""SCIM target preflight: whether an LMS that speaks SCIM takes the credentials, and what of
the rules it cannot do (it enrols nobody: shared/LMS.md).

``check`` reads ``/ServiceProviderConfig`` (RFC 7644 §4) through ``ScimTarget.probe``; the
``*_finding(s)`` functions are pure.
"""

from __future__ import annotations

from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.preflight import WARNING
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirements
from bridge.targets.preflight import Verdict
from bridge.targets.scim import NO_COURSES
from bridge.targets.scim import SCIM_PATHS
from bridge.targets.scim import ScimTarget


def credential_finding(target: str, needs: Requirements, probe: Result) -> Finding:
    """What ``GET /ServiceProviderConfig`` said (``probe``: not a retry)."""
    variables = ", ".join(needs.credentials.values()) or "the credentials' variables"
    if probe.status is Status.done:
        return Finding(
            target,
            "credential",
            True,
            "credentials accepted: /ServiceProviderConfig answered",
            subject="/ServiceProviderConfig",
            where=needs.where,
        )
    if probe.detail.get("http_status") in (401, 403):
        return Finding(
            target,
            "credential",
            False,
            f"the credentials are refused ({probe.message})",
            subject=variables,
            where=needs.where,
            fix=f"create a SCIM token (or OAuth2 client) in the LMS's admin settings and set "
            f"{variables}",
        )
    return Finding(
        target,
        "credential",
        False,
        f"no SCIM service provider at the target's base_url: {probe.message}",
        subject="/ServiceProviderConfig",
        where=needs.where,
        fix="set base_url to the LMS's SCIM base URL (the one ending in /scim/v2)",
    )


def assignment_findings(target: str, needs: Requirements) -> list[Finding]:
    """Courses, cohorts and paths: none goes through SCIM."""
    return [
        Finding(
            target,
            check,
            False,
            f"{check} {requirement.subject!r}: {NO_COURSES}",
            subject=requirement.subject,
            where=requirement.where,
            fix=f"point the rule file of {requirement.where} at a rest target of the same LMS",
        )
        for check, requirements in (
            ("course", needs.courses),
            ("cohort", needs.cohorts),
            ("path", needs.paths),
        )
        for requirement in requirements
    ]


def attribute_findings(target: str, needs: Requirements, extra: dict[str, str]) -> list[Finding]:
    """Mapped attributes the target has no SCIM path for: it leaves them out of every call."""
    known = {**SCIM_PATHS, **extra}
    return [
        Finding(
            target,
            "attribute",
            False,
            f"{attribute.subject!r} has no SCIM attribute path: it is not sent",
            subject=attribute.subject,
            severity=WARNING,
            where=attribute.where,
            fix="map it to a SCIM path in the target option attributes, or remove it from "
            f"the mapping at {attribute.where}",
        )
        for attribute in needs.attributes
        if attribute.subject not in known
    ]


async def check(target: ScimTarget, needs: Requirements) -> Verdict:
    """Every finding of one SCIM target against what the rules need of it."""
    probe = await target.probe()
    if probe.status is Status.retry:
        unreachable = Finding(
            target.name,
            "reachable",
            False,
            f"the LMS did not answer: {probe.message}",
            severity=WARNING,
            where=needs.where,
            fix="check that the LMS is up and base_url is right; the relay keeps probing",
        )
        return Verdict(target.name, (unreachable,), unreachable=True)
    findings = [credential_finding(target.name, needs, probe)]
    findings += assignment_findings(target.name, needs)
    findings += attribute_findings(target.name, needs, target.extra)
    return Verdict(target.name, tuple(findings))
