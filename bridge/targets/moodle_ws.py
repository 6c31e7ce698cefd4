"""Moodle web-service requests and answers for the ``moodle`` target, as pure functions.

``flatten`` (nested parameters → PHP-style form keys), ``chunk`` (rows under PHP's
``max_input_vars``), ``user_row`` / ``changed_fields`` / ``enrolment_row`` / ``role_id``
(request builders), ``parse_answer`` and ``classify`` (Moodle answers HTTP 200 even for errors:
classify on ``errorcode``), ``pick_user`` (idnumber is not unique). Moodle's behaviour is
documented in LMS.md; written by hand, as no maintained client library covers it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from bridge.targets.base import Category

PATH = "/webservice/rest/server.php"
SERVER_FIELDS = 3  # wstoken, wsfunction, moodlewsrestformat
# Standard user fields of core_user_create_users / core_user_update_users (Moodle 4.3); any
# other attribute goes to a custom profile field, which Moodle ignores if it does not exist.
USER_FIELDS = frozenset(
    ("username", "firstname", "lastname", "email", "idnumber", "institution", "department")
    + ("city", "country", "lang", "timezone", "description", "phone1", "phone2", "address")
    + ("middlename", "alternatename", "firstnamephonetic", "lastnamephonetic", "interests")
    + ("maildisplay", "mailformat", "calendartype", "theme")
)
INTERNAL_AUTHS = frozenset({"manual", "email"})  # need a password or createpassword=1
DEFAULT_ROLE_IDS = {"manager": 1, "editingteacher": 3, "teacher": 4, "student": 5}
TRANSIENT_CODES = frozenset({"sitemaintenance"})
MAPPING_CODES = frozenset({"wsnoinstance", "wsusercannotassign", "wscannotenrol", "invalidrecord"})
DATA_CODES = frozenset({"invalidparameter", "useremailinvalid", "useremailduplicate"})


class MoodleError(Exception):
    """A step that failed: permanent (with a category) or transient (``category`` None)."""

    def __init__(
        self,
        message: str,
        *,
        category: Category | None = Category.configuration,
        after: float | None = None,
        errorcode: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.after = after
        self.errorcode = errorcode


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


def chunk(
    key: str, rows: Sequence[Mapping[str, Any]], budget: int
) -> list[list[Mapping[str, Any]]]:
    """Rows in batches whose flattened field count stays within ``budget`` (LMS.md).

    A row too big for any batch goes alone, for the call to refuse it.
    """
    batches: list[list[Mapping[str, Any]]] = [[]]
    used = 0
    for row in rows:
        size = len(flatten({key: [row]}))
        if batches[-1] and used + size > budget:
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


def classify(errorcode: str) -> Category | None:
    """The category of a Moodle exception's ``errorcode``; None: worth retrying.

    Anything not known to be the data's fault is ``configuration``: bad token
    (``invalidtoken``), function not in the service (``accessexception``), no capability…
    """
    if errorcode in TRANSIENT_CODES:
        return None
    if errorcode in MAPPING_CODES:
        return Category.configuration
    if errorcode in DATA_CODES:
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
        raise MoodleError(f"{function}: {code}: {message}", category=classify(code), errorcode=code)
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
