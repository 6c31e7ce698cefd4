"""The change journal: every write appends one row in its own transaction (DESIGN §4)."""

from __future__ import annotations

from typing import Any

import httpx

from bridge.store import journal
from tests.conftest import GROUP_SCHEMA
from tests.conftest import PATCH
from tests.conftest import user_payload


def _entries(db: Any) -> list[journal.Entry]:
    with db.read() as conn:
        return journal.read(conn)


async def test_every_write_is_journalled_with_before_and_after(
    client: httpx.AsyncClient, db: Any
) -> None:
    created = (await client.post("/Users", json=user_payload("dana", title="Clerk"))).json()
    user_id = created["id"]
    await client.patch(
        f"/Users/{user_id}",
        headers={"X-Request-Id": "req-42"},
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "title", "value": "Lead"}],
        },
    )
    group = (
        await client.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "G"})
    ).json()
    await client.patch(
        f"/Groups/{group['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
        },
    )
    await client.delete(f"/Users/{user_id}")
    entries = _entries(db)
    assert [e.op for e in entries] == ["create", "patch", "create", "members", "delete"]
    assert [e.seq for e in entries] == sorted(e.seq for e in entries if e.seq is not None)
    create, patch, _, members, delete = entries
    assert create.after is not None and create.after["title"] == "Clerk"
    assert create.actor == "BRIDGE_SCIM_TOKEN"
    assert patch.before is not None and patch.before["title"] == "Clerk"
    assert patch.after is not None and patch.after["title"] == "Lead"
    assert patch.request_id == "req-42"
    assert members.detail == {"added": [user_id]}
    assert delete.before is not None and delete.before["userName"] == "dana"
    assert delete.detail == {"groups": [group["id"]]}


async def test_a_refused_write_leaves_no_journal_row(client: httpx.AsyncClient, db: Any) -> None:
    await client.post("/Users", json=user_payload("erin"))
    await client.post("/Users", json=user_payload("ERIN"))
    assert [e.op for e in _entries(db)] == ["create"]


async def test_a_write_that_changes_nothing_is_not_journalled(
    client: httpx.AsyncClient, db: Any
) -> None:
    created = (await client.post("/Users", json=user_payload("fay", title="x"))).json()
    await client.patch(
        f"/Users/{created['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]},
    )
    assert [e.op for e in _entries(db)] == ["create"]


async def test_journal_reads_since_a_seq_and_per_resource(
    client: httpx.AsyncClient, db: Any
) -> None:
    first = (await client.post("/Users", json=user_payload("gus"))).json()
    await client.post("/Users", json=user_payload("hal"))
    entries = _entries(db)
    with db.read() as conn:
        since = journal.read(conn, since=entries[0].seq or 0)
        own = journal.read(conn, resource_id=first["id"])
    assert [e.resource_id for e in since] == [entries[1].resource_id]
    assert [e.seq for e in own] == [entries[0].seq]
