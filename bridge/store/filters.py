"""SCIM filters (RFC 7644 §3.4.2.2) pushed down to SQL, on SQLite and PostgreSQL alike.

The scim2-models filter tree is walked with a ``FilterVisitor`` and becomes one SQLAlchemy
boolean expression over ``resources``: indexed columns for ``id``, ``externalId``,
``userName``/``displayName``, ``active`` and ``meta``; the ``attribute_values`` index for
multi-valued attributes (same-element semantics for ``emails[type eq "work" and …]``) and
for ``dateTime`` values (compared as UTC instants); ``memberships`` for ``members`` and
``groups``; JSON extraction for the rest.

``SqlFilter`` is the translator; its pieces have their own modules: ``dialect`` (the SQL that
differs between the databases, and the comparison), ``location`` (where an attribute is kept),
``operands`` (what an operand must be for its attribute), ``text_tests`` (strings of the
document, read once per row by the terms of one ``and``/``or``), ``element_filter``
(``attr[…]``) and ``membership_filter`` (``members``, ``groups``).

Every predicate this translation builds is NULL-free (a missing attribute compares false, never
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
  Python, whatever the PostgreSQL database's collation;
- an operand of another type than its attribute's is 400 ``invalidFilter``, where the
  evaluator coerces it as pydantic would (``bridge.store.operands``);
- tolerances (logged at DEBUG with their name): an attribute name without a URN that the
  core schema lacks is read in the one extension that defines it
  (``unqualified_extension_attribute``: Entra sends ``manager eq "…"`` and
  ``employeeNumber eq "…"``); several extensions defining it is 400 ``invalidFilter``
  naming them. A single-valued complex attribute with a ``value`` sub-attribute compared with
  a value compares that ``value`` (``complex_attribute_value``: ``manager eq "id"``), as
  RFC 7644 §3.4.2.2 reads ``emails co "x"`` for a multi-valued one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
from scim2_models.utils import _find_field_name
from sqlalchemy import Numeric
from sqlalchemy import Select
from sqlalchemy import String
from sqlalchemy import and_
from sqlalchemy import case
from sqlalchemy import cast
from sqlalchemy import exists
from sqlalchemy import false
from sqlalchemy import func
from sqlalchemy import intersect
from sqlalchemy import literal
from sqlalchemy import not_
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import true
from sqlalchemy import union

from bridge.store.dialect import _STRING_OPERATORS
from bridge.store.dialect import AV
from bridge.store.dialect import BooleanFilter
from bridge.store.dialect import Dialect
from bridge.store.dialect import Expr
from bridge.store.dialect import M
from bridge.store.dialect import Predicate
from bridge.store.dialect import R
from bridge.store.dialect import _compare
from bridge.store.dialect import _negate_null
from bridge.store.element_filter import _ElementFilter
from bridge.store.engine import scim_fold
from bridge.store.location import Location
from bridge.store.location import _is_datetime
from bridge.store.location import _is_string
from bridge.store.location import _key_of
from bridge.store.location import _utc
from bridge.store.location import locate
from bridge.store.membership_filter import _MembershipFilter
from bridge.store.membership_filter import _MemberTest
from bridge.store.operands import is_complex
from bridge.store.operands import operand
from bridge.store.text_tests import TextTest
from bridge.store.text_tests import fold
from bridge.store.text_tests import read_once
from bridge.store.values import value_path

log = logging.getLogger("bridge.store.filters")

# Greater than every key (the last code point): what a resource without a sortBy value sorts as.
_LAST = "\U0010ffff"


@dataclass(frozen=True)
class _Resources:
    """``resources.pk IN rows`` (rows of ``attribute_values``), kept as rows until the
    ``and``/``or`` holding it is built: see ``SqlFilter.visit_logical_expr``."""

    rows: Select[Any]


class SqlFilter(BooleanFilter):
    """Translate a filter tree bound to ``model`` into a predicate over ``resources``."""

    def __init__(self, model: type[Resource[Any]], dialect: str) -> None:
        self.model = model
        self.schema = str(model.__schema__)
        self.resource_type = self.schema.rsplit(":", 1)[-1]
        self.d = Dialect(dialect)
        self._point_columns: dict[AttrPath, tuple[str, bool, AttributeBinding] | None] = {}
        # Lower-cased attribute name -> the URN of the one extension defining it; bounded by
        # the names the extensions declare (a name none declares is never kept).
        self._extension_of: dict[str, str] = {}

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

    # -- leaves ----------------------------------------------------------------------------

    def _bind(self, attr_path: AttrPath, *, for_comparison: bool) -> Location:
        try:
            binding = _resolve_filter_path(
                self.model, attr_path, strict=True, for_comparison=for_comparison
            )
        except InvalidFilterException:
            qualified = self._qualified(attr_path)
            if qualified is None:
                raise
            binding = _resolve_filter_path(
                self.model, qualified, strict=True, for_comparison=for_comparison
            )
        assert binding is not None  # strict resolution raises instead
        return locate(binding, self.schema)

    def _qualified(self, attr_path: AttrPath) -> AttrPath | None:
        """``attr_path`` qualified by the one extension defining its name, when the core
        schema lacks it (tolerance ``unqualified_extension_attribute``); ``None`` when no
        extension defines it; 400 ``invalidFilter`` naming them when several do."""
        if attr_path.uri is not None:
            return None
        key = attr_path.attr.lower()
        urn = self._extension_of.get(key)
        if urn is None:
            extensions = self.model.get_extension_models()
            candidates = [
                schema
                for schema, extension in extensions.items()
                if _find_field_name(extension, attr_path.attr) is not None
            ]
            if not candidates:
                return None
            if len(candidates) > 1:
                names = ", ".join(f"{schema}:{attr_path.attr}" for schema in candidates)
                raise InvalidFilterException(
                    detail=f"'{attr_path.attr}' is ambiguous: qualify it as one of {names}"
                )
            urn = self._extension_of[key] = candidates[0]
        qualified = AttrPath(attr=attr_path.attr, sub_attr=attr_path.sub_attr, uri=urn)
        log.debug(
            "tolerance unqualified_extension_attribute: '%s' read as '%s'",
            attr_path,
            qualified,
            extra={"tolerance": "unqualified_extension_attribute"},
        )
        return qualified

    def _compared(self, attr_path: AttrPath, value: Any) -> Location:
        """Where a comparison's attribute is kept; a single-valued complex attribute with a
        ``value`` sub-attribute compared with a value is its ``value`` (tolerance
        ``complex_attribute_value``: Entra's ``manager eq "id"``)."""
        where = self._bind(attr_path, for_comparison=True)
        item = where.binding.target_type
        if (
            value is None
            or where.sub is not None
            or not is_complex(where.binding)
            or not isinstance(item, type)
            or _find_field_name(item, "value") is None
        ):
            return where
        schema = getattr(where.binding.model, "__schema__", None)
        path = AttrPath(attr=where.attr, sub_attr="value", uri=str(schema) if schema else None)
        log.debug(
            "tolerance complex_attribute_value: '%s' compared as '%s'",
            attr_path,
            path,
            extra={"tolerance": "complex_attribute_value"},
        )
        return self._bind(path, for_comparison=True)

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
        return self._predicate(self._comparison(node), and_)

    def visit_logical_expr(self, node: LogicalExpr) -> Predicate:
        """``and``/``or``, built so that a long one stays cheap: the terms testing one string
        attribute of the document (or ``not`` of one) read it once per row
        (``bridge.store.text_tests``); the terms answered from ``attribute_values``
        (``attr[…]``, multi-valued attributes) are one lookup of their sets' intersection
        (union for ``or``), not one semi-join each, which PostgreSQL nests quadratically."""
        combine = and_ if node.op == LogicalOperator.and_ else or_
        parts: list[Predicate | list[TextTest] | list[_Resources]] = []
        shared: dict[tuple[tuple[str, ...], bool], list[TextTest]] = {}
        sets: list[_Resources] = []
        for term in node.terms:
            negated = isinstance(term, Not) and isinstance(term.expr, Comparison)
            found = self._term(term.expr if isinstance(term, Not) and negated else term)
            if isinstance(found, TextTest):
                if found.reads not in shared:
                    parts.append(shared.setdefault(found.reads, []))
                shared[found.reads].append(found.negate() if negated else found)
            elif isinstance(found, _Resources) and not negated:
                if not sets:
                    parts.append(sets)
                sets.append(found)
            else:
                predicate = self._predicate(found, combine)
                parts.append(not_(predicate) if negated else predicate)
        return combine(*(self._predicate(part, combine) for part in parts))

    def _term(self, node: FilterNode) -> Predicate | TextTest | _Resources:
        if isinstance(node, Comparison):
            return self._comparison(node)
        if isinstance(node, ValuePath):
            return self._value_path(node)
        return self.visit(node)

    def _predicate(
        self,
        found: Predicate | TextTest | _Resources | list[TextTest] | list[_Resources],
        combine: Callable[..., Predicate],
    ) -> Predicate:
        """The SQL of a term, or of terms gathered by ``visit_logical_expr``."""
        if isinstance(found, TextTest):
            return read_once(self.d, [found], combine)
        if isinstance(found, _Resources):
            return self.d.among(R.c.pk, found.rows)
        if not isinstance(found, list):
            return found
        if isinstance(found[0], TextTest):
            return read_once(self.d, [t for t in found if isinstance(t, TextTest)], combine)
        rows = [r.rows for r in found if isinstance(r, _Resources)]
        if len(rows) == 1:
            return self.d.among(R.c.pk, rows[0])
        merged = (intersect if combine is and_ else union)(*rows).subquery()
        return self.d.among(R.c.pk, select(*merged.c))

    def _comparison(self, node: Comparison) -> Predicate | TextTest | _Resources:
        where = self._compared(node.attr_path, node.value)
        _validate_operator(where.binding, node.op)
        value = operand(where.binding, node.op, node.value)
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
        return self._predicate(self._value_path(node), and_)

    def _value_path(self, node: ValuePath) -> Predicate | _Resources:
        where = self._bind(node.attr_path, for_comparison=False)
        _validate_value_selection(where.binding)
        if self._is_membership(where):
            return self._membership(where, node.val_filter)
        return _Resources(_ElementFilter(self.d, where).rows(node.val_filter))

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

    def _scalar(self, where: Location, op: CompareOperator, value: Any) -> Predicate | TextTest:
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
        if isinstance(value, str):
            folded = _is_string(binding) and not binding.case_exact
            key = str(scim_fold(value)) if folded else value
            return TextTest(tuple(self._keys(where)), folded, op, key)
        text = self.d.json_text(self._keys(where))
        if isinstance(value, bool):
            expr = text
            value = (1 if value else 0) if self.d.sqlite else ("true" if value else "false")
        elif isinstance(value, int | float):
            expr = text if self.d.sqlite else cast(text, Numeric)
        else:
            expr = text
        if op == CompareOperator.ne:
            return not_(_compare(self.d, expr, CompareOperator.eq, value))
        return _compare(self.d, expr, op, value)

    def _path(self, where: Location) -> str:
        return value_path(where.extension, where.attr, where.sub)

    def _rows_in(self, path: str, test: Callable[[Expr], Predicate]) -> Select[Any]:
        return select(AV.c.resource_pk).where(AV.c.path == path, test(AV.c.value_key))

    def _values_in(self, path: str, test: Callable[[Expr], Predicate]) -> Predicate:
        return self.d.among(R.c.pk, self._rows_in(path, test))

    def _indexed(self, where: Location, op: CompareOperator, value: Any) -> Predicate | _Resources:
        key = _key_of(where.binding, value)
        if op == CompareOperator.ne:
            # The universal reading, as ScimFilter.match: no value equals the operand.
            return not_(self._values_in(self._path(where), lambda col: col == key))
        return _Resources(
            self._rows_in(self._path(where), lambda col: _compare(self.d, col, op, key))
        )

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
            rows = rows.where(_MembershipFilter(self.d, where, other).visit_any(test))
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
                key = fold(self.d, key)
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


def translate(model: type[Resource[Any]], dialect: str, node: FilterNode) -> Predicate:
    """The SQL predicate of a filter tree over ``resources`` (RFC 7644 §3.4.2.2)."""
    return SqlFilter(model, dialect).visit(node)
