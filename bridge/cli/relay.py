"""The relay to the LMS targets: built from the rules and the credentials, and ``bridge relay``."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from collections.abc import Mapping

import click

from bridge.cli.database import database
from bridge.cli.logs import configure_logging
from bridge.cli.rules import rule_book
from bridge.cli.settings import load_schemas
from bridge.cli.settings import load_settings
from bridge.cli.settings import store_options
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.preflight import preflight_for
from bridge.provision.reload_guard import ReloadGuard
from bridge.provision.resources import now_utc
from bridge.relay import Relay
from bridge.rules.check import render_errors
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.rules.model import Target as TargetConfig
from bridge.store.engine import Database
from bridge.targets.base import TargetConfigError
from bridge.targets.registry import make_target


def batch_size(config: TargetConfig) -> int | None:
    """A target's ``options.batch_size``: rows per ``deliver_many`` call (1: one intent per
    call, batching off; None: the target's default); TargetConfigError if it is not a whole
    number from 1 up."""
    size = config.options.get("batch_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise TargetConfigError(
            f"target {config.name!r}: batch_size must be a whole number from 1 up, not {size!r}"
        )
    return size


def build_relay(
    db: Database,
    ruleset: RuleSet | None,
    env: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    rules: Callable[[], RuleSet | None] | None = None,
) -> Relay | None:
    """A relay for every target whose credentials are set; targets without are left waiting.

    The relay checks every target (preflight) when it starts, re-checks a failing one every
    ``BRIDGE_PREFLIGHT_RECHECK_SECONDS`` against the rules loaded then (``rules``, e.g. a
    RuleBook's ``current``), and holds a failing target's intents until it passes.
    A target with ``deliver_many`` gets rows in batches of its ``options.batch_size``
    (default 200; 1 turns batching off); ``BRIDGE_RELAY_BATCH`` rows are claimed a cycle.
    """
    if ruleset is None or not ruleset.targets:
        return None
    env = os.environ if env is None else env
    targets = {}
    sizes: dict[str, int] = {}
    used = {rule_file.target for rule_file in ruleset.files}
    for name, config in ruleset.targets.items():
        if name not in used:
            continue  # no rule file drives it: nothing will ever be queued for it
        try:
            size = batch_size(config)
            targets[name] = make_target(config, env)
            if size is not None:
                sizes[name] = size
        except TargetConfigError as exc:
            logging.getLogger("bridge.relay").error("%s: its intents wait in the outbox", exc)
    if not targets:
        return None
    settings = settings or Settings()
    return Relay(
        db,
        targets,
        clock=now_utc,
        lease_seconds=settings.relay_lease_seconds,
        batch=settings.relay_batch or None,
        batch_sizes=sizes,
        per_target=settings.relay_per_target,
        preflight=preflight_for(db, rules or (lambda: ruleset), targets, now=now_utc),
        recheck_seconds=settings.preflight_recheck_seconds,
        probe_cap=settings.probe_cap_seconds,
    )


def serve_metrics(relay: Relay, host: str, port: int) -> int:
    """Export the relay's counters (deliveries, retries, dead letters, write → confirmed) in
    Prometheus' text format on ``host:port`` (``/metrics``, no token: bind it where only the
    scraper reaches); the port bound (0 picks a free one)."""
    from prometheus_client import start_http_server

    from bridge.telemetry import Telemetry

    telemetry = relay.telemetry if relay.telemetry is not None else Telemetry()
    relay.telemetry = telemetry
    server, _ = start_http_server(port, addr=host, registry=telemetry.registry)
    bound = int(server.server_port)
    logging.getLogger("bridge.relay").info(
        "relay metrics on http://%s:%d/metrics", host, bound, extra={"port": bound}
    )
    return bound


@click.command(name="relay")
@click.option("--once", is_flag=True, help="Deliver what is due, then stop.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve the relay's Prometheus metrics on this port (no token: keep it internal).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
def relay_command(once: bool, metrics_port: int | None, metrics_host: str) -> None:
    """Deliver outbox rows to the LMS targets (any number of these share a PostgreSQL outbox)."""
    import asyncio
    import signal

    settings = load_settings()
    configure_logging(settings)
    catalog = load_schemas(settings)
    try:
        book = rule_book(settings, catalog)
    except RuleErrors as exc:
        raise click.ClickException(render_errors(exc.errors)) from exc
    with database(settings) as db:
        book.gate = ReloadGuard(
            db, Provisioner(db, catalog, **store_options(settings)).store, catalog
        )
        relay = build_relay(db, book.current(), settings=settings, rules=book.current)
        if relay is None:
            raise click.ClickException(
                "no target can be built: check rules/targets.yaml and the credentials' variables"
            )

        async def run() -> None:
            if once:
                try:
                    while await relay.run_once():
                        pass
                finally:
                    await relay.aclose()
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await relay.run(stop)

        if metrics_port is not None:
            serve_metrics(relay, metrics_host, metrics_port)
        watching = threading.Event()
        if not once:  # a rules reload is checked against the targets before it is relied on
            book.listeners.append(lambda _ruleset: relay.recheck())
            book.watch(settings.rules_reload_seconds, watching)
        try:
            asyncio.run(run())
        finally:
            watching.set()
