"""What Moodle accepts of an account's values, checked before anything is sent (pure).

Moodle refuses a whole ``core_user_create_users`` call for one bad value, and a production site
says only "Invalid parameter value detected". These checks replay Moodle 4.3's own: usernames
are ``clean_param(PARAM_USERNAME)`` (lowercase ASCII letters, digits and ``_ - . @`` unless the
site turns on ``extendedusernamechars``), emails ``validate_email()`` (ASCII, always), names
PARAM_NOTAGS, and the ``mdl_user`` column lengths. Each problem names the field, the value,
what Moodle accepts and the fix (observed on Moodle 4.3, Build 20231009; LMS.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# mdl_user column lengths (lib/db/install.xml, Moodle 4.3): a longer value fails the INSERT with
# dmlwriteexception "Error writing to database" (observed on Moodle 4.3 with PostgreSQL).
FIELD_LENGTHS = {
    "username": 100,
    "firstname": 100,
    "lastname": 100,
    "email": 100,
    "idnumber": 255,
    "institution": 255,
    "department": 255,
    "address": 255,
    "city": 120,
    "country": 2,
    "phone1": 20,
    "phone2": 20,
    "lang": 30,
    "timezone": 100,
    "middlename": 255,
    "alternatename": 255,
    "firstnamephonetic": 255,
    "lastnamephonetic": 255,
    "calendartype": 30,
    "theme": 50,
}
# PARAM_NOTAGS / PARAM_TEXT fields: strip_tags() would change a "<" not followed by a space,
# and validate_parameters refuses a value its cleaning changes.
TEXT_FIELDS = frozenset(
    {"firstname", "lastname", "institution", "department", "address", "city", "phone1"}
    | {"phone2", "middlename", "alternatename", "firstnamephonetic", "lastnamephonetic"}
)
USERNAME_CHARS = "a-z 0-9 _ - . @"
_PHP_TRIM = " \t\n\r\0\x0b"

# validate_email() (lib/weblib.php) is PHP's FILTER_VALIDATE_EMAIL on the address's bytes: ASCII
# only, a dotted domain, at most 64 octets before the "@", 320 in all, no "<" or ">". The regex
# of ext/filter/logical_filters.c, with two rewrites of the same language that keep Python's
# matcher linear; checked against PHP 8.2 in the tests.
_ATOM = rb"[\x21\x23-\x27\x2A\x2B\x2D\x2F-\x39\x3D\x3F\x5E-\x7E]+"
_QUOTED = rb"\x22(?:[\x01-\x08\x0B\x0C\x0E-\x1F\x21\x23-\x5B\x5D-\x7F]|\x5C[\x00-\x7F])*\x22"
_WORD = rb"(?:" + _ATOM + rb"|" + _QUOTED + rb")"
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HEX = rb"[a-f0-9]{1,4}"
_IPV6 = (
    rb"IPv6:(?:"
    + _HEX
    + rb"(?::"
    + _HEX
    + rb"){7}|(?!(?:.*[a-f0-9][:\]]){7,})(?:"
    + _HEX
    + rb"(?::"
    + _HEX
    + rb"){0,5})?::(?:"
    + _HEX
    + rb"(?::"
    + _HEX
    + rb"){0,5})?)"
)
_IPV4 = (
    rb"(?:IPv6:(?:"
    + _HEX
    + rb"(?::"
    + _HEX
    + rb"){5}:|(?!(?:.*[a-f0-9]:){5,})(?:"
    + _HEX
    + rb"(?::"
    + _HEX
    + rb"){0,3})?::(?:"
    + _HEX
    + rb"(?::"
    + _HEX
    + rb"){0,3}:)?))?"
    + _OCTET
    + rb"(?:\."
    + _OCTET
    + rb"){3}"
)
_DOMAIN = (
    rb"(?!.*[^.]{64,})(?:[a-z0-9]+(?:-+[a-z0-9]+)*\.)+"
    rb"(?:[a-z][a-z0-9]*|xn--[a-z0-9]+)(?:-+[a-z0-9]+)*"
)
_EMAIL = re.compile(
    rb"(?!(?:(?:\x22?\x5C[\x00-\x7E]\x22?)|(?:\x22?[^\x5C\x22]\x22?)){255,})"
    rb"(?!(?:(?:\x22?\x5C[\x00-\x7E]\x22?)|(?:\x22?[^\x5C\x22]\x22?)){65,}@)"
    + _WORD
    + rb"(?:\."
    + _WORD
    + rb")*@(?:"
    + _DOMAIN
    + rb"|\[(?:"
    + _IPV6
    + rb"|"
    + _IPV4
    + rb")\])",
    re.IGNORECASE,
)


def valid_email(address: str) -> bool:
    """Whether Moodle's ``validate_email()`` accepts ``address`` (with or without
    ``extendedusernamechars``: it never takes non-ASCII addresses)."""
    raw = address.encode("utf-8", "surrogatepass")
    if not raw or len(raw) > 320 or b"\n" in raw or b"\r" in raw or re.search(rb"[<>]", raw):
        return False
    return _EMAIL.fullmatch(raw) is not None


def clean_username(username: str, *, extended: bool) -> str:
    """``clean_param(PARAM_USERNAME)``: trimmed, lowercased and, unless the site has
    ``extendedusernamechars`` on, stripped of everything but a-z 0-9 _ - . @."""
    cleaned = username.strip(_PHP_TRIM).lower()
    if not extended:
        cleaned = re.sub(r"[^-.@_a-z0-9]", "", cleaned.replace(" ", ""))
    return cleaned


def _shown(value: str) -> str:
    return json.dumps(value if len(value) <= 60 else value[:57] + "…", ensure_ascii=False)


def username_problem(username: str, *, extended: bool) -> str | None:
    """Why Moodle would refuse ``username`` (None: it takes it as it is)."""
    if username.strip(_PHP_TRIM) == "":
        return "username is blank: map it from an identifier every HR record has"
    if clean_username(username, extended=extended) == username:
        return None
    if extended or username != username.lower() or username != username.strip(_PHP_TRIM):
        return (
            f"username {_shown(username)} is not in Moodle's form (lowercase, no spaces around "
            "it): add the trim and lower transforms to the username mapping"
        )
    return (
        f"username {_shown(username)} has letters outside {USERNAME_CHARS} (Moodle usernames "
        "are lowercase ASCII): add the ascii transform to the username mapping, or map it "
        "from the employee id"
    )


def email_problem(email: str) -> str | None:
    """Why Moodle's ``validate_email()`` would refuse ``email`` (None: it passes)."""
    if email.strip(_PHP_TRIM) == "":
        return "email is blank (Moodle requires a valid address): fill it in the HR record"
    if valid_email(email):
        return None
    if not email.isascii():
        return (
            f"email {_shown(email)} has letters outside ASCII (Moodle's validate_email takes "
            "ASCII addresses only, even with extendedusernamechars): correct it in the HR "
            "record, or add the ascii transform to the email mapping"
        )
    return (
        f"email {_shown(email)} is not an address Moodle accepts (validate_email: a local "
        "part of at most 64 characters, an @, a dotted domain name): correct it in the HR record"
    )


def value_problem(name: str, value: str, *, extended: bool = False) -> str | None:
    """Why Moodle would refuse ``value`` for the user field ``name`` (None: it takes it)."""
    problem: str | None = None
    if name == "username":
        problem = username_problem(value, extended=extended)
    elif name == "email":
        problem = email_problem(value)
    elif name in ("firstname", "lastname") and value.strip(_PHP_TRIM) == "":
        problem = f"{name} is blank (Moodle requires one): fill it in the HR record"
    elif name in TEXT_FIELDS and re.search(r"<(?!\s)", value):
        problem = (
            f"{name} {_shown(value)} holds markup, which Moodle strips and so refuses: "
            "correct it in the HR record"
        )
    if problem is None and name in FIELD_LENGTHS and len(value) > FIELD_LENGTHS[name]:
        problem = (
            f"{name} {_shown(value)} is {len(value)} characters; Moodle's {name} holds at most "
            f"{FIELD_LENGTHS[name]}: shorten it in the HR record"
        )
    return problem


def account_problems(
    row: Mapping[str, Any], *, extended: bool = False, create: bool = False
) -> list[str]:
    """Every value of a ``users[0]`` row Moodle would refuse, each naming the field, the value
    and the fix. ``create``: core_user_create_users, where username, firstname, lastname and
    email are required (a missing one is blank)."""
    required = ("username", "firstname", "lastname", "email") if create else ()
    values = {**dict.fromkeys(required, ""), **row}
    problems = (
        value_problem(name, value, extended=extended)
        for name, value in values.items()
        if isinstance(value, str)
    )
    return [problem for problem in problems if problem is not None]
