"""The ``bridge`` command against real databases: tokens, migrations and the journal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result
from sqlalchemy import create_engine
from sqlalchemy import inspect
from starlette.applications import Starlette

from bridge.cli import main
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.scim.auth import Authenticator
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.store.engine import normalize_url
from tests.conftest import ROOT
from tests.conftest import app_client
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.conftest import user_payload
from tests.pilots import uncapped
from tests.test_three_states import PREFLIGHT
from tests.test_three_states import World
from tests.test_three_states import make_world
from tests.test_three_states import misconfigure


def bridge(database_url: str, *args: str) -> Result:
    """Run ``bridge ARGS`` with the database at ``database_url`` and a wide terminal."""
    env = {
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_SCIM_TOKEN": None,
        "BRIDGE_LOG_FORMAT": None,
        "COLUMNS": "200",
    }
    # Each command closes its own database (an open psycopg connection left to the garbage
    # collector would warn, an error under filterwarnings=error).
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


async def status(app: Starlette, token: str, method: str = "GET") -> int:
    async with app_client(app, token) as client:
        if method == "POST":
            response = await client.post("/Users", json=user_payload("bjensen"))
        else:
            response = await client.get("/Users")
    return response.status_code


async def test_tokens_create_prints_a_token_that_authenticates(
    database_url: str, app: Starlette
) -> None:
    result = bridge(database_url, "tokens", "create", "okta")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token.splitlines()) == 1 and token.startswith("brg_")
    assert "not shown again" in result.stderr
    assert await status(app, token, "POST") == 201
    assert await status(app, "brg_" + token[4:][::-1]) == 401


async def test_read_only_token_from_the_cli(database_url: str, app: Starlette) -> None:
    result = bridge(database_url, "tokens", "create", "auditor", "--scope", "read")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert await status(app, token) == 200
    assert await status(app, token, "POST") == 403


def test_tokens_list_shows_names_not_tokens(database_url: str) -> None:
    created = [
        bridge(database_url, "tokens", "create", name, "--scope", scope).stdout.strip()
        for name, scope in (("okta", "read,write"), ("auditor", "read"))
    ]
    result = bridge(database_url, "tokens", "list")
    assert result.exit_code == 0, result.output
    assert "okta" in result.stdout and "auditor" in result.stdout
    assert "scim:write" in result.stdout
    for token in created:
        assert token not in result.stdout
        assert token[4:16] not in result.stdout


async def test_tokens_revoke(database_url: str, app: Starlette, db: Database) -> None:
    token = bridge(database_url, "tokens", "create", "entra").stdout.strip()
    uncached = Authenticator(db, cache_seconds=0)
    assert uncached(token) is not None
    revoked = bridge(database_url, "tokens", "revoke", "entra")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked entra" in revoked.stdout
    # Revocation holds at once, cached or not (tests/test_auth.py checks two processes).
    assert uncached(token) is None
    assert await status(app, token) == 401
    listed = bridge(database_url, "tokens", "list").stdout
    line = next(line for line in listed.splitlines() if "entra" in line)
    assert line.count("20") >= 2  # created and revoked dates
    again = bridge(database_url, "tokens", "revoke", "entra")
    assert again.exit_code != 0
    assert "no active token named 'entra'" in again.stderr


def test_revoking_an_unknown_token_fails(database_url: str) -> None:
    result = bridge(database_url, "tokens", "revoke", "nobody")
    assert result.exit_code == 1
    assert "no active token named 'nobody'" in result.stderr


def test_duplicate_token_name_fails_clearly(database_url: str) -> None:
    first = bridge(database_url, "tokens", "create", "okta")
    assert first.exit_code == 0
    second = bridge(database_url, "tokens", "create", "okta")
    assert second.exit_code == 1
    assert second.stdout == ""  # no token printed for a name that is not created
    assert "a token named 'okta' exists" in second.stderr
    assert len(bridge(database_url, "tokens", "list").stdout.split("okta")) == 2


@pytest.mark.parametrize("scope", ["bogus", "read,root", "scim:delete"])
def test_unknown_scope_is_a_usage_error(database_url: str, scope: str) -> None:
    result = bridge(database_url, "tokens", "create", "okta", "--scope", scope)
    assert result.exit_code == 2
    assert "--scope" in result.stderr
    assert "use read, write, admin or metrics" in result.stderr
    assert result.stdout == ""
    assert "okta" not in bridge(database_url, "tokens", "list").stdout


def test_db_upgrade_is_idempotent(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'fresh.db'}"  # created from nothing
    for _ in range(2):
        result = bridge(database_url, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "is up to date" in result.stdout
        assert ":postgres@" not in result.stdout  # the password is not printed
    engine = create_engine(normalize_url(database_url))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"tokens", "journal", "alembic_version"} <= tables
    assert bridge(database_url, "tokens", "create", "okta").exit_code == 0


def test_journal_json_lists_provisioner_writes(database_url: str, provisioner: Provisioner) -> None:
    cause = Cause("okta", "req-1")
    created = provisioner.create(cause, "User", user_payload("bjensen", displayName="Babs"))
    user_id = created.record.id
    provisioner.replace(
        Cause("entra", "req-2"), "User", user_id, user_payload("bjensen", displayName="Barbara")
    )
    other = provisioner.create(cause, "User", user_payload("jsmith")).record.id
    provisioner.delete(cause, "User", other)

    result = bridge(database_url, "journal", "--json")
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["op"], e["actor"], e["resource_id"]) for e in entries] == [
        ("create", "okta", user_id),
        ("replace", "entra", user_id),
        ("create", "okta", other),
        ("delete", "okta", other),
    ]
    seqs = [e["seq"] for e in entries]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    first, second = entries[0], entries[1]
    assert first["before"] is None
    assert first["after"]["displayName"] == "Babs"
    assert first["request_id"] == "req-1"
    assert second["before"]["displayName"] == "Babs"
    assert second["after"]["displayName"] == "Barbara"
    assert entries[3]["before"]["userName"] == "jsmith" and entries[3]["after"] is None
    assert all(e["at"].startswith("20") for e in entries)

    since = bridge(database_url, "journal", "--json", "--since", str(seqs[1])).stdout
    assert [json.loads(line)["seq"] for line in since.splitlines()] == seqs[2:]
    mine = bridge(database_url, "journal", "--json", "--resource", user_id).stdout
    assert [json.loads(line)["op"] for line in mine.splitlines()] == ["create", "replace"]


def test_journal_table(database_url: str, provisioner: Provisioner) -> None:
    provisioner.create(Cause("okta"), "User", user_payload("bjensen"))
    result = bridge(database_url, "journal")
    assert result.exit_code == 0, result.output
    assert "okta" in result.stdout and "create" in result.stdout and "User/" in result.stdout


def test_empty_journal_json_prints_nothing(database_url: str) -> None:
    result = bridge(database_url, "journal", "--json")
    assert result.exit_code == 0 and result.stdout == ""


def test_db_reindex_rebuilds_the_multi_valued_index(database_url: str, db: Database) -> None:
    from bridge.schemas import load_catalog
    from bridge.scim.params import parse_filter
    from tests.conftest import user_payload

    provisioner = Provisioner(db, load_catalog(ROOT / "schemas"))
    for number in range(3):
        payload = user_payload(
            f"u{number}", emails=[{"value": f"u{number}@work.example", "type": "work"}]
        )
        provisioner.create(Cause("test"), "User", payload)
    node = parse_filter('emails[type eq "work" and value eq "u1@work.example"]')
    with db.write() as conn:
        conn.exec_driver_sql(
            "DELETE FROM attribute_values"
        )  # as a database written before a schema edit
    assert provisioner.search(["User"], node, count=10).total == 0
    result = bridge(database_url, "db", "reindex")
    assert result.exit_code == 0, result.output
    assert "reindexed 3 resource(s)" in result.output
    assert provisioner.search(["User"], node, count=10).total == 1


def test_the_migrations_build_exactly_the_tables_the_code_declares(database_url: str) -> None:
    """Every table, column and index of bridge/store/tables.py comes from a migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bridge.store.engine import connect
    from bridge.store.tables import metadata

    db = connect(database_url)
    try:
        with db.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        db.dispose()
    assert differences == []


# -- plan, explain, errors: desired vs confirmed, what is pending, what a dead letter blocks ----


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The shipped rules with the pilot's cap off: each SCIM write admits its person (these
    tests are about plan, explain and errors; a capped pilot's draw is tests/test_pilot.py)."""
    return uncapped(shipped_rules(tmp_path))


@pytest.fixture
def world(db: Database, catalog: Catalog, book: RuleBook) -> World:
    return make_world(db, catalog, book)


def planned(database_url: str, rules_dir: Path, *args: str) -> Result:
    """``bridge ARGS`` with the rules of ``rules_dir`` (plan, explain, errors)."""
    return run_cli(database_url, rules_dir, *args)


async def test_plan_explain_and_errors_after_a_refused_create(
    database_url: str, world: World, rules_dir: Path
) -> None:
    world.stale_account(30)
    person = world.hire(30)
    await world.deliver()
    dead, enrol, cohort = (row["id"] for row in world.rows(person))

    result = planned(database_url, rules_dir, "plan", "--detailed-exitcode", "--json")
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert document["states"] == {"to_make": 0, "failed": 1, "pending": 2, "waiting": 0}
    assert [(e["kind"], e["state"], e["outbox"]["id"]) for e in document["intents"]] == [
        ("upsert_account", "failed", dead)
    ]
    assert [(e["state"], e["blocked_by"]["id"]) for e in document["in_flight"]] == [
        ("pending", dead),
        ("pending", dead),
    ]
    text = planned(database_url, rules_dir, "plan")
    assert text.exit_code == 0  # a plan with changes is a success (Terraform's convention)
    assert "! failed, still to make — apply sends them again in place (1):" in text.stdout
    assert f"blocked behind dead letter #{dead} upsert_account" in text.stdout

    explained = planned(database_url, rules_dir, "explain", "E00030")
    assert explained.exit_code == 0, explained.output
    assert "↳ failed — data_quality:" in explained.stdout
    assert "the LMS already matches" not in explained.stdout
    as_json = json.loads(planned(database_url, rules_dir, "explain", "E00030", "--json").stdout)
    assert [i["state"] for i in as_json["rule_files"][0]["intents"]] == [
        "failed",
        "pending",
        "pending",
    ]

    listed = planned(database_url, rules_dir, "errors", "--json")
    assert listed.exit_code == 0, listed.output
    (letter,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["id"] == dead and letter["category"] == "data_quality"
    assert letter["blocked_count"] == 2
    assert letter["blocked"] == [
        {"id": enrol, "kind": "enrol", "ref": "BEN-2026"},
        {"id": cohort, "kind": "add_cohort_member", "ref": "BEN2026"},
    ]
    assert letter["guide"].startswith("data quality")
    assert letter["target_waiting"] is None
    table = planned(database_url, rules_dir, "errors").stdout
    assert "in the guide's terms: data quality (stale or missing fields" in " ".join(table.split())
    assert f"2: #{enrol} enrol BEN-2026" in table

    misconfigure(world)
    waiting = planned(database_url, rules_dir, "errors")
    assert f"target moodle: waiting — {PREFLIGHT} (2 intents waiting on it)" in " ".join(
        waiting.stdout.split()
    )
    letter = json.loads(planned(database_url, rules_dir, "errors", "--json").stdout)
    assert letter["target_waiting"] == PREFLIGHT
    held = planned(database_url, rules_dir, "plan", "--detailed-exitcode", "--json")
    assert held.exit_code == 2  # the dead create is still a change to make, while the target waits
    held_plan = json.loads(held.stdout)
    assert held_plan["states"] == {"to_make": 0, "failed": 1, "pending": 0, "waiting": 2}
    assert held_plan["intents"][0]["waiting"] == PREFLIGHT
    explained = planned(database_url, rules_dir, "explain", "E00030")
    assert f"target   moodle: waiting — {PREFLIGHT}" in explained.stdout


async def test_plan_shows_no_changes_once_delivered(
    database_url: str, world: World, rules_dir: Path
) -> None:
    world.hire(31)
    pending = planned(database_url, rules_dir, "plan")
    assert pending.exit_code == 0
    assert "3 intents pending in the outbox" in pending.stdout
    await world.deliver()
    done = planned(database_url, rules_dir, "plan", "--json")
    assert done.exit_code == 0
    assert json.loads(done.stdout)["states"] == {
        "to_make": 0,
        "failed": 0,
        "pending": 0,
        "waiting": 0,
    }
    explained = planned(database_url, rules_dir, "explain", "E00031").stdout
    assert "intents  none: the LMS already matches (confirmed" in explained


def test_apply_checks_the_targets_first_and_enqueues_nothing_when_one_fails(
    database_url: str, tmp_path: Path, simulator_url: tuple[str, Any], catalog: Catalog
) -> None:
    url, app = simulator_url
    rules = shipped_rules(tmp_path, url)
    db = connect(database_url)
    try:
        db.upgrade()
        loader = Provisioner(db, catalog, rules=lambda: None)  # people stored before the rules
        loader.create(Cause("hris"), "User", employee(1, codes=["BEN_CHOICE_2026"]))
    finally:
        db.dispose()

    def bridge_cli(*args: str) -> Result:
        return run_cli(database_url, rules, *args, MOODLE_TOKEN=SIM_MOODLE_TOKEN)

    plan_file = tmp_path / "plan.json"
    made = bridge_cli("plan", "--detailed-exitcode", "--out", str(plan_file))
    assert made.exit_code == 2, made.output
    app.state.moodle.service_functions.discard("enrol_manual_enrol_users")
    refused = bridge_cli("apply", str(plan_file))
    assert refused.exit_code == 1, refused.output
    assert "enrol_manual_enrol_users" in refused.output and "nothing enqueued" in refused.output
    db = connect(database_url)
    try:
        with db.read() as conn:
            assert outbox.counts(conn) == {}
    finally:
        db.dispose()
    app.state.moodle.service_functions.add("enrol_manual_enrol_users")  # the admin fixes it
    applied = bridge_cli("apply", str(plan_file))
    assert applied.exit_code == 0, applied.output
    assert "intent(s) applied" in applied.output


# -- bridge rules check / test: the data, and where the schemas are -------------------------------

TYPO = """version: 1
name: extra
target: moodle
aliases:
  roleCodes: urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser:roleCodes
enrolments:
  - id: hyphenated
    when: 'roleCodes eq "BEN-CHOICE-2026"'
    course: BEN-2026-LEGACY
  - id: typo
    when: 'roleCodes eq "BEN_CHOCE_2026"'
    course: BEN-2026-TYPO
"""


def test_rules_check_knows_the_role_codes_people_hold(
    database_url: str, db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    provisioner = Provisioner(db, catalog)
    provisioner.create(Cause("hris"), "User", employee(1, codes=["BEN_CHOICE_2026", "MANAGER"]))
    provisioner.create(Cause("hris"), "User", employee(2, codes=["BEN-CHOICE-2026"]))
    rules = shipped_rules(tmp_path)  # no role-codes.yaml: what people hold is all there is
    (rules / "extra.yaml").write_text(TYPO)
    result = bridge(database_url, "rules", "check", str(rules))
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        f"{rules}/extra.yaml:11:11: unknown role code BEN_CHOCE_2026 in the condition of "
        "enrolment 'typo': did you mean BEN_CHOICE_2026?"
    )
    assert result.output.endswith("1 problem(s) in 1 file(s)\n"), "the held codes pass"


def test_rules_check_without_a_database_cannot_tell_and_creates_none(tmp_path: Path) -> None:
    rules = shipped_rules(tmp_path)
    (rules / "extra.yaml").write_text(TYPO)
    absent = tmp_path / "absent.db"
    result = bridge(f"sqlite:///{absent}", "rules", "check", str(rules))
    assert result.exit_code == 0, result.output
    assert (
        f"{rules}/extra.yaml:11:11: warning: cannot tell whether BEN_CHOCE_2026 in the "
        "condition of enrolment 'typo' is a real role code: declare role_codes"
    ) in result.output.splitlines()
    assert not absent.exists()


@pytest.mark.parametrize(
    "command",
    ["rules check RULES", "rules test RULES", "plan --rules RULES", "targets check", "db reindex"],
)
def test_a_missing_schemas_directory_is_one_line_naming_it(tmp_path: Path, command: str) -> None:
    rules = shipped_rules(tmp_path)
    args = command.replace("RULES", str(rules)).split()
    nowhere = tmp_path / "nowhere"
    env = {"BRIDGE_SCHEMAS": str(nowhere), "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/b.db"}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no schemas directory at {nowhere}: set BRIDGE_SCHEMAS to the directory of the "
        "SCIM schemas (schemas/*.json), or run where ./schemas is\n"
    )


def test_rules_test_fails_on_an_attribute_no_rule_reads(database_url: str, tmp_path: Path) -> None:
    rules = shipped_rules(tmp_path)
    (rules / "benefits-2026.test.yaml").write_text(
        "rules: benefits-2026\n"
        "tests:\n"
        "  - name: a benefits employee\n"
        "    given: {user: {userName: a, externalId: E1, roleCode: [BEN_CHOICE_2026]}}\n"
        "    expect: {in_scope: false}\n"
    )
    result = bridge(database_url, "rules", "test", str(rules))
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        f"{rules}/benefits-2026.test.yaml:4:59: unknown attribute 'roleCode' in given.user: "
        "no condition or mapping reads it"
    )
