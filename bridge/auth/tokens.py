"""Opaque bearer tokens: generated once, stored only as a SHA-256 hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

READ = "scim:read"
WRITE = "scim:write"
ADMIN = "admin"
"""The admin page (``/admin``): its views and its actions (retry, skip, approve, reject)."""
METRICS = "metrics"
"""A Prometheus scrape of ``/metrics``, and nothing else."""
ALL_SCOPES = (READ, WRITE, ADMIN, METRICS)
_SHORT = {"read": READ, "write": WRITE, "admin": ADMIN, "metrics": METRICS}
TOKEN_PREFIX = "brg_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the journal's actor, and what it may do."""

    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def generate() -> str:
    """A new random token (256 bits), shown once to the admin who creates it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def matches(token: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(token), stored_digest)


def parse_scopes(text: str) -> frozenset[str]:
    """``read`` / ``write`` (or the full ``scim:`` names), ``admin``, ``metrics``; write implies
    read. The admin and metrics scopes are separate: neither reads or writes SCIM."""
    scopes: set[str] = set()
    for item in text.replace(",", " ").split():
        name = _SHORT.get(item, item)
        if name not in ALL_SCOPES:
            raise ValueError(f"unknown scope {item!r}: use read, write, admin or metrics")
        scopes.add(name)
    if WRITE in scopes:
        scopes.add(READ)
    return frozenset(scopes)
