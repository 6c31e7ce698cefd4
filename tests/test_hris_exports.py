"""``POST /hris/v1/exports/{feed}``: a full export uploaded by the HRIS, signed like its
webhooks, streamed to disk, surveyed (the truncation guard) before the answer, then applied
through the Provisioner in the background. Through the real ASGI app on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.scim.hris import HrisIntake
from bridge.store import schedule_runs
from bridge.store.engine import Database
from tests.conftest import NOW
from tests.conftest import TOKEN
from tests.test_sync import HEADER
from tests.test_sync import row
from tests.test_sync import user
from tests.test_webhooks import sha256_headers
from tests.test_webhooks import standard_headers

SECRET = "the workday feed's secret"


def csv(*numbers: int) -> bytes:
    return ("\n".join([HEADER, *(row(n) for n in numbers)]) + "\n").encode()


@pytest.fixture
async def http(
    feed_rules: Path, db: Database, catalog: Catalog, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    book = RuleBook(feed_rules, lambda d: check_directory(d, catalog))
    book.load()
    ruled = Provisioner(db, catalog, rules=book.current, clock=lambda: NOW)
    env = {"HRIS_WEBHOOK_SECRET": SECRET}
    authenticate = Authenticator(db, env_token=TOKEN)
    intake = HrisIntake(
        ruled, settings, env, clock=NOW.timestamp, now=lambda: NOW, authenticate=authenticate
    )
    app = create_app(ruled, catalog, settings, authenticate, hris=intake)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as client:
        yield client


async def upload(http: httpx.AsyncClient, body: bytes, upload_id: str, **headers: Any) -> Any:
    signed = headers or standard_headers(body, upload_id, SECRET)
    return await http.post("/hris/v1/exports/workday", content=body, headers=signed)


async def applied(db: Database, count: int) -> list[dict[str, Any]]:
    """The sync runs, once ``count`` of them are settled (the upload applies in background)."""
    for _ in range(200):
        with db.read() as conn:
            found = [
                r
                for r in schedule_runs.plan_runs(conn, limit=50)
                if r["kind"] == "sync" and r["status"] != "running"
            ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("the uploaded export was not applied")


async def test_a_signed_export_is_surveyed_answered_and_applied(
    http: httpx.AsyncClient, db: Database
) -> None:
    answer = await upload(http, csv(1, 2, 3, 4, 5), "up_1")
    assert answer.status_code == 202, answer.text
    document = answer.json()
    assert (document["status"], document["feed"]) == ("accepted", "workday")
    assert document["planned"]["create"] == 5
    [run] = await applied(db, 1)
    assert run["status"] == "applied" and run["summary"]["create"] == 5
    assert run["summary"]["actor"] == "hris:workday"
    assert user(db, "E0003")["userName"] == "person3@example.com"


async def test_forged_or_unsigned_uploads_are_refused_and_nothing_written(
    http: httpx.AsyncClient, db: Database
) -> None:
    body = csv(1, 2)
    forged = standard_headers(body, "up_2", "not the secret")
    answer = await upload(http, body, "up_2", **forged)
    assert answer.status_code == 401 and answer.json()["error"] == "forged"
    bare = await http.post("/hris/v1/exports/workday", content=body)
    assert bare.status_code == 401 and "missing header" in bare.json()["reason"]
    unsigned = dict(standard_headers(body, "up_2", SECRET))
    del unsigned["webhook-signature"]
    answer = await upload(http, body, "up_2", **unsigned)
    assert (answer.status_code, answer.json()["reason"]) == (
        401,
        "missing header webhook-signature",
    )
    wrong_scheme = sha256_headers(body, SECRET)  # the workday feed signs the Standard way
    assert (await upload(http, body, "up_3", **wrong_scheme)).status_code == 401
    missing = await http.post("/hris/v1/exports/nosuch", content=body)
    assert missing.status_code == 404
    with db.read() as conn:
        assert [r for r in schedule_runs.plan_runs(conn, limit=10) if r["kind"] == "sync"] == []


async def test_a_truncated_upload_is_refused_before_anything_is_written(
    http: httpx.AsyncClient, db: Database
) -> None:
    assert (await upload(http, csv(*range(1, 21)), "up_full")).status_code == 202
    await applied(db, 1)
    answer = await upload(http, csv(1, 2), "up_short")  # 2 of 20 people: under 90 %
    assert answer.status_code == 422, answer.text
    refused = answer.json()
    assert refused["error"] == "refused" and "20" in refused["reason"]
    with db.read() as conn:
        syncs = [r for r in schedule_runs.plan_runs(conn, limit=10) if r["kind"] == "sync"]
    assert len(syncs) == 1  # nothing more was run
    assert user(db, "E0020")["active"] is True


async def test_an_upload_may_carry_a_bridge_token_with_the_write_scope_instead_of_a_signature(
    http: httpx.AsyncClient, db: Database
) -> None:
    from bridge.auth.tokens import parse_scopes
    from bridge.store import tokens
    from bridge.store import webhook_refusals

    with db.write() as conn:
        tokens.create(conn, "transfer-job", "brg_transfer", parse_scopes("write"), NOW)
        tokens.create(conn, "auditor", "brg_auditor", parse_scopes("read"), NOW)
    body = csv(1, 2, 3)
    url = "/hris/v1/exports/workday"
    reader = await http.post(url, content=body, headers={"Authorization": "Bearer brg_auditor"})
    assert reader.status_code == 403 and "scim:write" in reader.json()["reason"]
    unknown = await http.post(url, content=body, headers={"Authorization": "Bearer brg_nope"})
    assert unknown.status_code == 401
    answer = await http.post(url, content=body, headers={"Authorization": "Bearer brg_transfer"})
    assert answer.status_code == 202, answer.text
    [run] = await applied(db, 1)
    assert run["status"] == "applied" and run["summary"]["actor"] == "transfer-job"
    with db.read() as conn:
        counted = {r["error"]: r["count"] for r in webhook_refusals.of_feed(conn, "workday")}
    assert counted == {"forbidden": 1, "unknown token": 1}
