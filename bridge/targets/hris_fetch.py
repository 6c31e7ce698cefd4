"""Completing a thin HR webhook event (an id only) from the HRIS's API (a feed's ``fetch:``).

``GET fetch.url`` with ``{externalId}`` filled in, a bearer token from the environment
variable ``fetch.token`` names; the answer is the person's HR record (a JSON object, or one
under ``data``, as the webhook's ``data`` would be).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO
from typing import Any
from urllib.parse import quote

import httpx

from bridge.rules.feeds import Feed

TIMEOUT_SECONDS = 10.0


class FetchError(Exception):
    """The HRIS did not answer with the record: ``retryable`` when asking later may work."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def record_url(feed: Feed, external_id: str) -> str:
    """The feed's ``fetch.url`` for one person (the id escaped as a path segment)."""
    return str(feed.fetch_url).replace("{externalId}", quote(external_id, safe=""))


def record_of(answer: Any) -> dict[str, Any]:
    """The HR record in an HRIS answer: the object itself, or its ``data`` object."""
    if isinstance(answer, dict) and isinstance(answer.get("data"), dict):
        return dict(answer["data"])
    if isinstance(answer, dict):
        return dict(answer)
    raise FetchError("the HRIS answered something other than a JSON object", retryable=False)


def bearer(variable: str | None, env: Mapping[str, str], key: str) -> dict[str, str]:
    """The ``Authorization`` header of the token the environment variable ``variable`` (a
    feed's ``key``) holds; none without a variable; FetchError when it is not set."""
    if not variable:
        return {}
    token = env.get(variable)
    if not token:
        raise FetchError(f"{variable} is not set ({key})", retryable=False)
    return {"Authorization": f"Bearer {token}"}


class HrisFetcher:
    """Reads HR records from the feeds' HRIS APIs over one HTTP client."""

    def __init__(self, client: httpx.AsyncClient, env: Mapping[str, str]) -> None:
        self.client = client
        self.env = env

    async def fetch(self, feed: Feed, external_id: str) -> dict[str, Any]:
        """The person's record; FetchError when the HRIS cannot give it."""
        if not feed.fetch_url:
            raise FetchError(f"feed {feed.name!r} declares no fetch.url", retryable=False)
        headers = {"Accept": "application/json"}
        headers.update(bearer(feed.fetch_token, self.env, "fetch.token"))
        url = record_url(feed, external_id)
        try:
            response = await self.client.get(url, headers=headers, timeout=TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {exc}", retryable=True) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise FetchError(f"GET {url}: {response.status_code}", retryable=True)
        if response.status_code != 200:
            raise FetchError(f"GET {url}: {response.status_code}", retryable=False)
        try:
            answer = response.json()
        except ValueError as exc:
            raise FetchError(f"GET {url}: the answer is not JSON", retryable=False) from exc
        return record_of(answer)


EXPORT_TIMEOUT = httpx.Timeout(30.0, read=300.0)
"""An export is large: 30 s to connect, up to 5 minutes between two chunks."""


async def download_export(
    url: str, token_variable: str | None, dest: IO[bytes], env: Mapping[str, str]
) -> int:
    """Stream the feed's full export from ``url`` into ``dest`` (never held whole in memory),
    with the bearer token the environment variable ``token_variable`` holds; the bytes
    written. FetchError (with the HTTP status) when the HRIS does not give it."""
    headers = {"Accept": "text/csv, application/x-ndjson, application/jsonl, */*"}
    headers.update(bearer(token_variable, env, "export.token"))
    written = 0
    async with httpx.AsyncClient(timeout=EXPORT_TIMEOUT, follow_redirects=True) as client:
        try:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    retryable = response.status_code >= 500 or response.status_code == 429
                    raise FetchError(
                        f"GET {url}: {response.status_code} {response.reason_phrase}",
                        retryable=retryable,
                    )
                async for chunk in response.aiter_bytes(1 << 20):
                    dest.write(chunk)
                    written += len(chunk)
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {exc}", retryable=True) from exc
    return written
