"""userNames under a policy: the form stored, the comparison key, and the invisible characters.

RFC 7643 §4.1.1 asks only that ``userName`` be unique case-insensitively, so ``ｊｏｈｎ``
(fullwidth), ``ﬁ`` (a ligature), ``straße`` and ``STRASSE``, or ``john`` with a trailing
space, are distinct users that look alike. Under ``exact`` (the default) names are kept as
sent and keyed by ``scim_fold``. Under ``nfkc`` they are trimmed and NFKC-normalised before
they are stored (``bridge.scim.quirks``), and keyed by NFKC and case folding, so lookalikes
collide (409 ``uniqueness``) and ``userName eq`` finds them. Characters that render as nothing
(zero-width, soft hyphen, bidi controls) are refused in a userName under either policy.
Hand-written: Python's ``unicodedata`` has NFKC and ``str.casefold``, no NFKC_Casefold.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace
from typing import Any

from scim2_models import Resource
from scim2_models.path import Comparison
from scim2_models.path import FilterNode
from scim2_models.path import LogicalExpr
from scim2_models.path import Not

from bridge.store.dialect import Predicate
from bridge.store.engine import scim_fold
from bridge.store.filters import SqlFilter

EXACT = "exact"
NFKC = "nfkc"

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"

INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
"""Format characters that render as nothing: the soft hyphen, zero-width spaces and joiners,
the word joiner and invisible operators, the byte-order mark, and the bidi controls."""


def stored(name: str, policy: str) -> str:
    """The userName as it is stored: trimmed and NFKC-normalised under ``nfkc``."""
    if policy != NFKC:
        return name
    # Trimmed again after NFKC: it turns U+3000 (ideographic space) and others into spaces.
    return unicodedata.normalize("NFKC", name.strip()).strip()


def key(name: str, policy: str) -> str:
    """The key a userName is unique and compared by (the ``name_key`` column).

    Under ``nfkc``: NFKC, case folded (``ß`` is ``ss``), NFKC again, then ``scim_fold``, of
    which the key is a fixed point, so a filter's operand folded again keeps its key.
    """
    if policy != NFKC:
        return str(scim_fold(name))
    return str(scim_fold(unicodedata.normalize("NFKC", stored(name, NFKC).casefold())))


def invisible(name: str) -> str | None:
    """The first character of ``name`` that renders as nothing, as ``U+XXXX``, if any."""
    found = INVISIBLE.search(name)
    return f"U+{ord(found.group()):04X}" if found else None


def keyed_filter(node: FilterNode, policy: str) -> FilterNode:
    """``node`` with every string compared with ``userName`` replaced by its key, so that the
    SQL translation, which folds the operand and compares it with ``name_key``, compares keys.
    """
    if policy != NFKC:
        return node
    if isinstance(node, LogicalExpr):
        return replace(node, terms=tuple(keyed_filter(term, policy) for term in node.terms))
    if isinstance(node, Not):
        return replace(node, expr=keyed_filter(node.expr, policy))
    if isinstance(node, Comparison) and isinstance(node.value, str):
        path = node.attr_path
        core = path.uri is None or path.uri.lower() == USER_SCHEMA.lower()
        if core and path.sub_attr is None and path.attr.lower() == "username":
            return replace(node, value=key(node.value, policy))
    return node


class _KeyedFilter(SqlFilter):
    """The SQL translation of filters whose ``userName`` operands are keys (``nfkc``)."""

    def __init__(self, model: type[Resource[Any]], dialect: str, policy: str) -> None:
        super().__init__(model, dialect)
        self.policy = policy

    def __call__(self, node: FilterNode) -> Predicate:
        return super().__call__(keyed_filter(node, self.policy))

    def point_lookup(self, node: FilterNode) -> tuple[str, str] | None:
        return super().point_lookup(keyed_filter(node, self.policy))


def sql_filter(model: type[Resource[Any]], dialect: str, policy: str) -> SqlFilter:
    """The SQL translation of filters on ``model`` comparing userNames by their key."""
    if policy != NFKC:
        return SqlFilter(model, dialect)
    return _KeyedFilter(model, dialect, policy)
