"""Comparisons of a string attribute kept in the document (``title``, extension strings):
the terms of one ``and``/``or`` that test one attribute read it, and fold it, once per row.

Without this every term extracts and folds the attribute again: 64 ``title co "…"`` terms
over 10,000 users with 2,048-character titles ran over 10 s on PostgreSQL (its
``normalize()`` costs about 150 µs on 2 KiB) and took 3 s on SQLite (``bench/worst_filter.py``).
The reading is a one-row derived table behind ``LIMIT 1``, which neither database merges
into the outer query (so neither copies the expression back into each term). On PostgreSQL
an ASCII string is folded by ``lower(… COLLATE "C")`` instead of ``normalize``: NFC leaves
ASCII as it is, and lower-casing it needs no locale; and ``ew`` tests the reading reversed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scim2_models.path import CompareOperator
from sqlalchemy import case
from sqlalchemy import exists
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import not_
from sqlalchemy import select

from bridge.store.dialect import Dialect
from bridge.store.dialect import Expr
from bridge.store.dialect import Predicate
from bridge.store.dialect import R
from bridge.store.dialect import _compare


@dataclass(frozen=True)
class TextTest:
    """``attr op value`` on a string attribute of the document; ``value`` already folded when
    ``folded`` (the attribute is not caseExact); ``negated``: under ``not (…)``."""

    keys: tuple[str, ...]
    folded: bool
    op: CompareOperator
    value: str
    negated: bool = False

    @property
    def reads(self) -> tuple[tuple[str, ...], bool]:
        """What the test reads: tests reading the same share one reading."""
        return self.keys, self.folded

    def negate(self) -> TextTest:
        return TextTest(self.keys, self.folded, self.op, self.value, not self.negated)


def fold(d: Dialect, expr: Expr) -> Expr:
    """``scim_fold`` in SQL, with PostgreSQL's ASCII strings spared ``normalize``."""
    if d.sqlite:
        return d.fold(expr)
    ascii_only = func.octet_length(expr) == func.char_length(expr)
    return case((ascii_only, func.lower(expr.collate("C"))), else_=d.fold(expr))


def read_once(
    d: Dialect, tests: Sequence[TextTest], combine: Callable[..., Predicate]
) -> Predicate:
    """``combine`` (``and_``/``or_``) of ``tests``, which all read the same attribute, over one
    reading of it: ``EXISTS (SELECT 1 FROM (SELECT <value> AS v LIMIT 1) WHERE <tests on v>)``.

    The derived table always has its one row and every test is NULL-free, so the EXISTS is
    exactly the combination of the tests.
    """
    keys, folded = tests[0].reads
    raw = select(d.json_text(list(keys)).label("v")).correlate(R).limit(1).subquery()
    reading = raw
    if folded:  # fold the value read once, not the extraction once per use
        reading = select(fold(d, raw.c.v).label("v")).select_from(raw).limit(1).subquery()
    if not d.sqlite and any(test.op == CompareOperator.ew for test in tests):
        # ``right()`` counts every character of the string, at each use: ``ew`` is ``sw`` of
        # the value reversed once, and ``left()`` reads only as far as the suffix is long.
        reversed_ = func.reverse(reading.c.v).label("reversed")
        reading = select(reading.c.v, reversed_).select_from(reading).limit(1).subquery()
    predicates = [_test(d, reading, test) for test in tests]
    return exists(select(literal(1)).select_from(reading).where(combine(*predicates)))


def _test(d: Dialect, reading: Any, test: TextTest) -> Predicate:
    if test.op == CompareOperator.ne:
        found = not_(_compare(d, reading.c.v, CompareOperator.eq, test.value))
    elif test.op == CompareOperator.ew and "reversed" in reading.c:
        found = _compare(d, reading.c.reversed, CompareOperator.sw, test.value[::-1])
    else:
        found = _compare(d, reading.c.v, test.op, test.value)
    return not_(found) if test.negated else found
