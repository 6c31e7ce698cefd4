"""The simulator's course, cohort and enrolment web-service functions (Moodle 4.3, LMS.md).

``enrol_manual_enrol_users`` is repeat-safe and transactional and needs a manual enrolment
instance; its ``timeend`` ends the learner's access (``core_enrol_get_users_courses`` lists
active enrolments only, ``core_enrol_get_enrolled_users`` every participant unless
``onlyactive``). ``core_cohort_add_cohort_members`` answers warnings ("3": already a member,
"2": unknown cohort or user); removals of what is not there answer ``null``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from bridge.lmssim.moodle_users import user_details
from bridge.lmssim.moodle_ws import DEFAULT
from bridge.lmssim.moodle_ws import Functions
from bridge.lmssim.moodle_ws import Multiple
from bridge.lmssim.moodle_ws import Single
from bridge.lmssim.moodle_ws import Value
from bridge.lmssim.moodle_ws import WsError
from bridge.lmssim.moodle_ws import clean
from bridge.lmssim.moodle_ws import default
from bridge.lmssim.moodle_ws import invalid_parameter
from bridge.lmssim.moodle_ws import missing_record
from bridge.lmssim.moodle_ws import optional
from bridge.lmssim.moodle_ws import rows

if TYPE_CHECKING:
    from bridge.lmssim.moodle import Course
    from bridge.lmssim.moodle import MoodleSite

FUNCTIONS = Functions()
ROLE_NAMES = {1: "manager", 3: "editingteacher", 4: "teacher", 5: "student"}
_TYPED = Single({"type": Value("alphanumext"), "value": Value("raw")})


def _course_details(site: MoodleSite, course: Course) -> dict[str, Any]:
    return {
        "id": course.id,
        "fullname": course.fullname,
        "displayname": course.fullname,
        "shortname": course.shortname,
        "idnumber": course.idnumber,
        "categoryid": 1,
        "categoryname": "Miscellaneous",
        "summary": "",
        "summaryformat": 1,
        "format": "topics",
        "visible": int(course.visible),
        "startdate": 0,
        "enddate": 0,
        "enrollmentmethods": sorted(
            {i.enrol for i in site.instances.values() if i.courseid == course.id and i.enabled}
        ),
    }


@FUNCTIONS.register(
    "core_course_get_courses_by_field", field=default("alpha", ""), value=default("raw", "")
)
def get_courses_by_field(site: MoodleSite, params: dict[str, Any]) -> Any:
    field_, value = params["field"], params["value"]
    tests: dict[str, Callable[[Course], bool]] = {
        "": lambda c: True,
        "id": lambda c: str(c.id) == value,
        "ids": lambda c: str(c.id) in value.split(","),
        "shortname": lambda c: c.shortname == value,
        "idnumber": lambda c: c.idnumber == value,
        "category": lambda c: value == "1",
    }
    if field_ not in tests:
        raise invalid_parameter("Invalid field name")
    courses = [c for c in site.courses.values() if tests[field_](c)]  # the site course too
    return {"courses": [_course_details(site, c) for c in courses], "warnings": []}


@FUNCTIONS.register(
    "core_cohort_search_cohorts",
    query=Value("raw"),
    context=Single(
        {
            "contextid": default("int", 0),
            "contextlevel": default("alpha", ""),
            "instanceid": default("int", 0),
        }
    ),
    includes=default("alpha", "parents"),
    limitfrom=default("int", 0),
    limitnum=default("int", 25),
)
def search_cohorts(site: MoodleSite, params: dict[str, Any]) -> Any:
    context = params["context"]
    if context["contextid"]:
        if context["contextid"] != 1:
            raise missing_record("context")
    elif context["contextlevel"] not in ("system", "coursecat"):
        raise invalid_parameter(
            "Missing parameters, please provide either context level with instance id or contextid"
        )
    if params["includes"] not in ("all", "parents", "self"):
        raise invalid_parameter("Invalid parameter includes")
    query = params["query"].lower()
    found = [
        {
            "id": c.id,
            "name": c.name,
            "idnumber": c.idnumber,
            "description": c.description,
            "descriptionformat": 1,
            "visible": c.visible,
            "theme": "",
            "customfields": [],
        }
        for c in site.cohorts.values()
        if query in c.name.lower() or query in c.idnumber.lower() or query in c.description.lower()
    ]
    start = params["limitfrom"]
    return {
        "cohorts": found[start : start + params["limitnum"]]
        if params["limitnum"]
        else found[start:]
    }


@FUNCTIONS.register(
    "core_cohort_add_cohort_members", members=rows(cohorttype=_TYPED, usertype=_TYPED)
)
def add_cohort_members(site: MoodleSite, params: dict[str, Any]) -> Any:
    warnings = []
    for member in params["members"]:
        cohorttype, usertype = member["cohorttype"], member["usertype"]
        ctype, cvalue = cohorttype["type"], cohorttype["value"]
        utype, uvalue = usertype["type"], usertype["value"]
        if ctype not in ("id", "idnumber"):
            warnings.append(
                {"warningcode": "1", "message": f"invalid parameter: cohortype={ctype}"}
            )
            continue
        if utype not in ("id", "idnumber", "username"):
            warnings.append({"warningcode": "1", "message": f"invalid parameter: usertype={utype}"})
            continue
        cohort = next((c for c in site.cohorts.values() if str(getattr(c, ctype)) == cvalue), None)
        if cohort is None:
            warnings.append({"warningcode": "2", "message": f"cohort {ctype}={cvalue} not exists"})
            continue
        # get_field() takes the first row when several users share an idnumber.
        user = next(
            (
                u
                for u in sorted(site.users.values(), key=lambda u: u.id)
                if not u.deleted and str(getattr(u, utype)) == uvalue
            ),
            None,
        )
        if user is None:
            warnings.append({"warningcode": "2", "message": f"user {utype}={uvalue} not exists"})
            continue
        if (cohort.id, user.id) in site.members:
            warnings.append(
                {
                    "warningcode": "3",
                    "message": f"record already exists: cohort({ctype}:{cvalue} {utype}:{uvalue})",
                }
            )
            continue
        site.add_member(cohort.id, user.id)
    return {"warnings": warnings}


@FUNCTIONS.register(
    "core_cohort_delete_cohort_members", members=rows(cohortid=Value("int"), userid=Value("int"))
)
def delete_cohort_members(site: MoodleSite, params: dict[str, Any]) -> Any:
    pairs = []
    for member in params["members"]:
        if member["cohortid"] not in site.cohorts:
            raise missing_record("cohort")
        if site.live_user(member["userid"]) is None:  # $DB->get_record(..., MUST_EXIST)
            raise WsError("invaliduser", "Invalid user", exception="dml_missing_record_exception")
        pairs.append((member["cohortid"], member["userid"]))
    for cohortid, userid in pairs:
        site.remove_member(cohortid, userid)  # not a member: nothing to do, still null
    return None


@FUNCTIONS.register(
    "enrol_manual_enrol_users",
    enrolments=rows(
        roleid=Value("int"),
        userid=Value("int"),
        courseid=Value("int"),
        timestart=optional("int"),
        timeend=optional("int"),
        suspend=optional("int"),
    ),
)
def enrol_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    planned = []
    for row in params["enrolments"]:  # transactional: every row is checked first
        course = site.courses.get(row["courseid"])
        if course is None or course.id == 1:
            raise invalid_parameter("Context does not exist")
        if row["roleid"] not in site.assignable_roles:
            raise WsError(
                "wsusercannotassign",
                f"You don't have the permission to assign this role ({row['roleid']}) to this "
                f"user ({row['userid']}) in this course ({row['courseid']}).",
            )
        instance = site.instance(course.id, "manual")
        if instance is None:
            raise WsError(
                "wsnoinstance",
                f"Manual enrolment plugin instance doesn't exist or is disabled for the course "
                f"(id = {course.id})",
            )
        if site.live_user(row["userid"]) is None:
            raise WsError(
                "codingerror",
                "Coding error detected, it must be fixed by a programmer: "
                "User ID does not exist or is deleted!",
                exception="coding_exception",
                debuginfo=f"userid:{row['userid']}",
            )
        planned.append((instance, row))
    for instance, row in planned:
        site.enrol(
            instance,
            row["userid"],
            row["roleid"],
            timestart=row.get("timestart", 0),
            timeend=row.get("timeend", 0),
            status=1 if row.get("suspend") else 0,
        )
    return None


@FUNCTIONS.register(
    "enrol_manual_unenrol_users",
    enrolments=rows(userid=Value("int"), courseid=Value("int"), roleid=optional("int")),
)
def unenrol_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    planned = []
    for row in params["enrolments"]:
        if row["courseid"] not in site.courses:
            raise missing_record("course")
        instance = site.instance(row["courseid"], "manual")
        if instance is None:
            raise WsError("wsnoinstance", "Manual enrolment plugin instance doesn't exist")
        if row["userid"] not in site.users:
            raise invalid_parameter(f"User id not exist: {row['userid']}")
        planned.append((instance, row["userid"]))
    for instance, userid in planned:
        site.unenrol(instance, userid)  # not enrolled: nothing to do, still null
    return None


@FUNCTIONS.register(
    "core_enrol_get_users_courses", userid=Value("int"), returnusercount=default("bool", True)
)
def get_users_courses(site: MoodleSite, params: dict[str, Any]) -> Any:
    if site.live_user(params["userid"]) is None:
        return []  # no such user: an empty list, not an error (observed on Moodle 4.3)
    courseids = {
        site.instances[row.instanceid].courseid
        for row in site.enrolments.values()
        if row.userid == params["userid"] and site.is_active(row)
    }
    answer = []
    for courseid in sorted(courseids):
        course = site.courses[courseid]
        details = {
            k: v
            for k, v in _course_details(site, course).items()
            if k in ("id", "shortname", "fullname", "displayname", "idnumber", "visible", "format")
        }
        if params["returnusercount"]:
            details["enrolledusercount"] = len(
                {
                    row.userid
                    for row in site.enrolments.values()
                    if site.instances[row.instanceid].courseid == courseid
                }
            )
        answer.append(details)
    return answer


_PARTICIPANT_FIELDS = (  # get_enrolled_users_returns(), in its order
    *("id", "username", "firstname", "lastname", "fullname", "email", "address", "phone1"),
    *("phone2", "department", "institution", "idnumber", "interests", "firstaccess"),
    *("lastaccess", "lastcourseaccess", "description", "descriptionformat", "city", "country"),
    *("profileimageurlsmall", "profileimageurl", "customfields", "groups", "roles"),
    *("preferences", "enrolledcourses"),
)


def _participant(
    site: MoodleSite, course: Course, userid: int, roleids: list[int], courseids: list[int]
) -> dict[str, Any]:
    """user_get_user_details() in the course, as get_enrolled_users_returns() keeps it: no
    groups (none simulated), no preferences (only for oneself), ``enrolledcourses`` the
    user's active enrolments, ``lastcourseaccess`` their last step in the course."""
    details = user_details(site, site.users[userid])
    details["lastcourseaccess"] = site.completion.of(course.id, userid).last_activity
    if details.get("description"):
        details["descriptionformat"] = 1
    picture = f"{site.wwwroot}/theme/image.php/boost/core/1/u"
    details.update(profileimageurlsmall=f"{picture}/f2", profileimageurl=f"{picture}/f1")
    if "customfields" in details:
        details["customfields"] = [
            {k: f[k] for k in ("type", "value", "name", "shortname")}
            for f in details["customfields"]
        ]
    details["roles"] = [
        {"roleid": r, "name": "", "shortname": ROLE_NAMES.get(r, ""), "sortorder": 0}
        for r in roleids
    ]
    if courseids:
        details["enrolledcourses"] = [
            {"id": c, "fullname": site.courses[c].fullname, "shortname": site.courses[c].shortname}
            for c in courseids
        ]
    return {k: details[k] for k in _PARTICIPANT_FIELDS if k in details}


@FUNCTIONS.register(
    "core_enrol_get_enrolled_users",
    courseid=Value("int"),
    options=Multiple(Single({"name": Value("alphanumext"), "value": Value("raw")}), DEFAULT, []),
)
def get_enrolled_users(site: MoodleSite, params: dict[str, Any]) -> Any:
    """A course's participants, every enrolment status unless ``onlyactive`` or
    ``onlysuspended``; paged with ``limitfrom``/``limitnumber``, ``userfields`` narrows."""
    course = site.courses.get(params["courseid"])
    if course is None:
        raise missing_record("course")
    options = {o["name"]: o["value"] for o in params["options"]}
    onlyactive = options.get("onlyactive", "0") not in ("", "0")
    onlysuspended = options.get("onlysuspended", "0") not in ("", "0")
    if onlyactive and onlysuspended:
        raise WsError(  # observed on Moodle 4.3: a coding_exception, not invalidparameter
            "codingerror",
            "Coding error detected, it must be fixed by a programmer: Both onlyactive and "
            "onlysuspended are set, this is probably not what you want!",
            exception="coding_exception",
        )
    rows_by_user: dict[int, list[bool]] = {}
    for enrolment in site.enrolments.values():
        if site.instances[enrolment.instanceid].courseid == course.id:
            rows_by_user.setdefault(enrolment.userid, []).append(site.is_active(enrolment))
    userids = sorted(
        uid
        for uid, active in rows_by_user.items()
        if site.live_user(uid) is not None
        and (not onlyactive or any(active))
        and (not onlysuspended or not any(active))
    )
    start = int(clean(options.get("limitfrom", "0"), "int", site.params))
    count = int(clean(options.get("limitnumber", "0"), "int", site.params))
    userids = userids[start : start + count] if count else userids[start:]
    wanted = [f.strip() for f in options.get("userfields", "").split(",") if f.strip()]
    wanted_ids = set(userids)
    roleids: dict[int, list[int]] = {}  # one pass over roles and enrolments, not one a user
    for courseid, userid, roleid, _component in sorted(site.roles):
        if courseid == course.id and userid in wanted_ids:
            roleids.setdefault(userid, []).append(roleid)
    courseids: dict[int, set[int]] = {}
    for row in site.enrolments.values():
        if row.userid in wanted_ids and site.is_active(row):
            courseids.setdefault(row.userid, set()).add(site.instances[row.instanceid].courseid)
    answer = []
    for userid in userids:
        mine = sorted(courseids.get(userid, ()))
        participant = _participant(site, course, userid, roleids.get(userid, []), mine)
        if wanted:
            participant = {k: v for k, v in participant.items() if k in {*wanted, "id", "fullname"}}
        answer.append(participant)
    return answer
