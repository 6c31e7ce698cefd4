"""The bridge's configuration, read from the environment: the one place that reads it."""

from __future__ import annotations

from typing import Any

import click

from bridge.config import Settings
from bridge.schemas import Catalog
from bridge.schemas import SchemaError
from bridge.schemas import load_catalog

MISSING_SCHEMAS_FIX = (
    ": set BRIDGE_SCHEMAS to the directory of the SCIM schemas (schemas/*.json), "
    "or run where ./schemas is"
)


def load_settings() -> Settings:
    """``Settings.from_env()``, a broken variable reported as a usage error."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def load_schemas(settings: Settings) -> Catalog:
    """The SCIM schemas of ``BRIDGE_SCHEMAS``; a missing or broken directory is a one-line
    error naming it (exit 1), not a traceback."""
    try:
        return load_catalog(settings.schemas_dir)
    except SchemaError as exc:
        missing = not settings.schemas_dir.is_dir()
        fix = MISSING_SCHEMAS_FIX if missing else ""
        raise click.ClickException(f"{exc}{fix}") from exc


def store_options(settings: Settings) -> dict[str, Any]:
    """What a Provisioner takes from the settings: how userNames compare, the cursor key."""
    return {"username_policy": settings.username_policy, "cursor_secret": settings.cursor_secret}
