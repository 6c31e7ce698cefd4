#!/usr/bin/env python
"""Profile the bridge's hot request paths: py-spy on a live ``bridge serve``, or cProfile.

``--mode live`` (default) starts ``bridge serve`` as ``bench/scim.py`` does (fresh SQLite
file, or ``--database URL``), drives each path with the same client at ``--concurrency``,
and samples the server with py-spy (``--gil``: only the thread holding the GIL, i.e. where
the Python CPU goes, in every thread: event loop, threadpool, writer thread). Needs py-spy
(``.venv/bin/pip install py-spy``).

``--mode inprocess`` builds the app with ``bridge.cli.serving.build_app`` and drives it through
``httpx.ASGITransport`` under cProfile, with ``run_in_threadpool`` made inline so the
handlers' work shows (cProfile sees one thread: work done by other threads, such as a
writer thread, shows only as the wait for it).

Usage::

    .venv/bin/python bench/profile_bridge.py [--mode live|inprocess]
        [--paths post,get-eq,get-valuepath,patch-member] [--seconds 15] [--top 25]
        [--bridge-src DIR|git:REV]

Prints, per path, ms of server CPU per request, the share of samples per package, and the
top functions by own (self) and by inclusive time; writes ``bench/results/profile-<path>.*``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "bench"

# Package buckets, first match wins, on the path of a function's file.
BUCKETS = [
    ("bridge/scim/", "bridge.scim"),
    ("bridge/provision", "bridge.provision"),
    ("bridge/store/", "bridge.store"),
    ("bridge/auth/", "bridge.auth"),
    ("bridge/", "bridge (other)"),
    ("sqlalchemy/", "sqlalchemy"),
    ("sqlmodel/", "sqlmodel"),
    ("scim2_models/", "scim2_models"),
    ("pydantic_core/", "pydantic"),
    ("pydantic/", "pydantic"),
    ("starlette/", "starlette"),
    ("httpx/", "httpx (client)"),
    ("httpcore/", "httpx (client)"),
    ("anyio/", "anyio (threadpool)"),
    ("threading.py", "threading"),
    ("uvicorn/", "uvicorn"),
    ("click/", "click"),
    ("asyncio/", "asyncio"),
    ("logging/", "logging"),
    ("json/", "json"),
    ("sqlite3", "sqlite3"),
    ("psycopg", "psycopg"),
    ("uuid", "uuid"),
]


def bucket(filename: str, function: str) -> str:
    for needle, name in BUCKETS:
        if needle in filename:
            return name
    if filename == "~":  # built-ins: name them by what they are
        if "sqlite3" in function:
            return "sqlite3 (C)"
        if "pydantic_core" in function or "validate_python" in function:
            return "pydantic"
        return "builtins"
    return "other"


def by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        totals[bucket(filename, function)] += tottime
    return sorted(totals.items(), key=lambda kv: -kv[1])


def user_body(i: int) -> dict[str, Any]:
    name = f"bench.user{i:06d}"
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "externalId": f"ext-{name}",
        "name": {"givenName": "Bench", "familyName": f"User{i}"},
        "displayName": f"Bench User{i}",
        "active": True,
        "emails": [
            {"type": "work", "value": f"{name}@work.example.com", "primary": True},
            {"type": "home", "value": f"{name}@home.example.net"},
        ],
    }


def build(database_url: str, src: Path) -> Any:
    os.environ.update(
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_SCIM_TOKEN=TOKEN,
        BRIDGE_SCHEMAS=str(src / "schemas"),
        BRIDGE_RULES=str(src / "rules"),
    )
    sys.path.insert(0, str(src))
    import logging

    from bridge.config import Settings

    try:
        from bridge.cli.logs import configure_logging
        from bridge.cli.serving import build_app
    except ModuleNotFoundError:  # a --bridge-src from before bridge/cli.py became a package
        from bridge.cli import build_app  # type: ignore[attr-defined,no-redef]
        from bridge.cli import configure_logging  # type: ignore[attr-defined,no-redef]

    settings = Settings.from_env()
    configure_logging(settings)  # as `bridge serve`: one INFO line per request
    handler = logging.getLogger().handlers[0]
    handler.stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    app = build_app(settings)

    async def inline(func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    import bridge.scim.app as scim_app

    scim_app.run_in_threadpool = inline  # type: ignore[assignment]
    return app


async def run_path(client: Any, name: str, count: int, ctx: dict[str, Any]) -> int:
    headers = {"Content-Type": "application/scim+json"}
    if name == "post":
        start = ctx.setdefault("next_user", 0)
        for i in range(start, start + count):
            r = await client.post(
                "/scim/v2/Users", content=json.dumps(user_body(i)), headers=headers
            )
            assert r.status_code == 201, r.text
            ctx.setdefault("ids", []).append(r.json()["id"])
        ctx["next_user"] = start + count
        return count
    users = ctx["next_user"]
    if name == "get-eq":
        for i in range(count):
            f = f'userName eq "bench.user{(i * 7919) % users:06d}"'
            r = await client.get("/scim/v2/Users", params={"filter": f})
            assert r.status_code == 200 and r.json()["totalResults"] == 1, r.text
        return count
    if name == "get-valuepath":
        for i in range(count):
            email = f"bench.user{(i * 7919) % users:06d}@work.example.com"
            f = f'emails[type eq "work" and value eq "{email}"]'
            r = await client.get("/scim/v2/Users", params={"filter": f})
            assert r.status_code == 200 and r.json()["totalResults"] == 1, r.text
        return count
    if name == "patch-member":
        ids = ctx["ids"]
        if "group" not in ctx:
            body = {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "profile-group",
                "members": [{"value": m} for m in ids[100:]],
            }
            r = await client.post("/scim/v2/Groups", content=json.dumps(body), headers=headers)
            assert r.status_code == 201, r.text
            ctx["group"] = r.json()["id"]
        path = f"/scim/v2/Groups/{ctx['group']}"
        schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
        done = 0
        for i in range(count // 2):
            member = ids[i % 100]
            for op in (
                {"op": "add", "path": "members", "value": [{"value": member}]},
                {"op": "remove", "path": f'members[value eq "{member}"]'},
            ):
                body = {"schemas": [schema], "Operations": [op]}
                r = await client.patch(path, content=json.dumps(body), headers=headers)
                assert r.status_code in (200, 204), r.text
                done += 1
        return done
    raise SystemExit(f"unknown path {name!r}")


async def main_async(args: argparse.Namespace) -> None:

    tmp = Path(tempfile.mkdtemp(prefix="scim-profile-"))
    try:
        await _inprocess(args, tmp)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


async def _inprocess(args: argparse.Namespace, tmp: Path) -> None:
    import httpx

    url = args.database or f"sqlite:///{tmp / 'profile.db'}"
    app = build(url, Path(args.bridge_src).resolve() if args.bridge_src else ROOT)
    transport = httpx.ASGITransport(app=app)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ctx: dict[str, Any] = {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as client:
        # Warm up: first requests import lazily and fill SQLAlchemy's statement cache.
        await run_path(client, "post", 50, ctx)
        await run_path(client, "get-eq", 50, ctx)
        for name in args.paths:
            count = args.users if name == "post" else args.lookups
            if name == "patch-member":
                count = min(count, 400)
            if name != "post" and ctx["next_user"] < 200:
                await run_path(client, "post", 200, ctx)
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            done = await run_path(client, name, count, ctx)
            profiler.disable()
            wall = time.perf_counter() - started
            profiler.dump_stats(RESULTS / f"profile-{name}.prof")
            stats = pstats.Stats(profiler)
            total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
            print(
                f"\n=== {name}: {done} requests, {wall * 1000 / done:.2f} ms/request under "
                f"cProfile (in-process, ASGITransport, inline threadpool) ==="
            )
            print("own time by package (% of profiled time):")
            for package, seconds in by_package(stats)[:14]:
                print(
                    f"  {package:<18} {100 * seconds / total:5.1f}%  "
                    f"{seconds * 1000 / done:6.3f} ms/request"
                )
            for order in ("tottime", "cumulative"):
                buffer = io.StringIO()
                pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(order).print_stats(
                    args.top
                )
                text = buffer.getvalue()
                body = text[text.find("   ncalls") :]
                print(f"top {args.top} by {order}:")
                print(body.rstrip())


# ---------------------------------------------------------------------------------------------
# Live mode: py-spy on `bridge serve`
# ---------------------------------------------------------------------------------------------


def parse_raw(path: Path) -> tuple[int, dict[str, int], dict[str, int], dict[str, int]]:
    """py-spy ``--format raw`` (collapsed stacks): total, self, inclusive and package counts."""
    total = 0
    own: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    packages: dict[str, int] = defaultdict(int)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own[leaf] += count
        function, _, where = leaf.partition(" (")
        packages[bucket(where, function)] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own, inclusive, packages


def short(frame: str) -> str:
    """``function (…/site-packages/pkg/mod.py:12)`` → ``function (pkg/mod.py:12)``."""
    function, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "bridge-src-", "/work/main/", "python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "bridge-src-":
                where = where.split("/", 1)[1]
            break
    return f"{function} ({where})"


async def live(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import scim  # bench/scim.py: its servers and client

    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="scim-profile-"))
    src, label = scim.bridge_source(args.bridge_src, tmp)
    url = args.database or f"sqlite:///{tmp / 'profile.db'}"
    server = scim.bridge_server("bridge", url, tmp, src)
    print(f"bridge from {label}; database {url.split('@')[-1]}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        server.wait_ready()
        assert server.proc is not None
        await scim.open_clients(server, args.concurrency)
        names = [scim.user_name("prof", i) for i in range(200_000)]
        created: list[tuple[str, str]] = []
        for path in args.paths:
            if path == "post":
                start = len(created)
                requests = [
                    scim.Req("POST", "/Users", json.dumps(scim.user_body(n)).encode())
                    for n in names[start : start + 60_000]
                ]
                check: Any = scim.created_check
                conc = args.concurrency
            else:
                if len(created) < 1200:  # the other paths need users
                    extra = [
                        scim.Req("POST", "/Users", json.dumps(scim.user_body(n)).encode())
                        for n in names[len(created) : 1200]
                    ]
                    values: list[Any] = [None] * len(extra)
                    await scim.drive(
                        server,
                        extra,
                        scim.created_check,
                        args.concurrency,
                        None,
                        scim.Tally(),
                        values,
                    )
                    offset = len(created)
                    created += [(names[offset + i], v) for i, v in enumerate(values) if v]
                pool = [n for n, _ in created]
                conc = args.concurrency if path == "get-eq" else 1
                check = scim.one_result_check(server)
                if path == "get-eq":
                    requests = [
                        scim.Req(
                            "GET", "/Users", params={"filter": scim.eq_filter(pool[i % len(pool)])}
                        )
                        for i in range(0, 400_000, 7)
                    ]
                elif path == "get-valuepath":
                    requests = [
                        scim.Req(
                            "GET",
                            "/Users",
                            params={"filter": scim.value_path_filter(pool[i % len(pool)])},
                        )
                        for i in range(0, 100_000, 7)
                    ]
                elif path == "patch-member":
                    ids = [i for _, i in created]
                    group_id, _ = await scim.build_group(server, 1000, ids[200:1200], 5000)
                    requests = []
                    schema = scim.PATCH_SCHEMA
                    for i in range(20_000):
                        member = ids[i % 200]
                        add = {"op": "add", "path": "members", "value": [{"value": member}]}
                        rem = {"op": "remove", "path": f'members[value eq "{member}"]'}
                        for op in (add, rem):
                            requests.append(
                                scim.Req(
                                    "PATCH",
                                    f"/Groups/{group_id}",
                                    json.dumps({"schemas": [schema], "Operations": [op]}).encode(),
                                )
                            )
                    check = scim.patched_check
                else:
                    raise SystemExit(f"unknown path {path!r}")
            raw = RESULTS / f"profile-{path}.txt"
            spy = await asyncio.create_subprocess_exec(
                str(pyspy),
                "record",
                "--pid",
                str(server.proc.pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--gil",
                "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            tally = scim.Tally()
            values = [None] * len(requests)
            await scim.drive(server, requests, check, conc, args.seconds + 1.5, tally, values)
            _, err = await spy.communicate()
            if path == "post":
                offset = len(created)
                created += [(names[offset + i], v) for i, v in enumerate(values) if v]
            result = tally.summary(conc)
            print(
                f"\n=== {path}: {result['ok']} ok of {result['done']} at concurrency {conc}: "
                f"{result['rps']} req/s, p50 {result['p50_ms']} ms, server CPU "
                f"{result['server_cpu_ms_per_ok']} ms/request ==="
            )
            if not raw.exists():
                print(f"py-spy wrote nothing: {err.decode()[-500:]}")
                continue
            total, own, inclusive, packages = parse_raw(raw)
            if not total:
                print("no samples")
                continue
            cpu = result["server_cpu_ms_per_ok"] or 0.0
            print(f"{total} samples with the GIL held; share of them (≈ ms of CPU per request):")
            for package, count in sorted(packages.items(), key=lambda kv: -kv[1])[:14]:
                print(
                    f"  {package:<18} {100 * count / total:5.1f}%  ≈{cpu * count / total:6.3f} ms"
                )
            ours = {f: c for f, c in inclusive.items() if re.search(r"[(/]bridge/", f)}
            for title, table in (("self", own), ("inclusive, bridge's own functions", ours)):
                print(f"top {args.top} by {title} samples:")
                for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[: args.top]:
                    print(f"  {100 * count / total:5.1f}%  {short(frame)}")
    finally:
        await scim.close_clients(server)
        server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["live", "inprocess"], default="live")
    p.add_argument("--seconds", type=float, default=15, help="live: seconds sampled per path")
    p.add_argument("--rate", type=int, default=250, help="live: py-spy samples per second")
    p.add_argument("--concurrency", type=int, default=16, help="live: POST and GET-eq (16)")
    p.add_argument("--keep", action="store_true", help="live: keep the temp dir")
    p.add_argument("--users", type=int, default=1000, help="inprocess: POSTs profiled (1000)")
    p.add_argument("--lookups", type=int, default=1000, help="GETs profiled per path (1000)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--paths",
        type=lambda s: [x for x in s.split(",") if x],
        default=["post", "get-eq"],
        help="post,get-eq,get-valuepath,patch-member (post,get-eq)",
    )
    p.add_argument("--database", help="a database URL instead of a fresh SQLite file")
    p.add_argument(
        "--bridge-src", help="DIR or git:REV to import the bridge from (default: work tree)"
    )
    args = p.parse_args()
    if args.mode == "live":
        asyncio.run(live(args))
    else:
        if args.bridge_src and args.bridge_src.startswith("git:"):
            raise SystemExit("--mode inprocess takes a directory as --bridge-src")
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
