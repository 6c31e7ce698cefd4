"""Moodle's web-service machinery for the simulator: exceptions, parameter descriptions, checks.

A function declares its parameters the way Moodle's ``external_api`` does (``Value``,
``Single``, ``Multiple``); ``validate`` reproduces ``external_api::validate_parameters``: a
missing required key, an unexpected key or a value that does not survive ``clean_param`` fails
the whole call with ``invalidparameter``. The functions live in ``moodle_users`` and
``moodle_enrol``. Written by hand: no library emulates Moodle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

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

    def text(self, debug: bool) -> str:
        """``getMessage()``: on developer-debug sites moodle_exception appends the debug info."""
        return f"{self.message} ({self.debuginfo})" if debug and self.debuginfo else self.message

    def render(self, debug: bool) -> dict[str, str]:
        answer = {
            "exception": self.exception,
            "errorcode": self.errorcode,
            "message": self.text(debug),
        }
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

EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*",
    re.IGNORECASE,
)


def valid_email(address: str) -> bool:
    return bool(EMAIL.fullmatch(address))


def clean(value: str, kind: str) -> Any:
    """``clean_param``: what Moodle keeps of ``value`` for a PARAM_* type."""
    if kind == "int":
        return int(value) if re.fullmatch(r"-?\d+", value) else 0
    if kind == "bool":
        return 1 if value.lower() in ("1", "true", "yes", "on") else 0
    if kind == "username":  # lowercased and stripped of what usernames may not hold
        return re.sub(r"[^-.@_a-z0-9]", "", value.strip().lower())
    if kind == "email":
        return value if value == "" or valid_email(value) else ""
    if kind == "raw_trimmed":
        return value.strip()
    if kind == "alpha":
        return re.sub(r"[^a-zA-Z]", "", value)
    if kind in ("alphanumext", "safedir"):
        return re.sub(r"[^a-zA-Z0-9_-]", "", value)
    if kind in ("notags", "text"):
        return re.sub(r"<[^>]*>", "", value)
    return value


def validate(desc: Desc, value: Any, debug: bool) -> Any:
    """``external_api::validate_parameters``: the cleaned value, or ``invalidparameter``."""
    if isinstance(desc, Value):
        if isinstance(value, dict | list):
            raise invalid_parameter("Scalar type expected, array or object received.")
        text = str(value)
        if desc.type == "bool" and text in ("0", "1"):
            return text == "1"
        cleaned = clean(text, desc.type)
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
        return [validate(desc.content, item, debug) for item in items]
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
            result[key] = validate(sub, rest.pop(key), debug)
        except WsError as exc:  # Moodle builds the path to the faulty value this way
            raise invalid_parameter(f"{key} => {exc.text(debug)}: {exc.debuginfo}") from exc
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
