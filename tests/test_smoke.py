"""The server answers on both databases: create, read back, health."""

from __future__ import annotations

import httpx

from tests.conftest import user_payload


async def test_create_then_get_user(client: httpx.AsyncClient) -> None:
    created = await client.post("/Users", json=user_payload("bjensen", externalId="E1"))
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/scim+json"
    fetched = await client.get(f"/Users/{created.json()['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["userName"] == "bjensen"
    assert fetched.json()["externalId"] == "E1"
    assert fetched.headers["etag"] == created.headers["etag"]


async def test_healthz(app) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/healthz")
    assert response.status_code == 200
