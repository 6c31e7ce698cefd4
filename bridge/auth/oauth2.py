"""OAuth 2.0 client credentials (RFC 6749 §4.4) for outbound LMS calls: a cached bearer token.

authlib's httpx integration (``AsyncOAuth2Client``) talks to the token endpoint; this module
owns what authlib leaves to the caller: caching the token until its expiry minus a margin,
one token fetch at a time, and one fresh token after a 401 (a token revoked or rotated early).
``ClientCredentials`` is an ``httpx.Auth``, so any target's client can use it.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncGenerator
from collections.abc import Callable
from collections.abc import Generator
from typing import Any

import httpx

with warnings.catch_warnings():
    # authlib ≥ 1.7 prefers the httpx2 fork and warns once when it falls back to httpx, which
    # is what the bridge uses. Imported first, its "always" filter is undone with this block.
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

AUTH_METHODS = {"basic": "client_secret_basic", "post": "client_secret_post"}


class TokenError(Exception):
    """The token endpoint could not give a token: refused (permanent) or unreachable (retry)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ClientCredentials(httpx.Auth):
    """Bearer tokens from ``token_url`` for ``client_id``/``client_secret``, cached and renewed.

    ``client_auth`` is how the client authenticates to the token endpoint: ``basic`` (HTTP
    Basic, RFC 6749 §2.3.1's default) or ``post`` (form fields, as Docebo's docs show).
    """

    requires_response_body = False

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        client_auth: str = "basic",
        transport: httpx.AsyncBaseTransport | None = None,
        margin_seconds: float = 60.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client_auth not in AUTH_METHODS:
            raise ValueError(
                f"client_auth is one of {', '.join(AUTH_METHODS)}, not {client_auth!r}"
            )
        self.token_url = token_url
        self.scope = scope
        self.margin_seconds = margin_seconds
        self.clock = clock
        self.fetches = 0  # token requests made (tests, metrics)
        self._client: Any = AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method=AUTH_METHODS[client_auth],
            scope=scope,
            transport=transport,
            timeout=timeout,
        )
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lock = asyncio.Lock()

    def _valid(self) -> str | None:
        if self._token is None:
            return None
        if self._expires_at is not None and self.clock() >= self._expires_at:
            return None
        return self._token

    async def token(self) -> str:
        """The cached token, or a new one when there is none or it is about to expire."""
        token = self._valid()
        if token is not None:
            return token
        async with self._lock:
            token = self._valid()  # another task may have fetched it while we waited
            if token is not None:
                return token
            return await self._fetch()

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still ``token``, when given)."""
        if token is None or token == self._token:
            self._token = None
            self._expires_at = None

    async def _fetch(self) -> str:
        self.fetches += 1
        try:
            answer = await self._client.fetch_token(self.token_url, grant_type="client_credentials")
        except OAuthError as exc:
            detail = f": {exc.description}" if exc.description else ""
            raise TokenError(
                f"the token endpoint refused the client: {exc.error}{detail}", retryable=False
            ) from exc
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            raise TokenError(
                f"the token endpoint answered HTTP {status}",
                retryable=status >= 500 or status in (408, 429),
            ) from exc
        except httpx.TransportError as exc:
            raise TokenError(f"the token endpoint is unreachable: {exc}", retryable=True) from exc
        except ValueError as exc:  # authlib: the answer is not a JSON object
            raise TokenError(
                f"the token endpoint's answer is not usable: {exc}", retryable=True
            ) from exc
        access_token = answer.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise TokenError("the token endpoint's answer has no access_token", retryable=False)
        expires_in = answer.get("expires_in")
        self._token = access_token
        self._expires_at = None
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            # Short-lived tokens keep half their life rather than none.
            margin = min(self.margin_seconds, float(expires_in) / 2)
            self._expires_at = self.clock() + float(expires_in) - margin
        return access_token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {await self.token()}"
            yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ClientCredentials fetches tokens asynchronously: use httpx.AsyncClient")
        yield request  # pragma: no cover  (makes this a generator, as httpx expects)

    async def aclose(self) -> None:
        await self._client.aclose()
