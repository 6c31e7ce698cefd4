"""PATCH operations (RFC 7644 §3.5.2) other than a group's members: validated as a
scim2-models PatchOp and applied to a resource under the PATCH policy, noting the tolerance
an Entra-style ``attr[filter]`` that matches nothing needs (the add creates the entry).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from scim2_models import Context
from scim2_models import PatchOp
from scim2_models import Path
from scim2_models import Resource
from scim2_models import SCIMException

from bridge.schemas import PATCH_POLICY
from bridge.schemas import scim_exception

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def patch_op(model: type[Resource[Any]], operations: list[dict[str, Any]]) -> PatchOp[Any]:
    """The operations as a PatchOp on ``model``; an invalid one is a SCIM 400."""
    try:
        patch_model = PatchOp.__class_getitem__(model)
        patch: PatchOp[Any] = patch_model.model_validate(
            {"schemas": [PATCH_SCHEMA], "Operations": operations},
            scim_ctx=Context.RESOURCE_PATCH_REQUEST,
            scim_policy=PATCH_POLICY,
        )
    except ValidationError as exc:
        raise scim_exception(exc) from exc
    return patch


def apply(
    patch: PatchOp[Any], resource: Resource[Any], operations: list[dict[str, Any]]
) -> list[str]:
    """Apply ``patch`` (validated from ``operations``) to ``resource``; the tolerances used."""
    used = []
    if _creates_on_unmatched_filter(resource, operations):
        used.append("unmatched_filter_creates")
    try:
        patch.patch(resource, scim_policy=PATCH_POLICY)
    except ValidationError as exc:
        raise scim_exception(exc) from exc
    return used


def _creates_on_unmatched_filter(resource: Resource[Any], operations: list[dict[str, Any]]) -> bool:
    """Whether an add/replace names ``attr[filter]`` that matches no entry (Entra creates it)."""
    for operation in operations:
        path = operation.get("path")
        if (
            operation.get("op") not in ("add", "replace")
            or not isinstance(path, str)
            or "[" not in path
        ):
            continue
        try:
            found = Path.__class_getitem__(type(resource))(path).get(resource, strict=False)
        except (ValueError, SCIMException):
            continue
        if not found:
            return True
    return False
