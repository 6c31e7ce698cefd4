"""Signed-JWT bearer tokens: verified against a JWKS URL or a key file, mapped to a Principal.

Uses joserfc, the JOSE library authlib's own ``authlib.jose`` is deprecated in favour of.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jwk import Key
from joserfc.jwk import OKPKey
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from bridge.auth.tokens import ALL_SCOPES
from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.auth.tokens import Principal
from bridge.config import JwtSettings

log = logging.getLogger("bridge.auth.jwt")

#: Asymmetric signature algorithms only: never ``none``, never HMAC (whose "key" would be the
#: public key an attacker can read), never the deprecated ``EdDSA`` name (use ``Ed25519``).
ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "Ed25519",
        "Ed448",
    }
)
_KEY_TYPES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
    "RSA": RSAKey,
    "EC": ECKey,
    "OKP": OKPKey,
}
_REGISTRY = JWSRegistry(algorithms=sorted(ALGORITHMS))
MAX_TOKEN_BYTES = 16_384
_NAME_CLAIMS = ("client_id", "azp", "sub")

Fetch = Callable[[str], dict[str, Any]]
Clock = Callable[[], float]


class JwtConfigError(ValueError):
    """The JWT settings or key material cannot be used."""


def fetch_jwks(url: str) -> dict[str, Any]:
    """GET a JWKS document (the default ``fetch``)."""
    response = httpx.get(url, timeout=5.0, headers={"Accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict):
        raise ValueError("the JWKS document is not a JSON object")
    return document


def import_jwks(document: Any) -> list[Key]:
    """The usable public signing keys of a JWKS document; symmetric or malformed keys skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS document is a JSON object with a 'keys' list")
    keys: list[Key] = []
    for item in document["keys"]:
        if not isinstance(item, dict):
            continue
        key_class = _KEY_TYPES.get(str(item.get("kty")))
        if key_class is None or item.get("use", "sig") != "sig":
            continue
        public = {k: v for k, v in item.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            keys.append(key_class.import_key(public))
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("skipping a JWKS key (kid %r): %s", item.get("kid"), exc)
    return keys


def import_pem(data: bytes) -> Key:
    """A PEM public key (RSA, EC or OKP); a private key is reduced to its public part."""
    for key_class in _KEY_TYPES.values():
        try:
            key = key_class.import_key(data)
        except (JoseError, ValueError, TypeError):
            continue
        return key_class.import_key(key.as_dict(private=False))
    raise ValueError("not a PEM RSA, EC or OKP key")


def load_key_file(path: Path) -> list[Key]:
    """Keys of a PEM file or a JWKS JSON file."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"{"):
        return import_jwks(json.loads(data))
    return [import_pem(data)]


def map_scopes(value: Any) -> frozenset[str]:
    """The ``scim:read`` and ``scim:write`` scopes of a claim, matched exactly; write implies read.

    Nothing else is mapped: ``https://graph.example.com/write`` is another API's scope, and a
    suffix or case-insensitive match would grant it ``scim:write`` here.
    """
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list):
        items = [item for item in value if isinstance(item, str)]
    else:
        return frozenset()
    scopes = {item for item in items if item in ALL_SCOPES}
    if WRITE in scopes:
        scopes.add(READ)
    return frozenset(scopes)


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", 1)[0]
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(header, dict):
        raise ValueError("the JWT header is not a JSON object")
    return header


class _Rejected(Exception):
    """Why a token is not accepted (logged without the token)."""


class JwtVerifier:
    """``verifier(token)`` is the Principal a valid signed JWT stands for, or None; never raises.

    Keys come from ``settings.key_file`` (read once) and/or ``settings.jwks_url`` (fetched on
    first use, refreshed after ``max_age_seconds``, and refetched when a token names an unknown
    ``kid`` — but at most once per ``min_refetch_seconds``, so bad kids cannot hammer the IdP).
    """

    def __init__(
        self,
        settings: JwtSettings,
        *,
        fetch: Fetch = fetch_jwks,
        clock: Clock = time.time,
        min_refetch_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
    ) -> None:
        if not settings.enabled:
            raise JwtConfigError("JWT auth needs BRIDGE_JWT_JWKS_URL or BRIDGE_JWT_KEY_FILE")
        if not settings.issuer or not settings.audience:
            # An IdP's signing keys are shared by all its tenants and apps: without both
            # checks any token that IdP signs for anyone would be accepted here.
            raise JwtConfigError("JWT auth needs BRIDGE_JWT_ISSUER and BRIDGE_JWT_AUDIENCE")
        self.settings = settings
        self.fetch = fetch
        self.clock = clock
        self.min_refetch_seconds = min_refetch_seconds
        self.max_age_seconds = max_age_seconds
        self.file_keys: list[Key] = []
        if settings.key_file is not None:
            try:
                self.file_keys = load_key_file(settings.key_file)
            except (OSError, ValueError, JoseError) as exc:
                raise JwtConfigError(
                    f"cannot read JWT keys from {settings.key_file}: {exc}"
                ) from exc
            if not self.file_keys:
                raise JwtConfigError(f"no usable signing key in {settings.key_file}")
        self._url_keys: list[Key] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._fetch_lock = threading.Lock()

    def __call__(self, token: str) -> Principal | None:
        try:
            return self._verify(token)
        except _Rejected as exc:
            log.info("JWT rejected: %s", exc)
        except Exception as exc:  # a malformed token must be a 401, never a 500
            log.info("JWT rejected: %s", type(exc).__name__)
        return None

    # -- keys ------------------------------------------------------------------------------

    def _refresh(self, *, reason: str) -> None:
        """Fetch the JWKS unless one was attempted within ``min_refetch_seconds``."""
        url = self.settings.jwks_url
        if url is None:
            return
        with self._fetch_lock:
            now = self.clock()
            if (
                self._attempted_at is not None
                and 0 <= now - self._attempted_at < self.min_refetch_seconds
            ):
                return
            self._attempted_at = now
            try:
                keys = import_jwks(self.fetch(url))
            except Exception as exc:
                log.warning("cannot fetch the JWKS at %s (%s): %s", url, reason, exc)
                return
            if not keys:
                log.warning("the JWKS at %s has no usable signing key; keeping the old keys", url)
                return
            self._url_keys = keys
            self._fetched_at = now
            log.info("fetched %d signing keys from %s (%s)", len(keys), url, reason)

    def _candidates(self, kid: str | None, key_type: str) -> list[Key]:
        keys = [k for k in [*self.file_keys, *self._url_keys] if k.key_type == key_type]
        if kid is None:
            return keys
        named = [k for k in keys if k.kid == kid]
        # A PEM key has no kid of its own: it verifies tokens whatever kid they carry.
        return named or [k for k in self.file_keys if k.key_type == key_type and k.kid is None]

    def keys_for(self, kid: str | None, alg: str) -> list[Key]:
        key_type = _REGISTRY.algorithms[alg].key_type
        if self.settings.jwks_url is not None:
            now = self.clock()
            if self._fetched_at is None or now - self._fetched_at >= self.max_age_seconds:
                self._refresh(reason="first use" if self._fetched_at is None else "expired")
        found = self._candidates(kid, key_type)
        if not found and self.settings.jwks_url is not None:
            self._refresh(reason=f"unknown kid {kid!r}")
            found = self._candidates(kid, key_type)
        return [k for k in found if k.alg in (None, alg)]

    # -- tokens ----------------------------------------------------------------------------

    def _verify(self, token: str) -> Principal | None:
        if len(token) > MAX_TOKEN_BYTES:
            raise _Rejected("the token is too long")
        try:
            header = _header(token)
        except ValueError as exc:
            raise _Rejected("the JWT header is not valid") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise _Rejected(f"algorithm {str(alg)[:20]!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _Rejected("the kid is not a string")
        keys = self.keys_for(kid, alg)
        if not keys:
            raise _Rejected(f"no {alg} key with kid {str(kid)[:80]!r}")
        decoded = None
        for key in keys[:8]:
            try:
                decoded = jwt.decode(token, key, algorithms=[alg], registry=_REGISTRY)
                break
            except JoseError:
                continue
        if decoded is None:
            raise _Rejected("bad signature")
        claims = decoded.claims
        self._check_claims(claims)
        return self._principal(claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()),
            leeway=self.settings.leeway_seconds,
            iss={"essential": True, "value": str(self.settings.issuer)},
            aud={"essential": True, "value": str(self.settings.audience)},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise _Rejected(f"{exc.error}: {exc.description}") from exc

    def _principal(self, claims: dict[str, Any]) -> Principal:
        claim = self.settings.scope_claim
        value = claims.get(claim)
        if value is None and claim == "scope":
            value = claims.get("scp")  # Okta and Entra name the standard claim "scp"
        scopes = map_scopes(value)
        if not scopes:
            raise _Rejected(f"no scim:read or scim:write in the {claim!r} claim")
        for name_claim in _NAME_CLAIMS:
            name = claims.get(name_claim)
            if isinstance(name, str) and name:
                return Principal(f"jwt:{name}"[:255], scopes)
        raise _Rejected("the token has no client_id, azp or sub")
