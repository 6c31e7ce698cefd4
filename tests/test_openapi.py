"""The OpenAPI 3.1 document at ``/scim/v2/openapi.json``: valid, complete, and true of the server.

Real responses of the running app, on each database, are validated against the schemas the
document gives for their path, method and status; a response attribute the document does not
name fails too (its objects are read as closed). So a change of the server or of the schema
files that the document does not follow fails here.
"""

from __future__ import annotations

import re
from datetime import UTC
from datetime import datetime
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.routing import Route

from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.config import Settings
from bridge.schemas import Catalog
from bridge.scim.app import ENDPOINTS
from bridge.scim.openapi import document
from bridge.store import tokens
from bridge.store.engine import Database
from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import USER_SCHEMA
from tests.conftest import patch_body
from tests.conftest import user_payload

PREFIX = "/scim/v2"
DOCUMENT_URI = "urn:bridge:openapi"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
METHODS = ("get", "put", "post", "delete", "patch")


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _closed(node: Any) -> Any:
    """``node`` with every object schema that does not say otherwise closed to other members."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
        out["unevaluatedProperties"] = False
    return out


class Spec:
    """The served document, and a client whose every answer must be documented."""

    def __init__(self, client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
        self.client = client
        self.doc = doc
        resource = DRAFT202012.create_resource(_closed(doc))
        self.registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)

    async def call(
        self, method: str, template: str, status: int, *, path: str | None = None, **kw: Any
    ) -> Any:
        """``method`` on ``path`` (``template`` by default): ``status``, as documented."""
        response = await self.client.request(method, path or template, **kw)
        assert response.status_code == status, response.text
        self.check(response, method.lower(), template)
        return response.json() if response.content else None

    def check(self, response: httpx.Response, method: str, template: str) -> None:
        documented = self.doc["paths"][template][method]["responses"]
        status = str(response.status_code)
        assert status in documented, f"{method} {template} answered an undocumented {status}"
        answer = documented[status]
        where = _pointer("paths", template, method, "responses", status)
        if "$ref" in answer:
            where = answer["$ref"].removeprefix("#")
            answer = self.resolve(answer["$ref"])
        for header in answer.get("headers", {}):
            assert header in response.headers, f"{method} {template} {status} without {header}"
        content = answer.get("content")
        if content is None:
            assert not response.content
            return
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in content, f"{method} {template} {status} answered {media}"
        schema = {"$ref": DOCUMENT_URI + "#" + where + _pointer("content", media, "schema")}
        Draft202012Validator(schema, registry=self.registry).validate(response.json())

    def resolve(self, ref: str) -> Any:
        node: Any = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> Spec:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return Spec(client, response.json())


def _served_paths(app: Starlette) -> set[str]:
    """The paths of the app's SCIM routes, as the document writes them."""
    paths = set()
    for route in app.routes:
        assert isinstance(route, Route)
        if not route.path.startswith(PREFIX + "/") or "{rest:path}" in route.path:
            continue
        for endpoint in ENDPOINTS:  # {endpoint:resource} matches users and groups in any case
            path = route.path.removeprefix(PREFIX).replace("{endpoint:resource}", endpoint.title())
            paths.add(re.sub(r"\{(\w+):\w+\}", r"{\1}", path))
    return paths


def _example(template: str) -> str:
    return template.replace("{id}", "some-id").replace("{name}", "User")


# -- the document itself ----------------------------------------------------------------------


async def test_served_document_is_valid_openapi_3_1(spec: Spec) -> None:
    validate(spec.doc)
    assert spec.doc["openapi"] == "3.1.0"
    assert spec.doc["servers"] == [{"url": "http://bridge.test/scim/v2"}]


async def test_every_scim_route_is_documented_and_every_documented_path_served(
    app: Starlette, spec: Spec
) -> None:
    assert set(spec.doc["paths"]) == _served_paths(app)
    for template, item in spec.doc["paths"].items():
        # Every route answers a method it does not handle with 405 and the ones it does.
        response = await spec.client.options(_example(template))
        assert response.status_code == 405, template
        allowed = set(response.headers["allow"].lower().split(", "))
        assert allowed == {method for method in METHODS if method in item}, template


async def test_documented_scopes_are_the_enforced_scopes(
    app: Starlette, spec: Spec, db: Database
) -> None:
    reader = "brg_test_openapi_reader_0123456789"
    with db.write() as conn:
        tokens.create(conn, "reader", reader, frozenset({READ}), datetime.now(UTC))
    headers = {"Authorization": f"Bearer {reader}"}
    for template, item in spec.doc["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            (scope,) = item[method]["security"][0]["bearer"]
            response = await spec.client.request(
                method, _example(template), headers=headers, json={}
            )
            assert (response.status_code == 403) == (scope == WRITE), (method, template)


def test_schemas_and_limits_follow_the_catalog_and_settings(catalog: Catalog) -> None:
    settings = Settings(
        max_page_size=50,
        max_bulk_operations=7,
        max_string_length=100,
        max_filter_length=300,
    )
    doc = document(catalog, settings, "https://idp.example/scim/v2")
    schemas = doc["components"]["schemas"]
    user, group = schemas["User"], schemas["Group"]
    assert user["required"] == ["schemas", "userName"]
    assert group["required"] == ["schemas", "displayName"]
    assert user["properties"]["userName"]["maxLength"] == 512
    assert user["properties"]["externalId"]["maxLength"] == 255
    assert group["properties"]["displayName"]["maxLength"] == 512
    assert user["properties"]["nickName"]["maxLength"] == 100
    assert user["properties"]["id"]["readOnly"] is True
    assert user["properties"]["meta"]["readOnly"] is True
    assert user["properties"]["groups"]["readOnly"] is True
    assert user["properties"]["password"]["writeOnly"] is True
    assert user["properties"]["active"]["type"] == "boolean"
    assert user["properties"]["meta"]["properties"]["created"]["format"] == "date-time"
    emails = user["properties"]["emails"]
    assert emails["type"] == "array"
    assert emails["items"]["properties"]["type"]["examples"] == ["work", "home", "other"]
    assert "enum" not in emails["items"]["properties"]["type"]
    assert user["properties"][ENTERPRISE] == {"$ref": "#/components/schemas/EnterpriseUser"}
    hr = schemas[user["properties"][HR]["$ref"].rsplit("/", 1)[1]]
    assert hr["properties"]["roleCodes"]["items"]["type"] == "string"
    assert hr["properties"]["hireDate"]["format"] == "date-time"
    assert hr["properties"]["benefitsEligible"]["type"] == "boolean"
    parameters = doc["components"]["parameters"]
    assert parameters["count"]["schema"]["maximum"] == 50
    assert parameters["startIndex"]["schema"]["maximum"] == 2**31 - 1
    assert parameters["filter"]["schema"]["maxLength"] == 300
    assert schemas["SearchRequest"]["properties"]["count"]["maximum"] == 50
    assert schemas["BulkRequest"]["properties"]["Operations"]["maxItems"] == 7
    assert "uniqueness" in schemas["Error"]["properties"]["scimType"]["enum"]
    validate(doc)


# -- real responses, as documented -------------------------------------------------------------


async def test_resource_responses_follow_the_document(spec: Spec) -> None:
    employee = user_payload(
        "bjensen@example.com",
        externalId="E00001",
        name={"givenName": "Barbara", "familyName": "Jensen"},
        emails=[{"value": "bjensen@example.com", "type": "work", "primary": True}],
        active=True,
        **{
            "schemas": [USER_SCHEMA, ENTERPRISE, HR],
            ENTERPRISE: {"department": "Claims", "manager": {"value": "M1"}},
            HR: {"roleCodes": ["BEN_2026"], "hireDate": "2024-03-01T00:00:00Z"},
        },
    )
    user = await spec.call("POST", "/Users", 201, json=employee)
    one = f"/Users/{user['id']}"
    await spec.call("POST", "/Users", 201, json=user_payload("ajensen@example.com"))
    group = await spec.call(
        "POST",
        "/Groups",
        201,
        json={
            "schemas": [GROUP_SCHEMA],
            "displayName": "Claims",
            "members": [{"value": user["id"]}],
        },
    )
    await spec.call("GET", "/Users/{id}", 200, path=one)
    await spec.call(
        "GET", "/Users/{id}", 304, path=one, headers={"If-None-Match": user["meta"]["version"]}
    )
    await spec.call("GET", "/Groups/{id}", 200, path=f"/Groups/{group['id']}")
    page = await spec.call("GET", "/Users", 200, path="/Users?count=1&cursor=")
    assert page["nextCursor"]
    await spec.call("GET", "/Users", 200, path='/Users?filter=userName sw "b"&startIndex=1')
    patched = await spec.call(
        "PATCH",
        "/Users/{id}",
        200,
        path=one,
        json=patch_body({"op": "replace", "path": "active", "value": False}),
    )
    await spec.call("PUT", "/Users/{id}", 200, path=one, json={**employee, "displayName": "Babs"})
    await spec.call(
        "PATCH",
        "/Groups/{id}",
        204,
        path=f"/Groups/{group['id']}",
        json=patch_body({"op": "replace", "path": "displayName", "value": "Claims team"}),
    )
    await spec.call(
        "PATCH",
        "/Groups/{id}",
        200,
        path=f"/Groups/{group['id']}?attributes=displayName",
        json=patch_body({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    search = {"schemas": [SEARCH], "filter": 'displayName eq "Claims team"', "count": 10}
    await spec.call("POST", "/.search", 200, json=search)
    await spec.call("POST", "/Groups/.search", 200, json=search)
    await spec.call("POST", "/Users/.search", 200, json={"schemas": [SEARCH], "sortBy": "userName"})
    await spec.call(
        "PUT",
        "/Users/{id}",
        412,
        path=one,
        json=employee,
        headers={"If-Match": patched["meta"]["version"]},
    )
    bulk = await spec.call(
        "POST",
        "/Bulk",
        200,
        json={
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "c1",
                    "data": user_payload("cjensen@example.com"),
                },
                {"method": "POST", "path": "/Users", "data": user_payload("cjensen@example.com")},
                {"method": "DELETE", "path": "/Users/bulkId:c1"},
            ],
        },
    )
    assert [op["status"] for op in bulk["Operations"]] == ["201", "409", "204"]
    await spec.call("DELETE", "/Users/{id}", 204, path=one)


async def test_error_responses_follow_the_document(spec: Spec) -> None:
    await spec.call("POST", "/Users", 201, json=user_payload("bjensen"))
    conflict = await spec.call("POST", "/Users", 409, json=user_payload("bjensen"))
    assert conflict["scimType"] == "uniqueness"
    await spec.call("GET", "/Users/{id}", 404, path="/Users/missing")
    invalid = await spec.call("GET", "/Users", 400, path="/Users?filter=userName eq")
    assert invalid["scimType"] == "invalidFilter"
    await spec.call("POST", "/Users", 400, json={"schemas": [USER_SCHEMA]})
    await spec.call("GET", "/Me", 501)
    await spec.call("GET", "/Schemas/{id}", 404, path="/Schemas/urn:nothing")
    anonymous = await spec.client.get("/Users", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    spec.check(anonymous, "get", "/Users")


async def test_discovery_responses_follow_the_document(spec: Spec) -> None:
    await spec.call("GET", "/ServiceProviderConfig", 200)
    types = await spec.call("GET", "/ResourceTypes", 200)
    for resource_type in types["Resources"]:
        await spec.call(
            "GET", "/ResourceTypes/{name}", 200, path=f"/ResourceTypes/{resource_type['name']}"
        )
    schemas = await spec.call("GET", "/Schemas", 200)
    for schema in schemas["Resources"]:
        await spec.call("GET", "/Schemas/{id}", 200, path=f"/Schemas/{schema['id']}")
    await spec.call("GET", "/openapi.json", 200)
