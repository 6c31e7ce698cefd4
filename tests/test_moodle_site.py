"""The Moodle simulator replays a real Moodle 4.3 site: what it accepts, refuses and answers.

Each test is named after the Moodle behaviour it replays. LMS.md states most of them; those
marked "observed on Moodle 4.3 (Build 20231009)" were checked with curl against a stock Moodle
4.3 site (PostgreSQL, debugging on), the exact answer quoted; "read from" names the Moodle
source a fact comes from. When the real site and the simulator disagree, the simulator is wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import create_app
from bridge.lmssim.moodle import MoodleSite
from bridge.lmssim.moodle_rest import php_form
from bridge.targets.moodle_ws import flatten

PATH = "/webservice/rest/server.php"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASE = "http://moodle.test"


def site_of(app: Starlette) -> MoodleSite:
    site: MoodleSite = app.state.moodle
    return site


@pytest.fixture
def app() -> Starlette:
    return create_app()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def ws(
    client: httpx.AsyncClient,
    function: str,
    params: dict[str, Any] | None = None,
    *,
    token: str = SIM_MOODLE_TOKEN,
    restformat: str | None = "json",
) -> Any:
    """One web-service call the way a PHP client sends it; every answer must be HTTP 200."""
    fields = [("wstoken", token), ("wsfunction", function)]
    if restformat:
        fields.append(("moodlewsrestformat", restformat))
    response = await client.post(
        PATH, content=urlencode(fields + flatten(params or {})), headers=FORM
    )
    assert response.status_code == 200
    return response.json() if restformat == "json" else response.text


def new_user(username: str, **extra: Any) -> dict[str, Any]:
    return {
        "username": username,
        "firstname": username.title(),
        "lastname": "Example",
        "email": f"{username}@example.com",
        "auth": "oauth2",
        **extra,
    }


def users_named(app: Starlette, username: str) -> list[dict[str, Any]]:
    return [u for u in site_of(app).snapshot()["users"] if u["username"] == username]


def enrolments(app: Starlette, userid: int | str, course: str) -> list[dict[str, Any]]:
    return [
        e
        for e in site_of(app).snapshot()["enrolments"]
        if e["userid"] == int(userid) and e["course"] == course
    ]


# -- the REST protocol ----------------------------------------------------------------------


def test_php_form_builds_nested_arrays_from_bracketed_keys() -> None:
    pairs = [
        ("users[0][username]", "ada"),
        ("users[0][customfields][0][type]", "title"),
        ("users[0][customfields][0][value]", "Analyst"),
        ("values[]", "a"),
        ("values[]", "b"),
        ("field", "x"),
        ("field", "y"),
    ]
    assert php_form(pairs) == {
        "users": {
            "0": {"username": "ada", "customfields": {"0": {"type": "title", "value": "Analyst"}}}
        },
        "values": {"0": "a", "1": "b"},
        "field": "y",
    }


async def test_moodle_json_body_is_ignored(client: httpx.AsyncClient) -> None:
    body = {"wstoken": SIM_MOODLE_TOKEN, "wsfunction": "core_user_get_users_by_field"}
    response = await client.post(PATH, json=body)
    assert response.status_code == 200  # nothing reached $_POST: no token, no format → XML
    assert "<ERRORCODE>invalidtoken</ERRORCODE>" in response.text
    query = {"wstoken": SIM_MOODLE_TOKEN, "moodlewsrestformat": "json"}
    query["wsfunction"] = "core_user_get_users_by_field"
    response = await client.post(PATH, params=query, json={"field": "id", "values": ["2"]})
    assert response.json()["errorcode"] == "invalidparameter"


async def test_moodle_answers_xml_without_restformat(client: httpx.AsyncClient) -> None:
    answer = await ws(
        client, "core_user_get_users_by_field", {"field": "id", "values": [2]}, restformat=None
    )
    assert answer.startswith('<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>')
    assert '<KEY name="username"><VALUE>admin</VALUE>' in answer
    error = await ws(client, "core_user_get_users_by_field", token="wrong", restformat=None)
    assert '<EXCEPTION class="moodle_exception">' in error
    assert "<ERRORCODE>invalidtoken</ERRORCODE>" in error


async def test_moodle_errors_are_http_200_with_exception_json(client: httpx.AsyncClient) -> None:
    answer = await ws(client, "core_user_get_users_by_field", token="wrong")
    assert answer == {
        "exception": "moodle_exception",
        "errorcode": "invalidtoken",
        "message": "Invalid token - token not found",
    }


async def test_moodle_function_outside_the_service_is_accessexception(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009), a function outside the token's service
    (there core_completion_get_course_completion_status; here one the simulator lacks too): {"exception":"webservice_access_exception",
    "errorcode":"accessexception","message":"Access control exception","debuginfo":"Access to
    the function core_completion_get_course_completion_status() is not allowed. …"}."""
    site_of(app).service_functions.discard("core_user_delete_users")
    answer = await ws(client, "core_user_delete_users", {"userids": [3]})
    assert (answer["exception"], answer["errorcode"], answer["message"]) == (
        "webservice_access_exception",
        "accessexception",
        "Access control exception",
    )
    real_but_not_simulated = await ws(client, "core_completion_mark_course_self_completed")
    assert real_but_not_simulated["errorcode"] == "accessexception"
    assert site_of(app).calls.get("core_user_delete_users") == 1


async def test_moodle_function_it_does_not_have_is_invalidrecord(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): a name Moodle has no function for fails in
    external_function_info(), before the service is looked at: {"exception":
    "dml_missing_record_exception","errorcode":"invalidrecord","message":"Can't find data
    record in database table external_functions.", …}."""
    site_of(app).debug = True
    answer = await ws(client, "local_unknown_function")
    assert answer["exception"] == "dml_missing_record_exception"
    assert (answer["errorcode"], answer["message"]) == (
        "invalidrecord",
        "Can't find data record in database table external_functions.",
    )
    assert "local_unknown_function" in answer["debuginfo"]


async def test_moodle_rest_disabled_is_403_with_empty_body(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    site_of(app).rest_enabled = False
    response = await client.post(PATH, data={"wstoken": SIM_MOODLE_TOKEN})
    assert (response.status_code, response.content) == (403, b"")


async def test_moodle_debuginfo_only_when_debugging(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    quiet = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    assert quiet == {
        "exception": "invalid_parameter_exception",
        "errorcode": "invalidparameter",
        "message": "Invalid parameter value detected",
    }
    site_of(app).debug = True
    loud = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    # Observed on Moodle 4.3 (Build 20231009) with debugging on: the message stays bare, the
    # detail is in debuginfo alone ({"…","message":"Invalid parameter value detected",
    # "debuginfo":"Username already exists: zzsim.cf1"}).
    assert loud == {**quiet, "debuginfo": "Username already exists: ada"}


async def test_moodle_max_input_vars_truncates_into_missing_required_key(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    site_of(app).max_input_vars = 10  # 3 server fields + 7: the second user is cut short
    site_of(app).debug = True
    rows = [new_user("ada"), new_user("bob")]
    answer = await ws(client, "core_user_create_users", {"users": rows})
    assert answer["errorcode"] == "invalidparameter"
    assert "Missing required key in single structure" in answer["debuginfo"]
    assert users_named(app, "ada") == []


async def test_moodle_max_input_vars_at_a_row_boundary_drops_rows_silently(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    site_of(app).max_input_vars = 8  # exactly the server fields and one 5-field user
    answer = await ws(
        client, "core_user_create_users", {"users": [new_user("ada"), new_user("bob")]}
    )
    assert [u["username"] for u in answer] == ["ada"]  # check the returned count (LMS.md)


# -- core_user --------------------------------------------------------------------------------


async def test_moodle_get_users_by_field_empty_and_deleted_only_by_id(
    client: httpx.AsyncClient,
) -> None:
    assert (
        await ws(
            client, "core_user_get_users_by_field", {"field": "username", "values": ["nobody"]}
        )
        == []
    )
    [created] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    found = await ws(
        client, "core_user_get_users_by_field", {"field": "username", "values": ["ada"]}
    )
    assert [u["id"] for u in found] == [created["id"]]
    assert await ws(client, "core_user_delete_users", {"userids": [created["id"]]}) is None
    for field_, value in (("username", "ada"), ("email", "ada@example.com")):
        assert (
            await ws(client, "core_user_get_users_by_field", {"field": field_, "values": [value]})
            == []
        )
    # By id Moodle 4.3 still answers it, as delete_user() left it (observed).
    by_id = {"field": "id", "values": [created["id"]]}
    [gone] = await ws(client, "core_user_get_users_by_field", by_id)
    assert gone["username"].startswith("ada@example.com.") and "@" not in gone["email"]


async def test_moodle_get_users_by_field_refuses_uppercase_usernames(
    client: httpx.AsyncClient,
) -> None:
    answer = await ws(
        client, "core_user_get_users_by_field", {"field": "username", "values": ["Ada"]}
    )
    assert answer["errorcode"] == "invalidparameter"


async def test_moodle_create_users_batch_fails_whole(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    rows = [new_user("ada"), new_user("bob", email="not-an-email")]
    answer = await ws(client, "core_user_create_users", {"users": rows})
    assert answer["errorcode"] == "invalidparameter"
    assert users_named(app, "ada") == []  # nothing created


async def test_moodle_create_users_returns_ids_and_usernames(client: httpx.AsyncClient) -> None:
    answer = await ws(
        client, "core_user_create_users", {"users": [new_user("ada"), new_user("bob")]}
    )
    assert [u["username"] for u in answer] == ["ada", "bob"]
    assert all(isinstance(u["id"], int) for u in answer)


@pytest.mark.parametrize(
    ("row", "debuginfo"),
    [
        (new_user("Ada"), 'the value is "Ada", the server was expecting "username" type'),
        (new_user("ada", auth="manual"), "you must provide a password, or set createpassword"),
        (new_user("ada", email="ada@"), "Email address is invalid: ada@"),
        (new_user("ada", title="Analyst"), "Unexpected keys (title) detected"),
        (
            {"username": "ada", "lastname": "x", "email": "a@b.c"},
            "Missing required key in single structure: firstname",
        ),
    ],
)
async def test_moodle_create_users_invalidparameter(
    app: Starlette, client: httpx.AsyncClient, row: dict[str, Any], debuginfo: str
) -> None:
    site_of(app).debug = True
    answer = await ws(client, "core_user_create_users", {"users": [row]})
    assert answer["errorcode"] == "invalidparameter"
    assert debuginfo in answer["debuginfo"]


async def test_moodle_create_users_manual_auth_needs_policy_password_or_createpassword(
    client: httpx.AsyncClient,
) -> None:
    weak = await ws(
        client,
        "core_user_create_users",
        {"users": [new_user("ada", auth="manual", password="abc")]},
    )
    assert "Passwords must be at least 8 characters long." in weak["message"]
    strong = new_user("ada", auth="manual", password="Str0ng!pass")
    assert len(await ws(client, "core_user_create_users", {"users": [strong]})) == 1
    generated = new_user("bob", auth="manual", createpassword=1)
    assert len(await ws(client, "core_user_create_users", {"users": [generated]})) == 1


async def test_moodle_duplicate_email_unless_the_site_allows_it(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    twin = new_user("ada2", email="ADA@example.com")
    assert (await ws(client, "core_user_create_users", {"users": [twin]}))[
        "errorcode"
    ] == "invalidparameter"
    site_of(app).allow_accounts_same_email = True
    assert len(await ws(client, "core_user_create_users", {"users": [twin]})) == 1


async def test_moodle_idnumber_is_not_unique(client: httpx.AsyncClient) -> None:
    rows = [new_user("ada", idnumber="E1"), new_user("ada2", idnumber="E1")]
    assert len(await ws(client, "core_user_create_users", {"users": rows})) == 2
    found = await ws(
        client, "core_user_get_users_by_field", {"field": "idnumber", "values": ["E1"]}
    )
    assert [u["username"] for u in found] == ["ada", "ada2"]


async def test_moodle_update_users_partial_success_with_warnings(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    ada, bob = await ws(
        client, "core_user_create_users", {"users": [new_user("ada"), new_user("bob")]}
    )
    rows = [
        {"id": ada["id"], "email": "broken@", "firstname": "Augusta"},
        {"id": bob["id"], "suspended": 1, "customfields": [{"type": "nosuchfield", "value": "x"}]},
    ]
    answer = await ws(client, "core_user_update_users", {"users": rows})
    assert answer == {
        "warnings": [
            {
                "item": "user",
                "itemid": ada["id"],
                "warningcode": "useremailinvalid",
                "message": "error/useremailinvalid",  # observed on Moodle 4.3: no such string
            }
        ]
    }
    users = {u["username"]: u for u in site_of(app).snapshot()["users"]}
    assert users["ada"]["firstname"] == "Ada"  # the failed user is untouched
    assert users["bob"]["suspended"] is True  # the other one is updated
    assert users["bob"]["customfields"] == {}  # unknown custom field: silently ignored…
    assert site_of(app).dropped_profile_fields == [(bob["id"], "nosuchfield")]  # …and recorded
    await ws(client, "core_user_update_users", {"users": [{"id": bob["id"], "suspended": 0}]})
    assert site_of(app).users[bob["id"]].suspended is False


async def test_moodle_delete_users_all_or_nothing_and_twice_is_invaliduser(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    answer = await ws(client, "core_user_delete_users", {"userids": [ada["id"], 999]})
    assert answer["errorcode"] == "invaliduser"
    assert site_of(app).users[ada["id"]].deleted is False
    assert await ws(client, "core_user_delete_users", {"userids": [ada["id"]]}) is None
    again = await ws(client, "core_user_delete_users", {"userids": [ada["id"]]})
    assert again["errorcode"] == "invaliduser"
    assert len(await ws(client, "core_user_create_users", {"users": [new_user("ada")]})) == 1


# -- courses, cohorts, enrolments --------------------------------------------------------------


async def test_moodle_catalogue_covers_the_shipped_rules(client: httpx.AsyncClient) -> None:
    for ref in ("BEN-2026", "BEN-2026-MGR"):
        answer = await ws(
            client, "core_course_get_courses_by_field", {"field": "idnumber", "value": ref}
        )
        assert answer["warnings"] == []
        assert [c["shortname"] for c in answer["courses"]] == [ref]
        assert "manual" in answer["courses"][0]["enrollmentmethods"]
    params = {"query": "BEN2026", "context": {"contextlevel": "system"}, "includes": "all"}
    answer = await ws(client, "core_cohort_search_cohorts", params)
    assert [c["idnumber"] for c in answer["cohorts"]] == ["BEN2026"]
    nothing = await ws(
        client, "core_course_get_courses_by_field", {"field": "idnumber", "value": "NOPE"}
    )
    assert nothing == {"courses": [], "warnings": []}


def member(cohort: str, userid: int) -> dict[str, Any]:
    return {
        "cohorttype": {"type": "idnumber", "value": cohort},
        "usertype": {"type": "id", "value": userid},
    }


async def test_moodle_add_cohort_members_is_repeat_safe_with_warnings(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    first = await ws(
        client, "core_cohort_add_cohort_members", {"members": [member("BEN2026", ada["id"])]}
    )
    assert first == {"warnings": []}
    again = await ws(
        client, "core_cohort_add_cohort_members", {"members": [member("BEN2026", ada["id"])]}
    )
    assert [w["warningcode"] for w in again["warnings"]] == ["3"]
    unknown = await ws(
        client,
        "core_cohort_add_cohort_members",
        {"members": [member("NOPE", ada["id"]), member("BEN2026", 999)]},
    )
    assert [w["warningcode"] for w in unknown["warnings"]] == ["2", "2"]
    assert len(site_of(app).snapshot()["cohort_members"]) == 1


async def test_moodle_delete_cohort_members_null_even_when_not_a_member(
    client: httpx.AsyncClient,
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    params = {"members": [{"cohortid": 1, "userid": ada["id"]}]}
    assert await ws(client, "core_cohort_delete_cohort_members", params) is None


async def test_moodle_cohort_sync_enrols_members_at_once(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    await ws(client, "core_cohort_add_cohort_members", {"members": [member("ALLSTAFF", ada["id"])]})
    assert [e["method"] for e in enrolments(app, ada["id"], "SEC-AWARE")] == ["cohort"]
    staff = next(c.id for c in site_of(app).cohorts.values() if c.idnumber == "ALLSTAFF")
    removal = {"members": [{"cohortid": staff, "userid": ada["id"]}]}
    await ws(client, "core_cohort_delete_cohort_members", removal)
    assert enrolments(app, ada["id"], "SEC-AWARE") == []
    site_of(app).cohort_unenrol_action = "suspend"
    await ws(client, "core_cohort_add_cohort_members", {"members": [member("ALLSTAFF", ada["id"])]})
    await ws(client, "core_cohort_delete_cohort_members", removal)
    assert [e["status"] for e in enrolments(app, ada["id"], "SEC-AWARE")] == ["suspended"]


async def test_moodle_enrol_is_repeat_safe_and_suspend_keeps_the_enrolment(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    row = {"roleid": 5, "userid": ada["id"], "courseid": 2, "timestart": 100, "timeend": 200}
    for _ in range(2):
        assert await ws(client, "enrol_manual_enrol_users", {"enrolments": [row]}) is None
    [enrolment] = enrolments(app, ada["id"], "BEN-2026")
    assert (enrolment["status"], enrolment["timestart"], enrolment["timeend"]) == (
        "active",
        100,
        200,
    )
    await ws(client, "enrol_manual_enrol_users", {"enrolments": [{**row, "suspend": 1}]})
    assert [e["status"] for e in enrolments(app, ada["id"], "BEN-2026")] == ["suspended"]


async def test_moodle_enrol_batch_is_transactional_and_needs_a_manual_instance(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    library = next(c.id for c in site_of(app).courses.values() if c.shortname == "LIBRARY")
    rows = [
        {"roleid": 5, "userid": ada["id"], "courseid": 2},
        {"roleid": 5, "userid": ada["id"], "courseid": library},
    ]
    answer = await ws(client, "enrol_manual_enrol_users", {"enrolments": rows})
    assert answer["errorcode"] == "wsnoinstance"
    assert site_of(app).snapshot()["enrolments"] == []


async def test_moodle_unenrol_of_a_non_enrolled_user_is_null(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    params = {"enrolments": [{"userid": ada["id"], "courseid": 2}]}
    assert await ws(client, "enrol_manual_unenrol_users", params) is None
    await ws(
        client,
        "enrol_manual_enrol_users",
        {"enrolments": [{"roleid": 5, "userid": ada["id"], "courseid": 2}]},
    )
    assert await ws(client, "enrol_manual_unenrol_users", params) is None
    assert enrolments(app, ada["id"], "BEN-2026") == []


async def test_moodle_users_courses_lists_active_enrolments_only(client: httpx.AsyncClient) -> None:
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    rows = [
        {"roleid": 5, "userid": ada["id"], "courseid": 2},
        {"roleid": 5, "userid": ada["id"], "courseid": 3, "suspend": 1},
    ]
    await ws(client, "enrol_manual_enrol_users", {"enrolments": rows})
    answer = await ws(client, "core_enrol_get_users_courses", {"userid": ada["id"]})
    assert [c["shortname"] for c in answer] == ["BEN-2026"]


# -- observed on a stock Moodle 4.3 site: auth plugins ------------------------------------------


def test_stock_site_has_no_saml2_auth_plugin() -> None:
    """Read from /tmp/moodle/auth/ of Moodle 4.3: cas db email ldap lti manual mnet nologin none
    oauth2 shibboleth webservice — auth_saml2 is a third-party plugin."""
    site = MoodleSite("t")
    assert sorted(site.auth_plugins) == [
        *("cas", "db", "email", "ldap", "lti", "manual", "mnet", "nologin", "none", "oauth2"),
        *("shibboleth", "webservice"),
    ]
    assert "saml2" not in create_app().state.moodle.auth_plugins


async def test_create_users_with_an_auth_plugin_the_site_lacks_is_invalidparameter(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009), auth=saml2 on a stock site: auth is PARAM_AUTH,
    so parameter validation refuses it: {"exception":"invalid_parameter_exception","errorcode":
    "invalidparameter","message":"Invalid parameter value detected","debuginfo":"users =>
    Invalid parameter value detected: auth => Invalid parameter value detected: Invalid
    external api parameter: the value is \\"saml2\\", the server was expecting \\"auth\\" type"}.
    Nothing is created; a production site (debugging off) says only the message."""
    rows = [new_user("ada"), new_user("bob", auth="saml2")]
    quiet = await ws(client, "core_user_create_users", {"users": rows})
    assert quiet == {
        "exception": "invalid_parameter_exception",
        "errorcode": "invalidparameter",
        "message": "Invalid parameter value detected",
    }
    site_of(app).debug = True
    loud = await ws(client, "core_user_create_users", {"users": rows})
    assert loud["debuginfo"] == (
        "users => Invalid parameter value detected: auth => Invalid parameter value detected: "
        'Invalid external api parameter: the value is "saml2", the server was expecting '
        '"auth" type'
    )
    assert users_named(app, "ada") == []  # the whole batch fails
    site_of(app).auth_plugins.add("saml2")  # a site with auth_saml2 installed takes it
    assert len(await ws(client, "core_user_create_users", {"users": rows})) == 2


@pytest.mark.parametrize("auth", ["mnet", "webservice", ""])
async def test_create_users_refuses_mnet_webservice_and_no_auth(
    app: Starlette, client: httpx.AsyncClient, auth: str
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): installed but unset by create_users, and the
    empty name PARAM_AUTH lets through: debuginfo "Invalid authentication type: mnet" (and
    "…: webservice", "…: ")."""
    site_of(app).debug = True
    answer = await ws(client, "core_user_create_users", {"users": [new_user("ada", auth=auth)]})
    assert answer["debuginfo"] == f"Invalid authentication type: {auth}"


async def test_create_users_checks_rows_in_moodles_order(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Read from core_user_external::create_users: blank names, username taken, auth, lang,
    password, then validate_email, then the duplicate email. A row wrong in several ways is
    refused for the first."""
    site_of(app).debug = True
    await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    steps = [
        (new_user("ada", firstname=" ", auth="mnet"), "The field firstname cannot be blank"),
        (new_user("ada", auth="mnet", email="x@"), "Username already exists: ada"),
        (new_user("bob", auth="mnet", email="x@"), "Invalid authentication type: mnet"),
        (new_user("bob", auth="manual", email="x@"), "Invalid password: you must provide"),
        (new_user("bob", email="ADA@example.com"), "Email address already exists"),
        (new_user("bob", email="x@"), "Email address is invalid: x@"),
    ]
    for row, debuginfo in steps:
        answer = await ws(client, "core_user_create_users", {"users": [row]})
        assert answer["debuginfo"].startswith(debuginfo), (row, answer)


async def test_create_users_refuses_a_language_the_site_lacks(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009), lang=fr on an English-only site: debuginfo
    "users => … lang => … the value is \\"fr\\", the server was expecting \\"lang\\" type"."""
    site_of(app).debug = True
    answer = await ws(client, "core_user_create_users", {"users": [new_user("ada", lang="fr")]})
    assert answer["debuginfo"].endswith('the value is "fr", the server was expecting "lang" type')


# -- observed on a stock Moodle 4.3 site: usernames and emails ----------------------------------


@pytest.mark.parametrize("username", ["Ada", "józef.nowak", "ada lovelace", "ada+1", "åsa"])
async def test_usernames_are_lowercase_ascii_without_extendedusernamechars(
    app: Starlette, client: httpx.AsyncClient, username: str
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): "Zzsim.Upper" and "józef.zzsim" are refused at
    parameter validation: debuginfo "users => … username => … Invalid external api parameter:
    the value is \\"józef.zzsim\\", the server was expecting \\"username\\" type"."""
    site_of(app).debug = True
    answer = await ws(client, "core_user_create_users", {"users": [new_user(username)]})
    assert answer["errorcode"] == "invalidparameter"
    assert answer["debuginfo"].endswith(
        f'the value is "{username}", the server was expecting "username" type'
    )


async def test_extendedusernamechars_allows_any_lowercase_letter_but_not_uppercase(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Read from clean_param(PARAM_USERNAME), lib/moodlelib.php: with extendedusernamechars the
    value is only trimmed and lowercased (core_text::strtolower), so "józef.nowak" passes and
    "Józef" still does not."""
    site_of(app).extended_username_chars = True
    row = new_user("józef.nowak", email="jozef.nowak@example.com")
    [created] = await ws(client, "core_user_create_users", {"users": [row]})
    assert created["username"] == "józef.nowak"
    upper = new_user("Józef", email="jozef@example.com")
    assert (await ws(client, "core_user_create_users", {"users": [upper]}))[
        "errorcode"
    ] == "invalidparameter"


async def test_emails_must_be_ascii_even_with_extendedusernamechars(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): "jürgen.zzsim@example.com" → debuginfo "Email
    address is invalid: jürgen.zzsim@example.com" (validate_email is PHP's FILTER_VALIDATE_EMAIL,
    ASCII only); extendedusernamechars changes usernames, not emails."""
    site_of(app).debug = True
    site_of(app).extended_username_chars = True
    row = new_user("jurgen", email="jürgen@example.com")
    answer = await ws(client, "core_user_create_users", {"users": [row]})
    assert answer["debuginfo"] == "Email address is invalid: jürgen@example.com"


@pytest.mark.parametrize(
    "email",
    ["ada@localhost", "a" * 65 + "@example.com", "first..last@example.com", "a@example.123"],
)
async def test_emails_need_a_dotted_domain_and_a_short_local_part(
    app: Starlette, client: httpx.AsyncClient, email: str
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): "zzsim@localhost" and a 90-letter local part are
    "Email address is invalid"; the others are PHP 8.2's filter_var verdicts."""
    site_of(app).debug = True
    answer = await ws(client, "core_user_create_users", {"users": [new_user("ada", email=email)]})
    assert answer["debuginfo"] == f"Email address is invalid: {email}"


async def test_email_lookup_is_exact_but_the_duplicate_check_ignores_case(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): core_user_get_users_by_field email
    "ZZSIM.CF1@example.com" → [] for zzsim.cf1@example.com, yet creating another account with
    it → "Email address already exists: ZZSIM.CF1@example.com"; core_user_get_users (a LIKE
    search) finds it."""
    site_of(app).debug = True
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    upper = "ADA@example.com"
    lookup = {"field": "email", "values": [upper]}
    assert await ws(client, "core_user_get_users_by_field", lookup) == []
    twin = await ws(client, "core_user_create_users", {"users": [new_user("bob", email=upper)]})
    assert twin["debuginfo"] == f"Email address already exists: {upper}"
    search = {"criteria": [{"key": "email", "value": upper}]}
    found = await ws(client, "core_user_get_users", search)
    assert [u["id"] for u in found["users"]] == [ada["id"]]


async def test_a_value_longer_than_its_column_fails_the_insert(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009, PostgreSQL), a 101-letter firstname or username:
    {"exception":"dml_write_exception","errorcode":"dmlwriteexception","message":"Error
    writing to database","debuginfo":"ERROR:  value too long for type character varying(100)
    …"}; on update the same comes back as a warning."""
    site_of(app).debug = True
    row = new_user("ada", firstname="a" * 101)
    answer = await ws(client, "core_user_create_users", {"users": [row]})
    assert (answer["exception"], answer["errorcode"], answer["message"]) == (
        "dml_write_exception",
        "dmlwriteexception",
        "Error writing to database",
    )
    assert answer["debuginfo"].startswith("ERROR:  value too long for type character varying(100)")
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    update = {"users": [{"id": ada["id"], "lastname": "l" * 101}]}
    assert (await ws(client, "core_user_update_users", update))["warnings"] == [
        {
            "item": "user",
            "itemid": ada["id"],
            "warningcode": "dmlwriteexception",
            "message": "Error writing to database",
        }
    ]


async def test_update_users_to_a_taken_username_is_a_dmlwriteexception_warning(
    client: httpx.AsyncClient,
) -> None:
    """Observed on Moodle 4.3 (Build 20231009), username=admin on another account:
    {"warnings":[{"item":"user","itemid":4,"warningcode":"dmlwriteexception","message":"Error
    writing to database"}]}; an uppercase username fails the whole call (PARAM_USERNAME)."""
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    taken = await ws(
        client, "core_user_update_users", {"users": [{"id": ada["id"], "username": "admin"}]}
    )
    assert [w["warningcode"] for w in taken["warnings"]] == ["dmlwriteexception"]
    upper = await ws(
        client, "core_user_update_users", {"users": [{"id": ada["id"], "username": "ZZ"}]}
    )
    assert upper["errorcode"] == "invalidparameter"


async def test_update_users_warnings_say_what_moodle_says(client: httpx.AsyncClient) -> None:
    """Observed on Moodle 4.3 (Build 20231009): an unknown id → {"warningcode":"invaliduserid",
    "message":"Invalid user ID"}; the guest → {"warningcode":"usernotupdatedguest","message":
    "error/usernotupdatedguest"}."""
    rows = [{"id": 999, "firstname": "x"}, {"id": 1, "firstname": "x"}]
    answer = await ws(client, "core_user_update_users", {"users": rows})
    assert [(w["itemid"], w["warningcode"], w["message"]) for w in answer["warnings"]] == [
        (999, "invaliduserid", "Invalid user ID"),
        (1, "usernotupdatedguest", "error/usernotupdatedguest"),
    ]


async def test_password_policy_failure_is_the_errorcode(client: httpx.AsyncClient) -> None:
    """Observed on Moodle 4.3 (Build 20231009), auth=manual password=abc: {"exception":
    "moodle_exception","errorcode":"<div>Passwords must be at least 8 characters long.</div>…",
    "message":"error/<div>…"}, ending "The password must have at least 1 special character(s)
    such as *, -, or #."."""
    row = new_user("ada", auth="manual", password="abc")
    answer = await ws(client, "core_user_create_users", {"users": [row]})
    assert answer["errorcode"] == (
        "<div>Passwords must be at least 8 characters long.</div>"
        "<div>Passwords must have at least 1 digit(s).</div>"
        "<div>Passwords must have at least 1 upper case letter(s).</div>"
        "<div>The password must have at least 1 special character(s) such as *, -, or #.</div>"
    )
    assert answer["message"] == f"error/{answer['errorcode']}"


# -- observed on a stock Moodle 4.3 site: custom profile fields ---------------------------------


async def test_undefined_profile_fields_are_dropped_silently_on_create(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009), a site defining only "title": creating zzsim.cf1
    with customfields title, roles and nosuchfield answers [{"id":4,"username":"zzsim.cf1"}];
    core_user_get_users_by_field then returns "customfields":[{"type":"text","value":"Analyst",
    "displayvalue":"Analyst","name":"Title","shortname":"title"}] — roles and nosuchfield are
    gone without a word. The simulator records what it dropped."""
    site = site_of(app)
    site.profile_fields = {"title"}
    custom = [
        {"type": "title", "value": "Analyst"},
        {"type": "roles", "value": "A,B"},
        {"type": "nosuchfield", "value": "x"},
    ]
    answer = await ws(
        client, "core_user_create_users", {"users": [new_user("ada", customfields=custom)]}
    )
    assert answer == [{"id": answer[0]["id"], "username": "ada"}]
    [ada] = await ws(
        client, "core_user_get_users_by_field", {"field": "username", "values": ["ada"]}
    )
    assert ada["customfields"] == [
        {
            "type": "text",
            "value": "Analyst",
            "displayvalue": "Analyst",
            "name": "Title",
            "shortname": "title",
        }
    ]
    assert site.dropped_profile_fields == [(ada["id"], "roles"), (ada["id"], "nosuchfield")]
    assert site.snapshot()["dropped_profile_fields"] == [
        {"userid": ada["id"], "shortname": "roles"},
        {"userid": ada["id"], "shortname": "nosuchfield"},
    ]


async def test_undefined_profile_fields_are_dropped_silently_on_update_and_empty_clears(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): core_user_update_users with title=Lead and
    roles=X answers {"warnings":[]} and only title changes; title="" then leaves the account
    with no customfields key at all (only fields with a value are returned)."""
    site = site_of(app)
    site.profile_fields = {"title"}
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    custom = [{"type": "title", "value": "Lead"}, {"type": "roles", "value": "X"}]
    answer = await ws(
        client, "core_user_update_users", {"users": [{"id": ada["id"], "customfields": custom}]}
    )
    assert answer == {"warnings": []}
    lookup = {"field": "id", "values": [ada["id"]]}
    [found] = await ws(client, "core_user_get_users_by_field", lookup)
    assert [(c["shortname"], c["value"]) for c in found["customfields"]] == [("title", "Lead")]
    assert site.dropped_profile_fields == [(ada["id"], "roles")]
    cleared = [{"type": "title", "value": ""}]
    await ws(
        client, "core_user_update_users", {"users": [{"id": ada["id"], "customfields": cleared}]}
    )
    [found] = await ws(client, "core_user_get_users_by_field", lookup)
    assert "customfields" not in found


def test_the_seeded_site_defines_the_profile_fields_the_shipped_rules_map() -> None:
    """rules/benefits-2026.yaml maps title and roles; another site is one argument away."""
    assert create_app().state.moodle.profile_fields == {"title", "roles"}
    assert create_app(moodle_profile_fields=["title"]).state.moodle.profile_fields == {"title"}
    assert MoodleSite("t", profile_fields=("level",)).profile_fields == {"level"}


# -- observed on a stock Moodle 4.3 site: the token's service ------------------------------------


async def test_site_info_lists_the_services_functions(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): core_webservice_get_site_info answers sitename,
    username "admin", userid 2, release "4.3 (Build: 20231009)", version "2023100900" and
    "functions":[{"name":"core_cohort_add_cohort_members","version":"2023100900"},…], the
    functions of the token's service only."""
    info = await ws(client, "core_webservice_get_site_info")
    assert (info["release"], info["version"]) == ("4.3 (Build: 20231009)", "2023100900")
    assert (info["username"], info["userid"], info["sitename"]) == ("admin", 2, "Simulated Moodle")
    names = [f["name"] for f in info["functions"]]
    assert {f["version"] for f in info["functions"]} == {"2023100900"}
    for name in (
        "core_webservice_get_site_info",
        "core_user_get_users",
        "core_user_get_users_by_field",
        "core_user_create_users",
        "core_user_update_users",
        "core_course_get_courses_by_field",
        "core_cohort_search_cohorts",
        "core_cohort_add_cohort_members",
        "core_cohort_delete_cohort_members",
        "core_enrol_get_users_courses",
        "core_enrol_get_enrolled_users",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
    ):
        assert name in names
    site_of(app).service_functions = {"core_webservice_get_site_info", "core_user_get_users"}
    narrowed = await ws(client, "core_webservice_get_site_info")
    assert [f["name"] for f in narrowed["functions"]] == [
        "core_user_get_users",
        "core_webservice_get_site_info",
    ]
    refused = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    assert refused["errorcode"] == "accessexception"


async def test_a_service_can_leave_out_site_info_too() -> None:
    """A service is a list of functions: core_webservice_get_site_info is not implied."""
    functions = {"core_user_get_users_by_field"}
    app = create_app(moodle_service_functions=functions)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as narrow:
        answer = await ws(narrow, "core_webservice_get_site_info")
    assert answer["errorcode"] == "accessexception"
    with pytest.raises(ValueError, match="no function local_nope"):
        MoodleSite("t", service_functions={"local_nope"})


async def test_an_invalid_token_says_so_without_debuginfo(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    """Observed on Moodle 4.3 (Build 20231009), debugging on: {"exception":"moodle_exception",
    "errorcode":"invalidtoken","message":"Invalid token - token not found"}."""
    site_of(app).debug = True
    assert await ws(client, "core_webservice_get_site_info", token="bad") == {
        "exception": "moodle_exception",
        "errorcode": "invalidtoken",
        "message": "Invalid token - token not found",
    }


# -- observed on a stock Moodle 4.3 site: users, enrolments, cohorts ----------------------------


async def test_get_users_searches_by_criteria_and_warns_of_unknown_keys(
    client: httpx.AsyncClient,
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): criteria auth=saml2 on a stock site →
    {"users":[],"warnings":[]} (PARAM_AUTH cleans it away); auth=oauth2 → the oauth2 accounts;
    key city → "warnings":[{"item":"city","warningcode":"invalidfieldparameter","message":"The
    search key 'city' is not supported, look at the web service documentation"}]."""
    await ws(client, "core_user_create_users", {"users": [new_user("ada"), new_user("bob")]})
    oauth2 = await ws(
        client, "core_user_get_users", {"criteria": [{"key": "auth", "value": "oauth2"}]}
    )
    assert [u["username"] for u in oauth2["users"]] == ["ada", "bob"]
    saml2 = await ws(
        client, "core_user_get_users", {"criteria": [{"key": "auth", "value": "saml2"}]}
    )
    assert saml2 == {"users": [], "warnings": []}
    both = [{"key": "auth", "value": "oauth2"}, {"key": "city", "value": "x"}]
    answer = await ws(client, "core_user_get_users", {"criteria": both})
    assert len(answer["users"]) == 2
    assert answer["warnings"] == [
        {
            "item": "city",
            "warningcode": "invalidfieldparameter",
            "message": "The search key 'city' is not supported, look at the web service "
            "documentation",
        }
    ]


async def test_timeend_ends_access_to_the_course(app: Starlette, client: httpx.AsyncClient) -> None:
    """Observed on Moodle 4.3 (Build 20231009): enrolled with timeend an hour ago,
    core_enrol_get_users_courses → [] while core_enrol_get_enrolled_users still lists the
    participant (and with onlyactive=1 does not); a timeend tomorrow is listed. timeend is an
    end of access, never a due date (LMS.md)."""
    site = site_of(app)
    now = 1_800_000_000.0
    site.clock = lambda: now
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    row = {"roleid": 5, "userid": ada["id"], "courseid": 2, "timeend": int(now) + 86400}
    assert await ws(client, "enrol_manual_enrol_users", {"enrolments": [row]}) is None
    courses = await ws(client, "core_enrol_get_users_courses", {"userid": ada["id"]})
    assert [c["shortname"] for c in courses] == ["BEN-2026"]
    site.clock = lambda: now + 2 * 86400  # two days on: past the timeend
    assert await ws(client, "core_enrol_get_users_courses", {"userid": ada["id"]}) == []
    everyone = await ws(client, "core_enrol_get_enrolled_users", {"courseid": 2})
    assert [(u["username"], u["roles"][0]["shortname"]) for u in everyone] == [("ada", "student")]
    active = {"courseid": 2, "options": [{"name": "onlyactive", "value": "1"}]}
    assert await ws(client, "core_enrol_get_enrolled_users", active) == []
    ended = {"courseid": 2, "options": [{"name": "onlysuspended", "value": "1"}]}
    assert [u["id"] for u in await ws(client, "core_enrol_get_enrolled_users", ended)] == [
        ada["id"]
    ]


async def test_enrolled_users_pages_and_narrows_fields(client: httpx.AsyncClient) -> None:
    """Observed on Moodle 4.3 (Build 20231009): options limitnumber=1, userfields=id,username →
    [{"id":4,"username":"zzsim.cf1","fullname":"A B"}]; an unknown course → invalidrecord
    "Can't find data record in database table course."."""
    made = await ws(client, "core_user_create_users", {"users": [new_user("ada"), new_user("bob")]})
    rows = [{"roleid": 5, "userid": u["id"], "courseid": 2} for u in made]
    await ws(client, "enrol_manual_enrol_users", {"enrolments": rows})
    options = [
        {"name": "limitnumber", "value": "1"},
        {"name": "limitfrom", "value": "1"},
        {"name": "userfields", "value": "id,username"},
    ]
    page = await ws(client, "core_enrol_get_enrolled_users", {"courseid": 2, "options": options})
    assert page == [{"id": made[1]["id"], "username": "bob", "fullname": "Bob Example"}]
    missing = await ws(client, "core_enrol_get_enrolled_users", {"courseid": 999})
    assert (missing["errorcode"], missing["message"]) == (
        "invalidrecord",
        "Can't find data record in database table course.",
    )


async def test_users_courses_of_an_unknown_user_is_an_empty_list(client: httpx.AsyncClient) -> None:
    """Observed on Moodle 4.3 (Build 20231009): core_enrol_get_users_courses userid=999 → []."""
    assert await ws(client, "core_enrol_get_users_courses", {"userid": 999}) == []


async def test_enrolment_errors_say_what_moodle_says(client: httpx.AsyncClient) -> None:
    """Observed on Moodle 4.3 (Build 20231009): roleid 99 → wsusercannotassign "You don't have
    the permission to assign this role (99) to this user (4) in this course (3)."; courseid 999
    → invalidparameter, debuginfo "Context does not exist"; userid 999 → codingerror, debuginfo
    "userid:999"; unenrol from course 999 → invalidrecord "… table course."."""
    [ada] = await ws(client, "core_user_create_users", {"users": [new_user("ada")]})
    enrol = {"roleid": 99, "userid": ada["id"], "courseid": 2}
    role = await ws(client, "enrol_manual_enrol_users", {"enrolments": [enrol]})
    assert role["message"] == (
        f"You don't have the permission to assign this role (99) to this user ({ada['id']}) in "
        "this course (2)."
    )
    course = await ws(
        client,
        "enrol_manual_enrol_users",
        {"enrolments": [{**enrol, "roleid": 5, "courseid": 999}]},
    )
    assert course["errorcode"] == "invalidparameter"
    user = await ws(
        client, "enrol_manual_enrol_users", {"enrolments": [{**enrol, "roleid": 5, "userid": 999}]}
    )
    assert (user["exception"], user["errorcode"]) == ("coding_exception", "codingerror")
    unenrol = {"enrolments": [{"userid": ada["id"], "courseid": 999}]}
    assert (await ws(client, "enrol_manual_unenrol_users", unenrol))["message"] == (
        "Can't find data record in database table course."
    )


async def test_deleting_an_unknown_user_from_a_cohort_is_invaliduser(
    client: httpx.AsyncClient,
) -> None:
    """Observed on Moodle 4.3 (Build 20231009): core_cohort_delete_cohort_members userid 999 →
    {"exception":"dml_missing_record_exception","errorcode":"invaliduser","message":"Invalid
    user"}; cohort 999 → invalidrecord "… table cohort."."""
    user = await ws(
        client, "core_cohort_delete_cohort_members", {"members": [{"cohortid": 1, "userid": 999}]}
    )
    assert (user["exception"], user["errorcode"], user["message"]) == (
        "dml_missing_record_exception",
        "invaliduser",
        "Invalid user",
    )
    cohort = await ws(
        client, "core_cohort_delete_cohort_members", {"members": [{"cohortid": 999, "userid": 2}]}
    )
    assert cohort["message"] == "Can't find data record in database table cohort."


# -- the simulator's own surface -----------------------------------------------------------------


async def test_sim_moodle_settings_change_at_run_time(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    answer = await client.post(
        "/_sim/moodle", json={"auth_plugins": ["manual", "saml2"], "debug": True}
    )
    assert answer.status_code == 200
    assert answer.json()["auth_plugins"] == ["manual", "saml2"]
    created = await ws(client, "core_user_create_users", {"users": [new_user("ada", auth="saml2")]})
    assert created[0]["username"] == "ada"
    bad = await client.post("/_sim/moodle", json={"colour": "red"})
    assert bad.status_code == 400
    unknown = await client.post("/_sim/moodle", json={"service_functions": ["local_nope"]})
    assert unknown.status_code == 400
    state = (await client.get("/_sim/state")).json()["moodle"]
    assert state["settings"]["debug"] is True


@pytest.mark.parametrize(
    ("auth", "internal"),
    [
        ("nologin", True),
        ("lti", True),
        ("none", True),
        ("oauth2", False),
        ("ldap", False),
        ("cas", False),
    ],
)
async def test_internal_auth_plugins_need_a_password(
    app: Starlette, client: httpx.AsyncClient, auth: str, internal: bool
) -> None:
    """Observed on Moodle 4.3 (Build 20231009) without a password: nologin, lti and none →
    "Invalid password: you must provide a password, or set createpassword." (is_internal() is
    auth_plugin_base's default, true); oauth2, ldap, cas, shibboleth → created."""
    site_of(app).debug = True
    answer = await ws(client, "core_user_create_users", {"users": [new_user("ada", auth=auth)]})
    if internal:
        assert answer["debuginfo"] == (
            "Invalid password: you must provide a password, or set createpassword."
        )
    else:
        assert answer[0]["username"] == "ada"
