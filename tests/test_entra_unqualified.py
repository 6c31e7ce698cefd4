"""Microsoft Entra ID sends PATCH paths naming an extension attribute without its URN.

An attribute mapping to ``manager`` or ``employeeNumber`` becomes
``{"op": "replace", "path": "manager", "value": "123"}``, where RFC 7644 §3.10 says a client
should qualify an extension's attribute. A name the core schema lacks is looked up in the
resource type's extensions, and the path qualified with the one defining it, noting the
``unqualified_extension_attribute`` tolerance. Two extensions defining it: 400
``invalidPath`` naming both. No schema defining it: 400 ``invalidPath``, as before.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scim2_models import InvalidPathException

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from bridge.scim import quirks
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store.engine import Database
from tests.conftest import ENTERPRISE
from tests.conftest import HR
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import patch_body
from tests.conftest import user_payload

TOLERANCE = "unqualified_extension_attribute"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def _tolerances(db: Database, resource_id: str) -> list[str]:
    with db.read() as conn:
        return journal.read(conn, resource_id=resource_id)[-1].tolerances


async def _user(client: httpx.AsyncClient, name: str = "bjensen", /, **extra: Any) -> Any:
    payload = user_payload(name, schemas=[USER_SCHEMA, ENTERPRISE, HR], **extra)
    return assert_scim(await client.post("/Users", json=payload), 201)


async def _patch(client: httpx.AsyncClient, user: dict[str, Any], *ops: Any) -> httpx.Response:
    return await client.patch(f"/Users/{user['id']}", json=patch_body(*ops))


async def test_entra_replace_unqualified_manager_with_a_bare_id(
    client: httpx.AsyncClient, db: Database
) -> None:
    manager = await _user(client, "manager")
    user = await _user(client)
    response = await _patch(
        client, user, {"op": "Replace", "path": "manager", "value": manager["id"]}
    )
    assert assert_scim(response, 200)[ENTERPRISE]["manager"]["value"] == manager["id"]
    assert {TOLERANCE, "manager_bare_string", "op_case"} <= set(_tolerances(db, user["id"]))


@pytest.mark.parametrize(
    ("path", "value", "schema", "attribute"),
    [
        ("employeeNumber", "0042", ENTERPRISE, "employeeNumber"),
        ("EmployeeNumber", "0042", ENTERPRISE, "employeeNumber"),
        ("department", "Claims", ENTERPRISE, "department"),
        ("roleCodes", ["BEN_CHOICE_2026"], HR, "roleCodes"),
        ("jobCode", "J7", HR, "jobCode"),
    ],
)
async def test_entra_unqualified_extension_attribute_is_qualified(
    client: httpx.AsyncClient, db: Database, path: str, value: Any, schema: str, attribute: str
) -> None:
    user = await _user(client)
    response = await _patch(client, user, {"op": "add", "path": path, "value": value})
    assert assert_scim(response, 200)[schema][attribute] == value
    assert TOLERANCE in _tolerances(db, user["id"])


async def test_entra_unqualified_sub_attribute_path_and_remove(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await _user(client, **{ENTERPRISE: {"department": "Sales"}})
    response = await _patch(client, user, {"op": "replace", "path": "manager.value", "value": "m1"})
    assert assert_scim(response, 200)[ENTERPRISE]["manager"]["value"] == "m1"
    response = await _patch(client, user, {"op": "remove", "path": "manager"})
    body = assert_scim(response, 200)
    assert "manager" not in body.get(ENTERPRISE, {})
    assert body[ENTERPRISE]["department"] == "Sales"
    assert TOLERANCE in _tolerances(db, user["id"])


async def test_core_attribute_is_not_qualified(client: httpx.AsyncClient, db: Database) -> None:
    user = await _user(client)
    response = await _patch(client, user, {"op": "replace", "path": "title", "value": "Boss"})
    assert assert_scim(response, 200)["title"] == "Boss"
    assert TOLERANCE not in _tolerances(db, user["id"])


async def test_unknown_unqualified_attribute_is_invalid_path_as_before(
    client: httpx.AsyncClient,
) -> None:
    user = await _user(client)
    response = await _patch(client, user, {"op": "replace", "path": "shoeSize", "value": "9"})
    assert assert_scim(response, 400)["scimType"] == "invalidPath"


async def test_the_qualified_attribute_is_bounded_as_its_own(client: httpx.AsyncClient) -> None:
    user = await _user(client)
    response = await _patch(
        client, user, {"op": "replace", "path": "department", "value": "d" * 2049}
    )
    body = assert_scim(response, 400)
    assert body["scimType"] == "invalidValue"
    assert f"{ENTERPRISE}:department" in body["detail"]


async def test_entra_unqualified_path_in_bulk(client: httpx.AsyncClient, db: Database) -> None:
    user = await _user(client)
    bulk = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "PATCH",
                "path": f"/Users/{user['id']}",
                "data": patch_body({"op": "Replace", "path": "costCenter", "value": "CC-9"}),
            }
        ],
    }
    result = assert_scim(await client.post("/Bulk", json=bulk), 200)
    assert result["Operations"][0]["status"] == "200", result
    fetched = assert_scim(await client.get(f"/Users/{user['id']}"), 200)
    assert fetched[ENTERPRISE]["costCenter"] == "CC-9"
    assert TOLERANCE in _tolerances(db, user["id"])


# -- an attribute two extensions define -------------------------------------------------------


@pytest.fixture
def ambiguous_catalog(tmp_path: Path) -> Catalog:
    """The shipped schemas, with the HR extension also defining ``costCenter``."""
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    hr = json.loads((schemas / "hr-user.json").read_text())
    hr["attributes"].append({**hr["attributes"][-1], "name": "costCenter"})
    (schemas / "hr-user.json").write_text(json.dumps(hr))
    return load_catalog(schemas)


@pytest.fixture
async def ambiguous(
    db: Database, ambiguous_catalog: Catalog, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, scim_token=TOKEN, schemas_dir=ROOT / "schemas")
    app = create_app(
        Provisioner(db, ambiguous_catalog),
        ambiguous_catalog,
        settings,
        Authenticator(db, env_token=TOKEN),
    )
    async with app_client(app) as client:
        yield client


async def test_attribute_of_two_extensions_is_invalid_path_naming_both(
    ambiguous: httpx.AsyncClient,
) -> None:
    user = await _user(ambiguous)
    response = await _patch(ambiguous, user, {"op": "replace", "path": "costCenter", "value": "1"})
    body = assert_scim(response, 400)
    assert body["scimType"] == "invalidPath"
    assert ENTERPRISE in body["detail"]
    assert HR in body["detail"]
    qualified = {"op": "replace", "path": f"{HR}:costCenter", "value": "1"}
    assert assert_scim(await _patch(ambiguous, user, qualified), 200)[HR]["costCenter"] == "1"
    response = await _patch(
        ambiguous, user, {"op": "replace", "path": "employeeNumber", "value": "7"}
    )
    assert assert_scim(response, 200)[ENTERPRISE]["employeeNumber"] == "7"


# -- the pure function ------------------------------------------------------------------------


def test_normalize_patch_qualifies_with_the_one_defining_schema(catalog: Catalog) -> None:
    body = patch_body(
        {"op": "replace", "path": "manager", "value": "123"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@x.test"},
        {"op": "replace", "path": "nope", "value": "x"},
        {"op": "replace", "path": f"{HR}:location", "value": "HQ"},
    )
    operations, used = quirks.normalize_patch(body, catalog.model("User"))
    assert [operation["path"] for operation in operations] == [
        f"{ENTERPRISE}:manager",
        'emails[type eq "work"].value',
        "nope",
        f"{HR}:location",
    ]
    assert operations[0]["value"] == {"value": "123"}
    assert {TOLERANCE, "manager_bare_string"} <= set(used)


def test_normalize_patch_refuses_an_ambiguous_name(ambiguous_catalog: Catalog) -> None:
    body = patch_body({"op": "add", "path": "costCenter.x", "value": "1"})
    with pytest.raises(InvalidPathException, match="costCenter"):
        quirks.normalize_patch(body, ambiguous_catalog.model("User"))
