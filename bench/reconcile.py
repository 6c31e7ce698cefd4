"""Reconcile over a large managed population: wall time, peak RSS, and whether the drift found
is exactly the drift planted.

    .venv/bin/python bench/reconcile.py [--lms moodle|canvas] [--people 100000]
                                        [--postgres URL] [--keep DIR]

Plants N managed people straight into the LMS simulator's state (served from this process on a
free port) and into the store's ``links`` (what the LMS confirmed: the account, the course
BEN-2026 and, on Moodle, the cohort BEN2026), then plants a known drift set by hand in the
simulator — 50 accounts suspended, 40 enrolments removed, 30 enrolments added in a managed
course (BEN-2026-MGR) the rules did not make, 20 cohort members removed (Moodle only: Canvas
has no cohorts), 10 emails changed — and runs ``bridge reconcile --json`` as a separate process
(so its peak RSS is the reconcile's alone). Reports time, read calls, peak RSS, and the drift
found against the planted set. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import create_engine
from sqlalchemy import insert
from sqlalchemy import make_url
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.lmssim.app import SIM_CANVAS_TOKEN  # noqa: E402
from bridge.lmssim.app import SIM_MOODLE_TOKEN  # noqa: E402
from bridge.lmssim.app import Knobs  # noqa: E402
from bridge.lmssim.app import create_app  # noqa: E402
from bridge.store.engine import connect  # noqa: E402
from bridge.store.links import LINKS  # noqa: E402

PLANTED = {"suspended": 50, "unenrolled": 40, "added": 30, "uncohorted": 20, "email": 10}
CANVAS_RULES = """\
version: 1
name: canvas-benefits
target: canvas
aliases:
  roleCodes: urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser:roleCodes
scope:
  filter: 'roleCodes eq "BEN_CHOICE_2026"'
mapping:
  idnumber: {from: externalId, required: true}
  username: {from: userName, transforms: [trim, lower], required: true}
  email: {from: 'emails[type eq "work"].value', transforms: [trim, lower], required: true}
  firstname: {from: name.givenName, transforms: [trim]}
  lastname: {from: name.familyName, transforms: [trim]}
enrolments:
  - id: canvas-course
    when: 'roleCodes eq "BEN_CHOICE_2026"'
    course: BEN-2026
  - id: canvas-managers
    when: 'roleCodes eq "MANAGER"'
    course: BEN-2026-MGR
"""


def serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def rules_dir(workdir: Path, lms: str, url: str) -> Path:
    rules = workdir / "rules"
    rules.mkdir()
    targets = (ROOT / "rules" / "targets.yaml").read_text()
    if lms == "moodle":
        shutil.copy(ROOT / "rules" / "benefits-2026.yaml", rules / "benefits-2026.yaml")
        targets = targets.replace("http://127.0.0.1:8100", url, 1)
    else:
        (rules / "canvas-benefits.yaml").write_text(CANVAS_RULES)
        head, _, tail = targets.partition("  canvas:")
        targets = head + "  canvas:" + tail.replace("http://127.0.0.1:8100", url, 1)
    (rules / "targets.yaml").write_text(targets)
    return rules


def account(number: int) -> dict[str, Any]:
    return {
        "idnumber": f"E{number:07d}",
        "username": f"person{number}@example.com",
        "email": f"person{number}@example.com",
        "firstname": f"Given{number}",
        "lastname": f"Family{number % 997}",
        "auth": "oauth2",
    }


def confirmed(number: int, lms: str) -> dict[str, Any]:
    at = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
    rule = "benefits-2026-course" if lms == "moodle" else "canvas-course"
    assignments: dict[str, Any] = {
        "course:BEN-2026": {
            "status": "active",
            "rule": rule,
            "kind": "enrolment",
            "ref": "BEN-2026",
            "at": at,
        }
    }
    if lms == "moodle":
        assignments["cohort:BEN2026"] = {
            "status": "active",
            "rule": "benefits-2026-cohort",
            "kind": "cohort",
            "ref": "BEN2026",
            "at": at,
        }
    return {
        "account": account(number),
        "active": True,
        "account_at": at,
        "assignments": assignments,
    }


def plant_moodle(site: Any, people: int) -> list[str]:
    """N accounts enrolled in BEN-2026 and members of BEN2026; their Moodle ids."""
    ben = next(c for c in site.courses.values() if c.shortname == "BEN-2026")
    cohort = next(c for c in site.cohorts.values() if c.idnumber == "BEN2026")
    manual = site.instance(ben.id, "manual")
    ids = []
    for number in range(people):
        values = account(number)
        user = site.add_user(
            values["username"],
            firstname=values["firstname"],
            lastname=values["lastname"],
            email=values["email"],
            idnumber=values["idnumber"],
            auth="oauth2",
        )
        site.enrol(manual, user.id, 5)
        site.members.add((cohort.id, user.id))  # BEN2026 syncs no course: no enrolment to make
        ids.append(str(user.id))
    return ids


def plant_canvas(site: Any, people: int) -> list[str]:
    ben = next(c for c in site.courses.values() if c.sis_course_id == "BEN-2026")
    ids = []
    for number in range(people):
        values = account(number)
        user = site.add_user(
            values["username"],
            f"{values['firstname']} {values['lastname']}",
            sis_user_id=values["idnumber"],
            email=values["email"],
            sortable_name=f"{values['lastname']}, {values['firstname']}",
        )
        site.add_enrollment(user.id, ben.id, "StudentEnrollment", "active")
        ids.append(str(user.id))
    return ids


def plant_drift(
    lms: str, site: Any, ids: list[str], persons: list[str], seed: int
) -> set[tuple[str, str, str | None]]:
    """The hand changes, each to a distinct person; the drift they must show as."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(ids)), sum(PLANTED.values()))
    groups: dict[str, list[int]] = {}
    start = 0
    for name, count in PLANTED.items():
        groups[name] = chosen[start : start + count]
        start += count
    expected: set[tuple[str, str, str | None]] = set()
    if lms == "moodle":
        ben = next(c for c in site.courses.values() if c.shortname == "BEN-2026")
        mgr = next(c for c in site.courses.values() if c.shortname == "BEN-2026-MGR")
        cohort = next(c for c in site.cohorts.values() if c.idnumber == "BEN2026")
        for i in groups["suspended"]:
            site.users[int(ids[i])].suspended = True
            expected.add((persons[i], "account-suspended", None))
        for i in groups["unenrolled"]:
            site.enrolments.pop((site.instance(ben.id, "manual").id, int(ids[i])))
            expected.add((persons[i], "enrolment-removed", "BEN-2026"))
        for i in groups["added"]:
            site.enrol(site.instance(mgr.id, "manual"), int(ids[i]), 5)
            expected.add((persons[i], "added-by-hand", "BEN-2026-MGR"))
        for i in groups["uncohorted"]:
            site.members.discard((cohort.id, int(ids[i])))
            expected.add((persons[i], "cohort-member-removed", "BEN2026"))
        for i in groups["email"]:
            site.users[int(ids[i])].email = f"changed{i}@example.org"
            expected.add((persons[i], "field", "email"))
        return expected
    ben = next(c for c in site.courses.values() if c.sis_course_id == "BEN-2026")
    mgr = next(c for c in site.courses.values() if c.sis_course_id == "BEN-2026-MGR")
    by_user = {e.user_id: e for e in site.enrollments.values() if e.course_id == ben.id}
    for i in groups["suspended"]:
        site.users[int(ids[i])].state = "suspended"
        expected.add((persons[i], "account-suspended", None))
    for i in groups["unenrolled"]:
        by_user[int(ids[i])].enrollment_state = "deleted"
        expected.add((persons[i], "enrolment-removed", "BEN-2026"))
    for i in groups["added"]:
        site.add_enrollment(int(ids[i]), mgr.id, "StudentEnrollment", "active")
        expected.add((persons[i], "added-by-hand", "BEN-2026-MGR"))
    for i in groups["email"]:
        site.users[int(ids[i])].email = f"changed{i}@example.org"
        expected.add((persons[i], "field", "email"))
    return expected


def seed_links(url: str, lms: str, ids: list[str]) -> list[str]:
    """The links rows (one transaction per 5,000); the person ids in the order of ``ids``."""
    db = connect(url)
    db.upgrade()
    persons = [
        str(uuid.UUID(int=random.Random(number).getrandbits(128))) for number in range(len(ids))
    ]
    now = datetime.now(UTC)
    for start in range(0, len(ids), 5000):
        rows = [
            {
                "target": lms,
                "resource_id": persons[n],
                "lms_user_id": ids[n],
                "confirmed": confirmed(n, lms),
                "updated": now,
            }
            for n in range(start, min(start + 5000, len(ids)))
        ]
        with db.write() as conn:
            conn.execute(insert(LINKS), rows)
    db.dispose()
    return persons


CHILD = """
import atexit, sys

def _peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write(f"\\nPEAK_KIB {line.split()[1]}\\n")

atexit.register(_peak)
from bridge.cli import main
main()
"""
"""``bridge reconcile`` reporting its own peak RSS (``VmHWM``, reset at exec): the child's
``ru_maxrss`` would also count the pages of this process, simulator included, it forked from."""


def run_reconcile(env: dict[str, str]) -> tuple[float, int, str, int, str]:
    """(seconds, peak RSS MiB of the reconcile, stdout, exit code, stderr tail)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "reconcile", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    peaks = [
        int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KIB")
    ]
    return (
        elapsed,
        (peaks[-1] // 1024 if peaks else -1),
        done.stdout,
        done.returncode,
        done.stderr[-2000:],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lms", choices=("moodle", "canvas"), default="moodle")
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a scratch database)")
    parser.add_argument("--keep", type=Path, help="keep the work directory here")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    scratch = None
    if args.postgres:
        base = make_url(args.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        scratch = f"reconcile_bench_{os.getpid()}_{int(time.time())}"
        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        url = base.set(database=scratch).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{workdir / 'bridge.db'}"
    app = create_app(Knobs(seed=args.seed))
    sim_url, server, thread = serve(app)
    try:
        started = time.perf_counter()
        site = app.state.moodle if args.lms == "moodle" else app.state.canvas
        if args.lms == "canvas":
            site.high_water = 1e9  # the bench measures the reconcile, not Canvas's throttle
        plant = plant_moodle if args.lms == "moodle" else plant_canvas
        ids = plant(site, args.people)
        persons = seed_links(url, args.lms, ids)
        expected = plant_drift(args.lms, site, ids, persons, args.seed)
        seeded = time.perf_counter() - started
        print(f"seeded {args.people} people in {seeded:.1f} s", file=sys.stderr)
        env = {
            **os.environ,
            "BRIDGE_DATABASE_URL": url,
            "BRIDGE_RULES": str(rules_dir(workdir, args.lms, sim_url)),
            "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
            "MOODLE_TOKEN": SIM_MOODLE_TOKEN,
            "CANVAS_TOKEN": SIM_CANVAS_TOKEN,
        }
        env.pop("BRIDGE_SCIM_TOKEN", None)
        elapsed, peak, out, code, err = run_reconcile(env)
        if code not in (0, 2):
            print(err, file=sys.stderr)
            raise SystemExit(f"reconcile exited {code}")
        document = json.loads(out)
        found = {
            (d["person"], d["kind"], d["ref"])
            for d in document["drift"]
            if d["kind"] != "unchecked"
        }
        report = {
            "lms": args.lms,
            "people": args.people,
            "database": "postgresql" if args.postgres else "sqlite",
            "reconcile_s": round(elapsed, 1),
            "peak_rss_mib": peak,
            "drift_found": dict(Counter(kind for _, kind, _ in found)),
            "drift_planted": dict(Counter(kind for _, kind, _ in expected)),
            "exact": found == expected,
            "missed": len(expected - found),
            "extra": len(found - expected),
            "intents": len(document["intents"]),
            "exit_code": code,
        }
        print(json.dumps(report, indent=1))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if args.keep:
            shutil.copytree(workdir, args.keep, dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        if scratch is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
