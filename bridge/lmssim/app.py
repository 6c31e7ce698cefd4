"""The simulator's ASGI app: Moodle and Canvas routes behind the misbehaviour knobs.

Moodle's web services answer at ``/webservice/rest/server.php`` (token ``moodle-token`` by
default), Canvas's REST API under ``/api/v1`` (bearer token ``canvas-token``); ``bridge
lmssim`` prints both when it starts (:func:`banner`) and takes other tokens by flag or env.

Knobs (``Knobs``), applied to every LMS call before it runs:

- a token-bucket rate limit (``rate_limit_per_s``; the bucket starts empty and holds at most
  ``burst`` tokens): above it Moodle answers **429** with ``Retry-After``, like a proxy in front
  of it, and Canvas answers **403** "Rate Limit Exceeded" as Canvas does;
- an outage window (``Knobs.outage(seconds)``, ``POST /_sim/knobs {"outage_seconds": N}`` or
  ``bridge lmssim --outage-seconds N [--outage-after S]``): every call answers **503** with
  ``Retry-After: 1`` while it is open, before the rate limit is counted;
- a random error rate (``error_rate``): **500** or **502**;
- added latency, and the service times of a real site (``bridge.lmssim.cost``: per Moodle
  call, per further row of a batch call, per Canvas request; 0, off, by default).

They can be changed at run time through ``POST /_sim/knobs``, the Moodle site's configuration
(``auth_plugins``, ``profile_fields``, ``service_functions``, ``extended_username_chars``,
``allow_accounts_same_email``, ``debug``, ``max_input_vars``) through ``POST /_sim/moodle``, and
the simulator's state inspected through ``GET /_sim/state``.

Both sites share one simulated wall clock (``SimClock``) and one learner ``Pace``
(``bridge.lmssim.completion``): ``POST /_sim/clock`` advances the clock (``{"days": 2}`` or
``{"seconds": 60}``) and plays the days that passed; ``POST /_sim/completion`` sets the pace
(``completion_rate``, ``start_rate``: shares of learners per simulated day);
``POST /_sim/completion/mark`` sets one learner's state (``{"lms": "moodle", "course": 2,
"user": 5, "state": "complete"}``; Canvas takes Canvas ids, ``sis_user_id:…`` too).
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

from bridge.lmssim import SIM_CANVAS_TOKEN as SIM_CANVAS_TOKEN
from bridge.lmssim import SIM_MOODLE_TOKEN as SIM_MOODLE_TOKEN
from bridge.lmssim.clock import SimClock
from bridge.lmssim.completion import DAY
from bridge.lmssim.completion import STATES
from bridge.lmssim.completion import Pace
from bridge.lmssim.cost import REAL_SITE
from bridge.lmssim.moodle_rest import PATH as MOODLE_PATH


@dataclass
class Knobs:
    """How badly, and how slowly, the simulated LMS behaves."""

    latency_ms: float = 0.0
    rate_limit_per_s: float | None = None  # None: unlimited
    burst: int = 10
    error_rate: float = 0.0  # share of calls that fail with a 5xx
    outage_until: float = 0.0  # monotonic time until which every call answers 503
    seed: int | None = None
    moodle_call_ms: float = 0.0  # a web-service call (with one row)
    moodle_row_ms: float = 0.0  # each further row of a batch call
    canvas_request_ms: float = 0.0  # a Canvas request

    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds

    @classmethod
    def real_site(cls, **others: Any) -> Knobs:
        """Knobs with a real site's service times (LMS.md: ~36 ms a call, ~10 ms a row)."""
        return cls(**{**REAL_SITE, **others})


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


CANVAS_PATH = "/api/v1"


def banner(
    url: str,
    *,
    moodle_token: str,
    canvas_token: str,
    outage_seconds: float = 0.0,
    outage_after: float = 0.0,
) -> list[str]:
    """What ``bridge lmssim`` prints when it starts: where each LMS answers, the token each
    accepts, how to point the bridge at it, and the outage window if one is set."""
    lines = [
        f"LMS simulator listening on {url}",
        f"  Moodle: {url}{MOODLE_PATH} (token {moodle_token})",
        f"  Canvas: {url}{CANVAS_PATH} (token {canvas_token})",
        f"  state:  {url}/_sim/state",
        f"For the bridge (rules/targets.yaml base_url: {url}):",
        f"  export MOODLE_TOKEN={moodle_token} CANVAS_TOKEN={canvas_token}",
    ]
    if outage_seconds > 0:
        start = f"{outage_after:g} s after start" if outage_after > 0 else "at start"
        lines.append(
            f"Outage: every call answers 503 (Retry-After: 1) for {outage_seconds:g} s, "
            f"from {start}"
        )
    return lines


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
    clock: SimClock | None = None,
    completion_rate: float = 0.0,
    start_rate: float = 0.0,
) -> Starlette:
    """The simulator: Moodle at ``/webservice/rest/server.php``, Canvas at ``/api/v1``.

    The ``moodle_*`` arguments configure the Moodle site (``MoodleSite``); None keeps its
    default: the stock auth plugins, the shipped rules' profile fields, every function.
    ``clock``: the sites' wall clock (default real time; ``SimClock.frozen(t)`` for tests);
    ``completion_rate`` / ``start_rate``: the learners' ``Pace``, drawn from ``knobs.seed``.
    """
    from bridge.lmssim import canvas
    from bridge.lmssim import moodle
    from bridge.lmssim import moodle_rest

    knobs = knobs or Knobs()
    counters = Counters()
    clock = clock or SimClock()
    pace = Pace()
    pace.update({"completion_rate": completion_rate, "start_rate": start_rate})
    moodle_site = moodle.MoodleSite(
        token=moodle_token,
        clock=clock,
        pace=pace,
        seed=knobs.seed,
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
    canvas_site = canvas.CanvasSite(token=canvas_token, calendar=clock, pace=pace, seed=knobs.seed)

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

    async def get_clock(request: Request) -> Response:
        return JSONResponse({"now": clock(), "speed": clock.speed})

    async def advance_clock(request: Request) -> Response:
        body = await request.json()
        try:
            seconds = float(body.get("seconds", 0)) + float(body.get("days", 0)) * DAY
            clock.advance(seconds)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        days = {
            "moodle": moodle_site.completion.catch_up(),
            "canvas": canvas_site.completion.catch_up(),
        }
        return JSONResponse({"now": clock(), "days": days})

    async def get_completion(request: Request) -> Response:
        moodle_site.completion.catch_up()
        canvas_site.completion.catch_up()
        moodle_keys = moodle_site.completion.tracked(clock())
        canvas_keys = canvas_site.completion.tracked(clock())
        return JSONResponse(
            {
                "pace": asdict(pace),
                "moodle": moodle_site.completion.counts(moodle_keys),
                "canvas": canvas_site.completion.counts(canvas_keys),
            }
        )

    async def set_completion(request: Request) -> Response:
        body = await request.json()
        unknown = sorted(set(body) - {"completion_rate", "start_rate"})
        if unknown:
            return JSONResponse({"error": f"unknown pace settings: {', '.join(unknown)}"}, 400)
        moodle_site.completion.catch_up()  # the days already passed keep the old pace
        canvas_site.completion.catch_up()
        try:
            pace.update(body)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"pace": asdict(pace)})

    async def mark(request: Request) -> Response:
        body = await request.json()
        state = body.get("state")
        if state not in STATES:
            return JSONResponse({"error": f"state is one of {', '.join(STATES)}"}, 400)
        if body.get("lms") == "moodle":
            course, user = _int(body.get("course")), _int(body.get("user"))
            if course not in moodle_site.courses or user not in moodle_site.users:
                return JSONResponse({"error": "no such Moodle course or user"}, 404)
            book = moodle_site.completion
        elif body.get("lms") == "canvas":
            try:
                course = canvas_site.find_course(str(body.get("course"))).id
                user = canvas_site.find_user(str(body.get("user"))).id
            except canvas.NotFound:
                return JSONResponse({"error": "no such Canvas course or user"}, 404)
            book = canvas_site.completion
        else:
            return JSONResponse({"error": 'lms is "moodle" or "canvas"'}, 400)
        book.catch_up()
        progress = book.mark(course, user, state)
        return JSONResponse(
            {
                "lms": body["lms"],
                "course": course,
                "user": user,
                "state": progress.state,
                **asdict(progress),
            }
        )

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
        Route("/_sim/clock", get_clock, methods=["GET"]),
        Route("/_sim/clock", advance_clock, methods=["POST"]),
        Route("/_sim/completion", get_completion, methods=["GET"]),
        Route("/_sim/completion", set_completion, methods=["POST"]),
        Route("/_sim/completion/mark", mark, methods=["POST"]),
        *moodle_rest.routes(moodle_site, knobs),
        *canvas.routes(canvas_site, knobs),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(Misbehaviour, knobs=knobs, counters=counters)
    app.state.knobs = knobs
    app.state.counters = counters
    app.state.moodle = moodle_site
    app.state.canvas = canvas_site
    app.state.clock = clock
    app.state.pace = pace
    return app


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def state_of(app: Starlette) -> dict[str, Any]:
    """The simulator's whole state (for tests in the same process)."""
    return {"moodle": app.state.moodle.snapshot(), "canvas": app.state.canvas.snapshot()}
