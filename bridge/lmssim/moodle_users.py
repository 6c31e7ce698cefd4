"""The simulator's ``core_user`` web-service functions (Moodle 4.3: user/externallib.php).

``core_user_create_users`` and ``core_user_delete_users`` are transactional: one bad row and
nothing changes; create checks each row in the order the real code does. ``auth`` is PARAM_AUTH
and ``username`` PARAM_USERNAME, so an auth plugin the site lacks or a username Moodle would
change fails parameter validation. ``core_user_update_users`` is per user: failures come back as
warnings. Custom profile fields the site does not define are dropped silently, as Moodle's
``profile_save_data`` does, and recorded in ``site.dropped_profile_fields``.
``core_user_get_users_by_field`` and ``core_user_get_users`` never return deleted users.
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
# Auth plugins whose is_internal() is true (auth_plugin_base's default; oauth2, cas, ldap,
# shibboleth, mnet and webservice say false): create_users wants a password or createpassword.
# Observed on Moodle 4.3 (Build 20231009): nologin, lti and none without one → "Invalid
# password: you must provide a password, or set createpassword."; db (passtype not internal),
# cas, ldap, shibboleth and oauth2 are created without.
_INTERNAL_AUTHS = {"manual", "email", "nologin", "none", "lti"}
_NOT_CREATABLE = {"mnet", "webservice"}  # create_users unsets them from the available auths
# Column lengths of mdl_user (lib/db/install.xml): longer values fail the INSERT/UPDATE.
COLUMNS = {
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
    "calendartype": 30,
    "timezone": 100,
    "middlename": 255,
    "alternatename": 255,
    "firstnamephonetic": 255,
    "lastnamephonetic": 255,
}


def _password_problems(password: str) -> str:
    """check_password_policy() with Moodle's default policy."""
    problems = []
    if len(password) < 8:
        problems.append("Passwords must be at least 8 characters long.")
    for pattern, what in (
        (r"\d", "digit(s)"),
        (r"[a-z]", "lower case letter(s)"),
        (r"[A-Z]", "upper case letter(s)"),
    ):
        if not re.search(pattern, password):
            problems.append(f"Passwords must have at least 1 {what}.")
    if not re.search(r"[^a-zA-Z0-9]", password):
        problems.append(
            "The password must have at least 1 special character(s) such as *, -, or #."
        )
    return "".join(f"<div>{p}</div>" for p in problems)


def _policy_error(problems: str) -> WsError:
    # user_create_user() throws moodle_exception($errmsg): the message becomes the errorcode.
    return WsError(problems, f"error/{problems}")


def _too_long(row: dict[str, Any]) -> WsError | None:
    """What PostgreSQL says of a value longer than its mdl_user column (a dml_write_exception,
    observed on Moodle 4.3: "value too long for type character varying(100)")."""
    for name, limit in COLUMNS.items():
        if len(str(row.get(name) or "")) > limit:
            return WsError(
                "dmlwriteexception",
                "Error writing to database",
                exception="dml_write_exception",
                debuginfo=f"ERROR:  value too long for type character varying({limit})",
            )
    return None


def user_details(site: MoodleSite, user: User) -> dict[str, Any]:
    """user_get_user_details(): empty optional fields left out, custom fields only when the
    site defines them and they hold a value (observed on Moodle 4.3)."""
    details: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "fullname": f"{user.firstname} {user.lastname}",
        "email": user.email,
        "department": user.fields.get("department", ""),
    }
    details.update({k: v for k, v in user.fields.items() if v and k != "department"})
    if user.idnumber:
        details["idnumber"] = user.idnumber
    details.update(firstaccess=0, lastaccess=0, auth=user.auth, suspended=user.suspended)
    details.update(confirmed=True, lang="en", theme="", timezone="99", mailformat=1)
    custom = [
        {"type": "text", "value": v, "displayvalue": v, "name": k.title(), "shortname": k}
        for k, v in sorted(user.customfields.items())
        if v and k in site.profile_fields
    ]
    if custom:
        details["customfields"] = custom
    return details


@FUNCTIONS.register(
    "core_user_get_users_by_field", field=Value("alpha"), values=Multiple(Value("raw"))
)
def get_users_by_field(site: MoodleSite, params: dict[str, Any]) -> Any:
    # core_user::get_property_type(): emails are PARAM_RAW_TRIMMED, compared exactly (an
    # address in another case finds nothing: observed on Moodle 4.3)
    kinds = {"id": "int", "idnumber": "raw", "username": "username", "email": "raw_trimmed"}
    field_ = params["field"]
    if field_ not in kinds:
        raise invalid_parameter("Invalid field name")
    wanted = set()
    for value in params["values"]:
        cleaned = clean(value, kinds[field_], site.params)
        if str(cleaned) != value:
            raise invalid_parameter(
                f"The field '{field_}' value is invalid: {value}(cleaned value: {cleaned})"
            )
        wanted.add(str(cleaned))
    if field_ == "id":
        # Observed on Moodle 4.3: by id, deleted accounts are answered too, with what
        # delete_user() left (username <email>.<time>, email the MD5 of it, no idnumber).
        found = (site.users.get(int(i)) for i in sorted(wanted, key=int))
        return [user_details(site, user) for user in found if user is not None]
    return [
        user_details(site, user)
        for user in sorted(site.users.values(), key=lambda u: u.id)
        if not user.deleted and str(getattr(user, field_)) in wanted
    ]


@FUNCTIONS.register(
    "core_user_get_users",
    criteria=Multiple(Single({"key": Value("alpha"), "value": Value("raw")})),
)
def get_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    """Users matching every criterion (AND); unsupported keys are warnings, not errors.
    id, idnumber, username and auth compare exactly (auth cleaned as PARAM_AUTH, so a plugin
    the site lacks finds nobody); email, firstname and lastname are case-insensitive LIKEs."""
    kinds = {
        "id": "int",
        "idnumber": "raw",
        "username": "username",
        "email": "raw_trimmed",
        "auth": "auth",
        "firstname": "notags",
        "lastname": "notags",
    }
    exact: dict[str, str] = {}
    likes: dict[str, re.Pattern[str]] = {}
    warnings = []
    used: set[str] = set()
    for criterion in params["criteria"]:
        key = criterion["key"]
        if key in used:
            raise WsError(
                "keyalreadyset",
                "error/keyalreadyset",
                debuginfo=f"The key {key} can only be sent once",
            )
        used.add(key)
        if key not in kinds:
            warnings.append(
                {
                    "item": key,
                    "warningcode": "invalidfieldparameter",
                    "message": f"The search key '{key}' is not supported, look at the web "
                    "service documentation",
                }
            )
            continue
        wanted = str(clean(criterion["value"], kinds[key], site.params))
        if key in ("email", "firstname", "lastname"):
            likes[key] = _like(wanted)
        else:
            exact[key] = wanted

    def matches(user: User) -> bool:
        return all(str(getattr(user, k)) == v for k, v in exact.items()) and all(
            like.fullmatch(str(getattr(user, k))) for k, like in likes.items()
        )

    users = [
        user_details(site, user)
        for user in sorted(site.users.values(), key=lambda u: u.id)
        if not user.deleted and matches(user)
    ]
    return {"users": users, "warnings": warnings}


def _like(pattern: str) -> re.Pattern[str]:
    """An SQL ``LIKE`` pattern, case-insensitive as ``$DB->sql_like(…, false)``."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _custom(site: MoodleSite, userid: int, pairs: list[dict[str, str]]) -> dict[str, str]:
    """profile_save_data(): only the site's profile fields are saved; the others vanish
    silently (observed on Moodle 4.3), which the simulator records."""
    for pair in pairs:
        if pair["type"] not in site.profile_fields:
            site.dropped_profile_fields.append((userid, pair["type"]))
    return {p["type"]: p["value"] for p in pairs if p["type"] in site.profile_fields}


@FUNCTIONS.register(
    "core_user_create_users",
    users=rows(
        createpassword=optional("bool"),
        username=Value("username"),
        auth=default("auth", "manual"),
        password=optional("raw"),
        firstname=Value("notags"),
        lastname=Value("notags"),
        email=Value("raw_trimmed"),  # core_user::get_property_type('email'): checked below
        idnumber=default("raw", ""),
        lang=default("lang", "en"),
        calendartype=default("plugin", "gregorian"),
        **_PROFILE,
    ),
)
def create_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    usernames: set[str] = set()
    emails: set[str] = set()
    for row in params["users"]:  # one transaction: any failure and nothing is created
        for name in ("username", "firstname", "lastname"):
            if row[name].strip() == "":
                raise invalid_parameter(f"The field {name} cannot be blank")
        if row["username"] in usernames or site.user_named(row["username"]) is not None:
            raise invalid_parameter(f"Username already exists: {row['username']}")
        if row["auth"] not in site.auth_plugins or row["auth"] in _NOT_CREATABLE:
            raise invalid_parameter(f"Invalid authentication type: {row['auth']}")
        if row["lang"] not in site.langs:
            raise invalid_parameter(f"Invalid language code: {row['lang']}")
        if row.get("theme") and row["theme"] not in site.themes:
            raise invalid_parameter(f"Invalid theme: {row['theme']}")
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
        too_long = _too_long(row)
        if too_long is not None:
            raise too_long
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
        user.customfields = _custom(site, user.id, row.get("customfields", []))
        created.append({"id": user.id, "username": user.username})
    return created


def _update_one(site: MoodleSite, row: dict[str, Any]) -> None:
    # The messages are getMessage() of moodle_exception('<code>'): "error/<code>" where the
    # string does not exist (observed on Moodle 4.3: "error/useremailinvalid").
    user = site.users.get(row["id"])
    if user is None:
        raise WsError("invaliduserid", "Invalid user ID", debuginfo="Invalid user ID")
    if user.deleted:
        raise WsError("usernotupdateddeleted", "error/usernotupdateddeleted")
    if user.username == "guest":
        raise WsError("usernotupdatedguest", "error/usernotupdatedguest")
    email = row.get("email")
    if email is not None and email != user.email:
        if not valid_email(email):
            raise WsError("useremailinvalid", "error/useremailinvalid")
        if not site.allow_accounts_same_email and site.email_taken(email, besides=user.id):
            raise WsError("useremailduplicate", "Duplicate address")
    username = row.get("username")
    too_long = _too_long(row)
    taken = username is not None and username != user.username and site.user_named(username)
    if too_long is not None or taken:
        raise too_long or WsError(
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
    user.customfields.update(_custom(site, user.id, row.get("customfields", [])))
    user.password = user.password or bool(row.get("password"))


@FUNCTIONS.register(
    "core_user_update_users",
    users=rows(
        id=Value("int"),
        username=optional("username"),
        auth=optional("auth"),
        suspended=optional("bool"),
        password=optional("raw"),
        firstname=optional("notags"),
        lastname=optional("notags"),
        email=optional("raw_trimmed"),
        idnumber=optional("raw"),
        lang=optional("lang"),
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
                    "message": exc.message,
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
