"""SCIM filters (RFC 7644 §3.4.2.2) pushed down to SQL, on SQLite and PostgreSQL alike.

The scim2-models filter tree is walked with a ``FilterVisitor`` and becomes one SQLAlchemy
boolean expression over ``resources``: indexed columns for ``id``, ``externalId``,
``userName``/``displayName``, ``active`` and ``meta``; the ``attribute_values`` index for
multi-valued attributes (same-element semantics for ``emails[type eq "work" and …]``) and
for ``dateTime`` values (compared as UTC instants); ``memberships`` for ``members`` and
``groups``; JSON extraction for the rest.

Every predicate this module builds is NULL-free (a missing attribute compares false, never
unknown), so ``ne`` and ``not`` are plain negations and stay NULL-safe.

The reference is scim2-models' own evaluator, ``ScimFilter[Model](text).match(resource)``
(tests/test_filters.py compares the two). Deliberate differences:

- a ``dateTime`` written without an offset is taken as UTC (the evaluator cannot order it
  against an offset one, and matches nothing);
- ``meta.location`` and ``$ref`` depend on the base URL a request came in on, so they can be
  tested with ``pr`` but not compared (400 ``invalidFilter``);
- in ``attr[…]`` over a list of simple values, a name other than ``value`` is 400
  ``invalidFilter`` (the evaluator matches nothing), and so is ``gt null`` and the like;
- caseExact strings compare as stored, where the evaluator NFC-normalises both sides;
- a complex multi-valued attribute is ``pr`` once it has an element, even an element whose
  sub-attributes are all empty strings;
- string ordering (``gt``…) is by code point on both databases (``COLLATE "C"``), as in
  Python, whatever the PostgreSQL database's collation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

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
from sqlalchemy import Select
from sqlalchemy import String
from sqlalchemy import and_
from sqlalchemy import case
from sqlalchemy import cast
from sqlalchemy import exists
from sqlalchemy import false
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import literal_column
from sqlalchemy import not_
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import true

from bridge.store.engine import scim_fold
from bridge.store.tables import AttributeValueRow
from bridge.store.tables import MembershipRow
from bridge.store.tables import ResourceRow
from bridge.store.values import datetime_key
from bridge.store.values import value_key
from bridge.store.values import value_path

R = ResourceRow.__table__  # type: ignore[attr-defined]
AV = AttributeValueRow.__table__  # type: ignore[attr-defined]
M = MembershipRow.__table__  # type: ignore[attr-defined]

Predicate = ColumnElement[bool]
Expr = ColumnElement[Any]

_STRING_OPERATORS = (CompareOperator.co, CompareOperator.sw, CompareOperator.ew)
# Greater than every key (the last code point): what a resource without a sortBy value sorts as.
_LAST = "\U0010ffff"

_ORDERING_OPERATORS = (
    CompareOperator.gt,
    CompareOperator.ge,
    CompareOperator.lt,
    CompareOperator.le,
)


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


def _is_string(binding: AttributeBinding) -> bool:
    target = binding.target_type
    return target is str or (isinstance(target, type) and issubclass(target, str))


def _is_datetime(binding: AttributeBinding) -> bool:
    target = binding.target_type
    return isinstance(target, type) and issubclass(target, datetime)


def _utc(value: datetime) -> datetime:
    """A filter's instant in UTC (SQLite stores naive UTC text; a naive operand is UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _key_of(binding: AttributeBinding, value: Any) -> str | None:
    """The form a filter operand is compared in (what ``attribute_values`` stores)."""
    if isinstance(value, datetime):
        return datetime_key(value)
    if isinstance(value, str):
        return value if binding.case_exact else str(scim_fold(value))
    return value_key(value, "exact")


def _negate_null(op: CompareOperator, present: Predicate) -> Predicate:
    """``attr eq null`` is absence, ``attr ne null`` presence (as ScimFilter.match reads them)."""
    if op == CompareOperator.eq:
        return not_(present)
    if op == CompareOperator.ne:
        return present
    raise InvalidFilterException(detail=f"'{op.value} null' compares nothing")


class SqlFilter(FilterVisitor[Predicate]):
    """Translate a filter tree bound to ``model`` into a predicate over ``resources``."""

    def __init__(self, model: type[Resource[Any]], dialect: str) -> None:
        self.model = model
        self.schema = str(model.__schema__)
        self.resource_type = self.schema.rsplit(":", 1)[-1]
        self.d = Dialect(dialect)
        self._point_columns: dict[AttrPath, tuple[str, bool, AttributeBinding] | None] = {}

    def __call__(self, node: FilterNode) -> Predicate:
        return self.visit(node)

    def point_lookup(self, node: FilterNode) -> tuple[str, str] | None:
        """``(column, key)`` when ``node`` is ``id``, ``externalId`` or ``userName``
        (``displayName`` of a group) ``eq`` a string: the lookup IdPs make before every write,
        answered from the column's index without building a statement. The key is what the
        translated predicate would compare (folded for ``userName``); ``None`` otherwise.
        """
        if not isinstance(node, Comparison) or node.op != CompareOperator.eq:
            return None
        if not isinstance(node.value, str):
            return None
        path = node.attr_path
        if path not in self._point_columns:  # resolving a path costs more than the lookup
            if len(self._point_columns) >= 1024:  # any spelling of a name resolves: bound it
                self._point_columns.clear()
            self._point_columns[path] = self._point_column(path)
        found = self._point_columns[path]
        if found is None:
            return None
        name, folded, binding = found
        value = coerce_value(binding, node.value, node.op)
        if not isinstance(value, str):
            return None
        return name, str(scim_fold(value)) if folded else value

    def _point_column(self, path: AttrPath) -> tuple[str, bool, AttributeBinding] | None:
        where = self._bind(path, for_comparison=True)  # an unknown attribute raises, uncached
        column = self._column(where)
        if column is None:
            return None
        expr, folded = column
        name = getattr(expr, "name", None)
        if name not in ("id", "external_id", "name_key"):
            return None
        if not folded and not where.binding.case_exact:
            return None
        return name, folded, where.binding

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

    def _is_membership(self, where: Location) -> bool:
        return where.extension is None and where.attr in ("members", "groups")

    def _is_meta(self, where: Location) -> bool:
        return where.extension is None and where.attr == "meta"

    def _is_indexed(self, where: Location) -> bool:
        """Whether ``attribute_values`` holds the values (see values.indexed_attributes)."""
        if self._column(where) is not None or self._is_meta(where):
            return False
        return where.binding.is_multivalued or _is_datetime(where.binding)

    def visit_comparison(self, node: Comparison) -> Predicate:
        where = self._bind(node.attr_path, for_comparison=True)
        _validate_operator(where.binding, node.op)
        value = coerce_value(where.binding, node.value, node.op)
        if self._is_membership(where):
            sub = where.sub or "value"
            if node.op == CompareOperator.ne:  # universal, as for any multi-valued attribute
                return not_(self._membership(where, _MemberTest(sub, CompareOperator.eq, value)))
            return self._membership(where, _MemberTest(sub, node.op, value))
        if value is None:
            return _negate_null(node.op, self._present(where))
        if self._is_meta(where) and where.sub == "location":
            raise InvalidFilterException(detail="meta.location can only be tested with 'pr'")
        if node.op in _STRING_OPERATORS and not _is_string(where.binding):
            return false()  # a substring of a non-string: ScimFilter.match matches nothing
        if self._is_indexed(where):
            return self._indexed(where, node.op, value)
        return self._scalar(where, node.op, value)

    def visit_present(self, node: Present) -> Predicate:
        return self._present(self._bind(node.attr_path, for_comparison=False))

    def visit_value_path(self, node: ValuePath) -> Predicate:
        where = self._bind(node.attr_path, for_comparison=False)
        _validate_value_selection(where.binding)
        if self._is_membership(where):
            return self._membership(where, node.val_filter)
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
        if name == ("meta", "version"):  # as rendered: W/"<version>"
            return literal('W/"') + cast(R.c.version, String) + literal('"'), False
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
            if isinstance(value, datetime):
                value = _utc(value)
            elif folded or (isinstance(value, str) and not binding.case_exact):
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
        elif isinstance(value, str) and _is_string(binding) and not binding.case_exact:
            expr, value = self.d.fold(text), scim_fold(value)
        else:
            expr = text
        if op == CompareOperator.ne:
            return not_(_compare(self.d, expr, CompareOperator.eq, value))
        return _compare(self.d, expr, op, value)

    def _path(self, where: Location) -> str:
        return value_path(where.extension, where.attr, where.sub)

    def _values_in(self, path: str, test: Callable[[Expr], Predicate]) -> Predicate:
        rows = select(AV.c.resource_pk).where(AV.c.path == path, test(AV.c.value_key))
        return self.d.among(R.c.pk, rows)

    def _indexed(self, where: Location, op: CompareOperator, value: Any) -> Predicate:
        key = _key_of(where.binding, value)
        if op == CompareOperator.ne:
            # The universal reading, as ScimFilter.match: no value equals the operand.
            return not_(self._values_in(self._path(where), lambda col: col == key))
        return self._values_in(self._path(where), lambda col: _compare(self.d, col, op, key))

    def _present(self, where: Location) -> Predicate:
        if self._is_membership(where):
            return self._membership(where, None)
        if self._is_meta(where) and where.sub in (None, "location"):
            return true()  # every resource is rendered with its meta and location
        if self._is_indexed(where):
            item = where.binding.field_type
            complex_item = isinstance(item, type) and issubclass(item, BaseModel)
            if where.sub is None and complex_item:  # the elements' anchor rows
                return self._values_in(self._path(where), lambda col: literal(True))
            return self._values_in(self._path(where), lambda col: col != "")
        column = self._column(where)
        if column is not None:
            expr = column[0]
            if _is_string(where.binding):
                return and_(expr.isnot(None), expr != "")
            return expr.isnot(None)
        text = self.d.json_text(self._keys(where))
        return and_(text.isnot(None), text.not_in(["", "{}", "[]", "null"]))

    def _membership(self, where: Location, test: FilterNode | _MemberTest | None) -> Predicate:
        """Resources with a membership row (as group for ``members``, member for ``groups``)."""
        own, other = (
            (M.c.group_id, M.c.member_id)
            if where.attr == "members"
            else (M.c.member_id, M.c.group_id)
        )
        rows = select(own)
        if test is not None:
            rows = rows.where(_MembershipFilter(self, where, other).visit_any(test))
        return self.d.among(R.c.id, rows)

    def sort_key(self, attr_path: AttrPath) -> Expr:
        """An expression to order by for ``sortBy`` (RFC 7644 §3.4.2.3).

        It is text (or, on SQLite, a JSON scalar) and never NULL: a resource without a value
        sorts as ``_LAST``, after every value, so last when ascending and first when
        descending, as §3.4.2.3 requires. A multi-valued attribute sorts by its primary
        value, else its first. Strings compare by code point on both databases.
        """
        where = self._bind(attr_path, for_comparison=True)
        key = self._sort_column(where)
        if key is None and self._is_indexed(where):
            key = self._first_value(where)
        elif key is None:
            key = self.d.json_text(self._keys(where))
            if _is_string(where.binding) and not where.binding.case_exact:
                key = self.d.fold(key)
        return self.d.ordered(func.coalesce(key, _LAST))

    def _sort_column(self, where: Location) -> Expr | None:
        """A column as text that orders as its values do (booleans, times, versions)."""
        column = self._column(where)
        if column is None:
            return None
        expr = column[0]
        if expr is R.c.active:
            return case((R.c.active.is_(True), "true"), (R.c.active.is_(False), "false"))
        if expr is R.c.created or expr is R.c.last_modified:
            if self.d.sqlite:  # stored as fixed-width UTC text
                return cast(expr, String)
            utc = func.timezone("UTC", expr)
            return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS.US')
        if where.sub == "version" and self._is_meta(where):
            if self.d.sqlite:
                return func.printf("%012d", R.c.version)
            return func.lpad(cast(R.c.version, String), 12, "0")
        return expr

    def _first_value(self, where: Location) -> Expr:
        """The key of the primary value of an indexed attribute, else of its first one."""
        row = AV.alias()
        query = select(row.c.value_key).where(
            row.c.resource_pk == R.c.pk, row.c.path == self._path(where)
        )
        item = where.binding.field_type
        if where.sub is not None and "primary" in getattr(item, "model_fields", {}):
            primary = AV.alias()
            is_primary = exists().where(
                primary.c.resource_pk == row.c.resource_pk,
                primary.c.position == row.c.position,
                primary.c.path == value_path(where.extension, where.attr, "primary"),
                primary.c.value_key == "true",
            )
            query = query.order_by(case((is_primary, 0), else_=1), row.c.position)
        else:
            query = query.order_by(row.c.position)
        return query.limit(1).scalar_subquery()


@dataclass(frozen=True)
class _MemberTest:
    """A comparison on a sub-attribute of ``members``/``groups`` outside brackets."""

    sub: str
    op: CompareOperator
    value: Any


class _MembershipFilter(FilterVisitor[Predicate]):
    """Filters on ``members`` (of a Group) or ``groups`` (of a User), over ``memberships``.

    One membership row is one element, so ``members[type eq "User" and value eq "x"]`` holds
    on one member. ``value`` is the other side's id, ``type`` the member's resource type
    (always ``direct`` for ``groups``), ``display`` the other side's display name.
    """

    def __init__(self, outer: SqlFilter, where: Location, other: Any) -> None:
        self.outer = outer
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
        d = self.outer.d
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
        d = self.outer.d
        if op == CompareOperator.ne:
            return not_(_compare(d, expr, CompareOperator.eq, value))
        return _compare(d, expr, op, value)

    def visit_comparison(self, node: Comparison) -> Predicate:
        sub, binding = self._bind_sub(node.attr_path)
        _validate_operator(binding, node.op)
        return self._test(sub, node.op, coerce_value(binding, node.value, node.op))

    def visit_present(self, node: Present) -> Predicate:
        self._bind_sub(node.attr_path)
        return true()  # every sub-attribute of a member is rendered

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
        d = self.outer.d
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
        return sub, binding, coerce_value(binding, node.value, node.op)

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

    def visit_not(self, node: Not) -> Predicate:
        return not_(self.visit(node.expr))

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        terms = [self.visit(term) for term in node.terms]
        return and_(*terms) if node.op == LogicalOperator.and_ else or_(*terms)

    def visit_value_path(self, node: ValuePath) -> Predicate:
        raise InvalidFilterException(detail="a value selection cannot nest another")

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
        rows = select(self.anchor.c.resource_pk).where(*conditions)
        return self.outer.d.among(R.c.pk, rows)


def translate(model: type[Resource[Any]], dialect: str, node: FilterNode) -> Predicate:
    """The SQL predicate of a filter tree over ``resources`` (RFC 7644 §3.4.2.2)."""
    return SqlFilter(model, dialect).visit(node)
