"""Stored records rendered as SCIM resources, with ``attributes``/``excludedAttributes``.

Projection (RFC 7644 §3.4.2.5) works on the stored JSON directly: the document was validated
and dumped by scim2-models when it was written, so reads never pay for model validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim2_models import InvalidPathException
from scim2_models import Returned

from bridge.schemas import Catalog
from bridge.store.resources import Member
from bridge.store.resources import Record

ALL = None  # every sub-attribute
_ALWAYS = {"id", "schemas"}


@dataclass(frozen=True)
class Selection:
    """Which attributes a request asked for: ``{container: {attr: subs | ALL}}``."""

    include: dict[str | None, dict[str, set[str] | None]] | None
    exclude: dict[str | None, dict[str, set[str] | None]]

    def wants(self, attr: str) -> bool:
        """Whether a top-level core attribute (e.g. ``members``) is returned at all."""
        attr = attr.lower()
        if attr in self.exclude.get(None, {}) and self.exclude[None][attr] is ALL:
            return False
        return self.include is None or attr in self.include.get(None, {})


class Projector:
    """Attribute selection for one resource type, from its schemas."""

    def __init__(self, catalog: Catalog, resource_type: str) -> None:
        model = catalog.model(resource_type)
        self.core = str(model.__schema__).lower()
        self.extensions = {urn.lower(): urn for urn in model.get_extension_models()}
        self.always = set(_ALWAYS)
        schema = catalog.schema(str(model.__schema__))
        for attribute in (schema.attributes or []) if schema else []:
            if attribute.returned == Returned.always and attribute.name:
                self.always.add(attribute.name.lower())

    def _parse(self, text: str) -> tuple[str | None, str | None, str | None]:
        lowered = text.strip().lower()
        container: str | None = None
        if lowered.startswith("urn:"):
            for urn in sorted([self.core, *self.extensions], key=len, reverse=True):
                if lowered == urn:
                    return (None if urn == self.core else urn), None, None
                if lowered.startswith(urn + ":"):
                    container = None if urn == self.core else urn
                    lowered = lowered[len(urn) + 1 :]
                    break
            else:
                raise InvalidPathException(detail=f"unknown schema in attribute {text!r}")
        attr, _, sub = lowered.partition(".")
        return container, attr or None, sub or None

    def _spec(self, texts: list[str]) -> dict[str | None, dict[str, set[str] | None]]:
        spec: dict[str | None, dict[str, set[str] | None]] = {}
        for text in texts:
            container, attr, sub = self._parse(text)
            attrs = spec.setdefault(container, {})
            if attr is None:
                attrs["*"] = ALL
                continue
            if sub is None or attrs.get(attr, set()) is ALL:
                attrs[attr] = ALL
            else:
                current = attrs.setdefault(attr, set())
                assert current is not None
                current.add(sub)
        return spec

    def selection(self, attributes: list[str], excluded: list[str]) -> Selection:
        return Selection(self._spec(attributes) if attributes else None, self._spec(excluded))

    def project(self, resource: dict[str, Any], selection: Selection) -> dict[str, Any]:
        if selection.include is None and not selection.exclude:
            return resource
        out: dict[str, Any] = {}
        for key, value in resource.items():
            lowered = key.lower()
            if lowered in self.extensions:
                kept = self._container(value, lowered, selection)
                if kept:
                    out[key] = kept
                continue
            if lowered in self.always:
                out[key] = value
                continue
            kept_value = self._attribute(value, None, lowered, selection)
            if kept_value is not None:
                out[key] = kept_value
        return out

    def _container(self, value: Any, urn: str, selection: Selection) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        out = {}
        for key, item in value.items():
            kept = self._attribute(item, urn, key.lower(), selection)
            if kept is not None:
                out[key] = kept
        return out or None

    def _attribute(self, value: Any, container: str | None, attr: str, selection: Selection) -> Any:
        if selection.include is not None:
            attrs = selection.include.get(container, {})
            if "*" in attrs:
                subs: set[str] | None = ALL
            elif attr in attrs:
                subs = attrs[attr]
            else:
                return None
            if subs is not ALL:
                value = _only(value, subs)
        excluded = selection.exclude.get(container, {})
        if "*" in excluded:
            return None
        if attr in excluded:
            subs = excluded[attr]
            if subs is ALL:
                return None
            value = _without(value, subs)
        return value


def _only(value: Any, subs: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k.lower() in subs} or None
    if isinstance(value, list):
        items = [_only(item, subs) for item in value]
        return [item for item in items if item] or None
    return value


def _without(value: Any, subs: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k.lower() not in subs} or None
    if isinstance(value, list):
        items = [_without(item, subs) for item in value]
        return [item for item in items if item] or None
    return value


def _iso(record_time: Any) -> str:
    text: str = record_time.isoformat()
    return text.replace("+00:00", "Z")


def _member_json(member: Member, base_url: str) -> dict[str, Any]:
    endpoint = "Groups" if member.type in ("Group", "direct") else "Users"
    out: dict[str, Any] = {"value": member.value, "$ref": f"{base_url}/{endpoint}/{member.value}"}
    if member.display:
        out["display"] = member.display
    out["type"] = member.type
    return out


def resource_json(record: Record, base_url: str) -> dict[str, Any]:
    """The full SCIM representation of a record (RFC 7643 §3)."""
    endpoint = "Users" if record.type == "User" else "Groups"
    out: dict[str, Any] = {"schemas": record.doc.get("schemas") or []}
    out["id"] = record.id
    if record.external_id is not None:
        out["externalId"] = record.external_id
    for key, value in record.doc.items():
        if key not in ("schemas", "externalId"):
            out[key] = value
    if record.members:
        attribute = "members" if record.type == "Group" else "groups"
        out[attribute] = [_member_json(member, base_url) for member in record.members]
    out["meta"] = {
        "resourceType": record.type,
        "created": _iso(record.created),
        "lastModified": _iso(record.last_modified),
        "location": f"{base_url}/{endpoint}/{record.id}",
        "version": record.etag,
    }
    return out
