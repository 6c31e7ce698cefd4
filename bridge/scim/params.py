"""Query parameters of lists and searches (RFC 7644 §3.4.2, §3.4.3; cursors: RFC 9865).

A filter is measured before scim2-models parses it: over ``max_length`` characters, over
``max_terms`` comparisons, or nested over ``MAX_FILTER_NESTING`` parentheses and brackets, it
is refused with 400 ``tooMany`` (RFC 7644 §3.12) from a count made outside its quoted strings,
so the parser, the SQL it becomes and the database never meet a monster filter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from scim2_models import InvalidFilterException
from scim2_models import InvalidValueException
from scim2_models import Path
from scim2_models import SCIMException
from scim2_models import ScimFilter
from scim2_models import TooManyException
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import FilterNode

from bridge.scim.door import check_filter
from bridge.scim.door import check_index

MAX_FILTER_TERMS = 64
"""``Settings.max_filter_terms`` by default: comparisons (``eq``…``pr``) in one filter."""

MAX_FILTER_LENGTH = 8192
"""``Settings.max_filter_length`` by default: characters of one filter."""

MAX_FILTER_NESTING = 16
"""Deepest nesting of parentheses and ``[…]`` accepted (each ``not`` takes a pair);
IdPs send two or three levels."""

# A JSON string as the filter grammar reads it, and what is left between them: the terms are
# counted and the brackets matched over the filter with its strings cut out.
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_OPERATOR = re.compile(r"(?<![\w$:.-])(?:eq|ne|co|sw|ew|gt|ge|lt|le|pr)(?![\w$-])", re.IGNORECASE)
_NOT_BRACKET = re.compile(r"[^()\[\]]+")

# ``attr eq "string"`` (``attr`` or ``attr.sub``, no URN): the lookup an IdP sends before every
# write, with a value that differs each time, so scim2-models' cache of parsed filters never
# hits. Built here into the very node its parser builds; anything else goes to the parser.
_SIMPLE_EQ = re.compile(
    r"[ \t]*([A-Za-z][A-Za-z0-9_-]*)(?:\.([A-Za-z][A-Za-z0-9_-]*))?"
    r'[ \t]+[eE][qQ][ \t]+("(?:[^"\\]|\\.)*")[ \t]*\Z'
)


def split_list(value: Any) -> list[str]:
    """``attributes=a,b`` in a query, or a JSON list in a SearchRequest."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item).strip() for item in value if str(item).strip()]
    return [item.strip() for item in str(value).split(",") if item.strip()]


def parse_filter(
    text: Any, *, max_terms: int = MAX_FILTER_TERMS, max_length: int = MAX_FILTER_LENGTH
) -> FilterNode | None:
    """The filter of a list or search (RFC 7644 §3.4.2.2), measured, then parsed."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidValueException(detail=f"filter must be a string, not {text!r}")
    if not text.strip():
        return None
    _check_length(text, max_length)
    node = _simple_eq(text)
    if node is None:
        check_filter_size(text, max_terms=max_terms, max_length=max_length)
        node = _parse_filter(text)
    check_filter(node)
    return node


def check_filter_size(
    text: str, *, max_terms: int = MAX_FILTER_TERMS, max_length: int = MAX_FILTER_LENGTH
) -> None:
    """Refuse (400 ``tooMany``) a filter too long, with too many terms, or nested too deep.

    Counted without parsing, in linear time: the comparison operators and the brackets that
    stand outside the filter's quoted strings. An attribute named like an operator would be
    counted twice; no SCIM schema names one so.
    """
    _check_length(text, max_length)
    bare = _QUOTED.sub('""', text)
    terms = len(_OPERATOR.findall(bare))
    if terms > max_terms:
        raise TooManyException(
            detail=f"the filter has {terms} comparison terms; "
            f"at most {max_terms} are accepted (maxFilterTerms)"
        )
    brackets = _NOT_BRACKET.sub("", bare)
    if len(brackets) <= MAX_FILTER_NESTING:
        return  # too few to nest too deep
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in "([" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_FILTER_NESTING:
        raise TooManyException(
            detail=f"the filter nests parentheses and brackets {deepest} deep; "
            f"at most {MAX_FILTER_NESTING} levels are accepted"
        )


def _check_length(text: str, max_length: int) -> None:
    if len(text) > max_length:
        raise TooManyException(
            detail=f"the filter is {len(text)} characters long; "
            f"at most {max_length} are accepted (maxFilterLength)"
        )


def _simple_eq(text: str) -> FilterNode | None:
    simple = _SIMPLE_EQ.match(text)
    if simple is None:
        return None
    attr, sub_attr, quoted = simple.groups()
    try:
        value = json.loads(quoted)
    except ValueError:
        return None  # not a JSON string after all: the parser says what is wrong
    if not isinstance(value, str):
        return None
    attr_path = AttrPath(attr=attr, sub_attr=sub_attr, uri=None)
    return Comparison(attr_path=attr_path, op=CompareOperator.eq, value=value)


def _parse_filter(text: str) -> FilterNode:
    try:
        return ScimFilter(text.strip()).ast
    except SCIMException as exc:
        raise InvalidFilterException(detail=f"{exc.detail}: {text!r}") from exc
    except ValueError as exc:
        raise InvalidFilterException(detail=f"{exc}: {text!r}") from exc


def parse_sort_by(text: Any) -> AttrPath | None:
    if text is not None and not isinstance(text, str):
        raise InvalidValueException(detail=f"sortBy must be a string, not {text!r}")
    if text is None or not text.strip():
        return None
    try:
        node = Path(text.strip()).ast
    except (SCIMException, ValueError) as exc:
        raise InvalidValueException(detail=f"sortBy {text!r} is not an attribute path") from exc
    if not isinstance(node, AttrPath):
        raise InvalidValueException(detail=f"sortBy {text!r} is not an attribute path")
    return node


def _int(name: str, value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's Infinity
        raise InvalidValueException(detail=f"{name} must be an integer, not {value!r}") from None
    return check_index(name, number)


@dataclass(frozen=True)
class ListQuery:
    """A list or search request, parsed."""

    filter: FilterNode | None = None
    sort_by: AttrPath | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    cursor: str | None = None
    use_cursor: bool = False
    attributes: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls,
        params: Mapping[str, Any],
        *,
        default_count: int,
        max_count: int,
        max_filter_terms: int = MAX_FILTER_TERMS,
        max_filter_length: int = MAX_FILTER_LENGTH,
    ) -> ListQuery:
        """From query parameters or a SearchRequest body (keys compared case-insensitively);
        a filter over the limits (``Settings.max_filter_terms``, ``max_filter_length``) is
        400 ``tooMany``."""
        lowered = {str(k).lower(): v for k, v in params.items()}
        order = str(lowered.get("sortorder") or "ascending").lower()
        if order not in ("ascending", "descending"):
            raise InvalidValueException(
                detail=f"sortOrder must be ascending or descending, not {order!r}"
            )
        count = _int("count", lowered.get("count"), default_count)
        cursor = lowered.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidValueException(detail="cursor must be a string")
        if cursor is not None and lowered.get("startindex") not in (None, ""):
            raise InvalidValueException(detail="cursor and startIndex cannot be combined")
        return cls(
            filter=parse_filter(
                lowered.get("filter"), max_terms=max_filter_terms, max_length=max_filter_length
            ),
            sort_by=parse_sort_by(lowered.get("sortby")),
            descending=order == "descending",
            start_index=max(_int("startIndex", lowered.get("startindex"), 1), 1),
            count=min(max(count, 0), max_count),
            cursor=cursor or None,
            use_cursor=cursor is not None,
            attributes=split_list(lowered.get("attributes")),
            excluded=split_list(lowered.get("excludedattributes")),
        )
