"""The outbound ``scim`` target, driven against the bridge's own SCIM server as the LMS.

The bridge's /scim/v2 is a conformant RFC 7644 service provider, so it stands in for
TalentLMS, LearnUpon or 360Learning here: the target talks to it through httpx.ASGITransport.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Status
from bridge.targets.scim import NO_COURSES
from bridge.targets.scim import ScimTarget
from bridge.targets.scim import classify
from bridge.targets.scim import equality_filter
from bridge.targets.scim import patch_payload
from bridge.targets.scim import scim_values
from bridge.targets.scim import user_payload
from bridge.targets.scim import validate_options
from tests.conftest import ENTERPRISE
from tests.conftest import TOKEN
from tests.conftest import user_payload as scim_user

BASE = "http://bridge.test/scim/v2"
ATTRIBUTES = {
    "idnumber": "E100",
    "username": "jdoe",
    "email": "jdoe@acme.example",
    "firstname": "Jane",
    "lastname": "Doe",
    "title": "Claims handler",
    "department": "Claims",
    "auth": "saml2",
}


def upsert(attributes: dict[str, Any], *, create: bool = True, link: str | None = None) -> Delivery:
    intent = {
        "kind": "upsert_account",
        "person": "p-1",
        "target": "lms",
        "rule": "accounts",
        "data": {"create": create, "attributes": attributes},
    }
    return Delivery(intent, lms_user_id=link, account=dict(ATTRIBUTES))


def intent(kind: str, *, link: str | None = None, ref: str | None = None) -> Delivery:
    body: dict[str, Any] = {"kind": kind, "person": "p-1", "target": "lms", "rule": "r"}
    if ref is not None:
        body["ref"] = ref
    return Delivery(body, lms_user_id=link, account=dict(ATTRIBUTES))


def config(**options: Any) -> TargetConfig:
    return TargetConfig("lms", "scim", BASE, {"token": "env:LMS_TOKEN"}, options)


@pytest.fixture
async def lms(app) -> AsyncIterator[ScimTarget]:  # type: ignore[no-untyped-def]
    target = ScimTarget(config(), TOKEN, transport=httpx.ASGITransport(app=app))
    yield target
    await target.aclose()


async def users(client: httpx.AsyncClient, filter_text: str | None = None) -> list[dict[str, Any]]:
    params = {"filter": filter_text} if filter_text else {}
    response = await client.get("/Users", params=params)
    assert response.status_code == 200
    resources: list[dict[str, Any]] = response.json().get("Resources", [])
    return resources


# -- against the bridge's SCIM server ------------------------------------------------------------


async def test_create_then_redelivery_matches_on_external_id(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    first = await lms.deliver(upsert(ATTRIBUTES))
    assert first.status == Status.done and first.lms_user_id
    assert first.detail["ignored"] == ["auth", "department"]
    assert first.detail["calls"] == [
        "GET /Users 200",
        "POST /Users 201",
    ]
    again = await lms.deliver(upsert(ATTRIBUTES))  # the link was lost: matched, not recreated
    assert again.status == Status.done and again.lms_user_id == first.lms_user_id
    assert [c.split()[0] for c in again.detail["calls"]] == ["GET", "PATCH"]
    [user] = await users(client)
    assert user["externalId"] == "E100" and user["userName"] == "jdoe"
    assert user["name"] == {"givenName": "Jane", "familyName": "Doe"}
    assert user["emails"][0]["value"] == "jdoe@acme.example"
    assert user["title"] == "Claims handler" and user["active"] is True


async def test_existing_user_with_the_external_id_is_updated_not_duplicated(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    created = await client.post(
        "/Users", json=scim_user("jane.d", externalId="E100", title="Trainee")
    )
    assert created.status_code == 201
    result = await lms.deliver(upsert(ATTRIBUTES))
    assert result.status == Status.done and result.lms_user_id == created.json()["id"]
    [user] = await users(client)
    assert user["title"] == "Claims handler" and user["userName"] == "jdoe"


async def test_update_through_the_link_replaces_and_removes(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    first = await lms.deliver(upsert(ATTRIBUTES))
    changed = {"title": "Team lead", "lastname": None}
    result = await lms.deliver(upsert(changed, create=False, link=first.lms_user_id))
    assert result.status == Status.done and result.detail["calls"] == [
        f"PATCH /Users/{first.lms_user_id} 200"
    ]
    [user] = await users(client)
    assert user["title"] == "Team lead" and "familyName" not in user["name"]


async def test_stale_link_falls_back_to_the_external_id(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    result = await lms.deliver(upsert(ATTRIBUTES, link="0b1e7e00-dead-4bee-8000-000000000000"))
    assert result.status == Status.done
    assert [c.split()[0] for c in result.detail["calls"]] == ["PATCH", "GET", "POST"]
    assert len(await users(client)) == 1


async def test_suspend_sets_active_false_and_reactivate_true(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    created = await lms.deliver(upsert(ATTRIBUTES))
    suspended = await lms.deliver(intent("suspend_account"))  # found by externalId
    assert suspended.status == Status.done and suspended.lms_user_id == created.lms_user_id
    [user] = await users(client)
    assert user["active"] is False
    back = await lms.deliver(intent("reactivate_account", link=created.lms_user_id))
    assert back.status == Status.done
    [user] = await users(client)
    assert user["active"] is True


async def test_suspend_without_an_account_is_done(lms: ScimTarget) -> None:
    result = await lms.deliver(intent("suspend_account"))
    assert result.status == Status.done and result.lms_user_id is None


async def test_reactivate_without_an_account_is_dead(lms: ScimTarget) -> None:
    result = await lms.deliver(intent("reactivate_account"))
    assert result.status == Status.dead and result.category == Category.configuration


@pytest.mark.parametrize(
    "kind", ["enrol", "suspend_enrolment", "unenrol", "add_cohort_member", "remove_cohort_member"]
)
async def test_enrolment_and_cohort_intents_are_dead_mapping(lms: ScimTarget, kind: str) -> None:
    result = await lms.deliver(intent(kind, link="x", ref="BEN-2026"))
    assert result.status == Status.dead and result.category == Category.configuration
    assert result.message == NO_COURSES
    assert result.detail["calls"] == []  # decided without calling the LMS


async def test_bad_token_is_dead_provisioning(app) -> None:  # type: ignore[no-untyped-def]
    target = ScimTarget(config(), "not-the-token", transport=httpx.ASGITransport(app=app))
    try:
        result = await target.deliver(upsert(ATTRIBUTES))
    finally:
        await target.aclose()
    assert result.status == Status.dead and result.category == Category.configuration
    assert "401" in result.message and "bearer token is not valid" in result.message


async def test_taken_user_name_without_external_id_is_adopted(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    created = await client.post("/Users", json=scim_user("jdoe"))
    result = await lms.deliver(upsert(ATTRIBUTES))
    assert result.status == Status.done and result.lms_user_id == created.json()["id"]
    assert result.detail["adopted"] is True
    assert [c.split()[:2] for c in result.detail["calls"]][1] == ["POST", "/Users"]
    [user] = await users(client)
    assert user["externalId"] == "E100"


async def test_user_name_of_another_person_is_data_quality(
    lms: ScimTarget, client: httpx.AsyncClient
) -> None:
    await client.post("/Users", json=scim_user("jdoe", externalId="E999"))
    result = await lms.deliver(upsert(ATTRIBUTES))
    assert result.status == Status.dead and result.category == Category.data_quality
    assert "E999" in result.message
    assert len(await users(client)) == 1


async def test_put_mode_replaces_the_whole_resource(app, client: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    target = ScimTarget(
        config(update="put", attributes={"department": f"{ENTERPRISE}:department"}),
        TOKEN,
        transport=httpx.ASGITransport(app=app),
    )
    try:
        created = await target.deliver(upsert(ATTRIBUTES))
        changed = {"title": "Team lead", "department": "Benefits"}
        result = await target.deliver(upsert(changed, create=False, link=created.lms_user_id))
    finally:
        await target.aclose()
    assert result.status == Status.done
    assert [c.split()[0] for c in result.detail["calls"]] == ["GET", "PUT"]
    [user] = await users(client)
    assert user["title"] == "Team lead" and user[ENTERPRISE]["department"] == "Benefits"
    assert user["externalId"] == "E100" and user["name"]["givenName"] == "Jane"


async def test_invalid_email_is_data_quality(lms: ScimTarget, client: httpx.AsyncClient) -> None:
    result = await lms.deliver(upsert({**ATTRIBUTES, "email": "not an email"}))
    assert result.status == Status.dead and result.category == Category.data_quality
    assert "email" in result.message
    assert await users(client) == []


async def test_account_without_external_id_is_data_quality(lms: ScimTarget) -> None:
    delivery = Delivery(upsert({"username": "x"}).intent, account={"username": "x"})
    result = await lms.deliver(delivery)
    assert result.status == Status.dead and result.category == Category.data_quality


# -- pure: payloads and answers -------------------------------------------------------------------


def test_user_payload_maps_the_bridge_vocabulary_to_scim() -> None:
    values, ignored = scim_values(ATTRIBUTES, {"department": f"{ENTERPRISE}:department"})
    assert ignored == ["auth"]
    body = user_payload(values)
    assert body["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE]
    assert body["userName"] == "jdoe" and body["externalId"] == "E100"
    assert body["name"] == {"givenName": "Jane", "familyName": "Doe"}
    assert body["emails"] == [{"value": "jdoe@acme.example", "type": "work", "primary": True}]
    assert body["active"] is True and body[ENTERPRISE] == {"department": "Claims"}


def test_patch_payload_replaces_values_and_removes_cleared_ones() -> None:
    values, _ = scim_values({"title": "Lead", "email": None, "username": "j"})
    assert patch_payload(values)["Operations"] == [
        {"op": "replace", "path": "title", "value": "Lead"},
        {"op": "remove", "path": "emails"},
        {"op": "replace", "path": "userName", "value": "j"},
    ]


def test_equality_filter_escapes_quotes_and_backslashes() -> None:
    assert equality_filter("externalId", 'E"1\\2') == 'externalId eq "E\\"1\\\\2"'


async def test_an_lms_that_ignores_the_filter_is_not_trusted() -> None:
    """Answering a filter with every user must not make someone else's account this one's."""
    posted: list[dict[str, Any]] = []

    def lms(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            other = {"id": "u-9", "userName": "someone", "externalId": "E9"}
            return httpx.Response(200, json={"totalResults": 1, "Resources": [other]})
        posted.append(json.loads(request.content))
        return httpx.Response(201, json={"id": "u-10"})

    target = ScimTarget(config(), "t", transport=httpx.MockTransport(lms))
    result = await target.deliver(upsert(ATTRIBUTES))
    await target.aclose()
    assert result.status == Status.done and result.lms_user_id == "u-10"
    assert posted[0]["externalId"] == "E100"


ERROR = b'{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"%d","scimType":"%s","detail":"d"}'


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "category", "after"),
    [
        (200, {}, b"{}", Status.done, None, None),
        (429, {"Retry-After": "12"}, b"", Status.retry, Category.transient, 12.0),
        (503, {"retry-after": "3"}, b"down", Status.retry, Category.transient, 3.0),
        (500, {}, b"", Status.retry, Category.transient, None),
        (401, {}, ERROR % (401, b""), Status.dead, Category.configuration, None),
        (403, {}, ERROR % (403, b""), Status.dead, Category.configuration, None),
        (400, {}, ERROR % (400, b"invalidValue"), Status.dead, Category.data_quality, None),
        (409, {}, ERROR % (409, b"uniqueness"), Status.dead, Category.data_quality, None),
        (400, {}, ERROR % (400, b"invalidPath"), Status.dead, Category.configuration, None),
        (404, {}, ERROR % (404, b""), Status.dead, Category.configuration, None),
    ],
)
def test_classify_answers(
    status: int,
    headers: dict[str, str],
    body: bytes,
    expected: Status,
    category: Category | None,
    after: float | None,
) -> None:
    result = classify(status, headers, body)
    assert (result.status, result.category, result.retry_after) == (expected, category, after)
    if expected == Status.dead:
        assert "d" in result.message and str(status) in result.message


async def test_retry_after_a_throttled_search() -> None:
    def throttled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "30"}, text="slow down")

    target = ScimTarget(config(), "t", transport=httpx.MockTransport(throttled))
    result = await target.deliver(upsert(ATTRIBUTES))
    await target.aclose()
    assert result.status == Status.retry and result.retry_after == 30.0


def test_validate_options_names_the_problems() -> None:
    assert validate_options({"update": "patch", "attributes": {"a": "b"}}) == []
    problems = validate_options({"update": "post", "atributes": {}, "auth": {"type": "basic"}})
    assert len(problems) == 3 and any("atributes" in p for p in problems)
