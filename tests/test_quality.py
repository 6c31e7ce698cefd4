"""Plans that tell the truth, and ``bridge quality``: a duplicate employee id refused at the
SCIM door (RFC 7644 §3.3, 409 ``uniqueness``) is kept and reported until it no longer holds;
role codes are judged against the declared catalogue, one finding per unknown code.

The pure parts (the plan's attention items, the plan file) run on plain data; the rest goes
through the real SCIM app, the real database (SQLite, and PostgreSQL when configured) and the
``bridge`` command.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result

from bridge.cli.quality import problem_groups
from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.rules.loader import load_ruleset
from bridge.rules.plan import AttentionItem
from bridge.rules.plan import Plan
from bridge.rules.plan import Refusal
from bridge.rules.plan import build_plan
from bridge.rules.plan import plan_from_json
from bridge.rules.plan import plan_to_json
from bridge.rules.plan import render_text
from bridge.rules.plan import summary_line
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import outbox
from bridge.store import refusals
from bridge.store.engine import Database
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import USER_SCHEMA
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import employee
from tests.conftest import patch_body
from tests.conftest import run_cli
from tests.test_rules_plan import outcome
from tests.test_rules_plan import person

RULES = load_ruleset(ROOT / "rules", relative_to=ROOT)
NOW = "2026-01-08T10:00:00Z"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"

REFUSAL = Refusal(
    id=7,
    resource_type="User",
    attribute="externalId",
    value="E20017",
    holder_id="p-holder",
    holder_user_name="ann.ko@example.com",
    holder_external_id="E20017",
    refused_id=None,
    refused_user_name="bo.lee@example.com",
    refused_external_id="E20017",
    op="create",
    actor="okta",
    request_id="req-2",
    first_seen="2026-01-07T09:00:00+00:00",
    last_seen="2026-01-08T09:00:00+00:00",
    count=2,
)


def planned(outcomes: list[Any], refused: list[Refusal], codes: frozenset[str]) -> Plan:
    return build_plan(
        dataclasses.replace(RULES, role_codes=codes),
        outcomes,
        population=len({o.person_id for o in outcomes}),
        projected_counts={},
        generated_at=NOW,
        rules_version="v1",
        refusals=refused,
    )


# -- the plan: refused duplicates and unknown codes as attention items (pure) ------------------


def test_a_refused_duplicate_is_an_attention_item_naming_both_records() -> None:
    result = planned([], [REFUSAL], frozenset())
    (item,) = result.attention
    assert (item.kind, item.person, item.label, item.rule_file) == (
        "duplicate-refused",
        None,
        None,
        None,
    )
    assert item.people == ("p-holder",)
    assert item.details["holder"] == {
        "id": "p-holder",
        "userName": "ann.ko@example.com",
        "externalId": "E20017",
    }
    assert item.details["refused"] == {
        "id": None,
        "userName": "bo.lee@example.com",
        "externalId": "E20017",
    }
    assert (item.details["attribute"], item.details["value"], item.details["count"]) == (
        "externalId",
        "E20017",
        2,
    )
    assert item.reason == (
        "duplicate externalId E20017: create of bo.lee@example.com refused 2 times "
        "(last 2026-01-08T09:00:00+00:00, by okta); held by ann.ko@example.com; "
        "fix one of the two records, or `bridge quality dismiss 7`"
    )
    assert f"  ! {item.reason}" in render_text(result).splitlines()
    assert "1 person needs attention" in summary_line(result)


def test_a_refused_put_names_the_record_it_tried_to_change_and_the_other_identifier() -> None:
    put = dataclasses.replace(
        REFUSAL,
        attribute="userName",
        value="ann.ko@example.com",
        refused_id="p-other",
        refused_user_name="ann.ko@example.com",
        refused_external_id="E20099",
        op="replace",
        count=1,
    )
    (item,) = planned([], [put], frozenset()).attention
    assert item.people == ("p-holder", "p-other")
    assert item.reason.startswith(
        "duplicate userName ann.ko@example.com: replace of ann.ko@example.com "
        "(externalId E20099) refused once"
    )
    assert "held by ann.ko@example.com (externalId E20017)" in item.reason


def test_refused_duplicates_come_before_the_lms_duplicates_and_unknown_codes() -> None:
    outcomes = [
        outcome("p1", person("jane.smith", "E1", ["BEN_CHOICE_2026", "BEN-CHOICE-2026"])),
        outcome("p2", person("john.doe", "E1", ["BEN_CHOICE_2026"])),
        outcome("p3", person("no.mail", "E3", ["BEN_CHOICE_2026"], email="")),
    ]
    result = planned(outcomes, [REFUSAL], frozenset({"EMPLOYEE"}))
    kinds = [item.kind for item in result.attention]
    assert kinds == [
        "problem",
        "duplicate-refused",
        "duplicate",
        "duplicate",
        "unknown-role-code",
    ]
    # p-holder (the refusal), p1 and p2 (duplicates, p1 the unknown code too), p3 (problem)
    assert result.people_needing_attention == 4


def test_the_plan_file_round_trips_with_the_new_items() -> None:
    outcomes = [
        outcome(f"p{i}", person(name, f"E{i}", ["BEN-CHOICE-2026", "EMPLOYEE"]))
        for i, name in enumerate(["ann.ko", "bo.lee", "cy.dunn", "di.ros"])
    ]
    outcomes.append(outcome("x1", person("no.mail", "E77", ["BEN_CHOICE_2026"], email="")))
    original = planned(outcomes, [REFUSAL], frozenset({"EMPLOYEE"}))
    assert {item.kind for item in original.attention} == {
        "problem",
        "duplicate-refused",
        "unknown-role-code",
    }
    data = plan_to_json(original)
    assert plan_from_json(data) == original
    through_text = json.loads(json.dumps(data))
    assert plan_from_json(through_text) == original
    assert plan_to_json(plan_from_json(through_text)) == data
    code = next(a for a in data["attention"] if a["kind"] == "unknown-role-code")
    assert code == {
        "person": None,
        "label": None,
        "rule_file": None,
        "kind": "unknown-role-code",
        "reason": "unknown role code BEN-CHOICE-2026 held by 4 people "
        "(ann.ko, bo.lee, cy.dunn, +1 more): did you mean BEN_CHOICE_2026?",
        "people": ["p0", "p1", "p2", "p3"],
        "details": {
            "code": "BEN-CHOICE-2026",
            "count": 4,
            "examples": ["ann.ko", "bo.lee", "cy.dunn"],
            "suggestion": "BEN_CHOICE_2026",
        },
    }
    problem = next(a for a in data["attention"] if a["kind"] == "problem")
    assert (problem["person"], problem["people"], problem["details"]) == ("x1", ["x1"], {})


def test_a_plan_file_from_before_people_and_details_still_reads() -> None:
    data = plan_to_json(
        planned([outcome("x1", person("no.mail", "E7", [], email=""))], [], frozenset())
    )
    for item in data["attention"]:
        del item["people"], item["details"]
    (item,) = plan_from_json(data).attention
    assert (item.person, item.people, item.details) == ("x1", ("x1",), {})
    data["attention"][0]["people"] = "x1"
    with pytest.raises(ValueError, match=r"attention\[0\]\.people must be a list"):
        plan_from_json(data)
    data["attention"][0]["people"] = ["x1"]
    data["attention"][0]["person"] = 7
    with pytest.raises(ValueError, match=r"attention\[0\]\.person has the wrong type"):
        plan_from_json(data)


# -- refusals through the real SCIM app and database ------------------------------------------


def bridge(database_url: str, rules_dir: Path, *args: str) -> Result:
    """``bridge ARGS`` against the test database and rules."""
    return run_cli(database_url, rules_dir, *args)


def report(database_url: str, rules_dir: Path) -> dict[str, Any]:
    result = bridge(database_url, rules_dir, "quality", "--json")
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    assert found["format"] == "bridge-quality/1"
    return found


def standing(db: Database) -> list[refusals.Standing]:
    with db.read() as conn:
        return refusals.standing(conn)


class Clock:
    """Time that moves on a second at each reading (an IdP retrying later)."""

    def __init__(self) -> None:
        self.at = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


@pytest.fixture
async def okta(
    db: Database, catalog: Catalog, settings: Settings, book: RuleBook
) -> AsyncIterator[httpx.AsyncClient]:
    """The real SCIM app with the shipped rules, on a clock that moves."""
    provisioner = Provisioner(db, catalog, rules=book.current, clock=Clock())
    app = create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))
    async with app_client(app) as client:
        yield client


async def create(scim: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = assert_scim(await scim.post("/Users", json=body), 201)
    return created


async def test_a_duplicate_employee_id_is_refused_kept_once_and_counted(
    okta: httpx.AsyncClient, db: Database, database_url: str, rules_dir: Path
) -> None:
    scim = okta
    holder = await create(scim, employee(1, codes=["BEN_CHOICE_2026"]))
    second = {**employee(2, codes=["BEN_CHOICE_2026"]), "externalId": "E00001"}
    for attempt in (1, 2):  # the IdP retries
        response = await scim.post(
            "/Users", json=second, headers={"X-Request-Id": f"okta-{attempt}"}
        )
        assert assert_scim(response, 409)["scimType"] == "uniqueness"

    (found,) = standing(db)
    refusal = found.refusal
    assert found.open and found.resolved is None
    assert (refusal.attribute, refusal.value, refusal.op, refusal.count) == (
        "externalId",
        "E00001",
        "create",
        2,
    )
    assert (refusal.actor, refusal.request_id) == ("BRIDGE_SCIM_TOKEN", "okta-2")
    assert datetime.fromisoformat(refusal.first_seen) < datetime.fromisoformat(refusal.last_seen)
    with db.read() as conn:  # the refused writes left nothing else behind
        assert [e.resource_id for e in journal.read(conn)] == [holder["id"]]

    (item,) = report(database_url, rules_dir)["duplicates_refused"]
    assert item["holder"] == {
        "id": holder["id"],
        "userName": "emp1@example.com",
        "externalId": "E00001",
    }
    assert item["refused"] == {"id": None, "userName": "emp2@example.com", "externalId": "E00001"}
    assert (item["attribute"], item["value"], item["count"], item["op"]) == (
        "externalId",
        "E00001",
        2,
        "create",
    )
    assert (item["first_seen"], item["last_seen"]) == (refusal.first_seen, refusal.last_seen)
    assert item["request_id"] == "okta-2" and item["id"] == refusal.id
    text = bridge(database_url, rules_dir, "quality")
    assert text.exit_code == 0
    assert f"#{refusal.id} User externalId E00001: held by emp1@example.com" in text.stdout
    assert "refused: create of emp2@example.com, 2 times" in text.stdout

    # HR fixes the holder's employee id: the conflict no longer holds, nothing to dismiss
    fixed = patch_body({"op": "replace", "path": "externalId", "value": "E00099"})
    assert_scim(await scim.patch(f"/Users/{holder['id']}", json=fixed), 200)
    (found,) = standing(db)
    assert found.resolved == "no User holds externalId E00001 any more"
    assert report(database_url, rules_dir)["duplicates_refused"] == []
    # the IdP's next push goes through; the refused record now holds the value
    await create(scim, second)
    (found,) = standing(db)
    assert found.resolved == "the refused record (emp2@example.com) holds externalId E00001 now"


async def test_a_refused_patch_is_not_half_written_and_can_be_dismissed_until_it_recurs(
    scim: httpx.AsyncClient, db: Database, database_url: str, rules_dir: Path
) -> None:
    await create(scim, employee(1, codes=[]))
    other = await create(scim, employee(2, codes=[]))
    steal = patch_body(
        {"op": "replace", "path": "externalId", "value": "E00001"},
        {"op": "replace", "path": "title", "value": "Half written?"},
    )
    assert_scim(await scim.patch(f"/Users/{other['id']}", json=steal), 409)
    after = assert_scim(await scim.get(f"/Users/{other['id']}"), 200)
    assert after["externalId"] == "E00002" and "title" not in after
    with db.read() as conn:
        assert [e.op for e in journal.read(conn, resource_id=other["id"])] == ["create"]
    (found,) = standing(db)
    refusal = found.refusal
    assert (refusal.op, refusal.refused_id, refusal.refused_user_name) == (
        "patch",
        other["id"],
        "emp2@example.com",
    )
    assert len(report(database_url, rules_dir)["duplicates_refused"]) == 1

    dismissed = bridge(database_url, rules_dir, "quality", "dismiss", str(refusal.id))
    assert dismissed.exit_code == 0, dismissed.output
    assert report(database_url, rules_dir)["duplicates_refused"] == []
    why = standing(db)[0].resolved
    assert why is not None and why.startswith("dismissed by cli:")
    unknown = bridge(database_url, rules_dir, "quality", "dismiss", "999999")
    assert unknown.exit_code == 1 and "no refusal 999999" in unknown.stderr

    # the same write refused again: it is back, counted
    assert_scim(await scim.patch(f"/Users/{other['id']}", json=steal), 409)
    (item,) = report(database_url, rules_dir)["duplicates_refused"]
    assert (item["id"], item["count"], item["refused"]["id"]) == (refusal.id, 2, other["id"])


async def test_a_refused_put_of_a_taken_username_is_kept(
    scim: httpx.AsyncClient, db: Database
) -> None:
    holder = await create(scim, employee(1, codes=[]))
    other = await create(scim, employee(2, codes=[]))
    replaced = {**employee(2, codes=[]), "userName": "EMP1@example.com"}
    assert_scim(await scim.put(f"/Users/{other['id']}", json=replaced), 409)
    (found,) = standing(db)
    refusal = found.refusal
    assert (refusal.attribute, refusal.value, refusal.op) == (
        "userName",
        "EMP1@example.com",
        "replace",
    )
    assert (refusal.holder_id, refusal.refused_id, refusal.refused_external_id) == (
        holder["id"],
        other["id"],
        "E00002",
    )
    assert found.open


async def test_a_refusal_inside_a_bulk_request_is_kept_with_the_bulk(
    scim: httpx.AsyncClient, db: Database
) -> None:
    operations = [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": employee(1, codes=[])},
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": "b",
            "data": {**employee(2, codes=[]), "externalId": "E00001"},
        },
    ]
    response = await scim.post("/Bulk", json={"schemas": [BULK], "Operations": operations})
    answers = assert_scim(response, 200)["Operations"]
    assert [a["status"] for a in answers] == ["201", "409"]
    (found,) = standing(db)
    assert (found.refusal.refused_user_name, found.refusal.holder_user_name) == (
        "emp2@example.com",
        "emp1@example.com",
    )
    assert found.open


async def test_a_refusal_resolves_once_the_holder_takes_the_refused_username(
    scim: httpx.AsyncClient, db: Database
) -> None:
    """The IdP's record of jo and HR's emp1 were one person: renamed, the conflict is gone."""
    holder = await create(scim, employee(1, codes=[]))
    jo = {"schemas": [USER_SCHEMA], "userName": "jo@example.com", "externalId": "E00001"}
    assert_scim(await scim.post("/Users", json=jo), 409)
    assert standing(db)[0].open
    rename = patch_body({"op": "replace", "path": "userName", "value": "Jo@example.com"})
    assert_scim(await scim.patch(f"/Users/{holder['id']}", json=rename), 200)
    (found,) = standing(db)
    assert found.resolved == "the refused record (Jo@example.com) holds externalId E00001 now"


# -- bridge quality: role codes, missing values, dead letters ---------------------------------


async def test_quality_reports_unknown_codes_missing_values_and_data_quality_dead_letters(
    scim: httpx.AsyncClient, db: Database, database_url: str, rules_dir: Path
) -> None:
    shutil.copy(ROOT / "rules" / "role-codes.yaml", rules_dir / "role-codes.yaml")  # EMPLOYEE…
    people = [
        await create(scim, employee(n, codes=["BEN-CHOICE-2026", "EMPLOYEE"])) for n in (1, 2, 3)
    ]
    people += [
        await create(scim, employee(n, codes=["BEN_CHOICE_2026", "EMPLOYEE"])) for n in (4, 5)
    ]
    await create(scim, employee(6, codes=["BEN_CHOICE_2026"], email=False))
    now = datetime.now(UTC)
    with db.write() as conn:  # the LMS refused emp4's account for its data
        intent = {
            "kind": "upsert_account",
            "person": people[3]["id"],
            "target": "lms-b",
            "rule": "x",
        }
        outbox.enqueue(conn, [intent], now=now)
        (row,) = outbox.claim(
            conn,
            now=now,
            lease_until=now + timedelta(minutes=1),
            worker="w",
            limit=10,
            skip_locked=False,
            targets=["lms-b"],
        )
        error = "invalid email: emp4@example"
        dead = outbox.DEAD
        assert outbox.settle(
            conn, row["id"], worker="w", status=dead, now=now, error=error, category="data_quality"
        )

    found = report(database_url, rules_dir)
    assert found["rules_problem"] is None and found["population"] == 6
    (code,) = found["unknown_role_codes"]  # EMPLOYEE is in the catalogue: no finding
    assert code["code"] == "BEN-CHOICE-2026" and code["count"] == 3
    assert sorted(code["examples"]) == ["emp1@example.com", "emp2@example.com", "emp3@example.com"]
    assert code["suggestion"] == "BEN_CHOICE_2026"
    assert code["reason"].startswith("unknown role code BEN-CHOICE-2026 held by 3 people (")
    assert code["reason"].endswith("): did you mean BEN_CHOICE_2026?")
    assert found["missing_values"] == [
        {
            "rule_file": "benefits-2026",
            "attribute": "email",
            "source": 'emails[type eq "work"].value',
            "count": 1,
            "examples": ["emp6@example.com"],
        }
    ]
    assert found["other_problems"] == []
    assert found["dead_letters"] == {
        "category": "data_quality",
        "count": 1,
        "examples": [
            {
                "id": row["id"],
                "target": "lms-b",
                "person": people[3]["id"],
                "label": "emp4@example.com",
                "intent": "upsert_account",
                "error": error,
            }
        ],
    }
    assert found["duplicates_refused"] == []

    text = bridge(database_url, rules_dir, "quality")
    assert text.exit_code == 0
    assert "Unknown role codes (1):" in text.stdout
    assert code["reason"] in text.stdout
    assert (
        '[benefits-2026] email (from emails[type eq "work"].value): 1 person (emp6@example.com)'
        in text.stdout
    )
    assert f"#{row['id']} lms-b upsert_account for emp4@example.com: {error}" in text.stdout

    # bridge plan agrees: one item for the code, none for EMPLOYEE
    plan = json.loads(bridge(database_url, rules_dir, "plan", "--json").stdout)
    codes = [a for a in plan["attention"] if a["kind"] == "unknown-role-code"]
    assert [(a["details"]["code"], a["details"]["count"]) for a in codes] == [
        ("BEN-CHOICE-2026", 3)
    ]


async def test_quality_still_reports_refusals_when_the_rules_do_not_check(
    scim: httpx.AsyncClient, database_url: str, rules_dir: Path
) -> None:
    await create(scim, employee(1, codes=[]))
    clash = {"schemas": [USER_SCHEMA], "userName": "x@example.com", "externalId": "E00001"}
    assert_scim(await scim.post("/Users", json=clash), 409)
    (rules_dir / "broken.yaml").write_text("version: 1\nname: broken\ntarget: nowhere\n")
    found = report(database_url, rules_dir)
    assert "bridge rules check" in found["rules_problem"]
    assert found["unknown_role_codes"] == [] and found["population"] is None
    assert [item["value"] for item in found["duplicates_refused"]] == ["E00001"]


def test_missing_values_of_seated_and_unseated_people_group_by_attribute() -> None:
    source = 'emails[type eq "work"].value'
    items = [
        AttentionItem(
            "p1", "ann", "benefits-2026", "problem", f"missing required email (from {source})"
        ),
        AttentionItem(
            "p2",
            "bob",
            "benefits-2026",
            "problem",
            f"missing required email (from {source}) — eligible, not drawn (rank 12 of 40)",
        ),
    ]
    missing, other = problem_groups(items)
    assert other == []
    assert [(g["attribute"], g["source"], g["count"]) for g in missing] == [("email", source, 2)]
