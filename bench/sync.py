"""A nightly HR export of 100,000 people through `bridge sync`: wall time and peak RSS.

    .venv/bin/python bench/sync.py [--people 100000] [--postgres URL] [--profile] [--keep DIR]

Generates a CSV export with the columns of `rules/feeds.yaml`'s workday feed (employee_id,
email, first_name, last_name, job_title, department, status, role_codes: a realistic mix of
departments, titles, BEN_CHOICE_2026 holders, managers, mixed-case emails with spaces), then
syncs it into a fresh SQLite database (and a scratch PostgreSQL database with --postgres):

1. the first full sync: every person a create through the Provisioner (journal, rules, outbox);
2. a second export with 1 % of the people changed (title or role codes), 0.5 % missing
   (deactivated) and 0.5 % new (created): the nightly re-sync.

Each sync is a child process (`bridge sync FILE --json`, run in-process there) that reports
its own wall time and peak RSS (``ru_maxrss``). The rules are the shipped ones, the benefits
pilot's cap taken off (each write admits its person), plus `feeds.yaml`. Targets: the re-sync
< 60 s and < 400 MB peak RSS. `--profile` runs both syncs under cProfile and prints
where their time goes. Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [
    "employee_id",
    "email",
    "first_name",
    "last_name",
    "job_title",
    "department",
    "status",
    "role_codes",
]
DEPARTMENTS = ["Claims", "Sales", "Finance", "IT", "Operations", "HR", "Legal"]
TITLES = ["Claims Specialist", "Adjuster", "Analyst", "Manager", "Engineer", "Clerk"]
FIRST = ["Jane", "John", "Amara", "Wei", "Lucía", "Noah", "Fatima", "Olga", "Ravi", "Zoë"]
LAST = ["Smith", "Okafor", "Chen", "García", "Müller", "Nguyen", "Kowalski", "Haddad"]
CHILD = """
import cProfile, json, pstats, resource, sys, time
from bridge.cli import main
args, profile = sys.argv[1:-1], sys.argv[-1]
started = time.perf_counter()
code = 0
profiler = cProfile.Profile() if profile else None
if profiler: profiler.enable()
try:
    main(args, standalone_mode=False)
except SystemExit as exc:
    code = exc.code or 0
if profiler:
    profiler.disable()
    profiler.dump_stats(profile)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"seconds": elapsed, "peak_rss_mib": peak, "exit": code}), file=sys.stderr)
"""


def person(number: int, rng: random.Random) -> dict[str, str]:
    codes = ["EMPLOYEE"]
    if rng.random() < 0.7:
        codes.append("BEN_CHOICE_2026")
    if rng.random() < 0.1:
        codes.append("MANAGER")
    first, last = rng.choice(FIRST), rng.choice(LAST)
    email = f"{first}.{last}.{number}@Example.com"
    return {
        "employee_id": f"E{number:07d}",
        "email": f" {email}" if rng.random() < 0.01 else email,
        "first_name": first,
        "last_name": last,
        "job_title": rng.choice(TITLES),
        "department": rng.choice(DEPARTMENTS),
        "status": "Active",
        "role_codes": ";".join(codes),
    }


def write_exports(directory: Path, people: int) -> tuple[Path, Path, dict[str, int]]:
    """The first export, and the second: 1 % changed, 0.5 % missing, 0.5 % new."""
    rng = random.Random(7)
    rows = [person(n, rng) for n in range(people)]
    first = directory / "export-1.csv"
    with first.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    picks = rng.sample(range(people), people // 100 + people // 200)
    changed, missing = set(picks[: people // 100]), set(picks[people // 100 :])
    second = directory / "export-2.csv"
    with second.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        for number, row in enumerate(rows):
            if number in missing:
                continue
            if number in changed:
                row = dict(row)
                codes = row["role_codes"].split(";")
                if number % 2:
                    row["job_title"] = "Senior " + row["job_title"]
                elif "BEN_CHOICE_2026" in codes:  # out of the benefits course, or into it
                    row["role_codes"] = ";".join(c for c in codes if c != "BEN_CHOICE_2026")
                else:
                    row["role_codes"] = ";".join([*codes, "BEN_CHOICE_2026"])
            writer.writerow(row)
        writer.writerows(person(people + n, rng) for n in range(people // 200))
    expected = {"update": len(changed), "deactivate": len(missing), "create": people // 200}
    return first, second, expected


def rules(directory: Path) -> Path:
    found = directory / "rules"
    found.mkdir()
    for name in ("targets.yaml", "benefits-2026.yaml", "feeds.yaml"):
        shutil.copy(ROOT / "rules" / name, found / name)
    benefits = found / "benefits-2026.yaml"
    benefits.write_text(benefits.read_text().replace("    max_people: 200\n", ""))
    return found


def sync(export: Path, env: dict[str, str], profile: Path | None = None) -> dict[str, object]:
    """``bridge sync EXPORT --json`` in a child process: its document, time and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "sync", str(export), "--json", str(profile or "")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    figures = json.loads(done.stderr.strip().splitlines()[-1])
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        raise
    return {**figures, "counts": doc["counts"], "status": doc["status"]}


def top(profile: Path, lines: int = 25) -> None:
    import pstats

    stats = pstats.Stats(str(profile))
    stats.sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--postgres", help="also run on this PostgreSQL server (scratch db)")
    parser.add_argument("--profile", action="store_true", help="cProfile both syncs")
    parser.add_argument("--keep", type=Path, help="keep the exports and SQLite file here")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    first, second, expected = write_exports(workdir, options.people)
    print(f"exports: {options.people} people, then {expected}", file=sys.stderr)
    urls = {"sqlite": f"sqlite:///{workdir / 'bench.db'}"}
    scratch = admin = None
    if options.postgres:
        from sqlalchemy import create_engine
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        base = make_url(options.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        scratch = f"sync_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
        urls["postgresql"] = base.set(database=scratch).render_as_string(hide_password=False)
    results: dict[str, object] = {"people": options.people, "second_export": expected}
    try:
        rules_dir = rules(workdir)
        for name, url in urls.items():
            env = {
                **os.environ,
                "BRIDGE_DATABASE_URL": url,
                "BRIDGE_RULES": str(rules_dir),
                "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
                "PYTHONPATH": str(ROOT),
            }
            profiles = [
                workdir / f"sync-{n}-{name}.prof" if options.profile else None for n in (1, 2)
            ]
            full = sync(first, env, profiles[0])
            print(f"{name}: first sync {full}", file=sys.stderr)
            again = sync(second, env, profiles[1])
            print(f"{name}: re-sync {again}", file=sys.stderr)
            for profile in profiles:
                if profile is not None:
                    top(profile)
            results[name] = {"first": full, "resync": again}
            print(
                f"{name}: first sync {full['seconds']:.1f} s, peak RSS {full['peak_rss_mib']} MiB "
                f"({options.people / float(str(full['seconds'])):.0f} people/s); re-sync "
                f"{again['seconds']:.1f} s, peak RSS {again['peak_rss_mib']} MiB "
                f"(target < 60 s, < 400 MB): {again['counts']}"
            )
    finally:
        if scratch and admin is not None:
            from sqlalchemy import text

            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        if options.keep:
            options.keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.glob("*"):
                if path.is_file():
                    shutil.copy(path, options.keep / path.name)
        shutil.rmtree(workdir, ignore_errors=True)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (out_dir / f"sync-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
