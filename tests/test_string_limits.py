"""RFC 7644 §3.12 ``invalidValue`` for a string longer than its attribute allows, from the schema.

A core attribute held in a column keeps the column's size (userName and displayName 512,
externalId 255); every other string attribute, at any depth (core, extension, sub-attribute,
multi-valued item), whether it comes in a POST, a PUT, a PATCH value or Bulk data, is bounded
by ``max_string_length`` (2,048). A value that long is stored, and found by ``eq`` even where
it is indexed (``attribute_values``: a long key is its prefix and its hash). dateTimes are
checked where the schema types an attribute as dateTime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from scim2_models import InvalidValueException
from sqlalchemy import text

from bridge.schemas import Catalog
from bridge.scim import door
from bridge.scim import quirks
from bridge.store.engine import MIGRATIONS
from bridge.store.engine import Database
from bridge.store.values import MAX_KEY_BYTES
from bridge.store.values import string_key
from bridge.store.values import value_key
from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import USER_SCHEMA
from tests.conftest import assert_scim
from tests.conftest import patch_body
from tests.conftest import user_payload

LIMIT = 2048
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
ROOT = Path(__file__).resolve().parent.parent

# Where a string sits in a User, as a body holds it, and the attribute an error names.
PLACES: list[tuple[str, Any, str]] = [
    ("core", lambda v: {"title": v}, "title"),
    ("sub-attribute", lambda v: {"name": {"givenName": v}}, "name.givenName"),
    (
        "multi-valued item",
        lambda v: {"emails": [{"value": "a@x.test"}, {"value": v}]},
        "emails[1].value",
    ),
    ("extension", lambda v: {ENTERPRISE: {"department": v}}, f"{ENTERPRISE}:department"),
    (
        "extension sub-attribute",
        lambda v: {ENTERPRISE: {"manager": {"value": "m", "displayName": v}}},
        f"{ENTERPRISE}:manager.displayName",
    ),
    ("extension multi-valued", lambda v: {HR: {"roleCodes": ["A", v]}}, f"{HR}:roleCodes[1]"),
]


def _user(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    return user_payload(name, schemas=[USER_SCHEMA, ENTERPRISE, HR], **extra)


async def _refused(response: httpx.Response, attribute: str) -> str:
    body = assert_scim(response, 400)
    assert body["scimType"] == "invalidValue", body
    assert attribute in body["detail"], body
    return str(body["detail"])


async def _count(client: httpx.AsyncClient) -> int:
    return int(assert_scim(await client.get("/Users"), 200)["totalResults"])


@pytest.mark.parametrize(("where", "place", "attribute"), PLACES, ids=[p[0] for p in PLACES])
async def test_string_over_max_string_length_is_invalid_value_at_any_depth(
    client: httpx.AsyncClient, where: str, place: Any, attribute: str
) -> None:
    detail = await _refused(
        await client.post("/Users", json=_user("bjensen", place("x" * (LIMIT + 1)))), attribute
    )
    assert str(LIMIT) in detail
    assert await _count(client) == 0
    assert_scim(await client.post("/Users", json=_user("bjensen", place("x" * LIMIT))), 201)


@pytest.mark.parametrize(("where", "place", "attribute"), PLACES, ids=[p[0] for p in PLACES])
async def test_put_over_max_string_length_is_invalid_value(
    client: httpx.AsyncClient, where: str, place: Any, attribute: str
) -> None:
    created = assert_scim(await client.post("/Users", json=_user("bjensen", {})), 201)
    response = await client.put(
        f"/Users/{created['id']}", json=_user("bjensen", place("y" * (LIMIT + 1)))
    )
    await _refused(response, attribute)
    fetched = assert_scim(await client.get(f"/Users/{created['id']}"), 200)
    assert fetched["meta"]["version"] == created["meta"]["version"]


async def test_a_sub_attribute_named_like_a_column_is_not_bound_by_the_column(
    client: httpx.AsyncClient,
) -> None:
    """manager.displayName is no column: 513 characters and more are a valid value (which,
    being read-only, is then dropped)."""
    manager = {"value": "m", "displayName": "d" * LIMIT}
    response = await client.post(
        "/Users", json=_user("bjensen", {ENTERPRISE: {"manager": manager}})
    )
    assert assert_scim(response, 201)[ENTERPRISE]["manager"]["value"] == "m"


@pytest.mark.parametrize(
    ("operation", "attribute"),
    [
        ({"op": "replace", "path": "title", "value": "t" * (LIMIT + 1)}, "title"),
        (
            {"op": "add", "path": 'emails[type eq "work"].value', "value": "e" * (LIMIT + 1)},
            "emails",
        ),
        (
            {"op": "add", "path": "emails", "value": [{"value": "e" * (LIMIT + 1)}]},
            "emails[0].value",
        ),
        ({"op": "replace", "value": {"name": {"familyName": "f" * (LIMIT + 1)}}}, "familyName"),
        ({"op": "replace", "value": {"name.familyName": "f" * (LIMIT + 1)}}, "name.familyName"),
        (
            {"op": "replace", "path": f"{HR}:roleCodes", "value": ["r" * (LIMIT + 1)]},
            "roleCodes",
        ),
        (
            {"op": "replace", "value": {ENTERPRISE: {"costCenter": "c" * (LIMIT + 1)}}},
            "costCenter",
        ),
        ({"op": "replace", "path": "userName", "value": "u" * 513}, "userName"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_patch_value_over_its_limit_is_invalid_value(
    client: httpx.AsyncClient, operation: dict[str, Any], attribute: str
) -> None:
    created = assert_scim(await client.post("/Users", json=_user("bjensen", {})), 201)
    response = await client.patch(f"/Users/{created['id']}", json=patch_body(operation))
    assert "Operations[0]" in await _refused(response, attribute)
    fetched = assert_scim(await client.get(f"/Users/{created['id']}"), 200)
    assert fetched["meta"]["version"] == created["meta"]["version"]


async def test_group_member_value_over_max_string_length_is_invalid_value(
    client: httpx.AsyncClient,
) -> None:
    group = {"schemas": [GROUP_SCHEMA], "displayName": "g", "members": [{"value": "m" * 2049}]}
    await _refused(await client.post("/Groups", json=group), "members[0].value")
    created = assert_scim(
        await client.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "g"}), 201
    )
    operation = {"op": "add", "path": "members", "value": [{"value": "m" * 2049}]}
    response = await client.patch(f"/Groups/{created['id']}", json=patch_body(operation))
    await _refused(response, "members[0].value")


async def test_bulk_data_over_its_limit_fails_that_operation_only(
    client: httpx.AsyncClient,
) -> None:
    bulk = {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "ok", "data": _user("ok", {})},
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "long",
                "data": _user("long", {"title": "t" * (LIMIT + 1)}),
            },
            {
                "method": "PATCH",
                "path": "/Users/bulkId:ok",
                "data": patch_body({"op": "add", "path": f"{HR}:location", "value": "l" * 2049}),
            },
        ],
    }
    body = assert_scim(await client.post("/Bulk", json=bulk), 200)
    statuses = [operation["status"] for operation in body["Operations"]]
    assert statuses == ["201", "400", "400"], body
    assert body["Operations"][1]["response"]["scimType"] == "invalidValue"
    assert "title" in body["Operations"][1]["response"]["detail"]
    assert "location" in body["Operations"][2]["response"]["detail"]
    assert await _count(client) == 1


def _varied(first: int, size: int, length: int) -> str:
    """``length`` characters of the ``size`` from ``first``, in an order that does not repeat
    (PostgreSQL compresses a repetitive key enough to fit in its index)."""
    return "".join(chr(first + (i * 7919 + i * i) % size) for i in range(length))


@pytest.mark.parametrize(
    ("first", "size"),
    [(0x61, 26), (0x430, 32), (0x4E00, 20000)],
    ids=["ASCII", "two bytes", "three bytes"],
)
async def test_a_long_indexed_value_is_stored_and_found_by_eq(
    client: httpx.AsyncClient, first: int, size: int
) -> None:
    """emails and roleCodes are indexed (attribute_values): a 2,048-character value, up to
    6 KiB of UTF-8, neither fails PostgreSQL's index (2,704 bytes an entry) nor goes unfound;
    another value with the same first 2,040 characters is not found with it."""
    email = _varied(first, size, LIMIT - 7) + "@x.test"
    code = _varied(first, size, LIMIT)
    near = email[: LIMIT - 8] + "Z@x.test"
    created = assert_scim(
        await client.post(
            "/Users",
            json=_user("long", {"emails": [{"value": email}], HR: {"roleCodes": [code]}}),
        ),
        201,
    )
    assert_scim(await client.post("/Users", json=_user("near", {"emails": [{"value": near}]})), 201)
    for query in (f'emails.value eq "{email}"', f'emails[value eq "{email.upper()}"]'):
        found = assert_scim(await client.get("/Users", params={"filter": query}), 200)
        assert [r["id"] for r in found["Resources"]] == [created["id"]], query[:40]
    search = {"filter": f'{HR}:roleCodes eq "{code}"'}
    found = assert_scim(await client.post("/Users/.search", json=search), 200)
    assert [r["id"] for r in found["Resources"]] == [created["id"]]


async def test_migration_0008_rekeys_a_long_key_written_whole(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Before 0008 a key of up to 1,024 characters was written whole, 1,200 bytes here."""
    created = assert_scim(await client.post("/Users", json=_user("bjensen", {})), 201)
    whole = "ж" * 600
    with db.write() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        pk = conn.execute(
            text("SELECT pk FROM resources WHERE id = :id"), {"id": created["id"]}
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO attribute_values (resource_pk, path, position, value_key)"
                " VALUES (:pk, 'emails.value', 9, :key)"
            ),
            {"pk": pk, "key": whole},
        )
        conn.execute(text("UPDATE alembic_version SET version_num = '0007'"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.write() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0008")
        conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    with db.read() as conn:
        key = conn.execute(text("SELECT value_key FROM attribute_values WHERE position = 9"))
        assert key.scalar_one() == string_key(whole) != whole


async def test_datetime_check_follows_the_schema(client: httpx.AsyncClient) -> None:
    """A dateTime-shaped string in a string attribute is a string; in a dateTime attribute
    (hireDate) its instant must be in years 1 to 9999, in a POST, a PATCH and Bulk data."""
    out_of_range = "9999-12-31T23:59:59-14:00"
    created = assert_scim(
        await client.post("/Users", json=_user("bjensen", {"title": out_of_range})), 201
    )
    assert created["title"] == out_of_range
    operation = {"op": "replace", "path": f"{HR}:hireDate", "value": out_of_range}
    response = await client.patch(f"/Users/{created['id']}", json=patch_body(operation))
    await _refused(response, "hireDate")
    pathless = {"op": "replace", "value": {f"{HR}:hireDate": "0001-01-01T00:00:00+14:00"}}
    response = await client.patch(f"/Users/{created['id']}", json=patch_body(pathless))
    await _refused(response, "hireDate")
    bulk = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "data": _user("b", {HR: {"hireDate": out_of_range}}),
            }
        ],
    }
    body = assert_scim(await client.post("/Bulk", json=bulk), 200)
    assert body["Operations"][0]["status"] == "400"
    assert "hireDate" in body["Operations"][0]["response"]["detail"]


# -- the pure functions ---------------------------------------------------------------------


def test_max_string_length_is_the_setting(catalog: Catalog) -> None:
    model = catalog.model("User")
    known = {USER_SCHEMA.lower()}
    payload = user_payload("bjensen", title="t" * 101)
    with pytest.raises(InvalidValueException, match="title is over 100 characters"):
        quirks.normalize_resource(payload, model, known, max_string_length=100)
    operations = patch_body({"op": "add", "path": "nickName", "value": "n" * 101})
    with pytest.raises(InvalidValueException, match="nickName is over 100 characters"):
        quirks.normalize_patch(operations, model, max_string_length=100)
    kept, _ = quirks.normalize_resource(payload, model, known, max_string_length=101)
    assert kept["title"] == "t" * 101


def test_column_sizes_hold_whatever_the_setting(catalog: Catalog) -> None:
    schema = door.schema_of(catalog.model("User"), 4096)
    assert schema.root.sub["userName"].limit == 512
    assert schema.root.sub["displayName"].limit == 512
    assert schema.root.sub["externalId"].limit == 255
    assert schema.root.sub["title"].limit == 4096
    assert schema.root.sub["emails"].sub["value"].limit == 4096
    assert door.schema_of(catalog.model("Group")).root.sub["displayName"].limit == 512


def test_a_username_whose_folded_key_outgrows_its_column_is_invalid_value(
    catalog: Catalog,
) -> None:
    """'İ' lower-cases to two characters: 512 of them fit ``name`` but not ``name_key``."""
    with pytest.raises(InvalidValueException, match="userName is over 512"):
        quirks.normalize_resource(user_payload("İ" * 512), catalog.model("User"), set())


def test_long_keys_are_a_prefix_and_a_hash() -> None:
    assert string_key("a" * MAX_KEY_BYTES) == "a" * MAX_KEY_BYTES
    long_key = string_key("a" * (MAX_KEY_BYTES + 1))
    assert len(long_key.encode()) <= MAX_KEY_BYTES
    assert long_key.startswith("a" * 800)
    assert long_key != string_key("a" * (MAX_KEY_BYTES + 2))
    wide = string_key("語" * 400)  # 1,200 bytes: cut on a character boundary
    assert len(wide.encode()) <= MAX_KEY_BYTES
    assert wide.startswith("語" * 298)
    assert value_key("Ж" * 1000, "folded") == string_key("ж" * 1000)
