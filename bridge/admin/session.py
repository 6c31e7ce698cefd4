"""The admin page's session cookie and CSRF tokens: signed with HMAC-SHA256, checked in
constant time. Hand-written on ``hmac`` (itsdangerous, which Starlette's SessionMiddleware
needs, is not a dependency; the session is a few signed fields, not a store).

A session is ``<payload>.<mac>`` (base64url): the payload the JSON of who logged in (the
token's name and the SHA-256 of the token, never the token), when it ends and a random nonce.
Its CSRF token is the HMAC of that nonce: bound to the session, so a form posted from another
session (or none) is refused. The login form, before any session, carries the HMAC of a
random nonce kept in a short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta

COOKIE = "bridge_admin"
LOGIN_COOKIE = "bridge_admin_login"
LIFETIME = timedelta(hours=8)
_CONTEXT = b"bridge admin session v1"


def session_key(secret: str) -> bytes:
    """The HMAC key of sessions and CSRF tokens, derived from the server's secret."""
    return hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, text: str) -> str:
    return _b64(hmac.new(key, f"{purpose}:{text}".encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class Session:
    """Who is logged in, until when."""

    name: str
    token_digest: str
    stored: bool
    """Whether the token is a stored one (re-checked against revocation on each request)."""
    expires: datetime
    nonce: str

    @classmethod
    def start(cls, name: str, token_digest: str, *, stored: bool, now: datetime) -> Session:
        return cls(name, token_digest, stored, now + LIFETIME, secrets.token_urlsafe(16))

    def csrf(self, key: bytes) -> str:
        return _mac(key, "csrf", self.nonce)

    def cookie(self, key: bytes) -> str:
        payload = _b64(
            json.dumps(
                [self.name, self.token_digest, self.stored, self.expires.isoformat(), self.nonce],
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{_mac(key, 'session', payload)}"


def read_session(value: str | None, key: bytes, now: datetime) -> Session | None:
    """The session a cookie holds, if this server signed it and it has not expired."""
    if not value or len(value) > 4096 or value.count(".") != 1:
        return None
    payload, mac = value.split(".")
    if not hmac.compare_digest(_mac(key, "session", payload), mac):
        return None
    try:
        name, token_digest, stored, expires, nonce = json.loads(_unb64(payload))
        session = Session(
            str(name), str(token_digest), bool(stored), datetime.fromisoformat(expires), str(nonce)
        )
    except (ValueError, TypeError, binascii.Error):
        return None  # signed by us yet unreadable: an older format; log in again
    return session if session.expires > now else None


def login_nonce() -> str:
    return secrets.token_urlsafe(16)


def login_csrf(key: bytes, nonce: str) -> str:
    return _mac(key, "login", nonce)


def flash_mac(key: bytes, kind: str, text: str) -> str:
    """The signature of a message shown after a redirect (``?notice=…&sig=…``): the page
    shows only the messages it wrote, never one a link was crafted with."""
    return _mac(key, f"flash-{kind}", text)


def same(expected: str, given: str | None) -> bool:
    """Whether a submitted token is the expected one (constant time)."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
