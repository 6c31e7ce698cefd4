"""What real IdPs send that RFC 7644 does not say, normalised before validation (pure).

Each function returns the normalised payload and the names of the tolerances it used, which
the journal records with the write. Documented behaviours:

- Entra ID sends capitalised PATCH ops (``Replace``), booleans as ``"True"``/``"False"``,
  ``remove`` with a ``value``, a bare manager id, and an extra schema URN on POST /Groups
  (Microsoft "Known issues and resolutions with SCIM 2.0 compliance").
- Okta sends path-less ``{"op":"replace","value":{"active":false}}`` and a full PUT that
  carries ``password``, ``groups`` and ``meta`` (Okta "SCIM 2.0 protocol reference").
- Entra sends PATCH paths naming an extension attribute without its URN
  (``"path": "manager"``, ``"path": "employeeNumber"``): the path is qualified with the one
  schema defining the attribute, core first (RFC 7644 §3.10: clients may omit the core
  schema's URN, and should qualify an extension's attributes).

Under the ``nfkc`` userName policy (``bridge.store.names``), a userName is trimmed and
NFKC-normalised here, before it is validated and stored. The normalised payload then goes
through the door's schema checks (``bridge.scim.door.check_resource``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from scim2_models import Extension
from scim2_models import InvalidPathException
from scim2_models import InvalidSyntaxException
from scim2_models import Path
from scim2_models import Resource
from scim2_models import SCIMException

from bridge.scim import door
from bridge.store import names

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_READ_ONLY_ON_PUT = ("password", "groups", "meta")
_ATTRIBUTE = re.compile(r"[^.\[]*")  # the attribute a path starts with
_USER_NAME_PATHS = ("username", f"{names.USER_SCHEMA.lower()}:username")


def _bool_string(value: Any) -> bool | None:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _is_boolean(model: type[Resource[Any]], path: str) -> bool:
    try:
        binding = Path[model](path).resolve()  # type: ignore[valid-type]
    except (ValueError, SCIMException):
        return False
    return binding is not None and binding.target_type is bool


def _manager(value: Any) -> tuple[Any, bool]:
    if isinstance(value, str):
        return {"value": value}, True
    return value, False


def _user_name(value: Any, policy: str) -> tuple[Any, bool]:
    """A userName as the policy stores it, and whether that changed it."""
    if not isinstance(value, str):
        return value, False
    kept = names.stored(value, policy)
    return kept, kept != value


def normalize_resource(
    payload: Any,
    model: type[Resource[Any]],
    known_schemas: set[str],
    *,
    max_string_length: int = door.MAX_STRING_LENGTH,
    username_policy: str = names.EXACT,
) -> tuple[dict[str, Any], list[str]]:
    """Normalise a POST/PUT body; refuse what is not a JSON object, or what the door
    refuses of its values (``max_string_length``; ``username_policy``: ``bridge.store.names``).
    """
    if not isinstance(payload, dict):
        raise InvalidSyntaxException(detail="the body must be a JSON object")
    used: list[str] = []
    payload = dict(payload)
    schemas = payload.get("schemas")
    if isinstance(schemas, list):
        kept = [s for s in schemas if isinstance(s, str) and s.lower() in known_schemas]
        if len(kept) != len(schemas):
            used.append("unknown_schema_urn")
            for urn in schemas:
                if isinstance(urn, str) and urn.lower() not in known_schemas:
                    payload.pop(urn, None)
            payload["schemas"] = kept
    for key in _READ_ONLY_ON_PUT:
        if key in payload:
            used.append(f"ignored_{key}")
            payload.pop(key)
    for key, value in list(payload.items()):
        flag = _bool_string(value)
        if flag is not None and _is_boolean(model, key):
            payload[key] = flag
            used.append("boolean_string")
    enterprise = payload.get(ENTERPRISE)
    if isinstance(enterprise, dict) and "manager" in enterprise:
        fixed, changed = _manager(enterprise["manager"])
        if changed:
            payload[ENTERPRISE] = {**enterprise, "manager": fixed}
            used.append("manager_bare_string")
    for key in payload:
        if key.lower() == "username":
            payload[key], changed = _user_name(payload[key], username_policy)
            if changed:
                used.append("username_nfkc")
    door.check_resource(payload, door.schema_of(model, max_string_length, username_policy))
    return payload, sorted(set(used))


def _normalize_value(
    model: type[Resource[Any]], path: str | None, value: Any, used: set[str]
) -> Any:
    if path is not None:
        flag = _bool_string(value)
        if flag is not None and _is_boolean(model, path):
            used.add("boolean_string")
            return flag
        if path.lower().endswith("manager") and path.lower().startswith(ENTERPRISE.lower()):
            fixed, changed = _manager(value)
            if changed:
                used.add("manager_bare_string")
            return fixed
        return value
    if not isinstance(value, dict):
        return value
    extensions = {urn.lower() for urn in model.get_extension_models()}
    fixed_value: dict[str, Any] = {}
    for key, item in value.items():
        if "." in key or (key.lower().startswith("urn:") and key.lower() not in extensions):
            used.add("attribute_path_keys")
        if not isinstance(item, dict):
            fixed_value[key] = _normalize_value(model, key, item, used)
            continue
        if key.lower() == ENTERPRISE.lower() and "manager" in item:
            fixed, changed = _manager(item["manager"])
            if changed:
                used.add("manager_bare_string")
                item = {**item, "manager": fixed}
        fixed_value[key] = item
    return fixed_value


def _split_filtered_keys(operation: dict[str, Any], used: set[str]) -> list[dict[str, Any]]:
    """Entra (aadOptscim062020) puts ``emails[type eq "work"].value`` keys in a path-less
    value; each becomes an operation of its own with that key as its path."""
    value = operation.get("value")
    if operation.get("path") is not None or not isinstance(value, dict):
        return [operation]
    filtered = {k: v for k, v in value.items() if "[" in k}
    if not filtered:
        return [operation]
    used.add("attribute_path_keys")
    rest = {k: v for k, v in value.items() if "[" not in k}
    split = [{**operation, "value": rest}] if rest else []
    split += [{"op": operation["op"], "path": key, "value": item} for key, item in filtered.items()]
    return split


@lru_cache(maxsize=32)
def _defined_by(model: type[Resource[Any]]) -> dict[str, tuple[str, ...]]:
    """The schemas defining each attribute name (lowercase): the core schema first."""
    found: dict[str, list[str]] = {}
    parts = [(str(model.__schema__), model), *model.get_extension_models().items()]
    for urn, part in parts:
        for field_name, info in part.model_fields.items():
            root = part.get_field_root_type(field_name)
            name = (info.serialization_alias or field_name).lower()
            if isinstance(root, type) and issubclass(root, Extension):
                continue
            if part is not model and name == "schemas":
                continue  # the extension models' own, never sent
            found.setdefault(name, []).append(urn)
    return {name: tuple(urns) for name, urns in found.items()}


def _qualified(model: type[Resource[Any]], path: str) -> str | None:
    """An unqualified path to an extension attribute, qualified with the one extension that
    defines it; None when the path is qualified, core, or names nothing."""
    if path.lower().startswith("urn:"):
        return None
    match = _ATTRIBUTE.match(path)
    defining = _defined_by(model).get(match.group().lower() if match else "")
    if not defining or defining[0] == str(model.__schema__):
        return None
    if len(defining) > 1:
        raise InvalidPathException(
            detail=f"'{path}' is an attribute of {' and of '.join(defining)};"
            " qualify it with one of these URNs"
        )
    return f"{defining[0]}:{path}"


def _patched_user_name(operation: dict[str, Any], policy: str) -> bool:
    """Make the userName an operation sets the one the policy stores; whether that changed it."""
    path, value = operation.get("path"), operation.get("value")
    if isinstance(path, str):
        if path.lower() not in _USER_NAME_PATHS:
            return False
        operation["value"], changed = _user_name(value, policy)
        return changed
    if not isinstance(value, dict):
        return False
    operation["value"] = {
        key: _user_name(item, policy)[0] if key.lower() in _USER_NAME_PATHS else item
        for key, item in value.items()
    }
    return bool(operation["value"] != value)


def normalize_patch(
    payload: Any,
    model: type[Resource[Any]],
    *,
    max_string_length: int = door.MAX_STRING_LENGTH,
    username_policy: str = names.EXACT,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Normalise a PATCH body (RFC 7644 §3.5.2) into its list of operations; refuse what
    the door refuses of their values (``max_string_length``; ``username_policy``:
    ``bridge.store.names``)."""
    if not isinstance(payload, dict):
        raise InvalidSyntaxException(detail="the body must be a JSON object")
    used: set[str] = set()
    operations = payload.get("Operations", payload.get("operations"))
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntaxException(detail="'Operations' must be a non-empty list")
    if "schemas" not in payload:
        used.add("patch_schemas_missing")
    normalized = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise InvalidSyntaxException(detail="each operation must be a JSON object")
        operation = {
            k if k not in ("Op", "Path", "Value") else k.lower(): v for k, v in operation.items()
        }
        op = operation.get("op")
        if isinstance(op, str) and op != op.lower():
            used.add("op_case")
            operation["op"] = op.lower()
        path = operation.get("path")
        if path is not None and not isinstance(path, str):
            raise InvalidSyntaxException(detail="'path' must be a string")
        qualified = _qualified(model, path) if path is not None else None
        if qualified is not None:
            used.add("unqualified_extension_attribute")
            operation["path"] = path = qualified
        if operation.get("op") == "remove" and "value" in operation:
            used.add("remove_with_value")
        if "value" in operation:
            operation["value"] = _normalize_value(model, path, operation["value"], used)
            if username_policy != names.EXACT and _patched_user_name(operation, username_policy):
                used.add("username_nfkc")
        normalized.extend(_split_filtered_keys(operation, used))
    door.check_operations(normalized, door.schema_of(model, max_string_length, username_policy))
    return normalized, sorted(used)
