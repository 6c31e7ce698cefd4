"""The declarative ``rest`` target: templates, request building, classification, OAuth2, and
rules/examples/docebo driving a stateful fake Docebo (httpx.MockTransport) end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bridge.auth.oauth2 import ClientCredentials
from bridge.auth.oauth2 import TokenError
from bridge.rules.loader import load_ruleset
from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.base import Status
from bridge.targets.rest import RequestSpec
from bridge.targets.rest import RestConfigError
from bridge.targets.rest import RestTarget
from bridge.targets.rest import Scope
from bridge.targets.rest import TemplateError
from bridge.targets.rest import build_request
from bridge.targets.rest import classify
from bridge.targets.rest import extract
from bridge.targets.rest import found_id
from bridge.targets.rest import parse_options
from bridge.targets.rest import render_text
from bridge.targets.rest import render_value
from bridge.targets.rest import retry_after
from bridge.targets.rest import validate_options

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = load_ruleset(ROOT / "rules" / "examples" / "docebo").targets["docebo"]
CREDENTIALS = {"client_id": "bridge-app", "client_secret": "s3cret"}
TODAY = date(2026, 3, 1)
ACCOUNT = {
    "idnumber": "E100",
    "username": "jdoe",
    "email": "j.doe+hr@acme.example",
    "firstname": "Jane",
    "lastname": "Doe",
}


def delivery(
    kind: str,
    *,
    link: str | None = None,
    ref: str | None = None,
    data: dict[str, Any] | None = None,
    account: dict[str, Any] | None = None,
) -> Delivery:
    intent: dict[str, Any] = {"kind": kind, "person": "p-1", "target": "docebo", "rule": "r"}
    if ref is not None:
        intent["ref"] = ref
    if data is not None:
        intent["data"] = data
    return Delivery(intent, lms_user_id=link, account=dict(ACCOUNT if account is None else account))


def upsert(attributes: dict[str, Any] | None = None, **kwargs: Any) -> Delivery:
    data = {"create": True, "attributes": dict(ACCOUNT if attributes is None else attributes)}
    return delivery("upsert_account", data=data, **kwargs)


def spec(name: str, options: dict[str, Any] | None = None) -> RequestSpec:
    parsed, problems = parse_options(options or EXAMPLE.options)
    assert problems == []
    return parsed.requests[name]


# -- templates --------------------------------------------------------------------------------


SCOPE = Scope(
    {
        "attributes": {"email": "a b/c@x.example", "title": None, "n": 3},
        "data": {"role": "teacher", "due_days": 30},
        "ref": "BEN 2026",
    },
    {"level": {"student": 3, "teacher": 6}},
    TODAY,
)


def test_url_templates_percent_encode_each_value() -> None:
    url = render_text(
        "/users/{{ ref }}?q={{ attributes.email }}&n={{ attributes.n }}", SCOPE, url=True
    )
    assert url == "/users/BEN%202026?q=a%20b%2Fc%40x.example&n=3"


def test_body_templates_keep_types_and_drop_optional_missing_values() -> None:
    body = render_value(
        {
            "n": "{{ attributes.n }}",
            "title": "{{ attributes.title }}",
            "absent": "{{ attributes.nothing? }}",
            "ids": ["{{ ref }}", "{{ attributes.nothing? }}"],
            "text": "course {{ ref }} for {{ attributes.nothing? }}!",
            "constant": 7,
        },
        SCOPE,
    )
    assert body == {
        "n": 3,
        "title": None,
        "ids": ["BEN 2026"],
        "text": "course BEN 2026 for !",
        "constant": 7,
    }


def test_filters_default_case_map_and_due_date() -> None:
    assert render_value("{{ attributes.title | default: '-' }}", SCOPE) == "-"
    assert render_value('{{ attributes.nothing | default: "x|y" }}', SCOPE) == "x|y"
    assert render_value("{{ data.role | upper }}", SCOPE) == "TEACHER"
    assert render_value("{{ data.role | map: level }}", SCOPE) == 6
    assert render_value("{{ data.due_days | days_from_today }}", SCOPE) == "2026-03-31"


def test_a_missing_value_is_a_data_quality_error() -> None:
    with pytest.raises(TemplateError, match="no value for attributes.title") as caught:
        render_text("/u?t={{ attributes.title }}", SCOPE, url=True)  # None is no value in text
    assert caught.value.category == Category.data_quality
    with pytest.raises(TemplateError, match="no value for attributes.nothing"):
        render_value({"x": "{{ attributes.nothing }}"}, SCOPE)


def test_a_value_the_map_lacks_is_a_mapping_error() -> None:
    scope = Scope({"data": {"role": "owner"}}, {"level": {"student": 3}}, TODAY)
    with pytest.raises(TemplateError, match="no entry 'owner'") as caught:
        render_value("{{ data.role | map: level }}", scope)
    assert caught.value.category == Category.configuration


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ attributes.email | lowr }}", "did you mean 'lower'"),
        ("{{ __import__('os') }}", "not a value path"),
        ("{{ secrets.token }}", "unknown value 'secrets.token'"),
        ("{{ data.x | default }}", "needs an argument"),
    ],
)
def test_templates_are_paths_and_known_filters_only(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        render_text(template, SCOPE)


def test_extract_reads_small_json_paths() -> None:
    doc = {"data": {"items": [{"user_id": 5}], "id": "x"}}
    assert extract(doc, "$.data.items[0].user_id") == 5
    assert extract(doc, "data.id") == "x"
    assert extract([{"id": 1}], "$[0].id") == 1
    assert extract(doc, "$.data.items[3].user_id") is extract(doc, "nope")


# -- building requests (the worked example's, intent by intent) --------------------------------


def built(name: str, d: Delivery) -> tuple[str, str, dict[str, str], Any]:
    method, url, headers, body = build_request(spec(name), d, today=TODAY)
    return method, url, headers, json.loads(body) if body is not None else None


def test_build_lookup() -> None:
    method, url, _, body = built("lookup", delivery("suspend_account"))
    assert (method, url, body) == ("GET", "/manage/v1/user?search_text=jdoe&page_size=200", None)


def test_build_create_account() -> None:
    method, url, headers, body = built("create_account", upsert())
    assert (method, url) == ("POST", "/manage/v1/user")
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "userid": "jdoe",
        "email": "j.doe+hr@acme.example",
        "firstname": "Jane",
        "lastname": "Doe",
        "send_notification_email": False,
    }


def test_build_update_account_sends_only_what_changed() -> None:
    changed = upsert({"email": "jane@acme.example", "lastname": None}, link="12001")
    method, url, _, body = built("update_account", changed)
    assert (method, url) == ("PUT", "/manage/v1/user/12001")
    assert body == {"email": "jane@acme.example", "lastname": None}


@pytest.mark.parametrize(("kind", "status"), [("suspend_account", 0), ("reactivate_account", 1)])
def test_build_account_status(kind: str, status: int) -> None:
    assert built(kind, delivery(kind, link="12001"))[1:] == (
        "/manage/v1/user/change_status",
        {"Content-Type": "application/json"},
        {"user_ids": ["12001"], "status": status},
    )


def test_build_enrol_with_level_and_access_end_never_the_due_date() -> None:
    d = delivery(
        "enrol",
        link="12001",
        ref="42",
        data={"kind": "enrolment", "role": "student", "due_days": 14, "access_end_days": 30},
    )
    method, url, _, body = built("enrol", d)
    assert (method, url) == ("POST", "/learn/v1/enrollments")
    assert body == {
        "course_ids": ["42"],
        "user_ids": ["12001"],
        "level": 3,
        "date_expire_validity": "2026-03-31",
    }
    due_only = delivery("enrol", link="12001", ref="42", data={"role": "student", "due_days": 30})
    assert "date_expire_validity" not in built("enrol", due_only)[3]  # a due date ends nothing


def test_build_enrolment_removals_and_cohorts() -> None:
    assert built("suspend_enrolment", delivery("suspend_enrolment", link="9", ref="42"))[:2] == (
        "PUT",
        "/learn/v1/enrollments/42/9",
    )
    method, url, _, body = built("unenrol", delivery("unenrol", link="9", ref="42"))
    assert (method, url, body) == ("DELETE", "/learn/v1/enrollments/42/9", None)
    for kind, method in (("add_cohort_member", "POST"), ("remove_cohort_member", "DELETE")):
        assert built(kind, delivery(kind, link="9", ref="7")) == (
            method,
            "/manage/v1/group/7/members",
            {"Content-Type": "application/json"},
            {"user_ids": ["9"]},
        )


def test_build_form_encoded_bodies_with_nested_fields() -> None:
    options = {
        "create_account": {
            "url": "/api/usersignup",
            "encoding": "form",
            "id": "id",
            "body": {"login": "{{ attributes.username }}", "tags": ["a", "b"], "ok": True},
        }
    }
    method, url, headers, body = build_request(spec("create_account", options), upsert())
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(body or "") == {
        "login": ["jdoe"],
        "tags[0]": ["a"],
        "tags[1]": ["b"],
        "ok": ["true"],
    }


def test_header_templates_cannot_inject_lines() -> None:
    options = {
        "create_account": {"url": "/u", "id": "id", "headers": {"X-User": "{{ account.username }}"}}
    }
    with pytest.raises(TemplateError, match="line break"):
        build_request(spec("create_account", options), upsert({"username": "a\r\nX: y"}))


# -- classifying answers ------------------------------------------------------------------------


def answer(
    name: str, status: int, body: Any = b"", headers: dict[str, str] | None = None
) -> Result:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return classify(spec(name), status, headers or {}, raw)


@pytest.mark.parametrize(
    ("name", "status", "body", "outcome", "category"),
    [
        ("create_account", 200, {"data": {"success": True, "user_id": 5}}, "done", None),
        ("create_account", 409, {"message": "exists"}, "already_done", None),
        ("create_account", 400, {"message": ["User jdoe already exists"]}, "already_done", None),
        ("create_account", 400, {"message": ["Invalid email"]}, "permanent", Category.data_quality),
        ("update_account", 409, {"message": "email taken"}, "permanent", Category.data_quality),
        ("update_account", 422, {}, "permanent", Category.data_quality),
        ("update_account", 401, {}, "permanent", Category.configuration),
        ("update_account", 403, {}, "permanent", Category.configuration),
        ("update_account", 404, {}, "permanent", Category.configuration),
        ("enrol", 404, {"message": ["Course not found"]}, "permanent", Category.configuration),
        ("add_cohort_member", 404, {}, "permanent", Category.configuration),
        ("enrol", 409, {}, "already_done", None),
        ("unenrol", 404, {}, "already_done", None),
        ("remove_cohort_member", 404, {}, "already_done", None),
        ("suspend_account", 404, {}, "already_done", None),
        ("suspend_account", 200, {"data": {"success": False}}, "permanent", Category.data_quality),
        ("enrol", 429, {}, "retry", Category.transient),
        ("enrol", 500, b"<html>oops</html>", "retry", Category.transient),
        ("enrol", 502, {}, "retry", Category.transient),
        ("enrol", 503, {}, "retry", Category.transient),
        ("enrol", 418, {}, "permanent", Category.configuration),
    ],
)
def test_classification_table(
    name: str, status: int, body: Any, outcome: str, category: Category | None
) -> None:
    result = answer(name, status, body)
    expected = {"done": Status.done, "already_done": Status.done, "retry": Status.retry}
    assert result.status == expected.get(outcome, Status.dead)
    assert result.category == category
    if result.status == Status.done:
        assert result.detail["outcome"] == outcome


def test_classification_reads_the_id_and_the_lms_message() -> None:
    assert answer("create_account", 200, {"data": {"user_id": 12001}}).lms_user_id == "12001"
    dead = answer("enrol", 404, {"name": "Not Found", "message": ["Course not found", "id 99"]})
    assert dead.message == "enrol: HTTP 404: Course not found; id 99"


def test_retry_after_seconds_or_http_date() -> None:
    assert answer("enrol", 429, {}, {"Retry-After": "17"}).retry_after == 17.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"Retry-After": "soon"}) is None and retry_after({}) is None


def test_rules_are_checked_before_the_defaults() -> None:
    options = {
        "responses": [{"status": 403, "contains": "Rate Limit Exceeded", "outcome": "retry"}],
        "create_account": {"url": "/u", "id": "id"},
    }
    throttled = classify(
        spec("create_account", options), 403, {"Retry-After": "5"}, b"Rate Limit Exceeded"
    )
    assert throttled.status == Status.retry and throttled.retry_after == 5.0
    refused = classify(spec("create_account", options), 403, {}, b"forbidden")
    assert refused.status == Status.dead and refused.category == Category.configuration


def test_lookup_picks_the_exact_match_of_a_wildcard_search() -> None:
    body = {
        "data": {
            "items": [{"user_id": "1", "username": "jdoe2"}, {"user_id": "2", "username": "JDoe"}]
        }
    }
    assert found_id(spec("lookup"), delivery("enrol"), json.dumps(body)) == "2"
    assert found_id(spec("lookup"), delivery("enrol"), json.dumps({"data": {"items": []}})) is None


# -- validating options (for `bridge rules check`) ----------------------------------------------


def test_the_worked_example_validates_clean() -> None:
    assert validate_options(EXAMPLE.options, EXAMPLE.credentials) == []


def test_validate_options_reports_each_problem() -> None:
    problems = validate_options(
        {
            "auth": {"type": "oauth2", "scope": "api"},
            "lookup": {"url": "/u?q={{ acount.username }}"},
            "create_acount": {"url": "/u"},
            "enrol": {
                "method": "FETCH",
                "url": "https://elsewhere.example/e",
                "body": {"level": "{{ data.role | map: levels }}"},
                "responses": [{"status": "4x", "outcome": "ok", "category": "x"}],
                "encoding": "xml",
            },
        },
        credentials=["client_id"],
    )
    expected = [
        "options: unknown key 'create_acount' (did you mean 'create_account'?)",
        "auth.token_url: oauth2 needs the token endpoint",
        "lookup.url: unknown value 'acount.username'",
        "lookup.id: where the account id is",
        "enrol.method: one of GET, POST, PUT, PATCH, DELETE, not 'FETCH'",
        "enrol.url: a path template under base_url",
        "enrol.encoding: json or form",
        "enrol.body: no map 'levels'",
        "enrol.responses[0]: outcome must be one of",
        "create_account: missing",
        "credentials: auth oauth2 needs a credential 'client_secret'",
    ]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert len(problems) == len(expected)


def test_a_target_with_problems_is_not_built() -> None:
    config = TargetConfig("bad", "rest", "https://lms.example", {}, {"create_account": {}})
    with pytest.raises(RestConfigError, match="create_account.url") as caught:
        RestTarget(config, {})
    assert caught.value.problems


def test_missing_credentials_are_a_config_error() -> None:
    with pytest.raises(RestConfigError, match="client_secret"):
        RestTarget(EXAMPLE, {"client_id": "x"})


# -- auth headers -------------------------------------------------------------------------------


async def seen_headers(auth: dict[str, Any], credentials: dict[str, str]) -> httpx.Headers:
    seen: list[httpx.Request] = []

    def lms(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": 7})

    options = {"auth": auth, "create_account": {"url": "/users", "id": "id"}}
    config = TargetConfig("t", "rest", "https://lms.example/api", {}, options)
    target = RestTarget(config, credentials, transport=httpx.MockTransport(lms))
    result = await target.deliver(upsert())
    await target.aclose()
    assert result.status == Status.done and result.lms_user_id == "7"
    assert str(seen[0].url) == "https://lms.example/api/users"
    return seen[0].headers


async def test_bearer_auth_header() -> None:
    headers = await seen_headers({"type": "bearer"}, {"token": "abc"})
    assert headers["Authorization"] == "Bearer abc"


async def test_bearer_auth_in_a_custom_header() -> None:
    headers = await seen_headers(
        {"type": "bearer", "header": "X-API-Key", "prefix": ""}, {"token": "abc"}
    )
    assert headers["X-API-Key"] == "abc" and "Authorization" not in headers


async def test_basic_auth_header_with_an_api_key_as_user() -> None:
    # TalentLMS's v1 API: the API key as the user name, an empty password.
    headers = await seen_headers({"type": "basic"}, {"username": "KEY"})
    assert headers["Authorization"] == "Basic S0VZOg=="


# -- a fake Docebo, as the worked example models it ----------------------------------------------


def docebo_error(status: int, *messages: str) -> httpx.Response:
    return httpx.Response(
        status, json={"name": "Error", "message": list(messages), "code": 0, "status": status}
    )


class FakeDocebo:
    """Users, enrolments and groups in memory, OAuth2 client credentials, Docebo's answers."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.courses = {"42", "43"}
        self.enrolments: dict[tuple[str, str], dict[str, Any]] = {}
        self.groups: dict[str, set[str]] = {"7": set()}
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.scripted: list[httpx.Response] = []  # answers to give before the real ones
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls.append(f"{request.method} {path}")
        if path == "/oauth2/token":
            return self.token(request)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return docebo_error(401, "Your request was made with invalid credentials.")
        if self.scripted:
            return self.scripted.pop(0)
        body = json.loads(request.content) if request.content else {}
        parts = path.strip("/").split("/")
        if parts[:3] == ["manage", "v1", "user"]:
            return self.user(
                request.method, parts[3:], body, request.url.params.get("search_text", "")
            )
        if parts[:3] == ["learn", "v1", "enrollments"]:
            return self.enrolment(request.method, parts[3:], body)
        if parts[:3] == ["manage", "v1", "group"]:
            group = self.groups.get(parts[3])
            if group is None:
                return docebo_error(404, "Group not found")
            for user_id in body.get("user_ids", []):
                (group.add if request.method == "POST" else group.discard)(user_id)
            return httpx.Response(200, json={"data": {"success": True}})
        return docebo_error(404, "Not found")

    def token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "api":
            return httpx.Response(400, json={"error": "invalid_request"})
        if (form.get("client_id"), form.get("client_secret")) != ("bridge-app", "s3cret"):
            return httpx.Response(
                401, json={"error": "invalid_client", "error_description": "bad secret"}
            )
        token = f"tok-{self.token_requests}"
        self.tokens.add(token)
        return httpx.Response(
            200, json={"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
        )

    def user(
        self, method: str, rest: list[str], body: dict[str, Any], search: str
    ) -> httpx.Response:
        if method == "GET":
            items = [
                {"user_id": uid, "username": u["userid"], "email": u["email"]}
                for uid, u in self.users.items()
                if search.lower() in u["userid"].lower() or search.lower() in u["email"].lower()
            ]
            return httpx.Response(200, json={"data": {"items": items, "count": len(items)}})
        if method == "POST":
            if any(u["userid"] == body["userid"] for u in self.users.values()):
                return docebo_error(400, f"User {body['userid']} already exists")
            user_id = str(12001 + len(self.users))
            self.users[user_id] = {**body, "valid": 1}
            return httpx.Response(200, json={"data": {"success": True, "user_id": int(user_id)}})
        if rest == ["change_status"]:
            if not all(uid in self.users for uid in body["user_ids"]):
                return httpx.Response(200, json={"data": {"success": False}})
            for uid in body["user_ids"]:
                self.users[uid]["valid"] = body["status"]
            return httpx.Response(200, json={"data": {"success": True}})
        if rest and rest[0] in self.users:
            self.users[rest[0]].update(body)
            return httpx.Response(200, json={"data": {"success": True}})
        return docebo_error(404, "User not found")

    def enrolment(self, method: str, rest: list[str], body: dict[str, Any]) -> httpx.Response:
        if method == "POST":
            if not set(body["course_ids"]) <= self.courses:
                return docebo_error(404, "Course not found")
            for course in body["course_ids"]:
                for user_id in body["user_ids"]:
                    self.enrolments[(course, user_id)] = {**body, "status": "subscribed"}
            return httpx.Response(200, json={"data": {"success": True}})
        key = (rest[0], rest[1])
        if key not in self.enrolments:
            return docebo_error(404, "Enrollment not found")
        if method == "DELETE":
            del self.enrolments[key]
        elif method == "GET":
            found = self.enrolments[key]
            keys = ("status", "date_first_access", "date_complete")
            return httpx.Response(200, json={"data": {k: found.get(k) for k in keys}})
        else:
            self.enrolments[key].update(body)
        return httpx.Response(200, json={"data": {"success": True}})


@pytest.fixture
def fake() -> FakeDocebo:
    return FakeDocebo()


@pytest.fixture
async def docebo(fake: FakeDocebo) -> AsyncIterator[RestTarget]:
    target = RestTarget(EXAMPLE, CREDENTIALS, transport=httpx.MockTransport(fake))
    yield target
    await target.aclose()


async def test_create_then_redelivery_makes_no_duplicate(
    docebo: RestTarget, fake: FakeDocebo
) -> None:
    first = await docebo.deliver(upsert())
    assert first.status == Status.done and first.lms_user_id == "12001"
    assert first.detail["calls"] == [
        "GET /manage/v1/user 200",
        "POST /manage/v1/user 200",
    ]
    again = await docebo.deliver(upsert())  # the link was lost: found and updated
    assert again.status == Status.done and again.lms_user_id == "12001"
    assert again.detail["calls"] == ["GET /manage/v1/user 200", "PUT /manage/v1/user/12001 200"]
    assert list(fake.users) == ["12001"]


async def test_a_create_the_lms_calls_a_duplicate_becomes_an_update(
    docebo: RestTarget, fake: FakeDocebo
) -> None:
    await docebo.deliver(upsert())
    # The search misses (an index lag), the create says "already exists": look up, update.
    fake.scripted.append(httpx.Response(200, json={"data": {"items": []}}))
    result = await docebo.deliver(upsert({**ACCOUNT, "firstname": "Janet"}))
    assert result.status == Status.done and result.lms_user_id == "12001"
    assert [c.split()[0] for c in result.detail["calls"]] == ["GET", "POST", "GET", "PUT"]
    assert fake.users["12001"]["firstname"] == "Janet" and len(fake.users) == 1


async def test_a_stale_link_is_found_again(docebo: RestTarget, fake: FakeDocebo) -> None:
    await docebo.deliver(upsert())
    result = await docebo.deliver(upsert({"email": "new@acme.example"}, link="99999"))
    assert result.status == Status.done and result.lms_user_id == "12001"
    assert fake.users["12001"]["email"] == "new@acme.example"


async def test_lifecycle_through_the_example(docebo: RestTarget, fake: FakeDocebo) -> None:
    user_id = (await docebo.deliver(upsert())).lms_user_id
    assert user_id is not None
    enrol = delivery("enrol", link=user_id, ref="42", data={"role": "student", "due_days": 30})
    assert (await docebo.deliver(enrol)).status == Status.done
    assert fake.enrolments[("42", user_id)]["level"] == 3
    assert (await docebo.deliver(enrol)).status == Status.done  # repeat-safe
    assert (
        await docebo.deliver(delivery("add_cohort_member", link=user_id, ref="7"))
    ).status == Status.done
    assert fake.groups["7"] == {user_id}
    suspended = await docebo.deliver(delivery("suspend_enrolment", link=user_id, ref="42"))
    assert suspended.status == Status.done
    assert fake.enrolments[("42", user_id)]["status"] == "suspended"
    assert (await docebo.deliver(delivery("unenrol", link=user_id, ref="42"))).status == Status.done
    again = await docebo.deliver(delivery("unenrol", link=user_id, ref="42"))
    assert again.status == Status.done and again.detail["outcome"] == "already_done"
    assert (await docebo.deliver(delivery("suspend_account"))).lms_user_id == user_id  # looked up
    assert fake.users[user_id]["valid"] == 0
    assert (
        await docebo.deliver(delivery("reactivate_account", link=user_id))
    ).status == Status.done
    assert fake.users[user_id]["valid"] == 1


async def test_enrolment_in_an_unknown_course_is_a_mapping_dead_letter(docebo: RestTarget) -> None:
    user_id = (await docebo.deliver(upsert())).lms_user_id
    result = await docebo.deliver(
        delivery("enrol", link=user_id, ref="404", data={"role": "student"})
    )
    assert result.status == Status.dead and result.category == Category.configuration
    assert "Course not found" in result.message


async def test_a_role_the_map_lacks_is_a_mapping_dead_letter(
    docebo: RestTarget, fake: FakeDocebo
) -> None:
    result = await docebo.deliver(delivery("enrol", link="1", ref="42", data={"role": "owner"}))
    assert result.status == Status.dead and result.category == Category.configuration
    assert fake.calls == []  # refused before any call, token included


async def test_a_2xx_that_says_it_failed_is_a_dead_letter(docebo: RestTarget) -> None:
    result = await docebo.deliver(delivery("suspend_account", link="31337"))
    assert result.status == Status.dead and result.category == Category.data_quality
    assert "Docebo refused the change" in result.message


async def test_intents_without_an_account(docebo: RestTarget, fake: FakeDocebo) -> None:
    removed = await docebo.deliver(delivery("unenrol", ref="42"))
    assert removed.status == Status.done and removed.lms_user_id is None
    enrol = await docebo.deliver(delivery("enrol", ref="42", data={"role": "student"}))
    assert enrol.status == Status.dead and enrol.category == Category.configuration


async def test_an_intent_the_target_has_no_request_for_is_a_mapping_dead_letter() -> None:
    config = TargetConfig(
        "t", "rest", "https://lms.example", {}, {"create_account": {"url": "/u", "id": "id"}}
    )
    target = RestTarget(config, {}, transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    result = await target.deliver(delivery("add_cohort_member", link="1", ref="7"))
    await target.aclose()
    assert result.status == Status.dead and result.category == Category.configuration
    assert "no add_cohort_member request" in result.message


async def test_throttling_and_outages_are_retried(docebo: RestTarget, fake: FakeDocebo) -> None:
    fake.scripted.append(
        httpx.Response(429, headers={"Retry-After": "20"}, json={"message": "slow"})
    )
    throttled = await docebo.deliver(delivery("suspend_account", link="1"))
    assert throttled.status == Status.retry and throttled.retry_after == 20.0

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    target = RestTarget(EXAMPLE, CREDENTIALS, transport=httpx.MockTransport(down))
    result = await target.deliver(upsert())
    await target.aclose()
    assert result.status == Status.retry and "unreachable" in result.message


# -- OAuth2 client credentials ------------------------------------------------------------------


async def test_the_token_is_fetched_once_and_shared(docebo: RestTarget, fake: FakeDocebo) -> None:
    await asyncio.gather(
        *(docebo.deliver(upsert({**ACCOUNT, "username": f"u{i}"})) for i in range(5))
    )
    await docebo.deliver(delivery("suspend_account", link="12001"))
    assert fake.token_requests == 1 and len(fake.users) == 5


async def test_a_revoked_token_is_refreshed_once_after_a_401(
    docebo: RestTarget, fake: FakeDocebo
) -> None:
    await docebo.deliver(upsert())
    fake.tokens.clear()  # revoked before its expiry
    result = await docebo.deliver(delivery("suspend_account", link="12001"))
    assert result.status == Status.done and fake.token_requests == 2
    assert fake.calls[-3:] == [
        "PUT /manage/v1/user/change_status",
        "POST /oauth2/token",
        "PUT /manage/v1/user/change_status",
    ]


async def test_a_401_with_a_fresh_token_is_a_provisioning_dead_letter(
    docebo: RestTarget, fake: FakeDocebo
) -> None:
    await docebo.deliver(upsert())
    fake.scripted += [docebo_error(401, "no API permission")] * 2
    result = await docebo.deliver(delivery("suspend_account", link="12001"))
    assert result.status == Status.dead and result.category == Category.configuration
    assert "no API permission" in result.message and fake.token_requests == 2


async def test_a_refused_client_is_a_provisioning_dead_letter(fake: FakeDocebo) -> None:
    target = RestTarget(
        EXAMPLE, {**CREDENTIALS, "client_secret": "wrong"}, transport=httpx.MockTransport(fake)
    )
    result = await target.deliver(upsert())
    await target.aclose()
    assert result.status == Status.dead and result.category == Category.configuration
    assert "invalid_client" in result.message and fake.users == {}


async def test_the_token_is_renewed_before_it_expires(fake: FakeDocebo) -> None:
    now = [1000.0]
    provider = ClientCredentials(
        "https://acme.docebosaas.com/oauth2/token",
        "bridge-app",
        "s3cret",
        scope="api",
        client_auth="post",
        transport=httpx.MockTransport(fake),
        margin_seconds=60,
        clock=lambda: now[0],
    )
    first = await provider.token()
    now[0] += 3600 - 61
    assert await provider.token() == first and fake.token_requests == 1
    now[0] += 2  # within the margin: renewed
    assert await provider.token() != first and fake.token_requests == 2
    await provider.aclose()


async def test_client_secret_basic_is_the_default(fake: FakeDocebo) -> None:
    seen: list[httpx.Request] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"})

    provider = ClientCredentials(
        "https://idp.example/token", "id", "secret", transport=httpx.MockTransport(token_endpoint)
    )
    assert await provider.token() == "t"
    await provider.aclose()
    assert seen[0].headers["Authorization"] == "Basic aWQ6c2VjcmV0"
    assert parse_qs(seen[0].content.decode()) == {"grant_type": ["client_credentials"]}


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (400, False)])
async def test_token_endpoint_failures(status: int, retryable: bool) -> None:
    def token_endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="<html>no</html>")

    provider = ClientCredentials(
        "https://idp.example/token", "id", "secret", transport=httpx.MockTransport(token_endpoint)
    )
    with pytest.raises(TokenError) as caught:
        await provider.token()
    await provider.aclose()
    assert caught.value.retryable is retryable
