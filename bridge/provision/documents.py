"""A resource's stored document: a payload validated with scim2-models under the tolerant
policy, dumped to the document a Record keeps (members and groups are rows, not document),
loaded back into a model, and the Record's indexed columns filled from it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from scim2_models import Context
from scim2_models import Resource

from bridge.schemas import TOLERANT_POLICY
from bridge.schemas import scim_exception
from bridge.store.resources import Record

_NOT_IN_DOC = ("id", "meta", "members", "groups")


def _has_unknown(value: Any) -> bool:
    """Whether a validated model (or a nested one) dropped attributes it does not define."""
    if getattr(value, "unknown_attributes", None):
        return True
    fields = getattr(type(value), "model_fields", None)
    if not fields:
        return False
    for name in value.model_fields_set:  # an unset field holds nothing it could have dropped
        item = getattr(value, name, None)
        items = item if isinstance(item, list) else [item]
        if any(_has_unknown(i) for i in items if hasattr(type(i), "model_fields")):
            return True
    return False


def validate(
    model: type[Resource[Any]],
    payload: dict[str, Any],
    context: Context,
    tolerances: list[str] | None,
) -> tuple[Resource[Any], list[str]]:
    """Validate a body; attributes no schema defines are dropped and that is journalled."""
    try:
        resource = model.model_validate(payload, scim_ctx=context, scim_policy=TOLERANT_POLICY)
    except ValidationError as exc:
        raise scim_exception(exc) from exc
    used = list(tolerances or [])
    if _has_unknown(resource):
        used.append("ignored_unknown_attributes")
    return resource, used


def document(resource: Resource[Any]) -> dict[str, Any]:
    """The document a Record stores: the resource as a query response would show it."""
    dumped = resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    return {k: v for k, v in dumped.items() if k not in _NOT_IN_DOC}


def load(model: type[Resource[Any]], record: Record) -> Resource[Any]:
    """A stored resource as a model again, to apply a PATCH to."""
    payload = {**record.doc, "id": record.id}
    try:
        return model.model_validate(payload, scim_policy=TOLERANT_POLICY)
    except ValidationError as exc:  # a schema edit made a stored document invalid
        raise scim_exception(exc) from exc


def fill(record: Record, doc: dict[str, Any]) -> None:
    """Set a Record's document and the columns indexed from it."""
    record.doc = doc
    record.external_id = doc.get("externalId")
    if record.type == "User":
        record.name = str(doc.get("userName") or "")
        record.display = doc.get("displayName") or record.name
        active = doc.get("active")
        record.active = active if isinstance(active, bool) else None
    else:
        record.name = str(doc.get("displayName") or "")
        record.display = record.name
