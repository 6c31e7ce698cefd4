"""The bridge's configuration, read from the environment: the one place that reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

import click

from bridge.config import ConfigError
from bridge.config import Settings

if TYPE_CHECKING:
    from bridge.schemas import Catalog

MISSING_SCHEMAS_FIX = (
    ": set BRIDGE_SCHEMAS to the directory of the SCIM schemas (schemas/*.json), "
    "or run where ./schemas is"
)


class BadSetting(click.ClickException):
    """A ``BRIDGE_*`` variable that is not an allowed value: exit 2, like a bad option, with
    one line per variable (its name, its value, what is allowed) and no usage text."""

    exit_code = 2


def load_settings() -> Settings:
    """``Settings.from_env()``, a bad variable reported as ``BadSetting``."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise BadSetting(str(exc)) from exc


def load_schemas(settings: Settings) -> Catalog:
    """The SCIM schemas of ``BRIDGE_SCHEMAS``; a missing or broken directory is a one-line
    error naming it (exit 1), not a traceback."""
    from bridge.schemas import SchemaError  # scim2-models: loaded by the commands that use it
    from bridge.schemas import load_catalog

    try:
        return load_catalog(settings.schemas_dir)
    except SchemaError as exc:
        missing = not settings.schemas_dir.is_dir()
        fix = MISSING_SCHEMAS_FIX if missing else ""
        raise click.ClickException(f"{exc}{fix}") from exc


def store_options(settings: Settings) -> dict[str, Any]:
    """What a Provisioner takes from the settings: how userNames compare, the cursor key."""
    return {"username_policy": settings.username_policy, "cursor_secret": settings.cursor_secret}
