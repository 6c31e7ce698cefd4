"""Moodle's web-service machinery for the simulator: exceptions, parameter descriptions, checks.

A function declares its parameters the way Moodle's ``external_api`` does (``Value``,
``Single``, ``Multiple``); ``validate`` reproduces ``external_api::validate_parameters``: a
missing required key, an unexpected key or a value that does not survive ``clean_param`` fails
the whole call with ``invalidparameter``. The functions live in ``moodle_users`` and
``moodle_enrol``. Written by hand: no library emulates Moodle. ``validate_email()`` is the
port of PHP's FILTER_VALIDATE_EMAIL the target checks with too (checked against PHP itself).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from bridge.targets.moodle_values import valid_email as valid_email

if TYPE_CHECKING:
    from bridge.lmssim.moodle import MoodleSite


class WsError(Exception):
    """A Moodle exception as the REST server renders it."""

    def __init__(
        self,
        errorcode: str,
        message: str,
        *,
        exception: str = "moodle_exception",
        debuginfo: str | None = None,
    ) -> None:
        super().__init__(message)
        self.errorcode = errorcode
        self.message = message
        self.exception = exception
        self.debuginfo = debuginfo

    def render(self, debug: bool) -> dict[str, str]:
        """``generate_error``: ``debuginfo`` only when the site has debugging on. The message
        stays Moodle's bare string (observed on Moodle 4.3 with debugging on: "Invalid parameter
        value detected", the detail in ``debuginfo`` alone)."""
        answer = {"exception": self.exception, "errorcode": self.errorcode, "message": self.message}
        if debug and self.debuginfo:
            answer["debuginfo"] = self.debuginfo
        return answer


def invalid_parameter(debuginfo: str) -> WsError:
    return WsError(
        "invalidparameter",
        "Invalid parameter value detected",
        exception="invalid_parameter_exception",
        debuginfo=debuginfo,
    )


def missing_record(table: str) -> WsError:
    return WsError(
        "invalidrecord",
        f"Can't find data record in database table {table}.",
        exception="dml_missing_record_exception",
    )


# -- parameter descriptions (external_value / external_single_structure / …multiple…) --------

REQUIRED, DEFAULT, OPTIONAL = "required", "default", "optional"


@dataclass(frozen=True)
class Value:
    type: str
    required: str = REQUIRED
    default: Any = None


@dataclass(frozen=True)
class Single:
    keys: dict[str, Desc]
    required: str = REQUIRED
    default: Any = None


@dataclass(frozen=True)
class Multiple:
    content: Desc
    required: str = REQUIRED
    default: Any = None


Desc = Value | Single | Multiple

_PLUGIN_NAME = re.compile(r"[a-z](?:[a-z0-9_](?!__))*[a-z0-9]+")  # is_valid_plugin_name()
_PHP_TRIM = " \t\n\r\0\x0b"


@dataclass(frozen=True)
class SiteParams:
    """What ``clean_param`` reads of the site: ``$CFG->extendedusernamechars``, the auth
    plugins installed (PARAM_AUTH: ``exists_auth_plugin``), the language packs (PARAM_LANG)."""

    extended_username_chars: bool = False
    auth_plugins: frozenset[str] = frozenset({"manual"})
    langs: frozenset[str] = frozenset({"en"})


def clean(value: str, kind: str, site: SiteParams) -> Any:
    """``clean_param`` (lib/moodlelib.php): what Moodle keeps of ``value`` for a PARAM_* type."""
    if kind == "int":
        return int(value) if re.fullmatch(r"-?\d+", value) else 0
    if kind == "bool":
        return 1 if value.lower() in ("1", "true", "yes", "on") else 0
    if kind == "username":  # PARAM_USERNAME: trimmed, lowercased, and (unless extended) ASCII
        cleaned = value.strip(_PHP_TRIM).lower()
        if not site.extended_username_chars:
            cleaned = re.sub(r"[^-.@_a-z0-9]", "", cleaned.replace(" ", ""))
        return cleaned
    if kind == "email":
        return value if valid_email(value) else ""
    if kind == "raw_trimmed":
        return value.strip(_PHP_TRIM)
    if kind == "alpha":
        return re.sub(r"[^a-zA-Z]", "", value)
    if kind in ("alphanumext", "safedir"):
        return re.sub(r"[^a-zA-Z0-9_-]", "", value)
    if kind == "plugin":
        return value if _PLUGIN_NAME.fullmatch(value) else ""
    if kind == "auth":  # PARAM_AUTH: a plugin name whose directory exists under auth/
        return value if _PLUGIN_NAME.fullmatch(value) and value in site.auth_plugins else ""
    if kind == "lang":  # PARAM_LANG: an installed language pack
        cleaned = re.sub(r"[^a-zA-Z0-9_-]", "", value)
        return cleaned if cleaned in site.langs else ""
    if kind in ("notags", "text"):
        return re.sub(r"<[^>]*>", "", value)
    return value


def validate(desc: Desc, value: Any, site: SiteParams) -> Any:
    """``external_api::validate_parameters``: the cleaned value, or ``invalidparameter``."""
    if isinstance(desc, Value):
        if isinstance(value, dict | list):
            raise invalid_parameter("Scalar type expected, array or object received.")
        text = str(value)
        if desc.type == "bool" and text in ("0", "1"):
            return text == "1"
        cleaned = clean(text, desc.type, site)
        if str(cleaned) != text:
            raise invalid_parameter(
                f'Invalid external api parameter: the value is "{text}", '
                f'the server was expecting "{desc.type}" type'
            )
        return cleaned
    if not isinstance(value, dict | list):
        raise invalid_parameter(f"Only arrays accepted. The bad value is: '{value}'")
    if isinstance(desc, Multiple):
        items = value.values() if isinstance(value, dict) else value
        return [validate(desc.content, item, site) for item in items]
    rest = dict(value) if isinstance(value, dict) else {str(i): v for i, v in enumerate(value)}
    result: dict[str, Any] = {}
    for key, sub in desc.keys.items():
        if key not in rest:
            if sub.required == REQUIRED:
                raise invalid_parameter(f"Missing required key in single structure: {key}")
            if sub.required == DEFAULT:
                result[key] = sub.default
            continue
        try:
            result[key] = validate(sub, rest.pop(key), site)
        except WsError as exc:  # Moodle builds the path to the faulty value this way
            raise invalid_parameter(f"{key} => {exc.message}: {exc.debuginfo}") from exc
    if rest:
        raise invalid_parameter(f"Unexpected keys ({', '.join(rest)}) detected in parameter array.")
    return result


def optional(kind: str) -> Value:
    return Value(kind, OPTIONAL)


def default(kind: str, value: Any) -> Value:
    return Value(kind, DEFAULT, value)


def rows(**keys: Desc) -> Multiple:
    """A list of structures, as most batch functions take (``users[0][username]``…)."""
    return Multiple(Single(keys))


Handler = Callable[["MoodleSite", dict[str, Any]], Any]


@dataclass(frozen=True)
class Function:
    params: Single
    handler: Handler


class Functions(dict[str, Function]):
    """Functions by name; ``@FUNCTIONS.register(name, **parameters)`` adds one."""

    def register(self, name: str, **params: Desc) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            self[name] = Function(Single(params), handler)
            return handler

        return add
