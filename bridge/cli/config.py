"""``bridge config``: the settings a bridge process started here would run with.

Each ``BRIDGE_*`` variable with its effective value, whether it came from the environment or
is the default, and what it may be; tokens, the cursor secret and the password inside the
database URL are masked. A variable that is not allowed fails here as it would at start.
"""

from __future__ import annotations

import difflib
import json
import os

import click

from bridge.cli.settings import load_settings
from bridge.config import VARIABLES
from bridge.config import Effective
from bridge.config import effective

UNSET = "(unset)"


def near_misses(names: list[str]) -> dict[str, str]:
    """Variables in the environment that look like a misspelt setting: name → the setting."""
    found = {}
    for name in names:
        if name.startswith("BRIDGE_") and name not in VARIABLES:
            close = difflib.get_close_matches(name, VARIABLES, n=1, cutoff=0.85)
            if close:
                found[name] = close[0]
    return found


def render(rows: list[Effective]) -> str:
    """One line a variable: name, value, origin (aligned columns, nothing wider than needed)."""
    width = max(len(row.variable) for row in rows)
    shown = [row.value if row.value is not None else UNSET for row in rows]
    value_width = min(max(len(value) for value in shown), 48)
    return "\n".join(
        f"{row.variable:<{width}}  {value:<{value_width}}  {row.origin}"
        for row, value in zip(rows, shown, strict=True)
    )


@click.command(name="config")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object: {"BRIDGE_…": {"value", "source", "allowed"}}.',
)
def config_command(as_json: bool) -> None:
    """The effective settings: every BRIDGE_* variable, its value, and whether it came from
    the environment (env) or is the default; secrets masked.

    A variable that is not an allowed value is refused here as at start: one line naming
    it, its value and what is allowed, exit 2.
    """
    settings = load_settings()
    rows = effective(settings, os.environ)
    if as_json:
        document = {
            row.variable: {"value": row.value, "source": row.origin, "allowed": row.allowed}
            for row in rows
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(render(rows))
    for name, setting in sorted(near_misses(list(os.environ)).items()):
        click.echo(f"warning: {name} is not a setting (did you mean {setting}?)", err=True)
