"""Short names for long attribute paths (``roleCodes`` for the HR extension's), expanded in
filters and mapping sources before anything else reads them."""

from __future__ import annotations

from dataclasses import replace

from scim2_models import Path
from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models.path import AttrPath
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not
from scim2_models.path import Present
from scim2_models.path import ValuePath


def _target(name: str, aliases: dict[str, str]) -> AttrPath | None:
    for alias, path in aliases.items():
        if alias.lower() == name.lower():
            try:
                node = Path(path).ast
            except (SCIMException, ValueError):
                return None
            return node if isinstance(node, AttrPath) else None
    return None


def expand_attr(attr_path: AttrPath, aliases: dict[str, str]) -> AttrPath:
    if attr_path.uri is not None or not aliases:
        return attr_path
    target = _target(attr_path.attr, aliases)
    if target is None:
        return attr_path
    return AttrPath(target.attr, attr_path.sub_attr or target.sub_attr, target.uri)


def expand_node(node: FilterNode, aliases: dict[str, str]) -> FilterNode:
    """The same filter tree with aliased attribute names replaced by their paths."""
    if isinstance(node, Comparison | Present):
        return replace(node, attr_path=expand_attr(node.attr_path, aliases))
    if isinstance(node, ValuePath):
        return replace(node, attr_path=expand_attr(node.attr_path, aliases))
    if isinstance(node, Not):
        return Not(expand_node(node.expr, aliases))
    if isinstance(node, LogicalExpr):
        return LogicalExpr(node.op, tuple(expand_node(t, aliases) for t in node.terms))
    return node


def expand_filter(text: str, aliases: dict[str, str]) -> str:
    """A filter's text with aliases expanded; unparsable text is returned as it is."""
    if not aliases:
        return text
    try:
        node = ScimFilter(text).ast
    except (SCIMException, ValueError):
        return text
    return str(expand_node(node, aliases))


def expand_path(text: str, aliases: dict[str, str]) -> str:
    """An attribute path (``roleCodes``, ``emails[type eq "work"].value``) with aliases expanded."""
    if not aliases:
        return text
    try:
        node = Path(text).ast
    except (SCIMException, ValueError):
        return text
    if isinstance(node, AttrPath):
        return str(expand_attr(node, aliases))
    if isinstance(node, ValuePath):
        return str(replace(node, attr_path=expand_attr(node.attr_path, aliases)))
    return text
