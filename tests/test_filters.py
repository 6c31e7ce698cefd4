"""Filters (RFC 7644 §3.4.2.2) through ``GET /Users?filter=``, on SQLite and PostgreSQL.

The first tests pin one behaviour each on five hand-written users and four groups; the
differential tests then compare the SQL translation (bridge/store/filters.py) with the
in-memory reference evaluator of scim2-models, ``ScimFilter[Model](text).match(resource)``,
over those plus forty generated users.

Every test here only reads, so the population is written once per database (module scope),
straight through the Provisioner, and each test queries it through the real ASGI app.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from scim2_models import ScimFilter
from sqlalchemy import select
from starlette.types import ASGIApp

from bridge.config import Settings
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.schemas import TOLERANT_POLICY
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store.dialect import R
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.store.resources import ResourceStore
from tests.conftest import ENTERPRISE
from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA
from tests.conftest import app_client
from tests.conftest import clean_database
from tests.conftest import user_payload

CAUSE = Cause("test")
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """The provisioner's clock: every read returns ``now`` until the test moves it."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)


def fresh_database_url(
    kind: str,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
    postgres_url: str | None,
) -> str:
    """An empty, migrated database of a kind, for a module's fixtures."""
    return clean_database(
        kind, tmp_path_factory.mktemp("population"), sqlite_template, postgres_url
    )


def serve(db: Database, url: str, provisioner: Provisioner, catalog: Catalog) -> ASGIApp:
    settings = Settings(database_url=url, scim_token=TOKEN, schemas_dir=ROOT / "schemas")
    return create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))


def http_client(app: ASGIApp) -> httpx.AsyncClient:
    return app_client(app)


def create_user(provisioner: Provisioner, user_name: str, **extra: Any) -> str:
    return provisioner.create(CAUSE, "User", user_payload(user_name, **extra)).record.id


def create_group(provisioner: Provisioner, name: str, members: list[str]) -> str:
    payload = {
        "schemas": [GROUP_SCHEMA],
        "displayName": name,
        "members": [{"value": member} for member in members],
    }
    return provisioner.create(CAUSE, "Group", payload).record.id


# -- the population --------------------------------------------------------------------------

PEOPLE = {"BJensen", "jsmith", "alice", "Zoë.Ålund", "mallory"}
PEOPLE_GROUPS = {"Tours", "Engineers", "Empty", "Nested"}


def create_people(provisioner: Provisioner, clock: Clock) -> dict[str, str]:
    """Five users, each with a few distinguishing attributes, written at T0, T0+1min, …"""

    def create_user_at(minutes: int, user_name: str, **extra: Any) -> str:
        clock.at(minutes)
        return create_user(provisioner, user_name, **extra)

    return {
        "bjensen": create_user_at(
            0,
            "BJensen",
            externalId="E-bjensen",
            name={"familyName": "Jensen", "givenName": "Barbara"},
            displayName="Babs Jensen",
            title="Tour Guide",
            active=True,
            emails=[
                {"value": "a@x.example", "type": "work", "primary": True},
                {"value": "b@y.example", "type": "home"},
            ],
            **{
                ENTERPRISE: {"department": "Tours", "employeeNumber": "0042"},
                HR: {
                    "roleCodes": ["BEN_CHOICE_2026", "MGR"],
                    "employmentStatus": "Active",
                    "hireDate": "2019-06-01T09:00:00Z",
                    "benefitsEligible": True,
                },
            },
        ),
        "jsmith": create_user_at(
            1,
            "jsmith",
            externalId="E-JSMITH",
            name={"familyName": "Smith", "givenName": "John"},
            title="Engineer",
            active=False,
            emails=[{"value": "john@y.example", "type": "work"}],
            **{
                ENTERPRISE: {"department": "Engineering"},
                HR: {
                    "roleCodes": ["ben_choice_2026"],
                    "employmentStatus": "leave",
                    "hireDate": "2021-01-15T00:00:00+02:00",
                    "benefitsEligible": False,
                },
            },
        ),
        "alice": create_user_at(
            2,
            "alice",
            name={"familyName": "Liddell"},
            emails=[{"value": "alice@wonder.example", "type": "home"}],
            **{HR: {"employmentStatus": "pre-hire", "hireDate": "2024-09-01T08:00:00Z"}},
        ),
        # The displayName is decomposed (o + U+0308): folding normalizes it to NFC.
        "zoe": create_user_at(3, "Zoë.Ålund", displayName="ZOE\u0308 ÅLUND", title="", active=True),
        "mallory": create_user_at(4, "mallory", title="Engineer", active=True),
    }


def create_people_groups(
    provisioner: Provisioner, clock: Clock, people: dict[str, str]
) -> dict[str, str]:
    clock.at(5)
    tours = create_group(provisioner, "Tours", [people["bjensen"], people["alice"]])
    return {
        "Tours": tours,
        "Engineers": create_group(provisioner, "Engineers", [people["jsmith"], people["alice"]]),
        "Empty": create_group(provisioner, "Empty", []),
        "Nested": create_group(provisioner, "Nested", [tours]),
    }


@dataclass
class World:
    """The population of one database, and the app serving it."""

    app: ASGIApp
    people: dict[str, str]  # key → id
    groups: dict[str, str]  # displayName → id
    corpus: dict[str, str]  # what the differential filters mention: {gid}, {uid}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
    postgres_url: str | None,
    catalog: Catalog,
) -> Iterator[World]:
    url = fresh_database_url(request.param, tmp_path_factory, sqlite_template, postgres_url)
    db = connect(url)
    db.upgrade()
    clock = Clock()
    provisioner = Provisioner(db, catalog, clock=clock)
    people = create_people(provisioner, clock)
    groups = create_people_groups(provisioner, clock, people)
    corpus = create_corpus(provisioner, clock)
    yield World(serve(db, url, provisioner, catalog), people, groups, corpus)
    db.dispose()


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(world.app) as client:
        yield client


async def list_all(
    client: httpx.AsyncClient, endpoint: str = "/Users", **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(endpoint, params={"count": "200", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["totalResults"] == len(body["Resources"])
    resources: list[dict[str, Any]] = body["Resources"]
    return resources


async def names(client: httpx.AsyncClient, filter_text: str) -> set[str]:
    """The userNames of the five people ``GET /Users?filter=`` returns."""
    found = {r["userName"] for r in await list_all(client, filter=filter_text)}
    return found & PEOPLE


async def group_names(client: httpx.AsyncClient, filter_text: str) -> set[str]:
    """The displayNames of the people's four groups ``GET /Groups?filter=`` returns."""
    found = {r["displayName"] for r in await list_all(client, "/Groups", filter=filter_text)}
    return found & PEOPLE_GROUPS


async def filter_error(
    client: httpx.AsyncClient, filter_text: str, endpoint: str = "/Users"
) -> dict[str, Any]:
    response = await client.get(endpoint, params={"filter": filter_text})
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "400"
    return body


# -- one behaviour per test ------------------------------------------------------------------


async def test_eq_on_user_name_ignores_case(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName eq "bjensen"') == {"BJensen"}
    assert await names(http, 'userName eq "BJENSEN"') == {"BJensen"}


async def test_eq_on_user_name_folds_non_ascii(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName eq "zoë.ålund"') == {"Zoë.Ålund"}


async def test_attribute_names_ignore_case(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'USERNAME Eq "jsmith"') == {"jsmith"}
    assert await names(http, 'EMAILS[TYPE eq "home"]') == {"BJensen", "alice"}


async def test_eq_on_external_id_is_case_exact(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'externalId eq "E-bjensen"') == {"BJensen"}
    assert await names(http, 'externalId eq "e-bjensen"') == set()


async def test_eq_on_id(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f'id eq "{world.people["alice"]}"') == {"alice"}


async def test_ne_excludes_only_equal_values(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName ne "BJENSEN"') == {"jsmith", "alice", "Zoë.Ålund", "mallory"}


async def test_ne_matches_a_user_without_the_attribute(
    http: httpx.AsyncClient, world: World
) -> None:
    # alice has no title at all: "title ne x" is true for her, not unknown.
    assert await names(http, 'title ne "Engineer"') == {"BJensen", "alice", "Zoë.Ålund"}


async def test_not_matches_a_user_without_the_attribute(
    http: httpx.AsyncClient, world: World
) -> None:
    assert await names(http, 'not (title eq "Engineer")') == {"BJensen", "alice", "Zoë.Ålund"}


async def test_co_is_case_insensitive_substring(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'displayName co "JENS"') == {"BJensen"}
    assert await names(http, 'displayName co "ålund"') == {"Zoë.Ålund"}


async def test_sw(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName sw "J"') == {"jsmith"}


async def test_ew(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName ew "ICE"') == {"alice"}


async def test_gt_and_ge_on_strings(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName gt "jsmith"') == {"mallory", "Zoë.Ålund"}
    assert await names(http, 'userName ge "JSMITH"') == {"jsmith", "mallory", "Zoë.Ålund"}


async def test_lt_and_le_on_strings(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName lt "bjensen"') == {"alice"}
    assert await names(http, 'userName le "bjensen"') == {"alice", "BJensen"}


async def test_pr_needs_a_non_empty_value(http: httpx.AsyncClient, world: World) -> None:
    # Zoë's title is "", which is not a value (RFC 7644 §3.4.2.2 "pr").
    assert await names(http, "title pr") == {"BJensen", "jsmith", "mallory"}


async def test_pr_on_a_complex_attribute(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, "name pr") == {"BJensen", "jsmith", "alice"}
    assert await names(http, "name.givenName pr") == {"BJensen", "jsmith"}


async def test_and(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'title eq "engineer" and active eq true') == {"mallory"}


async def test_or(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'userName eq "alice" or userName eq "mallory"') == {"alice", "mallory"}


async def test_not_of_a_group(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'not (userName eq "alice" or title pr)') == {"Zoë.Ålund"}


async def test_and_binds_tighter_than_or(http: httpx.AsyncClient, world: World) -> None:
    # userName eq alice or (title eq Engineer and active eq false)
    assert await names(http, 'userName eq "alice" or title eq "Engineer" and active eq false') == {
        "alice",
        "jsmith",
    }


async def test_parentheses_override_precedence(http: httpx.AsyncClient, world: World) -> None:
    found = await names(http, '(userName eq "alice" or title eq "Engineer") and active eq false')
    assert found == {"jsmith"}


async def test_active_eq_false(http: httpx.AsyncClient, world: World) -> None:
    # alice has no active attribute: false is a value, absence is not.
    assert await names(http, "active eq false") == {"jsmith"}
    assert await names(http, "active ne true") == {"jsmith", "alice"}


async def test_sub_attribute_of_a_complex_attribute(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'name.familyName eq "JENSEN"') == {"BJensen"}


async def test_sub_attribute_of_a_multi_valued_attribute(
    http: httpx.AsyncClient, world: World
) -> None:
    assert await names(http, 'emails.value ew "@y.example"') == {"BJensen", "jsmith"}
    assert await names(http, 'emails co "WONDER"') == {"alice"}


async def test_value_path_holds_on_one_element(http: httpx.AsyncClient, world: World) -> None:
    # bjensen's work email is a@x, her home email b@y: no single element is work AND @y.
    assert await names(http, 'emails[type eq "work" and value co "@y"]') == {"jsmith"}
    assert await names(http, 'emails[type eq "work" and value co "@x"]') == {"BJensen"}


async def test_value_path_with_or_and_not(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'emails[type eq "home" or primary eq true]') == {"BJensen", "alice"}
    assert await names(http, 'emails[not (type eq "work")]') == {"BJensen", "alice"}


async def test_value_path_combined_with_other_terms(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'emails[type eq "work"] and not (active eq true)') == {"jsmith"}


async def test_sub_attributes_outside_brackets_may_match_different_elements(
    http: httpx.AsyncClient, world: World
) -> None:
    # Unlike the value path, emails.type and emails.value are tested independently.
    assert await names(http, 'emails.type eq "work" and emails.value co "@y"') == {
        "BJensen",
        "jsmith",
    }


async def test_enterprise_extension_attribute(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f'{ENTERPRISE}:department eq "tours"') == {"BJensen"}
    assert await names(http, f'{ENTERPRISE}:department sw "Eng"') == {"jsmith"}


async def test_extension_attribute_ne_matches_users_without_the_extension(
    http: httpx.AsyncClient, world: World
) -> None:
    assert await names(http, f'{ENTERPRISE}:department ne "Tours"') == {
        "jsmith",
        "alice",
        "Zoë.Ålund",
        "mallory",
    }


async def test_hr_role_codes_are_case_exact(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f'{HR}:roleCodes eq "BEN_CHOICE_2026"') == {"BJensen"}
    assert await names(http, f'{HR}:roleCodes eq "ben_choice_2026"') == {"jsmith"}
    assert await names(http, f'{HR}:roleCodes co "CHOICE"') == {"BJensen"}


async def test_hr_role_codes_value_path(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f'{HR}:roleCodes[value eq "MGR"]') == {"BJensen"}
    assert await names(http, f'{HR}:roleCodes[value sw "ben"]') == {"jsmith"}


async def test_multi_valued_ne_means_no_value_equals(http: httpx.AsyncClient, world: World) -> None:
    # The reading of scim2-models' ScimFilter.match: every value differs (absence included).
    found = await names(http, f'{HR}:roleCodes ne "MGR"')
    assert found == {"jsmith", "alice", "Zoë.Ålund", "mallory"}


async def test_extension_string_folds_case(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f'{HR}:employmentStatus eq "ACTIVE"') == {"BJensen"}


async def test_boolean_extension_attribute(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f"{HR}:benefitsEligible eq true") == {"BJensen"}
    assert await names(http, f"{HR}:benefitsEligible eq false") == {"jsmith"}
    assert await names(http, f"{HR}:benefitsEligible ne true") == {
        "jsmith",
        "alice",
        "Zoë.Ålund",
        "mallory",
    }


async def test_datetime_extension_attribute_compares_instants(
    http: httpx.AsyncClient, world: World
) -> None:
    # jsmith was hired 2021-01-14T22:00:00Z, written with a +02:00 offset.
    assert await names(http, f'{HR}:hireDate gt "2021-01-14T23:00:00Z"') == {"alice"}
    assert await names(http, f'{HR}:hireDate lt "2021-01-15T00:00:00+01:00"') == {
        "BJensen",
        "jsmith",
    }
    assert await names(http, f'{HR}:hireDate eq "2021-01-14T22:00:00Z"') == {"jsmith"}
    assert await names(http, f'{HR}:hireDate ge "2019-06-01T11:00:00+02:00"') == {
        "BJensen",
        "jsmith",
        "alice",
    }


async def test_meta_last_modified(http: httpx.AsyncClient, world: World) -> None:
    # The ticking clock wrote the five users at T0, T0+1min, … in the fixture's order.
    third = T0 + timedelta(minutes=2)
    assert await names(http, f'meta.lastModified gt "{third.isoformat()}"') == {
        "Zoë.Ålund",
        "mallory",
    }
    assert await names(http, f'meta.lastModified ge "{third.isoformat()}"') == {
        "alice",
        "Zoë.Ålund",
        "mallory",
    }
    assert await names(http, 'meta.created lt "2024-03-01T13:01:30+01:00"') == {"BJensen", "jsmith"}


async def test_meta_resource_type(http: httpx.AsyncClient, world: World) -> None:
    assert len(await names(http, 'meta.resourceType eq "User"')) == 5


async def test_schemas_eq_finds_the_users_of_an_extension(
    http: httpx.AsyncClient, world: World
) -> None:
    assert await names(http, f'schemas eq "{ENTERPRISE}"') == {"BJensen", "jsmith"}


async def test_eq_null_is_absence(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, "externalId eq null") == {"alice", "Zoë.Ålund", "mallory"}


async def test_plus_encoded_query_string(http: httpx.AsyncClient, world: World) -> None:
    response = await http.get("/Users?filter=userName+eq+%22jsmith%22")
    assert response.status_code == 200, response.text
    assert [r["userName"] for r in response.json()["Resources"]] == ["jsmith"]


async def test_unknown_attribute_is_invalid_filter(http: httpx.AsyncClient, world: World) -> None:
    body = await filter_error(http, 'shoeSize eq "44"')
    assert body["scimType"] == "invalidFilter"


async def test_unknown_sub_attribute_in_value_path_is_invalid_filter(
    http: httpx.AsyncClient, world: World
) -> None:
    body = await filter_error(http, 'emails[colour eq "red"]')
    assert body["scimType"] == "invalidFilter"


async def test_unknown_extension_is_invalid_filter(http: httpx.AsyncClient, world: World) -> None:
    body = await filter_error(
        http, 'urn:example:params:scim:schemas:extension:x:2.0:User:foo eq "1"'
    )
    assert body["scimType"] == "invalidFilter"


@pytest.mark.parametrize(
    "malformed",
    [
        "userName eq",
        'userName eq "unterminated',
        '(userName eq "x"',
        'userName equals "x"',
        'userName eq "x" and',
        'emails[type eq "work"',
    ],
)
async def test_malformed_filter_is_invalid_filter(
    http: httpx.AsyncClient, world: World, malformed: str
) -> None:
    body = await filter_error(http, malformed)
    assert body["scimType"] == "invalidFilter"
    assert body["status"] == "400"


async def test_ordering_operator_on_a_boolean_is_invalid_filter(
    http: httpx.AsyncClient, world: World
) -> None:
    body = await filter_error(http, "active gt false")
    assert body["scimType"] == "invalidFilter"


async def test_value_that_is_not_a_datetime_is_invalid_filter(
    http: httpx.AsyncClient, world: World
) -> None:
    body = await filter_error(http, 'meta.lastModified gt "yesterday"')
    assert body["scimType"] == "invalidFilter"


async def test_display_name_folds_unicode_normalization(
    http: httpx.AsyncClient, world: World
) -> None:
    # Stored decomposed ("E" + U+0308), searched composed: both fold to the same NFC key.
    assert await names(http, 'displayName eq "zoë ålund"') == {"Zoë.Ålund"}


async def test_groups_value_on_users(http: httpx.AsyncClient, world: World) -> None:
    tours = world.groups["Tours"]
    assert await names(http, f'groups.value eq "{tours}"') == {"BJensen", "alice"}
    assert await names(http, f'groups eq "{tours}"') == {"BJensen", "alice"}


async def test_groups_value_path_on_users(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, f'groups[value eq "{world.groups["Engineers"]}"]') == {
        "jsmith",
        "alice",
    }


async def test_groups_display_on_users(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, 'groups.display eq "engineers"') == {"jsmith", "alice"}


async def test_groups_pr_on_users(http: httpx.AsyncClient, world: World) -> None:
    assert await names(http, "groups pr") == {"BJensen", "jsmith", "alice"}


async def test_groups_value_ne_means_in_no_such_group(
    http: httpx.AsyncClient, world: World
) -> None:
    # alice is in Tours (and in Engineers): she does not match; users in no group do.
    found = await names(http, f'groups.value ne "{world.groups["Tours"]}"')
    assert found == {"jsmith", "Zoë.Ålund", "mallory"}


async def test_members_value_path_on_groups(http: httpx.AsyncClient, world: World) -> None:
    alice = world.people["alice"]
    assert await group_names(http, f'members[value eq "{alice}"]') == {"Tours", "Engineers"}


async def test_members_value_on_groups(http: httpx.AsyncClient, world: World) -> None:
    jsmith = world.people["jsmith"]
    assert await group_names(http, f'members.value eq "{jsmith}"') == {"Engineers"}
    assert await group_names(http, f'members eq "{jsmith}"') == {"Engineers"}


async def test_members_pr_on_groups(http: httpx.AsyncClient, world: World) -> None:
    assert await group_names(http, "members pr") == {"Tours", "Engineers", "Nested"}
    assert await group_names(http, "not (members pr)") == {"Empty"}


async def test_members_value_ne_includes_empty_groups(
    http: httpx.AsyncClient, world: World
) -> None:
    found = await group_names(http, f'members.value ne "{world.people["jsmith"]}"')
    assert found == {"Tours", "Empty", "Nested"}


async def test_members_type_folds_case(http: httpx.AsyncClient, world: World) -> None:
    assert await group_names(http, 'members[type eq "group"]') == {"Nested"}
    assert await group_names(http, 'members[type co "SE"]') == {"Tours", "Engineers"}


async def test_members_display(http: httpx.AsyncClient, world: World) -> None:
    assert await group_names(http, 'members[display co "babs"]') == {"Tours"}
    assert await group_names(http, 'members.display eq "tours"') == {"Nested"}


async def test_members_value_path_holds_on_one_member(
    http: httpx.AsyncClient, world: World
) -> None:
    bjensen = world.people["bjensen"]
    found = await group_names(http, f'members[type eq "User" and value eq "{bjensen}"]')
    assert found == {"Tours"}
    found = await group_names(http, f'members[type eq "Group" and value eq "{bjensen}"]')
    assert found == set()


async def test_unknown_member_sub_attribute_is_invalid_filter(
    http: httpx.AsyncClient, world: World
) -> None:
    body = await filter_error(http, 'members[colour eq "red"]', endpoint="/Groups")
    assert body["scimType"] == "invalidFilter"


async def test_member_ref_cannot_be_compared(http: httpx.AsyncClient, world: World) -> None:
    # $ref is rendered from the request's base URL: it can be tested with pr only.
    assert await group_names(http, "members[$ref pr]") == {"Tours", "Engineers", "Nested"}
    body = await filter_error(http, 'members[$ref co "Users"]', endpoint="/Groups")
    assert body["scimType"] == "invalidFilter"


async def test_filter_in_a_search_request(http: httpx.AsyncClient, world: World) -> None:
    response = await http.post(
        "/Users/.search",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'emails[type eq "work" and value co "@y"]',
        },
    )
    assert response.status_code == 200, response.text
    assert [r["userName"] for r in response.json()["Resources"]] == ["jsmith"]


# -- the differential tests ------------------------------------------------------------------

FIRST = ["Ann", "Bob", "Chloé", "Dana", "Émile", "Femi", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
LAST = ["Jensen", "Smith", "Ålund", "O'Brien", "Nguyen", "Da Silva", "Zoë", "Müller", "Ng"]
DEPARTMENTS = ["Sales", "sales", "Engineering", "HR", "Tours", ""]
ROLE_CODES = ["BEN_CHOICE_2026", "ben_choice_2026", "MGR", "FT", "PT_ELIG", "mgr"]
STATUSES = ["active", "ACTIVE", "leave", "terminated", "pre-hire"]
HIRE_DATES = [
    "2019-06-01T09:00:00Z",
    "2021-01-15T00:00:00+02:00",
    "2021-01-14T22:00:00Z",
    "2021-01-14T22:00:00.5Z",
    "2021-01-14T23:30:00-01:00",
    "2023-12-31T23:59:59.999999Z",
    "2024-09-01T08:00:00+05:30",
]
EMAIL_TYPES = ["work", "home", "other", "WORK"]
DOMAINS = ["example.com", "example.org", "Mail.Example.NET"]


def corpus_payload(rng: random.Random, index: int) -> dict[str, Any]:
    """One varied user: each attribute present or absent, in several spellings."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    payload: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": f"{first}.{last}.{index}"}
    if rng.random() < 0.7:
        payload["externalId"] = rng.choice(["E", "e", "X"]) + f"-{index:03d}"
    if rng.random() < 0.8:
        name: dict[str, Any] = {"familyName": last}
        if rng.random() < 0.6:
            name["givenName"] = first
        payload["name"] = name
    if rng.random() < 0.7:
        payload["displayName"] = rng.choice([f"{first} {last}", f"{first} {last}".upper()])
    title = rng.choice([None, "Engineer", "engineer", "Tour Guide", ""])
    if title is not None:
        payload["title"] = title
    active = rng.choice([None, True, False, True])
    if active is not None:
        payload["active"] = active
    emails = []
    for position in range(rng.choice([0, 1, 1, 2, 3])):
        email: dict[str, Any] = {"value": f"{first.lower()}{position}@{rng.choice(DOMAINS)}"}
        if rng.random() < 0.85:
            email["type"] = rng.choice(EMAIL_TYPES)
        if position == 0 and rng.random() < 0.5:
            email["primary"] = True
        elif rng.random() < 0.3:
            email["primary"] = False
        emails.append(email)
    if emails:
        payload["emails"] = emails
    if rng.random() < 0.4:
        payload["phoneNumbers"] = [
            {"value": f"+1-555-{index:04d}", "type": rng.choice(["mobile", "work"])}
        ]
    if rng.random() < 0.3:
        payload["roles"] = [
            {"value": rng.choice(["admin", "Admin", "reader"]), "primary": rng.random() < 0.5}
        ]
    enterprise: dict[str, Any] = {}
    if rng.random() < 0.6:
        enterprise["department"] = rng.choice(DEPARTMENTS)
    if rng.random() < 0.5:
        enterprise["employeeNumber"] = f"{rng.randint(1, 300):04d}"
    if rng.random() < 0.3:
        enterprise["manager"] = {"value": f"M-{rng.randint(1, 3)}"}
    if enterprise:
        payload[ENTERPRISE] = enterprise
    hr: dict[str, Any] = {}
    if rng.random() < 0.6:
        hr["roleCodes"] = rng.sample(ROLE_CODES, rng.randint(1, 3))
    if rng.random() < 0.6:
        hr["employmentStatus"] = rng.choice(STATUSES)
    if rng.random() < 0.7:
        hr["hireDate"] = rng.choice(HIRE_DATES)
    if rng.random() < 0.6:
        hr["benefitsEligible"] = rng.random() < 0.5
    if rng.random() < 0.3:
        hr["location"] = rng.choice(["Paris", "PARIS", "Zürich", "Zu\u0308rich"])
    if hr:
        payload[HR] = hr
    return payload


# {gid} stands for the id of the group "Admins", {uid} for the id of the corpus' first user.
USER_FILTERS = [
    'userName eq "gus.MÜLLER.0"',
    'userName sw "b"',
    'userName co "Ë"',
    'userName ew ".7"',
    'userName gt "h"',
    'userName le "chloé"',
    'userName ne "Dana.Ng.2"',
    'externalId sw "E"',
    'externalId eq "E-005"',
    'externalId eq "e-005"',
    "externalId pr",
    "not (externalId pr)",
    "externalId eq null",
    'displayName co "JEN"',
    'displayName eq "dana ng"',
    "displayName pr",
    'title eq "engineer"',
    'title ne "Engineer"',
    'not (title eq "Engineer")',
    "title pr",
    'title co ""',
    'name.familyName eq "ålund"',
    'name.familyName sw "O\'"',
    "name.givenName pr",
    "name pr",
    "active eq true",
    "active eq false",
    "active ne true",
    "not (active pr)",
    "emails pr",
    'emails co "EXAMPLE.ORG"',
    'emails.value ew ".net"',
    'emails.type eq "work"',
    'emails.type ne "work"',
    'emails[type eq "work"]',
    'emails[type eq "work" and value co "example.org"]',
    'emails[value co "example.org" and type eq "work"]',
    'emails[type eq "work" or primary eq true]',
    'emails[not (type eq "work")]',
    'emails[type ne "work"]',
    "emails[primary eq true]",
    "emails[primary eq false]",
    "emails.primary eq true",
    'emails[type pr and value sw "a"]',
    'emails[type eq "home"] and not (emails[type eq "work"])',
    'phoneNumbers[type eq "mobile"]',
    'phoneNumbers.value co "555-001"',
    'roles[value eq "admin"]',
    "roles.primary eq false",
    f'{ENTERPRISE}:department eq "sales"',
    f'{ENTERPRISE}:department ne "Sales"',
    f'not ({ENTERPRISE}:department eq "Sales")',
    f"{ENTERPRISE}:department pr",
    f'{ENTERPRISE}:employeeNumber ge "0150"',
    f'{ENTERPRISE}:employeeNumber lt "0100"',
    f'{ENTERPRISE}:manager.value eq "M-2"',
    f"{ENTERPRISE}:manager pr",
    f'{HR}:roleCodes eq "BEN_CHOICE_2026"',
    f'{HR}:roleCodes eq "mgr"',
    f'{HR}:roleCodes co "CHOICE"',
    f'{HR}:roleCodes ne "MGR"',
    f"{HR}:roleCodes pr",
    f'{HR}:roleCodes[value sw "BEN" or value eq "FT"]',
    f'{HR}:employmentStatus eq "active"',
    f'{HR}:employmentStatus ne "Active"',
    f'{HR}:hireDate gt "2021-01-14T22:00:00Z"',
    f'{HR}:hireDate ge "2021-01-14T22:00:00Z"',
    f'{HR}:hireDate eq "2021-01-14T22:00:00Z"',
    f'{HR}:hireDate lt "2021-01-15T00:00:00+01:00"',
    f'{HR}:hireDate le "2024-01-01T00:00:00Z"',
    f"{HR}:hireDate pr",
    f"{HR}:benefitsEligible eq true",
    f"{HR}:benefitsEligible eq false",
    f"{HR}:benefitsEligible ne true",
    f'{HR}:location eq "zürich"',
    f'{HR}:location co "PAR"',
    'meta.created gt "2024-03-01T12:10:00Z"',
    'meta.created le "2024-03-01T13:10:00+01:00"',
    'meta.lastModified lt "2024-03-01T12:20:00.000001Z"',
    'meta.lastModified ge "2024-03-01T07:15:00-05:00"',
    'meta.resourceType eq "User"',
    f'schemas eq "{HR}"',
    "meta pr",
    "meta.location pr",
    'meta.version eq "W/\\"1\\""',
    f'schemas[value eq "{ENTERPRISE}"] and not (schemas eq "{HR}")',
    'groups.value eq "{gid}"',
    'groups[value eq "{gid}"]',
    'groups.value ne "{gid}"',
    'groups.display co "ADMIN"',
    "groups pr",
    "not (groups pr)",
    'id eq "{uid}"',
    'id ne "{uid}"',
    'userName sw "a" or userName sw "b" and active eq true',
    '(userName sw "a" or userName sw "b") and active eq true',
    'not (emails[type eq "work"]) and title pr',
    "title pr and (active eq false or not (emails pr))",
    "userName pr and not (not (active eq true))",
]


# {uid} is alice (in Tours and Engineers), {gid} the group Admins, {tours} the group Tours.
GROUP_FILTERS = [
    'displayName eq "admins"',
    'displayName sw "R"',
    'displayName co "E"',
    'members[value eq "{uid}"]',
    'members.value eq "{uid}"',
    'members eq "{tours}"',
    'members.value ne "{uid}"',
    'members[type eq "user"]',
    'members[type eq "Group"]',
    'members.type co "SE"',
    'members.type ne "User"',
    'members[display co "ann"]',
    'members.display sw "TOU"',
    "members pr",
    "not (members pr)",
    'members[value eq "{uid}" and type eq "User"]',
    'members[not (value eq "{uid}")]',
    'members[type eq "Group" or display ew "jensen"]',
    'displayName pr and not (members[type eq "Group"])',
    'meta.created gt "2024-03-01T12:06:00Z"',
    'id eq "{gid}" or id eq "{tours}"',
]


def create_corpus(provisioner: Provisioner, clock: Clock) -> dict[str, str]:
    """Forty varied users, a minute apart from T0+10min, and three groups.

    Returns the ids the differential filters mention.
    """
    rng = random.Random(20260314)
    ids = []
    with provisioner.transaction() as tx:  # one commit: quicker than forty
        for index in range(40):
            clock.at(10 + index)
            payload = corpus_payload(rng, index)
            ids.append(provisioner.create(CAUSE, "User", payload, conn=tx).record.id)
    admins = create_group(provisioner, "Admins", ids[::3])
    create_group(provisioner, "Readers", ids[::5])
    create_group(provisioner, "Everyone", [admins, ids[0]])
    return {"gid": admins, "uid": ids[0]}


async def disagreements(
    http: httpx.AsyncClient, endpoint: str, model: Any, filters: list[str], ids: dict[str, str]
) -> list[str]:
    """Each filter whose SQL result differs from ScimFilter.match over the rendered resources."""
    rendered = await list_all(http, endpoint)
    resources = [
        (resource["id"], model.model_validate(resource, scim_policy=TOLERANT_POLICY))
        for resource in rendered
    ]
    wrong = []
    for template in filters:
        filter_text = template.format(**ids)
        reference = ScimFilter[model](filter_text)  # type: ignore[valid-type]
        expected = {id_ for id_, resource in resources if reference.match(resource)}
        found = {r["id"] for r in await list_all(http, endpoint, filter=filter_text)}
        if found != expected:
            wrong.append(
                f"{filter_text}: SQL only {sorted(found - expected)}, "
                f"reference only {sorted(expected - found)}"
            )
    return wrong


async def test_user_filters_agree_with_the_reference_evaluator(
    http: httpx.AsyncClient, world: World, catalog: Catalog
) -> None:
    assert len(await list_all(http)) == 45
    wrong = await disagreements(http, "/Users", catalog.user, USER_FILTERS, world.corpus)
    assert not wrong, "\n".join(wrong)


async def test_group_filters_agree_with_the_reference_evaluator(
    http: httpx.AsyncClient, world: World, catalog: Catalog
) -> None:
    ids = {**world.corpus, "uid": world.people["alice"], "tours": world.groups["Tours"]}
    wrong = await disagreements(http, "/Groups", catalog.group, GROUP_FILTERS, ids)
    assert not wrong, "\n".join(wrong)


# -- query plans (SQLite's EXPLAIN QUERY PLAN) -----------------------------------------------


@pytest.fixture(scope="module")
def sqlite_db(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, catalog: Catalog
) -> Iterator[Database]:
    """A SQLite database of 300 users with two emails each, never analysed."""
    url = fresh_database_url("sqlite", tmp_path_factory, sqlite_template, None)
    db = connect(url)
    provisioner = Provisioner(db, catalog)
    with provisioner.transaction() as tx:
        for index in range(300):
            emails = [
                {"type": "work", "value": f"u{index}@work.example"},
                {"type": "home", "value": f"u{index}@home.example"},
            ]
            payload = user_payload(f"u{index}", emails=emails)
            provisioner.create(CAUSE, "User", payload, conn=tx)
    yield db
    db.dispose()


def query_plan(db: Database, catalog: Catalog, filter_text: str, *, analyse: bool) -> str:
    """The plan of a page of ``GET /Users?filter=`` (type test and filter, as ResourceStore)."""
    store = ResourceStore({"User": catalog.user, "Group": catalog.group}, "sqlite")
    predicate = store._predicate("User", ScimFilter(filter_text).ast)
    query = select(R.c.pk, R.c.doc).where(predicate).order_by(R.c.pk).limit(11)
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        transaction = conn.begin()
        if analyse:
            conn.exec_driver_sql("ANALYZE")  # rolled back below: other tests see no statistics
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
        transaction.rollback()
    return "\n".join(str(row[-1]) for row in rows)


def test_plan_of_user_name_eq_searches_the_user_name_index(
    sqlite_db: Database, catalog: Catalog
) -> None:
    plan = query_plan(sqlite_db, catalog, 'userName eq "U7"', analyse=False)
    assert "SEARCH resources USING" in plan
    assert "name_key=?" in plan
    assert "ux_resources_user_name" in plan or "ix_resources_name_key" in plan


def test_plan_of_value_path_looks_elements_up_by_index(
    sqlite_db: Database, catalog: Catalog
) -> None:
    plan = query_plan(
        sqlite_db, catalog, 'emails[type eq "work" and value eq "u7@work.example"]', analyse=True
    )
    assert "USING INDEX ix_attribute_values_lookup (path=? AND value_key=?)" in plan
    assert "SEARCH resources USING INTEGER PRIMARY KEY (rowid=?)" in plan
    assert "SCAN" not in plan


def test_plan_of_value_path_without_statistics_looks_elements_up_by_index(
    sqlite_db: Database, catalog: Catalog
) -> None:
    plan = query_plan(
        sqlite_db, catalog, 'emails[type eq "work" and value eq "u7@work.example"]', analyse=False
    )
    assert "SEARCH resources USING INTEGER PRIMARY KEY (rowid=?)" in plan


@pytest.mark.parametrize(
    "text",
    [
        'userName eq "bjensen"',
        ' userName EQ "Bjensen" ',
        'name.givenName eq "Barbara"',
        'emails.value eq "b@example.com"',
        'userName eq "with \\"quotes\\" and \\u00e9"',
        'userName eq ""',
        'userName eq "bjensen" and active eq true',
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "7"',
        "userName eq 12",
        'userName eq "bad \\q escape"',
        'us\u00e9rName eq "x"',
        '$ref eq "x"',
        'userName eqx "x"',
    ],
)
def test_simple_eq_filters_parse_to_the_parsers_own_node(text: str) -> None:
    """``attr eq "string"`` skips the grammar; the node (or the error) must be the parser's."""
    from scim2_models import SCIMException

    from bridge.scim.params import parse_filter

    try:
        expected: Any = ScimFilter(text.strip()).ast
    except (SCIMException, ValueError):
        expected = SCIMException
    try:
        got: Any = parse_filter(text)
    except SCIMException:
        got = SCIMException
    assert got == expected
