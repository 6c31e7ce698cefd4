"""Settings of one bridge process, read from ``BRIDGE_*`` environment variables; frozen."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///bridge.db"
USERNAME_POLICIES = ("exact", "nfkc")
"""``exact``: a userName is kept as sent (RFC 7643 compares it case-insensitively);
``nfkc``: it is trimmed and NFKC-normalised before it is stored or compared."""


def _number(
    env: Mapping[str, str],
    name: str,
    default: str,
    kind: type[int] | type[float] = int,
    *,
    minimum: float = 1,
    maximum: float | None = None,
) -> Any:
    """One numeric variable, or ValueError naming it, the value and what it must be."""
    raw = env.get(name, default).strip()
    what = "a whole number" if kind is int else "a number"
    bounds = f" from {minimum:g}" + (f" to {maximum:g}" if maximum is not None else " up")
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}{bounds}, not {raw!r}") from None
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {what}{bounds}, not {raw!r}")
    return value


@dataclass(frozen=True)
class JwtSettings:
    """Where signed-JWT bearer tokens are verified against (issuer, audience, keys)."""

    jwks_url: str | None = None
    key_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    scope_claim: str = "scope"
    leeway_seconds: int = 30

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_url or self.key_file)


@dataclass(frozen=True)
class Settings:
    """Everything a bridge process is configured with."""

    database_url: str = DEFAULT_DATABASE_URL
    scim_token: str | None = None
    schemas_dir: Path = Path("schemas")
    rules_dir: Path = Path("rules")
    log_format: str = "text"
    base_url: str | None = None
    max_page_size: int = 200
    max_bulk_operations: int = 1000
    max_payload_bytes: int = 1_048_576
    rules_reload_seconds: float = 5.0
    relay_lease_seconds: float = 60.0
    relay_per_target: int = 8
    relay_batch: int = 0  # rows claimed a cycle; 0: 500 when a target takes batches, else 64
    preflight_recheck_seconds: float = 30.0
    probe_cap_seconds: float = 5.0
    max_string_length: int = 2048
    max_filter_terms: int = 64
    max_filter_length: int = 8192
    query_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    username_policy: str = "exact"
    cursor_secret: str | None = None
    scheduler: bool = True
    """``BRIDGE_SCHEDULER=on|off``: whether ``bridge serve`` runs the rules' ``schedule:``."""
    jwt: JwtSettings = field(default_factory=JwtSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (the process environment by default)."""
        env = os.environ if env is None else env
        log_format = env.get("BRIDGE_LOG_FORMAT", "text").lower()
        if log_format not in ("json", "text"):
            raise ValueError(f"BRIDGE_LOG_FORMAT must be 'json' or 'text', not {log_format!r}")
        key_file = env.get("BRIDGE_JWT_KEY_FILE")
        username_policy = env.get("BRIDGE_USERNAME_POLICY", "exact").strip().lower()
        if username_policy not in USERNAME_POLICIES:
            allowed = " or ".join(repr(p) for p in USERNAME_POLICIES)
            raise ValueError(f"BRIDGE_USERNAME_POLICY must be {allowed}, not {username_policy!r}")
        scheduler = env.get("BRIDGE_SCHEDULER", "on").strip().lower()
        if scheduler not in ("on", "off"):
            raise ValueError(f"BRIDGE_SCHEDULER must be 'on' or 'off', not {scheduler!r}")
        return cls(
            database_url=env.get("BRIDGE_DATABASE_URL", DEFAULT_DATABASE_URL),
            scim_token=env.get("BRIDGE_SCIM_TOKEN") or None,
            schemas_dir=Path(env.get("BRIDGE_SCHEMAS", "schemas")),
            rules_dir=Path(env.get("BRIDGE_RULES", "rules")),
            log_format=log_format,
            base_url=env.get("BRIDGE_BASE_URL") or None,
            max_page_size=_number(env, "BRIDGE_MAX_PAGE_SIZE", "200"),
            max_bulk_operations=_number(env, "BRIDGE_MAX_BULK_OPERATIONS", "1000"),
            max_payload_bytes=_number(env, "BRIDGE_MAX_PAYLOAD_BYTES", "1048576", minimum=1024),
            rules_reload_seconds=_number(
                env, "BRIDGE_RULES_RELOAD_SECONDS", "5", float, minimum=0.1, maximum=86400
            ),
            relay_lease_seconds=_number(
                env, "BRIDGE_RELAY_LEASE_SECONDS", "60", float, minimum=1, maximum=86400
            ),
            relay_per_target=_number(env, "BRIDGE_RELAY_CONCURRENCY", "8", maximum=1024),
            relay_batch=_number(env, "BRIDGE_RELAY_BATCH", "0", minimum=0, maximum=100_000),
            preflight_recheck_seconds=_number(
                env, "BRIDGE_PREFLIGHT_RECHECK_SECONDS", "30", float, minimum=1, maximum=86400
            ),
            probe_cap_seconds=_number(
                env, "BRIDGE_PROBE_CAP_SECONDS", "5", float, minimum=0.1, maximum=3600
            ),
            max_string_length=_number(
                env, "BRIDGE_MAX_STRING_LENGTH", "2048", minimum=64, maximum=1_048_576
            ),
            max_filter_terms=_number(env, "BRIDGE_MAX_FILTER_TERMS", "64", maximum=1000),
            max_filter_length=_number(
                env, "BRIDGE_MAX_FILTER_LENGTH", "8192", minimum=256, maximum=1_048_576
            ),
            query_timeout_seconds=_number(
                env, "BRIDGE_QUERY_TIMEOUT_SECONDS", "10", float, minimum=0.05, maximum=3600
            ),
            body_timeout_seconds=_number(
                env, "BRIDGE_BODY_TIMEOUT_SECONDS", "30", float, minimum=0.05, maximum=3600
            ),
            username_policy=username_policy,
            cursor_secret=env.get("BRIDGE_CURSOR_SECRET") or None,
            scheduler=scheduler == "on",
            jwt=JwtSettings(
                jwks_url=env.get("BRIDGE_JWT_JWKS_URL") or None,
                key_file=Path(key_file) if key_file else None,
                issuer=env.get("BRIDGE_JWT_ISSUER") or None,
                audience=env.get("BRIDGE_JWT_AUDIENCE") or None,
                scope_claim=env.get("BRIDGE_JWT_SCOPE_CLAIM", "scope"),
                leeway_seconds=_number(
                    env, "BRIDGE_JWT_LEEWAY_SECONDS", "30", minimum=0, maximum=3600
                ),
            ),
        )
