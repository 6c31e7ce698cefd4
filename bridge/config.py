"""Settings of one bridge process, read from ``BRIDGE_*`` environment variables; frozen.

A pydantic-settings model: every variable is typed and bounded, and ``Settings.from_env``
refuses a bad one with one line naming the variable, its value and what is allowed. Building
``Settings(...)`` directly reads no environment (tests and the demo configure by argument).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from typing import Any
from typing import Literal
from typing import get_args
from typing import get_origin

import annotated_types
from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationError
from pydantic import model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
from pydantic_settings import PydanticBaseSettingsSource
from pydantic_settings import SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///bridge.db"
USERNAME_POLICIES = ("exact", "nfkc")
"""``exact``: a userName is kept as sent (RFC 7643 compares it case-insensitively);
``nfkc``: it is trimmed and NFKC-normalised before it is stored or compared."""

DATABASE_URL_ALLOWED = "a sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/NAME URL"
_DATABASE_URL = re.compile(
    r"^sqlite(\+\w+)?://(/.+)?$"
    r"|^postgres(ql)?(\+\w+)?://([^@/]*@)?(\[[^\]]*\]|[^:/@?]*)(:\d+)?(/[^?]*)?(\?.*)?$"
)
_PASSWORD_IN_URL = re.compile(r"^(?P<head>[\w+]+://[^:/@]*:)(?P<password>[^@]*)(?P<at>@)")


def _blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _folded(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _on_off(value: Any) -> Any:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("on", "off"):
            return word == "on"
        raise ValueError("not on or off")
    return value


def _database_url(value: str) -> str:
    if not _DATABASE_URL.match(value.strip()):
        raise ValueError("not a database URL")
    return value.strip()


def _allowed(text: str) -> dict[str, Any]:
    return {"allowed": text}


Optional = Annotated[str | None, BeforeValidator(_blank_is_none)]
OptionalPath = Annotated[Path | None, BeforeValidator(_blank_is_none)]


class JwtSettings(BaseModel):
    """Where signed-JWT bearer tokens are verified against (issuer, audience, keys)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    jwks_url: Optional = Field(None, validation_alias="BRIDGE_JWT_JWKS_URL")
    key_file: OptionalPath = Field(None, validation_alias="BRIDGE_JWT_KEY_FILE")
    issuer: Optional = Field(None, validation_alias="BRIDGE_JWT_ISSUER")
    audience: Optional = Field(None, validation_alias="BRIDGE_JWT_AUDIENCE")
    scope_claim: str = Field("scope", min_length=1, validation_alias="BRIDGE_JWT_SCOPE_CLAIM")
    leeway_seconds: int = Field(30, ge=0, le=3600, validation_alias="BRIDGE_JWT_LEEWAY_SECONDS")

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_url or self.key_file)


def _seconds(default: float, variable: str, *, ge: float, le: float) -> Any:
    return Field(default, ge=ge, le=le, allow_inf_nan=False, validation_alias=variable)


class Settings(BaseSettings):
    """Everything a bridge process is configured with."""

    model_config = SettingsConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", case_sensitive=True
    )

    database_url: Annotated[str, AfterValidator(_database_url)] = Field(
        DEFAULT_DATABASE_URL,
        validation_alias="BRIDGE_DATABASE_URL",
        json_schema_extra=_allowed(DATABASE_URL_ALLOWED),
    )
    scim_token: Optional = Field(None, validation_alias="BRIDGE_SCIM_TOKEN")
    schemas_dir: Path = Field(Path("schemas"), validation_alias="BRIDGE_SCHEMAS")
    rules_dir: Path = Field(Path("rules"), validation_alias="BRIDGE_RULES")
    log_format: Annotated[Literal["json", "text"], BeforeValidator(_folded)] = Field(
        "text", validation_alias="BRIDGE_LOG_FORMAT"
    )
    base_url: Optional = Field(None, validation_alias="BRIDGE_BASE_URL")
    max_page_size: int = Field(200, ge=1, le=100_000, validation_alias="BRIDGE_MAX_PAGE_SIZE")
    max_bulk_operations: int = Field(
        1000, ge=1, le=100_000, validation_alias="BRIDGE_MAX_BULK_OPERATIONS"
    )
    max_payload_bytes: int = Field(
        1_048_576, ge=1024, le=1_073_741_824, validation_alias="BRIDGE_MAX_PAYLOAD_BYTES"
    )
    rules_reload_seconds: float = _seconds(5.0, "BRIDGE_RULES_RELOAD_SECONDS", ge=0.1, le=86400)
    relay_lease_seconds: float = _seconds(60.0, "BRIDGE_RELAY_LEASE_SECONDS", ge=1, le=86400)
    relay_per_target: int = Field(8, ge=1, le=1024, validation_alias="BRIDGE_RELAY_CONCURRENCY")
    relay_batch: int = Field(0, ge=0, le=100_000, validation_alias="BRIDGE_RELAY_BATCH")
    """Rows claimed a cycle; 0: 500 when a target takes batches, else 64."""
    preflight_recheck_seconds: float = _seconds(
        30.0, "BRIDGE_PREFLIGHT_RECHECK_SECONDS", ge=1, le=86400
    )
    probe_cap_seconds: float = _seconds(5.0, "BRIDGE_PROBE_CAP_SECONDS", ge=0.1, le=3600)
    max_string_length: int = Field(
        2048, ge=64, le=1_048_576, validation_alias="BRIDGE_MAX_STRING_LENGTH"
    )
    max_filter_terms: int = Field(64, ge=1, le=1000, validation_alias="BRIDGE_MAX_FILTER_TERMS")
    max_filter_length: int = Field(
        8192, ge=256, le=1_048_576, validation_alias="BRIDGE_MAX_FILTER_LENGTH"
    )
    query_timeout_seconds: float = _seconds(10.0, "BRIDGE_QUERY_TIMEOUT_SECONDS", ge=0.05, le=3600)
    body_timeout_seconds: float = _seconds(30.0, "BRIDGE_BODY_TIMEOUT_SECONDS", ge=0.05, le=3600)
    username_policy: Annotated[Literal["exact", "nfkc"], BeforeValidator(_folded)] = Field(
        "exact", validation_alias="BRIDGE_USERNAME_POLICY"
    )
    cursor_secret: Optional = Field(None, validation_alias="BRIDGE_CURSOR_SECRET")
    scheduler: Annotated[bool, BeforeValidator(_on_off)] = Field(
        True, validation_alias="BRIDGE_SCHEDULER", json_schema_extra=_allowed("'on' or 'off'")
    )
    """``BRIDGE_SCHEDULER=on|off``: whether ``bridge serve`` runs the rules' ``schedule:``."""
    jwt: JwtSettings = Field(default_factory=JwtSettings)

    @model_validator(mode="before")
    @classmethod
    def _jwt_from_variables(cls, data: Any) -> Any:
        """The flat ``BRIDGE_JWT_*`` variables make the nested ``jwt`` settings."""
        if isinstance(data, dict) and "jwt" not in data:
            found = {k: v for k, v in data.items() if str(k).startswith("BRIDGE_JWT_")}
            if found:
                return {**data, "jwt": found}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments only: ``from_env`` is the one reader of the environment."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (the process environment by default); a bad
        variable is a ``ConfigError`` naming it, its value and what is allowed."""
        source = Variables(cls, os.environ if env is None else env)
        try:
            return cls(**source())
        except ValidationError as exc:
            raise ConfigError(_messages(exc)) from None


class ConfigError(ValueError):
    """One or more ``BRIDGE_*`` variables are not allowed values (one line each)."""


class Variables(PydanticBaseSettingsSource):
    """The ``BRIDGE_*`` variables of one mapping (the process environment by default),
    keyed by variable name, the nested ``jwt`` settings' included."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = str(field.validation_alias or field_name)
        return self.env.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        return {name: self.env[name] for name in VARIABLES if name in self.env}


def _fields() -> dict[str, FieldInfo]:
    """Every variable's field, by variable name."""
    found: dict[str, FieldInfo] = {}
    for model in (Settings, JwtSettings):
        for info in model.model_fields.values():
            if isinstance(info.validation_alias, str):
                found[info.validation_alias] = info
    return found


def allowed(info: FieldInfo) -> str:
    """What a variable may be, in words: its type and bounds, or its choices."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    kind = info.annotation
    if get_origin(kind) is Literal:
        return " or ".join(repr(choice) for choice in get_args(kind))
    if kind in (int, float):
        what = "a whole number" if kind is int else "a number"
        low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
        high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
        bounds = f" from {_number(low)}" if low is not None else ""
        bounds += f" to {_number(high)}" if high is not None else " up"
        return what + bounds
    if kind is Path:
        return "a path"
    if kind == (Path | None):
        return "a path or unset"
    if kind is str:
        empty = any(isinstance(m, annotated_types.MinLen) for m in info.metadata)
        return "a non-empty string" if empty else "a string"
    return "a non-empty string or unset"


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _messages(exc: ValidationError) -> str:
    fields = _fields()
    lines = []
    for error in exc.errors():
        name = next((str(p) for p in reversed(error["loc"]) if str(p) in fields), None)
        if name is None:
            lines.append(str(error["msg"]))
            continue
        value = error["input"]
        if name == "BRIDGE_DATABASE_URL" and isinstance(value, str):
            value = mask_url(value)
        lines.append(f"{name} must be {allowed(fields[name])}, not {value!r}")
    return "\n".join(lines)


VARIABLES: tuple[str, ...] = tuple(
    alias
    for model in (Settings, JwtSettings)
    for alias in (f.validation_alias for f in model.model_fields.values())
    if isinstance(alias, str)
)
"""Every ``BRIDGE_*`` variable the settings read, in declaration order."""

SECRETS = frozenset({"BRIDGE_SCIM_TOKEN", "BRIDGE_CURSOR_SECRET"})


@dataclass(frozen=True)
class Effective:
    """One variable as a process sees it: the value in effect (secrets masked) and whether
    it came from the environment or is the default."""

    variable: str
    value: str | None
    origin: Literal["env", "default"]
    allowed: str


def mask_url(url: str) -> str:
    """A database URL with its password replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\g<head>***\g<at>", url)


def effective(settings: Settings, env: Mapping[str, str]) -> list[Effective]:
    """Every variable's value in ``settings`` and where it came from, secrets masked."""
    fields = _fields()
    values: dict[str, Any] = {}
    for model, instance in ((Settings, settings), (JwtSettings, settings.jwt)):
        for key, info in model.model_fields.items():
            if isinstance(info.validation_alias, str):
                values[info.validation_alias] = getattr(instance, key)
    rows = []
    for name in VARIABLES:
        info = fields[name]
        value = values[name]
        shown: str | None
        if value is None:
            shown = None
        elif name in SECRETS:
            shown = "***"
        elif name == "BRIDGE_DATABASE_URL":
            shown = mask_url(str(value))
        elif isinstance(value, bool):
            shown = "on" if value else "off"
        else:
            shown = str(value)
        rows.append(Effective(name, shown, "env" if name in env else "default", allowed(info)))
    return rows
