"""The filter inside ``attr[…]`` (RFC 7644 §3.4.2.2 valuePath) over ``attribute_values``,
with same-element semantics: every term holds on one and the same element.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scim2_models import BaseModel
from scim2_models import InvalidFilterException
from scim2_models.path import AttributeBinding
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import Present

# Private helpers of scim2-models (pinned < 0.13), as in bridge.store.filters.
from scim2_models.path.resolution import _resolve_filter_path
from scim2_models.path.resolution import _validate_operator
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import false
from sqlalchemy import literal
from sqlalchemy import not_
from sqlalchemy import or_
from sqlalchemy import select

from bridge.store.dialect import _ORDERING_OPERATORS
from bridge.store.dialect import _STRING_OPERATORS
from bridge.store.dialect import AV
from bridge.store.dialect import Dialect
from bridge.store.dialect import Predicate
from bridge.store.dialect import R
from bridge.store.dialect import ValueFilter
from bridge.store.dialect import _compare
from bridge.store.dialect import _negate_null
from bridge.store.location import Location
from bridge.store.location import _is_string
from bridge.store.location import _key_of
from bridge.store.location import locate
from bridge.store.operands import operand
from bridge.store.values import value_path

RowTest = Callable[[Any], Predicate]
"""A test of one ``attribute_values`` row's ``value_key``."""


class _ElementFilter(ValueFilter):
    """The filter inside ``attr[…]``: every term holds on one and the same element.

    Rows of one element share ``(resource_pk, position)``. The query is driven from the
    most selective row it can find — an ``eq`` term of the top-level conjunction — so an
    indexed lookup answers ``emails[type eq "work" and value eq "x"]`` at any table size.
    """

    def __init__(self, d: Dialect, where: Location) -> None:
        self.d = d
        self.where = where
        item = where.binding.field_type
        self.item_model = item if isinstance(item, type) and issubclass(item, BaseModel) else None
        self.anchor: Any = None

    def _sub_path(self, sub: str | None) -> str:
        return value_path(self.where.extension, self.where.attr, sub)

    def _bind_sub(self, attr_path: AttrPath) -> tuple[str | None, AttributeBinding]:
        """The sub-attribute a term compares (None: the element itself, for simple values)."""
        if self.item_model is None:
            if attr_path.attr.lower() != "value" or attr_path.sub_attr or attr_path.uri:
                raise InvalidFilterException(
                    detail=f"'{attr_path}' is not a sub-attribute of '{self.where.attr}'"
                )
            return None, self.where.binding
        binding = _resolve_filter_path(self.item_model, attr_path, strict=True)
        assert binding is not None
        if binding.sub_field_name is not None:
            raise InvalidFilterException(detail=f"'{attr_path}' is nested too deeply")
        return locate(binding, "").attr, binding

    def _row_test(
        self, binding: AttributeBinding, op: CompareOperator, value: Any
    ) -> Callable[[Any], Predicate]:
        """The test of one row's key (the operand already coerced and not null)."""
        if op in _STRING_OPERATORS and not _is_string(binding):
            return lambda col: false()
        key = _key_of(binding, value)
        d = self.d
        return lambda col: _compare(d, col, op, key)

    def _same_element(self, sub: str | None, test: Callable[[Any], Predicate]) -> Predicate:
        if sub is None:  # simple multi-valued: the anchor row is the value
            return test(self.anchor.c.value_key)
        row = AV.alias()
        # A scalar probe rather than EXISTS: PostgreSQL would pull EXISTS up into a join,
        # which without statistics (just after a bulk load) it nests quadratically; this
        # stays one primary-key lookup per candidate element.
        probe = (
            select(literal(1))
            .where(
                row.c.resource_pk == self.anchor.c.resource_pk,
                row.c.path == self._sub_path(sub),
                row.c.position == self.anchor.c.position,
                test(row.c.value_key),
            )
            .limit(1)
            .scalar_subquery()
        )
        return probe.isnot(None)

    def _operand(self, node: Comparison) -> tuple[str | None, AttributeBinding, Any]:
        sub, binding = self._bind_sub(node.attr_path)
        _validate_operator(binding, node.op)
        return sub, binding, operand(binding, node.op, node.value)

    def visit_comparison(self, node: Comparison) -> Predicate:
        sub, binding, value = self._operand(node)
        if value is None:
            return _negate_null(node.op, self._same_element(sub, lambda col: col != ""))
        if node.op == CompareOperator.ne:
            return not_(self._same_element(sub, self._row_test(binding, CompareOperator.eq, value)))
        return self._same_element(sub, self._row_test(binding, node.op, value))

    def visit_present(self, node: Present) -> Predicate:
        sub, _ = self._bind_sub(node.attr_path)
        return self._same_element(sub, lambda col: col != "")

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        """``and``/``or``, the comparisons of one sub-attribute tested together on its row:
        an element has one row per sub-attribute, so ``emails[value co "a" or value co "b"]``
        is one probe of the ``value`` row per element, not one per term."""
        combine = and_ if node.op == LogicalOperator.and_ else or_
        parts: list[Predicate | tuple[str | None, list[RowTest]]] = []
        shared: dict[str | None, list[RowTest]] = {}
        for term in node.terms:
            found = self._row_test_of(term)
            if found is None:
                parts.append(self.visit(term))
                continue
            sub, test = found
            if sub not in shared:
                parts.append((sub, shared.setdefault(sub, [])))
            shared[sub].append(test)
        return combine(*(self._tested(part, combine) for part in parts))

    def _tested(
        self,
        part: Predicate | tuple[str | None, list[RowTest]],
        combine: Callable[..., Predicate],
    ) -> Predicate:
        if not isinstance(part, tuple):
            return part
        sub, tests = part
        return self._same_element(sub, lambda col: combine(*(test(col) for test in tests)))

    def _row_test_of(self, node: FilterNode) -> tuple[str | None, RowTest] | None:
        """The sub-attribute a comparison reads and its test of the row, for a comparison
        that holds exactly when its row exists and passes (not ``ne``, not ``null``)."""
        if not isinstance(node, Comparison) or node.op == CompareOperator.ne:
            return None
        sub, binding, value = self._operand(node)
        if value is None:
            return None
        return sub, self._row_test(binding, node.op, value)

    @staticmethod
    def _drives(node: FilterNode, ops: tuple[CompareOperator, ...]) -> bool:
        return isinstance(node, Comparison) and node.op in ops and node.value is not None

    def _driver(self, node: FilterNode) -> tuple[Comparison | None, FilterNode | None]:
        """Pick a comparison that every match must satisfy, to look rows up by, and the rest.

        Of the ``eq`` terms of a conjunction, one on ``value`` is preferred, and one on
        ``type`` or ``primary`` (a handful of distinct keys each) comes last: in
        ``emails[type eq "work" and value eq "x"]`` the rows are found by ``value``.
        """
        if self._drives(node, (CompareOperator.eq, *_STRING_OPERATORS, *_ORDERING_OPERATORS)):
            assert isinstance(node, Comparison)
            return node, None
        if not (isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_):
            return None, node
        candidates = [
            index
            for index, term in enumerate(node.terms)
            if self._drives(term, (CompareOperator.eq,))
        ]
        if not candidates:
            return None, node

        def rank(index: int) -> int:
            term = node.terms[index]
            assert isinstance(term, Comparison)
            name = term.attr_path.attr.lower()
            return 0 if name == "value" else 2 if name in ("type", "primary") else 1

        chosen = min(candidates, key=rank)
        driver = node.terms[chosen]
        assert isinstance(driver, Comparison)
        rest = node.terms[:chosen] + node.terms[chosen + 1 :]
        remaining = rest[0] if len(rest) == 1 else LogicalExpr(op=node.op, terms=rest)
        return driver, remaining

    def select(self, node: FilterNode) -> Predicate:
        return self.d.among(R.c.pk, self.rows(node))

    def rows(self, node: FilterNode) -> Select[Any]:
        """The ``resource_pk`` of every resource with an element that ``node`` holds on."""
        self.anchor = AV.alias()
        driver, rest = self._driver(node)
        if driver is not None:
            sub, binding, value = self._operand(driver)
            conditions = [
                self.anchor.c.path == self._sub_path(sub),
                self._row_test(binding, driver.op, value)(self.anchor.c.value_key),
            ]
        else:
            conditions = [self.anchor.c.path == self._sub_path(None)]
        if rest is not None:
            conditions.append(self.visit(rest))
        return select(self.anchor.c.resource_pk).where(*conditions)
