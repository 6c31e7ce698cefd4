"""``POST /hris/v1/exports/{feed}``: a feed's full export uploaded by the HRIS, signed like its
webhooks, then synced as ``bridge sync`` would (``bridge.provision.sync``).

The body (CSV or JSON lines, as the feed's ``export.format`` says) is streamed to a temporary
file while its signature is computed, never held in memory whole; nothing is read before the
signature holds. The first pass (the survey and the truncation guard) runs before the answer:
an export refused as empty or truncated is a 422 with the counts, nothing written. Otherwise
the changes are applied in the background through the Provisioner and the answer is 202 with
what is planned; the ``sync`` run shows in ``bridge runs`` with what was written.

Signatures: ``standard-webhooks`` feeds sign ``{webhook-id}.{webhook-timestamp}.{body}``
(``webhook-*`` headers, within the feed's tolerance); ``sha256`` feeds send
``X-Signature: sha256=<hex HMAC-SHA256 of the body>``. An HRIS (or a transfer job) that cannot
sign may instead send ``Authorization: Bearer`` a bridge token with the ``scim:write`` scope
(``bridge tokens create NAME --scope write``): the sync is journalled as that token's name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Route

from bridge.auth.tokens import WRITE
from bridge.auth.tokens import Principal
from bridge.provision import Provisioner
from bridge.provision.resources import now_utc
from bridge.provision.sync import Sync
from bridge.provision.sync import abandon_dead
from bridge.provision.sync import opener
from bridge.rules.feeds import Feed
from bridge.scim.hris import Refused
from bridge.scim.hris import Signature
from bridge.scim.hris import count_refusal
from bridge.store import webhook_refusals

log = logging.getLogger("bridge.hris")

PATH = "/hris/v1/exports/{feed}"
MAX_EXPORT_BYTES = 1 << 30
"""The largest export accepted (1 GiB: about ten million rows)."""


class HrisExports:
    """The handler of ``POST /hris/v1/exports/{feed}``."""

    def __init__(
        self,
        provisioner: Provisioner,
        env: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        authenticate: Callable[[str], Principal | None] | None = None,
    ) -> None:
        self.provisioner = provisioner
        self.env = env
        self.clock = clock
        self.authenticate = authenticate
        """Verifies a bridge bearer token for an unsigned upload (None: signed uploads only)."""
        self.running: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[Route]:
        """The upload route; an upload a previous process of this host was applying when it
        stopped is closed as failed first (``bridge runs`` and the log say so)."""
        abandon_dead(self.provisioner.db)
        return [Route(PATH, self.receive, methods=["POST"])]

    def _feed(self, name: str) -> tuple[Feed, str]:
        ruleset = self.provisioner.projector.rules()
        feed = None if ruleset is None else ruleset.feeds.get(name)
        if feed is None:
            raise Refused(404, "unknown feed", f"no feed {name!r} in feeds.yaml")
        return feed, ruleset.version if ruleset is not None else ""

    async def receive(self, request: Request) -> Response:
        name = request.path_params["feed"]
        try:
            return await self._receive(request, name)
        except Refused as exc:
            level = logging.ERROR if exc.status >= 500 else logging.WARNING
            log.log(level, "HR export of feed %s refused (%s): %s", name, exc.status, exc.reason)
            await count_refusal(self.provisioner, name, webhook_refusals.EXPORT, exc, now_utc())
            return JSONResponse({"error": exc.error, "reason": exc.reason}, exc.status)
        except ClientDisconnect:
            return Response(status_code=499)

    async def _token(self, request: Request) -> Principal | None:
        """The bearer token's principal when the upload carries one (and no signature):
        Refused 401 unknown or revoked, 403 without the write scope."""
        given = request.headers.get("authorization", "")
        signed = "webhook-signature" in request.headers or "x-signature" in request.headers
        if self.authenticate is None or signed or not given.lower().startswith("bearer "):
            return None
        authenticate = self.authenticate
        principal = await asyncio.to_thread(authenticate, given[7:].strip())
        if principal is None:
            raise Refused(401, "unknown token", "the bearer token is unknown or revoked")
        if not principal.can(WRITE):
            raise Refused(403, "forbidden", f"token {principal.name!r} lacks the scim:write scope")
        return principal

    async def _receive(self, request: Request, name: str) -> Response:
        feed, version = self._feed(name)
        principal = await self._token(request)
        signer: Signature | None = None
        if principal is None:
            secrets = feed.secret_values(self.env)
            if not secrets:
                raise Refused(503, "not configured", f"no secret set for feed {name!r}")
            signer = Signature(feed, secrets, request.headers, self.clock())
        path = await self._spool(request, signer)
        try:
            if signer is not None:
                signer.check()
            actor = f"hris:{name}" if principal is None else principal.name
            sync = Sync(self.provisioner, feed, actor=actor, rules_version=version)
            open_export = opener(path)
            try:
                found = await asyncio.to_thread(sync.survey, open_export, force=False)
            except UnicodeDecodeError as exc:
                raise Refused(
                    400, "invalid", f"the export is not UTF-8 text ({exc.reason})"
                ) from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        planned = found.counts()
        if found.refusal is not None:
            path.unlink(missing_ok=True)
            log.warning("HR export of feed %s refused: %s", name, found.refusal)
            return JSONResponse(
                {"error": "refused", "reason": found.refusal, "counts": planned}, 422
            )

        async def apply() -> None:
            try:
                applied = await asyncio.to_thread(sync.apply, found, open_export)
                log.info("HR export of feed %s applied: %s", name, applied.counts)
            except Exception:
                log.exception("HR export of feed %s failed while applying", name)
            finally:
                path.unlink(missing_ok=True)

        task = asyncio.create_task(apply())
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return JSONResponse({"status": "accepted", "feed": name, "planned": planned}, 202)

    async def _spool(self, request: Request, signer: Signature | None) -> Path:
        handle, name = tempfile.mkstemp(prefix="bridge-upload-", suffix=".export")
        size = 0
        try:
            with os.fdopen(handle, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_EXPORT_BYTES:
                        raise Refused(
                            413, "too large", f"the export is over {MAX_EXPORT_BYTES} bytes"
                        )
                    if signer is not None:
                        signer.update(chunk)
                    out.write(chunk)
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)
