"""The SCIM server: the app ``bridge serve`` runs, in one process or in N workers."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
import threading
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import httpx
from starlette.applications import Starlette

from bridge.admin.app import admin_routes
from bridge.cli.database import open_database
from bridge.cli.logs import configure_logging
from bridge.cli.logs import uvicorn_log_config
from bridge.cli.relay import build_relay
from bridge.cli.rules import rule_book
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.events import EventApplier
from bridge.provision.reload_guard import ReloadGuard
from bridge.provision.resources import now_utc
from bridge.rules.book import RuleBook
from bridge.rules.check import render_errors
from bridge.rules.feeds import Feed
from bridge.rules.model import RuleErrors
from bridge.scheduler import Scheduler
from bridge.scheduler import Work
from bridge.schemas import Catalog
from bridge.schemas import SchemaError
from bridge.scim.app import Background
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.scim.hris import HrisIntake
from bridge.targets.hris_fetch import HrisFetcher
from bridge.telemetry import Telemetry
from bridge.telemetry import share_between_processes

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess directory (``serve --workers N`` sets it for its workers)."""

log = logging.getLogger("bridge")


def build_scheduler(
    provisioner: Provisioner, catalog: Catalog, book: RuleBook, settings: Settings
) -> Scheduler | None:
    """The scheduler of the rules' ``schedule:`` jobs (None with ``BRIDGE_SCHEDULER=off``)."""
    if not settings.scheduler:
        return None
    db = provisioner.db
    work = Work(
        db,
        provisioner.store,
        catalog,
        os.environ,
        now_utc,
        provisioner=provisioner,
        rules_dir=settings.rules_dir,
    )
    return Scheduler(db, book.current, work.runners(), clock=now_utc)


def build_events(provisioner: Provisioner, book: RuleBook) -> EventApplier:
    """The loop applying queued HR webhook events (thin ones completed from the HRIS)."""

    def feeds() -> Mapping[str, Feed]:
        ruleset = book.current()
        return {} if ruleset is None else ruleset.feeds

    fetcher = HrisFetcher(httpx.AsyncClient(), os.environ)
    return EventApplier(provisioner, feeds, fetcher=fetcher, clock=now_utc)


def build_app(
    settings: Settings,
    book: RuleBook | None = None,
    *,
    relay_in_process: bool = True,
    scheduler_in_process: bool | None = None,
    telemetry: Telemetry | None = None,
) -> Starlette:
    """Everything ``bridge serve`` runs: database (migrated), schemas, rules, auth, the app.

    ``scheduler_in_process`` (default: as ``relay_in_process``) runs the rules' schedule.
    ``telemetry``: the process's metrics (a fresh registry by default), counted by the app
    and the relay, exported at ``/metrics``.
    """
    telemetry = telemetry if telemetry is not None else Telemetry()
    db = open_database(settings, serving=True)
    catalog = load_schemas(settings)
    book = book or rule_book(settings, catalog)
    provisioner = Provisioner(db, catalog, rules=book.current, **store_options(settings))
    if book.gate is None:  # every process of a serve follows one decision per reload
        book.gate = ReloadGuard(db, provisioner.store, catalog)
    background: list[Background] = []
    events = build_events(provisioner, book)
    if relay_in_process:
        relay = build_relay(db, book.current(), settings=settings, rules=book.current)
        if relay is not None:
            relay.telemetry = telemetry
            background.append(relay.run)
            book.listeners.append(lambda _ruleset: relay.recheck())
    if relay_in_process if scheduler_in_process is None else scheduler_in_process:
        scheduler = build_scheduler(provisioner, catalog, book, settings)
        if scheduler is not None:
            background.append(scheduler.run)
        background.append(events.run)  # HR webhook events, applied once like the schedule
    jwt_verifier = None
    if settings.jwt.enabled:
        from bridge.auth.jwt import JwtVerifier

        jwt_verifier = JwtVerifier(settings.jwt)
    authenticate = Authenticator(db, env_token=settings.scim_token, jwt=jwt_verifier)
    hris = HrisIntake(
        provisioner, settings, os.environ, on_queued=events.wake, authenticate=authenticate
    )
    app = create_app(
        provisioner,
        catalog,
        settings,
        authenticate,
        background,
        hris,
        telemetry=telemetry,
        book=book,
        admin=admin_routes(provisioner, book.current, settings, authenticate),
    )
    app.state.events = events
    return app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="SCIM server processes (one per core); the relay still runs once.",
)
@click.option(
    "--keep-alive",
    default=5,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds an idle client connection stays open (above a load balancer's idle timeout).",
)
@click.option(
    "--no-relay",
    is_flag=True,
    help="Do not deliver to the LMS from this process (run `bridge relay`).",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Also log uvicorn's line per request (the SCIM server logs its own per SCIM request).",
)
def serve(
    host: str, port: int, workers: int, keep_alive: int, no_relay: bool, access_log: bool
) -> None:
    """Run the SCIM server at http://HOST:PORT/scim/v2, and the relay to the LMS.

    With ``--workers N`` the SCIM server runs in N processes sharing the database; the
    relay runs once, in the supervising process, so a target's rate limit holds as set.
    The rules' ``schedule:`` runs there too (``BRIDGE_SCHEDULER=off``: not in this bridge).
    ``--port 0`` takes a free port (the "listening on" line says which).
    """
    import uvicorn

    settings = load_settings()
    configure_logging(settings)
    shared = _shared_metrics() if workers > 1 else None
    try:
        catalog = load_schemas(settings)
        book = rule_book(settings, catalog)
        app = build_app(
            settings,
            book,
            relay_in_process=not no_relay and workers == 1,
            scheduler_in_process=workers == 1,
            telemetry=Telemetry(shared=shared) if shared else None,
        )
    except RuleErrors as exc:
        raise click.ClickException(
            f"the rules do not check clean:\n{render_errors(exc.errors)}"
        ) from exc
    except (SchemaError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    stop = threading.Event()
    book.watch(settings.rules_reload_seconds, stop)
    _unused_targets(book)
    if not settings.scim_token:
        log.info("no BRIDGE_SCIM_TOKEN set: create a token with `bridge tokens create NAME`")
    server_options = {
        "host": host,
        "port": port,
        "timeout_keep_alive": keep_alive,
        "log_config": uvicorn_log_config(access_log=access_log),
        "log_level": None,  # the levels are log_config's
        "access_log": access_log,
    }
    try:
        if workers == 1:
            _announcing_server(uvicorn.Config(app, **server_options)).run()  # type: ignore[arg-type]
            return
        relay = None if no_relay else _relay_thread(app, book, settings, stop)
        scheduler = _scheduler_thread(app, book, settings, stop)
        events = _loop_thread("hr-events", app.state.events.run, stop)
        _listening(host, port, workers)
        uvicorn.run(
            "bridge.cli.serving:worker_app",
            factory=True,
            workers=workers,
            **server_options,  # type: ignore[arg-type]
        )
    finally:
        stop.set()
    if relay is not None:
        relay.join(timeout=settings.relay_lease_seconds)
    if scheduler is not None:
        scheduler.join(timeout=settings.relay_lease_seconds)
    events.join(timeout=settings.relay_lease_seconds)


def listening_line(host: str, port: int) -> str:
    """The first line a new operator looks for: where the server is and where SCIM is."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    return f"listening on {base} (SCIM at {base}/scim/v2; probes at /healthz and /readyz)"


def _listening(host: str, port: int, workers: int = 1) -> None:
    more = f" in {workers} worker processes" if workers > 1 else ""
    log.info(
        "%s%s", listening_line(host, port), more, extra={"url": f"http://{host}:{port}/scim/v2"}
    )


def _unused_targets(book: RuleBook) -> None:
    """Say, once and quietly, which targets no rule file drives: the relay leaves them alone,
    so their unset credentials are no error."""
    ruleset = book.current()
    if ruleset is None:
        return
    unused = sorted(set(ruleset.targets) - {f.target for f in ruleset.files})
    if unused:
        log.info(
            "target(s) %s: no rule file uses them; not started (their credentials are not needed)",
            ", ".join(unused),
        )


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, saying where it listens once its socket is bound."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            bound = [s.getsockname() for server in self.servers for s in server.sockets]
            host, port = (
                (bound[0][0], bound[0][1]) if bound else (self.config.host, self.config.port)
            )
            _listening(str(host), int(port))

    return Server


def _announcing_server(config: Any) -> Any:
    """A uvicorn server that logs the "listening on" line once bound (its class is built on
    use: uvicorn loads only when ``serve`` runs)."""
    return _server_class()(config)


def _relay_thread(
    app: Starlette, book: RuleBook, settings: Settings, stop: threading.Event
) -> threading.Thread | None:
    """The relay of a multi-process ``serve``, on an event loop of its own in the supervisor."""
    relay = build_relay(
        app.state.server.provisioner.db, book.current(), settings=settings, rules=book.current
    )
    if relay is None:
        return None
    relay.telemetry = app.state.telemetry  # counted where every worker's scrape reads it
    book.listeners.append(lambda _ruleset: relay.recheck())

    return _loop_thread("relay", relay.run, stop)


def _scheduler_thread(
    app: Starlette, book: RuleBook, settings: Settings, stop: threading.Event
) -> threading.Thread | None:
    """The scheduler of a multi-process ``serve``, beside the relay in the supervisor."""
    provisioner = app.state.server.provisioner
    scheduler = build_scheduler(provisioner, app.state.server.catalog, book, settings)
    return None if scheduler is None else _loop_thread("scheduler", scheduler.run, stop)


def _loop_thread(
    name: str, loop_until: Callable[[asyncio.Event], Awaitable[None]], stop: threading.Event
) -> threading.Thread:
    """Run ``loop_until(done)`` on an event loop of its own in a thread, until ``stop``."""

    async def run() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=lambda: (stop.wait(), loop.call_soon_threadsafe(done.set)), daemon=True
        ).start()
        await loop_until(done)

    thread = threading.Thread(target=asyncio.run, args=(run(),), name=name, daemon=True)
    thread.start()
    return thread


def _shared_metrics() -> str:
    """``--workers N``: the directory where every process of this server counts its metrics
    (prometheus-client's multiprocess mode), created empty for this run; its workers inherit
    ``PROMETHEUS_MULTIPROC_DIR``, and the supervisor (its relay) counts there too."""
    import shutil
    import tempfile

    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        for stale in Path(given).glob("*.db"):  # counters of an earlier run: not this one's
            stale.unlink()
        directory = given
    else:
        directory = tempfile.mkdtemp(prefix="bridge-metrics-")
        atexit.register(shutil.rmtree, directory, True)
    os.environ[MULTIPROCESS_DIR] = directory
    share_between_processes()
    return directory


def worker_app() -> Starlette:
    """One process of ``bridge serve --workers N``: the SCIM server without the relay and
    the scheduler (they run once, in the supervisor)."""
    settings = load_settings()
    configure_logging(settings)
    catalog = load_schemas(settings)
    book = rule_book(settings, catalog)
    shared = os.environ.get(MULTIPROCESS_DIR)
    app = build_app(  # gives the book its reload guard
        settings,
        book,
        relay_in_process=False,
        telemetry=Telemetry(shared=shared) if shared else None,
    )
    book.watch(settings.rules_reload_seconds, threading.Event())
    return app
