"""The templates of the ``rest`` target: ``{{ path }}`` placeholders over plain data.

Rendered here rather than with Jinja (a large dependency that runs code): ``{{ path }}``,
``{{ path? }}`` (optional: dropped when missing), filters ``default: x``, ``lower``, ``upper``,
``map: name`` and ``days_from_today``; paths over plain data, no eval, values percent-encoded in
URLs. ``extract`` is the small JSON-path reader the target also uses on the LMS's answers.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import date
from datetime import timedelta
from enum import Enum
from typing import Any
from urllib.parse import quote

from bridge.targets.base import Category

ROOTS = (
    "person",
    "kind",
    "rule",
    "target",
    "ref",
    "data",
    "attributes",
    "account",
    "lms_user_id",
    "today",
)
FILTERS = {"default": True, "lower": False, "upper": False, "map": True, "days_from_today": False}


class _Missing(Enum):
    value = 0


MISSING = _Missing.value
_OMIT = object()
_PLACEHOLDER = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*)\}\}", re.S)
_PATH = re.compile(r"\$?(?:\.?[A-Za-z_][\w-]*|\[\d+\])*")
_STEP = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(\d+)\]")


class TemplateError(ValueError):
    """A template cannot be rendered for this delivery (a value is missing, a map has no key)."""

    def __init__(self, message: str, category: Category = Category.data_quality) -> None:
        super().__init__(message)
        self.category = category


@dataclass(frozen=True)
class Expr:
    """One ``{{ path? | filter: arg }}``."""

    path: str
    optional: bool = False
    filters: tuple[tuple[str, Any], ...] = ()


def is_path(text: str) -> bool:
    """Whether ``text`` is a path ``extract`` can read (``$.data.id``, ``items[0]``)."""
    return _PATH.fullmatch(text) is not None


def extract(doc: Any, path: str) -> Any:
    """``$.data.items[0].id``, ``data.id`` or ``id`` in plain data; MISSING when absent."""
    path = path.strip()
    if not _PATH.fullmatch(path):
        raise TemplateError(f"not a path: {path!r}")
    node = doc
    for name, index in _STEP.findall(path.removeprefix("$")):
        if name and isinstance(node, Mapping) and name in node:
            node = node[name]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return MISSING
    return node


def _literal(text: str) -> Any:
    text = text.strip()
    if text[:1] == "'" and text[-1:] == "'" and len(text) > 1:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a map name


def _split_filters(text: str) -> list[str]:
    parts, current, quote_char = [], "", ""
    for char in text:
        if quote_char:
            quote_char = "" if char == quote_char else quote_char
        elif char in "'\"":
            quote_char = char
        elif char == "|":
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def parse_expr(text: str) -> Expr:
    """The inside of ``{{ … }}``; TemplateError for syntax a rule author got wrong."""
    head, *rest = _split_filters(text)
    path = head.strip()
    optional = path.endswith("?")
    path = path.removesuffix("?").strip()
    if not path or not _PATH.fullmatch(path) or path.startswith(("$", "[")):
        raise TemplateError(f"not a value path: {head.strip()!r}")
    root = _STEP.match(path)
    if root is None or root.group(1) not in ROOTS:
        raise TemplateError(f"unknown value {path!r}: templates read {', '.join(ROOTS)}")
    filters = []
    for item in rest:
        name, _, argument = item.partition(":")
        name = name.strip()
        if name not in FILTERS:
            close = difflib.get_close_matches(name, list(FILTERS), n=1)
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (filters: {', '.join(FILTERS)})"
            )
            raise TemplateError(f"unknown filter {name!r}{hint}")
        if FILTERS[name] and not argument.strip():
            raise TemplateError(f"filter {name!r} needs an argument: `{name}: …`")
        filters.append((name, _literal(argument) if argument.strip() else None))
    return Expr(path, optional, tuple(filters))


@dataclass(frozen=True)
class Scope:
    """What templates can read: the delivery's values, the target's maps, today's date."""

    values: dict[str, Any]
    maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    today: date = field(default_factory=date.today)


def _filter(name: str, argument: Any, value: Any, scope: Scope) -> Any:
    if name == "default":
        return argument if value is MISSING or value is None else value
    if value is MISSING or value is None:
        return value
    if name in ("lower", "upper"):
        return str(value).lower() if name == "lower" else str(value).upper()
    if name == "map":
        table = scope.maps.get(str(argument))
        if table is None:
            raise TemplateError(
                f"no map {argument!r} in the target's `maps`", Category.configuration
            )
        if str(value) not in table:
            raise TemplateError(f"map {argument!r} has no entry {value!r}", Category.configuration)
        return table[str(value)]
    try:
        return (scope.today + timedelta(days=int(value))).isoformat()
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"days_from_today needs a number of days, not {value!r}") from exc


def evaluate(expr: Expr, scope: Scope) -> Any:
    value = extract(scope.values, expr.path)
    for name, argument in expr.filters:
        value = _filter(name, argument, value, scope)
    return value


def as_text(value: Any) -> str:
    """A value as text: JSON for lists and mappings, ``true``/``false`` for booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def render_text(template: str, scope: Scope, *, url: bool = False) -> str:
    """Every ``{{ … }}`` replaced by its value as text (percent-encoded when ``url``)."""

    def replace(match: re.Match[str]) -> str:
        expr = parse_expr(match.group(1))
        value = evaluate(expr, scope)
        if value is MISSING or value is None:
            if expr.optional:
                return ""
            raise TemplateError(f"no value for {expr.path}")
        text = as_text(value)
        if not url:
            return text
        # "." and ".." would be dot-segments (RFC 3986 §5.2.4) and climb the path.
        return quote(text, safe="") if text not in (".", "..") else text.replace(".", "%2E")

    return _PLACEHOLDER.sub(replace, template)


def render_value(template: Any, scope: Scope) -> Any:
    """A body template: strings rendered, and a string that is one ``{{ … }}`` keeps its type
    (a number stays a number, null clears); optional missing values drop their key."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template.strip())
        if whole is None:
            return render_text(template, scope)
        expr = parse_expr(whole.group(1))
        value = evaluate(expr, scope)
        if value is MISSING:
            if expr.optional:
                return _OMIT
            raise TemplateError(f"no value for {expr.path}")
        return value
    if isinstance(template, dict):
        rendered = {str(k): render_value(v, scope) for k, v in template.items()}
        return {k: v for k, v in rendered.items() if v is not _OMIT}
    if isinstance(template, list):
        return [v for v in (render_value(item, scope) for item in template) if v is not _OMIT]
    return template


def placeholders(value: Any) -> list[str]:
    """The inside of every ``{{ … }}`` in a template (a string, or strings nested in data)."""
    if isinstance(value, str):
        return [m.group(1) for m in _PLACEHOLDER.finditer(value)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in placeholders(v)]
    if isinstance(value, list):
        return [t for v in value for t in placeholders(v)]
    return []
