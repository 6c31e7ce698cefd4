"""The simulated Moodle site: its users, courses, cohorts and enrolments, and the REST server.

``MoodleSite`` holds the state and the primitives Moodle's enrolment API offers (enrol and
unenrol through an instance, cohort membership with cohort-sync); ``routes`` serves
``POST /webservice/rest/server.php`` the way Moodle 4.3's REST protocol does (LMS.md): PHP
form arrays truncated at ``max_input_vars``, JSON bodies ignored, XML unless
``moodlewsrestformat=json``, and every answer HTTP 200, errors included. The web-service
functions live in ``moodle_users`` and ``moodle_enrol``, their machinery in ``moodle_ws``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route

from bridge.lmssim import moodle_enrol
from bridge.lmssim import moodle_users
from bridge.lmssim.moodle_ws import WsError
from bridge.lmssim.moodle_ws import invalid_parameter
from bridge.lmssim.moodle_ws import validate

PATH = "/webservice/rest/server.php"
ACTIVE, SUSPENDED = 0, 1  # user_enrolments.status (ENROL_USER_ACTIVE / ENROL_USER_SUSPENDED)
GUEST_ID, ADMIN_ID = 1, 2
SITE_COURSE_ID = 1
ROLES = {1: "manager", 3: "editingteacher", 4: "teacher", 5: "student"}  # assignable by the token

PhpValue = str | dict[str, "PhpValue"]
FUNCTIONS = {**moodle_users.FUNCTIONS, **moodle_enrol.FUNCTIONS}


@dataclass
class User:
    id: int
    username: str
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    idnumber: str = ""  # not unique in Moodle (LMS.md)
    auth: str = "manual"
    suspended: bool = False
    deleted: bool = False
    password: bool = False  # whether a password is set; never stored
    fields: dict[str, str] = field(default_factory=dict)  # department, institution, city…
    customfields: dict[str, str] = field(default_factory=dict)  # profile field shortname → value


@dataclass
class Course:
    id: int
    shortname: str
    fullname: str
    idnumber: str = ""
    visible: bool = True


@dataclass
class EnrolInstance:
    id: int
    courseid: int
    enrol: str  # manual | self | cohort
    roleid: int = 5
    cohortid: int | None = None  # for cohort-sync instances
    enabled: bool = True


@dataclass
class Enrolment:
    """A ``user_enrolments`` row: one user in one enrolment instance."""

    instanceid: int
    userid: int
    status: int = ACTIVE
    timestart: int = 0
    timeend: int = 0


@dataclass
class Cohort:
    id: int
    idnumber: str
    name: str
    description: str = ""
    visible: bool = True


class MoodleSite:
    """One Moodle site in memory, seeded with the catalogue the shipped rules use.

    Settings tests may change: ``debug`` (developer debugging: ``debuginfo`` in errors),
    ``allow_accounts_same_email``, ``max_input_vars``, ``rest_enabled``, ``functions`` (the
    token's service), ``cohort_unenrol_action`` (``unenrol`` or ``suspend``), ``clock``.
    """

    def __init__(self, token: str, *, clock: Callable[[], float] = time.time) -> None:
        self.token = token
        self.clock = clock
        self.debug = False
        self.allow_accounts_same_email = False
        self.max_input_vars = 5000
        self.rest_enabled = True
        self.functions: set[str] = set(FUNCTIONS)
        self.cohort_unenrol_action = "unenrol"
        self.assignable_roles = set(ROLES)
        self.profile_fields = {"title", "roles"}
        self.auths = {"manual", "email", "nologin", "saml2", "oauth2", "ldap", "shibboleth"}
        self.users: dict[int, User] = {}
        self.courses: dict[int, Course] = {}
        self.instances: dict[int, EnrolInstance] = {}
        self.enrolments: dict[tuple[int, int], Enrolment] = {}  # (instanceid, userid)
        self.roles: set[tuple[int, int, int, str]] = set()  # (courseid, userid, roleid, component)
        self.cohorts: dict[int, Cohort] = {}
        self.members: set[tuple[int, int]] = set()  # (cohortid, userid)
        self.calls: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        self._seed()

    def _next(self, table: str) -> int:
        self._ids[table] = self._ids.get(table, 0) + 1
        return self._ids[table]

    def _seed(self) -> None:
        self.add_user("guest", firstname="Guest user", lastname=" ", auth="manual")
        self.add_user("admin", firstname="Admin", lastname="User", email="admin@example.test")
        self.courses[SITE_COURSE_ID] = Course(self._next("course"), "site", "Simulated Moodle")
        self.add_course(
            "BEN-2026", "Benefits 2026", idnumber="BEN-2026", methods=("manual", "self")
        )
        self.add_course("BEN-2026-MGR", "Benefits 2026 for managers", idnumber="BEN-2026-MGR")
        self.add_course("ONBOARD-101", "Onboarding", idnumber="ONB101")
        staff = self.add_cohort("ALLSTAFF", "All staff")
        self.add_cohort("BEN2026", "Benefits 2026 cohort")
        self.add_cohort("MANAGERS", "People managers")
        self.add_course("SEC-AWARE", "Security awareness", idnumber="SEC-AWARE", cohort=staff.id)
        self.add_course("LIBRARY", "Library tour", idnumber="LIB", methods=("self",))

    # -- catalogue -------------------------------------------------------------------------

    def add_user(self, username: str, **values: Any) -> User:
        """Create an account out of band (the admin UI, another integration)."""
        known = {"firstname", "lastname", "email", "idnumber", "auth", "suspended", "password"}
        user = User(self._next("user"), username, **{k: v for k, v in values.items() if k in known})
        user.fields = {k: str(v) for k, v in values.items() if k not in known | {"customfields"}}
        user.customfields = dict(values.get("customfields", {}))
        self.users[user.id] = user
        return user

    def add_course(
        self,
        shortname: str,
        fullname: str,
        *,
        idnumber: str = "",
        methods: Iterable[str] = ("manual",),
        cohort: int | None = None,
    ) -> Course:
        course = Course(self._next("course"), shortname, fullname, idnumber)
        self.courses[course.id] = course
        for method in methods:
            instance = EnrolInstance(self._next("enrol"), course.id, method)
            self.instances[instance.id] = instance
        if cohort is not None:  # cohort sync: members of the cohort are enrolled (LMS.md)
            instance = EnrolInstance(self._next("enrol"), course.id, "cohort", cohortid=cohort)
            self.instances[instance.id] = instance
        return course

    def add_cohort(self, idnumber: str, name: str) -> Cohort:
        cohort = Cohort(self._next("cohort"), idnumber, name)
        self.cohorts[cohort.id] = cohort
        return cohort

    # -- lookups ---------------------------------------------------------------------------

    def live_user(self, userid: int) -> User | None:
        user = self.users.get(userid)
        return user if user is not None and not user.deleted else None

    def user_named(self, username: str) -> User | None:
        return next((u for u in self.users.values() if u.username == username), None)

    def email_taken(self, email: str, *, besides: int | None = None) -> bool:
        return any(
            u.email.lower() == email.lower() and u.id != besides and not u.deleted
            for u in self.users.values()
        )

    def instance(self, courseid: int, enrol: str) -> EnrolInstance | None:
        return next(
            (
                i
                for i in self.instances.values()
                if i.courseid == courseid and i.enrol == enrol and i.enabled
            ),
            None,
        )

    def is_active(self, enrolment: Enrolment) -> bool:
        """Moodle's "active enrolment": status active, instance enabled, within the dates."""
        now = self.clock()
        return (
            enrolment.status == ACTIVE
            and self.instances[enrolment.instanceid].enabled
            and enrolment.timestart <= now
            and (enrolment.timeend == 0 or enrolment.timeend > now)
        )

    # -- enrolment API (enrol_plugin::enrol_user / unenrol_user) ---------------------------

    def enrol(
        self,
        instance: EnrolInstance,
        userid: int,
        roleid: int,
        *,
        timestart: int = 0,
        timeend: int = 0,
        status: int = ACTIVE,
    ) -> None:
        """Insert or update the enrolment (repeat-safe) and assign the role."""
        key = (instance.id, userid)
        current = self.enrolments.get(key)
        if current is None:
            self.enrolments[key] = Enrolment(instance.id, userid, status, timestart, timeend)
        else:  # Moodle updates start, end and status when any differs
            current.status, current.timestart, current.timeend = status, timestart, timeend
        component = "" if instance.enrol == "manual" else f"enrol_{instance.enrol}"
        if roleid:
            self.roles.add((instance.courseid, userid, roleid, component))

    def unenrol(self, instance: EnrolInstance, userid: int) -> None:
        if self.enrolments.pop((instance.id, userid), None) is None:
            return
        component = "" if instance.enrol == "manual" else f"enrol_{instance.enrol}"
        still = any(
            self.instances[iid].courseid == instance.courseid and uid == userid
            for iid, uid in self.enrolments
        )
        self.roles = {
            r
            for r in self.roles
            if not (
                r[0] == instance.courseid and r[1] == userid and (not still or r[3] == component)
            )
        }

    def add_member(self, cohortid: int, userid: int) -> None:
        self.members.add((cohortid, userid))
        for instance in self._synced(cohortid):
            self.enrol(instance, userid, instance.roleid)

    def remove_member(self, cohortid: int, userid: int) -> None:
        self.members.discard((cohortid, userid))
        for instance in self._synced(cohortid):
            enrolment = self.enrolments.get((instance.id, userid))
            if enrolment is None:
                continue
            if self.cohort_unenrol_action == "suspend":  # ENROL_EXT_REMOVED_SUSPENDNOROLES
                enrolment.status = SUSPENDED
                self.roles.discard((instance.courseid, userid, instance.roleid, "enrol_cohort"))
            else:
                self.unenrol(instance, userid)

    def _synced(self, cohortid: int) -> list[EnrolInstance]:
        return [
            i
            for i in self.instances.values()
            if i.enrol == "cohort" and i.cohortid == cohortid and i.enabled
        ]

    def delete_user(self, user: User) -> None:
        """delete_user(): unenrol everywhere, free the username, keep the row as deleted."""
        for instanceid, userid in list(self.enrolments):
            if userid == user.id:
                self.unenrol(self.instances[instanceid], user.id)
        self.members = {m for m in self.members if m[1] != user.id}
        stamp = int(self.clock())
        user.username = re.sub(r"[^-.@_a-z0-9]", "", f"{user.email}.{stamp}".lower())
        user.email = hashlib.md5(user.username.encode(), usedforsecurity=False).hexdigest()
        user.idnumber = ""
        user.deleted = True

    # -- the web-service layer -------------------------------------------------------------

    def call(self, token: str | None, function: str | None, params: dict[str, Any]) -> Any:
        """What webservice_base_server::run does after parsing: token, function, params, run."""
        if not token or not hmac.compare_digest(token, self.token):
            raise WsError("invalidtoken", "Invalid token - token not found")
        if not function:
            raise invalid_parameter("Missing function name")
        self.calls[function] = self.calls.get(function, 0) + 1
        if function not in self.functions or function not in FUNCTIONS:
            raise WsError(
                "accessexception",
                "Access control exception",
                exception="webservice_access_exception",
                debuginfo=f"Access to the function {function}() is not allowed.",
            )
        spec = FUNCTIONS[function]
        return spec.handler(self, validate(spec.params, params, self.debug))

    def snapshot(self) -> dict[str, Any]:
        """The whole site as plain JSON-able data (for ``/_sim/state`` and tests)."""
        enrolments = []
        for (instanceid, userid), row in sorted(self.enrolments.items()):
            instance = self.instances[instanceid]
            enrolments.append(
                {
                    "userid": userid,
                    "courseid": instance.courseid,
                    "course": self.courses[instance.courseid].shortname,
                    "method": instance.enrol,
                    "status": "active" if row.status == ACTIVE else "suspended",
                    "timestart": row.timestart,
                    "timeend": row.timeend,
                    "roleids": sorted(
                        r[2] for r in self.roles if r[0] == instance.courseid and r[1] == userid
                    ),
                }
            )
        return {
            "users": [asdict(u) for u in self.users.values()],
            "courses": [
                {
                    **asdict(c),
                    "methods": [i.enrol for i in self.instances.values() if i.courseid == c.id],
                }
                for c in self.courses.values()
                if c.id != SITE_COURSE_ID
            ],
            "cohorts": [asdict(c) for c in self.cohorts.values()],
            "enrolments": enrolments,
            "cohort_members": [{"cohortid": c, "userid": u} for c, u in sorted(self.members)],
            "calls": dict(self.calls),
        }


# -- the REST protocol -----------------------------------------------------------------------


def php_form(pairs: Iterable[tuple[str, str]]) -> dict[str, PhpValue]:
    """Form fields as PHP builds ``$_POST``: ``users[0][username]=x`` → nested arrays.

    Arrays stay dicts keyed by strings in arrival order (PHP arrays are ordered maps); ``[]``
    appends at the next integer key; a later scalar or array replaces an earlier one.
    """
    root: dict[str, PhpValue] = {}
    for name, value in pairs:
        match = re.fullmatch(r"([^\[]+)((?:\[[^\]]*\])*)", name)
        if match is None:
            root[name] = value
            continue
        keys = [match.group(1), *re.findall(r"\[([^\]]*)\]", match.group(2))]
        node = root
        for index, key in enumerate(keys):
            if key == "":
                key = str(max((int(k) + 1 for k in node if k.isdigit()), default=0))
            if index == len(keys) - 1:
                node[key] = value
                break
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
    return root


def to_xml(value: Any) -> str:
    """A result in Moodle's REST XML (``webservice_rest_server::xmlize_result``)."""
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{escape(k)}">{to_xml(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(to_xml(v) for v in value) + "</MULTIPLE>\n"
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return f"<VALUE>{escape(str(value), quote=False)}</VALUE>\n"


XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'


def render(result: Any, error: WsError | None, restformat: str, debug: bool) -> Response:
    """Every answer is HTTP 200, errors included (LMS.md)."""
    if restformat == "json":
        body = json.dumps(error.render(debug) if error else result)
        return Response(body, 200, media_type="application/json")
    if error is not None:
        answer = error.render(debug)
        debuginfo = answer.get("debuginfo")
        xml = (
            f'{XML_HEAD}<EXCEPTION class="{escape(error.exception)}">\n'
            f"<ERRORCODE>{escape(error.errorcode)}</ERRORCODE>\n"
            f"<MESSAGE>{escape(answer['message'])}</MESSAGE>\n"
            + (f"<DEBUGINFO>{escape(debuginfo)}</DEBUGINFO>\n" if debuginfo else "")
            + "</EXCEPTION>\n"
        )
    else:
        xml = f"{XML_HEAD}<RESPONSE>\n{'' if result is None else to_xml(result)}</RESPONSE>\n"
    return Response(xml, 200, media_type="application/xml; charset=utf-8")


def routes(site: MoodleSite) -> list[BaseRoute]:
    """``/webservice/rest/server.php`` for ``site``."""

    async def server(request: Request) -> Response:
        if not site.rest_enabled:  # the REST protocol disabled: 403, empty body (LMS.md)
            return Response(b"", 403)
        limit = site.max_input_vars  # PHP drops the fields past max_input_vars, silently
        get = php_form(request.query_params.multi_items()[:limit])
        post: dict[str, PhpValue] = {}
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and media == "application/x-www-form-urlencoded":
            body = (await request.body()).decode("utf-8", "replace")
            post = php_form(parse_qsl(body, keep_blank_values=True)[:limit])
        # Anything else (a JSON body above all) never reaches $_POST: PHP ignores it.
        variables: dict[str, PhpValue] = {**get, **post}
        restformat = variables.pop("moodlewsrestformat", "xml")
        restformat = restformat if restformat in ("xml", "json") else "xml"
        token = variables.pop("wstoken", None)
        function = variables.pop("wsfunction", None)
        try:
            result = site.call(
                token if isinstance(token, str) else None,
                function if isinstance(function, str) else None,
                variables,
            )
        except WsError as error:
            return render(None, error, str(restformat), site.debug)
        return render(result, None, str(restformat), site.debug)

    return [Route(PATH, server, methods=["GET", "POST"])]
