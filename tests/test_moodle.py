"""Moodle: the simulator against LMS.md, the target against the simulator, the pure core alone.

Simulator tests are named after the Moodle behaviour they replay (LMS.md, "Moodle web services");
target tests go through ``httpx.ASGITransport`` into the same simulator app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app
from bridge.lmssim.moodle import MoodleSite
from bridge.lmssim.moodle import php_form
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_ws import MoodleError
from bridge.targets.moodle_ws import changed_fields
from bridge.targets.moodle_ws import chunk
from bridge.targets.moodle_ws import classify
from bridge.targets.moodle_ws import enrolment_row
from bridge.targets.moodle_ws import flatten
from bridge.targets.moodle_ws import parse_answer
from bridge.targets.moodle_ws import pick_user
from bridge.targets.moodle_ws import retry_after
from bridge.targets.moodle_ws import role_id
from bridge.targets.moodle_ws import user_row

PATH = "/webservice/rest/server.php"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BASE = "http://moodle.test"
CONFIG = TargetConfig(
    name="moodle",
    kind="moodle",
    base_url=BASE,
    credentials={"token": "MOODLE_TOKEN"},
    options={"auth": "saml2", "student_role_id": 5},
)
ADA = {
    "idnumber": "E1001",
    "username": "Ada.Lovelace",
    "email": "ada@example.com",
    "firstname": "Ada",
    "lastname": "Lovelace",
    "title": "Analyst",
    "department": "Claims",
    "roles": ["BEN_CHOICE_2026", "MANAGER"],
    "auth": "saml2",
}
NOW = 1_800_000_000.0


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
        "auth": "saml2",
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
    site_of(app).functions.discard("core_user_delete_users")
    answer = await ws(client, "core_user_delete_users", {"userids": [3]})
    assert answer["errorcode"] == "accessexception"
    assert (await ws(client, "local_unknown_function"))["errorcode"] == "accessexception"


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
    assert loud["debuginfo"] == "Username already exists: ada"
    assert "Username already exists" in loud["message"]


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


async def test_moodle_get_users_by_field_empty_and_never_deleted(
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
    for field_, value in (("id", created["id"]), ("email", "ada@example.com")):
        assert (
            await ws(client, "core_user_get_users_by_field", {"field": field_, "values": [value]})
            == []
        )


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
                "message": "Invalid email address",
            }
        ]
    }
    users = {u["username"]: u for u in site_of(app).snapshot()["users"]}
    assert users["ada"]["firstname"] == "Ada"  # the failed user is untouched
    assert users["bob"]["suspended"] is True  # the other one is updated
    assert users["bob"]["customfields"] == {}  # unknown custom field: silently ignored
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


# -- the target against the simulator ------------------------------------------------------


@pytest.fixture
async def target(app: Starlette) -> AsyncIterator[MoodleTarget]:
    target = MoodleTarget(
        CONFIG, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app), clock=lambda: NOW
    )
    yield target
    await target.aclose()


def upsert(
    attributes: dict[str, Any], *, create: bool = True, lms_user_id: str | None = None
) -> Delivery:
    intent = {
        "kind": "upsert_account",
        "person": "p-ada",
        "target": "moodle",
        "rule": "benefits-2026",
        "data": {"create": create, "attributes": attributes},
    }
    return Delivery(
        intent, lms_user_id, account={k: v for k, v in attributes.items() if k != "auth"}
    )


def intent(
    kind: str,
    ref: str | None = None,
    data: dict[str, Any] | None = None,
    *,
    user: str | None = None,
) -> Delivery:
    body: dict[str, Any] = {"kind": kind, "person": "p-ada", "target": "moodle", "rule": "r"}
    if ref is not None:
        body["ref"] = ref
    if data:
        body["data"] = data
    return Delivery(body, user, account={k: v for k, v in ADA.items() if k != "auth"})


def functions(result: Result) -> list[str]:
    return [call["function"] for call in result.detail["calls"]]


async def test_target_upsert_twice_makes_one_account(app: Starlette, target: MoodleTarget) -> None:
    first = await target.deliver(upsert(ADA))
    assert first.status is Status.done and first.message == "created"
    again = await target.deliver(upsert(ADA))
    assert (again.status, again.lms_user_id, again.message) == (
        Status.done,
        first.lms_user_id,
        "up to date",
    )
    assert functions(again) == ["core_user_get_users_by_field"]  # looked up, nothing written
    [account] = users_named(app, "ada.lovelace")  # lowercased
    assert str(account["id"]) == first.lms_user_id
    assert account["auth"] == "saml2" and account["password"] is False
    assert account["customfields"] == {"title": "Analyst", "roles": "BEN_CHOICE_2026,MANAGER"}
    assert account["fields"]["department"] == "Claims"


async def test_target_manual_auth_asks_moodle_to_create_the_password(app: Starlette) -> None:
    config = TargetConfig("moodle", "moodle", BASE, options={"auth": "manual"})
    target = MoodleTarget(config, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app))
    attributes = {k: v for k, v in ADA.items() if k != "auth"}
    assert (await target.deliver(upsert(attributes))).status is Status.done
    await target.aclose()
    [account] = users_named(app, "ada.lovelace")
    assert (account["auth"], account["password"]) == ("manual", True)


async def test_target_retried_create_after_out_of_band_account_updates_it(
    app: Starlette, target: MoodleTarget
) -> None:
    made = site_of(app).add_user(
        "ada.lovelace", firstname="A", lastname="L", email="old@example.com"
    )
    result = await target.deliver(upsert(ADA))
    assert (result.status, result.lms_user_id, result.message) == (
        Status.done,
        str(made.id),
        "updated",
    )
    assert len(users_named(app, "ada.lovelace")) == 1
    assert site_of(app).users[made.id].email == "ada@example.com"


class CreatedMeanwhile(httpx.AsyncBaseTransport):
    """Runs ``meanwhile`` just before the first core_user_create_users reaches Moodle."""

    def __init__(self, inner: httpx.AsyncBaseTransport, meanwhile: Callable[[], object]) -> None:
        self.inner = inner
        self.meanwhile: Callable[[], object] | None = meanwhile

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.meanwhile and b"wsfunction=core_user_create_users" in request.content:
            self.meanwhile()
            self.meanwhile = None
        return await self.inner.handle_async_request(request)


async def test_target_create_racing_another_create_switches_to_update(app: Starlette) -> None:
    site = site_of(app)  # debugging off: Moodle does not say "Username already exists"
    transport = CreatedMeanwhile(
        httpx.ASGITransport(app=app), lambda: site.add_user("ada.lovelace", idnumber="E1001")
    )
    target = MoodleTarget(CONFIG, SIM_MOODLE_TOKEN, transport=transport)
    result = await target.deliver(upsert(ADA))
    await target.aclose()
    assert result.status is Status.done and result.message == "updated"
    assert [c.get("errorcode") for c in result.detail["calls"]].count("invalidparameter") == 1
    [account] = users_named(app, "ada.lovelace")
    assert (str(account["id"]), account["email"]) == (result.lms_user_id, "ada@example.com")


async def test_target_ambiguous_idnumber_is_data_quality(
    app: Starlette, target: MoodleTarget
) -> None:
    site_of(app).add_user("someone", idnumber="E1001")
    site_of(app).add_user("someone.else", idnumber="E1001")
    result = await target.deliver(upsert(ADA))
    assert (result.status, result.category) == (Status.dead, Category.data_quality)
    assert "ambiguous idnumber" in result.message


async def test_target_single_idnumber_match_is_the_person(
    app: Starlette, target: MoodleTarget
) -> None:
    renamed = site_of(app).add_user("a.lovelace", idnumber="E1001", email="x@example.com")
    result = await target.deliver(upsert(ADA))
    assert (result.status, result.lms_user_id) == (Status.done, str(renamed.id))
    assert site_of(app).users[renamed.id].username == "ada.lovelace"


async def test_target_username_of_another_person_is_data_quality(
    app: Starlette, target: MoodleTarget
) -> None:
    site_of(app).add_user("ada.lovelace", idnumber="E9999")
    result = await target.deliver(upsert(ADA))
    assert (result.status, result.category) == (Status.dead, Category.data_quality)
    assert len(users_named(app, "ada.lovelace")) == 1


async def test_target_invalid_email_is_data_quality_with_moodles_message(
    app: Starlette, target: MoodleTarget
) -> None:
    site_of(app).debug = True
    result = await target.deliver(upsert({**ADA, "email": "ada@"}))
    assert (result.status, result.category) == (Status.dead, Category.data_quality)
    assert "Email address is invalid: ada@" in result.message
    assert users_named(app, "ada.lovelace") == []


async def test_target_invalid_email_on_update_is_data_quality_from_the_warning(
    target: MoodleTarget,
) -> None:
    created = await target.deliver(upsert(ADA))
    result = await target.deliver(
        upsert({"email": "broken@"}, create=False, lms_user_id=created.lms_user_id)
    )
    assert (result.status, result.category) == (Status.dead, Category.data_quality)
    assert "useremailinvalid" in result.message and result.lms_user_id == created.lms_user_id


async def test_target_bad_token_is_dead_provisioning(app: Starlette) -> None:
    target = MoodleTarget(CONFIG, "not-the-token", transport=httpx.ASGITransport(app=app))
    result = await target.deliver(upsert(ADA))
    await target.aclose()
    assert (result.status, result.category) == (Status.dead, Category.configuration)
    assert result.detail["calls"] == [
        {"function": "core_user_get_users_by_field", "errorcode": "invalidtoken"}
    ]
    assert "not-the-token" not in repr(result)


async def test_target_suspends_and_reactivates_the_account(
    app: Starlette, target: MoodleTarget
) -> None:
    created = await target.deliver(upsert(ADA))
    userid = int(created.lms_user_id or 0)
    suspended = await target.deliver(intent("suspend_account", user=created.lms_user_id))
    assert suspended.message == "suspended" and site_of(app).users[userid].suspended
    again = await target.deliver(intent("suspend_account", user=created.lms_user_id))
    assert again.message == "already suspended"
    back = await target.deliver(intent("reactivate_account"))  # link lost: found by username
    assert (back.message, back.lms_user_id) == ("reactivated", created.lms_user_id)
    assert not site_of(app).users[userid].suspended


async def test_target_enrol_twice_is_one_enrolment_ending_at_the_due_date(
    app: Starlette, target: MoodleTarget
) -> None:
    created = await target.deliver(upsert(ADA))
    data = {"kind": "enrolment", "role": "student", "due_days": 30}
    for _ in range(2):
        result = await target.deliver(intent("enrol", "BEN-2026", data, user=created.lms_user_id))
        assert result.status is Status.done and result.lms_user_id == created.lms_user_id
    [enrolment] = enrolments(app, created.lms_user_id or 0, "BEN-2026")
    assert (enrolment["status"], enrolment["roleids"]) == ("active", [5])
    assert enrolment["timeend"] == int(NOW) + 30 * 86400
    assert site_of(app).calls["core_course_get_courses_by_field"] == 1  # the course is cached


async def test_target_resolves_courses_by_shortname_too(
    app: Starlette, target: MoodleTarget
) -> None:
    created = await target.deliver(upsert(ADA))
    result = await target.deliver(
        intent("enrol", "ONBOARD-101", {"kind": "enrolment"}, user=created.lms_user_id)
    )
    assert result.status is Status.done
    assert len(enrolments(app, created.lms_user_id or 0, "ONBOARD-101")) == 1


async def test_target_suspend_enrolment_keeps_it(app: Starlette, target: MoodleTarget) -> None:
    created = await target.deliver(upsert(ADA))
    user = created.lms_user_id
    await target.deliver(intent("enrol", "BEN-2026", {"kind": "enrolment"}, user=user))
    result = await target.deliver(
        intent("suspend_enrolment", "BEN-2026", {"kind": "enrolment"}, user=user)
    )
    assert result.status is Status.done
    assert [e["status"] for e in enrolments(app, user or 0, "BEN-2026")] == ["suspended"]
    again = await target.deliver(
        intent("suspend_enrolment", "BEN-2026", {"kind": "enrolment"}, user=user)
    )
    assert again.message == "not actively enrolled in BEN-2026"
    never = await target.deliver(
        intent("suspend_enrolment", "BEN-2026-MGR", {"kind": "enrolment"}, user=user)
    )
    assert never.status is Status.done and enrolments(app, user or 0, "BEN-2026-MGR") == []


async def test_target_unenrol(app: Starlette, target: MoodleTarget) -> None:
    created = await target.deliver(upsert(ADA))
    user = created.lms_user_id
    await target.deliver(intent("enrol", "BEN-2026", {"kind": "enrolment"}, user=user))
    for _ in range(2):
        result = await target.deliver(
            intent("unenrol", "BEN-2026", {"kind": "enrolment"}, user=user)
        )
        assert result.status is Status.done
    assert enrolments(app, user or 0, "BEN-2026") == []


async def test_target_cohort_add_twice_then_remove(app: Starlette, target: MoodleTarget) -> None:
    created = await target.deliver(upsert(ADA))
    user = created.lms_user_id
    first = await target.deliver(
        intent("add_cohort_member", "BEN2026", {"kind": "cohort"}, user=user)
    )
    again = await target.deliver(
        intent("add_cohort_member", "BEN2026", {"kind": "cohort"}, user=user)
    )
    assert (first.status, again.status) == (Status.done, Status.done)
    assert again.message == "already in cohort BEN2026"
    assert len(site_of(app).snapshot()["cohort_members"]) == 1
    removed = await target.deliver(intent("remove_cohort_member", "BEN2026", user=user))
    assert removed.status is Status.done
    assert site_of(app).snapshot()["cohort_members"] == []


@pytest.mark.parametrize(
    ("kind", "ref", "words"),
    [
        ("enrol", "NO-SUCH-COURSE", "no Moodle course"),
        ("enrol", "LIBRARY", "no manual enrolment instance"),
        ("unenrol", "NO-SUCH-COURSE", "no Moodle course"),
        ("add_cohort_member", "NOSUCHCOHORT", "not exists"),
        ("remove_cohort_member", "NOSUCHCOHORT", "no Moodle cohort"),
    ],
)
async def test_target_unknown_refs_are_dead_mapping(
    target: MoodleTarget, kind: str, ref: str, words: str
) -> None:
    created = await target.deliver(upsert(ADA))
    result = await target.deliver(
        intent(kind, ref, {"kind": "enrolment"}, user=created.lms_user_id)
    )
    assert (result.status, result.category) == (Status.dead, Category.configuration)
    assert words in result.message


async def test_target_enrol_without_an_account_is_dead(target: MoodleTarget) -> None:
    result = await target.deliver(intent("enrol", "BEN-2026", {"kind": "enrolment"}))
    assert (result.status, result.category) == (Status.dead, Category.configuration)


async def test_target_outage_is_retry_with_retry_after() -> None:
    knobs = Knobs()
    app = create_app(knobs)
    knobs.outage(60)
    target = MoodleTarget(CONFIG, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app))
    result = await target.deliver(upsert(ADA))
    await target.aclose()
    assert (result.status, result.retry_after) == (Status.retry, 1.0)
    assert result.detail["calls"] == [{"function": "core_user_get_users_by_field", "http": 503}]


async def test_target_rate_limit_is_retry_after() -> None:
    app = create_app(Knobs(rate_limit_per_s=0.5, burst=1))
    target = MoodleTarget(CONFIG, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app))
    result = await target.deliver(upsert(ADA))
    await target.aclose()
    assert result.status is Status.retry and result.detail["calls"][0]["http"] == 429
    assert result.retry_after is not None and result.retry_after >= 1


async def test_target_server_errors_are_retry() -> None:
    app = create_app(Knobs(error_rate=1.0, seed=7))
    target = MoodleTarget(CONFIG, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app))
    result = await target.deliver(upsert(ADA))
    await target.aclose()
    assert (result.status, result.category) == (Status.retry, Category.transient)
    assert result.detail["calls"][0]["http"] in (500, 502)


class Timeouts(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)


async def test_target_timeout_is_retry() -> None:
    target = MoodleTarget(CONFIG, SIM_MOODLE_TOKEN, transport=Timeouts())
    result = await target.deliver(upsert(ADA))
    await target.aclose()
    assert (result.status, result.retry_after) == (Status.retry, None)
    assert result.detail["calls"] == [
        {"function": "core_user_get_users_by_field", "error": "timeout"}
    ]


async def test_target_batch_over_max_input_vars_is_chunked(app: Starlette) -> None:
    site = site_of(app)
    site.max_input_vars = 40
    people = [site.add_user(f"user{n}", email=f"user{n}@example.com") for n in range(20)]
    target = MoodleTarget(
        CONFIG, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=app), max_input_vars=40
    )
    data = {"kind": "enrolment", "role": "student", "due_days": 30}
    deliveries = [intent("enrol", "BEN-2026", data, user=str(p.id)) for p in people]
    results = await target.deliver_many(deliveries)
    await target.aclose()
    assert [r.status for r in results] == [Status.done] * 20
    assert [r.lms_user_id for r in results] == [str(p.id) for p in people]
    assert site.calls["enrol_manual_enrol_users"] == 3  # 5 fields a row: 7 rows under 40 - 3
    assert len([e for e in site.snapshot()["enrolments"] if e["course"] == "BEN-2026"]) == 20


async def test_target_batch_isolates_the_bad_row_and_keeps_order(
    app: Starlette, target: MoodleTarget
) -> None:
    ada = site_of(app).add_user("ada", email="ada@example.com")
    deliveries = [
        intent("enrol", "BEN-2026", {"kind": "enrolment"}, user=str(ada.id)),
        intent("enrol", "BEN-2026", {"kind": "enrolment"}, user="999"),  # a stale link
        intent("suspend_enrolment", "BEN-2026", {"kind": "enrolment"}, user=str(ada.id)),
    ]
    results = await target.deliver_many(deliveries)
    assert [r.status for r in results] == [Status.done, Status.dead, Status.done]
    assert [e["status"] for e in enrolments(app, ada.id, "BEN-2026")] == ["suspended"]


# -- the pure core ---------------------------------------------------------------------------


def test_flatten_writes_php_style_keys() -> None:
    params = {
        "users": [
            {
                "username": "ada",
                "customfields": [{"type": "title", "value": "Analyst"}],
                "suspended": True,
            }
        ],
        "field": "id",
        "none": None,
    }
    assert flatten(params) == [
        ("users[0][username]", "ada"),
        ("users[0][customfields][0][type]", "title"),
        ("users[0][customfields][0][value]", "Analyst"),
        ("users[0][suspended]", "1"),
        ("field", "id"),
        ("none", ""),
    ]


def test_flatten_round_trips_through_php_form() -> None:
    params = {"members": [{"cohorttype": {"type": "idnumber", "value": "X"}}]}
    assert php_form(flatten(params)) == {
        "members": {"0": {"cohorttype": {"type": "idnumber", "value": "X"}}}
    }


def test_chunk_keeps_each_batch_within_the_budget() -> None:
    rows = [enrolment_row(n, 2, 5) for n in range(10)]  # 4 fields a row
    batches = chunk("enrolments", rows, 10)
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]
    assert [r for b in batches for r in b] == rows
    assert chunk("enrolments", rows, 1) == [
        [r] for r in rows
    ]  # too big: alone, for the call to refuse


@pytest.mark.parametrize(
    ("errorcode", "category"),
    [
        ("invalidtoken", Category.configuration),
        ("accessexception", Category.configuration),
        ("servicerequireslogin", Category.configuration),
        ("invalidparameter", Category.data_quality),
        ("wsnoinstance", Category.configuration),
        ("wsusercannotassign", Category.configuration),
        ("something_new", Category.configuration),
        ("sitemaintenance", None),
    ],
)
def test_classify_on_errorcode(errorcode: str, category: Category | None) -> None:
    assert classify(errorcode) is category


def test_parse_answer_values_and_errors() -> None:
    assert parse_answer("f", 200, {}, b"null", NOW) is None
    assert parse_answer("f", 200, {}, b'[{"id": 3}]', NOW) == [{"id": 3}]
    body = b'{"exception": "x", "errorcode": "invalidparameter", "message": "Invalid", "debuginfo": "Email address is invalid: a@"}'
    with pytest.raises(MoodleError) as error:
        parse_answer("core_user_create_users", 200, {}, body, NOW)
    assert error.value.category is Category.data_quality
    assert (
        error.value.message
        == "core_user_create_users: invalidparameter: Invalid (Email address is invalid: a@)"
    )
    with pytest.raises(MoodleError) as error:
        parse_answer("f", 503, {"retry-after": "7"}, b"", NOW)
    assert (error.value.category, error.value.after) == (None, 7.0)
    with pytest.raises(MoodleError) as error:
        parse_answer("f", 200, {}, b'<?xml version="1.0" ?><RESPONSE/>', NOW)
    assert error.value.category is Category.configuration
    with pytest.raises(MoodleError) as error:
        parse_answer("f", 403, {}, b"", NOW)
    assert "disabled" in error.value.message


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("3", NOW) == 3.0
    assert retry_after("Fri, 15 Jan 2027 08:00:10 GMT", 1_800_000_000.0) == 10.0
    assert retry_after("soon", NOW) is None
    assert retry_after(None, NOW) is None


def test_user_row_for_create_and_update() -> None:
    row = user_row(ADA, {"auth": "manual", "profile_fields": {"title": "jobtitle"}}, create=True)
    assert row == {
        "idnumber": "E1001",
        "username": "ada.lovelace",
        "email": "ada@example.com",
        "firstname": "Ada",
        "lastname": "Lovelace",
        "department": "Claims",
        "customfields": [
            {"type": "jobtitle", "value": "Analyst"},
            {"type": "roles", "value": "BEN_CHOICE_2026,MANAGER"},
        ],
        "auth": "saml2",  # the rule's auth wins over the target's default
    }
    manual = user_row({"username": "x"}, {"auth": "manual"}, create=True)
    assert manual == {"username": "x", "auth": "manual", "createpassword": 1}
    assert user_row({"title": None, "auth": "saml2"}, {}, create=False) == {
        "customfields": [{"type": "title", "value": ""}]
    }


def test_changed_fields_leaves_out_what_moodle_already_has() -> None:
    row = {
        "email": "a@b.c",
        "firstname": "Ada",
        "customfields": [{"type": "title", "value": "CTO"}],
    }
    user = {
        "email": "a@b.c",
        "firstname": "Augusta",
        "customfields": [{"shortname": "title", "value": "CTO"}],
    }
    assert changed_fields(row, user) == {"firstname": "Ada"}


def test_pick_user_prefers_the_matching_username() -> None:
    found = [{"id": 3, "username": "ada"}, {"id": 4, "username": "ada2"}]
    assert pick_user(found, "ada2", "E1") == {"id": 4, "username": "ada2"}
    assert pick_user(found[:1], "bob", "E1") == {"id": 3, "username": "ada"}
    assert pick_user([], "ada", "E1") is None
    with pytest.raises(MoodleError, match="ambiguous idnumber 'E1'"):
        pick_user(found, "bob", "E1")


def test_role_id_from_options() -> None:
    assert role_id("student", {"student_role_id": 9}) == 9
    assert role_id("teacher", {}) == 4
    assert role_id("coach", {"role_ids": {"coach": 11}}) == 11
    with pytest.raises(MoodleError) as error:
        role_id("coach", {})
    assert error.value.category is Category.configuration
