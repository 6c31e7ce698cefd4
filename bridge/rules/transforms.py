"""The named transforms of a mapping pipeline (pure): lower, upper, trim, ascii, split, join,
default, map, template, replace. ``rules/README.md`` shows each with an example."""

from __future__ import annotations

import re
import unicodedata
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


# Letters NFKD does not decompose, folded as a reader of the language would (ø → o, ß → ss).
_LETTERS = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ı": "i",
        "ħ": "h",
        "Ħ": "H",
        "ŧ": "t",
        "Ŧ": "T",
        "ŋ": "ng",
        "Ŋ": "NG",
        "ĸ": "q",
        "\u2018": "'",  # ‘ ’ ʼ: O’Brien keeps its apostrophe
        "\u2019": "'",
        "\u02bc": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2010": "-",  # hyphen, non-breaking hyphen, en and em dashes
        "\u2011": "-",
        "\u2013": "-",
        "\u2014": "-",
    }
)


def fold_ascii(text: str) -> str:
    """``Józef Nowak-Øster`` → ``Jozef Nowak-Oster``: accents dropped (NFKD, then the combining
    marks), ø ß æ œ ł đ ð þ ı… spelled in ASCII, and what has no ASCII spelling (Дмитрий,
    李) dropped rather than kept: the result is always ASCII."""
    decomposed = unicodedata.normalize("NFKD", text).translate(_LETTERS)
    return decomposed.encode("ascii", "ignore").decode("ascii")


def _ascii(value: Any, _: Any) -> Any:
    return _each(value, fold_ascii, "ascii")


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
    "ascii": TransformSpec(_ascii, _no_argument, "- ascii"),
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
