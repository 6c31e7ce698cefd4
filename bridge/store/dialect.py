"""The SQL that filters translate to: the tables as Core objects, the expression types, the
few functions that differ between SQLite and PostgreSQL, and the NULL-free comparison every
filter predicate is built from (a missing value compares false, never unknown).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scim2_models import InvalidFilterException
from scim2_models.path import CompareOperator
from scim2_models.path import FilterVisitor
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import Not
from scim2_models.path import ValuePath
from sqlalchemy import ColumnElement
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import func
from sqlalchemy import literal_column
from sqlalchemy import not_
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import true

from bridge.store.tables import AttributeValueRow
from bridge.store.tables import MembershipRow
from bridge.store.tables import ResourceRow

R = ResourceRow.__table__  # type: ignore[attr-defined]
AV = AttributeValueRow.__table__  # type: ignore[attr-defined]
M = MembershipRow.__table__  # type: ignore[attr-defined]

Predicate = ColumnElement[bool]
Expr = ColumnElement[Any]

_STRING_OPERATORS = (CompareOperator.co, CompareOperator.sw, CompareOperator.ew)
_ORDERING_OPERATORS = (
    CompareOperator.gt,
    CompareOperator.ge,
    CompareOperator.lt,
    CompareOperator.le,
)


class Dialect:
    """The few SQL functions that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.sqlite = name == "sqlite"

    def json_text(self, keys: list[str]) -> Expr:
        if self.sqlite:
            path = "$" + "".join(f'."{key}"' for key in keys)
            return func.json_extract(R.c.doc, path)
        return func.jsonb_extract_path_text(R.c.doc, *keys)

    def fold(self, expr: Expr) -> Expr:
        """``scim_fold`` in SQL: NFC, lower-cased, NFC (PostgreSQL's ``normalize`` needs UTF8)."""
        if self.sqlite:
            return func.scim_fold(expr)
        nfc: Expr = literal_column("NFC")
        return func.normalize(func.lower(func.normalize(expr, nfc)), nfc)

    def among(self, column: Expr, rows: Select[Any]) -> Predicate:
        """``column IN (rows)``, the subquery run once, driving the lookup.

        On PostgreSQL the rows go through an array: ``IN (SELECT unnest(ARRAY(…)))``. A
        plain ``IN`` becomes a semi-join, and on tables without statistics (right after a
        bulk load, before autovacuum analyses them) the planner nests it over every
        resource, quadratically; the array is computed once, then probed by primary key.
        """
        if self.sqlite:
            return column.in_(rows)
        return column.in_(select(func.unnest(func.array(rows.scalar_subquery()))))

    def ordered(self, expr: Expr) -> Expr:
        """Strings order by code point, as in Python, whatever the database's collation."""
        return expr if self.sqlite else expr.collate("C")

    def contains(self, expr: Expr, value: str) -> Predicate:
        fn = func.instr if self.sqlite else func.strpos
        return fn(expr, value) > 0

    def starts(self, expr: Expr, value: str) -> Predicate:
        if self.sqlite:
            return func.substr(expr, 1, len(value)) == value
        return func.left(expr, len(value)) == value

    def ends(self, expr: Expr, value: str) -> Predicate:
        if self.sqlite:
            return func.substr(expr, -len(value)) == value
        return func.right(expr, len(value)) == value


def _compare(d: Dialect, expr: Expr, op: CompareOperator, value: Any) -> Predicate:
    """``expr op value``, false (not NULL) when ``expr`` is NULL."""
    if op in _STRING_OPERATORS:
        if not isinstance(value, str):
            raise InvalidFilterException(detail=f"operator '{op.value}' needs a string")
        if value == "":
            test: Predicate = true()
        elif op == CompareOperator.co:
            test = d.contains(expr, value)
        elif op == CompareOperator.sw:
            test = d.starts(expr, value)
        else:
            test = d.ends(expr, value)
        return and_(expr.isnot(None), test)
    if op in _ORDERING_OPERATORS and isinstance(value, str):
        expr = d.ordered(expr)
    operators: dict[CompareOperator, Callable[[Expr, Any], Predicate]] = {
        CompareOperator.eq: lambda e, v: e == v,
        CompareOperator.ne: lambda e, v: e != v,
        CompareOperator.gt: lambda e, v: e > v,
        CompareOperator.ge: lambda e, v: e >= v,
        CompareOperator.lt: lambda e, v: e < v,
        CompareOperator.le: lambda e, v: e <= v,
    }
    return and_(expr.isnot(None), operators[op](expr, value))


def _negate_null(op: CompareOperator, present: Predicate) -> Predicate:
    """``attr eq null`` is absence, ``attr ne null`` presence (as ScimFilter.match reads them)."""
    if op == CompareOperator.eq:
        return not_(present)
    if op == CompareOperator.ne:
        return present
    raise InvalidFilterException(detail=f"'{op.value} null' compares nothing")


class BooleanFilter(FilterVisitor[Predicate]):
    """``and``, ``or`` and ``not`` as SQL, whatever a translator makes of the leaves."""

    def visit_not(self, node: Not) -> Predicate:
        return not_(self.visit(node.expr))

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        terms = [self.visit(term) for term in node.terms]
        return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)


class ValueFilter(BooleanFilter):
    """The filter inside ``attr[…]``: RFC 7644 §3.4.2.2 does not let one nest another."""

    def visit_value_path(self, node: ValuePath) -> Predicate:
        raise InvalidFilterException(detail="a value selection cannot nest another")
