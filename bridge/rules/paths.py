"""Reading an attribute path (``name.givenName``, ``emails[type eq "work"].value``, a URN path)
off a person's SCIM JSON, for mappings (pure; no model validation on the hot path)."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any

from scim2_models import Path
from scim2_models import SCIMException
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import Not
from scim2_models.path import Present
from scim2_models.path import ValuePath

CORE_SCHEMAS = (
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
)


def _get(holder: Any, key: str) -> Any:
    if not isinstance(holder, dict):
        return None
    if key in holder:
        return holder[key]
    lowered = key.lower()
    for name, value in holder.items():
        if name.lower() == lowered:
            return value
    return None


def _fold(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).lower()
    return value


def _element_matches(item: Any, node: FilterNode) -> bool:
    """The filter inside ``attr[...]`` on one element (case-insensitive, as SCIM's defaults)."""
    if isinstance(node, LogicalExpr):
        results = (_element_matches(item, term) for term in node.terms)
        return all(results) if node.op == LogicalOperator.and_ else any(results)
    if isinstance(node, Not):
        return not _element_matches(item, node.expr)
    if isinstance(node, Present):
        value = item if not isinstance(item, dict) else _get(item, node.attr_path.attr)
        return value not in (None, "", [], {})
    if isinstance(node, Comparison):
        actual = item if not isinstance(item, dict) else _get(item, node.attr_path.attr)
        left, right = _fold(actual), _fold(node.value)
        if node.op == CompareOperator.eq:
            return bool(left == right)
        if node.op == CompareOperator.ne:
            return bool(left != right)
        if left is None:
            return False
        if node.op == CompareOperator.co:
            return str(right) in str(left)
        if node.op == CompareOperator.sw:
            return str(left).startswith(str(right))
        if node.op == CompareOperator.ew:
            return str(left).endswith(str(right))
        try:
            return bool(
                {
                    CompareOperator.gt: left > right,
                    CompareOperator.ge: left >= right,
                    CompareOperator.lt: left < right,
                    CompareOperator.le: left <= right,
                }[node.op]
            )
        except TypeError:
            return False
    return False


@lru_cache(maxsize=1024)
def parse(text: str) -> AttrPath | ValuePath:
    """Parse a mapping source path once; ValueError when it is not an attribute path."""
    try:
        node = Path(text).ast
    except (SCIMException, ValueError) as exc:
        raise ValueError(f"{text!r} is not an attribute path") from exc
    if not isinstance(node, AttrPath | ValuePath):
        raise ValueError(f"{text!r} is not an attribute path")
    return node


def _holder(doc: dict[str, Any], attr_path: AttrPath) -> Any:
    if attr_path.uri is None or attr_path.uri.lower() in CORE_SCHEMAS:
        return doc
    return _get(doc, attr_path.uri)


def read(doc: dict[str, Any], text: str) -> Any:
    """The value at a path: a scalar, a list (multi-valued), or None when absent."""
    node = parse(text)
    if isinstance(node, AttrPath):
        value = _get(_holder(doc, node), node.attr)
        if node.sub_attr is None:
            return value
        if isinstance(value, list):
            found = [_get(item, node.sub_attr) for item in value]
            return [item for item in found if item is not None] or None
        return _get(value, node.sub_attr)
    values = _get(_holder(doc, node.attr_path), node.attr_path.attr)
    if not isinstance(values, list):
        return None
    matched = [item for item in values if _element_matches(item, node.val_filter)]
    if node.sub_attr is None:
        return matched or None
    picked = [_get(item, node.sub_attr) for item in matched]
    picked = [item for item in picked if item is not None]
    if not picked:
        return None
    return picked[0] if len(picked) == 1 else picked
