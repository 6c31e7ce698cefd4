"""The SCIM schemas the bridge serves, read from ``schemas/*.json`` (RFC 7643 §7) into models.

An admin adds an attribute by editing a schema file; scim2-models builds the resource
models from it (``ScimProvider.from_discovery``), so no code changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from scim2_models import Error
from scim2_models import InvalidValueException
from scim2_models import Resource
from scim2_models import ResourceType
from scim2_models import Schema
from scim2_models import SCIMException
from scim2_models import ScimPolicy
from scim2_models import ScimProvider

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
RESOURCE_TYPES_FILE = "resource-types.json"

# Real IdPs deviate from the RFC; these are tolerated by default (DESIGN §5).
TOLERANT_POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)


# A PATCH that names an attribute the schemas do not define is refused (invalidPath) rather
# than silently dropped: an IdP attribute mapping that points nowhere must show up.
PATCH_POLICY = TOLERANT_POLICY.model_copy(update={"unknown": ScimPolicy.Unknown.forbid})


class SchemaError(ValueError):
    """The schemas directory does not describe a coherent service."""


@dataclass(frozen=True)
class Catalog:
    """The schemas, resource types and composed models the SCIM surface serves."""

    schemas: tuple[Schema, ...]
    resource_types: tuple[ResourceType, ...]
    provider: ScimProvider

    def model(self, resource_type: str) -> type[Resource[Any]]:
        """The composed model (extensions included) of a resource type name."""
        model = self.provider.model_for(resource_type)
        if model is None or not issubclass(model, Resource):
            raise KeyError(resource_type)
        return model

    @property
    def user(self) -> type[Resource[Any]]:
        return self.model("User")

    @property
    def group(self) -> type[Resource[Any]]:
        return self.model("Group")

    def schema(self, schema_id: str) -> Schema | None:
        for schema in self.schemas:
            if str(schema.id).lower() == schema_id.lower():
                return schema
        return None

    def resource_type(self, name: str) -> ResourceType | None:
        for resource_type in self.resource_types:
            if str(resource_type.name).lower() == name.lower():
                return resource_type
        return None

    def extension_urns(self, resource_type: str) -> tuple[str, ...]:
        found = self.resource_type(resource_type)
        if found is None:
            return ()
        return tuple(str(ext.schema_) for ext in found.schema_extensions or [])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc


def load_catalog(directory: Path) -> Catalog:
    """Read every schema file of ``directory`` and the resource types binding them."""
    if not directory.is_dir():
        where = directory if directory.is_absolute() else f"{directory} (in {Path.cwd()})"
        raise SchemaError(f"no schemas directory at {where}")
    schemas: list[Schema] = []
    for path in sorted(directory.glob("*.json")):
        if path.name == RESOURCE_TYPES_FILE:
            continue
        try:
            schemas.append(Schema.model_validate(_read_json(path)))
        except ValueError as exc:
            raise SchemaError(f"{path}: not a SCIM schema: {exc}") from exc
    types_path = directory / RESOURCE_TYPES_FILE
    try:
        resource_types = [ResourceType.model_validate(t) for t in _read_json(types_path)]
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{types_path}: not a list of SCIM resource types: {exc}") from exc
    try:
        provider = ScimProvider.from_discovery(schemas, resource_types, policy=TOLERANT_POLICY)
    except ValueError as exc:
        raise SchemaError(f"{directory}: {exc}") from exc
    catalog = Catalog(tuple(schemas), tuple(resource_types), provider)
    for required in ("User", "Group"):
        try:
            catalog.model(required)
        except KeyError:
            raise SchemaError(f"{types_path}: no {required} resource type") from None
    return catalog


def scim_exception(exc: ValidationError) -> SCIMException:
    """The SCIM error (RFC 7644 §3.12) a payload validation failure stands for.

    scim2-models raises SCIM errors from inside its validators; pydantic wraps them, with
    their ``scimType`` in the error context. Other validation failures are ``invalidValue``.
    """
    for error in exc.errors():
        context = error.get("ctx") or {}
        scim_type = context.get("scim_type")
        if scim_type:
            found = SCIMException.from_error(
                Error(
                    status=int(context.get("status", 400)),
                    scim_type=scim_type,
                    detail=_describe(error),
                )
            )
            return found
    first = exc.errors()[0] if exc.errors() else None
    detail = _describe(first) if first else str(exc)
    return InvalidValueException(detail=detail)


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    message = str(error.get("msg", "invalid value"))
    return f"{location}: {message}" if location else message
