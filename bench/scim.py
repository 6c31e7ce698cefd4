#!/usr/bin/env python
"""Side-by-side SCIM benchmark: the bridge vs scim2-server vs an empty Starlette endpoint.

One run starts every server as a subprocess on a free 127.0.0.1 port, drives the same
requests at each with a lean HTTP/1.1 keep-alive client of its own (``Connection``: one TCP
connection per worker, ~40 µs of client CPU a request where httpx.AsyncClient took ~1.5 ms),
prints one table and writes the numbers to ``bench/results/scim-<timestamp>.json``, then
stops every server it started.

Servers:

* ``bridge`` — ``bridge serve`` on a fresh SQLite file in a temp dir; ``bridge-w2`` (and
  one per ``--bridge-workers`` value N > 1) — ``bridge serve --workers N`` on a SQLite file of
  its own, in phases 1-2 only;
* ``bridge-pg`` (``bridge-pg-w2``…) — the same on scratch PostgreSQL databases
  (``--postgres URL``), created and dropped by this script;
* ``scim2-server`` — scim2-server's ASGI application over its in-memory storage with the
  default User/Group resource types and no auth, served by uvicorn like the bridge
  (``--scim2-cli`` runs its stock ``scim2-server`` CLI instead: wsgiref, HTTP/1.0);
* ``ceiling`` — a Starlette app under uvicorn answering every request with a small fixed
  JSON body (201 for POST, 200 otherwise): what the client + uvicorn + Starlette cost alone.

Phases (see README.md): POST users; GET ``userName eq``; GET ``emails[type eq "work" and
value eq …]`` at N users and (bridge only) at 100k users; group member add/remove at 1k, 10k
and 100k members. Throughput phases run at ``--concurrency``; the latency phases (valuePath,
member add/remove) at ``--latency-concurrency`` (1 by default), since their targets are
per-request latencies, not queueing.

Usage: ``.venv/bin/python bench/scim.py [--users N] [--concurrency C] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import Literal
from typing import cast
from urllib.parse import quote
from urllib.parse import urlencode
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
TOKEN = "bench"
SCIM_JSON = "application/scim+json"

BRIDGE = "bridge"
BRIDGE_PG = "bridge-pg"
SCIM2 = "scim2-server"
CEILING = "ceiling"


# ---------------------------------------------------------------------------------------------
# The two servers this file serves itself: `python bench/scim.py _serve {scim2,ceiling} PORT`
# ---------------------------------------------------------------------------------------------


def ceiling_app() -> Any:
    """An empty Starlette endpoint: a small fixed JSON body for every request."""
    import itertools

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    counter = itertools.count(1)
    listing = {
        "schemas": [LIST_SCHEMA],
        "totalResults": 0,
        "itemsPerPage": 0,
        "startIndex": 1,
        "Resources": [],
    }

    async def answer(request: Request) -> JSONResponse:
        if request.method in ("POST", "PUT", "PATCH"):
            await request.body()
        if request.method == "POST":
            return JSONResponse({"id": f"c{next(counter)}"}, status_code=201)
        return JSONResponse(listing)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", answer, methods=methods)])


def scim2_app() -> Any:
    """scim2-server: its ASGI application, in-memory storage, RFC 7643 User/Group, no auth."""
    from scim2_server.applications.asgi import ASGIApplication
    from scim2_server.memory import AsyncInMemoryStorage
    from scim2_server.utils import load_default_provider

    return ASGIApplication(AsyncInMemoryStorage(), load_default_provider())


def serve_main(kind: str, port: int) -> None:
    import uvicorn

    app = scim2_app() if kind == "scim2" else ceiling_app()
    # The same uvicorn settings as `bridge serve` (auto loop/http: uvloop + httptools).
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------------------------------------
# Fast seeding of the bridge: `python bench/scim.py _seed URL TEMPLATE_ID NAMES_FILE OUT_FILE`,
# run in the bridge's source tree; clones the rows of one user the bridge created itself.
# ---------------------------------------------------------------------------------------------


def seed_sql_main(url: str, template_id: str, names_file: str, out_file: str) -> None:
    """Insert users by cloning the rows of a template user, with its name swapped.

    The template was POSTed through the API, so its ``resources`` row and the rows of every
    table keyed by ``resource_pk`` (the attribute-value index) are exactly what the bridge
    writes; each clone gets a new pk and id, and every string in it (document, folded keys)
    has the template's name replaced. The journal is not written. The bridge's own table
    metadata is used, so new columns are copied along.
    """
    import uuid

    from sqlalchemy import func
    from sqlalchemy import insert
    from sqlalchemy import select
    from sqlalchemy import text

    from bridge.store.engine import connect  # type: ignore[import-not-found,unused-ignore]
    from bridge.store.tables import metadata  # type: ignore[import-not-found,unused-ignore]

    names: list[str] = json.loads(Path(names_file).read_text())
    db = connect(url)
    resources = metadata.tables["resources"]
    pk_name = next(iter(resources.primary_key.columns)).name
    children = [t for t in metadata.sorted_tables if t is not resources and "resource_pk" in t.c]
    with db.read() as conn:
        template = dict(
            conn.execute(select(resources).where(resources.c.id == template_id)).mappings().one()
        )
        kids = {
            t.name: [
                dict(r)
                for r in conn.execute(
                    select(t).where(t.c.resource_pk == template[pk_name])
                ).mappings()
            ]
            for t in children
        }
    old = str(template["name"]).rpartition(".")[2]  # "user000000"

    def pairs_of(new: str) -> tuple[tuple[str, str], ...]:
        return ((old, new), (old.title(), new.title()))

    def swap(value: Any, pairs: tuple[tuple[str, str], ...]) -> Any:
        if isinstance(value, str):
            for a, b in pairs:
                value = value.replace(a, b)
            return value
        if isinstance(value, dict | list):
            return json.loads(swap(json.dumps(value), pairs))
        return value

    ids: dict[str, str] = {}
    batch = 5000
    for start in range(0, len(names), batch):
        part = names[start : start + batch]
        with db.write() as conn:
            base = int(conn.execute(select(func.max(resources.c[pk_name]))).scalar() or 0) + 1
            rows: list[dict[str, Any]] = []
            child_rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in children}
            for j, name in enumerate(part):
                pairs = pairs_of(name.rpartition(".")[2])
                pk = base + j
                row = {k: swap(v, pairs) for k, v in template.items()}
                row[pk_name] = pk
                row["id"] = str(uuid.uuid4())
                rows.append(row)
                ids[name] = row["id"]
                for t in children:
                    for kid in kids[t.name]:
                        child_rows[t.name].append(
                            {**{k: swap(v, pairs) for k, v in kid.items()}, "resource_pk": pk}
                        )
            conn.execute(insert(resources), rows)
            for t in children:
                if child_rows[t.name]:
                    conn.execute(insert(t), child_rows[t.name])
    if db.dialect == "postgresql":
        with db.write() as conn:
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('resources', '{pk_name}'), "
                    f"(SELECT max({pk_name}) FROM resources))"
                )
            )
    db.dispose()
    Path(out_file).write_text(json.dumps(ids))


# ---------------------------------------------------------------------------------------------
# The load client: a lean HTTP/1.1 keep-alive connection on an asyncio.Protocol
# ---------------------------------------------------------------------------------------------
#
# httpx.AsyncClient costs ~1.5 ms of client CPU per request; on a 2-core machine that caps the
# client near 600 req/s and takes CPU from the server under test, so throughput ratios
# measured the client. This one costs a few tens of µs: request bytes built before the clock
# starts, one write per request, the answer parsed from one buffer (status line and headers up
# to CRLFCRLF, then the body by Content-Length, chunked, or up to the close).


class HttpError(Exception):
    """A malformed, cut-short or timed-out HTTP exchange."""


class Headers:
    """Response headers; lookups ignore case (repeated fields are joined with ``, ``)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields  # lower-case names

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields.items())

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


class Response:
    """What the checks look at: ``status_code``, ``headers``, ``content``, ``text``, ``json()``."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def encode_request(
    method: str, target: str, authority: str, extra: str, body: bytes | None
) -> bytes:
    """The bytes of one request; ``extra`` is ready-made header lines (``Name: v\\r\\n``)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n{extra}"
    if body is not None:
        head += f"Content-Type: {SCIM_JSON}\r\nContent-Length: {len(body)}\r\n"
    elif method in ("POST", "PUT", "PATCH"):
        head += "Content-Length: 0\r\n"
    raw = (head + "\r\n").encode("latin-1")
    return raw + body if body else raw


_HEAD, _LENGTH, _CHUNKED, _TO_CLOSE = range(4)
MAX_HEAD = 64 * 1024


class _Wire(asyncio.Protocol):
    """One TCP connection and the parser of the answers on it; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.received = False  # any byte of the current answer
        self.head_only = False
        self.state = _HEAD
        self.status = 0
        self.headers = Headers({})
        self.keep_alive = True
        self.need = 0
        self.body = bytearray()

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: a stray byte means the framing is lost
            self.close()
            return
        self.received = True
        self.buffer += data
        try:
            self._parse()
        except (HttpError, ValueError) as exc:
            self._fail(HttpError(f"bad response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.waiter is None or self.waiter.done():
            return
        if self.state == _TO_CLOSE:
            self._complete(bytes(self.buffer))
        else:
            reason = f": {exc!r}" if exc else ""
            where = "before the answer" if not self.received else "mid-answer"
            self.waiter.set_exception(ConnectionResetError(f"server closed {where}{reason}"))

    # requests -------------------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def start(self, raw: bytes, head_only: bool) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.received = False
        self.head_only = head_only
        self.state = _HEAD
        self.buffer.clear()
        self.transport.write(raw)
        return self.waiter

    def timed_out(self, seconds: float) -> None:
        self._fail(TimeoutError(f"no complete answer in {seconds:g} s"))
        self.close()

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _complete(self, content: bytes) -> None:
        waiter, self.waiter = self.waiter, None
        if not self.keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self.status, self.headers, content))

    def _parse(self) -> None:
        buf = self.buffer
        while self.waiter is not None:
            if self.state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HttpError("response head over 64 KiB")
                    return
                lines = bytes(buf[:end]).split(b"\r\n")
                del buf[: end + 4]
                version, _, rest = lines[0].partition(b" ")
                if not version.startswith(b"HTTP/1.") or len(rest) < 3:
                    raise HttpError(f"status line {lines[0][:80]!r}")
                status = int(rest[:3])
                fields: dict[str, str] = {}
                for line in lines[1:]:
                    name, colon, value = line.partition(b":")
                    if not colon:
                        raise HttpError(f"header line {line[:80]!r}")
                    key = name.strip().lower().decode("latin-1")
                    text = value.strip().decode("latin-1")
                    fields[key] = f"{fields[key]}, {text}" if key in fields else text
                if 100 <= status < 200:
                    continue  # an interim answer: the real one follows
                self.status, self.headers = status, Headers(fields)
                connection = fields.get("connection", "").lower()
                if version == b"HTTP/1.0":
                    self.keep_alive = "keep-alive" in connection
                else:
                    self.keep_alive = "close" not in connection
                length = fields.get("content-length")
                if self.head_only or status in (204, 304):
                    self._complete(b"")
                elif "chunked" in fields.get("transfer-encoding", "").lower():
                    self.state, self.need = _CHUNKED, -1
                    self.body = bytearray()
                elif length is not None:
                    self.state, self.need = _LENGTH, int(length)
                else:
                    self.state, self.keep_alive = _TO_CLOSE, False
                    return
            elif self.state == _LENGTH:
                if len(buf) < self.need:
                    return
                content = bytes(buf[: self.need])
                del buf[: self.need]
                self._complete(content)
            elif self.state == _CHUNKED:
                if self.need < 0:  # at a chunk-size line
                    eol = buf.find(b"\r\n")
                    if eol < 0:
                        return
                    size = int(bytes(buf[:eol]).split(b";", 1)[0].strip(), 16)
                    if size == 0:  # last chunk: optional trailers, then an empty line
                        if buf[eol + 2 : eol + 4] == b"\r\n":
                            del buf[: eol + 4]
                        else:
                            end = buf.find(b"\r\n\r\n", eol)
                            if end < 0:
                                return
                            del buf[: end + 4]
                        self._complete(bytes(self.body))
                        continue
                    del buf[: eol + 2]
                    self.need = size
                if len(buf) < self.need + 2:
                    return
                if buf[self.need : self.need + 2] != b"\r\n":
                    raise HttpError("chunk not followed by CRLF")
                self.body += buf[: self.need]
                del buf[: self.need + 2]
                self.need = -1
            else:  # _TO_CLOSE: the body ends when the server closes (connection_lost)
                return


class Connection:
    """One keep-alive HTTP/1.1 connection to ``host:port``, reopened when the server closes it.

    A request on a reused connection that the server closed before answering any byte (an
    idle keep-alive timeout racing the request) is sent once more on a new connection; any
    other failure is the caller's error.
    """

    def __init__(self, host: str, port: int, timeout: float = 600.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.wire: _Wire | None = None
        self.connects = 0
        self.resends = 0

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        _, wire = await loop.create_connection(_Wire, self.host, self.port)
        self.connects += 1
        self.wire = wire
        return wire

    async def request(self, raw: bytes, head_only: bool = False) -> Response:
        """Send ``raw`` (from ``encode_request``), return the answer."""
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            wire = self.wire
            reused = wire is not None and not wire.closed
            if wire is None or wire.closed:
                wire = await self._connect()
            waiter = wire.start(raw, head_only)
            timer = loop.call_later(self.timeout, wire.timed_out, self.timeout)
            try:
                return await waiter
            except ConnectionResetError:
                wire.close()
                if attempt or not reused or wire.received:
                    raise
                self.resends += 1
            except BaseException:  # a timeout, a bad answer, a cancellation: start afresh
                wire.close()
                raise
            finally:
                timer.cancel()
                wire.waiter = None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()
            self.wire = None

    @property
    def local_port(self) -> int | None:
        """The client side's port of the open connection, if any."""
        if self.wire is None or self.wire.closed or self.wire.transport is None:
            return None
        name = self.wire.transport.get_extra_info("sockname")
        return int(name[1]) if name else None


# ---------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM if the benchmark dies, so no server outlives it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stat(pid: int | str) -> list[bytes] | None:
    """Fields 3… of ``/proc/PID/stat`` (proc(5)): state, ppid, pgrp, …; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def _ticks(fields: list[bytes]) -> int:
    """utime + stime + cutime + cstime (fields 14–17): CPU ticks incl. reaped children."""
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def _proc_stats() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, CPU ticks incl. reaped children) of every process."""
    out: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is not None:  # else gone meanwhile
            out[int(entry.name)] = (int(fields[1]), int(fields[2]), _ticks(fields))
    return out


def process_tree(root: int) -> tuple[list[int], int]:
    """``root`` and its descendants (none if ``root`` is gone) and their CPU ticks."""
    stats = _proc_stats()
    if root not in stats:
        return [], 0
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tree, ticks, todo = [], 0, [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        ticks += stats[pid][2]
        todo.extend(children.get(pid, ()))
    return tree, ticks


_TREES: dict[int, tuple[float, list[int]]] = {}  # root -> (when scanned, tree)
TREE_RESCAN_S = 1.0


def tree_cpu(root: int) -> float | None:
    """CPU seconds of ``root`` and all its descendants, or None if ``root`` is gone.

    The tree is found by a scan of all of ``/proc`` (~1 ms), redone at most every
    ``TREE_RESCAN_S`` or when one of its processes is gone; in between only its members'
    ``stat`` files are read, so the per-request readings of the latency phases stay cheap.
    """
    cached = _TREES.get(root)
    if cached is not None and time.monotonic() - cached[0] < TREE_RESCAN_S:
        total = 0
        for pid in cached[1]:
            fields = _stat(pid)
            if fields is None:
                break  # a member is gone: rescan
            total += _ticks(fields)
        else:
            return total / os.sysconf("SC_CLK_TCK")
    tree, ticks = process_tree(root)
    _TREES[root] = (time.monotonic(), tree)
    return ticks / os.sysconf("SC_CLK_TCK") if tree else None


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(entry.name)
        if fields is not None and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


@dataclass
class Server:
    name: str
    kind: str  # bridge | scim2 | ceiling
    cmd: list[str]
    env: dict[str, str]
    port: int
    prefix: str  # path of the SCIM root
    health: str
    log_path: Path
    cwd: Path = ROOT
    durable: str = "n/a"
    max_group: int = 10**9
    workers: int = 1  # server processes (bridge: `bridge serve --workers N`)
    family: str = ""  # bridge variants of one database kind share it: bridge, bridge-pg
    proc: subprocess.Popen[bytes] | None = None
    users: list[tuple[str, str | None]] = field(default_factory=list)  # (userName, id)
    clients: list[Connection] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.family = self.family or self.name

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"} if self.kind == "bridge" else {}

    def encode(self, req: Req) -> bytes:
        """The request's bytes for this server: its SCIM root, Host, Authorization."""
        target = self.prefix + req.path
        if req.params:
            target += "?" + urlencode(req.params, quote_via=quote)
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return encode_request(req.method, target, f"127.0.0.1:{self.port}", extra, req.body)

    async def send(self, req: Req, conn: Connection | None = None) -> Response:
        """One request outside the timed loops (setup, group building, counting)."""
        client = conn if conn is not None else self.clients[0]
        return await client.request(self.encode(req), head_only=req.method == "HEAD")

    def start(self) -> None:
        """Start the server in a process group of its own (``kill9`` kills the whole group)."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.perf_counter() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        client.get(self.origin + self.health, headers=self.headers).status_code
                        == 200
                    ):
                        return time.perf_counter() - started
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float | None:
        """CPU seconds (user + system, all threads) of the server's whole process tree so far.

        The tree is the process started plus its descendants (uvicorn's supervisor and its
        worker processes), each counted with the CPU of the children it has reaped, so a
        worker that exits keeps its share. From ``/proc``.
        """
        if self.proc is None:
            return None
        return tree_cpu(self.proc.pid)

    def check_alive(self) -> None:
        if not self.alive:
            code = self.proc.returncode if self.proc is not None else None
            tail = self.log_tail(3).replace("\n", " | ")
            raise RuntimeError(f"{self.name} is down (exit {code}): {tail}")

    def stop(self) -> None:
        """SIGTERM (uvicorn stops its workers), then SIGKILL whatever is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self.kill9()

    def kill9(self) -> None:
        """``kill -9`` the whole process group: the supervisor and every worker at once."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and group_alive(self.proc.pid):
            time.sleep(0.02)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def variant_name(family: str, workers: int) -> str:
    """``bridge``, ``bridge-w2``, ``bridge-pg``, ``bridge-pg-w4``…"""
    return family if workers == 1 else f"{family}-w{workers}"


def bridge_server(
    name: str,
    database_url: str,
    tmp: Path,
    src: Path,
    workers: int = 1,
    family: str = "",
) -> Server:
    """``bridge serve [--workers N]``, imported from ``src`` (the work tree, or a commit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_SCIM_TOKEN=TOKEN,
        BRIDGE_SCHEMAS=str(src / "schemas"),
        BRIDGE_RULES=str(src / "rules"),
        PYTHONPATH=os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "import sys; from bridge.cli import main; sys.argv[0] = 'bridge'; main()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--workers", str(workers)] if workers > 1 else []),
    ]
    return Server(
        name,
        "bridge",
        cmd,
        env,
        port,
        "/scim/v2",
        "/healthz",
        tmp / f"{name}.log",
        cwd=src,
        workers=workers,
        family=family or name,
    )


def bridge_source(spec: str | None, tmp: Path) -> tuple[Path, str]:
    """The tree the bridge runs from: the work tree, a directory, or ``git:REV`` exported.

    Others edit the work tree while a run goes on; ``git:HEAD`` benchmarks a fixed commit
    (``git archive``, which writes nothing to the repository).
    """
    if not spec:
        return ROOT, f"work tree {ROOT} (git {git_head()}, plus uncommitted changes)"
    if spec.startswith("git:"):
        rev = spec[4:] or "HEAD"
        full = subprocess.run(
            ["git", "rev-parse", "--short", rev],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        target = tmp / f"bridge-src-{full}"
        target.mkdir()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return target, f"git {full} (exported with git archive)"
    path = Path(spec).resolve()
    if not (path / "bridge").is_dir():
        raise SystemExit(f"--bridge-src {spec}: no bridge/ package there")
    return path, f"directory {path}"


def imported_from(server: Server) -> str:
    """Where the bridge's process imports ``bridge`` from (checks --bridge-src took effect)."""
    found = subprocess.run(
        [sys.executable, "-c", "import bridge; print(bridge.__file__)"],
        cwd=server.cwd,
        env=server.env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    return found.stdout.strip() or found.stderr.strip()[-300:]


def scim2_server(tmp: Path, cli: bool) -> Server:
    port = free_port()
    if cli:  # the stock `scim2-server` command: wsgiref threads, a new connection per request
        cmd = [str(Path(sys.executable).parent / "scim2-server"), "--port", str(port)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_serve", "scim2", str(port)]
    return Server(
        SCIM2,
        "scim2",
        cmd,
        dict(os.environ),
        port,
        "/v2",
        "/v2/ServiceProviderConfig",
        tmp / "scim2-server.log",
    )


def ceiling_server(tmp: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "_serve", "ceiling", str(port)]
    return Server(
        CEILING, "ceiling", cmd, dict(os.environ), port, "/scim/v2", "/healthz", tmp / "ceiling.log"
    )


# ---------------------------------------------------------------------------------------------
# PostgreSQL scratch database
# ---------------------------------------------------------------------------------------------


def pg_url_with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def pg_create(url: str, tag: str = "") -> str:
    import psycopg

    name = f"scim_bench_{os.getpid()}_{int(time.time())}{tag}"
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def pg_drop(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------


def user_name(prefix: str, i: int) -> str:
    return f"{prefix}.user{i:06d}"


def work_email(name: str) -> str:
    return f"{name}@work.example.com"


def user_body(name: str) -> dict[str, Any]:
    given, _, family = name.partition(".")
    return {
        "schemas": [USER_SCHEMA],
        "userName": name,
        "externalId": f"ext-{name}",
        "name": {"givenName": given.title(), "familyName": family.title()},
        "displayName": f"{given.title()} {family.title()}",
        "active": True,
        "emails": [
            {"type": "work", "value": work_email(name), "primary": True},
            {"type": "home", "value": f"{name}@home.example.net"},
        ],
    }


def eq_filter(name: str) -> str:
    return f'userName eq "{name}"'


def value_path_filter(name: str) -> str:
    return f'emails[type eq "work" and value eq "{work_email(name)}"]'


def patch_body(operations: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemas": [PATCH_SCHEMA], "Operations": operations}).encode()


@dataclass
class Req:
    method: str
    path: str
    body: bytes | None = None
    params: dict[str, str] | None = None


Check = Callable[[Response], tuple[bool, Any]]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


@dataclass
class Tally:
    """What one server answered in one phase, summed over the rounds."""

    planned: int = 0
    done: int = 0
    ok: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    first_error: str | None = None
    cpu: float | None = 0.0
    spreads: list[str] = field(default_factory=list)  # connections per worker, each round

    def add_cpu(self, before: float | None, after: float | None) -> None:
        if self.cpu is None or before is None or after is None:
            self.cpu = None
        else:
            self.cpu += after - before

    def error(self, message: str) -> None:
        if self.first_error is None:
            self.first_error = message[:500]

    def summary(self, concurrency: int, **extra: Any) -> dict[str, Any]:
        ms = [x * 1000 for x in self.latencies]
        out: dict[str, Any] = {
            "planned": self.planned,
            "done": self.done,
            "ok": self.ok,
            "errors": self.done - self.ok,
            "concurrency": concurrency,
            "elapsed_s": round(self.wall, 3),
            "rps": round(self.ok / self.wall, 1) if self.wall > 0 else None,
            "p50_ms": _r(pct(ms, 0.50)),
            "p90_ms": _r(pct(ms, 0.90)),
            "p99_ms": _r(pct(ms, 0.99)),
            "mean_ms": _r(sum(ms) / len(ms)) if ms else None,
            "max_ms": _r(max(ms)) if ms else None,
            "server_cpu_ms_per_ok": (
                _r(self.cpu * 1000 / self.ok) if self.cpu is not None and self.ok else None
            ),
        }
        if len(self.round_rps) > 1:
            out["rps_per_round"] = [round(x, 1) for x in self.round_rps]
        if self.spreads:
            out["connections_per_worker"] = self.spreads
        if self.first_error:
            out["first_error"] = self.first_error
        out.update(extra)
        return out


async def drive(
    server: Server,
    requests: list[Req],
    check: Check,
    concurrency: int,
    budget: float | None,
    tally: Tally,
    values: list[Any] | None = None,
    offset: int = 0,
) -> None:
    """Run the requests with ``concurrency`` workers; stop issuing new ones after ``budget`` s.

    Each worker has its own keep-alive ``Connection``; the request bytes are built before the
    clock starts. Latency is measured for the good answers (``check`` true); throughput is
    good answers per second of wall time. ``values[offset + i]`` receives what ``check`` took
    from answer ``i``.
    """
    server.check_alive()
    if not server.clients:
        raise RuntimeError(f"{server.name} has no open client")
    raws = [server.encode(req) for req in requests]
    work = iter(enumerate(requests))
    connections = server.clients[: max(1, concurrency)]
    spread = await prepare(server, connections)
    if spread:
        tally.spreads.append(spread)
    cpu_before = server.cpu()
    started = time.perf_counter()
    deadline = started + budget if budget else math.inf
    ok_before = tally.ok
    tally.planned += len(requests)

    async def worker(client: Connection) -> None:
        for index, req in work:
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            try:
                response = await client.request(raws[index], req.method == "HEAD")
                elapsed = time.perf_counter() - t0
                good, value = check(response)
            except (OSError, HttpError, ValueError) as exc:
                tally.done += 1
                tally.error(f"{req.method} {req.path}: {exc!r}")
                continue
            tally.done += 1
            if good:
                tally.ok += 1
                tally.latencies.append(elapsed)
                if values is not None:
                    values[offset + index] = value
            else:
                tally.error(
                    f"{req.method} {req.path} -> {response.status_code} {response.text[:300]}"
                )

    await asyncio.gather(*(worker(c) for c in connections))
    wall = time.perf_counter() - started
    tally.add_cpu(cpu_before, server.cpu())
    tally.wall += wall
    tally.round_rps.append((tally.ok - ok_before) / wall if wall > 0 else 0.0)


def created_check(response: Response) -> tuple[bool, Any]:
    """A 201 whose body is a JSON object with a non-empty string ``id``."""
    if response.status_code != 201:
        return False, None
    body = response.json()
    created = body.get("id") if isinstance(body, dict) else None
    return isinstance(created, str) and bool(created), created


def one_result_check(server: Server) -> Check:
    """A 200 whose body is a JSON object with ``totalResults`` 1 (the ceiling: 0)."""

    def check(response: Response) -> tuple[bool, Any]:
        if response.status_code != 200:
            return False, None
        body = response.json()
        total = body.get("totalResults") if isinstance(body, dict) else None
        if server.kind == "ceiling":
            return total in (0, 1), total
        return total == 1, total

    return check


def patched_check(response: Response) -> tuple[bool, Any]:
    return response.status_code in (200, 204), None


def _tcp_inodes(port: int) -> tuple[set[int], dict[int, int]]:
    """The inodes of the sockets listening on ``port``, and client port -> accepted socket."""
    listening: set[int] = set()
    accepted: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or int(parts[1].rsplit(":", 1)[1], 16) != port:
                continue
            if parts[3] == "0A":  # LISTEN
                listening.add(int(parts[9]))
            else:
                accepted[int(parts[2].rsplit(":", 1)[1], 16)] = int(parts[9])
    return listening, accepted


def _socket_holders(pids: list[int]) -> dict[int, list[int]]:
    """Socket inode -> the processes (of ``pids``) holding a descriptor of it."""
    holders: dict[int, list[int]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                holders.setdefault(int(link[8:-1]), []).append(pid)
    return holders


def connection_spread(
    server: Server, conns: list[Connection]
) -> tuple[list[int], list[int | None]]:
    """The worker processes of a multi-process server and the worker each connection is on.

    The workers are the processes of the tree, its root (uvicorn's supervisor) aside, that
    hold the listening socket; a connection is on the one holding its accepted socket
    (``/proc/net/tcp`` and ``/proc/<pid>/fd``).
    """
    if server.proc is None:
        return [], [None] * len(conns)
    tree, _ = process_tree(server.proc.pid)
    listening, accepted = _tcp_inodes(server.port)
    holders = _socket_holders(tree)
    workers = sorted(
        {pid for inode in listening for pid in holders.get(inode, []) if pid != server.proc.pid}
    )
    owners: list[int | None] = []
    for conn in conns:
        port = conn.local_port
        inode = accepted.get(port) if port is not None else None
        on = [pid for pid in holders.get(inode, []) if pid in workers] if inode else []
        owners.append(on[0] if on else None)
    return workers, owners


async def balance(server: Server, conns: list[Connection], timeout: float = 60.0) -> str:
    """Spread the connections evenly over the server's workers; return the spread ("8+8").

    The workers share one listening socket and whichever is first to ``accept`` takes a
    connection, so 16 keep-alive connections can land 12+4 (or 16+0 on a worker still
    starting), which would measure the kernel's wake-ups rather than the server. A
    connection on the busiest worker is reopened until no worker has more than one
    connection above another (or ``timeout`` passes: the spread is then marked uneven).
    """
    ping = server.encode(Req("GET", "/ServiceProviderConfig"))
    deadline = time.monotonic() + timeout
    reopened = 0
    while True:
        workers, owners = connection_spread(server, conns)
        counts = dict.fromkeys(workers, 0)
        for owner in owners:
            if owner in counts:
                counts[owner] += 1
        spread = "+".join(str(n) for n in sorted(counts.values(), reverse=True)) or "?"
        even = (
            len(workers) >= server.workers
            and None not in owners
            and max(counts.values()) - min(counts.values()) <= 1
        )
        if even:
            return spread
        if not workers or time.monotonic() > deadline:
            return f"{spread} (uneven after {reopened} reopened)"
        busiest = max(counts, key=lambda pid: counts[pid])
        unknown = [i for i, owner in enumerate(owners) if owner is None]
        victim = unknown[0] if unknown else owners.index(busiest)
        conns[victim].close()
        await asyncio.sleep(0.005)  # a worker still starting up gets its turn
        response = await conns[victim].request(ping)
        reopened += 1
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}: {response.status_code} {response.text[:200]}")


async def prepare(server: Server, conns: list[Connection]) -> str | None:
    """Before a timed run: every connection open and answering (the server may have closed
    idle ones: uvicorn's keep-alive timeout is 5 s), spread over the workers if several."""
    ping = server.encode(Req("GET", "/ServiceProviderConfig"))
    for response in await asyncio.gather(*(c.request(ping) for c in conns)):
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}: {response.status_code} {response.text[:200]}")
    if server.workers > 1:
        return await balance(server, conns)
    return None


async def open_clients(server: Server, count: int) -> None:
    """``count`` connections, warmed up (connected, first requests done)."""
    await close_clients(server)
    server.clients = [Connection("127.0.0.1", server.port) for _ in range(count)]
    requests = [Req("GET", "/ServiceProviderConfig") for _ in range(count * 5)]
    warm = Tally()
    await drive(server, requests, lambda r: (r.status_code == 200, None), count, None, warm)
    if warm.ok != warm.done:
        raise RuntimeError(f"{server.name} warm-up: {warm.first_error}")


async def close_clients(server: Server) -> None:
    for client in server.clients:
        client.close()
    server.clients = []
    await asyncio.sleep(0)  # let the transports finish closing


async def seed_users(
    server: Server, names: list[str], log: Callable[[str], None]
) -> tuple[float, int]:
    """Create users through POST /Bulk, 1000 operations a request, two requests in flight."""
    batch = 1000
    chunks = [names[i : i + batch] for i in range(0, len(names), batch)]
    ids: dict[str, str | None] = {}
    failures = 0
    started = time.perf_counter()
    queue = iter(chunks)
    done = 0

    async def worker(client: Connection) -> None:
        nonlocal failures, done
        for chunk in queue:
            operations = [
                {"method": "POST", "path": "/Users", "bulkId": f"u{j}", "data": user_body(n)}
                for j, n in enumerate(chunk)
            ]
            body = json.dumps({"schemas": [BULK_SCHEMA], "Operations": operations}).encode()
            response = await server.send(Req("POST", "/Bulk", body), client)
            if response.status_code != 200:
                raise RuntimeError(
                    f"bulk on {server.name}: {response.status_code} {response.text[:300]}"
                )
            results = response.json().get("Operations", [])
            for n, result in zip(chunk, results, strict=False):
                if str(result.get("status")) == "201" and result.get("location"):
                    ids[n] = str(result["location"]).rstrip("/").rsplit("/", 1)[-1]
                else:
                    ids[n] = None
                    failures += 1
            failures += max(0, len(chunk) - len(results))
            done += len(chunk)
            if done % 10000 < batch:
                rate = done / (time.perf_counter() - started)
                log(f"  seeded {done}/{len(names)} users on {server.name} ({rate:.0f}/s)")

    await asyncio.gather(*(worker(c) for c in server.clients[:2]))
    server.users.extend((n, ids.get(n)) for n in names)
    return time.perf_counter() - started, failures


async def count_users(server: Server) -> int | None:
    response = await server.send(Req("GET", "/Users", params={"count": "0"}))
    if response.status_code != 200:
        return None
    return int(response.json().get("totalResults", -1))


async def build_group(
    server: Server, size: int, member_ids: list[str], chunk: int
) -> tuple[str, float]:
    """A group of ``size`` members: POST with the first chunk, then PATCH add the rest."""
    started = time.perf_counter()
    first = member_ids[:chunk]
    body = {
        "schemas": [GROUP_SCHEMA],
        "displayName": f"bench-group-{size}",
        "members": [{"value": m} for m in first],
    }
    response = await server.send(Req("POST", "/Groups", json.dumps(body).encode()))
    if response.status_code != 201:
        raise RuntimeError(f"POST /Groups: {response.status_code} {response.text[:300]}")
    group_id = str(response.json()["id"])
    for i in range(chunk, len(member_ids), chunk):
        part = member_ids[i : i + chunk]
        ops = [{"op": "add", "path": "members", "value": [{"value": m} for m in part]}]
        response = await server.send(Req("PATCH", f"/Groups/{group_id}", patch_body(ops)))
        if response.status_code not in (200, 204):
            raise RuntimeError(
                f"PATCH add {len(part)} members: {response.status_code} {response.text[:300]}"
            )
    return group_id, time.perf_counter() - started


async def member_add_remove(
    server: Server, group_id: str, candidates: list[str], budget: float, min_samples: int
) -> tuple[Tally, Tally]:
    """Single-member add then remove, one request at a time, for each candidate."""
    tallies = {"add": Tally(planned=len(candidates)), "remove": Tally(planned=len(candidates))}
    path = f"/Groups/{group_id}"
    started = time.perf_counter()
    client = server.clients[0]
    for n, member in enumerate(candidates):
        if n >= min_samples and time.perf_counter() - started > budget:
            break
        add = {"op": "add", "path": "members", "value": [{"value": member}]}
        remove = {"op": "remove", "path": f'members[value eq "{member}"]'}
        for op, body in (("add", patch_body([add])), ("remove", patch_body([remove]))):
            tally = tallies[op]
            raw = server.encode(Req("PATCH", path, body))
            cpu_before = server.cpu()
            t0 = time.perf_counter()
            response = await client.request(raw)
            elapsed = time.perf_counter() - t0
            tally.add_cpu(cpu_before, server.cpu())
            tally.wall += elapsed
            tally.done += 1
            if response.status_code in (200, 204):
                tally.ok += 1
                tally.latencies.append(elapsed)
            else:
                tally.error(f"PATCH {op} -> {response.status_code} {response.text[:300]}")
    return tallies["add"], tallies["remove"]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def size_label(n: int) -> str:
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def slices(items: list[Any], parts: int) -> list[tuple[int, list[Any]]]:
    """``parts`` contiguous slices of ``items``, each with the index it starts at."""
    parts = max(1, min(parts, len(items) or 1))
    bounds = [round(i * len(items) / parts) for i in range(parts + 1)]
    return [(bounds[i], items[bounds[i] : bounds[i + 1]]) for i in range(parts)]


@dataclass
class Bench:
    args: argparse.Namespace
    servers: list[Server]
    log: Callable[[str], None]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase_meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, phase: str, server: Server, result: dict[str, Any]) -> None:
        self.results.setdefault(phase, {})[server.name] = result
        if "skipped" in result:
            self.log(f"  {phase:<30} {server.name:<13} skipped: {result['skipped']}")
        elif "error" in result:
            self.log(f"  {phase:<30} {server.name:<13} ERROR: {result['error']}")
        else:
            self.log(
                f"  {phase:<30} {server.name:<13} ok {result['ok']}/{result['done']}  "
                f"p50 {fmt(result['p50_ms'], 2)} ms  p99 {fmt(result['p99_ms'], 2)} ms  "
                f"{fmt(result['rps'])} req/s"
            )

    @property
    def clients_needed(self) -> int:
        return max(int(self.args.concurrency), int(self.args.latency_concurrency), 2)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            for server in self.servers:
                with contextlib.suppress(Exception):
                    await close_clients(server)

    async def interleaved(
        self,
        phase: str,
        servers: list[Server],
        requests: dict[str, list[Req]],
        concurrency: int,
        budget: float | None,
        check: Callable[[Server], Check],
    ) -> dict[str, tuple[Tally, list[Any]]]:
        """Run each server's requests in ``--rounds`` slices, the servers taking turns.

        Taking turns spreads the noise of a shared machine over every server alike. The
        time budget, if any, is split evenly between the rounds.
        """
        rounds = self.args.rounds
        out: dict[str, tuple[Tally, list[Any]]] = {
            s.name: (Tally(), [None] * len(requests[s.name])) for s in servers
        }
        failed: set[str] = set()
        for r in range(rounds):
            for server in servers:
                if server.name in failed:
                    continue
                tally, values = out[server.name]
                offset, part = slices(requests[server.name], rounds)[r]
                if not part:
                    continue
                try:
                    await drive(
                        server,
                        part,
                        check(server),
                        concurrency,
                        budget / rounds if budget else None,
                        tally,
                        values,
                        offset,
                    )
                except Exception as exc:  # one server failing must not sink the run
                    failed.add(server.name)
                    self.record(phase, server, {"error": f"{type(exc).__name__}: {exc}"[:600]})
        return {name: found for name, found in out.items() if name not in failed}

    def record_tally(
        self, phase: str, server: Server, tally: Tally, concurrency: int, **extra: Any
    ) -> dict[str, Any]:
        result = tally.summary(concurrency, **extra)
        if result["done"] < result["planned"] and self.args.budget:
            result["note"] = (
                f"time budget {self.args.budget:.0f}s: {result['done']} of "
                f"{result['planned']} requests"
            )
        self.record(phase, server, result)
        return result

    async def _run(self) -> None:
        a = self.args
        names = [user_name("bench", i) for i in range(a.users)]
        rng = random.Random(a.seed)
        eq_names = [names[rng.randrange(a.users)] for _ in range(a.lookups)]
        vp_names = [names[rng.randrange(a.users)] for _ in range(a.lookups)]
        servers = self.servers
        for server in servers:
            await open_clients(server, self.clients_needed)

        # 1. POST users ---------------------------------------------------------------------
        phase = "1 POST /Users"
        self.phase_meta[phase] = {"users": a.users, "concurrency": a.concurrency}
        self.log(f"phase {phase}: {a.users} users at concurrency {a.concurrency}")
        bodies = [Req("POST", "/Users", json.dumps(user_body(n)).encode()) for n in names]
        found = await self.interleaved(
            phase,
            servers,
            {s.name: bodies for s in servers},
            a.concurrency,
            None,
            lambda s: created_check,
        )
        for server in servers:
            if server.name not in found:
                continue
            tally, ids = found[server.name]
            server.users = list(zip(names, ids, strict=True))
            extra: dict[str, Any] = {}
            if server.kind == "bridge":
                try:
                    extra["durability"] = await self.durability(server, tally.ok)
                except Exception as exc:
                    extra["durability"] = f"check failed: {exc}"[:300]
            elif server.kind == "scim2":
                extra["durability"] = "in-memory storage: nothing is durable"
            self.record_tally(phase, server, tally, a.concurrency, **extra)

        # 2. GET userName eq ----------------------------------------------------------------
        phase = "2 GET userName eq"
        self.phase_meta[phase] = {"lookups": a.lookups, "concurrency": a.concurrency}
        self.log(f"phase {phase}: {a.lookups} lookups at concurrency {a.concurrency}")
        requests = [Req("GET", "/Users", params={"filter": eq_filter(n)}) for n in eq_names]
        found = await self.interleaved(
            phase,
            servers,
            {s.name: requests for s in servers},
            a.concurrency,
            a.budget,
            one_result_check,
        )
        for server in servers:
            if server.name in found:
                self.record_tally(phase, server, found[server.name][0], a.concurrency)

        # Multi-worker variants are for throughput only: phases 3-4 (latency at concurrency
        # 1) run on the single-worker bridge; stopping them frees their memory and CPU.
        for server in servers:
            if server.workers > 1:
                await close_clients(server)
                server.stop()
                self.log(f"stopped {server.name} ({server.workers} workers: phases 1-2 only)")
        servers = [s for s in servers if s.workers == 1]

        # 3a. valuePath at N ----------------------------------------------------------------
        phase = f"3a GET emails[work] @{size_label(a.users)}"
        conc = a.latency_concurrency
        self.phase_meta[phase] = {"lookups": a.lookups, "users": a.users, "concurrency": conc}
        self.log(f"phase {phase}: {a.lookups} lookups at concurrency {conc}")
        requests = [Req("GET", "/Users", params={"filter": value_path_filter(n)}) for n in vp_names]
        found = await self.interleaved(
            phase, servers, {s.name: requests for s in servers}, conc, a.budget, one_result_check
        )
        for server in servers:
            if server.name in found:
                self.record_tally(phase, server, found[server.name][0], conc, users=a.users)

        # Seed users for the big phase and the groups ---------------------------------------
        sizes = sorted(a.groups)
        for server in servers:
            if server.kind == "ceiling" or not server.users:
                continue
            target = a.samples + max([s for s in sizes if s <= server.max_group], default=0)
            if server.kind == "bridge" or a.scim2_big:
                target = max(target, a.big)
            await self.seed(server, target)

        # 3b. valuePath at 100k (bridge only) -----------------------------------------------
        if a.big:
            phase = f"3b GET emails[work] @{size_label(a.big)}"
            self.phase_meta[phase] = {"lookups": a.lookups, "users": a.big, "concurrency": conc}
            self.log(f"phase {phase}: {a.lookups} lookups at concurrency {conc}")
            running: list[Server] = []
            requests_by: dict[str, list[Req]] = {}
            pools: dict[str, int] = {}
            for server in servers:
                if server.kind == "ceiling":
                    pool = names + [user_name("seed", i) for i in range(a.big)]
                else:
                    pool = [n for n, i in server.users if i]
                if server.kind == "scim2" and not a.scim2_big:
                    self.record(
                        phase,
                        server,
                        {
                            "skipped": "not seeded to this size (its filters scan every user, "
                            "see 3a; ~100k Bulk creates); --scim2-big runs it"
                        },
                    )
                    continue
                if len(pool) < a.big:
                    self.record(phase, server, {"skipped": f"only {len(pool)} users"})
                    continue
                big_rng = random.Random(a.seed + 1)
                picks = [pool[big_rng.randrange(len(pool))] for _ in range(a.lookups)]
                requests_by[server.name] = [
                    Req("GET", "/Users", params={"filter": value_path_filter(n)}) for n in picks
                ]
                pools[server.name] = len(pool)
                running.append(server)
            found = await self.interleaved(
                phase, running, requests_by, conc, a.budget, one_result_check
            )
            for server in running:
                if server.name in found:
                    tally = found[server.name][0]
                    self.record_tally(phase, server, tally, conc, users=pools[server.name])

        # 4. Group member add/remove --------------------------------------------------------
        for size in sizes:
            label = size_label(size)
            add_phase = f"4 PATCH add member @{label}"
            remove_phase = f"4 PATCH remove member @{label}"
            self.phase_meta[add_phase] = {"members": size, "concurrency": 1}
            self.phase_meta[remove_phase] = {"members": size, "concurrency": 1}
            self.log(f"phase 4: group of {size} members, single-member add then remove")
            for server in servers:
                if size > server.max_group:
                    note = (
                        f"not run: over --scim2-max-group {server.max_group} "
                        "(there a member change costs O(group size))"
                    )
                    self.record(add_phase, server, {"skipped": note})
                    self.record(remove_phase, server, {"skipped": note})
                    continue
                try:
                    await self.groups(add_phase, remove_phase, server, size)
                except Exception as exc:  # one server failing must not sink the run
                    error = {"error": f"{type(exc).__name__}: {exc}"[:600]}
                    self.record(add_phase, server, error)
                    self.record(remove_phase, server, error)

    async def seed(self, server: Server, target: int) -> None:
        missing = target - len(server.users)
        if missing <= 0 or not server.alive:
            return
        seed = [user_name("seed", i) for i in range(missing)]
        if server.kind == "bridge" and self.args.seed_mode == "sql" and missing > 1:
            try:
                seconds = await self.seed_sql(server, seed)
                server.extra["seeded"] = {
                    "users": missing,
                    "mode": "sql clone of a POSTed user",
                    "seconds": round(seconds, 1),
                }
                self.log(f"  seeded {missing} in {seconds:.1f}s by cloning a POSTed user's rows")
                return
            except Exception as exc:
                self.log(f"  SQL seeding failed ({exc}); falling back to POST /Bulk")
                existing = {n for n, _ in server.users}
                seed = [n for n in seed if n not in existing]
                missing = len(seed)
        self.log(f"seeding {missing} users on {server.name} via POST /Bulk (1000 per request)")
        try:
            seconds, failures = await seed_users(server, seed, self.log)
        except Exception as exc:
            server.extra["seeded"] = {"error": repr(exc)[:500]}
            self.log(f"  seeding failed on {server.name}: {exc!r}")
            return
        server.extra["seeded"] = {
            "users": missing,
            "seconds": round(seconds, 1),
            "per_user_ms": round(seconds * 1000 / missing, 3),
            "failures": failures,
        }
        self.log(
            f"  seeded {missing} in {seconds:.1f}s ({missing / seconds:.0f}/s, {failures} failures)"
        )

    async def seed_sql(self, server: Server, names: list[str]) -> float:
        """POST the first user, clone its rows for the others (see ``seed_sql_main``)."""
        started = time.perf_counter()
        first, rest = names[0], names[1:]
        self.log(f"seeding {len(names)} users on {server.name}: POST {first}, then clone its rows")
        response = await server.send(Req("POST", "/Users", json.dumps(user_body(first)).encode()))
        if response.status_code != 201:
            raise RuntimeError(f"POST template user: {response.status_code} {response.text[:200]}")
        template_id = str(response.json()["id"])
        server.users.append((first, template_id))
        work = Path(tempfile.mkdtemp(prefix="seed-", dir=server.log_path.parent))
        (work / "names.json").write_text(json.dumps(rest))
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_seed",
            server.env["BRIDGE_DATABASE_URL"],
            template_id,
            str(work / "names.json"),
            str(work / "ids.json"),
        ]
        done = await asyncio.to_thread(
            subprocess.run, cmd, cwd=server.cwd, env=server.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
        ids = json.loads((work / "ids.json").read_text())
        server.users.extend((n, ids.get(n)) for n in rest)
        listed = await count_users(server)
        if listed != len(server.users):
            raise RuntimeError(f"{listed} users listed, {len(server.users)} expected")
        return time.perf_counter() - started

    async def durability(self, server: Server, created: int) -> str:
        """kill -9 the bridge right after its 201s, restart it, count the users it kept."""
        if self.args.no_kill_check:
            found = await count_users(server)
            return f"{found}/{created} users listed (no kill check)"
        await close_clients(server)
        server.kill9()
        server.start()
        await asyncio.to_thread(server.wait_ready)
        await open_clients(server, self.clients_needed)
        found = await count_users(server)
        verdict = "OK" if found == created else "LOST WRITES"
        server.durable = verdict
        return f"kill -9 + restart: {found}/{created} kept, {verdict}"

    async def groups(self, add_phase: str, remove_phase: str, server: Server, size: int) -> None:
        a = self.args
        server.check_alive()
        if server.kind == "ceiling":
            candidates = [f"c-cand-{i}" for i in range(a.samples)]
            members = [f"c-member-{i}" for i in range(size)]
        else:
            ids = [i for _, i in server.users if i]
            if len(ids) < a.samples + size:
                raise RuntimeError(f"only {len(ids)} users; {a.samples + size} needed")
            candidates, members = ids[: a.samples], ids[a.samples : a.samples + size]
        group_id, built = await build_group(server, size, members, a.member_chunk)
        self.log(f"  {server.name}: group of {size} built in {built:.1f}s")
        add, remove = await member_add_remove(server, group_id, candidates, a.budget, a.min_samples)
        for phase, tally in ((add_phase, add), (remove_phase, remove)):
            result = tally.summary(1, group_built_s=round(built, 2))
            if result["done"] < a.samples:
                result["note"] = f"time budget {a.budget:.0f}s: {result['done']} of {a.samples}"
            self.record(phase, server, result)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}×"


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


THROUGHPUT_PHASES = ("1 ", "2 ")  # phases every bridge variant runs; the others: 1 worker


def best_variants(by_server: dict[str, Any], servers: list[Server]) -> dict[str, str]:
    """family -> the name of its variant with the most good answers per second."""
    best: dict[str, str] = {}
    for server in servers:
        rps = by_server.get(server.name, {}).get("rps")
        if server.kind != "bridge" or not rps:
            continue
        current = best.get(server.family)
        if current is None or rps > by_server[current]["rps"]:
            best[server.family] = server.name
    return best


def render_table(results: dict[str, dict[str, Any]], servers: list[Server]) -> Any:
    from rich.table import Table

    table = Table(
        title="SCIM benchmark: p50/p99 latency, good answers per second, server CPU per answer.\n"
        "wk: server processes (bridge serve --workers N; variants with N > 1 run phases 1-2 "
        "only). ÷ scim2 and ÷ ceiling: that bridge variant's throughput ÷ theirs (higher is "
        "better for the bridge); in phases 1-2 the best variant of each database is marked "
        "'best', and the targets use it. cap ÷ scim2: scim2-server CPU ms per answer ÷ the "
        "bridge's (all its processes), i.e. server capacity ratio whatever the client can push.",
        title_justify="left",
    )
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("phase", "left"),
        ("server", "left"),
        ("wk", "right"),
        ("conc", "right"),
        ("ok/done", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("req/s", "right"),
        ("÷ scim2", "right"),
        ("÷ ceiling", "right"),
        ("srv CPU ms", "right"),
        ("cap ÷ scim2", "right"),
        ("note", "left"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    for phase, by_server in results.items():
        first = True
        scim2 = by_server.get(SCIM2, {})
        ceiling = by_server.get(CEILING, {}).get("rps")
        best: dict[str, str] = {}
        if phase.startswith(THROUGHPUT_PHASES):
            best = best_variants(by_server, servers)
            for family in list(best):
                if sum(s.family == family and s.name in by_server for s in servers) < 2:
                    del best[family]  # one variant only: nothing to mark
        for server in servers:
            name = server.name
            result = by_server.get(name)
            if result is None:
                continue
            label = phase if first else ""
            first = False
            if "skipped" in result or "error" in result:
                note = result.get("skipped") or f"ERROR {result.get('error')}"
                table.add_row(label, name, str(server.workers), *([""] * 9), note)
                continue
            notes = [v for k, v in result.items() if k in ("note", "durability") and v]
            if best.get(server.family) == name:
                notes.insert(0, "best")
            if result.get("connections_per_worker"):
                spreads = dict.fromkeys(result["connections_per_worker"])
                notes.append(f"connections per worker {', '.join(spreads)}")
            if result.get("first_error"):
                notes.append(f"first error: {result['first_error'][:120]}")
            is_bridge = server.kind == "bridge"
            cpu = result.get("server_cpu_ms_per_ok")
            table.add_row(
                label,
                name,
                str(server.workers),
                str(result["concurrency"]),
                f"{result['ok']}/{result['done']}",
                fmt(result["p50_ms"], 2),
                fmt(result["p99_ms"], 2),
                fmt(result["rps"]),
                ratio(result["rps"], scim2.get("rps")) if is_bridge else "",
                ratio(result["rps"], ceiling) if is_bridge else "",
                fmt(cpu, 2),
                ratio(scim2.get("server_cpu_ms_per_ok"), cpu) if is_bridge else "",
                "; ".join(str(n) for n in notes),
            )
        table.add_section()
    return table


def targets(
    results: dict[str, dict[str, Any]], variants: list[Server], big: int, sizes: list[int]
) -> list[tuple[str, str, str, str]]:
    """The lead's targets for one database's bridge variants: (target, verdict, detail, variant).

    Throughput (phases 1-2): the variant with the most req/s ÷ scim2-server, and every
    variant's 201s durable across kill -9. Latency (3b, 4): the single-worker variant.
    """
    out: list[tuple[str, str, str, str]] = []

    def get(phase_prefix: str, server: str) -> dict[str, Any]:
        for phase, by_server in results.items():
            if phase.startswith(phase_prefix):
                found: dict[str, Any] = by_server.get(server, {})
                return found
        return {}

    def best(phase_prefix: str) -> tuple[Server, dict[str, Any]] | None:
        ran = [(v, get(phase_prefix, v.name)) for v in variants]
        ran = [(v, r) for v, r in ran if r.get("rps")]
        return max(ran, key=lambda vr: vr[1]["rps"]) if ran else None

    def which(v: Server) -> str:
        return f"{v.name}, {v.workers} worker{'s' if v.workers > 1 else ''}"

    post_s = get("1 POST", SCIM2)
    top = best("1 POST")
    if top and post_s.get("rps"):
        v, post = top
        x = post["rps"] / post_s["rps"]
        kept = [(w.name, get("1 POST", w.name).get("durability", "not run")) for w in variants]
        durable = all("OK" in str(d) for _, d in kept)
        kills = "; ".join(f"{n}: {str(d).removeprefix('kill -9 + restart: ')}" for n, d in kept)
        out.append(
            (
                "POST ≥ 3× scim2-server, every 201 durable",
                "PASS" if x >= 3 and durable and post["errors"] == 0 else "FAIL",
                f"{x:.2f}× ({which(v)}: {post['rps']:.0f} vs {post_s['rps']:.0f} req/s); "
                f"kill -9 + restart: {kills}",
                v.name,
            )
        )
    eq_s = get("2 GET", SCIM2)
    top = best("2 GET")
    if top and eq_s.get("rps"):
        v, eq = top
        x = eq["rps"] / eq_s["rps"]
        out.append(
            (
                "GET userName eq ≥ 5× scim2-server",
                "PASS" if x >= 5 and eq["errors"] == 0 else "FAIL",
                f"{x:.2f}× ({which(v)}: {eq['rps']:.0f} vs {eq_s['rps']:.0f} req/s)",
                v.name,
            )
        )
    single = next((v.name for v in variants if v.workers == 1), None)
    if single is None:
        return out
    if big:
        vp = get("3b GET", single)
        if vp.get("p50_ms") is not None:
            out.append(
                (
                    f"valuePath filter @{size_label(big)} users p50 < 10 ms",
                    "PASS" if vp["p50_ms"] < 10 else "FAIL",
                    f"p50 {vp['p50_ms']:.2f} ms",
                    single,
                )
            )
    for op in ("add", "remove"):
        p50s = []
        for size in sizes:
            r = get(f"4 PATCH {op} member @{size_label(size)}", single)
            if r.get("p50_ms") is not None:
                p50s.append((size, r["p50_ms"]))
        if p50s:
            low, high = p50s[0][1], p50s[-1][1]
            flat = high <= max(low * 1.5, low + 2.0)
            ok = all(p < 10 for _, p in p50s) and flat
            detail = ", ".join(f"{size_label(s)}: {p:.2f} ms" for s, p in p50s)
            if len(p50s) == 1:
                span = "flatness needs two sizes"
            else:
                span = f"flat {size_label(p50s[0][0])}→{size_label(p50s[-1][0])}"
            out.append(
                (
                    f"member {op} p50 < 10 ms, {span}",
                    "PASS" if ok else "FAIL",
                    detail + ("" if flat else " (not flat: largest > 1.5× smallest + 2 ms)"),
                    single,
                )
            )
    return out


def git_head() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                text=True,
                capture_output=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def worker_counts(text: str) -> list[int]:
    counts = sorted({int(x) for x in text.split(",") if x.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("worker counts are integers ≥ 1, comma-separated")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark the bridge against scim2-server and an empty endpoint."
    )
    p.add_argument("--users", type=int, default=None, help="users POSTed in phase 1 (2000)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="in-flight requests in the throughput phases (16)",
    )
    p.add_argument(
        "--latency-concurrency",
        type=int,
        default=1,
        help="in-flight requests in the latency phases 3 and 4 (1)",
    )
    p.add_argument("--lookups", type=int, default=None, help="GETs per lookup phase (2000)")
    p.add_argument(
        "--big",
        type=int,
        default=None,
        help="users for the bridge's valuePath phase 3b; 0 skips it (100000)",
    )
    p.add_argument(
        "--groups",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=None,
        help="group sizes, comma-separated (1000,10000,100000)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="single-member add+remove pairs per group size (200)",
    )
    p.add_argument(
        "--min-samples", type=int, default=5, help="pairs run even past the time budget (5)"
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per phase and server for lookups and member changes (45)",
    )
    p.add_argument(
        "--member-chunk",
        type=int,
        default=5000,
        help="members per request when building a group (5000)",
    )
    p.add_argument(
        "--scim2-max-group",
        type=int,
        default=10000,
        help="largest group built on scim2-server (10000)",
    )
    p.add_argument(
        "--seed-mode",
        choices=["sql", "bulk"],
        default="sql",
        help="how the bridge gets its extra users: clone a POSTed user's rows in SQL (fast), "
        "or POST /Bulk (the API; ~2 ms a user) (sql)",
    )
    p.add_argument(
        "--scim2-big",
        action="store_true",
        help="also seed scim2-server to --big users and run phase 3b on it",
    )
    p.add_argument(
        "--scim2-cli",
        action="store_true",
        help="run scim2-server's stock CLI (wsgiref, HTTP/1.0) instead of its ASGI "
        "app under uvicorn",
    )
    p.add_argument(
        "--postgres",
        metavar="URL",
        help="also run the bridge on a scratch database of this PostgreSQL server",
    )
    p.add_argument(
        "--bridge-src",
        metavar="DIR|git:REV",
        help="run the bridge from this tree, or from commit REV exported to a temp dir "
        "(git:HEAD); default: the work tree",
    )
    p.add_argument(
        "--servers",
        default="bridge,scim2,ceiling",
        help="which of bridge,scim2,ceiling to run (all)",
    )
    p.add_argument(
        "--bridge-workers",
        type=worker_counts,
        default=[1, 2],
        metavar="N,N…",
        help="bridge variants by `bridge serve --workers N`: bridge, bridge-w2, … (and "
        "bridge-pg, bridge-pg-w2 with --postgres); those with N > 1 run phases 1-2 only (1,2)",
    )
    p.add_argument(
        "--no-kill-check",
        action="store_true",
        help="skip the kill -9 + restart durability check after phase 1",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="slices of the throughput and lookup phases, the servers taking turns (3)",
    )
    p.add_argument("--seed", type=int, default=7, help="random seed of the lookups")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200 users, 1k-member group only, no 100k phase",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp dir (SQLite file, logs) and the PostgreSQL scratch database",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "users": 200 if quick else 2000,
        "lookups": 200 if quick else 2000,
        "big": 0 if quick else 100_000,
        "groups": [1000] if quick else [1000, 10_000, 100_000],
        "samples": 30 if quick else 200,
        "budget": 6.0 if quick else 45.0,
        "rounds": 2 if quick else 3,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        serve_main(argv[1], int(argv[2]))
        return 0
    if argv[:1] == ["_seed"]:
        seed_sql_main(*argv[1:5])
        return 0
    args = parse_args(argv)
    from rich.console import Console

    out = Console() if sys.stdout.isatty() else Console(width=200)
    err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)
    t0 = time.perf_counter()

    def log(message: str) -> None:
        err.print(f"[dim]{time.perf_counter() - t0:7.1f}s[/dim] {message}", highlight=False)

    wanted = {s.strip() for s in args.servers.split(",") if s.strip()}
    tmp = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    servers: list[Server] = []
    pg_dbs: list[str] = []
    src, src_label = bridge_source(args.bridge_src, tmp)
    if "bridge" in wanted:
        for workers in args.bridge_workers:
            name = variant_name(BRIDGE, workers)
            url = f"sqlite:///{tmp / f'{name}.db'}"
            servers.append(bridge_server(name, url, tmp, src, workers, BRIDGE))
    if args.postgres:
        for workers in args.bridge_workers:
            pg_dbs.append(pg_create(args.postgres, f"_w{workers}"))
            url = pg_url_with_database(args.postgres, pg_dbs[-1])
            servers.append(
                bridge_server(variant_name(BRIDGE_PG, workers), url, tmp, src, workers, BRIDGE_PG)
            )
    imports = ""
    for server in servers:
        if server.kind == "bridge":
            server.extra["source"] = src_label
            server.extra["imports"] = imports = imports or imported_from(server)
            server.extra["workers"] = server.workers
            log(f"{server.name}: {src_label}; imports {server.extra['imports']}")
    if "scim2" in wanted:
        scim2 = scim2_server(tmp, args.scim2_cli)
        scim2.max_group = args.scim2_max_group
        servers.append(scim2)
    if "ceiling" in wanted:
        servers.append(ceiling_server(tmp))

    bench = Bench(args, servers, log)
    status = 0
    try:
        for server in servers:
            server.start()
        for server in list(servers):
            try:
                seconds = server.wait_ready()
            except RuntimeError as exc:
                if server.workers == 1:
                    raise
                # e.g. --bridge-src of a commit whose `bridge serve` has no --workers yet
                log(f"{server.name} left out: {exc}")
                server.stop()
                servers.remove(server)
                continue
            log(
                f"{server.name} ready on port {server.port} in {seconds:.1f}s "
                f"(log: {server.log_path})"
            )
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:
            runner = asyncio.run
        runner(bench.run())
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is not None:
                code = server.proc.returncode
                if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                    log(f"{server.name} had exited with {code}:\n{server.log_tail()}")
            server.stop()
        for pg_db in pg_dbs:
            if args.keep:
                log(f"kept PostgreSQL database {pg_db}")
                continue
            try:
                pg_drop(args.postgres, pg_db)
            except Exception as exc:
                log(f"could not drop {pg_db}: {exc!r}")

    out.print(render_table(bench.results, servers))
    checks = []
    families = list(dict.fromkeys(s.family for s in servers if s.kind == "bridge"))
    for family in families:
        variants = [s for s in servers if s.family == family]
        for target, verdict, detail, variant in targets(
            bench.results, variants, args.big, sorted(args.groups)
        ):
            checks.append(
                {
                    "server": family,
                    "variant": variant,
                    "target": target,
                    "verdict": verdict,
                    "detail": detail,
                }
            )
            colour = "green" if verdict == "PASS" else "red"
            out.print(
                f"[{colour}]{verdict}[/{colour}] {family}: {target} — {detail}", highlight=False
            )
    for server in servers:
        if server.extra.get("seeded"):
            out.print(f"{server.name}: seeded {server.extra['seeded']}", highlight=False)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out or RESULTS / f"scim-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_head": git_head(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "versions": {
            p: package_version(p)
            for p in (
                "scim-lms-bridge",
                "scim2-server",
                "scim2-models",
                "starlette",
                "uvicorn",
                "httpx",
                "sqlalchemy",
            )
        },
        "args": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k != "postgres"
        }
        | {"postgres": bool(args.postgres)},
        "servers": {
            s.name: {"kind": s.kind, "workers": s.workers, "command": s.cmd[1:], **s.extra}
            for s in servers
        },
        "phases": bench.phase_meta,
        "results": bench.results,
        "targets": checks,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    log(f"results written to {path} (total {document['total_seconds']}s)")
    if args.keep:
        log(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
