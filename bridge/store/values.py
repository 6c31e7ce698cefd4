"""The attribute-value index: which multi-valued attributes are indexed, and a document's rows.

Every value of a multi-valued attribute (``emails``, ``roles``, the HR ``roleCodes``…) is
stored as one ``attribute_values`` row holding its comparison key, so that a filter such as
``emails[type eq "work" and value eq "x"]`` is an indexed lookup with same-element semantics
(rows of one element share a ``position``), whatever the number of resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim2_models import BaseModel
from scim2_models import CaseExact
from scim2_models import Resource

from bridge.store.engine import scim_fold

# Membership is held in its own table, not in documents.
_NOT_INDEXED = {"schemas", "groups", "members"}


@dataclass(frozen=True)
class IndexedAttribute:
    """One multi-valued attribute: where it sits in a document and how its values compare."""

    extension: str | None
    name: str
    sub_attributes: dict[str, bool] | None  # sub-attribute → caseExact; None for simple values
    case_exact: bool

    @property
    def path(self) -> str:
        return value_path(self.extension, self.name)


def value_path(extension: str | None, name: str, sub: str | None = None) -> str:
    """The ``attribute_values.path`` of an attribute (and sub-attribute)."""
    head = f"{extension}:{name}" if extension else name
    return f"{head}.{sub}" if sub else head


MAX_KEY_LENGTH = 1024


def value_key(value: Any, case_exact: bool) -> str | None:
    """The stored comparison key of one value, or None for values that are not compared.

    Keys longer than ``MAX_KEY_LENGTH`` (certificates, photos as data URIs) are not indexed.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if not isinstance(value, str):
        return None
    key = value if case_exact else scim_fold(value)
    return key if len(key) <= MAX_KEY_LENGTH else None


def _scim_names(model: type[BaseModel]) -> dict[str, str]:
    return {name: field.serialization_alias or name for name, field in model.model_fields.items()}


def _attributes_of(model: type[BaseModel], extension: str | None) -> list[IndexedAttribute]:
    found = []
    for field_name, scim_name in _scim_names(model).items():
        if scim_name in _NOT_INDEXED or not model.get_field_multiplicity(field_name):
            continue
        root = model.get_field_root_type(field_name)
        case_exact = model.get_field_annotation(field_name, CaseExact) == CaseExact.true
        subs = None
        if isinstance(root, type) and issubclass(root, BaseModel):
            subs = {
                sub_scim: root.get_field_annotation(sub_name, CaseExact) == CaseExact.true
                for sub_name, sub_scim in _scim_names(root).items()
            }
        found.append(IndexedAttribute(extension, scim_name, subs, case_exact))
    return found


def indexed_attributes(model: type[Resource[Any]]) -> tuple[IndexedAttribute, ...]:
    """Every multi-valued attribute of a resource model and of its extensions."""
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
        values = holder.get(attribute.name) if isinstance(holder, dict) else None
        if not isinstance(values, list):
            continue
        for position, item in enumerate(values):
            if attribute.sub_attributes is None:
                key = value_key(item, attribute.case_exact)
                if key is not None:
                    rows.append((attribute.path, position, key))
                continue
            if not isinstance(item, dict):
                continue
            rows.append((attribute.path, position, ""))  # the element's anchor
            for sub, case_exact in attribute.sub_attributes.items():
                key = value_key(item.get(sub), case_exact)
                if key is not None:
                    rows.append(
                        (value_path(attribute.extension, attribute.name, sub), position, key)
                    )
    return rows
