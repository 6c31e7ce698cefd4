"""The simulator's ``core_user`` web-service functions (Moodle 4.3, as LMS.md describes them).

``core_user_create_users`` and ``core_user_delete_users`` are transactional: one bad row and
nothing changes. ``core_user_update_users`` is per user: failures come back as warnings.
``core_user_get_users_by_field`` never returns deleted users.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from typing import Any

from bridge.lmssim.moodle_ws import OPTIONAL
from bridge.lmssim.moodle_ws import Desc
from bridge.lmssim.moodle_ws import Functions
from bridge.lmssim.moodle_ws import Multiple
from bridge.lmssim.moodle_ws import Single
from bridge.lmssim.moodle_ws import Value
from bridge.lmssim.moodle_ws import WsError
from bridge.lmssim.moodle_ws import clean
from bridge.lmssim.moodle_ws import default
from bridge.lmssim.moodle_ws import invalid_parameter
from bridge.lmssim.moodle_ws import optional
from bridge.lmssim.moodle_ws import rows
from bridge.lmssim.moodle_ws import valid_email

if TYPE_CHECKING:
    from bridge.lmssim.moodle import MoodleSite
    from bridge.lmssim.moodle import User

FUNCTIONS = Functions()

_PAIRS = Multiple(Single({"type": Value("alphanumext"), "value": Value("raw")}), OPTIONAL)
_PROFILE: dict[str, Desc] = {
    "maildisplay": optional("int"),
    "city": optional("notags"),
    "country": optional("alpha"),
    "timezone": optional("raw"),
    "description": optional("text"),
    "firstnamephonetic": optional("notags"),
    "lastnamephonetic": optional("notags"),
    "middlename": optional("notags"),
    "alternatename": optional("notags"),
    "interests": optional("text"),
    "institution": optional("text"),
    "department": optional("text"),
    "phone1": optional("notags"),
    "phone2": optional("notags"),
    "address": optional("text"),
    "theme": optional("safedir"),
    "mailformat": optional("int"),
    "preferences": _PAIRS,
    "customfields": _PAIRS,
}
_STANDARD = (*(k for k in _PROFILE if k not in ("preferences", "customfields")), "lang")
_INTERNAL_AUTHS = {"manual", "email"}  # auth plugins whose is_internal() is true


def _password_problems(password: str) -> str:
    """check_password_policy() with Moodle's default policy."""
    problems = []
    if len(password) < 8:
        problems.append("Passwords must be at least 8 characters long.")
    for pattern, what in (
        (r"\d", "digit(s)"),
        (r"[a-z]", "lower case letter(s)"),
        (r"[A-Z]", "upper case letter(s)"),
        (r"[^a-zA-Z0-9]", "special character(s) such as *, -, or #"),
    ):
        if not re.search(pattern, password):
            problems.append(f"Passwords must have at least 1 {what}.")
    return "".join(f"<div>{p}</div>" for p in problems)


def _policy_error(problems: str) -> WsError:
    # user_create_user() throws moodle_exception($errmsg): the message becomes the errorcode.
    return WsError(problems, f"error/{problems}")


def _user_details(site: MoodleSite, user: User) -> dict[str, Any]:
    """user_get_user_details(): empty optional fields are left out, as Moodle does."""
    details: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "fullname": f"{user.firstname} {user.lastname}",
        "email": user.email,
    }
    details.update({k: v for k, v in user.fields.items() if v})
    if user.idnumber:
        details["idnumber"] = user.idnumber
    details.update(auth=user.auth, suspended=user.suspended, confirmed=True, lang="en")
    details["firstaccess"] = details["lastaccess"] = 0
    custom = [
        {"type": "text", "value": v, "displayvalue": v, "name": k.title(), "shortname": k}
        for k, v in sorted(user.customfields.items())
        if v
    ]
    if custom:
        details["customfields"] = custom
    return details


@FUNCTIONS.register(
    "core_user_get_users_by_field", field=Value("alpha"), values=Multiple(Value("raw"))
)
def get_users_by_field(site: MoodleSite, params: dict[str, Any]) -> Any:
    # core_user::get_property_type(): emails are PARAM_RAW_TRIMMED, checked by the function
    kinds = {"id": "int", "idnumber": "raw", "username": "username", "email": "raw_trimmed"}
    field_ = params["field"]
    if field_ not in kinds:
        raise invalid_parameter("Invalid field name")
    wanted = set()
    for value in params["values"]:
        cleaned = clean(value, kinds[field_])
        if str(cleaned) != value:
            raise invalid_parameter(
                f"The field '{field_}' value is invalid: {value}(cleaned value: {cleaned})"
            )
        wanted.add(str(cleaned))
    return [
        _user_details(site, user)
        for user in sorted(site.users.values(), key=lambda u: u.id)
        if not user.deleted and str(getattr(user, field_)) in wanted
    ]


def _custom(site: MoodleSite, pairs: list[dict[str, str]]) -> dict[str, str]:
    # profile_save_data() only knows the site's profile fields: others vanish silently.
    return {p["type"]: p["value"] for p in pairs if p["type"] in site.profile_fields}


@FUNCTIONS.register(
    "core_user_create_users",
    users=rows(
        createpassword=optional("bool"),
        username=Value("username"),
        auth=default("safedir", "manual"),
        password=optional("raw"),
        firstname=Value("notags"),
        lastname=Value("notags"),
        email=Value("raw_trimmed"),  # core_user::get_property_type('email'): checked below
        idnumber=default("raw", ""),
        lang=default("safedir", "en"),
        calendartype=default("plugin", "gregorian"),
        **_PROFILE,
    ),
)
def create_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    usernames: set[str] = set()
    emails: set[str] = set()
    for row in params["users"]:  # the batch is one transaction: check every row first
        for name in ("username", "firstname", "lastname"):
            if row[name].strip() == "":
                raise invalid_parameter(f"The field {name} cannot be blank")
        if row["username"] in usernames or site.user_named(row["username"]) is not None:
            raise invalid_parameter(f"Username already exists: {row['username']}")
        if row["auth"] not in site.auths:
            raise invalid_parameter(f"Invalid authentication type: {row['auth']}")
        if row["lang"] != "en":
            raise invalid_parameter(f"Invalid language code: {row['lang']}")
        internal = row["auth"] in _INTERNAL_AUTHS
        if internal and not row.get("password") and not row.get("createpassword"):
            raise invalid_parameter(
                "Invalid password: you must provide a password, or set createpassword."
            )
        email = row["email"]
        if not valid_email(email):
            raise invalid_parameter(f"Email address is invalid: {email}")
        if not site.allow_accounts_same_email and (
            email.lower() in emails or site.email_taken(email)
        ):
            raise invalid_parameter(f"Email address already exists: {email}")
        if internal and row.get("password") and not row.get("createpassword"):
            problems = _password_problems(row["password"])
            if problems:
                raise _policy_error(problems)
        usernames.add(row["username"])
        emails.add(email.lower())
    created = []
    for row in params["users"]:
        user = site.add_user(
            row["username"],
            firstname=row["firstname"],
            lastname=row["lastname"],
            email=row["email"],
            idnumber=row["idnumber"],
            auth=row["auth"],
            password=bool(row.get("password") or row.get("createpassword")),
            **{k: row[k] for k in _STANDARD if k in row and k != "lang"},
        )
        user.customfields = _custom(site, row.get("customfields", []))
        created.append({"id": user.id, "username": user.username})
    return created


def _update_one(site: MoodleSite, row: dict[str, Any]) -> None:
    user = site.users.get(row["id"])
    if user is None:
        raise WsError("invaliduserid", "Invalid user id")
    if user.deleted:
        raise WsError("usernotupdateddeleted", "User is a deleted user")
    if user.username == "guest":
        raise WsError("usernotupdatedguest", "Cannot update guest account")
    email = row.get("email")
    if email is not None and email != user.email:
        if not valid_email(email):
            raise WsError("useremailinvalid", "Invalid email address")
        if not site.allow_accounts_same_email and site.email_taken(email, besides=user.id):
            raise WsError("useremailduplicate", "Duplicate email address")
    username = row.get("username")
    if username is not None and username != user.username and site.user_named(username):
        raise WsError(
            "dmlwriteexception", "Error writing to database", exception="dml_write_exception"
        )
    if row.get("password") and user.auth in _INTERNAL_AUTHS:
        problems = _password_problems(row["password"])
        if problems:
            raise _policy_error(problems)
    for name in ("username", "firstname", "lastname", "email", "idnumber", "auth", "suspended"):
        if name in row:
            setattr(user, name, row[name])
    user.fields.update({k: row[k] for k in _STANDARD if k in row})
    user.customfields.update(_custom(site, row.get("customfields", [])))
    user.password = user.password or bool(row.get("password"))


@FUNCTIONS.register(
    "core_user_update_users",
    users=rows(
        id=Value("int"),
        username=optional("username"),
        auth=optional("safedir"),
        suspended=optional("bool"),
        password=optional("raw"),
        firstname=optional("notags"),
        lastname=optional("notags"),
        email=optional("raw_trimmed"),
        idnumber=optional("raw"),
        lang=optional("safedir"),
        calendartype=optional("plugin"),
        userpicture=optional("int"),
        **_PROFILE,
    ),
)
def update_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    warnings = []
    for row in params["users"]:  # one transaction per user: failures become warnings
        try:
            _update_one(site, row)
        except WsError as exc:
            warnings.append(
                {
                    "item": "user",
                    "itemid": row["id"],
                    "warningcode": exc.errorcode,
                    "message": exc.text(site.debug),
                }
            )
    return {"warnings": warnings}


@FUNCTIONS.register("core_user_delete_users", userids=Multiple(Value("int")))
def delete_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    users = []
    for userid in params["userids"]:
        user = site.live_user(userid)
        if user is None:
            raise WsError("invaliduser", "Invalid user")
        if user.username == "admin":
            raise WsError("useradminodelete", "You can not delete admin accounts")
        users.append(user)
    for user in users:
        site.delete_user(user)
    return None
