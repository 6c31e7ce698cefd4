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
def lmssim_command(
    host: str, port: int, latency_ms: float, rate_limit: float | None, error_rate: float
) -> None:
    """Run the LMS simulator (Moodle web services + Canvas REST) for demos and tests."""
    import uvicorn

    from bridge.lmssim.app import Knobs
    from bridge.lmssim.app import create_app as create_simulator

    knobs = Knobs(latency_ms=latency_ms, rate_limit_per_s=rate_limit, error_rate=error_rate)
    uvicorn.run(create_simulator(knobs), host=host, port=port, log_level="warning")


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
