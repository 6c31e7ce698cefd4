"""The simulated Moodle site: its configuration, users, courses, cohorts and enrolments.

``MoodleSite`` holds the state, the site's configuration (auth plugins, profile fields, the
token's service, ``extendedusernamechars``…) and the primitives Moodle's enrolment API offers
(enrol and unenrol through an instance, cohort membership with cohort-sync); ``call`` runs a
web-service function as ``webservice_base_server`` does. The REST protocol lives in
``moodle_rest``, the functions in ``moodle_webservice``, ``moodle_users``, ``moodle_enrol`` and
``moodle_completion`` (with the courses' activities), their machinery in ``moodle_ws``; learners'
progress is a ``bridge.lmssim.completion.Completion``. Where LMS.md and a real Moodle 4.3 site
disagree with this package, they win.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.lmssim import moodle_cohorts
from bridge.lmssim import moodle_completion
from bridge.lmssim import moodle_enrol
from bridge.lmssim import moodle_users
from bridge.lmssim import moodle_webservice
from bridge.lmssim.completion import Completion
from bridge.lmssim.completion import Pace
from bridge.lmssim.cost import moodle_rows
from bridge.lmssim.moodle_completion import AUTOMATIC
from bridge.lmssim.moodle_completion import Activity
from bridge.lmssim.moodle_ws import SiteParams
from bridge.lmssim.moodle_ws import WsError
from bridge.lmssim.moodle_ws import invalid_parameter
from bridge.lmssim.moodle_ws import validate

ACTIVE, SUSPENDED = 0, 1  # user_enrolments.status (ENROL_USER_ACTIVE / ENROL_USER_SUSPENDED)
GUEST_ID, ADMIN_ID = 1, 2
SITE_COURSE_ID = 1
ROLES = moodle_enrol.ROLE_NAMES  # the roles the token may assign

FUNCTIONS = {
    **moodle_webservice.FUNCTIONS,
    **moodle_users.FUNCTIONS,
    **moodle_enrol.FUNCTIONS,
    **moodle_completion.FUNCTIONS,
    **moodle_cohorts.FUNCTIONS,
}
"""Every web-service function the simulator implements (the default service of its token)."""
NOT_SIMULATED = frozenset(
    {
        "core_cohort_create_cohorts",
        "core_completion_mark_course_self_completed",
        "core_completion_override_activity_completion_status",
        "core_course_create_courses",
        "core_group_add_group_members",
        "core_role_assign_roles",
    }
)
"""Real Moodle functions the simulator does not run: outside the service they answer
``accessexception``, as on a real site; names Moodle does not have answer ``invalidrecord``."""
STOCK_AUTH_PLUGINS = (
    *("cas", "db", "email", "ldap", "lti", "manual", "mnet", "nologin", "none", "oauth2"),
    *("shibboleth", "webservice"),
)
"""The auth plugins of a stock Moodle 4.3 (the directories of ``auth/``): no ``saml2``."""
SHIPPED_PROFILE_FIELDS = ("title", "roles")
"""The custom profile fields the shipped rules map (rules/benefits-2026.yaml)."""


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
    enablecompletion: bool = True


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

    Site configuration (constructor arguments, attributes tests may change later):
    ``auth_plugins`` (installed auth plugins; default the stock list, no ``saml2``),
    ``profile_fields`` (custom profile field short names; default the shipped rules' fields),
    ``service_functions`` (what the token's service allows; default everything simulated),
    ``extended_username_chars`` (``$CFG->extendedusernamechars``), ``allow_accounts_same_email``,
    ``debug`` (debugging on: ``debuginfo`` in errors), ``max_input_vars``, ``langs``. Also
    ``rest_enabled``, ``cohort_unenrol_action`` (``unenrol`` or ``suspend``), ``clock``.
    ``dropped_profile_fields`` records each (userid, shortname) Moodle silently ignored.
    ``calls`` counts the calls of each function and ``rows`` the rows they carried
    (``bridge.lmssim.cost.moodle_rows``: what the service time is charged on). Fault injection:
    ``unavailable`` maps a function to how many of its next calls answer HTTP 503 (a web server
    or PHP-FPM failing under that call), before the call runs.
    ``completion`` holds the learners' progress; ``pace`` and ``seed`` say how they move on
    their own as the clock's days pass (``bridge.lmssim.completion``).
    """

    def __init__(
        self,
        token: str,
        *,
        clock: Callable[[], float] = time.time,
        auth_plugins: Iterable[str] = STOCK_AUTH_PLUGINS,
        profile_fields: Iterable[str] = SHIPPED_PROFILE_FIELDS,
        service_functions: Iterable[str] | None = None,
        extended_username_chars: bool = False,
        allow_accounts_same_email: bool = False,
        debug: bool = False,
        max_input_vars: int = 5000,
        langs: Iterable[str] = ("en",),
        sitename: str = "Simulated Moodle",
        wwwroot: str = "http://moodle.test",
        pace: Pace | None = None,
        seed: int | None = None,
    ) -> None:
        self.token = token
        self.clock = clock
        self.debug = debug
        self.allow_accounts_same_email = allow_accounts_same_email
        self.extended_username_chars = extended_username_chars
        self.max_input_vars = max_input_vars
        self.rest_enabled = True
        self.auth_plugins = set(auth_plugins)
        self.profile_fields = set(profile_fields)
        self.langs = set(langs)
        self.themes = {"boost", "classic"}
        functions = set(FUNCTIONS if service_functions is None else service_functions)
        unknown = functions - set(FUNCTIONS)
        if unknown:
            raise ValueError(f"the simulator has no function {', '.join(sorted(unknown))}")
        self.service_functions = functions
        self.sitename = sitename
        self.wwwroot = wwwroot
        self.cohort_unenrol_action = "unenrol"
        self.assignable_roles = set(ROLES)
        self.users: dict[int, User] = {}
        self.courses: dict[int, Course] = {}
        self.instances: dict[int, EnrolInstance] = {}
        self.enrolments: dict[tuple[int, int], Enrolment] = {}  # (instanceid, userid)
        self.roles: set[tuple[int, int, int, str]] = set()  # (courseid, userid, roleid, component)
        self.cohorts: dict[int, Cohort] = {}
        self.members: set[tuple[int, int]] = set()  # (cohortid, userid)
        self.dropped_profile_fields: list[tuple[int, str]] = []
        self.activities: dict[int, Activity] = {}
        self.calls: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.unavailable: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        self.completion = Completion(
            lambda: self.clock(),
            lambda courseid: moodle_completion.requirements(self, courseid),
            lambda at: moodle_completion.learners(self, at),
            pace or Pace(),
            seed=None if seed is None else f"moodle-{seed}",  # its own stream of draws
        )
        self._seed()

    @property
    def params(self) -> SiteParams:
        """The settings ``clean_param`` reads, as they are now."""
        return SiteParams(
            self.extended_username_chars, frozenset(self.auth_plugins), frozenset(self.langs)
        )

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
        library = self.add_course(
            "LIBRARY", "Library tour", idnumber="LIB", methods=("self",), activities=()
        )
        library.enablecompletion = False  # a course without completion tracking

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
        activities: Iterable[tuple[str, str]] = (("page", "Read"), ("quiz", "Check")),
    ) -> Course:
        """A course with completion enabled whose criteria require each of ``activities``
        (modname, name): a page is complete when viewed, anything else when graded."""
        course = Course(self._next("course"), shortname, fullname, idnumber)
        self.courses[course.id] = course
        for modname, name in activities:
            self.add_activity(course.id, modname, f"{fullname}: {name}")
        for method in methods:
            instance = EnrolInstance(self._next("enrol"), course.id, method)
            self.instances[instance.id] = instance
        if cohort is not None:  # cohort sync: members of the cohort are enrolled (LMS.md)
            instance = EnrolInstance(self._next("enrol"), course.id, "cohort", cohortid=cohort)
            self.instances[instance.id] = instance
        return course

    def add_activity(self, courseid: int, modname: str, name: str, **settings: Any) -> Activity:
        """A course module with automatic completion tracking, named by the course criteria."""
        settings.setdefault("tracking", AUTOMATIC)
        settings.setdefault("completionview", modname == "page")
        settings.setdefault("completiongrade", modname != "page")
        activity = Activity(
            self._next("course_modules"), courseid, modname, self._next(modname), name, **settings
        )
        self.activities[activity.id] = activity
        return activity

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

    def is_active(self, enrolment: Enrolment, at: float | None = None) -> bool:
        """Moodle's "active enrolment": status active, instance enabled, within the dates
        (now, or at time ``at``)."""
        now = self.clock() if at is None else at
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
            self.completion.enrolled(instance.courseid, userid)
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
        old = user.username
        user.username = re.sub(r"[^-.@_a-z0-9]", "", f"{user.email}.{stamp}".lower())
        user.email = hashlib.md5(old.encode(), usedforsecurity=False).hexdigest()  # the old one
        user.idnumber = ""
        user.deleted = True

    # -- the web-service layer -------------------------------------------------------------

    def call(self, token: str | None, function: str | None, params: dict[str, Any]) -> Any:
        """What webservice_base_server::run does after parsing: token, function, params, run."""
        if not token or not hmac.compare_digest(token, self.token):
            raise WsError("invalidtoken", "Invalid token - token not found")
        self.completion.catch_up()  # the learners' days that passed since the last call
        if not function:
            raise invalid_parameter("Missing function name")
        self.calls[function] = self.calls.get(function, 0) + 1
        self.rows[function] = self.rows.get(function, 0) + moodle_rows(params)
        if function not in FUNCTIONS and function not in NOT_SIMULATED:
            # external_api::external_function_info() on a name Moodle does not have
            raise WsError(
                "invalidrecord",
                "Can't find data record in database table external_functions.",
                exception="dml_missing_record_exception",
                debuginfo=f"SELECT * FROM {{external_functions}} WHERE name = ?\n"  # noqa: S608 - text
                f"[array (\n  0 => '{function}',\n)]",
            )
        if function not in self.service_functions:
            raise WsError(
                "accessexception",
                "Access control exception",
                exception="webservice_access_exception",
                debuginfo=f"Access to the function {function}() is not allowed.\n"
                "There could be multiple reasons for this:\n"
                "1. The service linked to the user token does not contain the function.",
            )
        spec = FUNCTIONS[function]
        return spec.handler(self, validate(spec.params, params, self.params))

    def snapshot(self) -> dict[str, Any]:
        """The whole site as plain JSON-able data (for ``/_sim/state`` and tests)."""
        self.completion.catch_up()
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
            "activities": [asdict(a) for a in self.activities.values()],
            "cohorts": [asdict(c) for c in self.cohorts.values()],
            "enrolments": enrolments,
            "completion": self.completion.snapshot(),
            "cohort_members": [{"cohortid": c, "userid": u} for c, u in sorted(self.members)],
            "dropped_profile_fields": [
                {"userid": u, "shortname": f} for u, f in self.dropped_profile_fields
            ],
            "settings": {
                "auth_plugins": sorted(self.auth_plugins),
                "profile_fields": sorted(self.profile_fields),
                "service_functions": sorted(self.service_functions),
                "extended_username_chars": self.extended_username_chars,
                "allow_accounts_same_email": self.allow_accounts_same_email,
                "debug": self.debug,
            },
            "calls": dict(self.calls),
            "rows": dict(self.rows),
        }
