"""The simulator's ASGI app: Moodle and Canvas routes behind the misbehaviour knobs.

Knobs (``Knobs``): added latency, a token-bucket rate limit (Moodle answers 429 with
Retry-After like a proxy in front of it; Canvas answers 403 "Rate Limit Exceeded" as Canvas
does), a random error rate (HTTP 500/502), and an outage window (every call fails with 503
while it is open). They can be changed at run time through ``POST /_sim/knobs``, the Moodle
site's configuration (``auth_plugins``, ``profile_fields``, ``service_functions``,
``extended_username_chars``, ``allow_accounts_same_email``, ``debug``, ``max_input_vars``)
through ``POST /_sim/moodle``, and the simulator's state inspected through ``GET /_sim/state``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route
from starlette.types import ASGIApp
from starlette.types import Receive
from starlette.types import Scope
from starlette.types import Send


@dataclass
class Knobs:
    """How badly the simulated LMS behaves."""

    latency_ms: float = 0.0
    rate_limit_per_s: float | None = None  # None: unlimited
    burst: int = 10
    error_rate: float = 0.0  # share of calls that fail with a 5xx
    outage_until: float = 0.0  # monotonic time until which every call fails with 503
    seed: int | None = None

    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds


@dataclass
class Counters:
    calls: int = 0
    throttled: int = 0
    failed: int = 0
    by_function: dict[str, int] = field(default_factory=dict)


class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self) -> None:
        self.tokens = 0.0
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self, rate: float, burst: int) -> float:
        """0 when a token was taken, else the seconds until one is free."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(burst), self.tokens + (now - self.updated) * rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / rate


class Misbehaviour:
    """ASGI middleware applying the knobs to every LMS call (not to ``/_sim``)."""

    def __init__(self, app: ASGIApp, knobs: Knobs, counters: Counters) -> None:
        self.app = app
        self.knobs = knobs
        self.counters = counters
        self.bucket = Bucket()
        self.random = random.Random(knobs.seed)  # noqa: S311 - simulated faults, not secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        knobs = self.knobs
        self.counters.calls += 1
        canvas = scope["path"].startswith("/api/")
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000)
        if time.monotonic() < knobs.outage_until:
            self.counters.failed += 1
            await Response("Service Unavailable", 503, {"Retry-After": "1"})(scope, receive, send)
            return
        if knobs.rate_limit_per_s:
            wait = self.bucket.take(knobs.rate_limit_per_s, knobs.burst)
            if wait > 0:
                self.counters.throttled += 1
                retry = str(max(1, round(wait + 0.5)))
                if canvas:  # Canvas throttles with 403 "Rate Limit Exceeded" (LMS.md)
                    response: Response = Response(
                        "403 Forbidden (Rate Limit Exceeded)",
                        403,
                        {"X-Rate-Limit-Remaining": "0", "Retry-After": retry},
                    )
                else:
                    response = Response("Too Many Requests", 429, {"Retry-After": retry})
                await response(scope, receive, send)
                return
        if knobs.error_rate and self.random.random() < knobs.error_rate:
            self.counters.failed += 1
            await Response("Bad Gateway", self.random.choice([500, 502]))(scope, receive, send)
            return
        await self.app(scope, receive, send)


SIM_MOODLE_TOKEN = "moodle-token"  # noqa: S105 - the simulator's well-known test token
SIM_CANVAS_TOKEN = "canvas-token"  # noqa: S105 - the simulator's well-known test token


MOODLE_SETTINGS = {
    "auth_plugins": set,
    "profile_fields": set,
    "service_functions": set,
    "extended_username_chars": bool,
    "allow_accounts_same_email": bool,
    "debug": bool,
    "max_input_vars": int,
}
"""The Moodle site settings ``POST /_sim/moodle`` may change, and how a JSON value becomes one."""


def create_app(
    knobs: Knobs | None = None,
    *,
    moodle_token: str = SIM_MOODLE_TOKEN,
    canvas_token: str = SIM_CANVAS_TOKEN,
    moodle_auth_plugins: Iterable[str] | None = None,
    moodle_profile_fields: Iterable[str] | None = None,
    moodle_service_functions: Iterable[str] | None = None,
    moodle_extended_username_chars: bool = False,
) -> Starlette:
    """The simulator: Moodle at ``/webservice/rest/server.php``, Canvas at ``/api/v1``.

    The ``moodle_*`` arguments configure the Moodle site (``MoodleSite``); None keeps its
    default: the stock auth plugins, the shipped rules' profile fields, every function.
    """
    from bridge.lmssim import canvas
    from bridge.lmssim import moodle
    from bridge.lmssim import moodle_rest

    knobs = knobs or Knobs()
    counters = Counters()
    moodle_site = moodle.MoodleSite(
        token=moodle_token,
        auth_plugins=(
            moodle.STOCK_AUTH_PLUGINS if moodle_auth_plugins is None else moodle_auth_plugins
        ),
        profile_fields=(
            moodle.SHIPPED_PROFILE_FIELDS
            if moodle_profile_fields is None
            else moodle_profile_fields
        ),
        service_functions=moodle_service_functions,
        extended_username_chars=moodle_extended_username_chars,
    )
    canvas_site = canvas.CanvasSite(token=canvas_token)

    async def get_knobs(request: Request) -> Response:
        return JSONResponse({"knobs": asdict(knobs), "counters": asdict(counters)})

    async def set_knobs(request: Request) -> Response:
        body = await request.json()
        for key, value in body.items():
            if key == "outage_seconds":
                knobs.outage(float(value))
            elif hasattr(knobs, key):
                setattr(knobs, key, value)
        return JSONResponse({"knobs": asdict(knobs)})

    async def set_moodle(request: Request) -> Response:
        body = await request.json()
        unknown = sorted(set(body) - set(MOODLE_SETTINGS))
        if unknown:
            return JSONResponse({"error": f"unknown Moodle settings: {', '.join(unknown)}"}, 400)
        missing = sorted(set(body.get("service_functions", ())) - set(moodle.FUNCTIONS))
        if missing:
            return JSONResponse({"error": f"not simulated: {', '.join(missing)}"}, 400)
        for key, value in body.items():
            setattr(moodle_site, key, MOODLE_SETTINGS[key](value))
        return JSONResponse(moodle_site.snapshot()["settings"])

    async def state(request: Request) -> Response:
        return JSONResponse(
            {
                "moodle": moodle_site.snapshot(),
                "canvas": canvas_site.snapshot(),
                "counters": asdict(counters),
            }
        )

    routes: list[BaseRoute] = [
        Route("/_sim/knobs", get_knobs, methods=["GET"]),
        Route("/_sim/knobs", set_knobs, methods=["POST"]),
        Route("/_sim/moodle", set_moodle, methods=["POST"]),
        Route("/_sim/state", state, methods=["GET"]),
        *moodle_rest.routes(moodle_site),
        *canvas.routes(canvas_site),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Misbehaviour, knobs=knobs, counters=counters)
    app.state.knobs = knobs
    app.state.counters = counters
    app.state.moodle = moodle_site
    app.state.canvas = canvas_site
    return app


def state_of(app: Starlette) -> dict[str, Any]:
    """The simulator's whole state (for tests in the same process)."""
    return {"moodle": app.state.moodle.snapshot(), "canvas": app.state.canvas.snapshot()}
