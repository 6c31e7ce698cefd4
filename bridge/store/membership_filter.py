"""Filters on ``members`` (of a Group) and ``groups`` (of a User), answered from the
``memberships`` table rather than the document (RFC 7644 §3.4.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim2_models import BaseModel
from scim2_models import InvalidFilterException
from scim2_models.path import AttributeBinding
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import Present

# Private helpers of scim2-models (pinned < 0.13), as in bridge.store.filters.
from scim2_models.path.resolution import _resolve_filter_path
from scim2_models.path.resolution import _validate_operator
from sqlalchemy import literal
from sqlalchemy import not_
from sqlalchemy import select
from sqlalchemy import true

from bridge.store.dialect import Dialect
from bridge.store.dialect import Expr
from bridge.store.dialect import M
from bridge.store.dialect import Predicate
from bridge.store.dialect import R
from bridge.store.dialect import ValueFilter
from bridge.store.dialect import _compare
from bridge.store.dialect import _negate_null
from bridge.store.engine import scim_fold
from bridge.store.location import Location
from bridge.store.location import locate
from bridge.store.operands import operand


@dataclass(frozen=True)
class _MemberTest:
    """A comparison on a sub-attribute of ``members``/``groups`` outside brackets."""

    sub: str
    op: CompareOperator
    value: Any


class _MembershipFilter(ValueFilter):
    """Filters on ``members`` (of a Group) or ``groups`` (of a User), over ``memberships``.

    One membership row is one element, so ``members[type eq "User" and value eq "x"]`` holds
    on one member. ``value`` is the other side's id, ``type`` the member's resource type
    (always ``direct`` for ``groups``), ``display`` the other side's display name.
    """

    def __init__(self, d: Dialect, where: Location, other: Any) -> None:
        self.d = d
        self.where = where
        self.other = other
        item = where.binding.field_type
        self.item_model = item if isinstance(item, type) and issubclass(item, BaseModel) else None

    def visit_any(self, test: FilterNode | _MemberTest) -> Predicate:
        if isinstance(test, _MemberTest):
            return self._test(test.sub, test.op, test.value)
        return self.visit(test)

    def _bind_sub(self, attr_path: AttrPath) -> tuple[str, AttributeBinding]:
        if self.item_model is None:  # pragma: no cover - members and groups are complex
            raise InvalidFilterException(detail=f"'{self.where.attr}' has no sub-attributes")
        binding = _resolve_filter_path(self.item_model, attr_path, strict=True)
        assert binding is not None
        if binding.sub_field_name is not None:
            raise InvalidFilterException(detail=f"'{attr_path}' is nested too deeply")
        return locate(binding, "").attr, binding

    def _expr(self, sub: str) -> tuple[Expr, bool]:
        """The SQL form of a member's sub-attribute, and whether it compares case-folded."""
        d = self.d
        if sub == "value":
            return self.other, False
        if sub == "type":
            if self.where.attr == "groups":
                return literal("direct"), True
            return d.fold(M.c.member_type), True
        if sub == "display":
            other = R.alias()
            display = select(other.c.display).where(other.c.id == self.other).scalar_subquery()
            return d.fold(display), True
        raise InvalidFilterException(
            detail=f"'{self.where.attr}.{sub}' depends on the request's base URL; only 'pr' tests it"
        )

    def _test(self, sub: str, op: CompareOperator, value: Any) -> Predicate:
        if value is None:  # value, type and display are set on every member
            return _negate_null(op, true())
        expr, folded = self._expr(sub)
        if folded and isinstance(value, str):
            value = scim_fold(value)
        d = self.d
        if op == CompareOperator.ne:
            return not_(_compare(d, expr, CompareOperator.eq, value))
        return _compare(d, expr, op, value)

    def visit_comparison(self, node: Comparison) -> Predicate:
        sub, binding = self._bind_sub(node.attr_path)
        _validate_operator(binding, node.op)
        return self._test(sub, node.op, operand(binding, node.op, node.value))

    def visit_present(self, node: Present) -> Predicate:
        self._bind_sub(node.attr_path)
        return true()  # every sub-attribute of a member is rendered
