"""The request door: what every SCIM body, query and URL id must satisfy before it is used.

Refuses, as RFC 7644 §3.12 errors, what would otherwise fail deep in the store after a
partial write: JSON nested beyond ``MAX_DEPTH``, strings holding NUL or a lone surrogate
(PostgreSQL and UTF-8 cannot store them), dateTimes whose UTC instant is outside years
1–9999, values longer than their column, and indexes beyond ``MAX_INDEX``. Hand-written:
``json`` has no nesting limit and scim2-models validates none of these storage bounds.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC
from datetime import datetime
from typing import Any

from scim2_models import InvalidFilterException
from scim2_models import InvalidSyntaxException
from scim2_models import InvalidValueException
from scim2_models import SCIMException
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not
from scim2_models.path import ValuePath

MAX_DEPTH = 64
"""Deepest nesting of ``[``/``{`` accepted in a body; SCIM resources need about six."""

MAX_INDEX = 2**31 - 1
"""Largest ``startIndex`` or ``count`` accepted (RFC 7644 §3.4.2.4 gives no bound)."""

MAX_REQUEST_ID = 64
"""The ``X-Request-Id`` kept for correlation (the journal's ``request_id`` column)."""

# The columns of bridge/store/tables.py that hold these attributes, keyed by lowercase name.
MAX_LENGTHS = {"username": 512, "displayname": 512, "externalid": 255}

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})\Z"
)
_PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def parse_body(raw: bytes) -> Any:
    """A request body as JSON, nested at most ``MAX_DEPTH`` deep, every string storable."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSyntaxException(detail=f"the body is not UTF-8: {exc}") from exc
    _check_depth(text)
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise InvalidSyntaxException(detail=f"the body is not JSON: {exc}") from exc
    check_value(body, "")
    return body


def _check_depth(text: str) -> None:
    # So ``json.loads`` never recurses past MAX_DEPTH. Counting brackets is C-fast and settles
    # nearly every body; only one with more brackets than MAX_DEPTH is scanned, with its
    # strings cut out first (a bracket inside a string nests nothing).
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidSyntaxException(detail=f"the body is nested over {MAX_DEPTH} levels")
        else:
            depth -= 1


def check_value(value: Any, path: str) -> None:
    """Refuse (invalidValue, naming the attribute) a string the store cannot hold."""
    if isinstance(value, dict):
        target = value.get("path") if "op" in value else None
        for key, item in value.items():
            _check_string(str(key), f"{path} (a key)" if path else "a key")
            name = f"{path}.{key}" if path else str(key)
            if key == "value" and isinstance(target, str):
                # A PATCH operation: its value is the attribute its path names.
                _check_length(item, target.rsplit(":", 1)[-1].rsplit(".", 1)[-1], name)
            _check_length(item, str(key), name)
            check_value(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_value(item, f"{path}[{index}]")
    elif isinstance(value, str):
        # A SearchRequest's filter (RFC 7644 §3.4.3) is refused as a filter.
        error = InvalidFilterException if path.lower() == "filter" else InvalidValueException
        _check_string(value, path or "the body", error)


def _check_length(value: Any, attribute: str, path: str) -> None:
    limit = MAX_LENGTHS.get(attribute.lower())
    if limit is not None and isinstance(value, str) and len(value) > limit:
        raise InvalidValueException(detail=f"{path} is over {limit} characters")


def _check_string(
    value: str, path: str, error: type[SCIMException] = InvalidValueException
) -> None:
    if _FORBIDDEN.search(value):
        raise error(detail=f"{path} holds a NUL character or a lone surrogate")
    if len(value) <= 40 and _DATETIME.match(value):
        try:
            datetime.fromisoformat(value).astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise error(detail=f"{path} is not a dateTime in years 1 to 9999: {value!r}") from exc


def check_filter(node: FilterNode | None) -> None:
    """Refuse (invalidFilter) a filter comparing with a string the store cannot hold."""
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            check_filter(term)
    elif isinstance(node, Not):
        check_filter(node.expr)
    elif isinstance(node, ValuePath):
        check_filter(node.val_filter)
    elif isinstance(node, Comparison) and isinstance(node.value, str):
        _check_string(node.value, f"the filter value of {node.attr_path}", InvalidFilterException)


def check_id(resource_id: str) -> str:
    """A resource id from a URL, refused (invalidValue) when the store cannot hold it."""
    _check_string(resource_id, "the id in the URL")
    return resource_id


def check_index(name: str, value: int) -> int:
    if value > MAX_INDEX:
        raise InvalidValueException(detail=f"{name} is over {MAX_INDEX}")
    return value


def request_id(header: str | None) -> str:
    """The correlation id: the client's ``X-Request-Id`` truncated to ``MAX_REQUEST_ID``
    characters (its prefix still correlates), or a fresh one when absent or not printable."""
    if header and _PRINTABLE.match(header):
        return header[:MAX_REQUEST_ID]
    return secrets.token_hex(16)
