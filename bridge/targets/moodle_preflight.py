"""Moodle preflight: whether a Moodle site can take what the rules will send it (LMS.md).

``check`` asks the site, in a handful of calls, and never from a cache: the token and the
service's functions (``core_webservice_get_site_info``), the auth plugin of created accounts
(``core_user_get_users`` by auth, when it is not a stock plugin), each course (by idnumber,
then shortname, as the target resolves it) and its manual enrolment instance, each cohort, and
the custom profile fields the mapping writes. No web-service function lists profile field
definitions, and Moodle silently drops values for fields it does not define, so a bridge-owned
probe account (``options.preflight_account``, default ``bridge-preflight``: auth nologin,
suspended) is written a marker and read back. What each answer means is decided by the pure
functions of ``bridge.targets.moodle_findings``.

The read-back commands (``bridge training --refresh``, ``bridge reconcile``) call functions
delivery does not: one missing from the service is a warning finding (``read_function``) that
names it and where to add it, and ``read_refusal`` is the message those commands refuse with.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_completion import COURSE_LOOKUP
from bridge.targets.moodle_completion import FUNCTIONS as COMPLETION_FUNCTIONS
from bridge.targets.moodle_findings import DEFAULT_AUTH
from bridge.targets.moodle_findings import PROBE_IDNUMBER
from bridge.targets.moodle_findings import PROBE_USERNAME
from bridge.targets.moodle_findings import REFUSED_AUTHS
from bridge.targets.moodle_findings import SERVICE
from bridge.targets.moodle_findings import SHORTNAME
from bridge.targets.moodle_findings import STOCK_AUTHS
from bridge.targets.moodle_findings import auth_finding
from bridge.targets.moodle_findings import cohort_finding
from bridge.targets.moodle_findings import course_finding
from bridge.targets.moodle_findings import credential_finding
from bridge.targets.moodle_findings import custom_fields
from bridge.targets.moodle_findings import dynamic_auth_finding
from bridge.targets.moodle_findings import function_findings
from bridge.targets.moodle_findings import lookup_failed
from bridge.targets.moodle_findings import path_findings
from bridge.targets.moodle_findings import probe_row
from bridge.targets.moodle_findings import profile_field_findings
from bridge.targets.moodle_findings import unverified
from bridge.targets.moodle_findings import username_finding
from bridge.targets.moodle_findings import wanted_functions
from bridge.targets.moodle_reconcile import READ_FUNCTIONS as RECONCILE_FUNCTIONS
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import Run
from bridge.targets.preflight import WARNING
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirement
from bridge.targets.preflight import Requirements
from bridge.targets.preflight import Unreachable
from bridge.targets.preflight import Verdict
from bridge.targets.preflight import unreachable_verdict

TRAINING = "bridge training --refresh"
RECONCILE = "bridge reconcile"
TRAINING_FUNCTIONS = (COURSE_LOOKUP, *COMPLETION_FUNCTIONS)
"""What ``bridge.targets.moodle_completion`` calls."""
READS: dict[str, tuple[str, ...]] = {TRAINING: TRAINING_FUNCTIONS, RECONCILE: RECONCILE_FUNCTIONS}
"""The read-back commands and the web-service functions each calls."""
FOR_COHORTS = frozenset({"core_cohort_search_cohorts", "core_cohort_get_cohort_members"})
FOR_COURSES = frozenset({*TRAINING_FUNCTIONS, "core_enrol_get_enrolled_users"})
"""Read only for rules that name a cohort, a course (the rest: always)."""


class _Site:
    """One preflight's calls through the target (its journal of calls is ``run``)."""

    def __init__(self, target: MoodleTarget) -> None:
        self.target = target
        self.run = Run()
        self.functions: frozenset[str] | None = None  # None: the service could not be listed

    def can(self, function: str) -> bool:
        return self.functions is None or function in self.functions

    @property
    def http(self) -> int | None:
        last = self.run.calls[-1] if self.run.calls else {}
        status = last.get("http")
        return int(status) if status is not None else None

    async def ask(self, function: str, params: Mapping[str, Any]) -> Any:
        try:
            return await self.target.call(self.run, function, params)
        except MoodleError as error:
            if error.category is None:
                raise Unreachable(error.message) from error
            raise


async def check(target: MoodleTarget, needs: Requirements) -> Verdict:
    """Every finding of one Moodle target against what the rules need of it."""
    site = _Site(target)
    findings: list[Finding] = []
    try:
        await _check(site, needs, findings)
    except Unreachable as exc:
        return unreachable_verdict(target.name, "Moodle", exc, findings, needs.where)
    return Verdict(target.name, tuple(findings))


async def _check(site: _Site, needs: Requirements, findings: list[Finding]) -> None:
    name, options = site.target.name, site.target.options
    try:
        info = await site.ask("core_webservice_get_site_info", {})
    except MoodleError as error:
        found = credential_finding(name, needs, error=error, http=site.http)
        findings.append(found)
        if found.check == "credential":
            return  # nothing else can be asked with this token
    else:
        findings.append(credential_finding(name, needs, info=info))
        listed = info.get("functions") if isinstance(info, dict) else None
        site.functions = frozenset(str(f.get("name")) for f in listed or [] if isinstance(f, dict))
        findings += function_findings(name, needs, site.functions)
        findings += read_findings(name, needs, site.functions)
    findings += await _auths(site, needs)
    findings += [await _course(site, course) for course in needs.courses]
    findings += [await _cohort(site, cohort) for cohort in needs.cohorts]
    findings += path_findings(name, needs)
    findings += await _profile_fields(site, needs)
    findings.append(username_finding(name, needs, options))


async def _auths(site: _Site, needs: Requirements) -> list[Finding]:
    name, options = site.target.name, site.target.options
    findings = []
    installed = [str(a) for a in options.get("auth_plugins") or []]
    for requirement in needs.auths or (Requirement(DEFAULT_AUTH, needs.where),):
        kind = requirement.subject
        accounts: int | None = None
        unknown = kind not in STOCK_AUTHS | REFUSED_AUTHS and kind not in installed
        if unknown and site.can("core_user_get_users"):
            try:
                answer = await site.ask(
                    "core_user_get_users", {"criteria": [{"key": "auth", "value": kind}]}
                )
            except MoodleError as error:
                findings.append(lookup_failed(name, "auth", kind, requirement.where, error))
                continue
            users = answer.get("users") if isinstance(answer, dict) else None
            accounts = len(users) if isinstance(users, list) else 0
        findings.append(auth_finding(name, requirement, installed=installed, accounts=accounts))
    dynamic = needs.extra.get("dynamic_auth")
    if dynamic:
        findings.append(dynamic_auth_finding(name, str(dynamic)))
    return findings


async def _course(site: _Site, requirement: Requirement) -> Finding:
    name, function = site.target.name, "core_course_get_courses_by_field"
    if not site.can(function):
        return unverified(name, "course", requirement, function)
    try:
        for field_ in ("idnumber", "shortname"):  # as MoodleTarget._course resolves refs
            answer = await site.ask(function, {"field": field_, "value": requirement.subject})
            courses = answer.get("courses") if isinstance(answer, dict) else None
            if courses:
                return course_finding(name, requirement, courses[0])
    except MoodleError as error:
        return lookup_failed(name, "course", requirement.subject, requirement.where, error)
    return course_finding(name, requirement, None)


async def _cohort(site: _Site, requirement: Requirement) -> Finding:
    name, function = site.target.name, "core_cohort_search_cohorts"
    if not site.can(function):
        return unverified(name, "cohort", requirement, function)
    params = {
        "query": requirement.subject,
        "context": {"contextlevel": "system", "instanceid": 0},
        "includes": "all",
    }
    try:
        answer = await site.ask(function, params)
    except MoodleError as error:
        return lookup_failed(name, "cohort", requirement.subject, requirement.where, error)
    cohorts = answer.get("cohorts") if isinstance(answer, dict) else None
    return cohort_finding(name, requirement, cohorts if isinstance(cohorts, list) else [])


PROBE_CALLS = ("core_user_get_users_by_field", "core_user_create_users", "core_user_update_users")


async def _profile_fields(site: _Site, needs: Requirements) -> list[Finding]:
    name, options = site.target.name, site.target.options
    fields = custom_fields(needs, options)
    probed = [(a, short) for a, short in fields if SHORTNAME.fullmatch(short)]
    if not probed:
        return profile_field_findings(name, fields, {})
    account = options.get("preflight_account", PROBE_USERNAME)
    if account is False:
        why = "the target option preflight_account is false (no probe account)"
        return profile_field_findings(name, fields, None, why)
    missing = [f for f in PROBE_CALLS if not site.can(f)]
    if missing:
        why = f"{', '.join(missing)} not in the service"
        return profile_field_findings(name, fields, None, why)
    named = isinstance(account, str) and account.strip()
    username = str(account).strip().lower() if named else PROBE_USERNAME
    try:
        read_back, why = await _probe(site, username, [short for _, short in probed])
    except MoodleError as error:
        read_back, why = None, f"the probe account {username!r} failed: {error.message}"
    return profile_field_findings(name, fields, read_back, why)


async def _probe(
    site: _Site, username: str, shortnames: list[str]
) -> tuple[dict[str, Any] | None, str]:
    """Write a marker to each field on the probe account and read the account back."""
    found = await site.ask(
        "core_user_get_users_by_field", {"field": "username", "values": [username]}
    )
    if found:
        user = found[0]
        if user.get("idnumber") != PROBE_IDNUMBER:
            return None, (
                f"username {username!r} belongs to an account the bridge did not create "
                "(set the target option preflight_account to another username)"
            )
        userid = int(user["id"])
    else:
        created = await site.ask("core_user_create_users", {"users": [probe_row(username)]})
        userid = int(created[0]["id"])
    marker = f"bridge-preflight-{secrets.token_hex(4)}"
    values = site.target.options.get("preflight_values") or {}
    custom = [{"type": short, "value": str(values.get(short, marker))} for short in shortnames]
    answer = await site.ask(
        "core_user_update_users",
        {"users": [{"id": userid, "suspended": 1, "customfields": custom}]},
    )
    warnings = answer.get("warnings") if isinstance(answer, dict) else None
    if warnings:
        said = "; ".join(str(w.get("message", w.get("warningcode"))) for w in warnings)
        return None, f"updating the probe account {username!r} failed: {said}"
    back = await site.ask("core_user_get_users_by_field", {"field": "id", "values": [userid]})
    fields = back[0].get("customfields") if back else None
    return {
        str(c.get("shortname")): c.get("value") for c in fields or [] if isinstance(c, dict)
    }, ""


# -- the read-back functions ------------------------------------------------------------------


def _read_for(function: str, needs: Requirements | None) -> bool:
    """Whether the rules make a read-back call ``function`` (None: any rules)."""
    if needs is None:
        return True
    if function in FOR_COHORTS:
        return bool(needs.cohorts)
    return bool(needs.courses) if function in FOR_COURSES else True


def missing_reads(
    functions: Iterable[str], needs: Requirements | None = None
) -> dict[str, list[str]]:
    """Each read-back function the service lacks → the commands that call it (pure), for the
    rules of ``needs`` (None: whatever the rules)."""
    allowed = set(functions)
    missing: dict[str, list[str]] = {}
    for command, needed in READS.items():
        for function in needed:
            if function not in allowed and _read_for(function, needs):
                missing.setdefault(function, []).append(command)
    return missing


def read_findings(target: str, needs: Requirements, functions: Iterable[str]) -> list[Finding]:
    """A warning per read-back function the service lacks (pure): delivery works without it,
    the commands that read back refuse (``read_refusal``). A function delivery needs too is
    left to ``function_findings``, whose error already names it."""
    delivery = wanted_functions(needs)
    missing = missing_reads(functions, needs)
    findings = [
        Finding(
            target,
            "read_function",
            False,
            f"{function} is not in the token's external service: {' and '.join(commands)} "
            "cannot run without it (delivery does not need it)",
            subject=function,
            severity=WARNING,
            where=needs.where,
            fix=f"add {function} under {SERVICE} → the token's service → Functions",
        )
        for function, commands in sorted(missing.items())
        if function not in delivery
    ]
    if not missing:
        count = len({f for needed in READS.values() for f in needed if _read_for(f, needs)})
        findings.append(
            Finding(
                target,
                "read_function",
                True,
                f"the {count} web-service function(s) the read-back commands call are in the "
                "service",
                where=needs.where,
            )
        )
    return findings


def refusal(
    command: str, functions: Iterable[str], needs: Requirements | None = None
) -> str | None:
    """Why ``command`` cannot run with a service holding ``functions`` (pure); None: it can."""
    missing = [f for f, commands in missing_reads(functions, needs).items() if command in commands]
    if not missing:
        return None
    return (
        f"{command} needs web-service functions the token's external service lacks: "
        f"{', '.join(missing)}; add each under {SERVICE} → the token's service → Functions "
        "(delivery does not need them)"
    )


async def read_refusal(
    target: MoodleTarget, command: str, needs: Requirements | None = None
) -> str | None:
    """Asks the site which functions the token's service holds (one
    ``core_webservice_get_site_info``) and says why ``command`` cannot run, or None. A site
    that cannot be asked is no refusal: the reads then fail on their own, with Moodle's words."""
    try:
        info = await target.call(Run(), "core_webservice_get_site_info", {})
    except MoodleError:
        return None
    listed = info.get("functions") if isinstance(info, dict) else None
    if not isinstance(listed, list):
        return None
    return refusal(command, (str(f.get("name")) for f in listed if isinstance(f, dict)), needs)
