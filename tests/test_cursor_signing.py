"""Signed cursors (RFC 9865): the server follows only the cursors it issued, on SQLite and
PostgreSQL.

Unsigned, a cursor whose sort value was of another type, or 10^30, reached the database: a
500. Now a cursor is HMAC-SHA256-signed under BRIDGE_CURSOR_SECRET, else under a random secret
kept in the database (``server_secrets``), so every replica of one database follows the
others' cursors, and anything else is 400 ``invalidCursor``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from scim2_models import InvalidCursorException
from sqlalchemy import delete
from sqlalchemy import select

from bridge.config import Settings
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store.cursors import MAX_CURSOR_LENGTH
from bridge.store.cursors import S
from bridge.store.cursors import cursor_key
from bridge.store.cursors import database_secret
from bridge.store.cursors import fingerprint
from bridge.store.cursors import sign
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.store.resources import ResourceStore
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import user_payload

CAUSE = Cause("test")
USERS = 25


@pytest.fixture
def crowd(provisioner: Provisioner) -> list[str]:
    """25 users, their ids in creation order (the default order of a list)."""
    with provisioner.transaction() as tx:
        return [
            provisioner.create(CAUSE, "User", user_payload(f"user{n:02d}"), conn=tx).record.id
            for n in range(USERS)
        ]


async def listed(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.get("/Users", params={"attributes": "userName", **params})


async def walk(client: httpx.AsyncClient, count: int, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = ""
    for _ in range(USERS + 1):
        body = assert_scim(await listed(client, cursor=cursor, count=count, **params), 200)
        seen += [resource["id"] for resource in body["Resources"]]
        if "nextCursor" not in body:
            return seen
        cursor = body["nextCursor"]
    raise AssertionError("the cursor walk does not end")


async def first_cursor(client: httpx.AsyncClient, **params: Any) -> str:
    body = assert_scim(await listed(client, cursor="", count=10, **params), 200)
    return str(body["nextCursor"])


async def refused(client: httpx.AsyncClient, cursor: str, **params: Any) -> str:
    body = assert_scim(await listed(client, cursor=cursor, count=10, **params), 400)
    assert body["scimType"] == "invalidCursor", body
    return str(body["detail"])


async def test_a_cursor_walk_follows_signed_cursors(
    client: httpx.AsyncClient, crowd: list[str]
) -> None:
    assert await walk(client, 10) == crowd
    payload, mac = (await first_cursor(client)).split(".")
    assert len(mac) == 43  # HMAC-SHA256, base64url without padding
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))[1] > 0


def flip(text: str, index: int) -> str:
    return text[:index] + ("B" if text[index] != "B" else "C") + text[index + 1 :]


def reencoded(cursor: str, change: Any) -> str:
    """The cursor with its payload's values changed and its MAC kept."""
    payload, mac = cursor.split(".")
    values = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw = json.dumps(change(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + mac


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: flip(c, 0),
        lambda c: flip(c, len(c) - 1),
        lambda c: reencoded(c, lambda v: [10**30, v[1], v[2]]),
        lambda c: reencoded(c, lambda v: [[1, 2], v[1], v[2]]),
        lambda c: reencoded(c, lambda v: [v[0], 10**30, v[2]]),
        lambda c: reencoded(c, lambda v: [v[0], v[1] - 1, v[2]]),
        lambda c: c.split(".")[0],  # the payload alone: the unsigned cursors of before
        lambda c: c + "=",
    ],
    ids=[
        "payload-bit",
        "mac-bit",
        "sort-value-10^30",
        "sort-value-list",
        "pk-10^30",
        "pk-moved",
        "no-mac",
        "padded",
    ],
)
async def test_tampered_cursor_is_invalid_cursor(
    client: httpx.AsyncClient, crowd: list[str], tamper: Any
) -> None:
    cursor = await first_cursor(client)
    await refused(client, tamper(cursor))


@pytest.mark.parametrize(
    "garbage",
    [
        "x",
        ".",
        "a.b",
        "abc\x00def",
        "é." + "A" * 43,
        "AAAA." + "A" * 43,
        "A" * (MAX_CURSOR_LENGTH + 1) + "." + "A" * 43,
        "%00",
        " ",
    ],
    ids=[
        "short",
        "dot",
        "two-parts",
        "nul",
        "non-ascii",
        "forged-mac",
        "over-long",
        "pct",
        "space",
    ],
)
async def test_garbage_cursor_is_invalid_cursor(
    client: httpx.AsyncClient, crowd: list[str], garbage: str
) -> None:
    await refused(client, garbage)
    body = assert_scim(await listed(client, cursor=garbage, count=0), 400)
    assert body["scimType"] == "invalidCursor"  # even when no row is asked for


async def test_cursor_of_another_filter_is_invalid_cursor(
    client: httpx.AsyncClient, crowd: list[str]
) -> None:
    cursor = await first_cursor(client, filter='userName sw "user"')
    assert "another query" in await refused(client, cursor, filter='userName sw "use"')
    assert "another query" in await refused(client, cursor)


def app_over(db: Database, catalog: Catalog, url: str) -> httpx.AsyncClient:
    """One more server process over the same database: its own engine and provisioner."""
    settings = Settings(database_url=url, scim_token=TOKEN, schemas_dir=ROOT / "schemas")
    app = create_app(
        Provisioner(db, catalog), catalog, settings, Authenticator(db, env_token=TOKEN)
    )
    return app_client(app)


@pytest.fixture
async def replica(database_url: str, catalog: Catalog) -> AsyncIterator[httpx.AsyncClient]:
    db = connect(database_url)
    async with app_over(db, catalog, database_url) as client:
        yield client
    db.dispose()


async def test_replicas_of_one_database_follow_each_others_cursors(
    client: httpx.AsyncClient, replica: httpx.AsyncClient, crowd: list[str]
) -> None:
    cursor = await first_cursor(client)
    body = assert_scim(await listed(replica, cursor=cursor, count=10), 200)
    assert [r["id"] for r in body["Resources"]] == crowd[10:20]
    body = assert_scim(await listed(client, cursor=body["nextCursor"], count=10), 200)
    assert [r["id"] for r in body["Resources"]] == crowd[20:]


async def test_the_database_secret_is_made_once_and_kept(
    client: httpx.AsyncClient, db: Database, catalog: Catalog, database_url: str, crowd: list[str]
) -> None:
    cursor = await first_cursor(client)
    with db.read() as conn:
        secret = conn.execute(select(S.c.secret)).scalar_one()
    assert len(secret) == 64
    with db.write() as conn:
        conn.execute(delete(S))
    # A new secret (as after a restore without the row): old cursors are refused, new ones
    # followed, and every process agrees on the new secret.
    async with app_over(db, catalog, database_url) as restarted:
        await refused(restarted, cursor)
        assert await walk(restarted, 10) == crowd
        with db.read() as conn:
            made = conn.execute(select(S.c.secret)).scalars().all()
        assert len(made) == 1 and made[0] != secret
    with db.read() as conn, db.read() as other:
        assert database_secret(conn) == database_secret(other) == made[0]


async def test_the_longest_sort_value_makes_a_cursor_the_server_follows(
    client: httpx.AsyncClient,
) -> None:
    """A 2,048-character title that JSON escapes into six characters a character: the
    largest cursor a page can end on stays under MAX_CURSOR_LENGTH and is followed."""
    for index in range(3):
        title = f"{index}" + "\x1f" * 2047
        user = user_payload(f"user{index}", title=title)
        assert_scim(await client.post("/Users", json=user), 201)
    body = assert_scim(await listed(client, cursor="", count=1, sortBy="title"), 200)
    cursor = body["nextCursor"]
    assert 16_000 < len(cursor) <= MAX_CURSOR_LENGTH
    body = assert_scim(
        await client.post(
            "/Users/.search",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "attributes": ["userName"],
                "sortBy": "title",
                "cursor": cursor,
                "count": 1,
            },
        ),
        200,
    )
    assert [r["userName"] for r in body["Resources"]] == ["user1"]


def store(catalog: Catalog, db: Database, secret: str | None) -> ResourceStore:
    return ResourceStore(
        {"User": catalog.user, "Group": catalog.group}, db.dialect, cursor_secret=secret
    )


def test_bridge_cursor_secret_signs_the_cursors(
    db: Database, catalog: Catalog, crowd: list[str]
) -> None:
    """BRIDGE_CURSOR_SECRET (``cursor_secret``): the stores sharing it follow each other's
    cursors; a store under another secret, or the database's, refuses them."""
    signed, same, other, database = (
        store(catalog, db, secret) for secret in ("s3cret", "s3cret", "other", None)
    )
    with db.read() as conn:
        cursor = signed.search(conn, ["User"], None, count=10, cursor="", use_cursor=True)
        assert cursor.next_cursor is not None
        page = same.search(conn, ["User"], None, count=10, cursor=cursor.next_cursor)
        assert [record.id for record in page.records] == crowd[10:20]
        for refusing in (other, database):
            with pytest.raises(InvalidCursorException):
                refusing.search(conn, ["User"], None, count=10, cursor=cursor.next_cursor)


@pytest.mark.parametrize(
    "values",
    [[10**30, 1], [[1, 2], 1], ["x", 10**30], ["x", True], ["x", "1"], [{"datetime": "no"}, 1]],
    ids=["sort-10^30", "sort-list", "pk-10^30", "pk-bool", "pk-string", "bad-datetime"],
)
def test_a_cursor_signed_with_the_secret_still_holds_only_rows(
    db: Database, catalog: Catalog, values: list[Any]
) -> None:
    """Whoever holds the secret can sign anything: what the cursor holds is checked all the
    same, so that no value the database cannot bind reaches it."""
    forged = sign([*values, fingerprint(["User"], None, None, False)], cursor_key("s3cret"))
    with db.read() as conn, pytest.raises(InvalidCursorException, match="holds no row"):
        store(catalog, db, "s3cret").search(conn, ["User"], None, count=10, cursor=forged)
