"""Who a request is: a stored bearer token, the quick-start token, or a signed JWT."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from bridge.auth.tokens import READ
from bridge.auth.tokens import WRITE
from bridge.auth.tokens import Principal
from bridge.auth.tokens import digest
from bridge.store import tokens
from bridge.store.engine import Database

JwtVerifier = Callable[[str], Principal | None]


ENV_PRINCIPAL = Principal("BRIDGE_SCIM_TOKEN", frozenset((READ, WRITE)))
"""``BRIDGE_SCIM_TOKEN``: the token an identity provider holds reads and writes SCIM, and
nothing more; the admin page and ``/metrics`` need tokens of their own scopes."""


class Authenticator:
    """Resolve a bearer credential to a principal.

    A stored token's principal is remembered by hash for ``cache_seconds``, but every request
    still reads the token's ``revoked`` column (one unique-index point read), so a revocation by
    ``bridge tokens revoke`` or any other process holds from the next request on.
    """

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
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def cached(self, credential: str) -> tuple[bool, Principal | None]:
        """Answer without a thread hop when possible: (known, principal).

        On SQLite a remembered token is re-checked on the loop's own connection (an index read
        costs less than the hop); other databases are never read on the event loop.
        """
        if self.jwt is not None and credential.count(".") == 2:
            return False, None
        key = digest(credential)
        if self.env_digest is not None and hmac.compare_digest(key, self.env_digest):
            return True, ENV_PRINCIPAL
        found = self._cache.get(key)
        if found is None or found[0] <= time.monotonic() or not self.db.is_sqlite:
            return False, None
        with self.db.read_inline() as conn:
            active = tokens.is_active(conn, key)
        return True, self._still(key, found[1], active=active)

    def __call__(self, credential: str) -> Principal | None:
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt(credential)
        key = digest(credential)
        if self.env_digest is not None and hmac.compare_digest(key, self.env_digest):
            return ENV_PRINCIPAL
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            with self.db.read() as conn:
                active = tokens.is_active(conn, key)
            return self._still(key, cached[1], active=active)
        with self.db.read() as conn:
            principal = tokens.verify(conn, credential)
        if principal is not None and self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now + self.cache_seconds, principal)
        return principal

    def _still(self, key: str, principal: Principal, *, active: bool) -> Principal | None:
        """The remembered principal while its token is active; forgotten once it is not."""
        if active:
            return principal
        with self._lock:
            self._cache.pop(key, None)
        return None
