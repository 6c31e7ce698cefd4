"""The credentials of a ``rest`` (or ``scim``) target as an ``httpx.Auth``: bearer token,
basic, or OAuth 2.0 client credentials (``bridge.auth.oauth2``), as its ``auth`` option says."""

from __future__ import annotations

from collections.abc import Generator
from collections.abc import Mapping
from urllib.parse import urljoin

import httpx

from bridge.auth.oauth2 import ClientCredentials
from bridge.targets.rest_spec import AUTH_CREDENTIALS
from bridge.targets.rest_spec import AuthSpec
from bridge.targets.rest_spec import RestConfigError


class _HeaderToken(httpx.Auth):
    def __init__(self, header: str, value: str) -> None:
        self.header, self.value = header, value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self.value
        yield request


def build_auth(
    auth: AuthSpec,
    credentials: Mapping[str, str],
    base_url: str,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    name: str = "",
) -> httpx.Auth | None:
    """The httpx.Auth an ``auth`` spec describes, with the target's credentials."""
    needed = [key for key in AUTH_CREDENTIALS[auth.type] if not credentials.get(key)]
    if needed:
        raise RestConfigError(
            name, [f"auth {auth.type} needs the credential(s) {', '.join(needed)}"]
        )
    if auth.type == "bearer":
        value = f"{auth.prefix} {credentials['token']}".strip()
        return _HeaderToken(auth.header, value)
    if auth.type == "basic":
        return httpx.BasicAuth(credentials["username"], credentials.get("password", ""))
    if auth.type == "oauth2":
        assert auth.token_url is not None
        return ClientCredentials(
            urljoin(base_url.rstrip("/") + "/", auth.token_url.lstrip("/"))
            if not auth.token_url.startswith(("http://", "https://"))
            else auth.token_url,
            credentials["client_id"],
            credentials["client_secret"],
            scope=auth.scope,
            client_auth=auth.client_auth,
            transport=transport,
        )
    return None
