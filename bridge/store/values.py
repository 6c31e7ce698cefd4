"""The attribute-value index: which attributes are indexed, and a document's rows.

Every value of a multi-valued attribute (``emails``, ``roles``, the HR ``roleCodes``…) is
stored as one ``attribute_values`` row holding its comparison key, so that a filter such as
``emails[type eq "work" and value eq "x"]`` is an indexed lookup with same-element semantics
(rows of one element share a ``position``), whatever the number of resources.

``dateTime`` values are indexed too, single-valued ones included (the HR ``hireDate``): a
document keeps them as written, with any UTC offset and precision, so their text does not
order as their instants do. Their key is the instant in UTC at a fixed width
(``2021-01-14T22:00:00.000000Z``), which compares correctly as a string on every database.

A string key over ``MAX_KEY_BYTES`` (a 2,048-character email, a certificate) is stored as its
first bytes and its SHA-256: PostgreSQL refuses a B-tree entry over 2,704 bytes, and equal
values keep equal keys (``string_key``; a filter's operand is keyed the same way).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Literal

from pydantic import TypeAdapter
from pydantic import ValidationError
from scim2_models import BaseModel
from scim2_models import CaseExact
from scim2_models import Extension
from scim2_models import Resource

from bridge.store.engine import scim_fold

# Membership is held in its own table, not in documents; meta is in columns.
_NOT_INDEXED = {"groups", "members", "meta"}

KeyKind = Literal["exact", "folded", "datetime"]
"""How a value becomes its key: as is (caseExact), case-folded, or as a UTC instant."""

_DATETIME = TypeAdapter(datetime)


@dataclass(frozen=True)
class IndexedAttribute:
    """One indexed attribute: where it sits in a document and how its values compare."""

    extension: str | None
    name: str
    sub_attributes: dict[str, KeyKind] | None  # sub-attribute → key kind; None: simple values
    kind: KeyKind
    multi_valued: bool = True

    @property
    def path(self) -> str:
        return value_path(self.extension, self.name)


def value_path(extension: str | None, name: str, sub: str | None = None) -> str:
    """The ``attribute_values.path`` of an attribute (and sub-attribute)."""
    head = f"{extension}:{name}" if extension else name
    return f"{head}.{sub}" if sub else head


MAX_KEY_BYTES = 1024
"""Longest string key stored whole, in UTF-8 bytes (``attribute_values.value_key`` holds 1,024
characters; PostgreSQL's B-tree index on it, 2,704 bytes an entry)."""

_PREFIX_BYTES = 896  # of a longer key: 896 bytes, an ellipsis and 64 hex digits fit both


def string_key(key: str) -> str:
    """A string key as stored and compared: whole up to ``MAX_KEY_BYTES``, else its first
    bytes, ``…`` and the SHA-256 of all of it. Longer values still compare equal or not; their
    order, and ``sw``/``co``/``ew``, hold for their first bytes only."""
    if len(key) <= MAX_KEY_BYTES // 4:  # four bytes a character at most: no need to encode
        return key
    encoded = key.encode()
    if len(encoded) <= MAX_KEY_BYTES:
        return key
    prefix = encoded[:_PREFIX_BYTES].decode("utf-8", "ignore")
    return f"{prefix}\u2026{hashlib.sha256(encoded).hexdigest()}"


def datetime_key(value: datetime) -> str:
    """The key of an instant: UTC, microseconds, fixed width, so text order is time order.

    A time without an offset is taken as UTC.
    """
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def value_key(value: Any, kind: KeyKind) -> str | None:
    """The stored comparison key of one value, or None for values that are not compared."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return datetime_key(value)
    if kind == "datetime" and isinstance(value, str):
        try:
            return datetime_key(_DATETIME.validate_python(value))
        except ValidationError:
            return None
    if isinstance(value, int | float):
        return repr(value)
    if not isinstance(value, str):
        return None
    return string_key(value if kind == "exact" else str(scim_fold(value)))


def _scim_names(model: type[BaseModel]) -> dict[str, str]:
    return {name: field.serialization_alias or name for name, field in model.model_fields.items()}


def _kind(model: type[BaseModel], field_name: str) -> KeyKind:
    root = model.get_field_root_type(field_name)
    if isinstance(root, type) and issubclass(root, datetime):
        return "datetime"
    if model.get_field_annotation(field_name, CaseExact) == CaseExact.true:
        return "exact"
    return "folded"


def _attributes_of(model: type[BaseModel], extension: str | None) -> list[IndexedAttribute]:
    found = []
    for field_name, scim_name in _scim_names(model).items():
        if scim_name in _NOT_INDEXED:
            continue
        root = model.get_field_root_type(field_name)
        if isinstance(root, type) and issubclass(root, Extension):
            continue  # indexed on its own, under its URN
        multi_valued = bool(model.get_field_multiplicity(field_name))
        kind = _kind(model, field_name)
        subs: dict[str, KeyKind] | None = None
        if isinstance(root, type) and issubclass(root, BaseModel):
            subs = {
                sub_scim: _kind(root, sub_name) for sub_name, sub_scim in _scim_names(root).items()
            }
            if not multi_valued:  # a single complex value: only its dateTime sub-attributes
                subs = {sub: sub_kind for sub, sub_kind in subs.items() if sub_kind == "datetime"}
                if not subs:
                    continue
        elif not multi_valued and kind != "datetime":
            continue  # a single simple value is read from the document (or a column)
        found.append(IndexedAttribute(extension, scim_name, subs, kind, multi_valued))
    return found


def indexed_attributes(model: type[Resource[Any]]) -> tuple[IndexedAttribute, ...]:
    """Every multi-valued or dateTime attribute of a resource model and of its extensions."""
    found = _attributes_of(model, None)
    for urn, extension in model.get_extension_models().items():
        found.extend(_attributes_of(extension, urn))
    return tuple(found)


def index_rows(
    doc: dict[str, Any], attributes: tuple[IndexedAttribute, ...]
) -> list[tuple[str, int, str]]:
    """The ``(path, position, value_key)`` rows of one document."""
    rows: list[tuple[str, int, str]] = []
    for attribute in attributes:
        holder = doc.get(attribute.extension) if attribute.extension else doc
        found = holder.get(attribute.name) if isinstance(holder, dict) else None
        if attribute.multi_valued:
            if not isinstance(found, list):
                continue
            items = list(enumerate(found))
        elif found is None:
            continue
        else:
            items = [(0, found)]
        for position, item in items:
            if attribute.sub_attributes is None:
                key = value_key(item, attribute.kind)
                if key is not None:
                    rows.append((attribute.path, position, key))
                continue
            if not isinstance(item, dict):
                continue
            if attribute.multi_valued:
                rows.append((attribute.path, position, ""))  # the element's anchor
            for sub, kind in attribute.sub_attributes.items():
                key = value_key(item.get(sub), kind)
                if key is not None:
                    rows.append(
                        (value_path(attribute.extension, attribute.name, sub), position, key)
                    )
    return rows
