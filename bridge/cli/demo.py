"""The demonstrations: ``bridge lmssim`` runs the LMS simulator, ``bridge demo`` the guide's pilot."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="lmssim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True)
@click.option(
    "--rate-limit", default=None, type=float, help="Requests per second (429 / Canvas 403 above)."
)
@click.option(
    "--error-rate", default=0.0, show_default=True, help="Share of calls failing with a 5xx."
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
    latency_ms: float,
    rate_limit: float | None,
    error_rate: float,
    real_timing: bool,
    completion_rate: float,
    start_rate: float,
    days_per_minute: float | None,
    seed: int | None,
) -> None:
    """Run the LMS simulator (Moodle web services + Canvas REST) for demos and tests."""
    import uvicorn

    from bridge.lmssim.app import Knobs
    from bridge.lmssim.app import create_app as create_simulator
    from bridge.lmssim.clock import SimClock

    make = Knobs.real_site if real_timing else Knobs
    knobs = make(
        latency_ms=latency_ms, rate_limit_per_s=rate_limit, error_rate=error_rate, seed=seed
    )
    clock = SimClock(speed=days_per_minute * 86400 / 60) if days_per_minute else None
    app = create_simulator(
        knobs, clock=clock, completion_rate=completion_rate, start_rate=start_rate
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


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
    from bridge.demo import main as run

    run(people=people, database=database_path, keep=keep)
