"""Hypothesis strategies for the SCIM surface: requests a careless or hostile client could send.

Each strategy builds a ``Request`` (method, path, query, headers, body) from the attribute
paths of ``schemas/*.json``, valid-ish or broken: any JSON value in any attribute, NUL, lone
surrogates written as raw JSON escapes (``"\\udfff"``), zero-width characters, strings up to
~10 KB, deep nesting, out-of-range dateTimes, unknown schema URNs. Ids are placeholders
(``@user@``…) that tests/test_fuzz.py replaces with the ids of the resources it seeded or
created. Hand-written on Hypothesis: scim2-models parses SCIM but generates none of it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from dataclasses import field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from hypothesis import strategies as st

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR_URN = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
UNKNOWN_URNS = [
    "urn:ietf:params:scim:schemas:extension:unknown:2.0:User",
    "urn:example:custom",
    "urn:ietf:params:scim:schemas:core:2.0:user",  # the core URN in another case
    "",
]

USER = "@user@"
"""A seeded user (enterprise and HR extensions, emails, member of ``@group@``)."""
OTHER = "@other@"
"""A second seeded user, the first one's manager."""
GROUP = "@group@"
"""A seeded group holding ``@user@``."""
ETAG = "@etag@"
"""The ETag of ``@user@`` when it was seeded."""
NEW = "@new@"
"""The resource the example created last (an id no resource has before that)."""

NO_BODY = object()


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``choices``, each drawn ``weight`` times in ``sum(weights)``; the first is what
    Hypothesis shrinks to, so it is the plainest."""
    total = sum(weight for weight, _ in choices)

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        ticket = draw(st.integers(0, total - 1))
        for weight, strategy in choices:
            if ticket < weight:
                return draw(strategy)
            ticket -= weight
        raise AssertionError("unreachable")

    return pick()


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws, and False for Hypothesis' simplest choice (0), which it
    draws far more often than 1 in ``n`` (all-zero examples) and shrinks towards."""
    return draw(st.integers(0, n - 1)) == 1


@dataclass(frozen=True)
class Attribute:
    """One attribute of a schema file (RFC 7643 §7)."""

    urn: str
    name: str
    type: str
    multi: bool
    core: bool
    subs: tuple[Attribute, ...] = ()


def _attribute(urn: str, core: bool, raw: dict[str, Any]) -> Attribute:
    subs = tuple(_attribute(urn, core, sub) for sub in raw.get("subAttributes", []))
    return Attribute(urn, raw["name"], raw["type"], bool(raw.get("multiValued")), core, subs)


def load_attributes(directory: Path = SCHEMAS_DIR) -> dict[str, list[Attribute]]:
    """The attributes of every schema file, by schema URN."""
    found: dict[str, list[Attribute]] = {}
    for path in sorted(directory.glob("*.json")):
        document = json.loads(path.read_text())
        if isinstance(document, dict) and "attributes" in document:
            urn = document["id"]
            core = ":core:" in urn
            found[urn] = [_attribute(urn, core, raw) for raw in document["attributes"]]
    return found


ATTRIBUTES = load_attributes()
RESOURCE_URNS = {"User": [USER_URN, ENTERPRISE_URN, HR_URN], "Group": [GROUP_URN]}
COMMON_PATHS = [
    "id",
    "externalId",
    "schemas",
    "meta",
    "meta.created",
    "meta.lastModified",
    "meta.resourceType",
    "meta.version",
    "meta.location",
]


def attribute_paths(resource_type: str) -> list[str]:
    """Every attribute path of a resource type: ``a``, ``a.b``, and URN-qualified extensions."""
    paths = list(COMMON_PATHS)
    for urn in RESOURCE_URNS[resource_type]:
        for attribute in ATTRIBUTES[urn]:
            prefix = "" if attribute.core else f"{urn}:"
            paths.append(prefix + attribute.name)
            paths += [f"{prefix}{attribute.name}.{sub.name}" for sub in attribute.subs]
        if urn != RESOURCE_URNS[resource_type][0]:
            paths.append(urn)
    return paths


def multi_valued(resource_type: str) -> list[Attribute]:
    return [a for urn in RESOURCE_URNS[resource_type] for a in ATTRIBUTES[urn] if a.multi]


# -- values ------------------------------------------------------------------------------------

# NUL (PostgreSQL text cannot hold it), lone surrogates, zero-width space and joiner, BOM,
# right-to-left override, a combining accent (NFC folds it), İ (lower-cases to two code
# points), ß, the ﬁ ligature (NFKC), one outside the BMP, controls, and JSON/LIKE/filter syntax.
NASTY_CHARACTERS = [
    *("\x00", "\udfff", "\ud800", "\u200b", "\u200d", "\ufeff", "\u202e", "e\u0301"),
    *("\u0130", "\u00df", "\ufb01", "\U0001f600", "\x7f", "\u0085", '"', "\\", "'", "%"),
    *("_", "*", "[", "]", "{", "}", ",", ":", ".", " ", "\t", "\n"),
]
SPECIAL_STRINGS = [
    *("", " ", "true", "False", "null", "0", "-1", "NaN", "work", "home", "*", "urn:", "%00"),
    *("bulkId:b1", "bulkId:", USER_URN, ENTERPRISE_URN, HR_URN, USER, OTHER, GROUP, NEW),
    *("'; DROP TABLE resources; --", "E1", "e1"),  # E1: the seeded user's externalId
]
ODD_DATE_TIMES = [
    *("2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z", "9999-12-31T23:59:59-14:00"),
    *("0001-01-01T00:00:00+14:00", "2024-01-01", "2024-01-01 10:00:00"),
    "2024-01-01T10:00:00.123456789+01:00",
]


@cache
def date_times() -> st.SearchStrategy[str]:
    """RFC 3339-looking strings, inside and far outside years 1–9999 and the calendar."""
    parts = st.tuples(
        st.sampled_from([0, 1, 1970, 2024, 9999, 10000, 99999]),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["Z", "z", "+00:00", "-14:00", "+14:00", "+2400", "-99:99", "", ".5Z"]),
    )
    built = parts.map(
        lambda p: f"{p[0]:04d}-{p[1]:02d}-{p[2]:02d}T{p[3]:02d}:{p[4]:02d}:{p[5]:02d}{p[6]}"
    )
    return st.one_of(built, st.sampled_from(ODD_DATE_TIMES))


@cache
def strings() -> st.SearchStrategy[str]:
    """Short text, nasty characters, special words, dateTimes and huge strings (to ~10 KB)."""
    nasty = st.lists(
        st.one_of(st.sampled_from(NASTY_CHARACTERS), st.text(max_size=3)), max_size=6
    ).map("".join)
    huge = st.builds(
        lambda piece, times: piece * times,
        st.sampled_from(["x", "é", "\u0130", "\u200b", "\U0001f600", "ab\x00", "\udfff", "[{"]),
        st.sampled_from([255, 256, 511, 512, 513, 1024, 1025, 2047, 2048, 2049, 4096, 10240]),
    )
    return weighted(
        (12, st.text(max_size=12)),
        (3, st.sampled_from(SPECIAL_STRINGS)),
        (2, nasty),
        (2, date_times()),
        (1, huge),
    )


@cache
def numbers() -> st.SearchStrategy[int | float]:
    return st.one_of(
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True),
    )


@cache
def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), numbers(), strings())


@cache
def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (NaN and Infinity included: Python's parser accepts them)."""
    keys = st.one_of(st.text(max_size=8), st.sampled_from(["value", "op", "path", "type"]))
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def nested(depth: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """A value nested ``depth`` lists and objects deep."""

    def build(levels: int, kinds: list[bool]) -> Any:
        value: Any = "deep"
        for level in range(levels):
            value = [value] if kinds[level % len(kinds)] else {"a": value}
        return value

    return st.builds(build, depth, st.lists(st.booleans(), min_size=1, max_size=4))


@cache
def wild() -> st.SearchStrategy[Any]:
    """Any JSON value, sometimes nested 60–100 deep (the door's limit is 64)."""
    return weighted((40, json_values()), (1, nested(st.integers(60, 100))))


@cache
def _plausible(attribute: Attribute) -> st.SearchStrategy[Any]:
    """A value of the attribute's type (or close to it), one element if multi-valued."""
    if attribute.type == "boolean":
        one: st.SearchStrategy[Any] = st.one_of(
            st.booleans(), st.sampled_from(["True", "false", " TRUE ", "yes"])
        )
    elif attribute.type == "binary":
        one = weighted(
            (2, st.binary(max_size=30).map(base64.b64encode).map(bytes.decode)), (1, strings())
        )
    elif attribute.type == "dateTime":
        one = date_times()
    elif attribute.type == "complex":
        one = st.fixed_dictionaries({}, optional={sub.name: _value(sub) for sub in attribute.subs})
    elif attribute.type == "reference":
        one = st.one_of(
            st.sampled_from(["https://example.com/x", f"../Users/{USER}", "urn:x", "not a url"]),
            strings(),
        )
    else:
        one = st.one_of(strings(), st.sampled_from(["work", "home", USER, OTHER, GROUP]))
    return one


@cache
def _value(attribute: Attribute) -> st.SearchStrategy[Any]:
    """A plausible value, a list of them for a multi-valued attribute, or anything at all."""
    one = _plausible(attribute)
    typed = st.lists(one, max_size=3) if attribute.multi else one
    return weighted((15, typed), (1, wild()))


@cache
def _attributes_of(urn: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {}, optional={a.name: _value(a) for a in ATTRIBUTES[urn] if a.name != "userName"}
    )


@cache
def user_names() -> st.SearchStrategy[Any]:
    taken = ["seed.alice", "SEED.ALICE", "seed.bob", "new.user", "new.user ", "Seed.Alice\u200b"]
    return weighted(
        (6, st.text(min_size=1, max_size=20)),
        (2, st.sampled_from(taken)),
        (2, strings()),
        (1, wild()),
    )


@cache
def _schemas(resource_type: str) -> st.SearchStrategy[Any]:
    known = RESOURCE_URNS[resource_type]
    return weighted(
        (4, st.just(known)),
        (2, st.just(known[:1])),
        (2, st.lists(st.sampled_from(known + UNKNOWN_URNS), max_size=4)),
        (1, wild()),
    )


UNKNOWN_KEYS = [
    *("name.givenName", f"{USER_URN}:userName", f"{ENTERPRISE_URN}:department"),
    *('emails[type eq "work"].value', "password", "groups", "meta", "id", "Schemas"),
    *("USERNAME", "members", *UNKNOWN_URNS),
]


@cache
def _unknown_keys() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.one_of(st.sampled_from(UNKNOWN_KEYS), st.text(max_size=10))
    return st.dictionaries(keys, wild(), max_size=3)


@cache
@st.composite
def user_bodies(draw: st.DrawFn) -> Any:
    """A User resource body: plausible attributes, extensions, unknown keys; or anything."""
    if one_in(draw, 15):
        return draw(wild())
    body: dict[str, Any] = {"schemas": draw(_schemas("User"))}
    if not one_in(draw, 10):
        body["userName"] = draw(user_names())
    body.update(draw(_attributes_of(USER_URN)))
    for urn in (ENTERPRISE_URN, HR_URN):
        choice = draw(st.integers(0, 5))
        if choice in (1, 2):
            body[urn] = draw(_attributes_of(urn))
        elif choice == 3:
            body[urn] = draw(wild())
    if one_in(draw, 3):
        body.update(draw(_unknown_keys()))
    return body


@cache
def _members() -> st.SearchStrategy[Any]:
    values = [USER, OTHER, GROUP, NEW, "bulkId:b1", "bulkId:b2", "missing", USER.upper()]
    member = st.fixed_dictionaries(
        {"value": weighted((4, st.sampled_from(values)), (1, strings()))},
        optional={
            "type": st.sampled_from(["User", "Group", "user", "robot"]),
            "display": strings(),
            "$ref": strings(),
        },
    )
    many = st.builds(
        lambda value, n: [{"value": value}] * n,
        st.sampled_from([USER, NEW, "missing"]),
        st.sampled_from([100, 1000]),
    )
    return weighted(
        (16, st.lists(weighted((8, member), (1, wild())), max_size=4)), (1, many), (2, wild())
    )


@cache
@st.composite
def group_bodies(draw: st.DrawFn) -> Any:
    """A Group resource body: displayName, members (seeded, missing, itself), or anything."""
    if one_in(draw, 15):
        return draw(wild())
    body: dict[str, Any] = {"schemas": draw(_schemas("Group"))}
    if not one_in(draw, 10):
        body["displayName"] = draw(
            weighted((4, st.text(min_size=1, max_size=20)), (2, strings()), (1, wild()))
        )
    if draw(st.booleans()):
        body["members"] = draw(_members())
    if one_in(draw, 3):
        body["externalId"] = draw(weighted((4, strings()), (1, wild())))
    if one_in(draw, 3):
        body.update(draw(_unknown_keys()))
    return body


# -- PATCH (RFC 7644 §3.5.2) -----------------------------------------------------------------

OPS = ["add", "remove", "replace", "Add", "Replace", "REMOVE"]
ODD_OPS = ["delete", "", "move", "test", "add "]
FIXED_PATCH_PATHS = [
    *('emails[type eq "work"].value', 'emails[type eq "work"]', "emails[primary eq true]"),
    *(f'members[value eq "{USER}"]', f'members[value eq "{OTHER}"]', "members"),
    *("manager", "manager.value", "department", "roleCodes", "hireDate"),
    *(f"{ENTERPRISE_URN}:manager", f"{ENTERPRISE_URN}:manager.value"),
    *(f"{ENTERPRISE_URN}:manager.displayName", f"{HR_URN}:roleCodes", f"{HR_URN}:hireDate"),
    *(f"{USER_URN}:name.givenName", f'{USER_URN}:emails[type eq "home"].value'),
    *("emails[", "emails[]", "emails[type eq]", "a..b", ".", "urn:", "name[givenName pr]"),
]
PATH_VALUE_KEYS = [
    *('emails[type eq "work"].value', "name.givenName", "active", "manager", "displayName"),
    *(f"{ENTERPRISE_URN}:manager", f"{ENTERPRISE_URN}:department", ENTERPRISE_URN),
    *("members", "userName", "externalId", "Active", f"{HR_URN}:hireDate"),
]


@cache
def patch_paths(resource_type: str) -> st.SearchStrategy[Any]:
    """Attribute paths, filtered paths, unqualified extension names, and garbage."""
    filtered = st.builds(
        lambda attribute, condition, sub: f"{attribute}[{condition}]{sub}",
        st.sampled_from([a.name for a in multi_valued(resource_type)] + ["name", "userName"]),
        filters(resource_type, value_filter=True),
        st.sampled_from(["", ".value", ".type", ".display", ".primary", ".nope"]),
    )
    return weighted(
        (6, st.sampled_from(attribute_paths(resource_type))),
        (4, st.sampled_from(FIXED_PATCH_PATHS)),
        (3, filtered),
        (1, strings()),
        (1, wild()),
    )


@cache
def _patch_value(resource_type: str) -> st.SearchStrategy[Any]:
    return weighted(
        (4, strings()),
        (2, st.booleans()),
        (2, _members()),
        (2, user_bodies() if resource_type == "User" else group_bodies()),
        (2, st.dictionaries(st.sampled_from(PATH_VALUE_KEYS), wild(), max_size=3)),
        (2, st.fixed_dictionaries({}, optional={"value": strings(), "type": strings()})),
        (2, wild()),
    )


@cache
def _typed_paths(resource_type: str) -> list[tuple[str, st.SearchStrategy[Any]]]:
    """Each attribute path with a strategy of values of its type."""
    found: list[tuple[str, st.SearchStrategy[Any]]] = []
    for urn in RESOURCE_URNS[resource_type]:
        for attribute in ATTRIBUTES[urn]:
            prefix = "" if attribute.core else f"{urn}:"
            found.append((prefix + attribute.name, _value(attribute)))
            found += [(f"{prefix}{attribute.name}.{s.name}", _value(s)) for s in attribute.subs]
    ids = st.sampled_from([USER, OTHER, GROUP, NEW, "missing"])
    found += [
        ('emails[type eq "work"].value', strings()),
        ('emails[type eq "work"].primary', st.booleans()),
        ("manager", weighted((3, ids), (1, st.fixed_dictionaries({"value": ids})))),
        (f'members[value eq "{USER}"]', st.none()),
        ("members", _members()),
    ]
    return found


@cache
@st.composite
def _typed_operation(draw: st.DrawFn, resource_type: str) -> Any:
    path, value = draw(st.sampled_from(_typed_paths(resource_type)))
    operation = {"op": draw(st.sampled_from(["add", "replace", "remove", "Replace"])), "path": path}
    if operation["op"] != "remove" or one_in(draw, 4):
        operation["value"] = draw(value)
    return operation


@cache
@st.composite
def _operation(draw: st.DrawFn, resource_type: str) -> Any:
    if one_in(draw, 40):
        return draw(wild())
    if draw(st.booleans()):
        return draw(_typed_operation(resource_type))
    ops = weighted((20, st.sampled_from(OPS)), (2, st.sampled_from(ODD_OPS)), (1, wild()))
    operation = {"op": draw(ops)}
    if not one_in(draw, 4):
        operation["path"] = draw(patch_paths(resource_type))
    if not one_in(draw, 4):
        operation["value"] = draw(_patch_value(resource_type))
    if one_in(draw, 10):  # Entra's capitalised keys
        operation = {key.capitalize(): item for key, item in operation.items()}
    return operation


@cache
@st.composite
def patch_bodies(draw: st.DrawFn, resource_type: str) -> Any:
    """A PatchOp body: random ops, paths and values; or anything."""
    if one_in(draw, 15):
        return draw(wild())
    body: dict[str, Any] = {}
    if not one_in(draw, 6):
        body["schemas"] = draw(weighted((6, st.just([PATCH_URN])), (1, _schemas(resource_type))))
    key = draw(weighted((12, st.just("Operations")), (1, st.sampled_from(["operations", "Ops"]))))
    operations = st.lists(_operation(resource_type), min_size=1, max_size=3)
    body[key] = draw(weighted((20, operations), (1, st.just([])), (1, wild())))
    return body


# -- filters (RFC 7644 §3.4.2.2) ---------------------------------------------------------------

OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ", "Co", "gT"]
ODD_LITERALS = ['"\\x41"', '"\\q"', '"a\\"', '"\\ud83d"', '"\\udfff"', '"\\u0000"', '"', "''"]
ODD_NUMBERS = ["1e999", "-0", "0x10", "1.", ".5", "1e-999", "01", "+1", "9" * 400, "NaN"]


@cache
def _case(text: str) -> st.SearchStrategy[str]:
    return weighted((2, st.just(text)), (1, st.sampled_from([text.lower(), text.upper()])))


@cache
def _quoted() -> st.SearchStrategy[str]:
    """A filter string literal: JSON-escaped (``\\"``, ``\\\\``, ``\\u0000``, ``\\udfff``), or
    escapes JSON does not have."""
    escaped = st.builds(lambda s, a: json.dumps(s, ensure_ascii=a), strings(), st.booleans())
    return weighted((6, escaped), (1, st.sampled_from(ODD_LITERALS)))


@cache
def comparison_values() -> st.SearchStrategy[str]:
    """String literals, numbers (huge, odd), booleans, null, dateTimes."""
    return weighted(
        (6, _quoted()),
        (2, numbers().map(json.dumps)),
        (1, st.sampled_from(ODD_NUMBERS)),
        (2, st.sampled_from(["true", "false", "null", "True", "NULL"])),
        (2, date_times().map(lambda d: f'"{d}"')),
    )


def _sub_attribute_names(resource_type: str) -> list[str]:
    names = {sub.name for a in multi_valued(resource_type) for sub in a.subs}
    return sorted(names)


@cache
def filters(resource_type: str, value_filter: bool = False) -> st.SearchStrategy[str]:
    """Filters from the grammar: every attribute path and operator, and/or/not, parentheses,
    valuePaths. ``value_filter``: the inside of ``attr[…]`` (sub-attribute names)."""
    names = _sub_attribute_names(resource_type) if value_filter else attribute_paths(resource_type)
    names += ["nope", "urn:example:custom:attr", "emails.nope", "value"]
    attr = st.sampled_from(names).flatmap(_case)
    comparison = st.builds(
        lambda a, op, v: f"{a} {op} {v}", attr, st.sampled_from(OPERATORS), comparison_values()
    )
    present = st.builds(lambda a, p: f"{a} {p}", attr, st.sampled_from(["pr", "PR"]))
    leaf = weighted((3, comparison), (1, present))
    multi = [a.name for a in multi_valued(resource_type)]

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        branches = [
            st.builds(
                lambda left, op, right: f"{left} {op} {right}",
                inner,
                st.sampled_from(["and", "or", "AND", "Or"]),
                inner,
            ),
            st.builds(lambda f, space: f"not{space}({f})", inner, st.sampled_from([" ", ""])),
            st.builds(lambda f: f"({f})", inner),
        ]
        if not value_filter:
            value_path = st.builds(
                lambda a, f, sub: f"{a}[{f}]{sub}",
                st.sampled_from(multi).flatmap(_case),
                filters(resource_type, value_filter=True),
                st.sampled_from(["", "", ".value", ".type"]),
            )
            branches.append(value_path)
        return st.one_of(*branches)

    return st.recursive(leaf, extend, max_leaves=6)


@st.composite
def _mutated(draw: st.DrawFn, text: st.SearchStrategy[str]) -> str:
    """A filter cut short, or with a character inserted or dropped."""
    base = draw(text)
    at = draw(st.integers(0, len(base)))
    how = draw(st.integers(0, 2))
    if how == 0:
        return base[:at]
    if how == 1:
        inserted = draw(st.sampled_from(list('()[]" \\.:') + NASTY_CHARACTERS))
        return base[:at] + inserted + base[at:]
    return base[:at] + base[at + 1 :]


@cache
def any_filter(resource_type: str) -> st.SearchStrategy[str]:
    """Grammar filters, mutations of them, garbage, and the huge: 2,000 terms, deep parentheses."""
    grammar = filters(resource_type)
    chains = st.builds(
        lambda term, op, n: f" {op} ".join([term] * n),
        filters(resource_type).filter(lambda f: len(f) < 200),
        st.sampled_from(["and", "or"]),
        st.sampled_from([2, 63, 64, 65, 200, 1000, 2000]),
    )
    deep = st.builds(
        lambda opening, closing, n: opening * n + 'userName eq "x"' + closing * n,
        st.sampled_from(["(", "not (", "not("]),
        st.sampled_from([")", ")", ""]),
        st.sampled_from([10, 100, 500, 1000, 5000]),
    )
    return weighted((12, grammar), (3, _mutated(grammar)), (2, strings()), (1, chains), (1, deep))


# -- list queries (RFC 7644 §3.4.2) ----------------------------------------------------------

INDEXES = ["1", "0", "-1", "2", "3", "10", "2147483647"]
ODD_INDEXES = [
    *("-2147483649", "2147483648", "9223372036854775808", "1" + "0" * 40, "1.5", "1e3"),
    *(" 5", "+5", "0x10", "five", "", "NaN", "1_000"),
    "\u0663",  # ARABIC-INDIC DIGIT THREE: int() accepts it
]
SORT_ORDERS = ["ascending", "descending", "DESCENDING", "asc", "", "up"]


@cache
def _index() -> st.SearchStrategy[str]:
    return weighted(
        (6, st.sampled_from(INDEXES)), (2, st.sampled_from(ODD_INDEXES)), (1, strings())
    )


@cache
def _odd_sort_orders() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(SORT_ORDERS[3:]), strings())


@dataclass(frozen=True)
class CursorEdit:
    """Take a real ``nextCursor`` of the same query, then change it (see ``tamper``)."""

    how: str  # "keep", "truncate", "flip", "replace"
    index: int = 0
    value: Any = None


@cache
def cursor_edits() -> st.SearchStrategy[CursorEdit]:
    return st.one_of(
        st.just(CursorEdit("keep")),
        st.builds(CursorEdit, st.just("truncate"), st.integers(0, 40)),
        st.builds(CursorEdit, st.just("flip"), st.integers(0, 40)),
        st.builds(CursorEdit, st.just("replace"), st.integers(0, 3), wild()),
    )


def tamper(cursor: str, edit: CursorEdit) -> str:
    """``cursor`` changed as ``edit`` says. ``replace`` rewrites one element of the cursor's
    first ``.``-separated part when that is base64url of a JSON list (the bridge's payload,
    ahead of its MAC), and leaves any other cursor as it is."""
    if edit.how == "truncate":
        return cursor[: edit.index]
    if edit.how == "flip" and cursor:
        at = edit.index % len(cursor)
        return cursor[:at] + ("A" if cursor[at] != "A" else "B") + cursor[at + 1 :]
    if edit.how == "replace":
        payload, dot, rest = cursor.partition(".")
        try:
            decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return cursor
        if isinstance(decoded, list) and decoded:
            decoded[edit.index % len(decoded)] = edit.value
            raw = base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode().rstrip("=")
            return raw + dot + rest
    return cursor


@cache
def _attribute_list(resource_type: str) -> st.SearchStrategy[str]:
    """Attribute paths, comma-separated: the resource type's own, the other type's (and its
    URN), unknown URNs, or any string."""
    other = "Group" if resource_type == "User" else "User"
    one = weighted(
        (8, st.sampled_from(attribute_paths(resource_type))),
        (1, st.sampled_from(attribute_paths(other))),
        (1, st.sampled_from(RESOURCE_URNS[other] + UNKNOWN_URNS + ["urn:"])),
        (1, strings()),
    )
    return st.lists(one, max_size=4).map(",".join)


@cache
@st.composite
def list_params(draw: st.DrawFn, resource_type: str) -> dict[str, Any]:
    """Query parameters of ``GET /Users`` or ``/Groups`` (strings; a CursorEdit for a cursor)."""
    optional: dict[str, st.SearchStrategy[Any]] = {
        "filter": any_filter(resource_type),
        "startIndex": _index(),
        "count": _index(),
        "sortBy": weighted((4, st.sampled_from(attribute_paths(resource_type))), (1, strings())),
        "sortOrder": weighted((6, st.sampled_from(SORT_ORDERS[:3])), (1, _odd_sort_orders())),
        "attributes": _attribute_list(resource_type),
        "excludedAttributes": _attribute_list(resource_type),
        "cursor": weighted((3, cursor_edits()), (1, strings())),
    }
    params: dict[str, Any] = {}
    for key, strategy in optional.items():
        if key == "filter" and not one_in(draw, 3) or one_in(draw, 3):
            name = key.lower() if one_in(draw, 4) else key
            params[name] = draw(strategy)
    return params


@cache
@st.composite
def search_bodies(draw: st.DrawFn, resource_type: str) -> Any:
    """A SearchRequest body (RFC 7644 §3.4.3): the list parameters as JSON of any type."""
    if one_in(draw, 15):
        return draw(wild())
    body: dict[str, Any] = {}
    if not one_in(draw, 4):
        body["schemas"] = [SEARCH_URN]
    for key, value in draw(list_params(resource_type)).items():
        if key.lower() in ("attributes", "excludedattributes") and draw(st.booleans()):
            value = value.split(",")
        elif key.lower() in ("startindex", "count") and draw(st.booleans()):
            value = draw(numbers())
        elif one_in(draw, 6) and not isinstance(value, CursorEdit):
            value = draw(wild())
        body[key] = value
    return body


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP request to ``/scim/v2``; ``path`` and every string may hold placeholders."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = NO_BODY
    raw: bytes | None = None
    ascii: bool = True
    """Send lone surrogates as JSON escapes (``\\udfff``); else as (invalid) UTF-8 bytes."""
    headers: dict[str, str | bytes] = field(default_factory=dict)


MAX_QUERY = 30_000
"""Longer queries go in a SearchRequest (httpx refuses URLs over 64 KiB; servers, over 8)."""


def query_length(params: dict[str, Any]) -> int:
    """The length of ``params`` percent-encoded (a cursor counts as 200 characters)."""
    texts = {k: "c" * 200 if isinstance(v, CursorEdit) else v for k, v in params.items()}
    return len(urlencode(texts, errors="surrogatepass"))


ODD_IDS = [
    *(USER, OTHER, GROUP, USER.upper(), f"{USER} ", "missing", ".search", "..", ".", "%00"),
    *("\x00", "\udfff", "a/b", "?x=1", "#", "bulkId:b1", "Me", "x" * 65, "x" * 10_000),
]
ODD_BODIES = [
    *(b"", b"{", b"null", b"[]", b'{"schemas": [}', b"\xff\xfe{}", b'{"userName": NaN}'),
    b'{"a": "\xed\xbf\xbf"}',  # a surrogate encoded as UTF-8 (CESU-8): not UTF-8
    b'{"a":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{"userName": "a", "userName": "b", "schemas": ["' + USER_URN.encode() + b'"]}',
    b'{"userName": "' + b"x" * 1_100_000 + b'"}',  # over max_payload_bytes (1 MiB)
]
CONTENT_TYPES = ["application/scim+json", "application/json", "text/plain", "multipart/form-data"]
ETAGS = [ETAG, "*", 'W/"1"', '"1"', 'W/"999"', "", ",", f"{ETAG}, *", 'W/"', 'W/"1", W/"2"']
AUTHORIZATIONS = [
    *("", "Bearer", "Bearer ", "bearer test-token", "BEARER test-token", "Bearer wrong"),
    *("Bearer test-token ", "Basic dGVzdDp0ZXN0", "Bearer test-token, Bearer x", "Token x"),
    "Bearer eyJhbGciOiJub25lIn0.eyJzY29wZSI6InNjaW06d3JpdGUifQ.",  # an unsigned JWT
    b"Bearer \xff\xfe",
]
REQUEST_IDS = ["r" * 64 + "-tail" * 40, "x" * 10_000, " ", "a b", "é".encode("latin-1")]


@cache
def url_ids() -> st.SearchStrategy[str]:
    """Ids for a URL path segment (percent-encoded by the runner, so ``/`` splits it)."""
    return weighted(
        (4, st.sampled_from(ODD_IDS)),
        (2, st.text(max_size=16)),
        (2, strings()),
        (1, st.integers(0, 10**30).map(str)),
    )


@cache
def headers() -> st.SearchStrategy[dict[str, str | bytes]]:
    """If-Match, If-None-Match, X-Request-Id (long, binary-ish) and Content-Type variations."""
    ascii_text = st.text(max_size=20).map(lambda t: t.encode("ascii", "replace").decode())
    etags = weighted((3, st.sampled_from(ETAGS)), (1, ascii_text))
    request_ids = weighted(
        (3, st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200)),
        (2, st.binary(max_size=100).map(lambda b: bytes(c for c in b if c >= 0x20 or c == 9))),
        (1, st.sampled_from(REQUEST_IDS)),
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "If-Match": etags,
            "If-None-Match": etags,
            "X-Request-Id": request_ids,
            "Content-Type": st.sampled_from(CONTENT_TYPES),
            "Authorization": weighted((1, st.sampled_from(AUTHORIZATIONS)), (3, st.just(None))),
        },
    ).map(lambda found: {key: value for key, value in found.items() if value is not None})


@cache
def selections(resource_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """``attributes`` and ``excludedAttributes`` of a response (RFC 7644 §3.9)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "attributes": _attribute_list(resource_type),
            "excludedAttributes": _attribute_list(resource_type),
        },
    ).filter(lambda params: query_length(params) < MAX_QUERY)


def _encoded(draw: st.DrawFn, body: Any) -> dict[str, Any]:
    """The body fields of a Request: JSON with escapes, or as UTF-8, or broken bytes."""
    if one_in(draw, 20):
        return {
            "raw": draw(weighted((3, st.sampled_from(ODD_BODIES)), (1, st.binary(max_size=40))))
        }
    return {"body": body, "ascii": not one_in(draw, 10)}


def _headers(draw: st.DrawFn) -> dict[str, str | bytes]:
    return draw(headers()) if one_in(draw, 4) else {}


@st.composite
def resource_writes(draw: st.DrawFn, resource_type: str) -> Request:
    """``POST /Users`` or ``/Groups``, or ``PUT`` of a seeded resource, with a random body."""
    endpoint = "/Users" if resource_type == "User" else "/Groups"
    bodies = user_bodies() if resource_type == "User" else group_bodies()
    own = (
        [f"/{USER}", f"/{OTHER}", f"/{NEW}"]
        if resource_type == "User"
        else [f"/{GROUP}", f"/{NEW}"]
    )
    target = draw(weighted((4, st.just("")), (4, st.sampled_from(own)), (1, st.just(f"/{GROUP}"))))
    return Request(
        "PUT" if target else "POST",
        endpoint + target,
        params=draw(selections(resource_type)) if one_in(draw, 4) else {},
        headers=_headers(draw),
        **_encoded(draw, draw(bodies)),
    )


@st.composite
def patches(draw: st.DrawFn) -> Request:
    """PATCH of a seeded user or group."""
    resource_type = draw(st.sampled_from(["User", "Group"]))
    targets = (
        [f"/Users/{USER}", f"/Users/{OTHER}", f"/Users/{NEW}"]
        if resource_type == "User"
        else [f"/Groups/{GROUP}", f"/Groups/{NEW}"]
    )
    return Request(
        "PATCH",
        draw(st.sampled_from(targets)),
        params=draw(selections(resource_type)) if one_in(draw, 4) else {},
        headers=_headers(draw),
        **_encoded(draw, draw(patch_bodies(resource_type))),
    )


@st.composite
def list_requests(draw: st.DrawFn) -> Request:
    """``GET /Users`` or ``/Groups`` with query parameters, or ``POST …/.search``."""
    resource_type = draw(st.sampled_from(["User", "Group"]))
    endpoint = "/Users" if resource_type == "User" else "/Groups"
    if draw(st.booleans()):
        params = draw(list_params(resource_type))
        if query_length(params) < MAX_QUERY:
            return Request("GET", endpoint, params=params)
    return Request(
        "POST",
        draw(st.sampled_from([f"{endpoint}/.search", "/.search"])),
        headers=_headers(draw),
        **_encoded(draw, draw(search_bodies(resource_type))),
    )


# -- Bulk (RFC 7644 §3.7) --------------------------------------------------------------------

BULK_IDS = ["b1", "b2", "b3"]
BULK_TARGETS = [USER, OTHER, GROUP, NEW, "missing", "bulkId:", *(f"bulkId:{b}" for b in BULK_IDS)]
ODD_BULK_IDS = ["", "bulkId:b1", "b.1~x", "a b", "b1\x00", "B1"]


@cache
@st.composite
def _bulk_operation(draw: st.DrawFn) -> Any:
    if one_in(draw, 15):
        return draw(wild())
    methods = st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "post", "GET"])
    method = draw(weighted((8, methods), (1, wild())))
    resource_type = draw(st.sampled_from(["User", "Group"]))
    endpoint = "/Users" if resource_type == "User" else "/Groups"
    operation: dict[str, Any] = {"method": method}
    operation["path"] = draw(
        weighted(
            (4, st.just(endpoint)),
            (4, st.sampled_from(BULK_TARGETS).map(lambda target: f"{endpoint}/{target}")),
            (1, st.sampled_from(["/Bulk", "/Users/a/b", "Users", "", "/Me"])),
            (1, wild()),
        )
    )
    if not one_in(draw, 4):
        operation["bulkId"] = draw(
            weighted(
                (6, st.sampled_from(BULK_IDS)), (1, st.sampled_from(ODD_BULK_IDS)), (1, wild())
            )
        )
    if not one_in(draw, 5):
        if method == "PATCH":
            operation["data"] = draw(patch_bodies(resource_type))
        else:
            operation["data"] = draw(user_bodies() if resource_type == "User" else group_bodies())
    if one_in(draw, 4):
        operation["version"] = draw(weighted((3, st.sampled_from(ETAGS)), (1, wild())))
    return operation


@cache
@st.composite
def bulk_bodies(draw: st.DrawFn) -> Any:
    """A BulkRequest: random operations, bulkIds of any JSON type, bulkId references; or
    anything."""
    if one_in(draw, 20):
        return draw(wild())
    body: dict[str, Any] = {"schemas": draw(weighted((8, st.just([BULK_URN])), (1, wild())))}
    if one_in(draw, 3):
        body["failOnErrors"] = draw(
            weighted(
                (4, st.integers(-2, 3)), (1, st.sampled_from(["1", 1.5, True, None])), (1, wild())
            )
        )
    body["Operations"] = draw(weighted((10, st.lists(_bulk_operation(), max_size=6)), (1, wild())))
    return body


@st.composite
def bulk_requests(draw: st.DrawFn) -> Request:
    return Request("POST", "/Bulk", headers=_headers(draw), **_encoded(draw, draw(bulk_bodies())))


# -- anything, anywhere ------------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
ODD_METHODS = ["HEAD", "OPTIONS", "TRACE", "PROPFIND", "CONNECT", "QUERY", "get"]
ROUTES = [
    *("/Users/{}", "/Groups/{}", "/users/{}", "/GROUPS/{}", "/Users", "/Groups", "/Me"),
    *("/Me/{}", "/Bulk", "/.search", "/ServiceProviderConfig", "/ResourceTypes/{}"),
    *("/Schemas/{}", "/Schemas", "/{}", "/Users/{}/{}", "/openapi.json", "/Users/{}/.search"),
]


@st.composite
def any_requests(draw: st.DrawFn) -> Request:
    """Any method on any route of ``/scim/v2`` with random ids, headers and body."""
    body = weighted(
        (3, st.just(NO_BODY)), (1, user_bodies()), (1, group_bodies()), (1, patch_bodies("User"))
    )
    return Request(
        draw(weighted((4, st.sampled_from(METHODS)), (1, st.sampled_from(ODD_METHODS)))),
        draw(st.sampled_from(ROUTES)).replace("{}", draw(url_ids())),
        params=draw(selections("User")) if one_in(draw, 4) else {},
        headers=draw(headers()),
        **_encoded(draw, draw(body)),
    )


@st.composite
def plain_requests(draw: st.DrawFn) -> Request:
    """GET or DELETE of a seeded (or random) resource, with a response selection."""
    resource_type = draw(st.sampled_from(["User", "Group"]))
    endpoint = "/Users" if resource_type == "User" else "/Groups"
    target = draw(weighted((6, st.sampled_from([USER, OTHER, GROUP, NEW])), (1, url_ids())))
    return Request(
        draw(st.sampled_from(["GET", "GET", "DELETE"])),
        f"{endpoint}/{target}",
        params=draw(selections(resource_type)) if one_in(draw, 3) else {},
        headers=_headers(draw),
    )
