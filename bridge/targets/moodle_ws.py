"""Moodle web-service requests and answers for the ``moodle`` target, as pure functions.

``flatten`` (nested parameters → PHP-style form keys), ``chunk`` (rows under PHP's
``max_input_vars``), ``user_row`` / ``changed_fields`` / ``enrolment_row`` / ``role_id``
(request builders), ``parse_answer`` and ``classify`` (Moodle answers HTTP 200 even for errors:
classify on ``errorcode`` and, where Moodle gives it, ``debuginfo``), ``pick_user`` (idnumber
is not unique), ``dropped_fields`` and ``confirmed_account`` (what the read-back shows);
``member_warnings`` (which member each cohort warning is about: Moodle names none);
``account_problems`` and ``valid_email`` (the values Moodle refuses) come from
``bridge.targets.moodle_values``. ``FUNCTIONS_BY_INTENT`` names every function the target may
call. Moodle's behaviour is documented in LMS.md; written by hand, as no maintained client
library covers it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from email.utils import parsedate_to_datetime
from typing import Any
from typing import TypeVar

from bridge.rules.target_fields import MOODLE_USER_FIELDS
from bridge.targets.base import Category
from bridge.targets.base import Result
from bridge.targets.moodle_values import account_problems as account_problems
from bridge.targets.moodle_values import valid_email as valid_email

T = TypeVar("T")
PATH = "/webservice/rest/server.php"
SERVER_FIELDS = 3  # wstoken, wsfunction, moodlewsrestformat
# Standard user fields of core_user_create_users / core_user_update_users (Moodle 4.3); any
# other attribute goes to a custom profile field, which Moodle ignores if it does not exist.
# Defined with the rules, so that `bridge rules check` and this target never disagree.
USER_FIELDS = MOODLE_USER_FIELDS
# is_internal() auth plugins need a password or createpassword=1 (observed on Moodle 4.3:
# nologin, lti and none too, auth_plugin_base's default; oauth2, cas, ldap, shibboleth do not).
INTERNAL_AUTHS = frozenset({"manual", "email", "nologin", "none", "lti"})
DEFAULT_ROLE_IDS = {"manager": 1, "editingteacher": 3, "teacher": 4, "student": 5}
TRANSIENT_CODES = frozenset({"sitemaintenance"})
WHOLE_CALL_CODES = frozenset(
    {
        "invalidtoken",
        "accessexception",
        "servicerequireslogin",
        "servicenotavailable",
        "webservicenotavailable",
        "sitemaintenance",
        "usernotfullysetup",
        "forcepasswordchangenotice",
    }
)
"""Errorcodes about a call itself (token, service, site), never about one of its rows: a batch
refused with one of them is not split to find a bad row."""
# core_user_update_users warnings about the value sent (the HR record's to fix)
DATA_CODES = frozenset({"useremailinvalid", "useremailduplicate"})
# invalidparameter's debuginfo, where the site has debugging on: whose fix it is. Anything
# else (and a bare "Invalid parameter value detected") is configuration until shown otherwise.
DATA_DEBUGINFO = (
    'the server was expecting "username" type',
    "Username already exists",
    "Email address is invalid",
    "Email address already exists",
    "cannot be blank",
)
AUTH_DEBUGINFO = ('the server was expecting "auth" type', "Invalid authentication type")
LANG_DEBUGINFO = ('the server was expecting "lang" type', "Invalid language code")

_ALREADY = re.compile(r"record already exists: cohort\((\w+):(.*) (\w+):(.*)\)")
_UNKNOWN = re.compile(r"(cohort|user) (\w+)=(.*) not exists")
_LOOKUP = "core_user_get_users_by_field"
_COURSE = "core_course_get_courses_by_field"
FUNCTIONS_BY_INTENT: dict[str, tuple[str, ...]] = {
    "upsert_account": (
        _LOOKUP,
        "core_user_create_users",
        "core_user_update_users",
        "core_user_get_users",  # who holds an email, when Moodle refuses an account bare
    ),
    "suspend_account": (_LOOKUP, "core_user_update_users"),
    "reactivate_account": (_LOOKUP, "core_user_update_users"),
    "enrol": (_LOOKUP, _COURSE, "enrol_manual_enrol_users"),
    "suspend_enrolment": (
        _LOOKUP,
        _COURSE,
        "core_enrol_get_users_courses",
        "enrol_manual_enrol_users",
    ),
    "unenrol": (_LOOKUP, _COURSE, "enrol_manual_unenrol_users"),
    "add_cohort_member": (_LOOKUP, "core_cohort_add_cohort_members"),
    "remove_cohort_member": (
        _LOOKUP,
        "core_cohort_search_cohorts",
        "core_cohort_delete_cohort_members",
    ),
}
"""Every web-service function the target may call for an intent kind, lookups and the
read-back included: the token's service must allow them all (``bridge targets check``)."""
PROBE_FUNCTIONS = ("core_webservice_get_site_info",)
"""What ``MoodleTarget.probe`` calls: the cheapest call that proves the token and the site."""


class MoodleError(Exception):
    """A step that failed: permanent (with a category) or transient (``category`` None)."""

    def __init__(
        self,
        message: str,
        *,
        category: Category | None = Category.configuration,
        after: float | None = None,
        errorcode: str = "",
        debuginfo: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.after = after
        self.errorcode = errorcode
        self.debuginfo = debuginfo


@dataclass
class Run:
    """One delivery's journal of calls, the account id once known, and the account as Moodle
    last answered it (``confirmed``: what the LMS holds, for the bridge to record)."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    user_id: str | None = None
    confirmed: dict[str, Any] | None = None

    @property
    def detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"calls": list(self.calls)}
        if self.confirmed is not None:
            detail["confirmed"] = self.confirmed
        return detail

    def result(self, error: MoodleError) -> Result:
        if error.category is None:
            result = Result.retry(error.message, after=error.after, **self.detail)
        else:
            result = Result.dead(error.category, error.message, **self.detail)
        return dataclasses.replace(result, lms_user_id=self.user_id)


def deleted_by_moodle(user: Mapping[str, Any]) -> bool:
    """Whether an account is one Moodle deleted: ``delete_user()`` keeps the row, sets the
    username to ``<email>.<time>`` and the email to the MD5 of the old username (no ``@``: no
    live account can have it, Moodle checks emails), and clears the idnumber;
    ``core_user_get_users_by_field`` by id still answers it (observed on Moodle 4.3)."""
    username, email = user.get("username"), user.get("email")
    if not isinstance(username, str) or not isinstance(email, str):
        return False
    return _MD5.fullmatch(email) is not None and _STAMPED.search(username) is not None


def live_users(answer: Any) -> list[dict[str, Any]]:
    """``core_user_get_users_by_field``'s answer, the accounts Moodle deleted left out
    (``deleted_by_moodle``); MoodleError when it is not the documented list."""
    if not isinstance(answer, list):
        raise MoodleError(f"core_user_get_users_by_field: unexpected answer {answer!r:.80}")
    return [user for user in answer if not deleted_by_moodle(user)]


_MD5 = re.compile(r"[0-9a-f]{32}")
_STAMPED = re.compile(r"\.\d+$")


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested parameters as PHP form fields: ``{"users": [{"a": 1}]}`` → ``users[0][a]=1``."""
    fields: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            fields.extend(flatten(value, name))
        elif isinstance(value, list | tuple):
            fields.extend(flatten({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            fields.append((name, "1" if value else "0"))
        else:
            fields.append((name, "" if value is None else str(value)))
    return fields


def chunk(key: str, rows: Sequence[T], budget: int, limit: int = 0) -> list[list[T]]:
    """Rows in batches whose flattened field count stays within ``budget`` (LMS.md) and, when
    ``limit`` is set, of at most ``limit`` rows. Rows are structures (``users[n][…]``) or
    scalars (``values[n]``). A row too big for any batch goes alone, for the call to refuse it.
    """
    batches: list[list[T]] = [[]]
    used = 0
    for row in rows:
        size = len(flatten({key: [row]}))
        full = limit > 0 and len(batches[-1]) >= limit
        if batches[-1] and (used + size > budget or full):
            batches.append([])
            used = 0
        batches[-1].append(row)
        used += size
    return [batch for batch in batches if batch]


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def classify(errorcode: str, debuginfo: str = "") -> Category | None:
    """The category of a Moodle exception's ``errorcode``; None: worth retrying.

    Only what names a value of the person is ``data_quality``: the update warnings about an
    email, and an ``invalidparameter`` whose ``debuginfo`` (debugging sites only) says the
    username or email is refused or taken, or a name is blank. Everything else is
    ``configuration``: bad token (``invalidtoken``), function not in the service
    (``accessexception``), an auth plugin the site lacks, no manual enrolment instance
    (``wsnoinstance``), a role that cannot be assigned, a missing course (``invalidrecord``), and
    a bare "Invalid parameter value detected" — the caller isolates that one when it can.
    """
    if errorcode in TRANSIENT_CODES:
        return None
    if errorcode in DATA_CODES:
        return Category.data_quality
    if errorcode == "invalidparameter" and any(m in debuginfo for m in DATA_DEBUGINFO):
        return Category.data_quality
    return Category.configuration


def parse_answer(
    function: str, status: int, headers: Mapping[str, str], body: bytes, now: float
) -> Any:
    """The decoded answer of one call, or MoodleError (retryable or not)."""
    if status == 429 or status >= 500:
        after = retry_after(headers.get("retry-after"), now)
        raise MoodleError(f"{function}: HTTP {status}", category=None, after=after)
    if status == 403 and not body:
        raise MoodleError(f"{function}: HTTP 403: web services or the REST protocol are disabled")
    if status != 200:
        raise MoodleError(f"{function}: HTTP {status}: {body[:200].decode(errors='replace')}")
    try:
        answer = json.loads(body) if body.strip() else None
    except ValueError:
        head = body[:120].decode(errors="replace")
        raise MoodleError(f"{function}: not a JSON answer: {head!r}") from None
    if isinstance(answer, dict) and "exception" in answer:
        code = str(answer.get("errorcode", ""))
        message = str(answer.get("message", ""))
        debuginfo = str(answer.get("debuginfo") or "")
        if debuginfo and debuginfo not in message:
            message = f"{message} ({debuginfo})"
        raise MoodleError(
            f"{function}: {code}: {message}",
            category=classify(code, debuginfo),
            errorcode=code,
            debuginfo=debuginfo,
        )
    return answer


def text(value: Any) -> str:
    """An attribute value as Moodle takes it: lists comma-joined, None empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(text(v) for v in value)
    return str(value)


def user_row(
    attributes: Mapping[str, Any], options: Mapping[str, Any], *, create: bool
) -> dict[str, Any]:
    """The ``users[0]`` row for core_user_create_users (``create``) or _update_users.

    Usernames are lowercased (Moodle rejects others); attributes that are not Moodle user
    fields become custom profile fields (``options.profile_fields`` renames them); ``auth``
    applies on create only, where an internal auth gets ``createpassword=1``.
    """
    row: dict[str, Any] = {}
    custom = []
    renames = options.get("profile_fields") or {}
    for name, value in attributes.items():
        if name in ("auth", "password", "suspended"):
            continue
        written = text(value).strip()
        if name == "username":
            written = written.lower()
        if name in USER_FIELDS:
            row[name] = written
        elif renames.get(name, name):
            custom.append({"type": str(renames.get(name, name)), "value": written})
    if custom:
        row["customfields"] = custom
    if create:
        row["auth"] = str(attributes.get("auth") or options.get("auth") or "manual")
        if row["auth"] in INTERNAL_AUTHS:
            row["createpassword"] = 1
    return row


def dropped_fields(row: Mapping[str, Any], user: Mapping[str, Any]) -> list[str]:
    """The custom profile fields ``row`` gave a value that the read-back ``user`` lacks: the
    site defines no such field, and Moodle dropped them silently (LMS.md)."""
    held = {str(c.get("shortname")) for c in user.get("customfields") or []}
    return [
        str(c["type"])
        for c in row.get("customfields") or []
        if str(c.get("value") or "") and str(c["type"]) not in held
    ]


def confirmed_account(user: Mapping[str, Any]) -> dict[str, Any]:
    """The account as Moodle answered it: its user fields, custom fields by short name."""
    kept = {
        k: v
        for k, v in user.items()
        if k in USER_FIELDS or k in ("id", "auth", "suspended", "fullname")
    }
    custom = {str(c.get("shortname")): c.get("value") for c in user.get("customfields") or []}
    if custom:
        kept["customfields"] = custom
    return kept


def changed_fields(row: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """What of an update ``row`` differs from the account Moodle returned."""
    custom = {c.get("shortname"): c.get("value") for c in user.get("customfields", [])}
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name == "customfields":
            fresh = [c for c in value if custom.get(c["type"], "") != c["value"]]
            if fresh:
                out[name] = fresh
        elif str(user.get(name, "")) != str(value):
            out[name] = value
    return out


def pick_user(
    found: Sequence[Mapping[str, Any]], username: str | None, idnumber: str | None
) -> Mapping[str, Any] | None:
    """Which of the accounts sharing an idnumber is the person (LMS.md: idnumber not unique)."""
    if len(found) <= 1:
        return found[0] if found else None
    same = [u for u in found if username and u.get("username") == username]
    if len(same) == 1:
        return same[0]
    ids = ", ".join(str(u.get("id")) for u in found)
    raise MoodleError(
        f"ambiguous idnumber {idnumber!r}: Moodle users {ids} share it",
        category=Category.data_quality,
    )


def role_id(role: str, options: Mapping[str, Any]) -> int:
    ids = {**DEFAULT_ROLE_IDS, **(options.get("role_ids") or {})}
    if "student_role_id" in options:
        ids["student"] = options["student_role_id"]
    if role not in ids:
        raise MoodleError(f"no Moodle role id for role {role!r}", category=Category.configuration)
    return int(ids[role])


def enrolment_row(
    userid: int, courseid: int, roleid: int, *, suspend: bool = False, timeend: int | None = None
) -> dict[str, Any]:
    """An ``enrolments[n]`` row. ``timeend`` ends the learner's access to the course (LMS.md):
    only a rule's ``access_ends`` sets it, never a due date."""
    row: dict[str, Any] = {"roleid": roleid, "userid": userid, "courseid": courseid}
    row["suspend"] = 1 if suspend else 0
    if timeend:
        row["timeend"] = timeend
    return row


@dataclass(frozen=True)
class Course:
    id: int
    shortname: str
    manual: bool  # has an enabled manual enrolment instance


def member_warnings(
    members: Sequence[Mapping[str, Any]], warnings: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any] | None] | None:
    """The core_cohort_add_cohort_members warning about each of ``members`` (None: added).

    Moodle's warnings carry no item id, only a message naming the cohort and the user as they
    were sent ("record already exists: cohort(idnumber:X id:7)", "user id=7 not exists",
    "cohort idnumber=X not exists"; observed in Moodle 4.3's cohort/externallib.php). None when
    a warning names no member sent: which member it is about cannot be told.
    """

    def value(member: Mapping[str, Any], side: str) -> str:
        return str(member[f"{side}type"]["value"])

    verdicts: list[Mapping[str, Any] | None] = [None] * len(members)
    for warning in warnings:
        message = str(warning.get("message", ""))
        already, unknown = _ALREADY.fullmatch(message), _UNKNOWN.fullmatch(message)
        if already is not None:
            cohort, user = already.group(2), already.group(4)
            named = [
                n
                for n, m in enumerate(members)
                if value(m, "cohort") == cohort and value(m, "user") == user
            ]
        elif unknown is not None:
            side, wanted = unknown.group(1), unknown.group(3)
            named = [n for n, m in enumerate(members) if value(m, side) == wanted]
        else:
            return None
        if not named:
            return None
        for n in named:
            verdicts[n] = verdicts[n] or warning
    return verdicts
