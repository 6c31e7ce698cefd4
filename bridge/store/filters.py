"""SCIM filters (RFC 7644 §3.4.2.2) pushed down to SQL, on SQLite and PostgreSQL alike.

The scim2-models filter tree is walked with a ``FilterVisitor`` and becomes one SQLAlchemy
boolean expression over ``resources``: indexed columns for ``id``, ``externalId``,
``userName``/``displayName``, ``active`` and ``meta``; the ``attribute_values`` index for
multi-valued attributes (same-element semantics for ``emails[type eq "work" and …]``);
``memberships`` for ``members`` and ``groups``; JSON extraction for the rest.

Every predicate this module builds is NULL-free (a missing attribute compares false, never
unknown), so ``ne`` and ``not`` are plain negations and stay NULL-safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from scim2_models import BaseModel
from scim2_models import InvalidFilterException
from scim2_models import Resource
from scim2_models.path import AttributeBinding
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import FilterVisitor
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator
from scim2_models.path import Not
from scim2_models.path import Present
from scim2_models.path import ValuePath
from scim2_models.path import coerce_value

# Private helpers of scim2-models (pinned < 0.13): the same resolution and checks its own
# evaluator applies, so SQL and ScimFilter.match agree on what a path designates.
from scim2_models.path.resolution import _resolve_filter_path
from scim2_models.path.resolution import _validate_operator
from scim2_models.path.resolution import _validate_value_selection
from sqlalchemy import ColumnElement
from sqlalchemy import Numeric
from sqlalchemy import and_
from sqlalchemy import cast
from sqlalchemy import exists
from sqlalchemy import false
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import not_
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import true
from sqlalchemy.orm import aliased

from bridge.store.engine import scim_fold
from bridge.store.tables import AttributeValueRow
from bridge.store.tables import MembershipRow
from bridge.store.tables import ResourceRow
from bridge.store.values import value_key
from bridge.store.values import value_path

R = ResourceRow.__table__  # type: ignore[attr-defined]
AV = AttributeValueRow.__table__  # type: ignore[attr-defined]
M = MembershipRow.__table__  # type: ignore[attr-defined]

Predicate = ColumnElement[bool]
Expr = ColumnElement[Any]

_DATETIME = TypeAdapter(datetime)


@dataclass(frozen=True)
class Location:
    """Where an attribute's values are kept: JSON keys of the document, plus the binding."""

    extension: str | None
    attr: str
    sub: str | None
    binding: AttributeBinding


def locate(binding: AttributeBinding, resource_schema: str) -> Location:
    """Split a binding's URN into the document keys that hold it."""
    schema = str(getattr(binding.model, "__schema__", "") or "")
    rest = (
        binding.urn[len(schema) + 1 :] if schema and binding.urn.startswith(schema) else binding.urn
    )
    attr, _, sub = rest.partition(".")
    extension = None if schema == resource_schema else schema
    return Location(extension, attr, sub or None, binding)


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
        return func.scim_fold(expr) if self.sqlite else func.lower(expr)

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
    if op in (CompareOperator.co, CompareOperator.sw, CompareOperator.ew):
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
    else:
        operators: dict[CompareOperator, Callable[[Expr, Any], Predicate]] = {
            CompareOperator.eq: lambda e, v: e == v,
            CompareOperator.ne: lambda e, v: e != v,
            CompareOperator.gt: lambda e, v: e > v,
            CompareOperator.ge: lambda e, v: e >= v,
            CompareOperator.lt: lambda e, v: e < v,
            CompareOperator.le: lambda e, v: e <= v,
        }
        test = operators[op](expr, value)
    return and_(expr.isnot(None), test)


def _is_string(binding: AttributeBinding) -> bool:
    target = binding.target_type
    return target is str or (isinstance(target, type) and issubclass(target, str))


def _key_of(binding: AttributeBinding, value: Any) -> Any:
    """The form a filter operand is compared in (what ``attribute_values`` stores)."""
    if isinstance(value, datetime):
        return _DATETIME.dump_python(value, mode="json")
    if isinstance(value, str):
        return value if binding.case_exact else scim_fold(value)
    return value


class SqlFilter(FilterVisitor[Predicate]):
    """Translate a filter tree bound to ``model`` into a predicate over ``resources``."""

    def __init__(self, model: type[Resource[Any]], dialect: str) -> None:
        self.model = model
        self.schema = str(model.__schema__)
        self.resource_type = self.schema.rsplit(":", 1)[-1]
        self.d = Dialect(dialect)

    def __call__(self, node: FilterNode) -> Predicate:
        return self.visit(node)

    # -- structure -------------------------------------------------------------------------

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        terms = [self.visit(term) for term in node.terms]
        return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)

    def visit_not(self, node: Not) -> Predicate:
        return not_(self.visit(node.expr))

    # -- leaves ----------------------------------------------------------------------------

    def _bind(self, attr_path: AttrPath, *, for_comparison: bool) -> Location:
        binding = _resolve_filter_path(
            self.model, attr_path, strict=True, for_comparison=for_comparison
        )
        assert binding is not None  # strict resolution raises instead
        return locate(binding, self.schema)

    def visit_comparison(self, node: Comparison) -> Predicate:
        where = self._bind(node.attr_path, for_comparison=True)
        _validate_operator(where.binding, node.op)
        value = coerce_value(where.binding, node.value, node.op)
        if value is None:
            present = self._present(where)
            if node.op == CompareOperator.eq:
                return not_(present)
            if node.op == CompareOperator.ne:
                return present
            raise InvalidFilterException(detail=f"'{node.op.value} null' compares nothing")
        if where.extension is None and where.attr in ("members", "groups"):
            return self._membership(where.attr, _MemberTest(where.sub or "value", node.op, value))
        if where.binding.is_multivalued:
            return self._multi_valued(where, node.op, value)
        return self._scalar(where, node.op, value)

    def visit_present(self, node: Present) -> Predicate:
        return self._present(self._bind(node.attr_path, for_comparison=False))

    def visit_value_path(self, node: ValuePath) -> Predicate:
        where = self._bind(node.attr_path, for_comparison=False)
        _validate_value_selection(where.binding)
        if where.extension is None and where.attr in ("members", "groups"):
            return self._membership(where.attr, node.val_filter)
        return _ElementFilter(self, where).select(node.val_filter)

    # -- storage kinds ---------------------------------------------------------------------

    def _column(self, where: Location) -> tuple[Expr, bool] | None:
        """The indexed column holding an attribute, and whether it holds folded keys."""
        if where.extension is not None:
            return None
        name = (where.attr, where.sub)
        if name == ("id", None):
            return R.c.id, False
        if name == ("externalId", None):
            return R.c.external_id, False
        if name == ("userName", None) and self.resource_type == "User":
            return R.c.name_key, True
        if name == ("displayName", None) and self.resource_type == "Group":
            return R.c.name_key, True
        if name == ("active", None) and self.resource_type == "User":
            return R.c.active, False
        if name == ("meta", "created"):
            return R.c.created, False
        if name == ("meta", "lastModified"):
            return R.c.last_modified, False
        if name == ("meta", "resourceType"):
            return R.c.type, False
        return None

    def _keys(self, where: Location) -> list[str]:
        keys = [where.extension] if where.extension else []
        keys.append(where.attr)
        if where.sub:
            keys.append(where.sub)
        return keys

    def _scalar(self, where: Location, op: CompareOperator, value: Any) -> Predicate:
        binding = where.binding
        column = self._column(where)
        if column is not None:
            expr, folded = column
            if folded or (isinstance(value, str) and not binding.case_exact):
                value = scim_fold(value) if isinstance(value, str) else value
                if not folded:
                    expr = self.d.fold(expr)
            if op == CompareOperator.ne:
                return not_(_compare(self.d, expr, CompareOperator.eq, value))
            return _compare(self.d, expr, op, value)
        text = self.d.json_text(self._keys(where))
        if isinstance(value, bool):
            expr = text
            value = (1 if value else 0) if self.d.sqlite else ("true" if value else "false")
        elif isinstance(value, int | float):
            expr = text if self.d.sqlite else cast(text, Numeric)
        elif isinstance(value, datetime):
            expr, value = text, _key_of(binding, value)
        elif isinstance(value, str) and _is_string(binding) and not binding.case_exact:
            expr, value = self.d.fold(text), scim_fold(value)
        else:
            expr = text
        if op == CompareOperator.ne:
            return not_(_compare(self.d, expr, CompareOperator.eq, value))
        return _compare(self.d, expr, op, value)

    def _values_in(self, path: str, test: Callable[[Expr], Predicate]) -> Predicate:
        rows = select(AV.c.resource_pk).where(AV.c.path == path, test(AV.c.value_key))
        return R.c.pk.in_(rows)

    def _multi_valued(self, where: Location, op: CompareOperator, value: Any) -> Predicate:
        path = value_path(where.extension, where.attr, where.sub)
        key = _key_of(where.binding, value)
        if not isinstance(key, str):
            key = value_key(key, True)
        if op == CompareOperator.ne:
            # The universal reading, as ScimFilter.match: no value equals the operand.
            return not_(self._values_in(path, lambda col: col == key))
        return self._values_in(path, lambda col: _compare(self.d, col, op, key))

    def _present(self, where: Location) -> Predicate:
        if where.extension is None and where.attr in ("members", "groups"):
            return self._membership(where.attr, None)
        if where.binding.is_multivalued:
            path = value_path(where.extension, where.attr, where.sub)
            if where.sub is None and where.binding.sub_field_name is None:
                return self._values_in(path, lambda col: literal(True))
            return self._values_in(path, lambda col: col != "")
        column = self._column(where)
        if column is not None:
            expr = column[0]
            if _is_string(where.binding):
                return and_(expr.isnot(None), expr != "")
            return expr.isnot(None)
        text = self.d.json_text(self._keys(where))
        return and_(text.isnot(None), text.not_in(["", "{}", "[]", "null"]))

    def _membership(self, attr: str, test: FilterNode | _MemberTest | None) -> Predicate:
        own, other = (
            (M.c.group_id, M.c.member_id) if attr == "members" else (M.c.member_id, M.c.group_id)
        )
        rows = select(own)
        if test is not None:
            rows = rows.where(_MembershipFilter(self, M, other, attr).visit_any(test))
        return R.c.id.in_(rows)

    def sort_key(self, attr_path: AttrPath) -> Expr:
        """An expression to order by for ``sortBy`` (RFC 7644 §3.4.2.3)."""
        where = self._bind(attr_path, for_comparison=True)
        column = self._column(where)
        if column is not None:
            return column[0]
        if where.binding.is_multivalued:
            path = value_path(where.extension, where.attr, where.sub)
            first = (
                select(func.min(AV.c.value_key))
                .where(AV.c.resource_pk == R.c.pk, AV.c.path == path)
                .scalar_subquery()
            )
            return first
        text = self.d.json_text(self._keys(where))
        if _is_string(where.binding) and not where.binding.case_exact:
            return self.d.fold(text)
        return text


@dataclass(frozen=True)
class _MemberTest:
    """A comparison on a sub-attribute of ``members``/``groups`` outside brackets."""

    sub: str
    op: CompareOperator
    value: Any


class _MembershipFilter(FilterVisitor[Predicate]):
    """Filters on ``members`` (of a Group) or ``groups`` (of a User), over ``memberships``."""

    def __init__(self, outer: SqlFilter, table: Any, other: Any, attr: str) -> None:
        self.outer = outer
        self.table = table
        self.other = other
        self.attr = attr

    def visit_any(self, test: FilterNode | _MemberTest) -> Predicate:
        if isinstance(test, _MemberTest):
            return self._test(test.sub, test.op, test.value)
        return self.visit(test)

    def _test(self, sub: str, op: CompareOperator, value: Any) -> Predicate:
        d = self.outer.d
        sub = sub.lower()
        if sub == "value":
            expr: Expr = self.other
        elif sub == "type":
            if self.attr == "groups":
                expr = literal("direct")
            else:
                expr = self.table.c.member_type
                value = value.capitalize() if isinstance(value, str) else value
        elif sub == "display":
            other = aliased(ResourceRow)
            expr = d.fold(
                select(other.display).where(other.id == self.other).scalar_subquery()  # type: ignore[arg-type]
            )
            value = scim_fold(value) if isinstance(value, str) else value
        else:
            return false()
        if op == CompareOperator.ne:
            return not_(_compare(d, expr, CompareOperator.eq, value))
        return _compare(d, expr, op, value)

    def visit_comparison(self, node: Comparison) -> Predicate:
        return self._test(node.attr_path.attr, node.op, node.value)

    def visit_present(self, node: Present) -> Predicate:
        return self.other.isnot(None) if node.attr_path.attr.lower() == "value" else true()

    def visit_not(self, node: Not) -> Predicate:
        return not_(self.visit(node.expr))

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        terms = [self.visit(term) for term in node.terms]
        return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)

    def visit_value_path(self, node: ValuePath) -> Predicate:
        raise InvalidFilterException(detail="a value selection cannot nest another")


class _ElementFilter(FilterVisitor[Predicate]):
    """The filter inside ``attr[…]``: every term holds on one and the same element.

    Rows of one element share ``(resource_pk, position)``. The query is driven from the
    most selective row it can find — an ``eq`` term of the top-level conjunction — so an
    indexed lookup answers ``emails[type eq "work" and value eq "x"]`` at any table size.
    """

    def __init__(self, outer: SqlFilter, where: Location) -> None:
        self.outer = outer
        self.where = where
        item = where.binding.field_type
        self.item_model = item if isinstance(item, type) and issubclass(item, BaseModel) else None
        self.anchor: Any = None

    def _sub_path(self, sub: str | None) -> str:
        return value_path(self.where.extension, self.where.attr, sub)

    def _bind_sub(self, attr_path: AttrPath) -> tuple[str | None, AttributeBinding | None]:
        """The sub-attribute a term compares (None: the element itself, for simple values)."""
        if self.item_model is None:
            if attr_path.attr.lower() != "value" or attr_path.sub_attr:
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
        self, sub: str | None, binding: AttributeBinding | None, op: CompareOperator, value: Any
    ) -> Callable[[Any], Predicate]:
        assert binding is not None
        if sub is not None:
            _validate_operator(binding, op)
            value = coerce_value(binding, value, op)
        key = _key_of(binding, value)
        if not isinstance(key, str):
            key = value_key(key, True)
        d = self.outer.d
        return lambda col: _compare(d, col, op, key)

    def _same_element(self, sub: str | None, test: Callable[[Any], Predicate]) -> Predicate:
        if sub is None:  # simple multi-valued: the anchor row is the value
            return test(self.anchor.value_key)
        row = aliased(AttributeValueRow)
        return exists().where(
            row.resource_pk == self.anchor.resource_pk,
            row.position == self.anchor.position,
            row.path == self._sub_path(sub),
            test(row.value_key),
        )

    def visit_comparison(self, node: Comparison) -> Predicate:
        sub, binding = self._bind_sub(node.attr_path)
        if node.op == CompareOperator.ne:
            eq = self._row_test(sub, binding, CompareOperator.eq, node.value)
            return not_(self._same_element(sub, eq))
        return self._same_element(sub, self._row_test(sub, binding, node.op, node.value))

    def visit_present(self, node: Present) -> Predicate:
        sub, _ = self._bind_sub(node.attr_path)
        return self._same_element(sub, lambda col: col != "")

    def visit_not(self, node: Not) -> Predicate:
        return not_(self.visit(node.expr))

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        terms = [self.visit(term) for term in node.terms]
        return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)

    def visit_value_path(self, node: ValuePath) -> Predicate:
        raise InvalidFilterException(detail="a value selection cannot nest another")

    def _driver(self, node: FilterNode) -> tuple[Comparison | None, FilterNode | None]:
        """Pick an ``eq``/``sw``… comparison that every match must satisfy, and the rest."""
        if isinstance(node, Comparison) and node.op != CompareOperator.ne:
            return node, None
        if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_:
            for index, term in enumerate(node.terms):
                if isinstance(term, Comparison) and term.op == CompareOperator.eq:
                    rest = node.terms[:index] + node.terms[index + 1 :]
                    remaining: FilterNode = (
                        rest[0] if len(rest) == 1 else LogicalExpr(op=node.op, terms=rest)
                    )
                    return term, remaining
        return None, node

    def select(self, node: FilterNode) -> Predicate:
        self.anchor = aliased(AttributeValueRow)
        driver, rest = self._driver(node)
        if driver is not None:
            sub, binding = self._bind_sub(driver.attr_path)
            conditions = [
                self.anchor.path == self._sub_path(sub),
                self._row_test(sub, binding, driver.op, driver.value)(self.anchor.value_key),
            ]
        else:
            conditions = [self.anchor.path == self._sub_path(None)]
        if rest is not None:
            conditions.append(self.visit(rest))
        rows = select(self.anchor.resource_pk).where(*conditions)
        return R.c.pk.in_(rows)


def translate(model: type[Resource[Any]], dialect: str, node: FilterNode) -> Predicate:
    """The SQL predicate of a filter tree over ``resources`` (RFC 7644 §3.4.2.2)."""
    return SqlFilter(model, dialect).visit(node)
