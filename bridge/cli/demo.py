"""The demonstrations: ``bridge lmssim`` runs the LMS simulator, ``bridge demo`` the guide's pilot."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import click

from bridge.lmssim import SIM_CANVAS_TOKEN
from bridge.lmssim import SIM_MOODLE_TOKEN

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.demo import Wiring
    from bridge.relay import Relay
    from bridge.rules.book import RuleBook
    from bridge.rules.model import RuleSet
    from bridge.store.engine import Database


@click.command(name="lmssim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int, help="0: a free port.")
@click.option(
    "--moodle-token",
    default=SIM_MOODLE_TOKEN,
    show_default=True,
    envvar="LMSSIM_MOODLE_TOKEN",
    show_envvar=True,
    help="The web-service token the simulated Moodle accepts.",
)
@click.option(
    "--canvas-token",
    default=SIM_CANVAS_TOKEN,
    show_default=True,
    envvar="LMSSIM_CANVAS_TOKEN",
    show_envvar=True,
    help="The bearer token the simulated Canvas accepts.",
)
@click.option("--latency-ms", default=0.0, show_default=True)
@click.option(
    "--rate-limit", default=None, type=float, help="Requests per second (429 / Canvas 403 above)."
)
@click.option(
    "--error-rate", default=0.0, show_default=True, help="Share of calls failing with a 500 or 502."
)
@click.option(
    "--outage-seconds",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="An outage window: every call answers 503 (Retry-After: 1) for this long. "
    'At run time: POST /_sim/knobs {"outage_seconds": N}.',
)
@click.option(
    "--outage-after",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds after start when the outage window opens.",
)
@click.option(
    "--real-timing",
    is_flag=True,
    help="Take a real site's time: ~36 ms a Moodle call, ~10 ms a further batch row, "
    "~36 ms a Canvas request.",
)
@click.option(
    "--completion-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of enrolled learners completing their course each simulated day.",
)
@click.option(
    "--start-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of learners not started who start each simulated day.",
)
@click.option(
    "--days-per-minute",
    default=None,
    type=float,
    help="Run the simulated clock faster: N simulated days per real minute.",
)
@click.option("--seed", default=None, type=int, help="Seed for simulated errors and learners.")
def lmssim_command(
    host: str,
    port: int,
    moodle_token: str,
    canvas_token: str,
    latency_ms: float,
    rate_limit: float | None,
    error_rate: float,
    outage_seconds: float,
    outage_after: float,
    real_timing: bool,
    completion_rate: float,
    start_rate: float,
    days_per_minute: float | None,
    seed: int | None,
) -> None:
    """Run the LMS simulator (Moodle web services + Canvas REST) for demos and tests.

    On start it prints where each LMS answers and the token it accepts; the shipped
    rules/targets.yaml points at 127.0.0.1:8100.
    """
    import socket
    import sys
    import threading

    import uvicorn

    from bridge.lmssim.app import Knobs
    from bridge.lmssim.app import banner
    from bridge.lmssim.app import create_app as create_simulator
    from bridge.lmssim.clock import SimClock

    make = Knobs.real_site if real_timing else Knobs
    knobs = make(
        latency_ms=latency_ms, rate_limit_per_s=rate_limit, error_rate=error_rate, seed=seed
    )
    clock = SimClock(speed=days_per_minute * 86400 / 60) if days_per_minute else None
    app = create_simulator(
        knobs,
        moodle_token=moodle_token,
        canvas_token=canvas_token,
        clock=clock,
        completion_rate=completion_rate,
        start_rate=start_rate,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    listener.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    lines = banner(
        f"http://{shown}:{bound}",
        moodle_token=moodle_token,
        canvas_token=canvas_token,
        outage_seconds=outage_seconds,
        outage_after=outage_after,
    )
    click.echo("\n".join(lines))
    sys.stdout.flush()  # seen at once when stdout is a pipe (a supervisor, a test)
    if outage_seconds > 0:
        if outage_after > 0:
            opens = threading.Timer(outage_after, knobs.outage, [outage_seconds])
            opens.daemon = True
            opens.start()
        else:
            knobs.outage(outage_seconds)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[listener])


@click.command(name="demo")
@click.option(
    "--people",
    default=200,
    show_default=True,
    type=click.IntRange(20, 2000),
    help="HR records in the pilot department (Claims); ~10% more in other departments.",
)
@click.option(
    "--database",
    "database_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file to create and keep (it must not exist). Default: a temporary file.",
)
@click.option(
    "--keep", is_flag=True, help="Keep the temporary database and rules to inspect afterwards."
)
def demo_command(people: int, database_path: Path | None, keep: bool) -> None:
    """The guide's 30-day, 200-person pilot, compressed: LMS simulator, SCIM, relay, a report."""
    from rich.console import Console

    from bridge.demo import DemoError
    from bridge.demo import render
    from bridge.demo import run_demo

    console = Console()
    try:
        with _quiet_logs():
            summary = run_demo(
                demo_wiring(), people=people, database=database_path, keep=keep, console=console
            )
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    render(summary, console)


def demo_wiring() -> Wiring:
    """The bridge as ``bridge serve`` and ``bridge relay`` build it, for ``bridge demo``: the
    rule book, the app without its own relay (the demo runs one beside it), and the relay."""
    from bridge.cli.relay import build_relay
    from bridge.cli.rules import rule_book
    from bridge.cli.serving import build_app
    from bridge.demo import Wiring

    def app(settings: Settings, book: RuleBook) -> Any:
        return build_app(settings, book, relay_in_process=False)

    def relay(
        db: Database, ruleset: RuleSet, env: Mapping[str, str], settings: Settings
    ) -> Relay | None:
        return build_relay(db, ruleset, env, settings=settings)

    return Wiring(rule_book=rule_book, app=app, relay=relay)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Only warnings and errors from the bridge's loggers while the progress bars run."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)
