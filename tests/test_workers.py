"""``bridge serve --workers N`` through real processes: writes of several processes to one
database are all durable and unique, and the relay runs once, in the supervisor.

Each server runs in a session of its own (its own process group: the supervisor, uvicorn's
workers and multiprocessing's resource tracker), so ``kill -9`` of the group takes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import BinaryIO

import httpx
import pytest

from bridge.cli.rules import check_rules
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.store import journal
from bridge.store import outbox
from bridge.store.engine import connect
from tests.conftest import ROOT
from tests.conftest import SCIM_JSON
from tests.conftest import TOKEN
from tests.conftest import employee
from tests.conftest import free_port
from tests.conftest import shipped_rules
from tests.conftest import user_payload
from tests.pilots import draw
from tests.test_delivery import assert_effectively_once

WORKERS = 2
# Connections are pinned to workers one by one before they are used: on a loaded machine that
# takes longer than the default 5 s an idle connection is kept.
COMMAND = [
    sys.executable,
    "-c",
    "from bridge.cli import main; main()",
    "serve",
    "--keep-alive",
    "120",
]


def group_processes(pgid: int) -> dict[int, tuple[int, str]]:
    """The live (not zombie) processes of a process group: pid → (parent pid, command line)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found[int(entry)] = (int(ppid), cmdline.replace(b"\0", b" ").decode())
    return found


def connection_owner(pids: list[int], port: int, client_port: int) -> int | None:
    """Which of ``pids`` holds the server end of the TCP connection ``client_port`` → ``port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                if (
                    int(local.rsplit(":", 1)[1], 16) == port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                    and state == "01"  # established
                ):
                    inode = f"socket:[{fields[9]}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == inode:
                    return pid
    return None


def client_port(response: httpx.Response) -> int:
    """The local port of the connection a response came on."""
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


class Server:
    """One ``bridge serve --workers N``, in a process group of its own."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = WORKERS) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log: BinaryIO = log.open("ab")
        self.process = subprocess.Popen(
            [*COMMAND, "--workers", str(workers), "--port", str(self.port)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"bridge serve exited {self.process.returncode}:\n{self.text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"bridge serve never answered /healthz:\n{self.text()}")

    def workers(self) -> list[int]:
        """The pids of uvicorn's worker processes (spawned children of the supervisor)."""
        return [
            pid
            for pid, (ppid, cmdline) in group_processes(self.process.pid).items()
            if ppid == self.process.pid and "spawn_main" in cmdline
        ]

    def text(self) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """``kill -9`` of the whole process group; returns once none of it is left running."""
        if self._log.closed:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while group_processes(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not group_processes(self.process.pid), "the process group outlived kill -9"
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Server]]:
    """Start ``bridge serve --workers 2`` servers; every one is killed at the end of the test."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        server = Server(env, tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def bridge_env(database_url: str, rules: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_SCIM_TOKEN": TOKEN,
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
        "BRIDGE_RULES": str(rules),
        **extra,
    }


def scim_client(server: Server, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{server.url}/scim/v2",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": SCIM_JSON},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=30,
    )


@dataclass
class Pinned:
    """A one-connection client whose connection a known worker accepted."""

    client: httpx.AsyncClient
    worker: int
    port: int

    async def post(self, body: dict[str, Any]) -> tuple[int, httpx.Response]:
        response = await self.client.post("/Users", json=body)
        assert client_port(response) == self.port, "the connection was not kept alive"
        return self.worker, response


async def pinned(stack: AsyncExitStack, server: Server, per_worker: int) -> list[Pinned]:
    """``per_worker`` open connections to each worker, interleaved: the kernel hands each new
    connection to whichever worker accepts it first, and one worker may take a whole burst of
    them, so they are opened one by one until every worker holds its share."""
    workers = server.workers()
    held: dict[int, list[Pinned]] = {pid: [] for pid in workers}
    for _ in range(20 * per_worker * len(workers)):
        if all(len(share) == per_worker for share in held.values()):
            break
        client = scim_client(server, 1)
        response = await client.get(f"{server.url}/healthz")
        port = client_port(response)
        owner = connection_owner(workers, server.port, port)
        if owner is None or len(held[owner]) == per_worker:
            await client.aclose()
            continue
        stack.push_async_callback(client.aclose)
        held[owner].append(Pinned(client, owner, port))
    shares = {pid: len(share) for pid, share in held.items()}
    assert all(n == per_worker for n in shares.values()), f"connections per worker: {shares}"
    return [p for row in zip(*held.values(), strict=True) for p in row]


async def find(client: httpx.AsyncClient, user_name: str) -> list[dict[str, Any]]:
    response = await client.get("/Users", params={"filter": f'userName eq "{user_name}"'})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totalResults"] == len(body["Resources"])
    return list(body["Resources"])


async def total_users(client: httpx.AsyncClient) -> int:
    response = await client.get("/Users", params={"count": 0})
    assert response.status_code == 200, response.text
    return int(response.json()["totalResults"])


# -- every 201 of every worker is durable, and distinct ------------------------------------------

PEOPLE = 200


def test_creates_over_two_workers_are_distinct_and_survive_kill_9(
    serve: Callable[[dict[str, str]], Server], tmp_path: Path, database_url: str
) -> None:
    if database_url.startswith("sqlite:///"):  # no file at all: the supervisor creates it
        Path(database_url.removeprefix("sqlite:///")).unlink()
    env = bridge_env(database_url, tmp_path / "no-rules")
    names = [f"worker.user.{number:03d}@example.com" for number in range(PEOPLE)]
    server = serve(env)
    workers = server.workers()
    assert len(workers) == WORKERS, group_processes(server.process.pid)

    async def create_all() -> dict[str, str]:
        async with AsyncExitStack() as stack:
            clients = await pinned(stack, server, per_worker=8)
            answers = await asyncio.gather(
                *(
                    clients[number % len(clients)].post(user_payload(name))
                    for number, name in enumerate(names)
                )
            )
        for _, answer in answers:
            assert answer.status_code == 201, answer.text
        assert Counter(worker for worker, _ in answers) == {
            pid: PEOPLE // WORKERS for pid in workers
        }
        ids = {answer.json()["userName"]: answer.json()["id"] for _, answer in answers}
        async with scim_client(server, 16) as client:
            founds = await asyncio.gather(*(find(client, name) for name in names))
            for name, found in zip(names, founds, strict=True):
                assert [user["id"] for user in found] == [ids[name]]
            assert await total_users(client) == PEOPLE
        return ids

    ids = asyncio.run(create_all())
    assert sorted(ids) == sorted(names)
    assert len(set(ids.values())) == PEOPLE

    server.kill()
    restarted = serve(env)

    async def read_back() -> None:
        async with scim_client(restarted, 16) as client:
            assert await total_users(client) == PEOPLE
            founds = await asyncio.gather(*(find(client, name) for name in names))
            for name, found in zip(names, founds, strict=True):
                assert [user["id"] for user in found] == [ids[name]]

    asyncio.run(read_back())


# -- uniqueness across processes is the database's ------------------------------------------------


def test_one_user_name_created_concurrently_by_two_workers_is_created_once(
    serve: Callable[[dict[str, str]], Server], tmp_path: Path, database_url: str
) -> None:
    server = serve(bridge_env(database_url, tmp_path / "no-rules"))
    name = "contended@example.com"

    async def race() -> None:
        async with AsyncExitStack() as stack:
            clients = await pinned(stack, server, per_worker=10)
            answers = await asyncio.gather(
                *(clients[number % len(clients)].post(user_payload(name)) for number in range(100))
            )
        statuses = Counter(answer.status_code for _, answer in answers)
        assert statuses == {201: 1, 409: 99}, statuses
        assert len({worker for worker, _ in answers}) == WORKERS
        for _, answer in answers:
            if answer.status_code == 409:
                assert answer.json()["scimType"] == "uniqueness", answer.text
        created = next(answer.json() for _, answer in answers if answer.status_code == 201)
        async with scim_client(server, 1) as client:
            assert [user["id"] for user in await find(client, name)] == [created["id"]]
            assert await total_users(client) == 1

    asyncio.run(race())


# -- the relay runs once, in the supervisor -------------------------------------------------------


def test_the_relay_runs_once_and_creates_each_account_once(
    serve: Callable[[dict[str, str]], Server],
    tmp_path: Path,
    database_url: str,
    simulator_url: tuple[str, Any],
    catalog: Catalog,
) -> None:
    url, app = simulator_url
    rules = shipped_rules(tmp_path, url)
    env = bridge_env(
        database_url, rules, MOODLE_TOKEN=SIM_MOODLE_TOKEN, BRIDGE_RELAY_LEASE_SECONDS="5"
    )
    server = serve(env)
    people = 12
    payloads = [
        employee(
            number, codes=["BEN_CHOICE_2026", "MANAGER"] if number % 4 == 0 else ["BEN_CHOICE_2026"]
        )
        for number in range(people)
    ]

    async def create_all() -> None:
        async with scim_client(server, 8) as client:
            answers = await asyncio.gather(*(client.post("/Users", json=p) for p in payloads))
            for answer in answers:
                assert answer.status_code == 201, answer.text

    asyncio.run(create_all())
    db = connect(database_url)
    try:
        book = RuleBook(rules, lambda d: check_rules(d, catalog))
        book.load()
        # day 0: the capped pilot is drawn (plan + apply), as an admin would; the relay in
        # the supervisor delivers what the draw enqueued
        assert draw(Provisioner(db, catalog, rules=book.current)) >= 3 * people
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.read() as conn:
                if outbox.backlog(conn) == 0:
                    break
            time.sleep(0.1)
        with db.read() as conn:
            assert outbox.backlog(conn) == 0, server.text()
            assert outbox.dead_letters(conn) == []
            delivered = [
                e for e in journal.read(conn, limit=100_000) if e.op.startswith("deliver.")
            ]
    finally:
        db.dispose()
    assert delivered
    assert len({entry.actor for entry in delivered}) == 1, "one relay delivered everything"
    assert server.text().count("started for targets") == 1, server.text()
    state = app.state.moodle.snapshot()
    assert_effectively_once(state, people)
    # one account created per person, and one for the preflight's own probe account (made
    # once), in batched calls: fewer calls than rows
    assert state["rows"].get("core_user_create_users") == people + 1, state["rows"]
    assert state["calls"].get("core_user_create_users", 0) < people, state["calls"]
    managers = [e for e in state["enrolments"] if e["course"] == "BEN-2026-MGR"]
    assert len(managers) == len(range(0, people, 4))
    members = Counter((m["cohortid"], m["userid"]) for m in state["cohort_members"])
    assert all(count == 1 for count in members.values())
    scrape_all_workers(server, database_url, posted=people, delivered=len(delivered))


def scrape_all_workers(server: Server, database_url: str, *, posted: int, delivered: int) -> None:
    """``/metrics`` of a ``--workers N`` server sums every process (prometheus-client's
    multiprocess mode): each worker answering a scrape reports the POSTs all workers took,
    and the deliveries of the relay in the supervisor."""
    from bridge.auth.tokens import parse_scopes
    from bridge.provision.resources import now_utc
    from bridge.store import tokens

    db = connect(database_url)
    try:
        with db.write() as conn:
            tokens.create(conn, "prometheus", "brg_scrape", parse_scopes("metrics"), now_utc())
    finally:
        db.dispose()
    route = 'route="/scim/v2/{endpoint:resource}"'

    async def scrape_each_worker() -> set[int]:
        answered = set()
        async with AsyncExitStack() as stack:
            for held in await pinned(stack, server, per_worker=1):
                text = (
                    await held.client.get(
                        f"{server.url}/metrics", headers={"Authorization": "Bearer brg_scrape"}
                    )
                ).text
                posts = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("bridge_http_requests_total{")
                    and route in line
                    and 'method="POST"' in line
                    and 'status="201"' in line
                )
                assert posts == posted, text
                sent = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("bridge_deliveries_total{") and 'outcome="done"' in line
                )
                assert sent >= delivered, text
                answered.add(held.worker)
        return answered

    assert len(asyncio.run(scrape_each_worker())) == WORKERS
