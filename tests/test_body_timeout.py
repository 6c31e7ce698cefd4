"""A request body must arrive within ``body_timeout_seconds``: else 408, and the connection closes.

A body shorter than its ``Content-Length`` used to hold its connection (and a worker's request
slot) for ever; a client that hung up mid-upload was logged as an unhandled error with a
traceback. These calls go to the ASGI app directly, with a hand-made ``receive``: httpx cannot
send a body shorter than the length it announces, nor hang up half way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import Message
from starlette.types import Receive

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store.engine import Database
from tests.conftest import SCIM_JSON
from tests.conftest import TOKEN
from tests.conftest import free_port
from tests.conftest import user_payload

BODY_TIMEOUT = 0.3
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


@dataclass
class Answer:
    """What the app sent back through ``send``."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_request(
    app: Starlette, method: str, path: str, receive: Receive, *, length: int | None = None
) -> Answer:
    """Call the app as a server would, with the client's ``receive``; ``length``: the
    ``Content-Length`` the client announces."""
    headers = [
        (b"host", b"bridge.test"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", SCIM_JSON.encode()),
    ]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("bridge.test", 80),
    }
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        start["status"],
        {k.decode().lower(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


def client_sending(*chunks: bytes, then: Callable[[], Awaitable[Message]]) -> Receive:
    """A client that sends ``chunks`` (more to come after each), then does ``then``."""
    pending = list(chunks)

    async def receive() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": True}
        return await then()

    return receive


async def stall() -> Message:
    await asyncio.Event().wait()  # the rest of the body never comes
    raise AssertionError("unreachable")


async def hang_up() -> Message:
    return {"type": "http.disconnect"}


@pytest.fixture
def app(provisioner: Provisioner, catalog: Catalog, settings: Settings, db: Database) -> Starlette:
    timed = settings.model_copy(update={"body_timeout_seconds": BODY_TIMEOUT})
    return create_app(provisioner, catalog, timed, Authenticator(db, env_token=TOKEN))


async def test_a_body_shorter_than_its_content_length_is_408_and_closes_the_connection(
    app: Starlette,
) -> None:
    started = time.monotonic()
    answer = await asyncio.wait_for(
        asgi_request(app, "POST", "/scim/v2/Users", client_sending(b'{"schemas":', then=stall)),
        timeout=5,
    )
    elapsed = time.monotonic() - started
    assert answer.status == 408
    assert answer.headers["content-type"].split(";")[0] == SCIM_JSON
    assert answer.headers["connection"] == "close"
    assert answer.json() == {
        "schemas": [ERROR],
        "status": "408",
        "detail": f"the request body did not arrive within {BODY_TIMEOUT:g} s",
    }
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 1


async def test_a_body_sent_in_time_is_not_cut_short(app: Starlette) -> None:
    body = json.dumps(user_payload("bjensen")).encode()

    async def last_chunk() -> Message:
        await asyncio.sleep(BODY_TIMEOUT / 3)
        return {"type": "http.request", "body": body[10:], "more_body": False}

    receive = client_sending(body[:10], then=last_chunk)
    answer = await asgi_request(app, "POST", "/scim/v2/Users", receive, length=len(body))
    assert answer.status == 201, answer.body
    assert "connection" not in answer.headers


async def test_a_client_gone_mid_upload_is_one_log_line_without_traceback(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    receive = client_sending(b'{"schemas": ["urn:ietf:params:scim:', then=hang_up)
    answer = await asgi_request(app, "POST", "/scim/v2/Users", receive, length=4096)
    assert answer.status == 499  # logged as nginx does; the client is not there to read it
    assert [r for r in caplog.records if r.exc_info] == []
    assert "unhandled error" not in caplog.text
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1
    assert gone[0].levelno in (logging.INFO, logging.WARNING)


@pytest.fixture
def served(app: Starlette) -> Iterator[int]:
    """The app on a real port (uvicorn, in a thread of this process)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(timeout=5)


def test_uvicorn_answers_408_and_frees_the_connection(served: int) -> None:
    head = (
        "POST /scim/v2/Users HTTP/1.1\r\n"
        "Host: bridge.test\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        f"Content-Type: {SCIM_JSON}\r\n"
        "Content-Length: 4096\r\n\r\n"
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", served), timeout=3) as sock:
        sock.sendall(head.encode() + b'{"schemas":')
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
    assert time.monotonic() - started < BODY_TIMEOUT + 1.5
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408 ")
    assert b"\r\nconnection: close\r\n" in rest.lower()
