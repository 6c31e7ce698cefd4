"""Delivery to a rate-limited Moodle: batched vs one call per intent, and freshness.

    .venv/bin/python bench/deliver.py                  # batched 10,000 vs single 1,000 people
    .venv/bin/python bench/deliver.py --quick          # batched 1,000 vs single 200
    .venv/bin/python bench/deliver.py --freshness      # also: 20 SCIM writes/s for 60 s
    .venv/bin/python bench/deliver.py --freshness --only-freshness

Each variant starts its own LMS simulator (``bridge lmssim --rate-limit R --real-timing``:
~36 ms a Moodle call + ~10 ms per further row of a batch call, R calls/s, Moodle answers 429
above it) and its own bridge (``bridge serve``, relay in-process, a fresh SQLite file), then
POSTs people in the benefits pilot over SCIM (the pilot's cap taken off, so each write admits
its person) and waits until the outbox has drained. Variants:

- **batched** — the Moodle target as shipped: the relay hands it the claimed rows in batches
  (``deliver_many``, up to ``options.batch_size`` = 200 rows a call);
- **single** — the same with ``options.batch_size: 1``: one LMS call per intent. At 20
  calls/s, 10,000 people would take ~30 min, so it runs on ``--single-people`` (1,000) and the
  table gives its calls per person and the time projected for the batched population;
- **freshness** (``--freshness``) — batched, the LMS at ``--fresh-latency-ms`` (50) a call
  and R calls/s, ``--fresh-rate`` (20) SCIM writes a second for ``--fresh-seconds`` (60):
  write commit → LMS confirmed, p50/p95/p99, as ``bridge stats`` reads them from the outbox
  and the journal (``bridge.store.stats``).

Reported per variant: time to fully delivered (first POST → empty backlog), LMS calls
(counted by the simulator: answered, throttled), calls per person, calls/s while draining
(while the backlog is above 10 % of its peak) as a share of R, and the latency of changes.
One table on stdout; JSON in ``bench/results/deliver-<timestamp>.json``. Not a test: one run
on a shared machine — quote ratios and medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.lmssim.app import SIM_MOODLE_TOKEN  # noqa: E402
from bridge.store import outbox  # noqa: E402
from bridge.store import stats  # noqa: E402
from bridge.store.engine import connect  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
TOKEN = "bench-token"  # noqa: S105 - a throwaway token of a throwaway bridge
CAP = "    max_people: 200\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def person(number: int) -> dict[str, object]:
    return {
        "schemas": [USER, ENT, HR],
        "userName": f"bench{number}@example.com",
        "externalId": f"B{number:06d}",
        "name": {"givenName": f"Given{number}", "familyName": "Bench"},
        "emails": [{"value": f"bench{number}@example.com", "type": "work"}],
        ENT: {"department": "Claims"},
        HR: {"roleCodes": ["BEN_CHOICE_2026"], "employmentStatus": "active"},
    }


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM if the benchmark dies, so no server outlives it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Variant:
    """One side of the comparison: its population and how the LMS and the target are set."""

    name: str
    people: int
    batch_size: int | None  # None: the target's default (batched); 1: one call per intent
    latency_ms: float = 0.0
    real_timing: bool = True
    write_rate: float | None = None  # SCIM writes a second (None: as fast as the client goes)


@dataclass
class Stack:
    """An LMS simulator and a bridge (relay in-process) on a fresh SQLite file."""

    sim_url: str
    bridge_url: str
    database: Path

    def counters(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.sim_url}/_sim/knobs", timeout=10).json()["counters"])

    def by_function(self) -> dict[str, int]:
        """Moodle web-service calls served, by function (the site's own count)."""
        state = httpx.get(f"{self.sim_url}/_sim/state", timeout=60).json()
        return dict(state["moodle"]["calls"])


def write_rules(rules: Path, sim_url: str, rate: float, batch_size: int | None) -> None:
    """The shipped rules: Moodle at the simulator, paced at R, the pilot uncapped."""
    rules.mkdir()
    for name in ("targets.yaml", "benefits-2026.yaml"):
        shutil.copy(ROOT / "rules" / name, rules / name)
    targets = (rules / "targets.yaml").read_text().replace("http://127.0.0.1:8100", sim_url, 1)
    # The LMS's documented rate goes in the target's options: the relay paces itself to it.
    extra = f"      rate_limit_per_s: {rate}\n"
    if batch_size is not None:
        extra += f"      batch_size: {batch_size}\n"
    targets = targets.replace("      student_role_id: 5\n", "      student_role_id: 5\n" + extra, 1)
    (rules / "targets.yaml").write_text(targets)
    benefits = (rules / "benefits-2026.yaml").read_text()
    if CAP not in benefits:
        raise RuntimeError("the shipped pilot is no longer capped at 200: update the bench")
    (rules / "benefits-2026.yaml").write_text(benefits.replace(CAP, ""))


@contextlib.contextmanager
def stack(variant: Variant, rate: float, concurrency: int) -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="deliver-bench-"))
    sim_port, bridge_port = free_port(), free_port()
    sim_url, bridge_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{bridge_port}"
    write_rules(work / "rules", sim_url, rate, variant.batch_size)
    database = work / "bridge.db"
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{database}",
        "BRIDGE_SCIM_TOKEN": TOKEN,
        "BRIDGE_RULES": str(work / "rules"),
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
        "MOODLE_TOKEN": SIM_MOODLE_TOKEN,
        "BRIDGE_LOG_FORMAT": "json",
        # The pacer holds the rate; enough deliveries (or batches) in flight keep it busy.
        "BRIDGE_RELAY_CONCURRENCY": str(concurrency),
    }
    cli = [sys.executable, "-c", "from bridge.cli import main; main()"]
    sim_args = ["lmssim", "--port", str(sim_port), "--rate-limit", str(rate)]
    sim_args += ["--latency-ms", str(variant.latency_ms)]
    if variant.real_timing:
        sim_args.append("--real-timing")
    processes = [
        subprocess.Popen(  # noqa: S603 - our own CLI
            [*cli, *sim_args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet
        ),
        subprocess.Popen(  # noqa: S603 - our own CLI
            [*cli, "serve", "--port", str(bridge_port)],
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=(work / "bridge.log").open("wb"),
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads yet
        ),
    ]
    try:
        wait_http(f"{sim_url}/_sim/knobs")
        wait_http(f"{bridge_url}/healthz")
        yield Stack(sim_url, bridge_url, database)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


async def push(base: str, people: int, concurrency: int, rate: float | None) -> int:
    """POST ``people`` over SCIM, at ``rate`` a second (open loop) or as fast as
    ``concurrency`` clients go; how many were created (201)."""
    created = 0
    limit = asyncio.Semaphore(concurrency)
    start = time.monotonic()
    async with httpx.AsyncClient(
        base_url=f"{base}/scim/v2", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
    ) as client:

        async def one(number: int) -> None:
            nonlocal created
            if rate:
                await asyncio.sleep(max(0.0, start + number / rate - time.monotonic()))
            async with limit:
                response = await client.post("/Users", json=person(number))
            created += response.status_code == 201

        await asyncio.gather(*(one(n) for n in range(people)))
    return created


def run(variant: Variant, rate: float, concurrency: int, timeout: float) -> dict[str, Any]:
    """One variant, start to drained: its figures."""
    print(f"{variant.name}: {variant.people} people…", file=sys.stderr, flush=True)
    with stack(variant, rate, concurrency) as lms:
        db = connect(f"sqlite:///{lms.database}")
        samples: list[tuple[float, int, int]] = []  # (time, backlog, LMS calls answered)
        started = time.time()

        async def watch(done: asyncio.Event) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                finished = done.is_set()  # before the sample: an empty backlog then is drained
                left = await asyncio.to_thread(_backlog, db)
                counters = await asyncio.to_thread(lms.counters)
                samples.append((time.time(), left, _answered(counters)))
                if finished and not left:
                    return
                await asyncio.sleep(1.0)
            raise TimeoutError(f"{variant.name}: not drained after {timeout:.0f} s")

        async def both() -> tuple[int, float]:
            pushed = asyncio.Event()
            watcher = asyncio.create_task(watch(pushed))
            created = await push(
                lms.bridge_url,
                variant.people,
                16 if variant.write_rate is None else 64,
                variant.write_rate,
            )
            push_seconds = time.time() - started
            pushed.set()
            await watcher
            return created, push_seconds

        created, push_seconds = asyncio.run(both())
        drained = samples[-1][0] - started
        counters = lms.counters()
        by_function = lms.by_function()
        with db.read() as conn:
            figures = stats.read(conn, now=datetime.now(UTC)).total
            dead = len(outbox.dead_letters(conn, limit=1_000_000))
        db.dispose()
    answered = _answered(counters)
    peak = max(b for _, b, _ in samples)
    deep = [s for s in samples if s[1] > 0.1 * peak]
    sustained = (
        (deep[-1][2] - deep[0][2]) / (deep[-1][0] - deep[0][0])
        if len(deep) > 1 and deep[-1][0] > deep[0][0]
        else None
    )
    return {
        "variant": variant.name,
        "people": variant.people,
        "created_201": created,
        "batch_size": variant.batch_size or "default (200)",
        "rate_limit_per_s": rate,
        "lms_real_timing": variant.real_timing,
        "lms_latency_ms": variant.latency_ms,
        "write_rate_per_s": variant.write_rate,
        "push_seconds": round(push_seconds, 1),
        "seconds_to_delivered": round(drained, 1),
        "seconds_after_push": round(drained - push_seconds, 1),
        "lms_calls": answered,
        "lms_calls_throttled": counters["throttled"],
        "lms_calls_failed": counters["failed"],
        "lms_calls_by_function": by_function,
        "calls_per_person": round(answered / max(created, 1), 3),
        "calls_per_s_overall": round(answered / max(drained, 1e-9), 2),
        "calls_per_s_draining": round(sustained, 2) if sustained is not None else None,
        "share_of_limit_draining": round(sustained / rate, 3) if sustained is not None else None,
        "changes": figures.changes,
        "delivered": figures.outcomes.get("delivered", 0),
        "dead_letters": dead,
        "latency_s": dict(figures.latency),
    }


def _backlog(db: Any) -> int:
    with db.read() as conn:
        return int(outbox.backlog(conn))


def _answered(counters: dict[str, Any]) -> int:
    """LMS calls the simulator served (not refused by its rate limit, not failed)."""
    return int(counters["calls"]) - int(counters["throttled"]) - int(counters["failed"])


def render(results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="Delivery to a rate-limited Moodle (bridge serve → lmssim): time to fully "
        "delivered, LMS calls, calls/s while draining ÷ the limit R, and write → LMS "
        "confirmed latency of every change (p50/p95/p99 s).",
        title_justify="left",
    )
    for column in (
        "variant",
        "people",
        "R/s",
        "delivered in s",
        "after push s",
        "LMS calls",
        "calls/person",
        "calls/s drain",
        "÷ R",
        "429s",
        "p50 s",
        "p95 s",
        "p99 s",
        "dead",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in results:
        latency = r["latency_s"]
        table.add_row(
            r["variant"],
            f"{r['people']:,}",
            f"{r['rate_limit_per_s']:g}",
            f"{r['seconds_to_delivered']:.1f}",
            f"{r['seconds_after_push']:.1f}",
            f"{r['lms_calls']:,}",
            f"{r['calls_per_person']:.3f}",
            "-" if r["calls_per_s_draining"] is None else f"{r['calls_per_s_draining']:.1f}",
            "-" if r["share_of_limit_draining"] is None else f"{r['share_of_limit_draining']:.0%}",
            f"{r['lms_calls_throttled']:,}",
            *(f"{latency.get(p, float('nan')):.2f}" for p in ("p50", "p95", "p99")),
            f"{r['dead_letters']}",
        )
    console = Console(width=200)
    console.print(table)
    for line in summary.get("notes", []):
        console.print(f"  {line}")


def summarise(results: list[dict[str, Any]], batched_people: int) -> dict[str, Any]:
    by = {r["variant"]: r for r in results}
    summary: dict[str, Any] = {"notes": []}
    notes = summary["notes"]
    batched, single = by.get("batched"), by.get("single")
    if batched and single:
        ratio = single["calls_per_person"] / max(batched["calls_per_person"], 1e-9)
        projected = single["calls_per_person"] * batched_people / single["rate_limit_per_s"]
        summary |= {
            "calls_ratio_single_to_batched": round(ratio, 1),
            "single_projected_seconds_at_batched_people": round(projected),
        }
        notes.append(
            f"single ran on {single['people']:,} people ({single['calls_per_person']:.2f} "
            f"calls/person): {batched_people:,} people would take ≈ {projected / 60:.0f} min "
            f"at {single['rate_limit_per_s']:g} calls/s; batched took "
            f"{batched['seconds_to_delivered'] / 60:.1f} min."
        )
        notes.append(
            f"calls per person, single ÷ batched: {ratio:.1f}× "
            f"({'PASS' if ratio >= 10 else 'FAIL'}: target ≥ 10×)"
        )
    for r in results:
        share = r["share_of_limit_draining"]
        if r["variant"] != "freshness" and share is not None:
            notes.append(
                f"{r['variant']}: {share:.0%} of R while draining "
                f"({'PASS' if share >= 0.9 else 'below'} the 90 % target)"
            )
    fresh = by.get("freshness")
    if fresh:
        p99 = fresh["latency_s"].get("p99")
        notes.append(
            f"freshness: p99 write → LMS confirmed {p99} s at "
            f"{fresh['write_rate_per_s']:g} writes/s "
            f"({'PASS' if p99 is not None and p99 < 5 else 'FAIL'}: target < 5 s)"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=None, help="batched (default 10,000)")
    parser.add_argument(
        "--single-people", type=int, default=None, help="one call per intent (default 1,000)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="the LMS's limit R, calls/s")
    parser.add_argument("--quick", action="store_true", help="1,000 batched, 200 single")
    parser.add_argument("--freshness", action="store_true", help="add the freshness run")
    parser.add_argument("--only-freshness", action="store_true")
    parser.add_argument("--fresh-rate", type=float, default=20.0, help="SCIM writes/s")
    parser.add_argument("--fresh-seconds", type=float, default=60.0)
    parser.add_argument("--fresh-latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=64, help="BRIDGE_RELAY_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per variant, seconds")
    options = parser.parse_args()
    people = options.people or (1000 if options.quick else 10_000)
    single_people = options.single_people or (200 if options.quick else 1000)

    variants: list[Variant] = []
    if not options.only_freshness:
        variants += [
            Variant("batched", people, None),
            Variant("single", single_people, 1),
        ]
    if options.freshness or options.only_freshness:
        variants.append(
            Variant(
                "freshness",
                round(options.fresh_rate * options.fresh_seconds),
                None,
                latency_ms=options.fresh_latency_ms,
                real_timing=False,
                write_rate=options.fresh_rate,
            )
        )
    results = [run(v, options.rate, options.concurrency, options.timeout) for v in variants]
    summary = summarise(results, people)
    render(results, summary)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = out / f"deliver-{stamp}.json"
    path.write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    print(f"JSON: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
