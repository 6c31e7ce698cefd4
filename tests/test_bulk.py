"""``POST /Bulk`` (RFC 7644 §3.7): bulkId references, failOnErrors, limits, a savepoint each."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import GROUP_SCHEMA
from tests.conftest import USER_SCHEMA

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def _bulk(operations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schemas": [BULK], "Operations": operations, **extra}


def _create_user(bulk_id: str, user_name: str) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/Users",
        "bulkId": bulk_id,
        "data": {"schemas": [USER_SCHEMA], "userName": user_name},
    }


async def test_rfc7644_3_7_bulk_creates_and_resolves_bulk_ids(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Bulk",
        json=_bulk(
            [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g1",
                    "data": {
                        "schemas": [GROUP_SCHEMA],
                        "displayName": "Pilot",
                        "members": [{"value": "bulkId:u1"}, {"value": "bulkId:u2"}],
                    },
                },
                _create_user("u1", "alice"),
                _create_user("u2", "bob"),
            ]
        ),
    )
    assert response.status_code == 200, response.text
    results = response.json()["Operations"]
    assert [r["status"] for r in results] == ["201", "201", "201"]
    group_location = results[0]["location"]
    group = (await client.get(group_location.replace("http://bridge.test/scim/v2", ""))).json()
    user_ids = {r["location"].rsplit("/", 1)[1] for r in results[1:]}
    assert {m["value"] for m in group["members"]} == user_ids


async def test_a_failed_bulk_operation_rolls_back_only_itself(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Bulk",
        json=_bulk(
            [_create_user("a", "same"), _create_user("b", "SAME"), _create_user("c", "other")]
        ),
    )
    statuses = [r["status"] for r in response.json()["Operations"]]
    assert statuses == ["201", "409", "201"]
    error = response.json()["Operations"][1]["response"]
    assert error["scimType"] == "uniqueness"
    listed = (await client.get("/Users")).json()
    assert sorted(r["userName"] for r in listed["Resources"]) == ["other", "same"]


async def test_fail_on_errors_stops_the_run(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Bulk",
        json=_bulk(
            [_create_user("a", "x"), _create_user("b", "X"), _create_user("c", "y")],
            failOnErrors=1,
        ),
    )
    assert [r["status"] for r in response.json()["Operations"]] == ["201", "409"]
    assert (await client.get("/Users")).json()["totalResults"] == 1


async def test_bulk_patch_put_and_delete(client: httpx.AsyncClient) -> None:
    created = (
        await client.post("/Users", json={"schemas": [USER_SCHEMA], "userName": "carol"})
    ).json()
    path = f"/Users/{created['id']}"
    response = await client.post(
        "/Bulk",
        json=_bulk(
            [
                {
                    "method": "PATCH",
                    "path": path,
                    "data": {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "title", "value": "Lead"}],
                    },
                },
                {
                    "method": "PUT",
                    "path": path,
                    "version": 'W/"1"',
                    "data": {"schemas": [USER_SCHEMA], "userName": "c"},
                },
                {"method": "DELETE", "path": path},
            ]
        ),
    )
    assert [r["status"] for r in response.json()["Operations"]] == ["200", "412", "204"]
    assert (await client.get(path)).status_code == 404


async def test_unresolvable_bulk_id_is_reported(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Bulk",
        json=_bulk(
            [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": {
                        "schemas": [GROUP_SCHEMA],
                        "displayName": "G",
                        "members": [{"value": "bulkId:nope"}],
                    },
                }
            ]
        ),
    )
    result = response.json()["Operations"][0]
    assert result["status"] == "409"
    assert "nope" in result["response"]["detail"]
    assert (await client.get("/Groups")).json()["totalResults"] == 0


async def test_more_operations_than_advertised_is_413(client: httpx.AsyncClient) -> None:
    config = (await client.get("/ServiceProviderConfig")).json()
    limit = config["bulk"]["maxOperations"]
    operations = [_create_user(str(i), f"user{i}") for i in range(limit + 1)]
    response = await client.post("/Bulk", json=_bulk(operations))
    assert response.status_code == 413
    assert (await client.get("/Users", params={"count": 0})).json()["totalResults"] == 0


async def test_bulk_with_a_bad_path_is_an_operation_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Bulk", json=_bulk([{"method": "POST", "path": "/Pets", "data": {}}])
    )
    result = response.json()["Operations"][0]
    assert result["status"] == "400"
    assert result["response"]["scimType"] == "invalidValue"
