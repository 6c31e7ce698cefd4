"""The named transforms of a mapping pipeline (pure): lower, upper, trim, split, join,
default, map, template, replace."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class TransformError(ValueError):
    """A value a transform cannot take (the person lands in the attention list)."""


def _each(value: Any, fn: Callable[[str], Any], name: str) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_each(item, fn, name) for item in value]
    if not isinstance(value, str):
        raise TransformError(f"{name} needs text, got {type(value).__name__}")
    return fn(value)


def _lower(value: Any, _: Any) -> Any:
    return _each(value, str.lower, "lower")


def _upper(value: Any, _: Any) -> Any:
    return _each(value, str.upper, "upper")


def _trim(value: Any, _: Any) -> Any:
    return _each(value, str.strip, "trim")


def _split(value: Any, separator: Any) -> Any:
    if value is None or isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise TransformError(f"split needs text, got {type(value).__name__}")
    return [part.strip() for part in value.split(separator or ",") if part.strip()]


def _join(value: Any, separator: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise TransformError(f"join needs a list, got {type(value).__name__}")
    return (separator if separator is not None else ",").join(str(item) for item in value)


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None or value == "" or value == [] else value


def _map(value: Any, table: Any) -> Any:
    lookup = table.get("table", table) if isinstance(table, dict) else {}
    has_default = isinstance(table, dict) and "table" in table and "default" in table

    def one(item: Any) -> Any:
        if item is None:
            return None
        # Keys are YAML text: a boolean value looks up `true`/`false`, as it is written there.
        key = ("true" if item else "false") if isinstance(item, bool) else str(item)
        if key in lookup:
            return lookup[key]
        return table["default"] if has_default else item

    return [one(item) for item in value] if isinstance(value, list) else one(value)


def _template(value: Any, template: Any) -> Any:
    if value is None:
        return None
    return _each(value, lambda text: str(template).replace("{value}", text), "template")


def _replace(value: Any, argument: Any) -> Any:
    pattern = re.compile(argument["pattern"])
    return _each(value, lambda text: pattern.sub(str(argument.get("with", "")), text), "replace")


def _no_argument(argument: Any) -> str | None:
    return None if argument is None else "takes no argument"


def _optional_text(argument: Any) -> str | None:
    return (
        None
        if argument is None or isinstance(argument, str)
        else "the argument is a separator string"
    )


def _any(argument: Any) -> str | None:
    return None


def _table(argument: Any) -> str | None:
    if not isinstance(argument, dict) or not argument:
        return "the argument is a lookup table {from: to}"
    if "table" in argument:
        if not isinstance(argument["table"], dict) or not argument["table"]:
            return "`table:` must be a lookup table {from: to}"
        unknown = set(argument) - {"table", "default"}
        if unknown:
            return f"unknown keys {sorted(unknown)}: use {{table: {{from: to}}, default: value}}"
    return None


def _text(argument: Any) -> str | None:
    if not isinstance(argument, str) or "{value}" not in argument:
        return "the argument is a text with {value} in it"
    return None


def _pattern(argument: Any) -> str | None:
    if not isinstance(argument, dict) or not isinstance(argument.get("pattern"), str):
        return "the argument is {pattern: REGEX, with: TEXT}"
    unknown = set(argument) - {"pattern", "with"}
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    try:
        re.compile(argument["pattern"])
    except re.error as exc:
        return f"bad regular expression: {exc}"
    return None


@dataclass(frozen=True)
class TransformSpec:
    apply: Callable[[Any, Any], Any]
    check: Callable[[Any], str | None]
    usage: str


TRANSFORMS: dict[str, TransformSpec] = {
    "lower": TransformSpec(_lower, _no_argument, "- lower"),
    "upper": TransformSpec(_upper, _no_argument, "- upper"),
    "trim": TransformSpec(_trim, _no_argument, "- trim"),
    "split": TransformSpec(_split, _optional_text, '- split: ","'),
    "join": TransformSpec(_join, _optional_text, '- join: ";"'),
    "default": TransformSpec(_default, _any, '- default: "n/a"'),
    "map": TransformSpec(_map, _table, "- map: {FT: full-time, PT: part-time}"),
    "template": TransformSpec(_template, _text, '- template: "{value}@example.com"'),
    "replace": TransformSpec(_replace, _pattern, '- replace: {pattern: "[^a-z0-9]", with: ""}'),
}


def apply(value: Any, name: str, argument: Any) -> Any:
    """Run one transform; TransformError when the value does not fit it."""
    return TRANSFORMS[name].apply(value, argument)
