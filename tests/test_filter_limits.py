"""Filters the store must not run (RFC 7644 §3.4.2.2, §3.12), on SQLite and PostgreSQL.

Too big — over ``maxFilterLength`` characters, ``maxFilterTerms`` comparisons or 16 levels of
nesting — is 400 ``tooMany``, counted before the parser runs (1,000 chained terms were a 500
on SQLite, "expression tree too deep", and 22 GB on PostgreSQL). A comparison the schema makes
impossible (``name eq 140`` was a 500 on PostgreSQL) is 400 ``invalidFilter``. And Entra's
unqualified extension attribute names (``manager eq "…"``) are read in the one extension
that defines them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scim2_models import TooManyException

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.scim.params import MAX_FILTER_NESTING
from bridge.scim.params import ListQuery
from bridge.scim.params import parse_filter
from bridge.store.engine import Database
from tests.conftest import ENTERPRISE
from tests.conftest import HR
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import user_payload
from tests.test_filters import disagreements

COSTS = "urn:ietf:params:scim:schemas:extension:costs:2.0:User"


async def refused(
    client: httpx.AsyncClient, filter_text: str, scim_type: str, *, search: bool = False
) -> str:
    """The detail of the 400 a filter gets, by GET or by a SearchRequest."""
    if search:
        response = await client.post(
            "/Users/.search",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": filter_text,
            },
        )
    else:
        response = await client.get("/Users", params={"filter": filter_text})
    body = assert_scim(response, 400)
    assert body["scimType"] == scim_type, body
    return str(body["detail"])


async def found(client: httpx.AsyncClient, filter_text: str, **params: Any) -> list[str]:
    response = await client.get("/Users", params={"filter": filter_text, **params})
    body = assert_scim(response, 200)
    return [resource["userName"] for resource in body.get("Resources", [])]


async def create(client: httpx.AsyncClient, user_name: str, **extra: Any) -> None:
    assert_scim(await client.post("/Users", json=user_payload(user_name, **extra)), 201)


def ored(count: int, term: str = 'title co "t{}"') -> str:
    return " or ".join(term.format(index) for index in range(count))


# -- A. size: length, terms, nesting --------------------------------------------------------


async def test_filter_of_65_terms_is_too_many(client: httpx.AsyncClient) -> None:
    detail = await refused(client, ored(65), "tooMany")
    assert "65 comparison terms" in detail and "at most 64" in detail


async def test_filter_of_64_terms_is_answered(client: httpx.AsyncClient) -> None:
    await create(client, "bjensen", title="t63 lead")
    await create(client, "jsmith", title="guide")
    assert await found(client, ored(64)) == ["bjensen"]


async def test_filter_over_the_length_limit_is_too_many(client: httpx.AsyncClient) -> None:
    over = 'title co "' + "x" * (8193 - len('title co ""')) + '"'
    assert len(over) == 8193
    detail = await refused(client, over, "tooMany")
    assert "8193 characters" in detail and "at most 8192" in detail
    simple = 'title eq "' + "x" * 8200 + '"'  # the IdP lookup's fast path is measured too
    assert "at most 8192" in await refused(client, simple, "tooMany")


@pytest.mark.parametrize(
    ("filter_text", "search"),
    [
        (ored(1000), False),
        (ored(1000), True),
        (" and ".join(f'userName sw "u{index}"' for index in range(1000)), False),
        # Too long for a URL (httpx refuses 64 KiB queries): the audit sent it in a body.
        (ored(1000, 'title co "' + "long needle " * 4 + '{}"'), True),
    ],
    ids=["1000-or", "1000-or-search-request", "1000-and", "1000-title-co-search-request"],
)
async def test_thousand_term_filters_are_refused_before_they_are_run(
    client: httpx.AsyncClient, filter_text: str, search: bool
) -> None:
    detail = await refused(client, filter_text, "tooMany", search=search)
    assert "maxFilterLength" in detail


async def test_ten_thousand_terms_are_a_clean_400(client: httpx.AsyncClient) -> None:
    detail = await refused(client, ored(10_000), "tooMany", search=True)
    assert "maxFilterLength" in detail
    nested = "(" * 10_000 + "title pr" + ")" * 10_000
    assert "maxFilterLength" in await refused(client, nested, "tooMany")


def test_terms_are_counted_without_the_parser_however_long_the_filter_may_be() -> None:
    """With the length limit lifted, 10,000 terms or 10,000 parentheses never reach the
    parser (nor the recursion limit): the count is made on the text."""
    with pytest.raises(TooManyException, match="10000 comparison terms"):
        parse_filter(ored(10_000), max_length=10**6)
    nested = "(" * 10_000 + "title pr" + ")" * 10_000
    with pytest.raises(TooManyException, match="10000 deep"):
        parse_filter(nested, max_length=10**6)
    not_nested = "not (" * 10_000 + "title pr" + ")" * 10_000
    with pytest.raises(TooManyException, match="10000 deep"):
        parse_filter(not_nested, max_length=10**6)


def nest(inner: str, depth: int, opening: str = "(") -> str:
    return opening * depth + inner + ")" * (depth * opening.count("("))


@pytest.mark.parametrize("opening", ["(", "not (not ("], ids=["parentheses", "not"])
async def test_nesting_deeper_than_the_limit_is_too_many(
    client: httpx.AsyncClient, opening: str
) -> None:
    await create(client, "bjensen", title="lead")
    per_level = opening.count("(")
    levels = MAX_FILTER_NESTING // per_level
    assert await found(client, nest("title pr", levels, opening)) == ["bjensen"]
    detail = await refused(client, nest("title pr", levels + 1, opening), "tooMany")
    assert f"{levels * per_level + per_level} deep" in detail
    assert f"at most {MAX_FILTER_NESTING}" in detail


async def test_value_path_brackets_count_as_nesting(client: httpx.AsyncClient) -> None:
    await create(client, "bjensen", emails=[{"value": "b@example.com", "type": "work"}])
    inside = MAX_FILTER_NESTING - 1
    assert await found(client, f"emails[{nest('type pr', inside)}]") == ["bjensen"]
    detail = await refused(client, f"emails[{nest('type pr', inside + 1)}]", "tooMany")
    assert f"{MAX_FILTER_NESTING + 1} deep" in detail


async def test_operators_and_brackets_inside_strings_are_not_counted(
    client: httpx.AsyncClient,
) -> None:
    value = " or title eq (((( [[[[ pr ne co" * 20 + ' \\" and ((('
    await create(client, "bjensen", title=json.loads(f'"{value}"'))
    assert await found(client, f'title pr and title eq "{value}"') == ["bjensen"]


def test_the_limits_are_parameters_of_the_list_query() -> None:
    limits = {"default_count": 10, "max_count": 10, "max_filter_terms": 2}
    assert ListQuery.parse({"filter": ored(2)}, **limits).filter is not None
    with pytest.raises(TooManyException, match="at most 2 are accepted"):
        ListQuery.parse({"filter": ored(3)}, **limits)
    with pytest.raises(TooManyException, match="at most 300 are accepted"):
        ListQuery.parse(
            {"FILTER": 'title co "' + "x" * 300 + '"'},
            default_count=10,
            max_count=10,
            max_filter_length=300,
        )


@pytest.fixture
async def strict_client(
    provisioner: Provisioner, database_url: str, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """The app under ``BRIDGE_MAX_FILTER_TERMS=4`` and ``BRIDGE_MAX_FILTER_LENGTH=256``."""
    settings = Settings(
        database_url=database_url,
        scim_token=TOKEN,
        schemas_dir=ROOT / "schemas",
        max_filter_terms=4,
        max_filter_length=256,
    )
    app = create_app(provisioner, provisioner.catalog, settings, Authenticator(db, env_token=TOKEN))
    async with app_client(app) as http:
        yield http


async def test_settings_limits_reach_the_filter_through_the_app(
    strict_client: httpx.AsyncClient,
) -> None:
    assert await found(strict_client, ored(4)) == []
    assert "at most 4" in await refused(strict_client, ored(5), "tooMany")
    long = 'title co "' + "x" * 250 + '"'
    assert "at most 256" in await refused(strict_client, long, "tooMany", search=True)


# Terms that share a reading (one attribute of the document read and folded once per row) or
# a lookup (the sets of ``attr[…]`` and multi-valued terms intersected or united): the result
# must be the one of each term on its own, as ScimFilter.match computes it.
GROUPED_FILTERS = [
    'title co "gui" or title co "LEAD" or title ew "ÅLUND"',
    'title sw "tour" and title ew "GUIDE" and not (title eq "tour guide x")',
    'not (title co "a") and not (title co "e")',
    'title ne "Tour guide" or title gt "m"',
    'title sw "z" or not (title sw "t") and title pr',
    'title eq "zoë ålund" or displayName ew "SEN"',
    'emails[value co "x"] or emails[value co "y"] or emails[type eq "home"]',
    'emails[value co "example"] and emails[type eq "work"] and emails[type eq "home"]',
    'emails[type eq "work" or value ew ".org"]',
    'emails[value co "a" and value co "b"]',
    'emails[value co "a" and type eq "work" or primary eq true]',
    'emails[not (type eq "work") and value sw "b"]',
    'emails.value co "x" and emails.type eq "work"',
    'emails.value ew ".org" or emails.value ew ".net"',
    f'{HR}:roleCodes eq "MGR" or {HR}:roleCodes eq "FT"',
    f'{HR}:roleCodes eq "MGR" and {HR}:roleCodes eq "FT"',
    f'{HR}:roleCodes eq "MGR" and not ({HR}:roleCodes eq "FT")',
    f'title co "a" and emails[type eq "work"] and {HR}:roleCodes pr or title ew "x"',
]


async def test_terms_read_once_answer_as_each_term_alone(
    client: httpx.AsyncClient, catalog: Catalog
) -> None:
    users: list[tuple[str, dict[str, Any]]] = [
        ("bjensen", {"title": "Tour guide", "displayName": "Babs Jensen"}),
        ("zoe", {"title": "Zoë Ålund", "emails": [{"value": "zoe@b.example.net"}]}),
        ("lead", {"title": "LEAD", "emails": [{"value": "ab@x.org", "type": "home"}]}),
        ("empty", {"title": ""}),
        ("none", {"emails": [{"value": "y@a.org", "type": "work", "primary": True}]}),
        (
            "both",
            {
                "title": "tour guide x",
                "emails": [
                    {"value": "b@example.com", "type": "work"},
                    {"value": "a@example.com", "type": "home"},
                ],
                "schemas": [USER_SCHEMA, HR],
                HR: {"roleCodes": ["MGR", "FT"]},
            },
        ),
        ("mgr", {"schemas": [USER_SCHEMA, HR], HR: {"roleCodes": ["MGR"]}}),
    ]
    for user_name, extra in users:
        await create(client, user_name, **extra)
    wrong = await disagreements(client, "/Users", catalog.user, GROUPED_FILTERS, {})
    assert not wrong, "\n".join(wrong)


# -- B. comparisons the schema makes impossible ---------------------------------------------


@pytest.fixture
async def people(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Two users with every attribute the type tests compare set, so that SQL reads them."""
    await create(
        client,
        "bjensen",
        name={"givenName": "Barbara", "familyName": "Jensen"},
        title="Tour guide",
        active=True,
        addresses=[{"locality": "Paris", "type": "work"}],
        emails=[{"value": "b@example.com", "type": "work", "primary": True}],
        schemas=[USER_SCHEMA, ENTERPRISE, HR],
        **{
            ENTERPRISE: {
                "employeeNumber": "701",
                "department": "Tours",
                "manager": {"value": "boss-1"},
            },
            HR: {"hireDate": "2021-01-15T00:00:00Z", "roleCodes": ["MGR"]},
        },
    )
    await create(
        client,
        "jsmith",
        name={"givenName": "John"},
        active=False,
        schemas=[USER_SCHEMA, ENTERPRISE],
        **{ENTERPRISE: {"employeeNumber": "702", "manager": {"value": "boss-2"}}},
    )
    return client


@pytest.mark.parametrize(
    "filter_text",
    [
        "name eq 140",
        'name eq "Barbara"',
        'name gt "a"',
        'name co "a"',
        "meta eq 5",
        'addresses eq "Paris"',
    ],
)
async def test_complex_attribute_compared_with_a_value_is_invalid_filter(
    people: httpx.AsyncClient, filter_text: str
) -> None:
    detail = await refused(people, filter_text, "invalidFilter")
    assert "is a complex attribute" in detail


async def test_complex_attribute_with_a_value_is_invalid_filter_on_the_root_endpoint(
    people: httpx.AsyncClient,
) -> None:
    response = await people.post(
        "/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": "name eq 140",
        },
    )
    assert assert_scim(response, 400)["scimType"] == "invalidFilter"


@pytest.mark.parametrize(
    ("filter_text", "named"),
    [
        ('active eq "yes"', "active"),
        ("title eq 5", "title"),
        ("title co 5", "title"),
        ("userName gt true", "userName"),
        ("meta.created gt 140", "meta.created"),
        (f"{HR}:hireDate eq 20210115", "hireDate"),
        ('emails[primary eq "yes"]', "primary"),
        ("emails eq 5", "emails.value"),
        (f"{HR}:roleCodes[value eq 1]", "roleCodes"),
    ],
)
async def test_operand_of_another_type_than_the_attribute_is_invalid_filter(
    people: httpx.AsyncClient, filter_text: str, named: str
) -> None:
    assert named in await refused(people, filter_text, "invalidFilter")


async def test_member_value_compared_with_a_number_is_invalid_filter(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/Groups", params={"filter": "members[value eq 5]"})
    assert assert_scim(response, 400)["scimType"] == "invalidFilter"


async def test_boolean_written_as_a_string_is_tolerated(people: httpx.AsyncClient) -> None:
    assert await found(people, 'active eq "True"') == ["bjensen"]
    assert await found(people, 'emails[primary eq "true"]') == ["bjensen"]


async def test_complex_attributes_are_still_tested_for_presence(
    people: httpx.AsyncClient,
) -> None:
    assert await found(people, "addresses pr") == ["bjensen"]
    assert await found(people, "name pr", sortBy="userName") == ["bjensen", "jsmith"]
    assert await found(people, "addresses eq null") == ["jsmith"]


# -- C. Entra's unqualified extension attribute names ---------------------------------------


async def test_entra_unqualified_manager_compares_its_value(
    people: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bridge.store.filters")
    assert await found(people, 'manager eq "boss-1"') == ["bjensen"]
    tolerances = {getattr(r, "tolerance", None) for r in caplog.records}
    assert {"unqualified_extension_attribute", "complex_attribute_value"} <= tolerances
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        ('employeeNumber eq "702"', ["jsmith"]),
        ('department eq "tours"', ["bjensen"]),
        ('manager.value eq "boss-2"', ["jsmith"]),
        (f'{ENTERPRISE}:manager eq "boss-2"', ["jsmith"]),
        ('manager ne "boss-1"', ["jsmith"]),
        ('roleCodes[value eq "MGR"]', ["bjensen"]),
        ("hireDate pr", ["bjensen"]),
        ('employeeNumber sw "70" and not (department pr)', ["jsmith"]),
    ],
)
async def test_entra_unqualified_extension_attributes(
    people: httpx.AsyncClient, filter_text: str, expected: list[str]
) -> None:
    assert await found(people, filter_text) == expected


async def test_unqualified_extension_attribute_sorts(people: httpx.AsyncClient) -> None:
    names = await found(people, "userName pr", sortBy="employeeNumber", sortOrder="descending")
    assert names == ["jsmith", "bjensen"]


async def test_unqualified_extension_attribute_on_the_root_endpoint_finds_users(
    people: httpx.AsyncClient,
) -> None:
    response = await people.post(
        "/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'manager eq "boss-1"',
        },
    )
    body = assert_scim(response, 200)
    assert [r["userName"] for r in body["Resources"]] == ["bjensen"]


@pytest.fixture
async def costs_client(
    tmp_path: Path, db: Database, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the shipped schemas plus an extension that also defines ``department``
    (as the enterprise extension does) and ``title`` (as the core schema does)."""
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    attribute = {
        "type": "string",
        "multiValued": False,
        "required": False,
        "caseExact": False,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    }
    extension = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": COSTS,
        "name": "Costs",
        "description": "Cost attributes",
        "attributes": [
            {**attribute, "name": "department", "description": "Cost department"},
            {**attribute, "name": "title", "description": "Cost title"},
        ],
    }
    (schemas / "costs.json").write_text(json.dumps(extension))
    types = json.loads((schemas / "resource-types.json").read_text())
    types[0]["schemaExtensions"].append({"schema": COSTS, "required": False})
    (schemas / "resource-types.json").write_text(json.dumps(types))
    catalog = load_catalog(schemas)
    settings = Settings(database_url=database_url, scim_token=TOKEN, schemas_dir=schemas)
    app = create_app(
        Provisioner(db, catalog), catalog, settings, Authenticator(db, env_token=TOKEN)
    )
    async with app_client(app) as http:
        yield http


async def test_ambiguous_unqualified_name_is_invalid_filter_naming_the_candidates(
    costs_client: httpx.AsyncClient,
) -> None:
    detail = await refused(costs_client, 'department eq "Tours"', "invalidFilter")
    assert f"{ENTERPRISE}:department" in detail and f"{COSTS}:department" in detail


async def test_core_attribute_wins_over_an_extension_of_the_same_name(
    costs_client: httpx.AsyncClient,
) -> None:
    await create(
        costs_client,
        "bjensen",
        title="core title",
        schemas=[USER_SCHEMA, COSTS],
        **{COSTS: {"title": "cost title"}},
    )
    assert await found(costs_client, 'title eq "core title"') == ["bjensen"]
    assert await found(costs_client, 'title eq "cost title"') == []
    assert await found(costs_client, f'{COSTS}:title eq "cost title"') == ["bjensen"]
