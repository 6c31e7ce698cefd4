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
``X-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import tempfile
import time
from collections.abc import Callable
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from typing import TextIO

from starlette.requests import ClientDisconnect
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import Route

from bridge.provision import Provisioner
from bridge.provision.sync import Sync
from bridge.rules.feeds import Feed
from bridge.scim.hris import Refused
from bridge.scim.hris import secret_key

log = logging.getLogger("bridge.hris")

PATH = "/hris/v1/exports/{feed}"
MAX_EXPORT_BYTES = 1 << 30
"""The largest export accepted (1 GiB: about ten million rows)."""


class Signer:
    """The HMACs of one upload, fed chunk by chunk, one per secret (rotation)."""

    def __init__(self, feed: Feed, secrets: list[bytes], headers: Mapping[str, str], now: float):
        self.feed = feed
        self.headers = {k.lower(): v for k, v in headers.items()}
        keys = [secret_key(secret) for secret in secrets]
        prefix = b""
        if feed.signature == "standard-webhooks":
            webhook_id = self._header("webhook-id")
            stamp = self._header("webhook-timestamp")
            if not stamp.isdigit():
                raise Refused(401, "stale", "webhook-timestamp is not Unix seconds")
            skew, tolerance = abs(now - int(stamp)), feed.tolerance.total_seconds()
            if skew > tolerance:
                raise Refused(
                    401, "stale", f"timestamp outside tolerance: {skew:.0f} s, ±{tolerance:.0f} s"
                )
            prefix = f"{webhook_id}.{stamp}.".encode()
        else:
            self._header("x-signature")
        self.macs = [hmac.new(key, prefix, hashlib.sha256) for key in keys]

    def _header(self, name: str) -> str:
        value = self.headers.get(name)
        if not value:
            raise Refused(401, "unsigned", f"missing header {name}")
        return value

    def update(self, chunk: bytes) -> None:
        for mac in self.macs:
            mac.update(chunk)

    def check(self) -> None:
        if self.feed.signature == "standard-webhooks":
            given = [s for s in self.headers["webhook-signature"].split() if s.startswith("v1,")]
            expected = ["v1," + base64.b64encode(m.digest()).decode() for m in self.macs]
        else:
            given = [self.headers["x-signature"].lower()]
            expected = ["sha256=" + m.hexdigest() for m in self.macs]
        if not any(hmac.compare_digest(e, g) for e in expected for g in given):
            raise Refused(401, "forged", "bad signature: it matches no secret of the feed")


class HrisExports:
    """The handler of ``POST /hris/v1/exports/{feed}``."""

    def __init__(
        self,
        provisioner: Provisioner,
        env: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provisioner = provisioner
        self.env = env
        self.clock = clock
        self.running: set[asyncio.Task[Any]] = set()

    def routes(self) -> list[Route]:
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
            return JSONResponse({"error": exc.error, "reason": exc.reason}, exc.status)
        except ClientDisconnect:
            return Response(status_code=499)

    async def _receive(self, request: Request, name: str) -> Response:
        feed, version = self._feed(name)
        secrets = feed.secret_values(self.env)
        if not secrets:
            raise Refused(503, "not configured", f"no secret set for feed {name!r}")
        signer = Signer(feed, secrets, request.headers, self.clock())
        path = await self._spool(request, signer)
        try:
            signer.check()
            sync = Sync(self.provisioner, feed, actor=f"hris:{name}", rules_version=version)
            opener = _opener(path)
            try:
                found = await asyncio.to_thread(sync.survey, opener, force=False)
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
                applied = await asyncio.to_thread(sync.apply, found, opener)
                log.info("HR export of feed %s applied: %s", name, applied.counts)
            except Exception:
                log.exception("HR export of feed %s failed while applying", name)
            finally:
                path.unlink(missing_ok=True)

        task = asyncio.create_task(apply())
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return JSONResponse({"status": "accepted", "feed": name, "planned": planned}, 202)

    async def _spool(self, request: Request, signer: Signer) -> Path:
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
                    signer.update(chunk)
                    out.write(chunk)
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)


def _opener(path: Path) -> Callable[[], AbstractContextManager[TextIO]]:
    def open_export() -> AbstractContextManager[TextIO]:
        return path.open(encoding="utf-8-sig", newline="")

    return open_export
