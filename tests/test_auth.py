"""Authentication and authorisation through the real app: stored tokens, scopes, signed JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry
from sqlalchemy import select
from starlette.applications import Starlette

from bridge.auth.jwt import JwtConfigError
from bridge.auth.jwt import JwtVerifier
from bridge.auth.jwt import map_scopes
from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.auth.tokens import digest
from bridge.cli import main
from bridge.config import JwtSettings
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import tokens
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.store.tables import TokenRow
from tests.conftest import user_payload

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
ISSUER = "https://idp.example.com/oauth2/default"
AUDIENCE = "api://scim-bridge"
JWKS_URL = "https://idp.example.com/oauth2/default/v1/keys"
NOW = 1_760_000_000

# RSA key generation takes ~0.1 s each: make the few keys the module needs once.
KEY_1 = RSAKey.generate_key(2048, parameters={"kid": "key-1"})
KEY_2 = RSAKey.generate_key(2048, parameters={"kid": "key-2"})
ROGUE = RSAKey.generate_key(2048, parameters={"kid": "key-1"})  # same kid, not the IdP's


def jwks(*keys: RSAKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "0oa-okta-app",
        "client_id": "okta-provisioning",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
        "scope": "scim:read scim:write",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: RSAKey = KEY_1, alg: str = "RS256", **overrides: Any) -> str:
    header: dict[str, Any] = {"alg": alg}
    if key.kid:
        header["kid"] = key.kid
    registry = JWSRegistry(algorithms=[alg])
    return jwt.encode(header, claims(**overrides), key, algorithms=[alg], registry=registry)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class Idp:
    """A fake JWKS endpoint and clock: what the verifier fetches, and how often."""

    def __init__(self, *keys: RSAKey) -> None:
        self.document = jwks(*keys)
        self.fetches = 0
        self.now: float = NOW

    def fetch(self, url: str) -> dict[str, Any]:
        assert url == JWKS_URL
        self.fetches += 1
        return self.document

    def clock(self) -> float:
        return self.now


def jwt_settings(**overrides: Any) -> JwtSettings:
    values: dict[str, Any] = {"jwks_url": JWKS_URL, "issuer": ISSUER, "audience": AUDIENCE}
    values.update(overrides)
    return JwtSettings(**values)


def verifier(idp: Idp, **overrides: Any) -> JwtVerifier:
    return JwtVerifier(jwt_settings(**overrides), fetch=idp.fetch, clock=idp.clock)


@asynccontextmanager
async def http(app: Starlette, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bridge.test/scim/v2",
        headers=headers,
    ) as client:
        yield client


AppFactory = Callable[..., Starlette]


@pytest.fixture
def make_app(
    provisioner: Provisioner, catalog: Catalog, settings: Settings, db: Database
) -> AppFactory:
    """An app whose Authenticator has the given JWT verifier and cache lifetime."""

    def make(jwt: JwtVerifier | None = None, cache_seconds: float = 5.0) -> Starlette:
        authenticator = Authenticator(db, jwt=jwt, cache_seconds=cache_seconds)
        return create_app(provisioner, catalog, settings, authenticator)

    return make


async def call(
    app: Starlette, token: str | None, method: str = "GET", path: str = "/Users", **kw: Any
) -> httpx.Response:
    async with http(app, token) as client:
        return await client.request(method, path, **kw)


def create_token(db: Database, name: str, scopes: frozenset[str]) -> str:
    token = f"brg_test_{name}_0123456789abcdef"
    with db.write() as conn:
        tokens.create(conn, name, token, scopes, datetime.now(UTC))
    return token


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/scim+json"
    body: dict[str, Any] = response.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert "scimType" not in body
    assert body["detail"]
    return body


def assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- stored tokens ---------------------------------------------------------------------------


async def test_no_authorization_header_is_401(app: Starlette) -> None:
    assert_unauthorized(await call(app, None))


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "test-token", "Token test-token"]
)
async def test_malformed_authorization_is_401(app: Starlette, header: str) -> None:
    async with http(app) as client:
        assert_unauthorized(await client.get("/Users", headers={"Authorization": header}))


async def test_wrong_token_is_401(app: Starlette) -> None:
    assert_unauthorized(await call(app, "not-the-token"))
    assert_unauthorized(await call(app, "brg_" + "x" * 43, "POST", json=user_payload("u")))


async def test_env_token_may_read_and_write(client: httpx.AsyncClient) -> None:
    assert (await client.post("/Users", json=user_payload("bjensen"))).status_code == 201
    assert (await client.get("/Users")).status_code == 200


async def test_read_only_token_can_get_but_not_write(
    make_app: AppFactory, db: Database, provisioner: Provisioner
) -> None:
    app = make_app()
    token = create_token(db, "auditor", frozenset({READ}))
    assert (await call(app, token)).status_code == 200
    assert (await call(app, token, path="/ServiceProviderConfig")).status_code == 200
    body = assert_error(await call(app, token, "POST", json=user_payload("bjensen")), 403)
    assert "scim:write" in body["detail"]
    assert_error(await call(app, token, "POST", "/Bulk", json={}), 403)
    assert (await call(app, token, "GET", '/Users?filter=userName eq "x"')).status_code == 200


async def test_write_token_is_the_journal_actor(make_app: AppFactory, db: Database) -> None:
    app = make_app()
    token = create_token(db, "okta", frozenset({READ, WRITE}))
    created = await call(app, token, "POST", json=user_payload("bjensen"))
    assert created.status_code == 201, created.text
    with db.read() as conn:
        entries = journal.read(conn)
    assert [(e.op, e.actor) for e in entries] == [("create", "okta")]


async def test_revoked_token_is_401(make_app: AppFactory, db: Database) -> None:
    app = make_app(cache_seconds=0)
    token = create_token(db, "entra", frozenset({READ, WRITE}))
    assert (await call(app, token)).status_code == 200
    with db.write() as conn:
        assert tokens.revoke(conn, "entra", datetime.now(UTC))
    assert_unauthorized(await call(app, token))
    with db.write() as conn:  # revoking twice finds no active token
        assert not tokens.revoke(conn, "entra", datetime.now(UTC))


async def test_revocation_holds_at_once_in_every_process(
    provisioner: Provisioner, catalog: Catalog, settings: Settings, database_url: str
) -> None:
    # Two servers on one database, each with its own engine and a warm principal cache.
    servers = [connect(database_url) for _ in range(2)]
    try:
        apps = [
            create_app(provisioner, catalog, settings, Authenticator(server, cache_seconds=60))
            for server in servers
        ]
        token = create_token(servers[0], "entra", frozenset({READ, WRITE}))
        for app in apps:
            assert (await call(app, token)).status_code == 200
            assert (await call(app, token)).status_code == 200  # answered from the cache
        env = {"BRIDGE_DATABASE_URL": database_url, "BRIDGE_SCIM_TOKEN": None}
        revoked = CliRunner().invoke(main, ["tokens", "revoke", "entra"], env=env)
        assert revoked.exit_code == 0, revoked.output
        for app in apps:
            assert_unauthorized(await call(app, token))
            assert_unauthorized(await call(app, token, "POST", json=user_payload("bjensen")))
    finally:
        for server in servers:
            server.dispose()


async def test_tokens_are_stored_only_as_hashes(db: Database) -> None:
    token = create_token(db, "okta", frozenset({READ, WRITE}))
    with db.read() as conn:
        rows = conn.execute(select(TokenRow.__table__)).all()  # type: ignore[attr-defined]
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert token not in stored
    assert token[4:20] not in stored
    assert rows[0].token_hash == digest(token)


def test_duplicate_token_name_is_refused(db: Database) -> None:
    create_token(db, "okta", frozenset({READ}))
    with pytest.raises(tokens.TokenExists), db.write() as conn:
        tokens.create(conn, "okta", "brg_other", frozenset({READ}), datetime.now(UTC))


# -- signed JWTs through the app --------------------------------------------------------------


async def test_jwt_from_jwks_reads_and_writes(make_app: AppFactory, db: Database) -> None:
    idp = Idp(KEY_1)
    app = make_app(verifier(idp))
    token = sign()
    assert (await call(app, token)).status_code == 200
    created = await call(app, token, "POST", json=user_payload("bjensen"))
    assert created.status_code == 201, created.text
    assert idp.fetches == 1  # cached
    with db.read() as conn:
        assert [e.actor for e in journal.read(conn)] == ["jwt:okta-provisioning"]


def rejected_tokens() -> dict[str, Callable[[], str]]:
    def alg_none() -> str:
        header = b64({"alg": "none", "kid": "key-1", "typ": "JWT"})
        return f"{header}.{b64(claims())}."

    def hmac_with_public_key() -> str:
        # The classic confusion attack: HS256 keyed with the public key the IdP publishes.
        signing_input = f"{b64({'alg': 'HS256', 'kid': 'key-1'})}.{b64(claims())}"
        mac = hmac.new(KEY_1.as_pem(private=False), signing_input.encode(), hashlib.sha256)
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
        return f"{signing_input}.{signature}"

    def tampered() -> str:
        header, _, signature = sign().split(".")
        return f"{header}.{b64(claims(scope='scim:write', sub='admin'))}.{signature}"

    return {
        "wrong audience": lambda: sign(aud="api://another-app"),
        "wrong issuer": lambda: sign(iss="https://evil.example.com"),
        "expired": lambda: sign(iat=NOW - 7200, nbf=NOW - 7200, exp=NOW - 3600),
        "not yet valid": lambda: sign(nbf=NOW + 600),
        "issued in the future": lambda: sign(iat=NOW + 600, nbf=None),
        "no exp": lambda: sign(exp=None),
        "no aud": lambda: sign(aud=None),
        "no iss": lambda: sign(iss=None),
        "alg none": alg_none,
        "HS256 with the public key": hmac_with_public_key,
        "unknown kid": lambda: sign(KEY_2),
        "signed by another key with a known kid": lambda: sign(ROGUE),
        "tampered payload": tampered,
        "no recognised scope": lambda: sign(scope="openid profile"),
        "another API's write scope": lambda: sign(scope="https://graph.example.com/write"),
        "a scope that only ends in scim:write": lambda: sign(scope="api://other/scim:write"),
        "no principal name": lambda: sign(sub=None, client_id=None),
        "garbage with two dots": lambda: "not.a.jwt",
        "bad base64 header": lambda: "@@@." + sign().split(".", 1)[1],
    }


REJECTED = rejected_tokens()


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_bad_jwt_is_401(make_app: AppFactory, case: str) -> None:
    app = make_app(verifier(Idp(KEY_1)))
    assert_unauthorized(await call(app, REJECTED[case]()))


async def test_read_only_jwt_cannot_write(make_app: AppFactory) -> None:
    app = make_app(verifier(Idp(KEY_1)))
    token = sign(scope="scim:read")
    assert (await call(app, token)).status_code == 200
    assert_error(await call(app, token, "POST", json=user_payload("bjensen")), 403)


async def test_jwt_scopes_match_exactly(make_app: AppFactory) -> None:
    app = make_app(verifier(Idp(KEY_1)))
    foreign = sign(scope="scim:read https://graph.example.com/write")
    assert (await call(app, foreign)).status_code == 200
    assert_error(await call(app, foreign, "POST", json=user_payload("bjensen")), 403)
    writer = sign(scope="openid scim:write")
    created = await call(app, writer, "POST", json=user_payload("bjensen"))
    assert created.status_code == 201, created.text
    assert (await call(app, writer)).status_code == 200  # write implies read


async def test_key_rotation_refetches_the_jwks(make_app: AppFactory) -> None:
    idp = Idp(KEY_1)
    app = make_app(verifier(idp))
    assert (await call(app, sign(KEY_1))).status_code == 200
    assert idp.fetches == 1
    idp.document = jwks(KEY_1, KEY_2)  # the IdP rolls over to key-2
    idp.now += 60
    assert (await call(app, sign(KEY_2))).status_code == 200
    assert idp.fetches == 2
    assert (await call(app, sign(KEY_1))).status_code == 200
    assert (await call(app, sign(KEY_2))).status_code == 200
    assert idp.fetches == 2


# -- the verifier itself ---------------------------------------------------------------------


def test_unknown_kids_refetch_at_most_once_per_interval() -> None:
    idp = Idp(KEY_1)
    verify = verifier(idp)
    assert verify(sign()) is not None
    idp.now += 60
    flood = [sign(RSAKey.generate_key(2048, parameters={"kid": f"bad-{i}"})) for i in range(2)]
    for token in flood * 10:
        assert verify(token) is None
    assert idp.fetches == 2  # the first unknown kid refetched; the other 19 did not
    idp.document = jwks(KEY_1, KEY_2)
    assert verify(sign(KEY_2)) is None  # rotated within the interval: not yet seen
    idp.now += 30
    assert verify(sign(KEY_2)) is not None
    assert idp.fetches == 3


def test_jwks_is_refreshed_when_stale_and_kept_when_the_idp_fails() -> None:
    idp = Idp(KEY_1)
    verify = verifier(idp)
    assert verify(sign()) is not None

    def down(url: str) -> dict[str, Any]:
        idp.fetches += 1
        raise httpx.ConnectError("connection refused")

    verify.fetch = down
    idp.now += 3600
    assert verify(sign(iat=int(idp.now), exp=int(idp.now) + 60)) is not None
    assert idp.fetches == 2


def test_jwks_fetch_failure_at_first_use_is_401_not_an_error() -> None:
    idp = Idp(KEY_1)
    idp.document = {"not": "a jwks"}
    assert verifier(idp)(sign()) is None
    idp.document = jwks(KEY_1)
    assert verifier(idp)(sign()) is not None


def test_leeway_allows_small_clock_skew() -> None:
    idp = Idp(KEY_1)
    verify = verifier(idp)
    assert verify(sign(exp=NOW - 10)) is not None
    assert verify(sign(nbf=NOW + 10)) is not None
    assert verify(sign(exp=NOW - 31)) is None
    strict = verifier(idp, leeway_seconds=0)
    assert strict(sign(exp=NOW - 10)) is None


def test_audience_may_be_a_list() -> None:
    verify = verifier(Idp(KEY_1))
    assert verify(sign(aud=["https://other", AUDIENCE])) is not None
    assert verify(sign(aud=["https://other"])) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("scim:read scim:write", {READ, WRITE}),
        ("scim:read", {READ}),
        ("scim:write", {READ, WRITE}),
        (["scim:read", "openid"], {READ}),
        ("scim:read,scim:write", {READ, WRITE}),
        ("openid profile", set()),
        ("https://graph.example.com/write", set()),
        ("https://graph.example.com/read api://other/scim:write", set()),
        ("read write", set()),
        ("scim.read scim.write SCIM:WRITE Scim:Read", set()),
        (["api://scim-bridge/scim.write", "scim:write/"], set()),
        ("readwrite scim:admin", set()),
        (42, set()),
        (None, set()),
    ],
)
def test_scope_mapping(value: Any, expected: set[str]) -> None:
    assert map_scopes(value) == expected


def test_scope_claim_is_configurable() -> None:
    idp = Idp(KEY_1)
    okta = verifier(idp)  # default "scope", with Okta's and Entra's "scp" as a fallback
    principal = okta(sign(scope=None, scp=["scim:read"]))
    assert principal is not None and principal.scopes == {READ}
    entra = verifier(idp, scope_claim="roles")
    principal = entra(sign(scope="scim:read", roles=["scim:write"]))
    assert principal is not None and principal.scopes == {READ, WRITE}
    assert entra(sign(scope="scim:write")) is None


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"client_id": "c", "azp": "a", "sub": "s"}, "jwt:c"),
        ({"client_id": None, "azp": "a", "sub": "s"}, "jwt:a"),
        ({"client_id": None, "sub": "s"}, "jwt:s"),
    ],
)
def test_principal_name(names: dict[str, Any], expected: str) -> None:
    principal = verifier(Idp(KEY_1))(sign(**names))
    assert principal is not None and principal.name == expected


@pytest.mark.parametrize("kind", ["pem", "jwks"])
def test_key_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"keys.{kind}"
    if kind == "pem":
        path.write_bytes(KEY_1.as_pem(private=False))
    else:
        path.write_text(json.dumps(jwks(KEY_1)))

    def no_fetch(url: str) -> dict[str, Any]:
        raise AssertionError("a key file needs no fetch")

    verify = JwtVerifier(
        jwt_settings(jwks_url=None, key_file=path), fetch=no_fetch, clock=lambda: NOW
    )
    assert verify(sign()) is not None
    assert verify(sign(ROGUE)) is None
    assert verify(sign(aud="x")) is None


def test_private_pem_key_file_is_reduced_to_its_public_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(KEY_1.as_pem(private=True))
    verify = JwtVerifier(jwt_settings(jwks_url=None, key_file=path), clock=lambda: NOW)
    assert all(not key.is_private for key in verify.file_keys)
    assert verify(sign()) is not None


@pytest.mark.parametrize(
    "overrides",
    [
        {"jwks_url": None},
        {"issuer": None},
        {"audience": None},
        {"jwks_url": None, "key_file": Path("/nonexistent/keys.pem")},
    ],
)
def test_unusable_settings_are_refused_at_startup(overrides: dict[str, Any]) -> None:
    with pytest.raises(JwtConfigError):
        JwtVerifier(jwt_settings(**overrides))


def test_garbage_never_raises() -> None:
    verify = verifier(Idp(KEY_1))
    for token in ["", ".", "..", "a.b.c", "x" * 100_000, b64({"alg": "RS256"}) + "..", "é.é.é"]:
        assert verify(token) is None
    not_an_object = base64.urlsafe_b64encode(b"[1]").decode().rstrip("=")
    assert verify(f"{not_an_object}.e30.") is None


def test_tokens_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    idp = Idp(KEY_1)
    verify = verifier(idp)
    caplog.set_level(logging.DEBUG)
    good, bad = sign(), sign(aud="x")
    assert verify(good) is not None
    assert verify(bad) is None
    assert verify(sign(KEY_2)) is None
    assert caplog.records  # rejections are logged, with a reason
    for text in (good, bad, good.split(".")[2], bad.split(".")[1]):
        assert text not in caplog.text
