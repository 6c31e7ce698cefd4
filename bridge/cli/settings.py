"""The bridge's configuration, read from the environment: the one place that reads it."""

from __future__ import annotations

import click

from bridge.config import Settings


def load_settings() -> Settings:
    """``Settings.from_env()``, a broken variable reported as a usage error."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
