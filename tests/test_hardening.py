"""RFC 7644 §3.12 errors, never a 500 nor a half-written row, for input the store cannot hold.

Lone surrogates and NUL characters, JSON nested 10,000 deep, dateTimes outside years 1–9999,
indexes beyond 2^31-1, values longer than their column, an over-long ``X-Request-Id``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import PATCH
from tests.conftest import USER_SCHEMA
from tests.conftest import assert_scim
from tests.conftest import user_payload

SCIM_HEADERS = {"content-type": "application/scim+json"}
LONE_SURROGATE = "\\udfff"  # as it is written in JSON: the escape, not the character


def _raw(document: dict[str, Any], placeholder: str, escape: str) -> bytes:
    """JSON text of ``document`` with ``placeholder`` replaced by a raw JSON escape."""
    return json.dumps(document).replace(placeholder, escape).encode()


async def _error(response: httpx.Response, status: int, scim_type: str | None) -> str:
    body = assert_scim(response, status)
    assert body.get("scimType") == scim_type, body
    return str(body["detail"])


async def _stored(client: httpx.AsyncClient) -> int:
    users = assert_scim(await client.get("/Users"), 200)
    groups = assert_scim(await client.get("/Groups"), 200)
    return int(users["totalResults"]) + int(groups["totalResults"])


async def test_lone_surrogate_in_a_post_is_invalid_value_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    content = _raw(user_payload("PLACEHOLDER"), "PLACEHOLDER", "a" + LONE_SURROGATE)
    response = await client.post("/Users", content=content, headers=SCIM_HEADERS)
    assert "userName" in await _error(response, 400, "invalidValue")
    assert await _stored(client) == 0


async def test_lone_surrogate_through_bulk_is_invalid_value_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    bulk = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": user_payload("ok")},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": user_payload("PH")},
        ],
    }
    response = await client.post(
        "/Bulk", content=_raw(bulk, "PH", LONE_SURROGATE), headers=SCIM_HEADERS
    )
    assert "Operations[1].data.userName" in await _error(response, 400, "invalidValue")
    assert await _stored(client) == 0


@pytest.mark.parametrize("escape", [LONE_SURROGATE, "\\u0000"])
async def test_unstorable_character_in_a_filter_is_invalid_filter(
    client: httpx.AsyncClient, escape: str
) -> None:
    text = f'userName eq "a{escape}"'
    await _error(await client.get("/Users", params={"filter": text}), 400, "invalidFilter")
    search = _raw({"filter": 'title co "PH"'}, "PH", escape)
    response = await client.post("/.search", content=search, headers=SCIM_HEADERS)
    await _error(response, 400, "invalidFilter")


@pytest.mark.parametrize(
    "attribute", ["userName", "title", "externalId", "displayName", "name.givenName"]
)
async def test_nul_in_a_user_attribute_is_invalid_value(
    client: httpx.AsyncClient, attribute: str
) -> None:
    document: dict[str, Any] = user_payload("bjensen")
    if attribute == "name.givenName":
        document["name"] = {"givenName": "a\x00b"}
    else:
        document[attribute] = "a\x00b"
    response = await client.post("/Users", json=document)
    assert attribute in await _error(response, 400, "invalidValue")
    assert await _stored(client) == 0


async def test_nul_in_a_group_and_a_member_value_is_invalid_value(
    client: httpx.AsyncClient,
) -> None:
    named = {"schemas": [GROUP_SCHEMA], "displayName": "a\x00b"}
    assert "displayName" in await _error(
        await client.post("/Groups", json=named), 400, "invalidValue"
    )
    member = {"schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{"value": "x\x00"}]}
    response = await client.post("/Groups", json=member)
    assert "members[0].value" in await _error(response, 400, "invalidValue")
    assert await _stored(client) == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_nul_in_a_url_id_is_invalid_value(client: httpx.AsyncClient, method: str) -> None:
    body = {
        "PUT": user_payload("x"),
        "PATCH": {"schemas": [PATCH], "Operations": [{"op": "add", "path": "title", "value": "t"}]},
    }.get(method)
    response = await client.request(method, "/Users/a%00b", json=body)
    await _error(response, 400, "invalidValue")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/Users"),
        ("PUT", "/Users/some-id"),
        ("PATCH", "/Users/some-id"),
        ("POST", "/Bulk"),
        ("POST", "/.search"),
        ("POST", "/Groups/.search"),
    ],
)
async def test_json_nested_10000_deep_is_invalid_syntax(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    content = b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    response = await client.request(method, path, content=content, headers=SCIM_HEADERS)
    await _error(response, 400, "invalidSyntax")


async def test_brackets_inside_strings_do_not_count_as_nesting(client: httpx.AsyncClient) -> None:
    response = await client.post("/Users", json=user_payload("bjensen", title="[{" * 100))
    assert assert_scim(response, 201)["title"] == "[{" * 100


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
async def test_datetime_outside_years_1_to_9999_is_refused(
    client: httpx.AsyncClient, when: str
) -> None:
    document = user_payload("bjensen", schemas=[USER_SCHEMA, HR], **{HR: {"hireDate": when}})
    response = await client.post("/Users", json=document)
    assert "hireDate" in await _error(response, 400, "invalidValue")
    assert await _stored(client) == 0
    text = f'meta.lastModified gt "{when}"'
    await _error(await client.get("/Users", params={"filter": text}), 400, "invalidFilter")


@pytest.mark.parametrize(
    "params",
    [
        {"startIndex": "10000000000000000000"},
        {"count": "10000000000000000000"},
        {"startIndex": "2147483648"},
    ],
)
async def test_index_beyond_2_31_is_invalid_value(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    await _error(await client.get("/Users", params=params), 400, "invalidValue")
    response = await client.post("/.search", json=params)
    await _error(response, 400, "invalidValue")


async def test_largest_start_index_is_an_empty_page(client: httpx.AsyncClient) -> None:
    body = assert_scim(await client.get("/Users", params={"startIndex": "2147483647"}), 200)
    assert body["Resources"] == []


@pytest.mark.parametrize("search", [{"filter": 5}, {"sortBy": {}}, {"filter": ["x"]}])
async def test_search_with_a_non_string_filter_or_sort_by_is_invalid_value(
    client: httpx.AsyncClient, search: dict[str, Any]
) -> None:
    await _error(await client.post("/.search", json=search), 400, "invalidValue")


@pytest.mark.parametrize(
    ("attribute", "limit"), [("userName", 512), ("displayName", 512), ("externalId", 255)]
)
async def test_value_longer_than_its_column_is_invalid_value(
    client: httpx.AsyncClient, attribute: str, limit: int
) -> None:
    document = user_payload("bjensen", **{attribute: "x" * (limit + 1)})
    detail = await _error(await client.post("/Users", json=document), 400, "invalidValue")
    assert attribute in detail
    assert str(limit) in detail
    assert await _stored(client) == 0
    fits = user_payload("bjensen", **{attribute: "x" * limit})
    assert_scim(await client.post("/Users", json=fits), 201)


async def test_group_display_name_longer_than_its_column_is_invalid_value(
    client: httpx.AsyncClient,
) -> None:
    group = {"schemas": [GROUP_SCHEMA], "displayName": "g" * 513}
    detail = await _error(await client.post("/Groups", json=group), 400, "invalidValue")
    assert "displayName" in detail
    assert await _stored(client) == 0


async def test_patch_to_a_value_longer_than_its_column_is_invalid_value(
    client: httpx.AsyncClient,
) -> None:
    created = assert_scim(await client.post("/Users", json=user_payload("bjensen")), 201)
    for operation in (
        {"op": "replace", "path": "userName", "value": "u" * 513},
        {"op": "replace", "value": {"externalId": "e" * 256}},
    ):
        body = {"schemas": [PATCH], "Operations": [operation]}
        response = await client.patch(f"/Users/{created['id']}", json=body)
        await _error(response, 400, "invalidValue")
    fetched = assert_scim(await client.get(f"/Users/{created['id']}"), 200)
    assert fetched["userName"] == "bjensen"
    assert fetched["meta"]["version"] == created["meta"]["version"]


async def test_over_long_request_id_is_truncated_to_64_characters(
    client: httpx.AsyncClient,
) -> None:
    request_id = "r" * 64 + "-tail" * 40
    response = await client.post(
        "/Users", json=user_payload("bjensen"), headers={"X-Request-Id": request_id}
    )
    assert_scim(response, 201)
    assert response.headers["x-request-id"] == request_id[:64]


@pytest.mark.parametrize("path", ["", "/", "/Users/..", "/Users/"])
async def test_the_scim_root_and_dot_segments_are_a_scim_404_not_a_redirect(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(str(client.base_url).rstrip("/") + path)
    await _error(response, 404, None)
    assert response.headers["x-request-id"]


async def test_a_bad_attributes_parameter_on_a_write_refuses_it_before_anything_is_written(
    client: httpx.AsyncClient,
) -> None:
    bad = {"attributes": "urn:ietf:params:scim:schemas:core:2.0:Group"}
    response = await client.post("/Users", json=user_payload("kept.out"), params=bad)
    await _error(response, 400, "invalidPath")
    assert await _stored(client) == 0

    user = assert_scim(await client.post("/Users", json=user_payload("ada")), 201)
    put = await client.put(
        f"/Users/{user['id']}", json=user_payload("ada", title="changed"), params=bad
    )
    await _error(put, 400, "invalidPath")
    patch = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}
    await _error(
        await client.patch(f"/Users/{user['id']}", json=patch, params=bad), 400, "invalidPath"
    )
    assert assert_scim(await client.get(f"/Users/{user['id']}"), 200)["meta"] == user["meta"]


async def test_a_path_no_route_matches_is_a_scim_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/Schemas/%0A0")
    await _error(response, 404, None)
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "displayName", "value": ""},
        {"op": "replace", "value": {"displayName": ""}},
    ],
)
async def test_a_patch_cannot_empty_a_group_display_name(
    client: httpx.AsyncClient, operation: dict[str, Any]
) -> None:
    group = assert_scim(
        await client.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "g"}), 201
    )
    response = await client.patch(
        f"/Groups/{group['id']}", json={"schemas": [PATCH], "Operations": [operation]}
    )
    assert "displayName" in await _error(response, 400, "invalidValue")
    assert assert_scim(await client.get(f"/Groups/{group['id']}"), 200)["displayName"] == "g"


async def test_a_patch_cannot_empty_a_user_name(client: httpx.AsyncClient) -> None:
    user = assert_scim(await client.post("/Users", json=user_payload("ada")), 201)
    operation = {"op": "replace", "path": "userName", "value": ""}
    response = await client.patch(
        f"/Users/{user['id']}", json={"schemas": [PATCH], "Operations": [operation]}
    )
    assert "userName" in await _error(response, 400, "invalidValue")


@pytest.mark.parametrize("key", ["count", "startIndex"])
@pytest.mark.parametrize("number", ["Infinity", "-Infinity"])
async def test_an_infinite_index_in_a_search_is_invalid_value(
    client: httpx.AsyncClient, key: str, number: str
) -> None:
    content = (
        f'{{"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "{key}": {number}}}'
    )
    response = await client.post("/Users/.search", content=content, headers=SCIM_HEADERS)
    assert key in await _error(response, 400, "invalidValue")
