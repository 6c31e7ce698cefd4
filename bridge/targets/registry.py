"""Build the targets a rule set names, with credentials read from the environment."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Mapping

import httpx

from bridge.rules.model import Target as TargetConfig
from bridge.targets.base import Target
from bridge.targets.base import TargetConfigError
from bridge.targets.pacing import PacedTransport

TransportFor = Callable[[TargetConfig], httpx.AsyncBaseTransport | None]


def _credentials(config: TargetConfig, env: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for name, variable in config.credentials.items():
        value = env.get(variable)
        if not value:
            raise TargetConfigError(
                f"target {config.name!r}: environment variable {variable} ({name}) is not set"
            )
        found[name] = value
    return found


def make_target(
    config: TargetConfig,
    env: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> Target:
    """Build one target; TargetConfigError (never another error) when it cannot be built.

    ``options.rate_limit_per_s`` paces every request to that LMS (see ``pacing``).
    """
    config = resolved(config, env)
    rate = config.options.get("rate_limit_per_s")
    if rate is not None:
        if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
            raise TargetConfigError(
                f"target {config.name!r}: rate_limit_per_s must be a positive number"
            )
        burst = int(config.options.get("rate_limit_burst", 2))
        transport = PacedTransport(
            transport or httpx.AsyncHTTPTransport(retries=1), float(rate), burst
        )
    try:
        return _make(config, env, transport)
    except TargetConfigError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise TargetConfigError(f"target {config.name!r}: {exc}") from exc


def resolved(config: TargetConfig, env: Mapping[str, str]) -> TargetConfig:
    """The target with ``base_url: env:VARIABLE`` read from the environment (one image, one
    rules directory, an LMS address per deployment); TargetConfigError when it is not set."""
    if not config.base_url.startswith("env:"):
        return config
    variable = config.base_url[4:]
    value = env.get(variable, "").strip()
    if not value:
        raise TargetConfigError(
            f"target {config.name!r}: environment variable {variable} (base_url) is not set"
        )
    return dataclasses.replace(config, base_url=value)


def _make(
    config: TargetConfig,
    env: Mapping[str, str],
    transport: httpx.AsyncBaseTransport | None,
) -> Target:
    credentials = _credentials(config, env)
    if config.kind == "moodle":
        from bridge.targets.moodle import MoodleTarget

        return MoodleTarget(config, credentials.get("token", ""), transport=transport)
    if config.kind == "canvas":
        from bridge.targets.canvas import CanvasTarget

        return CanvasTarget(config, credentials.get("token", ""), transport=transport)
    if config.kind == "rest":
        from bridge.targets.rest import RestTarget

        return RestTarget(config, credentials, transport=transport)
    if config.kind == "scim":
        from bridge.targets.scim import ScimTarget

        return ScimTarget(
            config, credentials.get("token", ""), transport=transport, credentials=credentials
        )
    raise TargetConfigError(f"target {config.name!r}: unknown kind {config.kind!r}")


def make_targets(
    configs: Mapping[str, TargetConfig],
    env: Mapping[str, str],
    transport_for: TransportFor | None = None,
    *,
    only: set[str] | None = None,
) -> dict[str, Target]:
    """Every target (or those named in ``only``): TargetConfigError if one cannot be built."""
    return {
        name: make_target(config, env, transport_for(config) if transport_for else None)
        for name, config in configs.items()
        if only is None or name in only
    }
