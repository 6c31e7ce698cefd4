"""What Microsoft Entra ID's provisioning service really sends, replayed against the bridge.

The requests follow Microsoft's "Tutorial: Develop and plan provisioning for a SCIM endpoint
in Microsoft Entra ID" (its request/response walk-through: create, get, query, update,
disable and delete a user; create, query, update and delete a group) and "Known issues and
resolutions with SCIM 2.0 protocol compliance of the Microsoft Entra user provisioning
service" (the deviations of the default ``scim`` job, and what the ``aadOptscim062020`` flag
sends instead). Each deviation the bridge tolerates must be named in the journal row.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from bridge.store import journal
from bridge.store.engine import Database
from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import PATCH
from tests.conftest import USER_SCHEMA
from tests.conftest import assert_scim
from tests.conftest import patch_body

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
AD_GROUP_SCHEMA = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
MS_GROUP_EXTENSION = "urn:ietf:params:scim:schemas:extension:microsoft:2.0:Group"


# -- helpers --------------------------------------------------------------------------------


def entra_user(user_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """The create-user body of Microsoft's tutorial (core + enterprise schemas, meta, roles)."""
    user_name = user_name or f"Test_User_{uuid.uuid4()}"
    body: dict[str, Any] = {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": f"{user_name}@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
    }
    body.update(extra)
    return body


def entra_group(display_name: str | None = None) -> dict[str, Any]:
    """The create-group body of Microsoft's tutorial (with the extra AD schema URN)."""
    return {
        "schemas": [GROUP_SCHEMA, AD_GROUP_SCHEMA],
        "externalId": str(uuid.uuid4()),
        "displayName": display_name or f"displayName{uuid.uuid4().hex[:8]}",
        "meta": {"resourceType": "Group"},
    }


async def create_user(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = assert_scim(await client.post("/Users", json=entra_user(**extra)), 201)
    return body


async def create_group(client: httpx.AsyncClient, display_name: str | None = None) -> str:
    body = assert_scim(await client.post("/Groups", json=entra_group(display_name)), 201)
    return str(body["id"])


def last_entry(db: Database, resource_id: str) -> journal.Entry:
    with db.read() as conn:
        entries = journal.read(conn, resource_id=resource_id)
    assert entries, f"no journal row for {resource_id}"
    return entries[-1]


async def add_members(client: httpx.AsyncClient, group_id: str, *user_ids: str) -> None:
    """Entra's add-members PATCH, as a setup step."""
    response = await client.patch(
        f"/Groups/{group_id}",
        json=patch_body(
            {"op": "Add", "path": "members", "value": [{"value": u} for u in user_ids]}
        ),
    )
    assert response.status_code == 204, response.text


async def member_ids(client: httpx.AsyncClient, group_id: str) -> set[str]:
    group = assert_scim(await client.get(f"/Groups/{group_id}"), 200)
    return {m["value"] for m in group.get("members", [])}


# -- users ----------------------------------------------------------------------------------


async def test_entra_test_connection_random_guid_filter_returns_empty_list(
    client: httpx.AsyncClient,
) -> None:
    await create_user(client)
    response = await client.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
    body = assert_scim(response, 200)
    assert body["schemas"] == [LIST_RESPONSE]
    assert body["totalResults"] == 0
    assert body["Resources"] == []
    assert body["startIndex"] == 1
    assert body["itemsPerPage"] == 0


async def test_entra_create_user(client: httpx.AsyncClient, db: Database) -> None:
    sent = entra_user()
    response = await client.post("/Users", json=sent)
    body = assert_scim(response, 201)
    assert body["id"]
    assert body["userName"] == sent["userName"]
    assert body["externalId"] == sent["externalId"]
    assert body["active"] is True
    assert body["emails"] == sent["emails"]
    assert body["name"] == sent["name"]
    assert USER_SCHEMA in body["schemas"]
    assert body["meta"]["resourceType"] == "User"
    assert body["meta"]["location"].endswith(f"/Users/{body['id']}")
    assert response.headers["location"] == body["meta"]["location"]
    assert response.headers["etag"] == body["meta"]["version"]
    entry = last_entry(db, body["id"])
    assert entry.op == "create"
    assert "ignored_meta" in entry.tolerances


async def test_entra_create_duplicate_user_conflicts(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.post("/Users", json=entra_user(user["userName"]))
    body = assert_scim(response, 409)
    assert body["schemas"] == [ERROR]
    assert body["status"] == "409"
    assert body["scimType"] == "uniqueness"


async def test_entra_get_user(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    body = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert body["id"] == user["id"]
    assert body["userName"] == user["userName"]
    assert body["externalId"] == user["externalId"]
    assert body["emails"] == user["emails"]
    assert body["name"]["familyName"] == "familyName"
    assert body["meta"]["resourceType"] == "User"


async def test_entra_get_user_by_query(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    await create_user(client)
    response = await client.get("/Users", params={"filter": f'userName eq "{user["userName"]}"'})
    body = assert_scim(response, 200)
    assert body["schemas"] == [LIST_RESPONSE]
    assert body["totalResults"] == 1
    assert body["itemsPerPage"] == 1
    assert body["startIndex"] == 1
    assert [r["id"] for r in body["Resources"]] == [user["id"]]
    assert body["Resources"][0]["externalId"] == user["externalId"]


async def test_entra_get_user_by_query_zero_results(client: httpx.AsyncClient) -> None:
    await create_user(client)
    response = await client.get("/Users", params={"filter": 'userName eq "non-existent user"'})
    body = assert_scim(response, 200)
    assert body["totalResults"] == 0
    assert body["Resources"] == []


async def test_entra_get_user_by_external_id_query(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    await create_user(client)
    response = await client.get(
        "/Users", params={"filter": f'externalId eq "{user["externalId"]}"'}
    )
    body = assert_scim(response, 200)
    assert [r["id"] for r in body["Resources"]] == [user["id"]]


async def test_entra_get_user_by_work_email_query(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    await create_user(client)
    email = user["emails"][0]["value"]
    response = await client.get(
        "/Users", params={"filter": f'emails[type eq "work"].value eq "{email}"'}
    )
    body = assert_scim(response, 200)
    assert [r["id"] for r in body["Resources"]] == [user["id"]]


async def test_entra_get_user_by_id_query(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    await create_user(client)
    response = await client.get("/Users", params={"filter": f'id eq "{user["id"]}"'})
    body = assert_scim(response, 200)
    assert [r["id"] for r in body["Resources"]] == [user["id"]]


async def test_entra_update_user_multi_valued_properties(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {
                "op": "Replace",
                "path": 'emails[type eq "work"].value',
                "value": "updatedEmail@microsoft.com",
            },
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
        ),
    )
    body = assert_scim(response, 200)
    assert body["emails"] == [
        {"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}
    ]
    assert body["name"]["familyName"] == "updatedFamilyName"
    assert body["name"]["givenName"] == "givenName"
    entry = last_entry(db, user["id"])
    assert entry.op == "patch"
    assert "op_case" in entry.tolerances


async def test_entra_update_user_single_valued_properties(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    new_name = f"{uuid.uuid4()}@testuser.com"
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Replace", "path": "userName", "value": new_name}),
    )
    body = assert_scim(response, 200)
    assert body["userName"] == new_name
    found = assert_scim(
        await client.get("/Users", params={"filter": f'userName eq "{new_name}"'}), 200
    )
    assert [r["id"] for r in found["Resources"]] == [user["id"]]
    gone = assert_scim(
        await client.get("/Users", params={"filter": f'userName eq "{user["userName"]}"'}), 200
    )
    assert gone["totalResults"] == 0


async def test_entra_add_single_valued_attribute_with_capitalised_op(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Add", "path": "nickName", "value": "Babs"}),
    )
    body = assert_scim(response, 200)
    assert body["nickName"] == "Babs"
    assert "op_case" in last_entry(db, user["id"]).tolerances


async def test_entra_add_single_valued_attribute_without_path(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "add", "value": {"nickName": "Babs"}}),
    )
    body = assert_scim(response, 200)
    assert body["nickName"] == "Babs"


async def test_entra_replace_multiple_attributes_with_dotted_and_urn_keys(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {
                "op": "replace",
                "value": {
                    "displayName": "Pvlo",
                    "name.givenName": "Gtfd",
                    "name.familyName": "Pkqf",
                    "externalId": "Eqpj",
                    f"{ENTERPRISE}:employeeNumber": "Eqpj",
                },
            }
        ),
    )
    body = assert_scim(response, 200)
    assert body["displayName"] == "Pvlo"
    assert body["name"] == {
        "formatted": "givenName familyName",
        "givenName": "Gtfd",
        "familyName": "Pkqf",
    }
    assert body["externalId"] == "Eqpj"
    assert body[ENTERPRISE]["employeeNumber"] == "Eqpj"
    assert body["emails"] == user["emails"]
    assert "attribute_path_keys" in last_entry(db, user["id"]).tolerances


async def test_entra_replace_multiple_attributes_with_attribute_path_keys(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {
                "op": "replace",
                "value": {
                    "displayName": "Pvlo",
                    'emails[type eq "work"].value': "TestBcwqnm@test.microsoft.com",
                    "name.givenName": "Gtfd",
                    "name.familyName": "Pkqf",
                    "externalId": "Eqpj",
                    f"{ENTERPRISE}:employeeNumber": "Eqpj",
                },
            }
        ),
    )
    body = assert_scim(response, 200)
    assert body["displayName"] == "Pvlo"
    assert body["emails"] == [
        {"primary": True, "type": "work", "value": "TestBcwqnm@test.microsoft.com"}
    ]
    assert body["name"]["givenName"] == "Gtfd"
    assert body["name"]["familyName"] == "Pkqf"
    assert body["externalId"] == "Eqpj"
    assert body[ENTERPRISE]["employeeNumber"] == "Eqpj"
    assert "attribute_path_keys" in last_entry(db, user["id"]).tolerances


async def test_entra_add_on_unmatched_filter_creates_entry(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client, emails=[{"type": "home", "value": "home@example.com"}])
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "Add", "path": 'emails[type eq "work"].value', "value": "work@example.com"}
        ),
    )
    body = assert_scim(response, 200)
    emails = {e["type"]: e["value"] for e in body["emails"]}
    assert emails == {"home": "home@example.com", "work": "work@example.com"}
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert {e["type"]: e["value"] for e in fetched["emails"]} == emails
    assert {"unmatched_filter_creates", "op_case"} <= set(last_entry(db, user["id"]).tolerances)


async def test_entra_add_on_unmatched_filter_creates_first_entry(
    client: httpx.AsyncClient, db: Database
) -> None:
    sent = entra_user()
    del sent["emails"]
    user = assert_scim(await client.post("/Users", json=sent), 201)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "Add", "path": 'emails[type eq "work"].value', "value": "work@example.com"}
        ),
    )
    body = assert_scim(response, 200)
    assert body["emails"] == [{"type": "work", "value": "work@example.com"}]
    assert "unmatched_filter_creates" in last_entry(db, user["id"]).tolerances


async def test_entra_add_on_matched_filter_replaces_value(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "Replace", "path": "title", "value": "tester"},
            {"op": "Add", "path": 'emails[type eq "work"].value', "value": "new@joe.com"},
        ),
    )
    body = assert_scim(response, 200)
    assert body["title"] == "tester"
    assert body["emails"] == [{"primary": True, "type": "work", "value": "new@joe.com"}]


async def test_entra_disable_user(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    active_peer = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json={
            "Operations": [{"op": "Replace", "path": "active", "value": False}],
            "schemas": [PATCH],
        },
    )
    body = assert_scim(response, 200)
    assert body["active"] is False
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert fetched["active"] is False
    disabled = assert_scim(await client.get("/Users", params={"filter": "active eq false"}), 200)
    assert [r["id"] for r in disabled["Resources"]] == [user["id"]]
    enabled = assert_scim(await client.get("/Users", params={"filter": "active eq true"}), 200)
    assert [r["id"] for r in enabled["Resources"]] == [active_peer["id"]]


async def test_entra_disable_user_with_string_false(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Replace", "path": "active", "value": "False"}),
    )
    body = assert_scim(response, 200)
    assert body["active"] is False
    entry = last_entry(db, user["id"])
    assert entry.after is not None and entry.after["active"] is False
    assert {"boolean_string", "op_case"} <= set(entry.tolerances)
    disabled = assert_scim(await client.get("/Users", params={"filter": "active eq false"}), 200)
    assert [r["id"] for r in disabled["Resources"]] == [user["id"]]


async def test_entra_enable_user_with_string_true(client: httpx.AsyncClient, db: Database) -> None:
    user = await create_user(client, active=False)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Replace", "path": "active", "value": "True"}),
    )
    body = assert_scim(response, 200)
    assert body["active"] is True
    assert "boolean_string" in last_entry(db, user["id"]).tolerances


async def test_entra_create_user_with_string_boolean(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await create_user(client, active="False")
    assert user["active"] is False
    assert "boolean_string" in last_entry(db, user["id"]).tolerances


async def test_entra_set_manager_as_bare_string(client: httpx.AsyncClient, db: Database) -> None:
    manager = await create_user(client)
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]}),
    )
    body = assert_scim(response, 200)
    assert body[ENTERPRISE]["manager"]["value"] == manager["id"]
    assert "manager_bare_string" in last_entry(db, user["id"]).tolerances


async def test_entra_set_manager_as_value_object(client: httpx.AsyncClient, db: Database) -> None:
    manager = await create_user(client)
    user = await create_user(client)
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body(
            {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": {"value": manager["id"]}}
        ),
    )
    body = assert_scim(response, 200)
    assert body[ENTERPRISE]["manager"]["value"] == manager["id"]
    assert "manager_bare_string" not in last_entry(db, user["id"]).tolerances


async def test_entra_create_user_with_bare_manager(client: httpx.AsyncClient, db: Database) -> None:
    manager = await create_user(client)
    user = await create_user(client, **{ENTERPRISE: {"manager": manager["id"]}})
    assert user[ENTERPRISE]["manager"]["value"] == manager["id"]
    assert "manager_bare_string" in last_entry(db, user["id"]).tolerances


async def test_entra_remove_manager(client: httpx.AsyncClient) -> None:
    manager = await create_user(client)
    user = await create_user(
        client, **{ENTERPRISE: {"manager": {"value": manager["id"]}, "department": "Sales"}}
    )
    response = await client.patch(
        f"/Users/{user['id']}",
        json=patch_body({"op": "Remove", "path": f"{ENTERPRISE}:manager"}),
    )
    body = assert_scim(response, 200)
    assert body[ENTERPRISE] == {"department": "Sales"}


async def test_entra_query_users_by_manager(client: httpx.AsyncClient) -> None:
    manager = await create_user(client)
    report = await create_user(client, **{ENTERPRISE: {"manager": {"value": manager["id"]}}})
    await create_user(client)
    response = await client.get(
        "/Users", params={"filter": f'{ENTERPRISE}:manager.value eq "{manager["id"]}"'}
    )
    body = assert_scim(response, 200)
    assert [r["id"] for r in body["Resources"]] == [report["id"]]


async def test_entra_delete_user(client: httpx.AsyncClient, db: Database) -> None:
    user = await create_user(client)
    response = await client.delete(f"/Users/{user['id']}")
    assert response.status_code == 204, response.text
    assert response.content == b""
    missing = assert_scim(await client.get(f"/Users/{user['id']}"), 404)
    assert missing["schemas"] == [ERROR]
    assert missing["status"] == "404"
    assert last_entry(db, user["id"]).op == "delete"


# -- groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extra_urn", [AD_GROUP_SCHEMA, MS_GROUP_EXTENSION])
async def test_entra_create_group_with_extra_schema_urn(
    client: httpx.AsyncClient, db: Database, extra_urn: str
) -> None:
    sent = entra_group()
    sent["schemas"] = [GROUP_SCHEMA, extra_urn]
    response = await client.post("/Groups", json=sent)
    body = assert_scim(response, 201)
    assert body["displayName"] == sent["displayName"]
    assert body["externalId"] == sent["externalId"]
    assert body["schemas"] == [GROUP_SCHEMA]
    assert body["meta"]["resourceType"] == "Group"
    assert not body.get("members")
    entry = last_entry(db, body["id"])
    assert entry.op == "create"
    assert "unknown_schema_urn" in entry.tolerances


async def test_entra_get_group_excluding_members(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    group_id = await create_group(client)
    await add_members(client, group_id, user["id"])
    response = await client.get(f"/Groups/{group_id}", params={"excludedAttributes": "members"})
    body = assert_scim(response, 200)
    assert body["id"] == group_id
    assert "members" not in body
    assert body["displayName"]


async def test_entra_get_group_by_display_name(client: httpx.AsyncClient) -> None:
    group_id = await create_group(client, "displayName")
    await create_group(client, "other")
    response = await client.get(
        "/Groups",
        params={"excludedAttributes": "members", "filter": 'displayName eq "displayName"'},
    )
    body = assert_scim(response, 200)
    assert body["totalResults"] == 1
    assert [r["id"] for r in body["Resources"]] == [group_id]
    assert "members" not in body["Resources"][0]


async def test_entra_query_group_by_id_and_member(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    outsider = await create_user(client)
    group_id = await create_group(client)
    await add_members(client, group_id, user["id"])
    member_filter = f'id eq "{group_id}" and members[value eq "{user["id"]}"]'
    found = assert_scim(
        await client.get(
            "/Groups", params={"excludedAttributes": "members", "filter": member_filter}
        ),
        200,
    )
    assert [r["id"] for r in found["Resources"]] == [group_id]
    outsider_filter = f'id eq "{group_id}" and members[value eq "{outsider["id"]}"]'
    none = assert_scim(
        await client.get(
            "/Groups", params={"excludedAttributes": "members", "filter": outsider_filter}
        ),
        200,
    )
    assert none["totalResults"] == 0


async def test_entra_update_group_non_member_attributes(client: httpx.AsyncClient) -> None:
    group_id = await create_group(client)
    new_name = f"{uuid.uuid4()}updatedDisplayName"
    response = await client.patch(
        f"/Groups/{group_id}",
        json=patch_body({"op": "Replace", "path": "displayName", "value": new_name}),
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    body = assert_scim(await client.get(f"/Groups/{group_id}"), 200)
    assert body["displayName"] == new_name


async def test_entra_add_member(client: httpx.AsyncClient, db: Database) -> None:
    user = await create_user(client)
    group_id = await create_group(client)
    response = await client.patch(
        f"/Groups/{group_id}",
        json=patch_body(
            {"op": "Add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]}
        ),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group_id) == {user["id"]}
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert [g["value"] for g in fetched.get("groups", [])] == [group_id]
    entry = last_entry(db, group_id)
    assert entry.detail == {"added": [user["id"]]}
    assert "op_case" in entry.tolerances


async def test_entra_add_multiple_members(client: httpx.AsyncClient) -> None:
    first = await create_user(client)
    second = await create_user(client)
    group_id = await create_group(client)
    response = await client.patch(
        f"/Groups/{group_id}",
        json=patch_body(
            {
                "op": "Add",
                "path": "members",
                "value": [{"value": first["id"]}, {"value": second["id"]}],
            }
        ),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group_id) == {first["id"], second["id"]}


async def test_entra_remove_member_by_value(client: httpx.AsyncClient, db: Database) -> None:
    leaving = await create_user(client)
    staying = await create_user(client)
    group_id = await create_group(client)
    await add_members(client, group_id, leaving["id"], staying["id"])
    response = await client.patch(
        f"/Groups/{group_id}",
        json=patch_body(
            {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": leaving["id"]}]}
        ),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group_id) == {staying["id"]}
    entry = last_entry(db, group_id)
    assert entry.detail == {"removed": [leaving["id"]]}
    assert {"remove_with_value", "op_case"} <= set(entry.tolerances)


async def test_entra_remove_member_by_filter(client: httpx.AsyncClient) -> None:
    leaving = await create_user(client)
    staying = await create_user(client)
    group_id = await create_group(client)
    await add_members(client, group_id, leaving["id"], staying["id"])
    response = await client.patch(
        f"/Groups/{group_id}",
        json=patch_body({"op": "remove", "path": f'members[value eq "{leaving["id"]}"]'}),
    )
    assert response.status_code == 204, response.text
    assert await member_ids(client, group_id) == {staying["id"]}


async def test_entra_delete_group(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    group_id = await create_group(client)
    await add_members(client, group_id, user["id"])
    response = await client.delete(f"/Groups/{group_id}")
    assert response.status_code == 204, response.text
    assert_scim(await client.get(f"/Groups/{group_id}"), 404)
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert not fetched.get("groups")
