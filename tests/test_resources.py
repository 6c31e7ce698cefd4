"""Resource semantics of RFC 7644 §3: create, replace, patch, delete, ETags, attribute selection."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import PATCH
from tests.conftest import USER_SCHEMA
from tests.conftest import user_payload


async def _user(
    client: httpx.AsyncClient, user_name: str = "bjensen", **extra: Any
) -> dict[str, Any]:
    response = await client.post("/Users", json=user_payload(user_name, **extra))
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_rfc7644_3_3_create_answers_201_with_location_and_etag(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/Users", json=user_payload("bjensen", name={"givenName": "Barbara"})
    )
    body = response.json()
    assert response.status_code == 201
    assert response.headers["location"] == body["meta"]["location"]
    assert body["meta"]["location"] == f"http://bridge.test/scim/v2/Users/{body['id']}"
    assert response.headers["etag"] == body["meta"]["version"] == 'W/"1"'
    assert body["meta"]["resourceType"] == "User"
    assert body["name"] == {"givenName": "Barbara"}


async def test_rfc7643_password_is_never_returned_nor_stored(
    client: httpx.AsyncClient, db: Any
) -> None:
    created = await _user(client, password="S3cret!pass")
    assert "password" not in created
    fetched = (await client.get(f"/Users/{created['id']}")).json()
    assert "password" not in fetched
    with db.read() as conn:
        raw = conn.exec_driver_sql("SELECT doc FROM resources").scalar_one()
    assert "S3cret" not in str(raw)


async def test_missing_user_name_is_invalid_value(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Users", json={"schemas": [USER_SCHEMA], "name": {"givenName": "x"}}
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidValue"


async def test_malformed_json_is_invalid_syntax(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Users", content=b'{"userName": ', headers={"content-type": "application/scim+json"}
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidSyntax"
    assert response.headers["content-type"] == "application/scim+json"


async def test_a_json_array_body_is_invalid_syntax(client: httpx.AsyncClient) -> None:
    response = await client.post("/Users", json=[1, 2])
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidSyntax"


async def test_wrong_type_of_value_is_invalid_value(client: httpx.AsyncClient) -> None:
    response = await client.post("/Users", json=user_payload("x", emails="not-a-list"))
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidValue"


async def test_payload_over_the_advertised_maximum_is_413(client: httpx.AsyncClient) -> None:
    config = (await client.get("/ServiceProviderConfig")).json()
    limit = config["bulk"]["maxPayloadSize"]
    response = await client.post("/Users", json=user_payload("big", title="x" * (limit + 1)))
    assert response.status_code == 413
    assert response.json()["status"] == "413"


async def test_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/Users/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "404",
        "detail": "User does-not-exist not found",
    }


async def test_unknown_endpoint_is_404_and_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    assert (await client.get("/Pets")).status_code == 404
    response = await client.put("/Users", json={})
    assert response.status_code == 405
    assert response.json()["status"] == "405"
    assert (await client.delete("/ServiceProviderConfig")).status_code == 405


async def test_me_is_not_implemented(client: httpx.AsyncClient) -> None:
    response = await client.get("/Me")
    assert response.status_code == 501


async def test_rfc7644_3_5_1_put_replaces_and_bumps_version(client: httpx.AsyncClient) -> None:
    created = await _user(client, title="Clerk", nickName="Babs")
    replaced = await client.put(
        f"/Users/{created['id']}",
        json=user_payload("bjensen", title="Claims Specialist"),
    )
    body = replaced.json()
    assert replaced.status_code == 200
    assert body["title"] == "Claims Specialist"
    assert "nickName" not in body
    assert body["meta"]["version"] == 'W/"2"'


async def test_put_that_changes_nothing_keeps_the_version(client: httpx.AsyncClient) -> None:
    created = await _user(client, title="Clerk")
    again = await client.put(f"/Users/{created['id']}", json=user_payload("bjensen", title="Clerk"))
    assert again.json()["meta"]["version"] == 'W/"1"'


async def test_put_cannot_change_the_id(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    response = await client.put(f"/Users/{created['id']}", json=user_payload("bjensen", id="other"))
    assert response.status_code == 400
    assert response.json()["scimType"] == "mutability"


async def test_put_onto_a_taken_user_name_is_409(client: httpx.AsyncClient) -> None:
    await _user(client, "taken")
    other = await _user(client, "other")
    response = await client.put(f"/Users/{other['id']}", json=user_payload("TAKEN"))
    assert response.status_code == 409
    assert response.json()["scimType"] == "uniqueness"
    assert (await client.get(f"/Users/{other['id']}")).json()["userName"] == "other"


async def test_rfc7644_3_14_stale_if_match_is_412_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    created = await _user(client, title="Clerk")
    response = await client.patch(
        f"/Users/{created['id']}",
        headers={"If-Match": 'W/"7"'},
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "title", "value": "Boss"}],
        },
    )
    assert response.status_code == 412
    assert (await client.get(f"/Users/{created['id']}")).json()["title"] == "Clerk"


async def test_current_if_match_is_accepted(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    response = await client.patch(
        f"/Users/{created['id']}",
        headers={"If-Match": created["meta"]["version"]},
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "title", "value": "Boss"}],
        },
    )
    assert response.status_code == 200
    assert response.json()["meta"]["version"] == 'W/"2"'


async def test_if_none_match_with_current_version_is_304(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    response = await client.get(
        f"/Users/{created['id']}", headers={"If-None-Match": created["meta"]["version"]}
    )
    assert response.status_code == 304
    changed = await client.get(f"/Users/{created['id']}", headers={"If-None-Match": 'W/"0"'})
    assert changed.status_code == 200


async def test_stale_if_match_on_delete_is_412(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    assert (
        await client.delete(f"/Users/{created['id']}", headers={"If-Match": 'W/"9"'})
    ).status_code == 412
    assert (await client.delete(f"/Users/{created['id']}")).status_code == 204
    assert (await client.get(f"/Users/{created['id']}")).status_code == 404


async def test_rfc7644_3_5_2_patch_answers_200_with_the_user(client: httpx.AsyncClient) -> None:
    created = await _user(client, emails=[{"value": "b@example.com", "type": "work"}])
    response = await client.patch(
        f"/Users/{created['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {
                    "op": "add",
                    "path": "emails",
                    "value": [{"value": "home@example.com", "type": "home"}],
                },
                {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Claims"},
                {"op": "add", "path": f"{HR}:roleCodes", "value": ["BEN_CHOICE_2026"]},
            ],
        },
    )
    body = response.json()
    assert response.status_code == 200, body
    assert [e["type"] for e in body["emails"]] == ["work", "home"]
    assert body[ENTERPRISE]["department"] == "Claims"
    assert body[HR]["roleCodes"] == ["BEN_CHOICE_2026"]


async def test_patch_of_an_unknown_attribute_is_invalid_path(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    response = await client.patch(
        f"/Users/{created['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "shoeSize", "value": 42}],
        },
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidPath"


async def test_patch_of_a_read_only_attribute_is_mutability(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    response = await client.patch(
        f"/Users/{created['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "id", "value": "x"}]},
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "mutability"


async def test_patch_without_operations_is_invalid_syntax(client: httpx.AsyncClient) -> None:
    created = await _user(client)
    response = await client.patch(
        f"/Users/{created['id']}", json={"schemas": [PATCH], "Operations": []}
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidSyntax"


async def test_a_failing_patch_writes_nothing(client: httpx.AsyncClient) -> None:
    created = await _user(client, title="Clerk")
    response = await client.patch(
        f"/Users/{created['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "title", "value": "Boss"},
                {"op": "replace", "path": "shoeSize", "value": 42},
            ],
        },
    )
    assert response.status_code == 400
    fetched = (await client.get(f"/Users/{created['id']}")).json()
    assert fetched["title"] == "Clerk"
    assert fetched["meta"]["version"] == 'W/"1"'


async def test_rfc7644_3_4_2_5_attributes_and_excluded_attributes(
    client: httpx.AsyncClient,
) -> None:
    created = await _user(
        client,
        title="Clerk",
        name={"givenName": "B", "familyName": "J"},
        emails=[{"value": "b@x.com", "type": "work"}],
    )
    only = (
        await client.get(
            f"/Users/{created['id']}", params={"attributes": "userName,name.familyName"}
        )
    ).json()
    assert set(only) == {"schemas", "id", "userName", "name"}
    assert only["name"] == {"familyName": "J"}
    without = (
        await client.get(
            f"/Users/{created['id']}", params={"excludedAttributes": "title,emails.type"}
        )
    ).json()
    assert "title" not in without
    assert without["emails"] == [{"value": "b@x.com"}]
    assert without["id"] == created["id"]


async def test_excluded_members_are_not_returned(client: httpx.AsyncClient) -> None:
    user = await _user(client)
    group = await client.post(
        "/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": user["id"]}]},
    )
    assert group.json()["members"][0]["value"] == user["id"]
    fetched = (
        await client.get(f"/Groups/{group.json()['id']}", params={"excludedAttributes": "members"})
    ).json()
    assert "members" not in fetched
    listed = (await client.get("/Groups", params={"excludedAttributes": "members"})).json()
    assert "members" not in listed["Resources"][0]


async def test_user_groups_are_rendered_from_membership(client: httpx.AsyncClient) -> None:
    user = await _user(client)
    group = await client.post(
        "/Groups",
        json={
            "schemas": [GROUP_SCHEMA],
            "displayName": "Managers",
            "members": [{"value": user["id"]}],
        },
    )
    fetched = (await client.get(f"/Users/{user['id']}")).json()
    assert fetched["groups"] == [
        {
            "value": group.json()["id"],
            "$ref": f"http://bridge.test/scim/v2/Groups/{group.json()['id']}",
            "display": "Managers",
            "type": "direct",
        }
    ]


async def test_adding_an_unknown_member_is_invalid_value_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    group = await client.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "G"})
    response = await client.patch(
        f"/Groups/{group.json()['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "Renamed"},
                {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
            ],
        },
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidValue"
    assert (await client.get(f"/Groups/{group.json()['id']}")).json()["displayName"] == "G"


async def test_deleting_a_user_removes_its_memberships(client: httpx.AsyncClient) -> None:
    user = await _user(client)
    group = await client.post(
        "/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": user["id"]}]},
    )
    assert (await client.delete(f"/Users/{user['id']}")).status_code == 204
    fetched = (await client.get(f"/Groups/{group.json()['id']}")).json()
    assert "members" not in fetched


async def test_group_put_replaces_members(client: httpx.AsyncClient) -> None:
    a, b = await _user(client, "a"), await _user(client, "b")
    group = await client.post(
        "/Groups",
        json={"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": a["id"]}]},
    )
    response = await client.put(
        f"/Groups/{group.json()['id']}",
        json={"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": b["id"]}]},
    )
    assert response.status_code == 200
    assert [m["value"] for m in response.json()["members"]] == [b["id"]]


async def test_group_patch_with_attributes_answers_200_with_the_group(
    client: httpx.AsyncClient,
) -> None:
    group = await client.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "G"})
    response = await client.patch(
        f"/Groups/{group.json()['id']}",
        params={"attributes": "displayName"},
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "displayName", "value": "H"}],
        },
    )
    assert response.status_code == 200
    assert response.json()["displayName"] == "H"
