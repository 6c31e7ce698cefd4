"""Lookalike userNames: RFC 7643 §4.1.1 asks only for case-insensitive uniqueness.

Under either policy a userName holding a character that renders as nothing (zero-width,
soft hyphen, bidi control) is 400 ``invalidValue``. Under ``exact`` (the default) names are
kept as sent, so ``ｊｏｈｎ`` and ``john`` are two users. Under ``BRIDGE_USERNAME_POLICY=nfkc``
a userName is trimmed and NFKC-normalised before it is stored (the journal names the
``username_nfkc`` tolerance), and compared by its NFKC + case-folded key, so fullwidth,
ligature, ß/SS and space-padded lookalikes collide (409 ``uniqueness``) and ``userName eq``
finds them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from scim2_models import InvalidValueException
from scim2_models.path import AttrPath
from scim2_models.path import CompareOperator
from scim2_models.path import Comparison
from scim2_models.path import LogicalExpr
from scim2_models.path import LogicalOperator

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.scim import quirks
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import names
from bridge.store.engine import Database
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import patch_body
from tests.conftest import user_payload

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
INVISIBLE = [
    *map(chr, range(0x200B, 0x2010)),
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2060, 0x2065)),
    *map(chr, range(0x2066, 0x206A)),
    "\ufeff",
    "\u00ad",
]


@pytest.fixture
async def nfkc(
    db: Database, catalog: Catalog, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, configured with ``BRIDGE_USERNAME_POLICY=nfkc``."""
    settings = Settings(
        database_url=database_url,
        scim_token=TOKEN,
        schemas_dir=ROOT / "schemas",
        username_policy=names.NFKC,
    )
    provisioner = Provisioner(db, catalog, username_policy=settings.username_policy)
    app = create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))
    async with app_client(app) as client:
        yield client


def _tolerances(db: Database, resource_id: str) -> list[str]:
    with db.read() as conn:
        return journal.read(conn, resource_id=resource_id)[-1].tolerances


async def _refused(response: httpx.Response, status: int, scim_type: str) -> str:
    body = assert_scim(response, status)
    assert body["scimType"] == scim_type, body
    return str(body["detail"])


async def _ids(client: httpx.AsyncClient, text: str) -> list[str]:
    found = assert_scim(await client.get("/Users", params={"filter": text}), 200)
    return [resource["id"] for resource in found["Resources"]]


# -- either policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "character", ["\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u2067"]
)
async def test_invisible_character_in_a_username_is_invalid_value(
    client: httpx.AsyncClient, character: str
) -> None:
    name = f"jo{character}hn"
    detail = await _refused(
        await client.post("/Users", json=user_payload(name)), 400, "invalidValue"
    )
    assert "userName" in detail
    assert f"U+{ord(character):04X}" in detail
    created = assert_scim(await client.post("/Users", json=user_payload("john")), 201)
    for body in (
        patch_body({"op": "replace", "path": "userName", "value": name}),
        patch_body({"op": "replace", "value": {"userName": name}}),
    ):
        response = await client.patch(f"/Users/{created['id']}", json=body)
        assert "userName" in await _refused(response, 400, "invalidValue")
    response = await client.put(f"/Users/{created['id']}", json=user_payload(name))
    await _refused(response, 400, "invalidValue")
    bulk = {
        "schemas": [BULK],
        "Operations": [{"method": "POST", "path": "/Users", "data": user_payload(name)}],
    }
    result = assert_scim(await client.post("/Bulk", json=bulk), 200)
    assert result["Operations"][0]["response"]["scimType"] == "invalidValue"
    assert (await client.get(f"/Users/{created['id']}")).json()["userName"] == "john"


async def test_invisible_characters_elsewhere_are_kept(client: httpx.AsyncClient) -> None:
    """A zero-width joiner belongs in some scripts' names and in emoji: only userName
    identifies a person."""
    display = "\u0915\u094d\u200d\u0937"  # Devanagari conjunct with ZWJ
    created = assert_scim(
        await client.post("/Users", json=user_payload("kshatra", displayName=display)), 201
    )
    assert created["displayName"] == display


async def test_invisible_character_is_invalid_value_under_nfkc_too(
    nfkc: httpx.AsyncClient,
) -> None:
    """NFKC keeps format characters: the policy refuses them as the default does."""
    response = await nfkc.post("/Users", json=user_payload("\u200bjohn"))
    assert "U+200B" in await _refused(response, 400, "invalidValue")


# -- exact (the default) ----------------------------------------------------------------------


async def test_exact_policy_keeps_lookalikes_as_sent_and_distinct(
    client: httpx.AsyncClient,
) -> None:
    kept = {}
    for name in ("john", "ｊｏｈｎ", " john", "ﬁsh", "fish", "straße", "STRASSE"):
        created = assert_scim(await client.post("/Users", json=user_payload(name)), 201)
        assert created["userName"] == name
        kept[name] = created["id"]
    await _refused(await client.post("/Users", json=user_payload("JOHN")), 409, "uniqueness")
    assert await _ids(client, 'userName eq "JOHN"') == [kept["john"]]
    assert await _ids(client, 'userName eq "ｊｏｈｎ"') == [kept["ｊｏｈｎ"]]


# -- nfkc -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "stored", "lookalikes"),
    [
        ("ｊｏｈｎ", "john", ["john", "JOHN", " John ", "ＪＯＨＮ"]),
        ("straße", "straße", ["STRASSE", "Strasse", "STRAẞE"]),
        ("ﬁsh", "fish", ["FISH", "fish"]),
        ("\u3000ann\u3000", "ann", ["ANN", "ａｎｎ"]),
    ],
)
async def test_nfkc_lookalikes_collide_and_are_found(
    nfkc: httpx.AsyncClient, db: Database, first: str, stored: str, lookalikes: list[str]
) -> None:
    created = assert_scim(await nfkc.post("/Users", json=user_payload(first)), 201)
    assert created["userName"] == stored
    assert ("username_nfkc" in _tolerances(db, created["id"])) == (stored != first)
    for name in lookalikes:
        response = await nfkc.post("/Users", json=user_payload(name))
        await _refused(response, 409, "uniqueness")
        assert await _ids(nfkc, f'userName eq "{name}"') == [created["id"]], name
        # Not the one-index-read lookup: the filter's SQL translation.
        both = f'userName eq "{name}" and meta.resourceType eq "User"'
        assert await _ids(nfkc, both) == [created["id"]], name
    search = {"filter": f'userName eq "{lookalikes[0]}"', "sortBy": "userName"}
    found = assert_scim(await nfkc.post("/Users/.search", json=search), 200)
    assert [r["id"] for r in found["Resources"]] == [created["id"]]


async def test_nfkc_name_already_normal_is_no_tolerance(
    nfkc: httpx.AsyncClient, db: Database
) -> None:
    created = assert_scim(await nfkc.post("/Users", json=user_payload("bjensen")), 201)
    assert "username_nfkc" not in _tolerances(db, created["id"])


async def test_nfkc_applies_to_patch_put_and_bulk(nfkc: httpx.AsyncClient, db: Database) -> None:
    john = assert_scim(await nfkc.post("/Users", json=user_payload("john")), 201)
    jane = assert_scim(await nfkc.post("/Users", json=user_payload("jane")), 201)
    for body in (
        patch_body({"op": "replace", "path": "userName", "value": "ＪＯＨＮ"}),
        patch_body({"op": "replace", "value": {"userName": " john"}}),
        patch_body({"op": "replace", "path": f"{USER_SCHEMA}:userName", "value": "ｊｏｈｎ"}),
    ):
        response = await nfkc.patch(f"/Users/{jane['id']}", json=body)
        await _refused(response, 409, "uniqueness")
    replaced = await nfkc.patch(
        f"/Users/{jane['id']}",
        json=patch_body({"op": "replace", "path": "userName", "value": "ｊａｎｅｔ "}),
    )
    assert assert_scim(replaced, 200)["userName"] == "janet"
    assert "username_nfkc" in _tolerances(db, jane["id"])
    response = await nfkc.put(f"/Users/{jane['id']}", json=user_payload("ＪＯＨＮ"))
    await _refused(response, 409, "uniqueness")
    bulk = {
        "schemas": [BULK],
        "Operations": [
            {"method": "POST", "path": "/Users", "data": user_payload("John\u3000")},
            {"method": "POST", "path": "/Users", "data": user_payload("ｍａｒｙ")},
        ],
    }
    result = assert_scim(await nfkc.post("/Bulk", json=bulk), 200)
    assert [op["status"] for op in result["Operations"]] == ["409", "201"]
    assert await _ids(nfkc, 'userName eq "MARY"') != []
    assert await _ids(nfkc, 'userName eq "john"') == [john["id"]]


# -- the pure functions -----------------------------------------------------------------------


def test_every_invisible_character_is_named() -> None:
    for character in INVISIBLE:
        assert names.invisible(f"a{character}b") == f"U+{ord(character):04X}"
    assert names.invisible("jöhn ｊｏｈｎ") is None


def test_keys_under_each_policy() -> None:
    assert names.key("ＪＯＨＮ", names.EXACT) == "ｊｏｈｎ"
    assert names.key(" John", names.EXACT) == " john"
    for lookalike in ("ＪＯＨＮ", " john ", "JOHN"):
        assert names.key(lookalike, names.NFKC) == "john"
    assert names.key("STRASSE", names.NFKC) == names.key("straße", names.NFKC) == "strasse"
    assert names.key("ﬁ", names.NFKC) == "fi"
    assert names.stored(" ｊｏｈｎ ", names.EXACT) == " ｊｏｈｎ "
    assert names.stored(" ＪＯＨＮ ", names.NFKC) == "JOHN"


def test_a_key_is_a_fixed_point_of_folding_it_again() -> None:
    """The SQL translation folds a filter's operand once more: a key must survive it."""
    for character in map(chr, range(0x20, 0x3000)):
        text = f"A{character}b"
        assert names.key(names.key(text, names.NFKC), names.NFKC) == names.key(text, names.NFKC)
        assert names.key(names.key(text, names.NFKC), names.EXACT) == names.key(text, names.NFKC)


def test_keyed_filter_rewrites_username_operands_only() -> None:
    def compare(attr: str, value: Any, uri: str | None = None) -> Comparison:
        return Comparison(AttrPath(attr, None, uri), CompareOperator.eq, value)

    node = LogicalExpr(
        LogicalOperator.and_,
        (
            compare("UserName", "ＪＯＨＮ"),
            compare("userName", "ﬁ", USER_SCHEMA),
            compare("displayName", "ＪＯＨＮ"),
        ),
    )
    assert names.keyed_filter(node, names.EXACT) is node
    keyed = names.keyed_filter(node, names.NFKC)
    assert isinstance(keyed, LogicalExpr)
    assert [term.value for term in keyed.terms if isinstance(term, Comparison)] == [
        "john",
        "fi",
        "ＪＯＨＮ",
    ]


def test_quirks_normalise_the_username_only_under_nfkc(catalog: Catalog) -> None:
    model, known = catalog.model("User"), {USER_SCHEMA.lower()}
    payload, used = quirks.normalize_resource(user_payload(" ｊｏｈｎ "), model, known)
    assert (payload["userName"], used) == (" ｊｏｈｎ ", [])
    payload, used = quirks.normalize_resource(
        user_payload(" ｊｏｈｎ "), model, known, username_policy=names.NFKC
    )
    assert (payload["userName"], used) == ("john", ["username_nfkc"])
    with pytest.raises(InvalidValueException, match="userName holds an invisible character"):
        quirks.normalize_resource(user_payload("jo\u200chn"), model, known)
