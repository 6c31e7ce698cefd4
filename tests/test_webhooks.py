"""HR webhooks (``POST /hris/v1/events/{feed}``): Standard Webhooks and the guide's
``X-Signature: sha256=`` verified before anything is stored, durably queued and deduplicated,
then applied through the Provisioner (journal, the shipped rules, outbox) in event order.

Through the real ASGI app on SQLite and PostgreSQL; the HRIS API a thin event is completed
from is an ``httpx.MockTransport`` stand-in.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bridge.cli.serving import build_app
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.events import EventApplier
from bridge.provision.events import merged
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.feeds import Feed
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.scim.hris import HrisIntake
from bridge.scim.hris import Refused
from bridge.scim.hris import secret_key
from bridge.scim.hris import verify
from bridge.store import journal
from bridge.store import webhook_events
from bridge.store.engine import Database
from bridge.store.outbox import OUTBOX
from bridge.targets.hris_fetch import HrisFetcher
from tests.conftest import ENTERPRISE
from tests.conftest import HR
from tests.conftest import NOW
from tests.conftest import TOKEN
from tests.conftest import queued
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.pilots import uncapped

SECRET = "whsec_" + base64.b64encode(b"the current secret of the feed!!").decode()
PREVIOUS = "an older secret, kept during rotation"
GUIDE_SECRET = "the guide feed's shared secret"
ENV = {
    "HRIS_SECRET": SECRET,
    "HRIS_SECRET_PREVIOUS": PREVIOUS,
    "GUIDE_SECRET": GUIDE_SECRET,
    "HRIS_TOKEN": "hris-api-token",
}
MAPPING = """\
    mapping:
      externalId: {from: externalId, required: true}
      userName: {from: email, transforms: [trim, lower], required: true}
      emails.work: {from: email, transforms: [trim, lower]}
      name.givenName: {from: first_name}
      department: {from: department}
      roleCodes: {from: role_codes, transforms: [{split: ";"}]}
"""
FEEDS = f"""\
feeds:
  workday:
    signature: standard-webhooks
    secrets: [env:HRIS_SECRET, env:HRIS_SECRET_PREVIOUS]
    tolerance: 5m
    fetch: {{url: "https://hris.example.com/api/workers/{{externalId}}", token: env:HRIS_TOKEN}}
{MAPPING}
  guide:
    signature: sha256
    secrets: [env:GUIDE_SECRET]
{MAPPING}
  unset:
    signature: sha256
    secrets: [env:NOT_SET_ANYWHERE]
{MAPPING}
"""
T0 = "2026-11-01T08:00:00Z"
T1 = "2026-11-01T08:30:00Z"
T2 = "2026-11-01T09:00:00Z"
WORKERS = {
    "E777": {
        "externalId": "E777",
        "email": "Thin.Person@Example.com",
        "first_name": "Thin",
        "department": "Claims",
        "role_codes": "BEN_CHOICE_2026;EMPLOYEE",
    }
}


def event(
    event_id: str,
    kind: str = "user.create",
    when: str = T0,
    **data: Any,
) -> dict[str, Any]:
    """The guide's payload for E12345 (a Claims employee holding BEN_CHOICE_2026)."""
    record = {
        "externalId": "E12345",
        "email": "j.smith@example.com",
        "first_name": "Jane",
        "department": "Claims",
        "role_codes": ["BEN_CHOICE_2026"],
    }
    record.update(data)
    return {"id": event_id, "event": kind, "timestamp": when, "data": record}


def standard_headers(
    body: bytes, webhook_id: str, secret: str = SECRET, *, skew: int = 0
) -> dict[str, str]:
    """Standard Webhooks headers, signed as the spec says (not with the bridge's code)."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    stamp = str(int(NOW.timestamp()) + skew)
    digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{base64.b64encode(digest).decode()}",
        "content-type": "application/json",
    }


def sha256_headers(body: bytes, secret: str = GUIDE_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Signature": f"sha256={digest}", "content-type": "application/json"}


def fake_hris(seen: list[httpx.Request], outage: list[int]) -> httpx.MockTransport:
    """The HRIS API: a worker's record by id, behind a bearer token; 503 while ``outage[0]``
    answers remain."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if outage[0] > 0:
            outage[0] -= 1
            return httpx.Response(503)
        if request.headers.get("authorization") != f"Bearer {ENV['HRIS_TOKEN']}":
            return httpx.Response(401)
        worker = WORKERS.get(request.url.path.rsplit("/", 1)[-1])
        return httpx.Response(200, json={"data": worker}) if worker else httpx.Response(404)

    return httpx.MockTransport(answer)


def intents(db: Database) -> list[dict[str, Any]]:
    """Every outbox intent, whatever its status."""
    with db.read() as conn:
        return [dict(row.intent) for row in conn.execute(select(OUTBOX.c.intent))]


@dataclass
class Bridge:
    http: httpx.AsyncClient
    applier: EventApplier
    db: Database
    hris_requests: list[httpx.Request]
    outage: list[int]
    clock: list[datetime]

    async def post(
        self, feed: str, payload: dict[str, Any], headers: Mapping[str, str]
    ) -> httpx.Response:
        body = json.dumps(payload).encode()
        return await self.http.post(f"/hris/v1/events/{feed}", content=body, headers=headers)

    async def send(self, payload: dict[str, Any], **signing: Any) -> httpx.Response:
        body = json.dumps(payload).encode()
        headers = standard_headers(body, payload["id"], **signing)
        return await self.http.post("/hris/v1/events/workday", content=body, headers=headers)

    def events(self) -> list[webhook_events.Event]:
        with self.db.read() as conn:
            found = [e for s in webhook_events.STATES for e in webhook_events.of_state(conn, s)]
        return sorted(found, key=lambda e: e.id)

    async def user(self, external_id: str = "E12345") -> dict[str, Any]:
        found = await self.http.get(
            "/scim/v2/Users",
            params={"filter": f'externalId eq "{external_id}"'},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        resources = found.json()["Resources"]
        assert len(resources) == 1, found.text
        return dict(resources[0])


@pytest.fixture
def hr_rules(tmp_path: Path) -> Path:
    rules = uncapped(shipped_rules(tmp_path))
    (rules / "feeds.yaml").write_text(FEEDS)
    return rules


@pytest.fixture
async def bridge(
    hr_rules: Path, db: Database, catalog: Catalog, settings: Settings
) -> AsyncIterator[Bridge]:
    book = RuleBook(hr_rules, lambda d: check_directory(d, catalog))
    book.load()
    ruled = Provisioner(db, catalog, rules=book.current, clock=lambda: NOW)
    seen: list[httpx.Request] = []
    outage = [0]
    clock = [NOW]

    def feeds() -> Mapping[str, Feed]:
        ruleset = book.current()
        assert ruleset is not None
        return ruleset.feeds

    async with httpx.AsyncClient(transport=fake_hris(seen, outage)) as hris_client:
        applier = EventApplier(
            ruled, feeds, fetcher=HrisFetcher(hris_client, ENV), clock=lambda: clock[0]
        )
        intake = HrisIntake(ruled, settings, ENV, clock=NOW.timestamp, now=lambda: NOW)
        app = create_app(ruled, catalog, settings, Authenticator(db, env_token=TOKEN), hris=intake)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as http:
            yield Bridge(http, applier, db, seen, outage, clock)


# -- intake: verified, queued, deduplicated ------------------------------------------------------


async def test_standard_webhooks_event_is_queued_then_applied_through_the_rules(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await bridge.send(event("wh_98765"))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"status": "queued", "id": "wh_98765"}
    [stored] = bridge.events()
    assert (stored.state, stored.event_type, stored.external_id) == (
        "queued",
        "user.create",
        "E12345",
    )

    with caplog.at_level(logging.INFO, logger="bridge.hris"):
        assert await bridge.applier.drain() == 1
    user = await bridge.user()
    assert user["userName"] == "j.smith@example.com"
    assert user["emails"][0]["value"] == "j.smith@example.com"
    assert user["name"]["givenName"] == "Jane"
    assert user[ENTERPRISE]["department"] == "Claims"
    assert user[HR]["roleCodes"] == ["BEN_CHOICE_2026"]
    assert user["active"] is True
    [applied] = bridge.events()
    assert applied.state == "applied" and applied.journal_seq is not None
    with bridge.db.read() as conn:
        [entry] = journal.read(conn, resource_id=user["id"])
    assert (entry.op, entry.actor, entry.request_id, entry.seq) == (
        "create",
        "hris:workday",
        "wh_98765",
        applied.journal_seq,
    )
    [line] = [r for r in caplog.records if "wh_98765" in r.getMessage()]
    assert (line.request_id, line.journal_seq) == ("wh_98765", applied.journal_seq)  # type: ignore[attr-defined]
    kinds = {i["kind"] for i in queued(bridge.db) if i["person"] == user["id"]}
    assert {"upsert_account", "enrol"} <= kinds


async def test_guide_sha256_event_is_applied(bridge: Bridge) -> None:
    payload = event("wh_guide_1")
    body = json.dumps(payload).encode()
    answer = await bridge.http.post(
        "/hris/v1/events/guide", content=body, headers=sha256_headers(body)
    )
    assert answer.status_code == 202, answer.text
    await bridge.applier.drain()
    assert (await bridge.user())[HR]["roleCodes"] == ["BEN_CHOICE_2026"]
    assert bridge.events()[0].state == "applied"


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        ("webhook-id", "missing header webhook-id"),
        ("webhook-timestamp", "missing header webhook-timestamp"),
        ("webhook-signature", "missing header webhook-signature"),
    ],
)
async def test_unsigned_event_is_refused_and_nothing_stored(
    bridge: Bridge, drop: str, reason: str
) -> None:
    payload = event("wh_unsigned")
    headers = standard_headers(json.dumps(payload).encode(), "wh_unsigned")
    del headers[drop]
    answer = await bridge.post("workday", payload, headers)
    assert answer.status_code == 401
    assert answer.json()["reason"] == reason
    assert bridge.events() == []


async def test_forged_event_is_refused_with_a_warning(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    payload = event("wh_forged")
    headers = standard_headers(json.dumps(payload).encode(), "wh_forged")
    tampered = event("wh_forged", department="Executive")  # the body changed after signing
    with caplog.at_level(logging.WARNING, logger="bridge.hris"):
        answer = await bridge.post("workday", tampered, headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "forged"
    assert "bad signature" in answer.json()["reason"]
    assert bridge.events() == []
    assert any("workday" in r.message and "wh_forged" in r.message for r in caplog.records)


async def test_stale_event_is_refused(bridge: Bridge) -> None:
    answer = await bridge.send(event("wh_stale"), skew=-301)
    assert answer.status_code == 401
    assert answer.json()["reason"].startswith("timestamp outside tolerance")
    assert (await bridge.send(event("wh_late_ok"), skew=-299)).status_code == 202
    assert [e.event_id for e in bridge.events()] == ["wh_late_ok"]


async def test_guide_sha256_without_or_with_a_wrong_header_is_refused(bridge: Bridge) -> None:
    payload = event("wh_guide_2")
    body = json.dumps(payload).encode()
    missing = await bridge.post("guide", payload, {"content-type": "application/json"})
    assert (missing.status_code, missing.json()["reason"]) == (401, "missing header x-signature")
    wrong = await bridge.post("guide", payload, sha256_headers(body, secret="not the secret"))
    assert wrong.status_code == 401
    # The body cannot sign itself: a signature inside the payload is no signature.
    signed_inside = {**payload, "signature": sha256_headers(body)["X-Signature"]}
    inside = await bridge.post("guide", signed_inside, {"content-type": "application/json"})
    assert inside.status_code == 401
    assert bridge.events() == []


async def test_replayed_event_is_a_duplicate_even_after_a_restart(
    bridge: Bridge, db: Database, catalog: Catalog, settings: Settings
) -> None:
    assert (await bridge.send(event("wh_once"))).status_code == 202
    again = await bridge.send(event("wh_once"))
    assert (again.status_code, again.json()) == (200, {"status": "duplicate", "id": "wh_once"})
    await bridge.applier.drain()
    # A new process on the same database: the dedup is the table, not memory.
    restarted = HrisIntake(bridge.applier.provisioner, settings, ENV, clock=NOW.timestamp)
    app = create_app(
        bridge.applier.provisioner,
        catalog,
        settings,
        Authenticator(db, env_token=TOKEN),
        hris=restarted,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bridge.test"
    ) as http:
        body = json.dumps(event("wh_once")).encode()
        later = await http.post(
            "/hris/v1/events/workday", content=body, headers=standard_headers(body, "wh_once")
        )
    assert later.json()["status"] == "duplicate"
    assert [(e.event_id, e.state) for e in bridge.events()] == [("wh_once", "applied")]


async def test_secret_rotation_accepts_the_previous_secret_only(bridge: Bridge) -> None:
    assert (await bridge.send(event("wh_prev"), secret=PREVIOUS)).status_code == 202
    unlisted = await bridge.send(event("wh_unlisted"), secret="a secret no feed lists")
    assert unlisted.status_code == 401
    assert [e.event_id for e in bridge.events()] == ["wh_prev"]


async def test_feed_without_a_secret_set_is_503_and_unknown_feed_404(bridge: Bridge) -> None:
    payload = event("wh_x")
    body = json.dumps(payload).encode()
    unset = await bridge.post("unset", payload, sha256_headers(body))
    assert unset.status_code == 503
    assert "NOT_SET_ANYWHERE" in unset.json()["reason"]
    unknown = await bridge.post("nosuchfeed", payload, sha256_headers(body))
    assert unknown.status_code == 404
    assert bridge.events() == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, 2], "the body must be a JSON object"),
        ({**event("wh_bad"), "event": "user.promote"}, "`event`: one of"),
        ({**event("wh_bad"), "timestamp": "yesterday"}, "`timestamp`"),
        ({**event("wh_bad"), "data": "E12345"}, "`data`"),
        (event("wh_bad", externalId=None), "names no person"),
    ],
)
async def test_not_the_guide_payload_is_400(bridge: Bridge, payload: Any, reason: str) -> None:
    body = json.dumps(payload).encode()
    answer = await bridge.http.post(
        "/hris/v1/events/workday", content=body, headers=standard_headers(body, "wh_bad")
    )
    assert answer.status_code == 400
    assert reason in answer.json()["reason"]
    assert bridge.events() == []


async def test_body_over_the_payload_cap_is_413(bridge: Bridge, settings: Settings) -> None:
    payload = event("wh_big", padding="x" * settings.max_payload_bytes)
    answer = await bridge.send(payload)
    assert answer.status_code == 413
    assert bridge.events() == []


# -- applying: order, status, thin events, failures ----------------------------------------------


async def test_terminate_deactivates_and_rehire_reactivates(bridge: Bridge) -> None:
    await bridge.send(event("wh_hire", when=T0))
    await bridge.applier.drain()
    person = (await bridge.user())["id"]
    await bridge.send(event("wh_term", "user.terminate", T1))
    await bridge.applier.drain()
    gone = await bridge.user()
    assert gone["active"] is False and gone[HR]["employmentStatus"] == "terminated"
    assert gone[HR]["roleCodes"] == ["BEN_CHOICE_2026"]  # deactivated, nothing deleted
    # Pending, or held by the brake on mass removals: either way the intent was made.
    assert "suspend_account" in [i["kind"] for i in intents(bridge.db) if i["person"] == person]

    await bridge.send(event("wh_back", "user.rehire", T2))
    await bridge.applier.drain()
    back = await bridge.user()
    assert back["active"] is True and back[HR]["employmentStatus"] == "active"
    assert [e.state for e in bridge.events()] == ["applied"] * 3


async def test_event_older_than_the_last_applied_is_journalled_and_ignored(
    bridge: Bridge,
) -> None:
    await bridge.send(event("wh_hire", when=T0))
    await bridge.send(event("wh_term", "user.terminate", T2))
    await bridge.applier.drain()
    late = await bridge.send(event("wh_late", "user.create", T1, first_name="Janet"))
    assert late.status_code == 202
    await bridge.applier.drain()
    user = await bridge.user()
    assert user["active"] is False and user["name"]["givenName"] == "Jane"
    states = {e.event_id: (e.state, e.detail) for e in bridge.events()}
    assert states["wh_late"][0] == "ignored"
    assert "older than the last applied event" in str(states["wh_late"][1])
    with bridge.db.read() as conn:
        entries = journal.read(conn, resource_id=user["id"])
    ignored = [e for e in entries if e.op == "hris.ignored"]
    assert [(e.request_id, e.actor) for e in ignored] == [("wh_late", "hris:workday")]


async def test_numeric_employee_id_becomes_a_string_externalId(bridge: Bridge) -> None:
    await bridge.send(event("wh_number", externalId=12345))
    await bridge.applier.drain()
    assert bridge.events()[0].state == "applied", bridge.events()[0].detail
    assert (await bridge.user("12345"))["externalId"] == "12345"


async def test_update_keeps_the_attributes_the_feed_does_not_map(bridge: Bridge) -> None:
    await bridge.send(event("wh_hire", when=T0))
    await bridge.applier.drain()
    user = await bridge.user()
    title = await bridge.http.patch(
        f"/scim/v2/Users/{user['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "title", "value": "Claims adjuster"}],
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert title.status_code == 200, title.text
    await bridge.send(
        event("wh_promo", "user.update", T1, role_codes=["BEN_CHOICE_2026", "MANAGER"])
    )
    await bridge.applier.drain()
    after = await bridge.user()
    assert after["title"] == "Claims adjuster"
    assert after[HR]["roleCodes"] == ["BEN_CHOICE_2026", "MANAGER"]
    assert after["id"] == user["id"]


async def test_thin_event_is_completed_from_the_hris(bridge: Bridge) -> None:
    thin = {
        "id": "wh_thin",
        "event": "user.create",
        "timestamp": T0,
        "data": {"externalId": "E777"},
    }
    assert (await bridge.send(thin)).status_code == 202
    await bridge.applier.drain()
    [asked] = bridge.hris_requests
    assert str(asked.url) == "https://hris.example.com/api/workers/E777"
    user = await bridge.user("E777")
    assert user["userName"] == "thin.person@example.com"
    assert user[HR]["roleCodes"] == ["BEN_CHOICE_2026", "EMPLOYEE"]


async def test_thin_event_waits_out_an_hris_outage_and_holds_the_person_back(
    bridge: Bridge,
) -> None:
    bridge.outage[0] = 1
    thin = {
        "id": "wh_thin",
        "event": "user.create",
        "timestamp": T0,
        "data": {"externalId": "E777"},
    }
    await bridge.send(thin)
    await bridge.send(event("wh_later", "user.update", T1, externalId="E777", email="t@x.com"))
    await bridge.applier.drain()
    assert [(e.event_id, e.state, e.attempts) for e in bridge.events()] == [
        ("wh_thin", "queued", 1),
        ("wh_later", "queued", 0),  # behind the person's earlier event, not applied past it
    ]
    assert "503" in str(bridge.events()[0].detail)

    bridge.clock[0] = NOW + timedelta(seconds=31)  # the first retry is due after 30 s
    assert await bridge.applier.drain() == 2
    assert [e.state for e in bridge.events()] == ["applied", "applied"]
    assert (await bridge.user("E777"))["userName"] == "t@x.com"


async def test_thin_event_the_hris_does_not_know_fails(bridge: Bridge) -> None:
    thin = {
        "id": "wh_nobody",
        "event": "user.update",
        "timestamp": T0,
        "data": {"externalId": "E0"},
    }
    await bridge.send(thin)
    await bridge.applier.drain()
    [failed] = bridge.events()
    assert failed.state == "failed" and "404" in str(failed.detail)


async def test_record_missing_its_required_field_fails_with_the_field_named(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    await bridge.send(event("wh_noemail", email=None))
    with caplog.at_level(logging.WARNING, logger="bridge.hris"):
        await bridge.applier.drain()
    [failed] = bridge.events()
    assert failed.state == "failed"
    assert str(failed.detail).startswith("email: missing, and userName needs it")
    assert "fill the field in the HRIS" in str(failed.detail)
    assert any("wh_noemail" in r.message and "email" in r.message for r in caplog.records)
    with bridge.db.read() as conn:
        [entry] = journal.read(conn)
        assert webhook_events.counts(conn)["failed"] == 1
    assert (entry.op, entry.request_id, entry.seq) == (
        "hris.failed",
        "wh_noemail",
        failed.journal_seq,
    )


async def test_bridge_quality_shows_each_feeds_events_and_what_to_fix(
    bridge: Bridge, hr_rules: Path, database_url: str
) -> None:
    await bridge.send(event("wh_ok"))
    await bridge.send(event("wh_noemail", email=None, externalId="E777"))
    await bridge.applier.drain()
    result = run_cli(database_url, hr_rules, "quality", "--json")
    assert result.exit_code == 0, result.output
    feed = json.loads(result.output)["feeds"]["workday"]
    assert feed["declared"] is True
    assert (feed["events"]["applied"], feed["events"]["failed"]) == (1, 1)
    [failed] = feed["failed_examples"]
    assert (failed["event_id"], failed["externalId"]) == ("wh_noemail", "E777")
    assert failed["why"].startswith("email: missing, and userName needs it")
    text = run_cli(database_url, hr_rules, "quality")
    assert "HR feed workday: webhook events 1 applied, 1 failed" in text.output
    assert "wh_noemail user.create for E777: email: missing" in text.output
    assert "fix the record in the HRIS and send the event again" in text.output


# -- the functional core ------------------------------------------------------------------------


def test_standard_webhooks_secret_is_decoded_and_any_listed_signature_matches() -> None:
    assert secret_key(b"whsec_" + base64.b64encode(b"key")) == b"key"
    assert secret_key(b"plain") == b"plain"
    feed = Feed("f", "standard-webhooks", ("S",), (), tolerance=timedelta(minutes=5))
    body = b'{"id": "e1"}'
    good = standard_headers(body, "e1", secret="plain")
    now = NOW.timestamp()
    several = {**good, "webhook-signature": f"v1,AAAA {good['webhook-signature']}"}
    verify(feed, [b"other", b"plain"], several, body, now)
    with pytest.raises(Refused, match="bad signature"):
        verify(feed, [b"other"], good, body, now)
    with pytest.raises(Refused, match="not Unix seconds"):
        verify(feed, [b"plain"], {**good, "webhook-timestamp": "2026-11-01"}, body, now)


def test_merge_keeps_what_the_feed_does_not_map() -> None:
    current = {
        "schemas": ["u"],
        "title": "Adjuster",
        "name": {"givenName": "J", "familyName": "Smith"},
        "emails": [{"value": "old@x", "type": "work"}, {"value": "me@home", "type": "home"}],
    }
    mapped = {
        "schemas": ["u", "e"],
        "name": {"givenName": "Jane"},
        "emails": [{"value": "new@x", "type": "work", "primary": True}],
    }
    assert merged(current, mapped) == {
        "schemas": ["u", "e"],
        "title": "Adjuster",
        "name": {"givenName": "Jane", "familyName": "Smith"},
        "emails": [
            {"value": "new@x", "type": "work", "primary": True},
            {"value": "me@home", "type": "home"},
        ],
    }


# -- bridge serve: the endpoint mounted and the applier running beside the relay ----------------


async def test_serve_applies_a_webhook_event_in_the_background(
    hr_rules: Path, settings: Settings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    served = settings.model_copy(update={"rules_dir": hr_rules, "scheduler": False})
    app = build_app(served, relay_in_process=False, scheduler_in_process=True)
    db = app.state.server.provisioner.db
    payload = event("wh_served")
    body = json.dumps(payload).encode()
    headers = standard_headers(body, "wh_served", skew=int(time.time() - NOW.timestamp()))
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as http:
                answer = await http.post("/hris/v1/events/workday", content=body, headers=headers)
                assert answer.status_code == 202, answer.text
                for _ in range(200):  # the loop is woken by the intake; allow a slow machine
                    with db.read() as conn:
                        found = webhook_events.get(conn, "workday", "wh_served")
                    if found is not None and found.state != "queued":
                        break
                    await asyncio.sleep(0.05)
        assert found is not None and found.state == "applied", found
        with db.read() as conn:
            assert webhook_events.person_with(conn, "E12345") is not None
    finally:
        db.dispose()
