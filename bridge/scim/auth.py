"""Who a request is: a stored bearer token, the quick-start token, or a signed JWT."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from bridge.auth.tokens import ALL_SCOPES
from bridge.auth.tokens import Principal
from bridge.auth.tokens import digest
from bridge.store import tokens
from bridge.store.engine import Database

JwtVerifier = Callable[[str], Principal | None]


class Authenticator:
    """Resolve a bearer credential to a principal; stored tokens are cached briefly by hash."""

    def __init__(
        self,
        db: Database,
        *,
        env_token: str | None = None,
        jwt: JwtVerifier | None = None,
        cache_seconds: float = 5.0,
    ) -> None:
        self.db = db
        self.env_digest = digest(env_token) if env_token else None
        self.jwt = jwt
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def cached(self, credential: str) -> tuple[bool, Principal | None]:
        """Answer from memory when possible (no thread hop, no database): (known, principal)."""
        if self.jwt is not None and credential.count(".") == 2:
            return False, None
        key = digest(credential)
        if self.env_digest is not None and hmac.compare_digest(key, self.env_digest):
            return True, Principal("BRIDGE_SCIM_TOKEN", frozenset(ALL_SCOPES))
        found = self._cache.get(key)
        if found is not None and found[0] > time.monotonic():
            return True, found[1]
        return False, None

    def __call__(self, credential: str) -> Principal | None:
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt(credential)
        key = digest(credential)
        if self.env_digest is not None and hmac.compare_digest(key, self.env_digest):
            return Principal("BRIDGE_SCIM_TOKEN", frozenset(ALL_SCOPES))
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self.db.read() as conn:
            principal = tokens.verify(conn, credential)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, principal)
        return principal
