"""What Okta's SCIM 2.0 provisioning really sends, replayed against the bridge.

The requests follow Okta's "SCIM 2.0 protocol reference" (developer.okta.com, okta-scim
guides/scim-20) and "Build a SCIM provisioning integration" with its SCIM spec test suite
(the Runscope/"OIN SCIM test" checks): the test-connection list ``?startIndex=1&count=2``,
the user-exists query ``?filter=userName eq "x"&startIndex=1&count=100``, a create that
carries ``password`` and ``groups``, a full PUT that carries ``password``, ``groups`` and
``meta``, deactivation as a path-less ``{"op":"replace","value":{"active":false}}``, and
Group Push (create, rename with ``{"id", "displayName"}`` in a path-less replace, members
added with ``path: members`` and removed with ``members[value eq "id"]``).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from bridge.store import journal
from bridge.store.engine import Database
from tests.conftest import GROUP_SCHEMA
from tests.conftest import USER_SCHEMA
from tests.conftest import assert_scim
from tests.conftest import patch_body

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


# -- helpers --------------------------------------------------------------------------------


def okta_user(user_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """The create-user body of Okta's SCIM 2.0 reference (with password and groups)."""
    user_name = user_name or f"test.user.{uuid.uuid4().hex[:8]}@okta.local"
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": f"00u{uuid.uuid4().hex[:17]}",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    body.update(extra)
    return body


async def create_user(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = assert_scim(await client.post("/Users", json=okta_user(**extra)), 201)
    return body


async def create_group(
    client: httpx.AsyncClient, display_name: str | None = None, members: list[str] | None = None
) -> dict[str, Any]:
    sent = {
        "schemas": [GROUP_SCHEMA],
        "displayName": display_name or f"Test SCIMv2 {uuid.uuid4().hex[:8]}",
        "members": [{"value": m} for m in members or []],
    }
    body: dict[str, Any] = assert_scim(await client.post("/Groups", json=sent), 201)
    return body


def last_entry(db: Database, resource_id: str) -> journal.Entry:
    with db.read() as conn:
        entries = journal.read(conn, resource_id=resource_id)
    assert entries, f"no journal row for {resource_id}"
    return entries[-1]


async def member_ids(client: httpx.AsyncClient, group_id: str) -> set[str]:
    group = assert_scim(await client.get(f"/Groups/{group_id}"), 200)
    return {m["value"] for m in group.get("members", [])}


async def ids_matching(client: httpx.AsyncClient, endpoint: str, filter_: str) -> list[str]:
    body = assert_scim(
        await client.get(endpoint, params={"filter": filter_, "startIndex": 1, "count": 100}),
        200,
    )
    return [r["id"] for r in body["Resources"]]


# -- users ----------------------------------------------------------------------------------


async def test_okta_test_connection_lists_two_users(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create_user(client)
    response = await client.get("/Users", params={"startIndex": 1, "count": 2})
    body = assert_scim(response, 200)
    assert body["schemas"] == [LIST_RESPONSE]
    assert body["totalResults"] == 3
    assert body["startIndex"] == 1
    assert body["itemsPerPage"] == 2
    assert len(body["Resources"]) == 2
    assert all(r["userName"] and r["id"] for r in body["Resources"])


async def test_okta_test_connection_on_empty_server(client: httpx.AsyncClient) -> None:
    body = assert_scim(await client.get("/Users", params={"startIndex": 1, "count": 2}), 200)
    assert body["totalResults"] == 0
    assert body["Resources"] == []
    assert body["startIndex"] == 1
    assert body["itemsPerPage"] == 0


async def test_okta_import_users_pages_with_start_index(client: httpx.AsyncClient) -> None:
    created = [(await create_user(client))["id"] for _ in range(5)]
    seen: list[str] = []
    start = 1
    while True:
        body = assert_scim(
            await client.get("/Users", params={"startIndex": start, "count": 2}), 200
        )
        assert body["totalResults"] == 5
        assert body["startIndex"] == start
        seen += [r["id"] for r in body["Resources"]]
        start += body["itemsPerPage"]
        if not body["Resources"] or start > body["totalResults"]:
            break
    assert sorted(seen) == sorted(created)


async def test_okta_user_exists_query_without_match(client: httpx.AsyncClient) -> None:
    await create_user(client)
    response = await client.get(
        "/Users",
        params={"filter": 'userName eq "test.user@okta.local"', "startIndex": 1, "count": 100},
    )
    body = assert_scim(response, 200)
    assert body == {
        "schemas": [LIST_RESPONSE],
        "totalResults": 0,
        "itemsPerPage": 0,
        "startIndex": 1,
        "Resources": [],
    }


async def test_okta_user_exists_query_with_match(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    await create_user(client)
    response = await client.get(
        "/Users",
        params={"filter": f'userName eq "{user["userName"]}"', "startIndex": 1, "count": 100},
    )
    body = assert_scim(response, 200)
    assert body["totalResults"] == 1
    assert body["Resources"][0]["id"] == user["id"]
    assert body["Resources"][0]["userName"] == user["userName"]


async def test_okta_user_name_filter_is_case_insensitive(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    shouted = user["userName"].upper()
    assert await ids_matching(client, "/Users", f'userName eq "{shouted}"') == [user["id"]]


async def test_okta_create_user_with_password_and_groups(
    client: httpx.AsyncClient, db: Database
) -> None:
    sent = okta_user()
    response = await client.post("/Users", json=sent)
    body = assert_scim(response, 201)
    assert body["id"]
    assert body["userName"] == sent["userName"]
    assert body["externalId"] == sent["externalId"]
    assert body["name"] == sent["name"]
    assert body["emails"] == sent["emails"]
    assert body["displayName"] == "Test User"
    assert body["locale"] == "en-US"
    assert body["active"] is True
    assert "password" not in body
    assert not body.get("groups")
    assert body["meta"]["resourceType"] == "User"
    assert response.headers["location"] == body["meta"]["location"]
    entry = last_entry(db, body["id"])
    assert entry.op == "create"
    assert {"ignored_password", "ignored_groups"} <= set(entry.tolerances)
    assert entry.after is not None and "password" not in entry.after


async def test_okta_create_duplicate_user_conflicts(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.post("/Users", json=okta_user(user["userName"]))
    body = assert_scim(response, 409)
    assert body["schemas"] == [ERROR]
    assert body["status"] == "409"
    assert body["scimType"] == "uniqueness"


async def test_okta_get_user(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.get(f"/Users/{user['id']}")
    body = assert_scim(response, 200)
    assert body["id"] == user["id"]
    assert body["userName"] == user["userName"]
    assert body["name"] == {"givenName": "Test", "familyName": "User"}
    assert "password" not in body
    assert response.headers["etag"] == body["meta"]["version"]


async def test_okta_get_unknown_user_is_not_found(client: httpx.AsyncClient) -> None:
    body = assert_scim(await client.get(f"/Users/{uuid.uuid4()}"), 404)
    assert body["schemas"] == [ERROR]
    assert body["status"] == "404"
    assert body["detail"]


async def test_okta_replace_user_with_password_groups_and_meta(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    sent = {
        "schemas": [USER_SCHEMA],
        "id": user["id"],
        "userName": user["userName"],
        "name": {"givenName": "Another", "middleName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": user["userName"], "type": "work"}],
        "displayName": "Another Test User",
        "locale": "en-US",
        "externalId": user["externalId"],
        "groups": [],
        "password": "1mz050nq",
        "active": True,
        "meta": {
            "resourceType": "User",
            "created": "2010-01-23T04:56:22Z",
            "lastModified": "2011-05-13T04:42:34Z",
        },
    }
    response = await client.put(f"/Users/{user['id']}", json=sent)
    body = assert_scim(response, 200)
    assert body["id"] == user["id"]
    assert body["name"] == sent["name"]
    assert body["displayName"] == "Another Test User"
    assert body["externalId"] == user["externalId"]
    assert body["active"] is True
    assert "password" not in body
    assert body["meta"]["created"] == user["meta"]["created"]
    assert body["meta"]["created"] != "2010-01-23T04:56:22Z"
    assert body["meta"]["version"] != user["meta"]["version"]
    entry = last_entry(db, user["id"])
    assert entry.op == "replace"
    assert {"ignored_password", "ignored_groups", "ignored_meta"} <= set(entry.tolerances)


async def test_okta_replace_user_without_external_id_keeps_it(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    sent = okta_user(user["userName"], displayName="Renamed")
    del sent["externalId"]
    body = assert_scim(await client.put(f"/Users/{user['id']}", json=sent), 200)
    assert body["displayName"] == "Renamed"
    assert body["externalId"] == user["externalId"]


async def test_okta_deactivate_with_pathless_replace(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    peer = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "replace", "value": {"active": False}}),
    )
    body = assert_scim(response, 200)
    assert body["id"] == user["id"]
    assert body["active"] is False
    assert body["userName"] == user["userName"]
    assert body["name"] == user["name"]
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert fetched["active"] is False
    assert await ids_matching(client, "/Users", "active eq false") == [user["id"]]
    assert await ids_matching(client, "/Users", "active eq true") == [peer["id"]]
    assert await ids_matching(client, "/Users", f'userName eq "{user["userName"]}"') == [user["id"]]
    entry = last_entry(db, user["id"])
    assert entry.op == "patch"
    assert entry.before is not None and entry.before["active"] is True
    assert entry.after is not None and entry.after["active"] is False


async def test_okta_reactivate_with_pathless_replace(client: httpx.AsyncClient) -> None:
    user = await create_user(client, active=False)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "replace", "value": {"active": True}}),
    )
    body = assert_scim(response, 200)
    assert body["active"] is True
    assert await ids_matching(client, "/Users", "active eq false") == []


async def test_okta_deactivate_with_put(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    sent = okta_user(user["userName"], externalId=user["externalId"], active=False)
    body = assert_scim(await client.put(f"/Users/{user['id']}", json=sent), 200)
    assert body["active"] is False
    assert assert_scim(await client.get(f"/Users/{user['id']}"), 200)["active"] is False
    assert await ids_matching(client, "/Users", "active eq false") == [user["id"]]


async def test_okta_update_profile_with_pathless_replace(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {
                "op": "replace",
                "value": {"displayName": "Another Test User", "name": {"givenName": "Another"}},
            }
        ),
    )
    body = assert_scim(response, 200)
    assert body["displayName"] == "Another Test User"
    assert body["name"] == {"givenName": "Another", "familyName": "User"}


# -- group push -----------------------------------------------------------------------------


async def test_okta_create_group(client: httpx.AsyncClient, db: Database) -> None:
    sent = {"schemas": [GROUP_SCHEMA], "displayName": "Test SCIMv2", "members": []}
    response = await client.post("/Groups", json=sent)
    body = assert_scim(response, 201)
    assert body["id"]
    assert body["displayName"] == "Test SCIMv2"
    assert body["schemas"] == [GROUP_SCHEMA]
    assert not body.get("members")
    assert body["meta"]["resourceType"] == "Group"
    assert response.headers["location"] == body["meta"]["location"]
    assert last_entry(db, body["id"]).op == "create"


async def test_okta_create_group_with_members(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    sent = {
        "schemas": [GROUP_SCHEMA],
        "displayName": "Test SCIMv2",
        "members": [{"value": user["id"], "display": user["userName"]}],
    }
    body = assert_scim(await client.post("/Groups", json=sent), 201)
    assert [m["value"] for m in body["members"]] == [user["id"]]
    assert await member_ids(client, body["id"]) == {user["id"]}


async def test_okta_group_exists_query(client: httpx.AsyncClient) -> None:
    group = await create_group(client, "Test SCIMv2")
    await create_group(client, "Another group")
    assert await ids_matching(client, "/Groups", 'displayName eq "Test SCIMv2"') == [group["id"]]
    assert await ids_matching(client, "/Groups", 'displayName eq "Nope"') == []


async def test_okta_get_group(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    group = await create_group(client, members=[user["id"]])
    body = assert_scim(await client.get(f"/Groups/{group['id']}"), 200)
    assert body["id"] == group["id"]
    assert body["displayName"] == group["displayName"]
    assert [(m["value"], m.get("display")) for m in body["members"]] == [(user["id"], "Test User")]


async def test_okta_list_groups(client: httpx.AsyncClient) -> None:
    first = await create_group(client)
    second = await create_group(client)
    body = assert_scim(await client.get("/Groups", params={"startIndex": 1, "count": 100}), 200)
    assert body["totalResults"] == 2
    assert {r["id"] for r in body["Resources"]} == {first["id"], second["id"]}


async def test_okta_rename_group_with_pathless_replace_carrying_id(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    group = await create_group(client, members=[user["id"]])
    response = await client.patch(
        f"/Groups/{group['id']}",
        json=patch_body({"op": "replace", "value": {"id": group["id"], "displayName": "Renamed"}}),
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    body = assert_scim(await client.get(f"/Groups/{group['id']}"), 200)
    assert body["id"] == group["id"]
    assert body["displayName"] == "Renamed"
    assert [m["value"] for m in body["members"]] == [user["id"]]
    entry = last_entry(db, group["id"])
    assert entry.op == "patch"
    assert entry.after is not None and entry.after["displayName"] == "Renamed"


async def test_okta_rename_group_with_path(client: httpx.AsyncClient) -> None:
    group = await create_group(client)
    response = await client.patch(
        f"/Groups/{group['id']}",
        json=patch_body({"op": "replace", "path": "displayName", "value": "Renamed"}),
    )
    assert response.status_code == 204, response.text
    assert assert_scim(await client.get(f"/Groups/{group['id']}"), 200)["displayName"] == "Renamed"


async def test_okta_add_members(client: httpx.AsyncClient, db: Database) -> None:
    first = await create_user(client)
    second = await create_user(client)
    group = await create_group(client)
    response = await client.patch(
        f"/Groups/{group['id']}",
        json=patch_body(
            {
                "op": "add",
                "path": "members",
                "value": [
                    {"value": first["id"], "display": first["userName"]},
                    {"value": second["id"], "display": second["userName"]},
                ],
            }
        ),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group["id"]) == {first["id"], second["id"]}
    fetched = assert_scim(await client.get(f"/Users/{first['id']}"), 200)
    assert [g["value"] for g in fetched["groups"]] == [group["id"]]
    entry = last_entry(db, group["id"])
    assert entry.op == "members"
    assert entry.detail is not None
    assert sorted(entry.detail["added"]) == sorted([first["id"], second["id"]])


async def test_okta_remove_member_by_filter(client: httpx.AsyncClient, db: Database) -> None:
    leaving = await create_user(client)
    staying = await create_user(client)
    group = await create_group(client, members=[leaving["id"], staying["id"]])
    response = await client.patch(
        f"/Groups/{group['id']}",
        json=patch_body({"op": "remove", "path": f'members[value eq "{leaving["id"]}"]'}),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group["id"]) == {staying["id"]}
    fetched = assert_scim(await client.get(f"/Users/{leaving['id']}"), 200)
    assert not fetched.get("groups")
    assert last_entry(db, group["id"]).detail == {"removed": [leaving["id"]]}


async def test_okta_update_membership_remove_and_add_in_one_patch(
    client: httpx.AsyncClient,
) -> None:
    leaving = await create_user(client)
    joining = await create_user(client)
    group = await create_group(client, members=[leaving["id"]])
    response = await client.patch(
        f"/Groups/{group['id']}",
        json=patch_body(
            {"op": "remove", "path": f'members[value eq "{leaving["id"]}"]'},
            {
                "op": "add",
                "path": "members",
                "value": [{"value": joining["id"], "display": joining["userName"]}],
            },
        ),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group["id"]) == {joining["id"]}


async def test_okta_add_member_already_present_is_idempotent(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    group = await create_group(client, members=[user["id"]])
    response = await client.patch(
        f"/Groups/{group['id']}",
        json=patch_body({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group["id"]) == {user["id"]}


async def test_okta_patch_group_with_attributes_returns_group(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    group = await create_group(client)
    response = await client.patch(
        f"/Groups/{group['id']}",
        params={"attributes": "members"},
        json=patch_body({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    body = assert_scim(response, 200)
    assert body["id"] == group["id"]
    assert [m["value"] for m in body["members"]] == [user["id"]]


async def test_okta_delete_group(client: httpx.AsyncClient, db: Database) -> None:
    user = await create_user(client)
    group = await create_group(client, members=[user["id"]])
    response = await client.delete(f"/Groups/{group['id']}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_scim(await client.get(f"/Groups/{group['id']}"), 404)
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert not fetched.get("groups")
    entry = last_entry(db, group["id"])
    assert entry.op == "delete"
    assert entry.detail == {"members": [user["id"]]}
