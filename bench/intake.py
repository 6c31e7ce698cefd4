"""HR webhook intake beside SCIM POST, side by side in one run, against one `bridge serve`.

    .venv/bin/python bench/intake.py [--requests 2000] [--concurrency 16] [--rounds 3]

Starts `bridge serve` (one worker, the relay and the scheduler off, a fresh SQLite file, the
shipped rules with `feeds.yaml`, `HRIS_WEBHOOK_SECRET` set) and, in rounds, the servers taking
turns: N SCIM `POST /Users` of new people, and N signed `POST /hris/v1/events/workday`
(Standard Webhooks, new event ids: each verified, deduplicated and durably queued, answered
202). Reports requests a second per round and the median, and the ratio intake ÷ SCIM POST.
With `--apply`, it also times how fast `bridge serve`'s worker applies the queued events
(through the Provisioner: journal, rules, outbox). Not a test: a measurement (one machine,
shared: quote ratios and medians).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from deliver import TOKEN  # noqa: E402
from deliver import _die_with_parent  # noqa: E402
from deliver import free_port  # noqa: E402
from deliver import person  # noqa: E402
from deliver import wait_http  # noqa: E402

SECRET = "bench-webhook-secret"  # noqa: S105 - a throwaway secret of a throwaway bridge


def signed(event_id: str, body: bytes) -> dict[str, str]:
    """Standard Webhooks headers for ``body``."""
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), f"{event_id}.{stamp}.".encode() + body, hashlib.sha256)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
        "content-type": "application/json",
    }


def event(number: int) -> tuple[str, bytes]:
    event_id = f"wh_{number:07d}"
    payload = {
        "id": event_id,
        "event": "user.create",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "employee_id": f"H{number:06d}",
            "email": f"hire{number}@example.com",
            "first_name": f"Hire{number}",
            "last_name": "Bench",
            "department": "Claims",
            "role_codes": "BEN_CHOICE_2026",
        },
    }
    return event_id, json.dumps(payload).encode()


async def fire(base: str, kind: str, start: int, count: int, concurrency: int) -> float:
    """``count`` requests of ``kind`` (scim | webhook); requests a second."""
    limit = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def one(number: int) -> None:
            async with limit:
                if kind == "scim":
                    answer = await client.post("/scim/v2/Users", json=person(number))
                    assert answer.status_code == 201, answer.text
                else:
                    event_id, body = event(number)
                    answer = await client.post(
                        "/hris/v1/events/workday", content=body, headers=signed(event_id, body)
                    )
                    assert answer.status_code == 202, answer.text

        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(start, start + count)))
        return count / (time.perf_counter() - began)


def applied(db_path: Path) -> tuple[int, int]:
    """(applied, still queued) webhook events, read from the bridge's SQLite file."""
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        rows = dict(conn.execute("SELECT state, count(*) FROM webhook_events GROUP BY state"))
    return int(rows.get("applied", 0)), int(rows.get("queued", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000, help="per kind and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apply", action="store_true", help="also time applying the events")
    args = parser.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    rules = temp / "rules"
    rules.mkdir()
    for name in ("targets.yaml", "benefits-2026.yaml", "feeds.yaml"):
        shutil.copy(ROOT / "rules" / name, rules / name)
    db_path = temp / "bridge.db"
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{db_path}",
        "BRIDGE_RULES": str(rules),
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
        "BRIDGE_SCIM_TOKEN": TOKEN,
        "BRIDGE_SCHEDULER": "off",
        "HRIS_WEBHOOK_SECRET": SECRET,
    }
    command = [sys.executable, "-c", "from bridge.cli import main; main()"]
    command += ["serve", "--port", str(port), "--no-relay"]
    server = subprocess.Popen(  # noqa: S603 - our own CLI
        command,
        env=env,
        cwd=temp,
        stdout=subprocess.DEVNULL,
        stderr=(temp / "serve.log").open("w"),
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - the bench must not leave servers behind
    )
    base = f"http://127.0.0.1:{port}"
    results: dict[str, list[float]] = {"scim": [], "webhook": []}
    try:
        wait_http(f"{base}/healthz")
        asyncio.run(fire(base, "scim", 9_000_000, 100, args.concurrency))  # warm up
        for round_ in range(args.rounds):
            for kind in ("scim", "webhook") if round_ % 2 == 0 else ("webhook", "scim"):
                start = 1 + round_ * args.requests
                rate = asyncio.run(fire(base, kind, start, args.requests, args.concurrency))
                results[kind].append(rate)
                print(f"round {round_ + 1} {kind:8s} {rate:8.0f}/s", file=sys.stderr)
        drained, done = None, 0
        total = args.requests * args.rounds
        if args.apply:  # the worker applies while intake goes on: how long the queue outlives it
            began = time.perf_counter()
            while applied(db_path)[1] > 0 and time.perf_counter() - began < 600:
                time.sleep(0.1)
            drained = time.perf_counter() - began
            done = applied(db_path)[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
    scim, hook = (statistics.median(results[k]) for k in ("scim", "webhook"))
    print(f"{'':22s}{'median req/s':>14s}   rounds")
    print(
        f"{'SCIM POST /Users':22s}{scim:14.0f}   {', '.join(f'{r:.0f}' for r in results['scim'])}"
    )
    print(
        f"{'webhook intake (202)':22s}{hook:14.0f}   "
        f"{', '.join(f'{r:.0f}' for r in results['webhook'])}"
    )
    print(f"intake ÷ SCIM POST: {hook / scim:.2f}×")
    if drained is not None:
        print(
            f"{done} of {total} events applied; "
            f"the queue was empty {drained:.1f} s after the last 202"
        )
    out: dict[str, Any] = {"scim_post": results["scim"], "webhook_intake": results["webhook"]}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / f"intake-{stamp}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
