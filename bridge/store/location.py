"""Where a filter's attribute is kept (``Location``: the document keys and the binding) and
how an operand meets it: the type tests of the binding and the key the operand compares as.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from scim2_models.path import AttributeBinding

from bridge.store.engine import scim_fold
from bridge.store.values import datetime_key
from bridge.store.values import string_key
from bridge.store.values import value_key


@dataclass(frozen=True)
class Location:
    """Where an attribute's values are kept: JSON keys of the document, plus the binding."""

    extension: str | None
    attr: str
    sub: str | None
    binding: AttributeBinding


def locate(binding: AttributeBinding, resource_schema: str) -> Location:
    """Split a binding's URN into the document keys that hold it."""
    schema = str(getattr(binding.model, "__schema__", "") or "")
    rest = (
        binding.urn[len(schema) + 1 :] if schema and binding.urn.startswith(schema) else binding.urn
    )
    attr, _, sub = rest.partition(".")
    extension = None if schema == resource_schema else schema
    return Location(extension, attr, sub or None, binding)


def _is_string(binding: AttributeBinding) -> bool:
    target = binding.target_type
    return target is str or (isinstance(target, type) and issubclass(target, str))


def _is_datetime(binding: AttributeBinding) -> bool:
    target = binding.target_type
    return isinstance(target, type) and issubclass(target, datetime)


def _utc(value: datetime) -> datetime:
    """A filter's instant in UTC (SQLite stores naive UTC text; a naive operand is UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _key_of(binding: AttributeBinding, value: Any) -> str | None:
    """The form a filter operand is compared in (what ``attribute_values`` stores)."""
    if isinstance(value, datetime):
        return datetime_key(value)
    if isinstance(value, str):
        return string_key(value if binding.case_exact else str(scim_fold(value)))
    return value_key(value, "exact")
