"""What a Moodle site's answers mean for the rules (pure): one ``Finding`` per check.

Each function takes what the site answered (``core_webservice_get_site_info``, a course, the
cohorts found, the probe account's read-back…) and says whether the rules can work, where the
rules depend on it and what to fix, in the words of Moodle 4.3's admin pages. The shell that
asks is ``bridge.targets.moodle_preflight``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from bridge.targets.moodle_ws import FUNCTIONS_BY_INTENT
from bridge.targets.moodle_ws import PATH
from bridge.targets.moodle_ws import PROBE_FUNCTIONS
from bridge.targets.moodle_ws import USER_FIELDS
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.preflight import WARNING
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirement
from bridge.targets.preflight import Requirements

# Auth plugins a stock Moodle 4.x ships (auth/*); core_user_create_users takes any installed
# one, enabled or not, except these two it refuses (user/externallib.php, create_users).
STOCK_AUTHS = frozenset(
    {"manual", "email", "oauth2", "cas", "ldap", "shibboleth", "lti", "nologin", "none", "db"}
)
REFUSED_AUTHS = frozenset({"mnet", "webservice"})
DEFAULT_AUTH = "manual"  # moodle_ws.user_row without an auth
PROBE_USERNAME = "bridge-preflight"
PROBE_IDNUMBER = "bridge-preflight"  # marks the probe account as the bridge's own
PROBE_DOMAIN = "example.invalid"  # RFC 2606: never delivered; passes Moodle's validate_email
SHORTNAME = re.compile(r"[A-Za-z0-9_]+")  # profile field short names (profile_define_base)

SERVICE = "Site administration → Server → Web services → External services"
TOKENS = "Site administration → Server → Web services → Manage tokens"
PROFILE_FIELDS = "Site administration → Users → Accounts → User profile fields"
COHORTS = "Site administration → Users → Accounts → Cohorts"
AUTH_PLUGINS = "Site administration → Plugins → Authentication → Manage authentication"


def credential_finding(
    target: str,
    needs: Requirements,
    *,
    info: Mapping[str, Any] | None = None,
    error: MoodleError | None = None,
    http: int | None = None,
) -> Finding:
    """What ``core_webservice_get_site_info`` said of the token (``info``, or ``error``)."""
    variable = needs.credentials.get("token", "the token's variable")
    if error is None:
        info = info or {}
        site = info.get("sitename") or "?"
        release = info.get("release") or "?"
        return Finding(
            target,
            "credential",
            True,
            f"token accepted by {site!s} (Moodle {release!s}) for user {info.get('username')}",
            subject="core_webservice_get_site_info",
            where=needs.where,
        )
    if error.errorcode == "invalidtoken":
        return Finding(
            target,
            "credential",
            False,
            f"the token is refused ({error.message})",
            subject=variable,
            where=needs.where,
            fix=f"create a token for the bridge's external service ({TOKENS}) and set "
            f"{variable} to it",
        )
    if http == 403:
        return Finding(
            target,
            "credential",
            False,
            "web services or the REST protocol are disabled (HTTP 403, empty answer)",
            subject=PATH,
            where=needs.where,
            fix="enable web services (Site administration → Advanced features → Enable web "
            "services) and the REST protocol (Site administration → Server → Web services → "
            "Manage protocols)",
        )
    if error.errorcode == "accessexception":
        return Finding(
            target,
            "function",
            False,
            "core_webservice_get_site_info is not in the token's external service: the "
            "functions the rules need cannot be listed",
            subject="core_webservice_get_site_info",
            where=needs.where,
            fix=f"add core_webservice_get_site_info to the service under {SERVICE}",
        )
    if error.errorcode:
        return Finding(
            target,
            "credential",
            False,
            f"the site refused the token: {error.message}",
            subject=variable,
            where=needs.where,
            fix=f"check the token in {variable} and its user ({TOKENS})",
        )
    return Finding(
        target,
        "credential",
        False,
        f"no Moodle web services at the target's base_url: {error.message}",
        subject=PATH,
        where=needs.where,
        fix=f"set base_url to the Moodle site's address (without {PATH})",
    )


def wanted_functions(needs: Requirements) -> dict[str, list[str]]:
    """Every web-service function the rules' intents (and the probe) call → the intents."""
    wanted: dict[str, list[str]] = {function: [] for function in PROBE_FUNCTIONS}
    for intent in needs.intents:
        for function in FUNCTIONS_BY_INTENT.get(intent.subject, ()):
            wanted.setdefault(function, []).append(intent.subject)
    return wanted


def function_findings(target: str, needs: Requirements, functions: Iterable[str]) -> list[Finding]:
    """An error per function the rules need that the service lacks; one ok for the rest."""
    allowed = set(functions)
    wheres = {intent.subject: intent.where for intent in needs.intents}
    findings, present = [], 0
    for function, intents in sorted(wanted_functions(needs).items()):
        if function in allowed:
            present += 1
            continue
        uses = ", ".join(intents) if intents else "the relay's probe"
        where = ", ".join(dict.fromkeys(wheres[i] for i in intents if wheres.get(i)))
        findings.append(
            Finding(
                target,
                "function",
                False,
                f"{function} is not in the token's external service: {uses} would fail "
                "(accessexception)",
                subject=function,
                where=where or needs.where,
                fix=f"add {function} to the service under {SERVICE} → Functions",
            )
        )
    if present:
        findings.insert(
            0,
            Finding(
                target,
                "function",
                True,
                f"{present} web-service function(s) the rules need are in the service",
                where=needs.where,
            ),
        )
    return findings


def auth_finding(
    target: str,
    requirement: Requirement,
    *,
    installed: Iterable[str] = (),
    accounts: int | None = None,
) -> Finding:
    """Whether ``core_user_create_users`` will take ``auth`` (``accounts``: how many accounts
    on the site use it; None when that could not be asked)."""
    kind, where = requirement.subject, requirement.where
    other = "set auth to a plugin the site has (manual, oauth2, …)"
    if kind in REFUSED_AUTHS:
        return Finding(
            target,
            "auth",
            False,
            f"core_user_create_users refuses auth {kind!r}",
            subject=kind,
            where=where,
            fix=f"{other} at {where}",
        )
    if kind in STOCK_AUTHS:
        message = f"auth {kind!r} is a stock Moodle auth plugin"
    elif kind in set(installed):
        message = f"auth {kind!r} is listed as installed in the target option auth_plugins"
    elif accounts:
        message = f"auth {kind!r} is installed: {accounts} account(s) on the site use it"
    else:
        seen = (
            "no account on the site uses it"
            if accounts is not None
            else "core_user_get_users is not in the service to see whether accounts use it"
        )
        return Finding(
            target,
            "auth",
            False,
            f"auth {kind!r} is not a stock Moodle auth plugin and {seen}: every account "
            f'create would fail (invalidparameter: the value is "{kind}", the server was '
            'expecting "auth" type)',
            subject=kind,
            where=where,
            fix=f"install and enable the {kind} auth plugin ({AUTH_PLUGINS}) and list it in "
            f"the target option auth_plugins, or {other} at {where}",
        )
    return Finding(target, "auth", True, message, subject=kind, where=where)


def course_finding(
    target: str, requirement: Requirement, course: Mapping[str, Any] | None
) -> Finding:
    """A course the rules enrol into, as ``core_course_get_courses_by_field`` found it."""
    ref, where = requirement.subject, requirement.where
    if course is None:
        return Finding(
            target,
            "course",
            False,
            f"no Moodle course with idnumber or shortname {ref!r}",
            subject=ref,
            where=where,
            fix=f"create the course with course ID number {ref!r}, or correct the course at "
            f"{where}",
        )
    name = course.get("shortname", ref)
    if "manual" not in (course.get("enrollmentmethods") or []):
        return Finding(
            target,
            "course",
            False,
            f"course {name!r} (id {course.get('id')}) has no enabled manual enrolment "
            "instance: enrol_manual_enrol_users would fail (wsnoinstance)",
            subject=ref,
            where=where,
            fix="add or enable the Manual enrolments method in the course (Course → "
            "Participants → Enrolment methods)",
        )
    return Finding(
        target,
        "course",
        True,
        f"course {name!r} (id {course.get('id')}) exists with a manual enrolment instance",
        subject=ref,
        where=where,
    )


def cohort_finding(
    target: str, requirement: Requirement, cohorts: Iterable[Mapping[str, Any]]
) -> Finding:
    """A cohort the rules manage, from ``core_cohort_search_cohorts`` (exact idnumber)."""
    ref, where = requirement.subject, requirement.where
    exact = [c for c in cohorts if c.get("idnumber") == ref]
    if not exact:
        return Finding(
            target,
            "cohort",
            False,
            f"no Moodle cohort with ID number {ref!r}",
            subject=ref,
            where=where,
            fix=f"create a cohort with cohort ID {ref!r} ({COHORTS}), or correct the cohort "
            f"at {where}",
        )
    return Finding(
        target,
        "cohort",
        True,
        f"cohort {exact[0].get('name', ref)!r} (id {exact[0].get('id')}) exists",
        subject=ref,
        where=where,
    )


def path_findings(target: str, needs: Requirements) -> list[Finding]:
    return [
        Finding(
            target,
            "path",
            False,
            f"Moodle has no learning paths: path {path.subject!r} cannot be assigned",
            subject=path.subject,
            where=path.where,
            fix=f"use a course (enrolments:) or a cohort (cohorts:) instead of the path at "
            f"{path.where}",
        )
        for path in needs.paths
    ]


def custom_fields(needs: Requirements, options: Mapping[str, Any]) -> list[tuple[Requirement, str]]:
    """The mapped attributes that go to custom profile fields, with each field's short name
    (``options.profile_fields`` renames; a rename to nothing drops the attribute)."""
    renames = options.get("profile_fields") or {}
    fields = []
    for attribute in needs.attributes:
        if attribute.subject in USER_FIELDS:
            continue
        short = renames.get(attribute.subject, attribute.subject)
        if short:
            fields.append((attribute, str(short)))
    return fields


def profile_field_findings(
    target: str,
    fields: Iterable[tuple[Requirement, str]],
    read_back: Mapping[str, Any] | None,
    unverified: str = "",
) -> list[Finding]:
    """Each custom field the mapping writes, by whether the probe account's read-back has it
    (``read_back``: short name → value; None: not probed, ``unverified`` says why)."""
    findings = []
    for attribute, short in fields:
        where = attribute.where
        if not SHORTNAME.fullmatch(short):
            findings.append(
                Finding(
                    target,
                    "profile_field",
                    False,
                    f"{attribute.subject!r} cannot be a Moodle profile field short name "
                    "(letters, digits and _ only)",
                    subject=short,
                    where=where,
                    fix="rename it in the target option profile_fields, or rename the "
                    f"attribute at {where}",
                )
            )
        elif read_back is None:
            findings.append(
                Finding(
                    target,
                    "profile_field",
                    False,
                    f"custom profile field {short!r} cannot be verified: {unverified}",
                    subject=short,
                    severity=WARNING,
                    where=where,
                    fix=f"check that {PROFILE_FIELDS} has a field with short name {short!r}",
                )
            )
        elif short in read_back:
            findings.append(
                Finding(
                    target,
                    "profile_field",
                    True,
                    f"custom profile field {short!r} is defined",
                    subject=short,
                    where=where,
                )
            )
        else:
            findings.append(
                Finding(
                    target,
                    "profile_field",
                    False,
                    f"custom profile field {short!r} is not defined: Moodle would silently "
                    f"drop every value of {attribute.subject!r}",
                    subject=short,
                    where=where,
                    fix=f"create a profile field with short name {short!r} ({PROFILE_FIELDS}), "
                    f"or remove {attribute.subject!r} from the mapping at {where} (a menu field "
                    "refuses the probe's marker: give one of its options in the target option "
                    f"preflight_values: {{{short}: …}})",
                )
            )
    return findings


def username_finding(target: str, needs: Requirements, options: Mapping[str, Any]) -> Finding:
    where = next((a.where for a in needs.attributes if a.subject == "username"), needs.where)
    if options.get("extended_username_chars") is True:
        return Finding(
            target,
            "username",
            True,
            "the site allows extended username characters (extendedusernamechars)",
            where=where,
        )
    return Finding(
        target,
        "username",
        True,
        "usernames must be lowercase ASCII letters, digits and _ - . @ (the target checks "
        "each value before sending it; a person whose username has other characters is a data "
        "quality error)",
        severity=WARNING,
        where=where,
        fix="if the site turns on extendedusernamechars, set the target option "
        "extended_username_chars: true",
    )


def probe_row(username: str) -> dict[str, Any]:
    """The probe account: nobody can log in to it (nologin, then suspended)."""
    # nologin counts as internal: Moodle wants a password (createpassword=1 would mail one).
    password = secrets.token_urlsafe(24) + "-Aa1"
    return {
        "username": username,
        "firstname": "Bridge",
        "lastname": "Preflight",
        "email": f"{username}@{PROBE_DOMAIN}",
        "idnumber": PROBE_IDNUMBER,
        "auth": "nologin",
        "password": password,
    }


def lookup_failed(target: str, check: str, subject: str, where: str, error: MoodleError) -> Finding:
    return Finding(
        target,
        check,
        False,
        f"cannot check {check} {subject!r}: {error.message}",
        subject=subject,
        where=where,
        fix=f"make sure the token's user may call it ({SERVICE})",
    )


def unverified(target: str, check: str, requirement: Requirement, function: str) -> Finding:
    return Finding(
        target,
        check,
        False,
        f"{check} {requirement.subject!r} cannot be verified: {function} is not in the service",
        subject=requirement.subject,
        severity=WARNING,
        where=requirement.where,
        fix=f"add {function} to the service under {SERVICE} → Functions",
    )


def dynamic_auth_finding(target: str, where: str) -> Finding:
    """``auth`` mapped from a SCIM attribute: no preflight can know the values."""
    return Finding(
        target,
        "auth",
        False,
        "auth comes from a SCIM attribute: each value must name an auth plugin the site has, "
        "which cannot be checked before it is sent",
        severity=WARNING,
        where=where,
        fix=f"prefer a constant auth (value:) or check the values against {AUTH_PLUGINS}",
    )
