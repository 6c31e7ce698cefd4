"""Plan over a large stored population: wall time, peak RSS, per-person rule cost.

    .venv/bin/python bench/plan.py [--people 100000] [--postgres URL] [--keep DIR]

Seeds N people (a realistic mix: the Claims department, BEN_CHOICE_2026 holders, managers,
people with no work email, non-standard role codes) straight through the store in one
transaction per 5,000, then runs `bridge plan --json` as a separate process (so its peak
RSS is the plan's alone), then `bridge apply`, then plans again (no changes). Also times the
pure engine per person (desired_state + diff) on a sample. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.rules.engine import desired_state  # noqa: E402
from bridge.rules.engine import diff  # noqa: E402
from bridge.rules.loader import load_ruleset  # noqa: E402
from bridge.schemas import load_catalog  # noqa: E402
from bridge.store.engine import connect  # noqa: E402
from bridge.store.resources import Record  # noqa: E402
from bridge.store.resources import ResourceStore  # noqa: E402

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
DEPARTMENTS = ["Claims", "Sales", "Finance", "IT", "Operations"]


def person_doc(number: int, rng: random.Random) -> dict[str, object]:
    codes = ["EMPLOYEE"]
    if rng.random() < 0.7:
        codes.append("BEN_CHOICE_2026")
    if rng.random() < 0.1:
        codes.append("MANAGER")
    if rng.random() < 0.01:
        codes = ["ben_choice_2026"]  # non-standard
    doc: dict[str, object] = {
        "schemas": [USER, ENT, HR],
        "userName": f"person{number}@example.com",
        "externalId": f"E{number:07d}",
        "name": {"givenName": f"Given{number}", "familyName": f"Family{number % 997}"},
        "title": rng.choice(["Claims Specialist", "Adjuster", "Analyst", "Manager"]),
        "active": rng.random() > 0.02,
        ENT: {"department": rng.choice(DEPARTMENTS), "employeeNumber": f"{number:07d}"},
        HR: {
            "roleCodes": codes,
            "employmentStatus": "active" if rng.random() > 0.03 else "terminated",
        },
    }
    if rng.random() > 0.005:
        doc["emails"] = [{"value": f"person{number}@example.com", "type": "work", "primary": True}]
    return doc


def seed(url: str, people: int) -> float:
    catalog = load_catalog(ROOT / "schemas")
    db = connect(url)
    db.upgrade()
    store = ResourceStore({"User": catalog.user, "Group": catalog.group}, db.dialect)
    rng = random.Random(7)
    started = time.perf_counter()
    now = datetime.now(UTC)
    for start in range(0, people, 5000):
        with db.write() as conn:
            for number in range(start, min(start + 5000, people)):
                doc = person_doc(number, rng)
                store.insert(
                    conn,
                    Record(
                        pk=0,
                        id=str(uuid.uuid4()),
                        type="User",
                        external_id=str(doc["externalId"]),
                        name=str(doc["userName"]),
                        display=str(doc["userName"]),
                        active=bool(doc["active"]),
                        doc=doc,
                        version=1,
                        created=now,
                        last_modified=now,
                    ),
                )
    db.dispose()
    return time.perf_counter() - started


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, int, str, int]:
    """(seconds, peak RSS MiB of the child, stdout, exit code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from bridge.cli import main; main()", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode not in (0, 2):
        print(done.stderr[-2000:], file=sys.stderr)
    return elapsed, max(peak, before) // 1024, done.stdout, done.returncode


def engine_cost(sample: int) -> tuple[float, float]:
    """Median and p99 µs of desired_state + diff for one person (pure, no I/O)."""
    rules = load_ruleset(ROOT / "rules", relative_to=ROOT).files[0]
    rng = random.Random(11)
    docs = [person_doc(n, rng) for n in range(sample)]
    conditions = [rules.scope.filter or "", *(a.when for a in rules.assignments)]
    costs = []
    for number, doc in enumerate(docs):
        verdicts = {text: rng.random() < 0.7 for text in conditions}
        started = time.perf_counter_ns()
        desired = desired_state(str(number), doc, rules, verdicts)
        diff(str(number), desired, None, rules)
        costs.append((time.perf_counter_ns() - started) / 1000)
    costs.sort()
    return statistics.median(costs), costs[int(len(costs) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument(
        "--postgres", help="also run on this PostgreSQL server URL (a scratch database is made)"
    )
    parser.add_argument("--keep", type=Path, help="keep the SQLite database in this directory")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    urls = {"sqlite": f"sqlite:///{workdir / 'bench.db'}"}
    scratch = None
    if options.postgres:
        from sqlalchemy import create_engine
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        base = make_url(options.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        scratch = f"plan_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        urls["postgresql"] = base.set(database=scratch).render_as_string(hide_password=False)

    results: dict[str, object] = {"people": options.people}
    median, p99 = engine_cost(5000)
    results["engine_us_per_person"] = {"p50": round(median, 1), "p99": round(p99, 1)}
    print(f"engine (desired_state + diff, pure): p50 {median:.1f} µs, p99 {p99:.1f} µs per person")
    try:
        for name, url in urls.items():
            seeded = seed(url, options.people)
            env = {
                **os.environ,
                "BRIDGE_DATABASE_URL": url,
                "BRIDGE_RULES": str(ROOT / "rules"),
                "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
            }
            plan_s, plan_rss, out, code = run_cli(
                ["plan", "--json", "--out", str(workdir / "plan.json")], env
            )
            summary = json.loads(out)
            apply_s, apply_rss, _, _ = run_cli(["apply", str(workdir / "plan.json")], env)
            again_s, again_rss, again_out, again_code = run_cli(["plan", "--json"], env)
            row = {
                "seed_s": round(seeded, 1),
                "plan_s": round(plan_s, 2),
                "plan_peak_rss_mib": plan_rss,
                "plan_exit": code,
                "plan_intents": len(summary["intents"]),
                "plan_attention": len(summary["attention"]),
                "plan_attention_by_kind": dict(
                    Counter(item["kind"] for item in summary["attention"]).most_common()
                ),
                "plan_us_per_person": round(plan_s * 1e6 / options.people, 1),
                "apply_s": round(apply_s, 2),
                "replan_s": round(again_s, 2),
                "replan_exit": again_code,
                "replan_intents": len(json.loads(again_out)["intents"]),
            }
            results[name] = row
            print(
                f"{name}: {options.people} people seeded in {seeded:.1f}s; plan {plan_s:.2f}s "
                f"({row['plan_us_per_person']} µs/person, peak RSS {plan_rss} MiB, "
                f"{row['plan_intents']} intents, {row['plan_attention']} need attention, exit {code}); "
                f"apply {apply_s:.2f}s; re-plan {again_s:.2f}s → {row['replan_intents']} intents, exit {again_code}"
            )
            print(f"{name}: attention by kind: {row['plan_attention_by_kind']}")
    finally:
        if scratch:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        if options.keep:
            options.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(workdir / "bench.db", options.keep / "bench.db")
        shutil.rmtree(workdir, ignore_errors=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (out_dir / f"plan-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
