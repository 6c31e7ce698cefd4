"""``/metrics`` (the Prometheus text format) and the middleware counting every HTTP request.

A scrape needs a bearer token with the ``metrics`` scope (``bridge tokens create prometheus
--scope metrics``): a SCIM token does not read metrics unless it holds that scope too, and a
metrics token reads nothing else. The database's figures are read at scrape time
(``bridge.store.gauges``: a few grouped queries), on a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.types import ASGIApp
from starlette.types import Message
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send

from bridge.auth.tokens import METRICS
from bridge.auth.tokens import Principal
from bridge.rules.book import RuleBook
from bridge.rules.model import RuleSet
from bridge.store import gauges
from bridge.store.engine import Database
from bridge.telemetry import UNMATCHED
from bridge.telemetry import State
from bridge.telemetry import Telemetry

Authenticate = Callable[[str], Principal | None]


def route_of(scope: Scope) -> str:
    """The template of the route that served a request (``/scim/v2/{endpoint}/{id}``), never
    the path itself: one series per route, however many ids are asked for."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestMetrics:
    """ASGI middleware: each HTTP request counted by route, method and status, and timed."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, method = route_of(scope), scope["method"]
            self.telemetry.requests.labels(route, method, str(status)).inc()
            self.telemetry.request_seconds.labels(route, method).observe(
                time.perf_counter() - started
            )


def refused(book: RuleBook | None) -> bool:
    """Whether the rule files on disk were refused (the last good set stays in force)."""
    return book is not None and (bool(book.last_refusal) or book.quarantined is not None)


def state_reader(
    db: Database, rules: Callable[[], RuleSet | None], book: RuleBook | None = None
) -> Callable[[], State]:
    """What a scrape reads: the database's figures in one read transaction, the rule set."""

    def read() -> State:
        ruleset = rules()
        with db.read() as conn:
            depth = gauges.outbox_depth(conn)
            awaiting = gauges.awaiting_decision(conn)
            health = gauges.target_states(conn)
            reconciled = gauges.last_reconciles(conn)
        target_of = {f.name: f.target for f in ruleset.files} if ruleset is not None else {}
        last: dict[str, Any] = {}
        for rule_file, when in reconciled.items():
            target = target_of.get(rule_file)
            if target is not None and (target not in last or when > last[target]):
                last[target] = when
        return State(
            outbox=depth,
            awaiting_decision=awaiting,
            target_health=health,
            last_reconcile=last,
            targets=tuple(sorted(set(target_of.values()))),
            rules_version=ruleset.version if ruleset is not None else None,
            reload_refused=refused(book),
            reload_refusals=book.refusals if book is not None else 0,
        )

    return read


class MetricsEndpoint:
    """``GET /metrics``: the registry, to a bearer of the ``metrics`` scope."""

    def __init__(self, telemetry: Telemetry, authenticate: Authenticate) -> None:
        self.telemetry = telemetry
        self.authenticate = authenticate

    async def endpoint(self, request: Request) -> Response:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="metrics"'}
        if scheme.lower() != "bearer" or not credential.strip():
            return JSONResponse(
                {"detail": "a bearer token with the metrics scope is required"},
                status_code=401,
                headers=challenge,
            )
        principal = await run_in_threadpool(self.authenticate, credential.strip())
        if principal is None:
            return JSONResponse(
                {"detail": "the bearer token is not valid"}, status_code=401, headers=challenge
            )
        if not principal.can(METRICS):
            return JSONResponse(
                {"detail": f"the token '{principal.name}' lacks the metrics scope"},
                status_code=403,
            )
        body, media_type = await run_in_threadpool(
            self.telemetry.render, request.headers.get("accept")
        )
        return Response(body, headers={"Content-Type": media_type})
