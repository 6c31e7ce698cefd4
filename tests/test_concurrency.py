"""Uniqueness and membership under concurrent requests, enforced by the database (RFC 7644 §3.3)."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import GROUP_SCHEMA
from tests.conftest import PATCH
from tests.conftest import user_payload


async def test_100_parallel_creates_of_one_user_name_make_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(client.post("/Users", json=user_payload("Same.Person@Example.com")) for i in range(100))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(409) == 99, statuses
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["scimType"] == "uniqueness"
    assert conflict["status"] == "409"
    listed = await client.get("/Users", params={"filter": 'userName eq "same.person@example.com"'})
    assert listed.json()["totalResults"] == 1


async def test_parallel_creates_differing_only_in_case_are_one_user(
    client: httpx.AsyncClient,
) -> None:
    names = ["jane@example.com", "JANE@example.com", "Jane@Example.Com", "jAnE@EXAMPLE.COM"] * 5
    responses = await asyncio.gather(*(client.post("/Users", json=user_payload(n)) for n in names))
    assert [r.status_code for r in responses].count(201) == 1


async def test_parallel_creates_of_one_external_id_make_exactly_one(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/Users", json=user_payload(f"user{i}", externalId="E12345"))
            for i in range(40)
        )
    )
    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 1
    assert statuses.count(409) == 39


async def test_100_parallel_member_adds_to_one_group_lose_nothing(
    client: httpx.AsyncClient,
) -> None:
    users = await asyncio.gather(
        *(client.post("/Users", json=user_payload(f"member{i}")) for i in range(100))
    )
    ids = [u.json()["id"] for u in users]
    group = await client.post(
        "/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Benefits 2026"}
    )
    group_id = group.json()["id"]
    responses = await asyncio.gather(
        *(
            client.patch(
                f"/Groups/{group_id}",
                json={
                    "schemas": [PATCH],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": i}]}],
                },
            )
            for i in ids
        )
    )
    assert {r.status_code for r in responses} == {204}
    fetched = (await client.get(f"/Groups/{group_id}")).json()
    assert sorted(m["value"] for m in fetched["members"]) == sorted(ids)
    assert fetched["meta"]["version"] == 'W/"101"'
