"""Canvas preflight: whether a Canvas account can take what the rules will send it (LMS.md).

``check`` asks Canvas whether it takes the token (``CanvasTarget.probe``: ``GET
/api/v1/users/self``) and whether each course the rules enrol into exists under its SIS id,
by reading one enrollment of it (``GET /api/v1/courses/sis_course_id:X/enrollments``): the
call the target makes before it concludes or deactivates an enrollment. Canvas has no
cohorts; a learning path ref is enrolled into as a course. The ``*_finding`` functions are pure.
"""

from __future__ import annotations

import httpx

from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.canvas import CanvasTarget
from bridge.targets.canvas_api import NO_COHORTS
from bridge.targets.canvas_api import classify
from bridge.targets.canvas_api import course_ref
from bridge.targets.canvas_api import describe
from bridge.targets.canvas_api import json_body
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirement
from bridge.targets.preflight import Requirements
from bridge.targets.preflight import Unreachable
from bridge.targets.preflight import Verdict
from bridge.targets.preflight import unreachable_verdict

TOKENS = "Canvas: Account → Settings → Admins (an account admin), then the admin's Profile → "
TOKENS += "Settings → New access token"


def credential_finding(target: str, needs: Requirements, probe: Result) -> Finding:
    """What ``GET /api/v1/users/self`` said of the token (``probe``: not a retry)."""
    variable = needs.credentials.get("token", "the token's variable")
    status = probe.detail.get("http_status")
    if status == 401:
        return Finding(
            target,
            "credential",
            False,
            f"the token is refused ({probe.message})",
            subject=variable,
            where=needs.where,
            fix=f"create an access token for an account admin ({TOKENS}) and set {variable} to it",
        )
    user = probe.detail.get("user")
    said = (
        f"token accepted (user {user})"
        if user
        else f"token accepted (GET /api/v1/users/self answered {status})"
    )
    return Finding(target, "credential", True, said, subject=variable, where=needs.where)


def course_finding(target: str, requirement: Requirement, status: int, said: str) -> Finding:
    """A course the rules enrol into, by the status of listing its enrollments."""
    ref, where = requirement.subject, requirement.where
    if 200 <= status < 300:
        return Finding(
            target,
            "course",
            True,
            f"course {course_ref(ref)} exists and its enrollments can be read",
            subject=ref,
            where=where,
        )
    if status == 404:
        return Finding(
            target,
            "course",
            False,
            f"no Canvas course with SIS id {ref!r}",
            subject=ref,
            where=where,
            fix=f"create the course with SIS ID {ref!r} (or set the SIS ID on the course's "
            f"Settings page), or correct the course at {where}",
        )
    return Finding(
        target,
        "course",
        False,
        f"the token may not read course {course_ref(ref)}'s enrollments (HTTP {status}: {said})",
        subject=ref,
        where=where,
        fix="use the token of an account admin of the course's account",
    )


def cohort_findings(target: str, needs: Requirements) -> list[Finding]:
    return [
        Finding(
            target,
            "cohort",
            False,
            f"{NO_COHORTS}: cohort {cohort.subject!r} cannot be managed",
            subject=cohort.subject,
            where=cohort.where,
            fix=f"enrol into a course instead (enrolments:), or point the rule file at a "
            f"moodle target; the cohort is at {cohort.where}",
        )
        for cohort in needs.cohorts
    ]


async def _course(target: CanvasTarget, requirement: Requirement) -> Finding:
    path = f"/api/v1/courses/{course_ref(requirement.subject)}/enrollments"
    try:
        response = await target.client.get(path, params={"per_page": 1})
    except httpx.TransportError as exc:
        raise Unreachable(f"Canvas unreachable: {type(exc).__name__}: {exc}") from exc
    failed = classify(response)
    if failed is not None and failed.status is Status.retry:
        raise Unreachable(failed.message)
    said = describe(json_body(response)) or response.reason_phrase
    return course_finding(target.name, requirement, response.status_code, said)


async def check(target: CanvasTarget, needs: Requirements) -> Verdict:
    """Every finding of one Canvas target against what the rules need of it."""
    findings: list[Finding] = []
    probe = await target.probe()
    try:
        if probe.status is Status.retry:
            raise Unreachable(probe.message)
        findings.append(credential_finding(target.name, needs, probe))
        if findings[-1].ok:
            for requirement in (*needs.courses, *needs.paths):
                findings.append(await _course(target, requirement))
    except Unreachable as exc:
        return unreachable_verdict(target.name, "Canvas", exc, findings, needs.where)
    findings += cohort_findings(target.name, needs)
    return Verdict(target.name, tuple(findings))
