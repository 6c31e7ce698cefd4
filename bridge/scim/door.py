"""The request door: what every SCIM body, query and URL id must satisfy before it is used.

Refuses, as RFC 7644 §3.12 errors, what would otherwise fail deep in the store after a
partial write: JSON nested beyond ``MAX_DEPTH``, strings holding NUL or a lone surrogate
(PostgreSQL and UTF-8 cannot store them), and indexes beyond ``MAX_INDEX``. A resource or
PATCH value is then checked against its schema (``check_resource``, ``check_operations``):
a string longer than its attribute's limit (its column's size, or ``max_string_length``), a
dateTime whose UTC instant is outside years 1–9999, a userName holding an invisible
character or whose key outgrows its column. Hand-written: ``json`` has no nesting limit and
scim2-models validates none of these storage bounds.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError
from scim2_models import BaseModel
from scim2_models import Extension
from scim2_models import InvalidFilterException
from scim2_models import InvalidSyntaxException
from scim2_models import InvalidValueException
from scim2_models import Resource
from scim2_models import SCIMException
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not
from scim2_models.path import ValuePath

from bridge.store import names

MAX_DEPTH = 64
"""Deepest nesting of ``[``/``{`` accepted in a body; SCIM resources need about six."""

MAX_INDEX = 2**31 - 1
"""Largest ``startIndex`` or ``count`` accepted (RFC 7644 §3.4.2.4 gives no bound)."""

MAX_REQUEST_ID = 64
"""The ``X-Request-Id`` kept for correlation (the journal's ``request_id`` column)."""

MAX_STRING_LENGTH = 2048
"""``Settings.max_string_length`` by default: the longest value of a string attribute that
no column bounds."""

# The columns of bridge/store/tables.py that hold these core attributes, by lowercase name;
# ``name_key`` (the userName's key, a group's displayName folded) is as wide as ``name``.
MAX_LENGTHS = {"username": 512, "displayname": 512, "externalid": 255}

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
# Where a parsed string can hold NUL or a lone surrogate: JSON text holds them only escaped.
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})\Z"
)
_INSTANT = TypeAdapter(datetime)  # as the models read a dateTime
_PRINTABLE = re.compile(r"[\x21-\x7e]+\Z")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_FILTERS = re.compile(r"\[[^\]]*\]")


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
    if _UNSTORABLE_ESCAPE.search(text):  # rare: walk the body to name the string
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
    """Refuse (invalidValue, naming the attribute) a string holding NUL or a lone surrogate."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_string(str(key), f"{path} (a key)" if path else "a key")
            check_value(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_value(item, f"{path}[{index}]")
    elif isinstance(value, str):
        # A SearchRequest's filter (RFC 7644 §3.4.3) is refused as a filter.
        error = InvalidFilterException if path.lower() == "filter" else InvalidValueException
        _check_string(value, path or "the body", error)


def _check_string(
    value: str, path: str, error: type[SCIMException] = InvalidValueException
) -> None:
    if _FORBIDDEN.search(value):
        raise error(detail=f"{path} holds a NUL character or a lone surrogate")


# -- values against their schema ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Attribute:
    """What the door checks of one attribute's values (RFC 7643 §2.3 types)."""

    name: str
    limit: int | None = None
    """The longest string accepted; None: not a string attribute."""
    date_time: bool = False
    key_policy: str | None = None
    """The policy of the ``name_key`` it is stored under (``bridge.store.names``)."""
    user_name: bool = False
    extension: bool = False
    sub: dict[str, Attribute] = field(default_factory=dict)
    """Its sub-attributes, by name and by lowercase name."""


@dataclass(frozen=True, eq=False)
class Schema:
    """The checks of a resource type: core attributes and extensions as a body holds them."""

    urn: str
    root: Attribute
    extensions: dict[str, Attribute]
    """By lowercase URN."""

    def resolve(self, path: str) -> Attribute | None:
        """The attribute a PATCH path (RFC 7644 §3.5.2) names, its filters aside."""
        text = _FILTERS.sub("", path).lower()
        node = self.root
        if text.startswith("urn:"):
            if text.startswith(self.urn.lower() + ":"):
                text = text[len(self.urn) + 1 :]
            else:
                for urn, extension in self.extensions.items():
                    if text == urn:
                        return extension
                    if text.startswith(urn + ":"):
                        node, text = extension, text[len(urn) + 1 :]
                        break
                else:
                    return None
        for part in text.split("."):
            found = node.sub.get(part)
            if found is None:
                return None
            node = found
        return node


def _node(name: str, model: type[BaseModel], max_length: int) -> Attribute:
    sub: dict[str, Attribute] = {}
    for field_name, info in model.model_fields.items():
        scim_name = info.serialization_alias or field_name
        root = model.get_field_root_type(field_name)
        if isinstance(root, type) and issubclass(root, Extension):
            continue  # under its URN, beside the core attributes
        if isinstance(root, type) and issubclass(root, BaseModel):
            attribute = _node(scim_name, root, max_length)
        elif root is str:
            attribute = Attribute(scim_name, limit=max_length)
        elif isinstance(root, type) and issubclass(root, datetime):
            attribute = Attribute(scim_name, date_time=True)
        else:
            continue  # booleans, numbers, references and binary: bounded by the body's size
        sub[scim_name] = sub[scim_name.lower()] = attribute
    return Attribute(name, sub=sub)


@lru_cache(maxsize=32)
def schema_of(
    model: type[Resource[Any]],
    max_string_length: int = MAX_STRING_LENGTH,
    username_policy: str = names.EXACT,
) -> Schema:
    """The checks of a resource model: every string attribute bounded by
    ``max_string_length``, the core attributes a column holds by its size."""
    core = _node(str(model.__schema__), model, max_string_length)
    # The attribute in ``name`` and ``name_key``: a User's userName, else the displayName.
    user = "username" in core.sub
    keys = {"username": username_policy} if user else {"displayname": names.EXACT}
    for lowered, limit in MAX_LENGTHS.items():
        found = core.sub.get(lowered)
        if found is None or found.limit is None:
            continue
        bound = replace(
            found, limit=limit, key_policy=keys.get(lowered), user_name=lowered == "username"
        )
        core.sub[found.name] = core.sub[lowered] = bound
    extensions = {}
    for urn, model_extension in model.get_extension_models().items():
        extension = replace(_node(urn, model_extension, max_string_length), extension=True)
        extensions[urn.lower()] = core.sub[urn] = core.sub[urn.lower()] = extension
    return Schema(core.name, core, extensions)


class _Refused(Exception):
    """A value refused; the path to it is collected as the exception unwinds."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def detail(self, head: str = "") -> str:
        where = head + "".join(reversed(self.path))
        return f"{where.lstrip('.:') if not head else where} {self.reason}"


def _check(attribute: Attribute, value: Any) -> None:
    if isinstance(value, str):
        _check_text(attribute, value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check(attribute, item)
            except _Refused as refused:
                refused.path.append(f"[{index}]")
                raise
    elif isinstance(value, dict):
        sub = attribute.sub
        for key, item in value.items():
            child = sub.get(key) or sub.get(key.lower())
            if child is None:
                continue  # not an attribute: scim2-models drops or refuses it
            try:
                _check(child, item)
            except _Refused as refused:
                refused.path.append((":" if attribute.extension else ".") + key)
                raise


def _check_text(attribute: Attribute, value: str) -> None:
    limit = attribute.limit
    if limit is not None and len(value) > limit:
        raise _Refused(f"is over {limit} characters")
    if attribute.date_time:
        _check_instant(value)
    if attribute.user_name:
        found = names.invisible(value)
        if found is not None:
            raise _Refused(f"holds an invisible character ({found})")
    policy = attribute.key_policy
    if policy is not None and limit is not None and len(names.key(value, policy)) > limit:
        raise _Refused(f"is over {limit} characters once case-folded")


def _check_instant(value: str) -> None:
    try:
        instant = _INSTANT.validate_python(value)
    except ValidationError:
        return  # not a dateTime: the model refuses it
    if instant.tzinfo is not None:  # the store takes a time without an offset as UTC
        try:
            instant.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise _Refused(f"is not a dateTime in years 1 to 9999: {value!r}") from exc


def check_resource(payload: dict[str, Any], schema: Schema) -> None:
    """Refuse (invalidValue, naming the attribute) a POST or PUT body value that its
    schema's limits refuse (see ``schema_of``)."""
    try:
        _check(schema.root, payload)
    except _Refused as refused:
        raise InvalidValueException(detail=refused.detail()) from refused


def check_operations(operations: list[dict[str, Any]], schema: Schema) -> None:
    """Refuse (invalidValue, naming the operation and the attribute) a PATCH value
    (RFC 7644 §3.5.2) that its schema's limits refuse; a path that names no attribute is
    left for the PATCH to refuse."""
    for index, operation in enumerate(operations):
        value = operation.get("value")
        path = operation.get("path")
        head = f"Operations[{index}]: "
        try:
            if isinstance(path, str):
                found = schema.resolve(path)
                head += path
                if found is not None:
                    _check(found, value)
            elif isinstance(value, dict):
                for key, item in value.items():
                    found = schema.resolve(key)
                    if found is not None:
                        try:
                            _check(found, item)
                        except _Refused as refused:
                            refused.path.append(key)
                            raise
        except _Refused as refused:
            raise InvalidValueException(detail=refused.detail(head)) from refused


# -- queries and URLs -----------------------------------------------------------------------


def check_filter(node: FilterNode | None) -> None:
    """Refuse (invalidFilter) a filter comparing with a string the store cannot hold, or with
    a dateTime outside years 1 to 9999 (any attribute: a filter's operand is not typed yet)."""
    if isinstance(node, LogicalExpr):
        for term in node.terms:
            check_filter(term)
    elif isinstance(node, Not):
        check_filter(node.expr)
    elif isinstance(node, ValuePath):
        check_filter(node.val_filter)
    elif isinstance(node, Comparison) and isinstance(node.value, str):
        where = f"the filter value of {node.attr_path}"
        _check_string(node.value, where, InvalidFilterException)
        if len(node.value) <= 40 and _DATETIME.match(node.value):
            try:
                datetime.fromisoformat(node.value).astimezone(UTC)
            except (ValueError, OverflowError) as exc:
                raise InvalidFilterException(
                    detail=f"{where} is not a dateTime in years 1 to 9999: {node.value!r}"
                ) from exc


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
