"""Short names for long attribute paths (``roleCodes`` for the HR extension's), expanded in
filters and mapping sources before anything else reads them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

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


AttrRewrite = Callable[[AttrPath], AttrPath]


def rewrite_node(node: FilterNode, rewrite: AttrRewrite) -> FilterNode:
    """The same filter tree with every top-level attribute path passed through ``rewrite``."""
    if isinstance(node, Comparison | Present | ValuePath):
        return replace(node, attr_path=rewrite(node.attr_path))
    if isinstance(node, Not):
        return Not(rewrite_node(node.expr, rewrite))
    if isinstance(node, LogicalExpr):
        return LogicalExpr(node.op, tuple(rewrite_node(t, rewrite) for t in node.terms))
    return node


def rewrite_filter(text: str, rewrite: AttrRewrite) -> str:
    """A filter's text rewritten; unparsable text is returned as it is."""
    try:
        node = ScimFilter(text).ast
    except (SCIMException, ValueError):
        return text
    return str(rewrite_node(node, rewrite))


def rewrite_path(text: str, rewrite: AttrRewrite) -> str:
    """An attribute path (``roleCodes``, ``emails[type eq "work"].value``) rewritten."""
    try:
        node = Path(text).ast
    except (SCIMException, ValueError):
        return text
    if isinstance(node, AttrPath):
        return str(rewrite(node))
    if isinstance(node, ValuePath):
        return str(replace(node, attr_path=rewrite(node.attr_path)))
    return text


def expand_node(node: FilterNode, aliases: dict[str, str]) -> FilterNode:
    """The same filter tree with aliased attribute names replaced by their paths."""
    return rewrite_node(node, partial(expand_attr, aliases=aliases))


def expand_filter(text: str, aliases: dict[str, str]) -> str:
    """A filter's text with aliases expanded; unparsable text is returned as it is."""
    if not aliases:
        return text
    return rewrite_filter(text, partial(expand_attr, aliases=aliases))


def expand_path(text: str, aliases: dict[str, str]) -> str:
    """An attribute path (``roleCodes``, ``emails[type eq "work"].value``) with aliases expanded."""
    if not aliases:
        return text
    return rewrite_path(text, partial(expand_attr, aliases=aliases))
