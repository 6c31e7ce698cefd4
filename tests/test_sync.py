"""``bridge sync``: a feed's nightly full export (the guide's "nightly batch syncs for state
reconciliation") creates, updates and deactivates the people the feed owns, through the same
path as a SCIM write (journal, rules, outbox); an empty or truncated export is refused."""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from click.testing import Result
from sqlalchemy import func
from sqlalchemy import select

from bridge.cli import main
from bridge.provision.sync import merge
from bridge.rules.feeds import Feed
from bridge.rules.model import FieldMapping
from bridge.store.engine import Database
from bridge.store.tables import FeedPersonRow
from bridge.store.tables import JournalRow
from bridge.store.tables import OutboxRow
from bridge.store.tables import ResourceRow
from bridge.store.tables import RunRow
from tests.conftest import ENTERPRISE
from tests.conftest import HR
from tests.conftest import ROOT
from tests.conftest import run_cli

HEADER = "employee_id,email,first_name,last_name,job_title,department,status,role_codes"


def row(number: int, *, title: str = "Clerk", codes: str = "BEN_CHOICE_2026;EMPLOYEE") -> str:
    return (
        f"E{number:04d}, Person{number}@Example.com ,Given{number},Family,{title},Claims,"
        f"Active,{codes}"
    )


def export(tmp_path: Path, name: str, *rows: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def sync(database_url: str, rules: Path, *args: str | Path) -> tuple[Result, dict[str, Any]]:
    result = run_cli(database_url, rules, "sync", *map(str, args), "--json")
    return result, json.loads(result.output)


def count(db: Database, table: Any, *where: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())


def user(db: Database, external_id: str) -> dict[str, Any]:
    with db.read() as conn:
        found = conn.execute(
            select(RESOURCES.c.doc, RESOURCES.c.active).where(
                RESOURCES.c.external_id == external_id
            )
        ).one()
    doc = json.loads(found[0]) if isinstance(found[0], str) else found[0]
    return {**doc, "_active": found[1]}


JOURNAL = JournalRow.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]
FEED_PEOPLE = FeedPersonRow.__table__  # type: ignore[attr-defined]
RESOURCES = ResourceRow.__table__  # type: ignore[attr-defined]


def test_export_creates_people_with_mapped_attributes_and_rejects_a_row_without_employee_id(
    database_url: str, feed_rules: Path, db: Database, tmp_path: Path
) -> None:
    path = export(
        tmp_path,
        "first.csv",
        row(1),
        row(2, codes="EMPLOYEE"),
        ",nobody@example.com,No,Id,Clerk,Claims,Active,EMPLOYEE",
    )
    result, doc = sync(database_url, feed_rules, path)
    assert result.exit_code == 1  # a rejected row: the others are applied, the HRIS must fix it
    assert doc["format"] == "bridge-sync/1"
    assert doc["status"] == "applied"
    assert doc["counts"]["create"] == 2
    [rejected] = doc["rejected"]
    assert rejected["line"] == 4 and rejected["external_id"] is None
    assert rejected["field"].startswith("employee_id")
    assert rejected["fix"].startswith("missing, and externalId needs it")
    first = user(db, "E0001")
    assert first["userName"] == "person1@example.com"  # trim, lower
    assert first["title"] == "Clerk"
    assert first[ENTERPRISE]["department"] == "Claims"
    assert first[HR]["roleCodes"] == ["BEN_CHOICE_2026", "EMPLOYEE"]
    assert first["_active"] is True
    with db.read() as conn:
        journalled = conn.execute(select(JOURNAL.c.actor, JOURNAL.c.request_id)).all()
        intents = [
            json.loads(i) if isinstance(i, str) else i
            for (i,) in conn.execute(select(OUTBOX.c.intent))
        ]
    assert {actor for actor, _ in journalled} == {"sync:workday"}
    assert {request for _, request in journalled} == {doc["run_id"]}
    enrolled = {i["person"] for i in intents if i["kind"] == "enrol"}
    assert len(enrolled) == 1  # only the BEN_CHOICE_2026 holder is enrolled by the rules
    assert len({i["person"] for i in intents if i["kind"] == "upsert_account"}) == 2
    runs = run_cli(database_url, feed_rules, "runs", "--json")
    listed = [r for r in json.loads(runs.output)["runs"] if r["id"] == doc["run_id"]]
    assert listed and listed[0]["kind"] == "sync" and listed[0]["state"] == "applied"
    assert listed[0]["summary"]["create"] == 2


def test_second_export_updates_one_leaves_the_unchanged_unwritten_and_deactivates_the_missing(
    database_url: str, feed_rules: Path, db: Database, tmp_path: Path
) -> None:
    first = export(tmp_path, "first.csv", *(row(n) for n in range(1, 11)))
    result, _ = sync(database_url, feed_rules, first)
    assert result.exit_code == 0, result.output
    journalled = count(db, JOURNAL)
    # E0003 changes title, E0010 is gone: 9 of 10 people is 90 %, the feed's min_percent
    second = export(
        tmp_path,
        "second.csv",
        *(row(n, title="Lead" if n == 3 else "Clerk") for n in range(1, 10)),
    )
    result, doc = sync(database_url, feed_rules, second)
    assert result.exit_code == 0, result.output
    assert doc["counts"] == {
        "create": 0,
        "update": 1,
        "deactivate": 1,
        "unchanged": 8,
        "rejected": 0,
        "failed": 0,
    }
    assert doc["examples"]["update"] == ["E0003"] and doc["examples"]["deactivate"] == ["E0010"]
    assert count(db, JOURNAL) == journalled + 2  # the unchanged eight cost no write
    assert user(db, "E0003")["title"] == "Lead"
    gone = user(db, "E0010")
    assert gone["_active"] is False  # deactivated, never deleted
    assert gone["userName"] == "person10@example.com"
    # listed again: reactivated
    third = export(tmp_path, "third.csv", *(row(n) for n in range(1, 11)))
    result, doc = sync(database_url, feed_rules, third)
    assert result.exit_code == 0, result.output
    assert doc["counts"]["update"] == 2  # E0003's title back, E0010 back
    assert user(db, "E0010")["_active"] is True


def test_truncated_export_is_refused_with_nothing_written_until_forced(
    database_url: str, feed_rules: Path, db: Database, tmp_path: Path
) -> None:
    first = export(tmp_path, "first.csv", *(row(n) for n in range(1, 11)))
    assert sync(database_url, feed_rules, first)[0].exit_code == 0
    before = (count(db, JOURNAL), count(db, OUTBOX), count(db, RUNS))
    half = export(tmp_path, "half.csv", *(row(n) for n in range(1, 6)))
    result, doc = sync(database_url, feed_rules, half)
    assert result.exit_code == 1
    assert doc["status"] == "refused"
    assert "5 people, 50.0 % of the last accepted export's 10" in doc["refusal"]
    assert "--force" in doc["refusal"]
    assert (count(db, JOURNAL), count(db, OUTBOX), count(db, RUNS)) == before
    assert count(db, RESOURCES, RESOURCES.c.active.is_(False)) == 0
    result, doc = sync(database_url, feed_rules, half, "--force")
    assert result.exit_code == 0, result.output
    assert doc["counts"]["deactivate"] == 5
    # the forced export is now the last accepted one: 5 people again pass
    result, doc = sync(database_url, feed_rules, half)
    assert result.exit_code == 0 and doc["status"] == "nothing to do"


def test_empty_export_is_refused_even_on_the_first_sync(
    database_url: str, feed_rules: Path, db: Database, tmp_path: Path
) -> None:
    result, doc = sync(database_url, feed_rules, export(tmp_path, "empty.csv"))
    assert result.exit_code == 1
    assert doc["refusal"].startswith("the export lists nobody")
    assert count(db, RUNS) == 0 and count(db, JOURNAL) == 0


def test_dry_run_shows_the_changes_and_writes_nothing(
    database_url: str, feed_rules: Path, db: Database, tmp_path: Path
) -> None:
    path = export(tmp_path, "first.csv", *(row(n) for n in range(1, 4)))
    result = run_cli(database_url, feed_rules, "sync", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would 3 create" in result.output
    assert "E0001, E0002, E0003" in result.output
    assert count(db, JOURNAL) == count(db, OUTBOX) == count(db, RUNS) == count(db, FEED_PEOPLE)
    assert count(db, JOURNAL) == 0


def test_json_lines_export_from_standard_input(
    database_url: str, feed_rules: Path, db: Database
) -> None:
    feeds = feed_rules / "feeds.yaml"
    feeds.write_text(feeds.read_text().replace("format: csv", "format: jsonl"))
    lines = [
        {"employee_id": "J1", "email": "j1@example.com", "job_title": "Clerk"},
        {"employee_id": "J2", "email": "j2@example.com", "role_codes": "BEN_CHOICE_2026"},
    ]
    stdin = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"
    env = {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_RULES": str(feed_rules),
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
        "BRIDGE_SCIM_TOKEN": None,
    }
    result = CliRunner().invoke(
        main, ["sync", "-", "--feed", "workday", "--json"], env=env, input=stdin
    )
    doc = json.loads(result.output)
    assert doc["counts"]["create"] == 2
    assert doc["rejected"][0]["line"] == 3
    assert doc["rejected"][0]["fix"].startswith("not JSON")
    assert user(db, "J2")[HR]["roleCodes"] == ["BEN_CHOICE_2026"]


def test_unknown_feed_is_a_usage_error(database_url: str, feed_rules: Path, tmp_path: Path) -> None:
    path = export(tmp_path, "first.csv", row(1))
    result = run_cli(database_url, feed_rules, "sync", str(path), "--feed", "bamboo")
    assert result.exit_code == 2
    assert "no feed 'bamboo' (feeds: workday)" in result.output


def test_merge_replaces_only_what_the_feed_maps() -> None:
    feed = Feed(
        "hr",
        "sha256",
        ("S",),
        (
            FieldMapping("externalId", "employee_id"),
            FieldMapping("emails.work", "email"),
            FieldMapping("title", "job_title"),
            FieldMapping("department", "department"),
        ),
    )
    stored = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "externalId": "E1",
        "userName": "ann",
        "title": "Clerk",
        "emails": [
            {"value": "old@example.com", "type": "work"},
            {"value": "ann@home.example", "type": "home"},
        ],
        ENTERPRISE: {"department": "Claims", "costCenter": "C1"},
    }
    exported = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": "E1",
        "emails": [{"value": "new@example.com", "type": "work", "primary": True}],
    }
    merged = merge(stored, exported, feed)
    assert "title" not in merged  # the HRIS emptied it
    assert merged["userName"] == "ann"  # not mapped: kept
    assert merged[ENTERPRISE] == {"costCenter": "C1"}
    assert [e["value"] for e in merged["emails"]] == ["new@example.com", "ann@home.example"]
    assert stored["title"] == "Clerk"  # the stored document is not touched


def test_duplicate_employee_id_and_missing_email_are_rejected_naming_the_person(
    database_url: str, feed_rules: Path, db: Database, tmp_path: Path
) -> None:
    path = export(
        tmp_path,
        "first.csv",
        row(1),
        row(2),
        row(1, title="Lead"),
        "E0003,,Given3,Family,Clerk,Claims,Active,EMPLOYEE",
    )
    result, doc = sync(database_url, feed_rules, path)
    assert result.exit_code == 1
    assert doc["counts"]["create"] == 2 and doc["counts"]["rejected"] == 2
    duplicate, missing = doc["rejected"]
    assert duplicate["line"] == 4 and duplicate["external_id"] == "E0001"
    assert "also on line 2" in duplicate["fix"]
    assert missing["line"] == 5 and missing["external_id"] == "E0003"
    assert missing["field"].startswith("email")
    assert user(db, "E0001")["title"] == "Clerk"  # the first row of a person wins


def test_bridge_quality_shows_the_last_export_its_rejected_rows_and_who_was_missing(
    database_url: str, feed_rules: Path, tmp_path: Path
) -> None:
    first = export(tmp_path, "first.csv", *(row(n) for n in range(1, 11)))
    assert sync(database_url, feed_rules, first)[0].exit_code == 0
    second = export(
        tmp_path,
        "second.csv",
        *(row(n) for n in range(1, 10)),  # E0010 is not in it
        row(4, title="Lead"),  # E0004 twice
    )
    result, _ = sync(database_url, feed_rules, second)
    assert result.exit_code == 1  # a row rejected: the nightly job is flagged
    report = run_cli(database_url, feed_rules, "quality", "--json")
    assert report.exit_code == 0, report.output
    last = json.loads(report.output)["feeds"]["workday"]["last_export"]
    assert last["people"] == 9 and last["counts"]["deactivate"] == 1
    assert last["not_in_export"] == ["E0010"]
    [duplicate] = last["rejected_rows"]
    assert duplicate["external_id"] == "E0004" and "also on line 5" in duplicate["fix"]
    text = run_cli(database_url, feed_rules, "quality").output
    assert "last full export" in text and "1 not in the export (deactivated)" in text
    assert "not in the export: E0010 (check they really left)" in text


def test_a_sync_run_has_a_plan_of_the_lms_changes_its_writes_caused(
    database_url: str, feed_rules: Path, tmp_path: Path
) -> None:
    first = export(tmp_path, "first.csv", *(row(n) for n in range(1, 11)))
    result, doc = sync(database_url, feed_rules, first)
    assert result.exit_code == 0, result.output
    run_id = doc["run_id"]
    shown = run_cli(database_url, feed_rules, "plan", "--run", run_id, "--json")
    plan = json.loads(shown.output)
    assert plan["format"] == "bridge-plan/1"
    assert plan["run"]["id"] == run_id and plan["run"]["kind"] == "sync"
    assert len({i["person"] for i in plan["intents"]}) == 10
    assert plan["counts"]["enrol"]["count"] == 10, plan["counts"]
    second = export(tmp_path, "second.csv", *(row(n) for n in range(1, 10)))
    _, doc = sync(database_url, feed_rules, second)
    later = json.loads(
        run_cli(database_url, feed_rules, "plan", "--run", doc["run_id"], "--json").output
    )
    assert len({i["person"] for i in later["intents"]}) == 1  # only E0010 left the export
    removals = {i["kind"] for i in later["intents"]}
    assert removals <= {"suspend_account", "unenrol", "suspend_enrolment"}, removals
    text = run_cli(database_url, feed_rules, "sync", str(second), "--dry-run").output
    assert "nothing to do" in text


def test_a_sync_left_running_by_a_dead_process_of_this_host_is_closed_as_failed(
    db: Database,
) -> None:
    import socket
    import subprocess
    import sys

    from bridge.provision.sync import abandon_dead
    from bridge.provision.sync import worker
    from bridge.store import runs

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = socket.gethostname()
    now = datetime(2026, 12, 7, tzinfo=UTC)
    for run_id, who in (
        ("dead", f"{host}:{gone.stdout.strip()}"),
        ("alive", worker()),
        ("elsewhere", "another-host:1"),
    ):
        db.run(
            lambda tx, run_id=run_id, who=who: runs.create(
                tx,
                run_id,
                kind="sync",
                status="running",
                rules_version="v",
                summary={"feed": "workday", "worker": who},
                now=now,
                actor="hris:workday",
            )
        )
    assert abandon_dead(db) == ["dead"]
    with db.read() as conn:
        states = {r: runs.get(conn, r)["status"] for r in ("dead", "alive", "elsewhere")}
        note = runs.get(conn, "dead")["summary"]["error"]
    assert states == {"dead": "failed", "alive": "running", "elsewhere": "running"}
    assert "sync the export again" in note
