"""The worst filters still accepted under the filter limits, timed through the real app.

    .venv/bin/python bench/worst_filter.py [--users 10000] [--runs 3]
    BRIDGE_BENCH_POSTGRES_URL=postgresql://… .venv/bin/python bench/worst_filter.py

Seeds N users with 2,048-character titles and a 2,048-character work email (the longest string
the door accepts, ``Settings.max_string_length``) straight through the store, then sends each
filter below as ``GET /Users?filter=…&count=100`` to the real ASGI app (httpx in process) and
prints the median of a few runs, on SQLite and, with ``BRIDGE_BENCH_POSTGRES_URL`` (a server
whose ``postgres`` database it may create a scratch database from), on PostgreSQL. Each filter
is at most ``max_filter_terms`` (64) comparisons, ``max_filter_length`` (8,192) characters and
``MAX_FILTER_NESTING`` (16) levels deep: the limits are checked before the clock starts. The
substrings are absent, or present in every row, so that no term short-circuits. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.config import Settings  # noqa: E402
from bridge.provision import Provisioner  # noqa: E402
from bridge.schemas import load_catalog  # noqa: E402
from bridge.scim.app import create_app  # noqa: E402
from bridge.scim.auth import Authenticator  # noqa: E402
from bridge.scim.params import MAX_FILTER_NESTING  # noqa: E402
from bridge.scim.params import check_filter_size  # noqa: E402
from bridge.store.engine import connect  # noqa: E402
from bridge.store.resources import Record  # noqa: E402
from bridge.store.resources import ResourceStore  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
TOKEN = "bench-token"
LENGTH = Settings.max_string_length
TERMS = Settings.max_filter_terms
MAX_LENGTH = Settings.max_filter_length
SHARED = "".join(random.Random(1).choices(string.ascii_lowercase, k=400))
"""400 characters found in every title (its end) and email: substrings of it match every row."""


def long_text(rng: random.Random, length: int, *, shared_at: int | None = None) -> str:
    """Random letters with ``SHARED`` at ``shared_at`` (by default: at the end)."""
    body = "".join(rng.choices(string.ascii_letters + " ", k=length - len(SHARED)))
    at = len(body) if shared_at is None else shared_at
    return body[:at] + SHARED + body[at:]


def seed(url: str, users: int) -> float:
    catalog = load_catalog(ROOT / "schemas")
    db = connect(url)
    db.upgrade()
    store = ResourceStore({"User": catalog.user, "Group": catalog.group}, db.dialect)
    rng = random.Random(7)
    now = datetime.now(UTC)
    started = time.perf_counter()
    for start in range(0, users, 2000):
        with db.write() as conn:
            for number in range(start, min(start + 2000, users)):
                user_name = f"user{number}@example.com"
                # A key over 1,024 bytes is indexed by its first 896 (bridge.store.values):
                # SHARED sits inside them, so that ``co`` can find it.
                email = long_text(rng, LENGTH - 12, shared_at=400) + "@example.com"
                doc = {
                    "schemas": [USER],
                    "userName": user_name,
                    "title": long_text(rng, LENGTH),
                    "emails": [{"value": email, "type": "work", "primary": True}],
                }
                store.insert(
                    conn,
                    Record(
                        pk=0,
                        id=str(uuid.uuid4()),
                        type="User",
                        external_id=None,
                        name=user_name,
                        display=None,
                        active=True,
                        doc=doc,
                        version=1,
                        created=now,
                        last_modified=now,
                    ),
                )
    if db.dialect == "postgresql":
        with db.write() as conn:
            conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return time.perf_counter() - started


def needles(count: int, width: int, *, present: bool) -> list[str]:
    """``count`` distinct substrings ``width`` long: absent from every row, or in every row."""
    if present:
        return [SHARED[i : i + width] for i in range(count)]
    return [f"{i:03d}#" + "#" * (width - 4) for i in range(count)]


def chain(
    term: Callable[[str], str], joiner: str, *, present: bool = False, slack: int = 64
) -> str:
    """``TERMS`` terms joined by ``joiner``, each needle as long as the length limit allows
    (``slack`` characters left for what surrounds the chain)."""
    overhead = len(term("")) + len(joiner)
    width = min(LENGTH, (MAX_LENGTH - slack) // TERMS - overhead)
    return joiner.join(term(n) for n in needles(TERMS, width, present=present))


def nested(inner: str, depth: int) -> str:
    """``inner`` under ``depth`` levels of ``not (…)`` (an even number: the same matches)."""
    return "not (" * depth + inner + ")" * depth


def worst_filters() -> dict[str, str]:
    half = TERMS // 2
    or_titles = " or ".join(f'title co "{n}"' for n in needles(half, 100, present=False))
    or_emails = " or ".join(f'emails[value co "{n}"]' for n in needles(half, 90, present=False))
    deep = MAX_FILTER_NESTING - 2
    inner_terms = " or ".join(f'value co "{n}"' for n in needles(TERMS - 1, 100, present=False))
    return {
        "64 title co (or, absent)": chain(lambda n: f'title co "{n}"', " or "),
        "64 title co (and, present)": chain(lambda n: f'title co "{n}"', " and ", present=True),
        "64 title ew (or, absent)": chain(lambda n: f'title ew "{n}"', " or "),
        "64 title gt (or)": chain(lambda n: f'title gt "{n}"', " or "),
        "64 emails[value co] (or, absent)": chain(lambda n: f'emails[value co "{n}"]', " or "),
        "64 emails[value co] (and, present)": chain(
            lambda n: f'emails[value co "{n}"]', " and ", present=True
        ),
        "64 emails.value co (or, absent)": chain(lambda n: f'emails.value co "{n}"', " or "),
        "1 emails[64 value co] (or, absent)": f"emails[{inner_terms}]",
        "64 name.givenName co (or, absent)": chain(lambda n: f'name.givenName co "{n}"', " or "),
        "64 not (title co) (and)": chain(lambda n: f'not (title co "{n}")', " and "),
        "32 title co + 32 emails[] (or)": f"{or_titles} or {or_emails}",
        f"{deep}x not, 64 title co": nested(
            chain(lambda n: f'title co "{n}"', " or ", slack=6 * deep + 64), deep
        ),
        f"{MAX_FILTER_NESTING} brackets, 64 co": "(" * (MAX_FILTER_NESTING - 1)
        + f'emails[{inner_terms}] or title co "x"'
        + ")" * (MAX_FILTER_NESTING - 1),
    }


async def time_filters(url: str, runs: int) -> dict[str, tuple[float, int, int]]:
    """Per filter: median seconds, status, totalResults."""
    catalog = load_catalog(ROOT / "schemas")
    db = connect(url, serving=True)
    settings = Settings(database_url=url, scim_token=TOKEN)
    app = create_app(
        Provisioner(db, catalog), catalog, settings, Authenticator(db, env_token=TOKEN)
    )
    results: dict[str, tuple[float, int, int]] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench/scim/v2",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=600,
    ) as client:
        for name, filter_text in worst_filters().items():
            timings = []
            status = total = 0
            for _ in range(runs):
                started = time.perf_counter()
                response = await client.get(
                    "/Users", params={"filter": filter_text, "count": "100", "attributes": "id"}
                )
                timings.append(time.perf_counter() - started)
                status = response.status_code
                total = int(response.json().get("totalResults", -1))
                if status != 200:
                    print(f"  {name}: {status} {response.text[:300]}", file=sys.stderr)
                    break
            results[name] = (statistics.median(timings), status, total)
            print(f"  {name}: {results[name][0] * 1000:.0f} ms", file=sys.stderr)
    db.dispose()
    return results


def scratch_postgres(base: str) -> tuple[str, Callable[[], None]]:
    url = make_url(base.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"bench_worst_filter_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for filter_text in worst_filters().values():
        check_filter_size(filter_text)  # every filter here is accepted under the limits
    databases: list[tuple[str, str, Callable[[], None]]] = []
    directory = tempfile.mkdtemp(prefix="worst-filter-")
    databases.append(("sqlite", f"sqlite:///{directory}/bridge.db", lambda: None))
    postgres = os.environ.get("BRIDGE_BENCH_POSTGRES_URL")
    if postgres:
        databases.append(("postgresql", *scratch_postgres(postgres)))
    table: dict[str, dict[str, tuple[float, int, int]]] = {}
    try:
        for kind, url, _drop in databases:
            print(f"{kind}: seeding {args.users} users", file=sys.stderr)
            print(f"{kind}: seeded in {seed(url, args.users):.1f} s", file=sys.stderr)
            table[kind] = asyncio.run(time_filters(url, args.runs))
    finally:
        for _kind, _url, drop in databases:
            drop()
    kinds = list(table)
    lengths = {name: len(f) for name, f in worst_filters().items()}
    print(f"\nmedian of {args.runs} runs, {args.users} users, GET /Users?count=100")
    print(f"{'filter':<36} {'chars':>6} " + " ".join(f"{k:>16}" for k in kinds))
    for name in worst_filters():
        cells = []
        for kind in kinds:
            seconds, status, total = table[kind][name]
            cells.append(
                f"{seconds * 1000:>9.0f} ms {total:>4}" if status == 200 else f"{status:>16}"
            )
        print(f"{name:<36} {lengths[name]:>6} " + " ".join(cells))
    for kind in kinds:
        name, (seconds, _status, _total) = max(table[kind].items(), key=lambda item: item[1][0])
        print(f"worst accepted filter on {kind}: {seconds * 1000:.0f} ms ({name})")


if __name__ == "__main__":
    main()
