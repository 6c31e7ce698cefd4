"""``/metrics`` scrape time over a large population: the median of N scrapes of the real app.

    .venv/bin/python bench/metrics.py [--people 100000] [--scrapes 50] [--postgres URL]

Seeds N people straight through the store (one transaction per 5,000) and, per person, the
outbox history a running bridge accumulates: three delivered rows each (``done``, history the
scrape must not count row by row) and a backlog across two targets (8 % pending, 1 % retry,
0.3 % dead, 0.5 % quarantined), plus held runs, target health and a finished reconcile. Then
scrapes ``/metrics`` through the real ASGI app with a ``metrics`` token, N times, and reports
the median and p95, and the database read alone. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bridge.auth.tokens import parse_scopes  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.provision import Provisioner  # noqa: E402
from bridge.rules.book import RuleBook  # noqa: E402
from bridge.rules.check import check_directory  # noqa: E402
from bridge.schemas import load_catalog  # noqa: E402
from bridge.scim.app import create_app  # noqa: E402
from bridge.scim.auth import Authenticator  # noqa: E402
from bridge.scim.metrics import state_reader  # noqa: E402
from bridge.store import health  # noqa: E402
from bridge.store import outbox  # noqa: E402
from bridge.store import runs  # noqa: E402
from bridge.store import schedule_runs  # noqa: E402
from bridge.store import tokens  # noqa: E402
from bridge.store.engine import Database  # noqa: E402
from bridge.store.engine import connect  # noqa: E402
from bridge.store.resources import Record  # noqa: E402
from bridge.store.resources import ResourceStore  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
TOKEN = "brg_bench-metrics"
CHUNK = 5000
BACKLOG = (("pending", 0.08), ("retry", 0.01), ("dead", 0.003), ("quarantined", 0.005))


def intent(person: str, target: str, kind: str) -> dict[str, Any]:
    return {"kind": kind, "person": person, "target": target, "rule": "benefits-2026"}


def seed(db: Database, people: int) -> float:
    catalog = load_catalog(ROOT / "schemas")
    store = ResourceStore({"User": catalog.user, "Group": catalog.group}, db.dialect)
    started = time.perf_counter()
    now = datetime.now(UTC)
    for start in range(0, people, CHUNK):
        numbers = range(start, min(start + CHUNK, people))
        ids = {n: str(uuid.uuid4()) for n in numbers}
        with db.write() as conn:
            for n in numbers:
                name = f"person{n}@example.com"
                doc = {"schemas": [USER], "userName": name, "externalId": f"E{n:07d}"}
                store.insert(
                    conn,
                    Record(
                        pk=0,
                        id=ids[n],
                        type="User",
                        external_id=f"E{n:07d}",
                        name=name,
                        display=name,
                        active=True,
                        doc=doc,
                        version=1,
                        created=now,
                        last_modified=now,
                    ),
                )
            history = [
                intent(ids[n], "moodle", kind)
                for n in numbers
                for kind in ("upsert_account", "enrol", "add_cohort_member")
            ]
            outbox.enqueue(conn, history, now=now, status=outbox.DONE)
            for state, share in BACKLOG:
                owed = [
                    intent(ids[n], "moodle" if n % 3 else "canvas", "enrol")
                    for n in numbers
                    if (n * 7919) % 1000 < share * 1000
                ]
                outbox.enqueue(conn, owed, now=now, status=state)
    with db.write() as conn:
        for number in range(3):
            runs.create(
                conn,
                f"held{number}",
                kind=runs.HELD,
                status="quarantined",
                rules_version="bench",
                summary={"target": "moodle"},
                now=now,
                actor="bench",
            )
        health.save(conn, "moodle", health.OK, now=now)
        health.save(conn, "canvas", health.MISCONFIGURED, now=now, reason="bench")
        tokens.create(conn, "prometheus", TOKEN, parse_scopes("metrics"), now)
        claimed = schedule_runs.claim(
            conn,
            job_key="benefits-2026/reconcile",
            rule_file="benefits-2026",
            job="reconcile",
            occurrence=now,
            worker="bench",
            now=now,
        )
        assert claimed is not None
        schedule_runs.finish(conn, claimed, state=schedule_runs.DONE, now=now)
    return time.perf_counter() - started


async def scrape_times(db: Database, scrapes: int) -> dict[str, Any]:
    catalog = load_catalog(ROOT / "schemas")
    book = RuleBook(ROOT / "rules", lambda d: check_directory(d, catalog))
    book.load()
    provisioner = Provisioner(db, catalog, rules=book.current)
    app = create_app(provisioner, catalog, Settings(), Authenticator(db), book=book)
    reader = state_reader(db, book.current, book)
    read_ms = []
    for _ in range(scrapes):
        started = time.perf_counter()
        reader()
        read_ms.append((time.perf_counter() - started) * 1000)
    scrape_ms = []
    size = 0
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as http:
        for _ in range(scrapes):
            started = time.perf_counter()
            response = await http.get("/metrics")
            scrape_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
            size = len(response.content)
    return {
        "scrape_ms_p50": round(statistics.median(scrape_ms), 2),
        "scrape_ms_p95": round(sorted(scrape_ms)[int(0.95 * (len(scrape_ms) - 1))], 2),
        "state_read_ms_p50": round(statistics.median(read_ms), 2),
        "scrape_bytes": size,
    }


def counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        found = outbox.counts(conn)
    return {"outbox_rows": sum(found.values()), **{f"outbox_{k}": v for k, v in found.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--postgres", help="also run on this PostgreSQL server URL (scratch db)")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    urls = {"sqlite": f"sqlite:///{workdir / 'bench.db'}"}
    admin = scratch = None
    if options.postgres:
        from sqlalchemy import create_engine
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        base = make_url(options.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        scratch = f"metrics_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        urls["postgresql"] = base.set(database=scratch).render_as_string(hide_password=False)
    results: dict[str, Any] = {"people": options.people, "scrapes": options.scrapes}
    try:
        for name, url in urls.items():
            db = connect(url, serving=True)
            db.upgrade()
            try:
                seeded = seed(db, options.people)
                row = {"seed_s": round(seeded, 1), **counts(db)}
                row.update(asyncio.run(scrape_times(db, options.scrapes)))
            finally:
                db.dispose()
            results[name] = row
            print(f"{name}: {json.dumps(row)}")
    finally:
        if admin is not None:
            from sqlalchemy import text

            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            admin.dispose()
    out = ROOT / "bench" / "results" / f"metrics-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
