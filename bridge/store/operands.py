"""The operand of a filter comparison, checked against the attribute's type (RFC 7644 §3.4.2.2).

A comparison the schema makes impossible is 400 ``invalidFilter`` with a detail, never SQL:
a complex attribute compared with a value (``name eq 140``), or an operand of another JSON
type than the attribute's (``title eq 5``, ``meta.created gt 140``, ``active eq "yes"``).
scim2-models' ``coerce_value`` is lax where pydantic is (a number is a dateTime, ``"yes"`` a
boolean); its reference evaluator keeps that, the SQL translation does not. Tolerated: a
boolean written as the string ``"true"``/``"false"`` (Entra writes booleans so, see
bridge.scim.quirks). Hand-written: scim2-models checks operators, not operand types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scim2_models import BaseModel
from scim2_models import InvalidFilterException
from scim2_models.path import AttributeBinding
from scim2_models.path import CompareOperator
from scim2_models.path import coerce_value

from bridge.store.dialect import _STRING_OPERATORS

# The range of a 64-bit signed integer: what SQLite binds and PostgreSQL's bigint holds.
_INT_RANGE = range(-(2**63), 2**63)


def is_complex(binding: AttributeBinding) -> bool:
    """Whether the compared attribute has sub-attributes (``name``, ``manager``, ``meta``)."""
    target = binding.target_type
    return isinstance(target, type) and issubclass(target, BaseModel)


def operand(binding: AttributeBinding, op: CompareOperator, value: Any) -> Any:
    """The operand of ``attr op value`` as the attribute's Python type (``None`` stays
    ``None``: ``eq null`` tests absence); 400 ``invalidFilter`` when the types cannot meet."""
    if value is None:
        return None
    target = binding.target_type
    name = binding.urn
    if is_complex(binding):
        assert isinstance(target, type) and issubclass(target, BaseModel)
        short = name.rsplit(":", 1)[-1]
        subs = ", ".join(
            f"{short}.{info.serialization_alias or field}"
            for field, info in target.model_fields.items()
        )
        raise InvalidFilterException(
            detail=f"'{name}' is a complex attribute: compare one of its sub-attributes "
            f"({subs}), or test it with 'pr'"
        )
    if op in _STRING_OPERATORS:
        if not isinstance(value, str):
            raise InvalidFilterException(
                detail=f"operator '{op.value}' needs a string, not {value!r}, for '{name}'"
            )
        return coerce_value(binding, value, op)
    if not isinstance(target, type):
        return coerce_value(binding, value, op)
    if issubclass(target, bool):
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise _mismatch(name, "a boolean (true or false)", value)
    elif issubclass(target, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _mismatch(name, "a number", value)
        if isinstance(value, int) and value not in _INT_RANGE:
            if issubclass(target, int):
                raise InvalidFilterException(
                    detail=f"{value} is out of the range of the integer attribute '{name}'"
                )
            value = float(value)
    elif issubclass(target, str | bytes | datetime) and not isinstance(value, str):
        kind = "a dateTime string" if issubclass(target, datetime) else "a string"
        raise _mismatch(name, kind, value)
    return coerce_value(binding, value, op)


def _mismatch(name: str, kind: str, value: Any) -> InvalidFilterException:
    return InvalidFilterException(detail=f"'{name}' is compared with {kind}, not {value!r}")
