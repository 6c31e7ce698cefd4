"""HR webhooks: ``POST /hris/v1/events/{feed}``, verified, then durably queued (202).

A feed of ``feeds.yaml`` signs its events one of two ways, each checked in constant time
against every secret the feed lists (newest first, so a rotation accepts both):

- ``standard-webhooks`` (standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` (Unix
  seconds, within the feed's ``tolerance``) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "{id}.{timestamp}.{body}">`` (several, space-separated); a ``whsec_<base64>`` secret is
  decoded, any other is used as its bytes;
- ``sha256`` (the integration guide): ``X-Signature: sha256=<hex HMAC-SHA256 of the body>``.
  A signature in the payload itself is not accepted: the body cannot sign itself.

Nothing is stored before the signature holds. Unsigned, forged or stale: 401; a feed whose
secrets are all unset: 503 (the bridge's configuration, not the sender, is wrong); unknown
feed: 404; not the guide's payload: 400. A replayed event id answers 200 ``duplicate`` and
stores nothing. Errors are ``{"error": ..., "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Route

from bridge.auth.tokens import Principal
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.events import EVENT_TYPES
from bridge.provision.events import external_id_of
from bridge.provision.resources import now_utc
from bridge.rules.feeds import Feed
from bridge.store import webhook_events
from bridge.store import webhook_refusals
from bridge.store.engine import DatabaseBusy

log = logging.getLogger("bridge.hris")

PATH = "/hris/v1/events/{feed}"
WHSEC = b"whsec_"


class Refused(Exception):
    """A request answered with an error: its status, a short error and the reason."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


@dataclass(frozen=True)
class HrEvent:
    """The guide's webhook payload: ``{"id", "event", "timestamp", "data": {...}}``."""

    id: str
    type: str
    occurred: datetime
    data: dict[str, Any]
    payload: dict[str, Any]


# -- verification and parsing (pure) ------------------------------------------------------------


def secret_key(secret: bytes) -> bytes:
    """The HMAC key of a secret: ``whsec_<base64>`` decoded (Standard Webhooks), else as is."""
    if not secret.startswith(WHSEC):
        return secret
    try:
        return base64.b64decode(secret[len(WHSEC) :], validate=True)
    except binascii.Error:
        return secret


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise Refused(401, "unsigned", f"missing header {name}")
    return value


def _any_match(expected: list[str], given: list[str]) -> bool:
    found = False
    for mine in expected:
        for theirs in given:  # every pair compared: the time taken says nothing of which
            found |= hmac.compare_digest(mine.encode(), theirs.encode())
    return found


class Signature:
    """The check of one signed body (a webhook, or an export streamed chunk by chunk).

    Built from the headers — Refused (401) at once when one is missing or the timestamp is
    outside the feed's tolerance — then fed the body with ``update`` and ``check``-ed: one
    HMAC-SHA256 per secret (rotation), compared in constant time. ``standard-webhooks``:
    ``v1,<base64 HMAC of "{id}.{timestamp}.{body}">``; ``sha256``: ``sha256=<hex HMAC of the
    body>`` in ``X-Signature``.
    """

    def __init__(
        self, feed: Feed, secrets: list[bytes], headers: Mapping[str, str], now: float
    ) -> None:
        self.standard = feed.signature != "sha256"
        prefix = b""
        if self.standard:
            webhook_id = _header(headers, "webhook-id")
            timestamp = _header(headers, "webhook-timestamp")
            self.given = _header(headers, "webhook-signature").split()
            if not timestamp.isdigit():
                raise Refused(401, "stale", "webhook-timestamp is not Unix seconds")
            skew = abs(now - int(timestamp))
            tolerance = feed.tolerance.total_seconds()
            if skew > tolerance:
                raise Refused(
                    401,
                    "stale",
                    f"timestamp outside tolerance: {skew:.0f} s from now, "
                    f"±{tolerance:.0f} s allowed",
                )
            prefix = f"{webhook_id}.{timestamp}.".encode()
        else:
            self.given = [_header(headers, "x-signature").lower()]
        self.macs = [hmac.new(secret_key(s), prefix, hashlib.sha256) for s in secrets]

    def update(self, chunk: bytes) -> None:
        for mac in self.macs:
            mac.update(chunk)

    def check(self) -> None:
        """Refused (401) unless one of the secrets signed what ``update`` was given."""
        if self.standard:
            expected = ["v1," + base64.b64encode(m.digest()).decode() for m in self.macs]
            if not _any_match(expected, [s for s in self.given if s.startswith("v1,")]):
                raise Refused(401, "forged", "bad signature: webhook-signature matches no secret")
        elif not _any_match(["sha256=" + m.hexdigest() for m in self.macs], self.given):
            raise Refused(401, "forged", "bad signature: X-Signature matches no secret")


def verify(
    feed: Feed, secrets: list[bytes], headers: Mapping[str, str], body: bytes, now: float
) -> None:
    """Refused (401) unless one of ``secrets`` signed ``body`` the feed's way, in time."""
    signature = Signature(feed, secrets, headers, now)
    signature.update(body)
    signature.check()


def parse_event(body: bytes, fallback_id: str | None) -> HrEvent:
    """The guide's payload, or Refused (400) saying what is wrong with it."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, "invalid", f"the body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Refused(400, "invalid", "the body must be a JSON object")
    event_id = payload.get("id", fallback_id)
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > 255:
        raise Refused(400, "invalid", "`id`: the event id, a string of 1 to 255 characters")
    event_type = payload.get("event")
    if event_type not in EVENT_TYPES:
        raise Refused(400, "invalid", f"`event`: one of {', '.join(EVENT_TYPES)}")
    stamp = payload.get("timestamp")
    try:
        occurred = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError as exc:
        raise Refused(400, "invalid", "`timestamp`: an ISO 8601 time") from exc
    if stamp is None or occurred.tzinfo is None:
        raise Refused(400, "invalid", "`timestamp`: an ISO 8601 time with its offset (Z)")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise Refused(400, "invalid", "`data`: the HR record, a JSON object")
    return HrEvent(event_id, str(event_type), occurred.astimezone(UTC), data, payload)


# -- the endpoint -------------------------------------------------------------------------------


async def count_refusal(
    provisioner: Provisioner, name: str, kind: str, exc: Refused, now: datetime
) -> None:
    """Count a refusal of a feed the rules in force declare, durably (``bridge quality``
    shows it); nothing of the body is kept. An undeclared feed (404) is not counted: anyone
    could invent names."""
    ruleset = provisioner.projector.rules()
    if ruleset is None or name not in ruleset.feeds or exc.status == 404:
        return
    try:
        await provisioner.db.run_async(
            lambda tx: webhook_refusals.record(
                tx, feed=name, kind=kind, error=exc.error, reason=exc.reason, now=now
            )
        )
    except Exception:  # the answer stands; the count is lost, said so
        log.warning("could not count a refusal of feed %s", name, exc_info=True)


class HrisIntake:
    """The handler of ``POST /hris/v1/events/{feed}``: verify, queue, answer 202."""

    def __init__(
        self,
        provisioner: Provisioner,
        settings: Settings,
        env: Mapping[str, str],
        *,
        on_queued: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        now: Callable[[], datetime] = now_utc,
        authenticate: Callable[[str], Principal | None] | None = None,
    ) -> None:
        self.authenticate = authenticate
        """Lets an export upload carry a bridge token (scim:write) instead of a signature."""
        self.provisioner = provisioner
        self.db = provisioner.db
        self.settings = settings
        self.env = env
        self.on_queued = on_queued
        self.clock = clock
        self.now = now

    def feeds(self) -> Mapping[str, Feed]:
        ruleset = self.provisioner.projector.rules()
        return {} if ruleset is None else ruleset.feeds

    def routes(self) -> list[Route]:
        """The webhook route, and the export upload (``bridge.scim.hris_exports``)."""
        from bridge.scim.hris_exports import HrisExports

        self.exports = HrisExports(
            self.provisioner, self.env, clock=self.clock, authenticate=self.authenticate
        )
        return [Route(PATH, self.receive, methods=["POST"]), *self.exports.routes()]

    async def receive(self, request: Request) -> Response:
        name = request.path_params["feed"]
        event_id = request.headers.get("webhook-id")
        try:
            return await self._receive(request, name)
        except Refused as exc:
            level = logging.ERROR if exc.status >= 500 else logging.WARNING
            log.log(
                level,
                "HR webhook refused (%s): feed %s, event %s: %s",
                exc.status,
                name,
                event_id or "-",
                exc.reason,
                extra={"feed": name, "event": event_id},
            )
            await count_refusal(self.provisioner, name, webhook_refusals.EVENT, exc, self.now())
            headers = {"Retry-After": "60"} if exc.status == 503 else None
            return JSONResponse(
                {"error": exc.error, "reason": exc.reason}, exc.status, headers=headers
            )
        except DatabaseBusy as exc:
            log.warning("database busy: %s", exc)
            return JSONResponse(
                {"error": "busy", "reason": "the database is busy; retry"},
                503,
                headers={"Retry-After": "1"},
            )
        except ClientDisconnect:
            return Response(status_code=499)

    async def _receive(self, request: Request, name: str) -> Response:
        feed = self.feeds().get(name)
        if feed is None:
            raise Refused(404, "unknown feed", f"no feed {name!r} in feeds.yaml")
        body = await self._body(request)
        secrets = feed.secret_values(self.env)
        if not secrets:
            names = ", ".join(feed.secrets)
            raise Refused(503, "not configured", f"no secret set for feed {name!r} ({names})")
        verify(feed, secrets, request.headers, body, self.clock())
        event = parse_event(body, request.headers.get("webhook-id"))
        external_id = external_id_of(feed, event.data)
        if external_id is None:
            raise Refused(400, "invalid", "`data` names no person (its externalId is missing)")
        received = self.now()
        row = await self.db.run_async(
            lambda tx: webhook_events.enqueue(
                tx,
                feed=name,
                event_id=event.id,
                event_type=event.type,
                external_id=external_id,
                occurred=event.occurred,
                received=received,
                payload=event.payload,
            )
        )
        if row is None:
            log.info("HR event %s of feed %s is a duplicate", event.id, name)
            return JSONResponse({"status": "duplicate", "id": event.id}, 200)
        self.on_queued()
        return JSONResponse({"status": "queued", "id": event.id}, 202)

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_payload_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise Refused(413, "too large", f"the body is over {limit} bytes")
        seconds = self.settings.body_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                raw = await request.body()
        except TimeoutError as exc:
            raise Refused(408, "timeout", f"the body did not arrive within {seconds:g} s") from exc
        if len(raw) > limit:
            raise Refused(413, "too large", f"the body is over {limit} bytes")
        return raw
