"""A group's members as rows: ids read from payloads, a group PATCH's member operations split
into a row delta (pure), and deltas written to the store — the group itself is never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from scim2_models import InvalidPathException
from scim2_models import InvalidValueException
from scim2_models import Path
from scim2_models import SCIMException
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import ValuePath

from bridge.store.resources import ResourceStore


def member_ids(value: Any) -> list[str]:
    """Member ids from ``[{"value": id}, …]`` (or bare ids, as some clients send)."""
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        member = item.get("value") if isinstance(item, dict) else item
        if not isinstance(member, str) or not member:
            raise InvalidValueException(detail=f"a member needs a 'value' id, not {item!r}")
        ids.append(member)
    return ids


def _ids_selected(node: FilterNode) -> list[str] | None:
    """The ids ``value eq "id" [or value eq "id2"…]`` selects, or None for other filters."""
    if isinstance(node, Comparison):
        if node.attr_path.attr.lower() == "value" and node.op == CompareOperator.eq:
            return [str(node.value)]
        return None
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.or_:
        ids: list[str] = []
        for term in node.terms:
            found = _ids_selected(term)
            if found is None:
                return None
            ids.extend(found)
        return ids
    return None


@dataclass
class MemberDelta:
    """Membership changes a group PATCH asks for, in order."""

    clear: bool = False
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.clear or bool(self.add) or bool(self.remove)


def split_member_operations(
    operations: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], MemberDelta]:
    """Separate a group PATCH into member row deltas and the other operations (pure).

    Handles ``add``/``replace``/``remove`` on ``members``, Entra's remove-with-value
    (``{"op":"Remove","path":"members","value":[{"value":id}]}``), ``members[value eq "id"]``,
    and path-less operations whose value carries ``members``.
    """
    rest: list[dict[str, Any]] = []
    delta = MemberDelta()
    for operation in operations:
        op = str(operation.get("op", "")).lower()
        path = operation.get("path")
        value = operation.get("value")
        if path is None and isinstance(value, dict) and op in ("add", "replace"):
            key = next((k for k in value if k.lower() == "members"), None)
            if key is not None:
                members = member_ids(value[key])
                if op == "replace":
                    delta.clear, delta.add, delta.remove = True, members, []
                else:
                    delta.add.extend(members)
                remaining = {k: v for k, v in value.items() if k != key}
                if remaining:
                    rest.append({**operation, "value": remaining})
                continue
        if not isinstance(path, str) or not path.strip().lower().startswith("members"):
            rest.append(operation)
            continue
        try:
            node = Path(path.strip()).ast
        except (ValueError, SCIMException) as exc:
            raise InvalidPathException(detail=f"{path!r} is not a valid path") from exc
        if isinstance(node, AttrPath) and node.attr.lower() == "members" and node.sub_attr is None:
            if op == "add":
                delta.add.extend(member_ids(value))
            elif op == "replace":
                delta.clear, delta.add, delta.remove = True, member_ids(value or []), []
            elif value is not None:
                delta.remove.extend(member_ids(value))
            else:
                delta.clear, delta.add, delta.remove = True, [], []
            continue
        if (
            isinstance(node, ValuePath)
            and node.attr_path.attr.lower() == "members"
            and op == "remove"
        ):
            ids = _ids_selected(node.val_filter)
            if ids is not None and node.sub_attr is None:
                delta.remove.extend(ids)
                continue
        raise InvalidPathException(detail=f"unsupported path on members: {path!r}")
    return rest, delta


def add_members(store: ResourceStore, conn: Any, group_id: str, ids: list[str]) -> list[str]:
    """Insert the rows for ``ids`` (each must exist, and not be the group); those that are new."""
    unique_ids = list(dict.fromkeys(ids))
    found = store.find_ids(conn, unique_ids)
    missing = [member for member in unique_ids if member not in found]
    if missing:
        raise InvalidValueException(detail=f"no such member: {', '.join(missing)}")
    if group_id in found:
        raise InvalidValueException(detail="a group cannot be a member of itself")
    return store.add_members(conn, group_id, {m: found[m] for m in unique_ids})


def apply_delta(
    store: ResourceStore, conn: Any, group_id: str, delta: MemberDelta
) -> dict[str, list[str]]:
    """Write a PATCH's member delta as rows; the journal detail (ids added and removed)."""
    removed = []
    if delta.clear:
        removed = store.clear_members(conn, group_id)
    removed += store.remove_members(conn, group_id, delta.remove)
    added = add_members(store, conn, group_id, delta.add)
    return {k: v for k, v in (("added", added), ("removed", removed)) if v}


def replace_members(
    store: ResourceStore, conn: Any, group_id: str, value: Any
) -> dict[str, list[str]]:
    """Make a PUT's ``members`` the group's rows; the journal detail (ids added and removed)."""
    wanted = list(dict.fromkeys(member_ids(value or [])))
    current = {m.value for m in store.members_of(conn, [group_id])[group_id]}
    removed = store.remove_members(conn, group_id, current - set(wanted))
    added = add_members(store, conn, group_id, [m for m in wanted if m not in current])
    return {k: v for k, v in (("added", added), ("removed", removed)) if v}
