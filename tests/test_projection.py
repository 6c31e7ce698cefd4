"""The rules run on every SCIM write and over the population (plan/apply/approve/explain),
against a real database with the shipped rules/benefits-2026.yaml."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Provisioner
from bridge.provision.planning import PlanError
from bridge.provision.planning import Planner
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.store import projections
from bridge.store.engine import Database
from bridge.targets.moodle import MoodleTarget
from tests.conftest import HR
from tests.conftest import NOW
from tests.conftest import PATCH
from tests.conftest import employee
from tests.conftest import queued
from tests.pilots import draw
from tests.pilots import uncapped


async def test_a_scim_create_enqueues_the_rules_intents_in_its_transaction(
    scim: httpx.AsyncClient, db: Database, book: RuleBook, rules_dir: Path
) -> None:
    assert uncapped(rules_dir) and book.reload()  # each write admits its person
    created = await scim.post("/Users", json=employee(1, codes=["BEN_CHOICE_2026"]))
    assert created.status_code == 201
    person = created.json()["id"]
    kinds = [(i["kind"], i.get("ref")) for i in queued(db)]
    assert kinds == [
        ("upsert_account", None),
        ("enrol", "BEN-2026"),
        ("add_cohort_member", "BEN2026"),
    ]
    with db.read() as conn:
        projection = projections.get(conn, "benefits-2026", person)
    assert projection is not None and projection.in_scope


async def test_a_capped_pilot_is_drawn_by_apply_then_writes_project_live(
    scim: httpx.AsyncClient, db: Database, ruled: Provisioner
) -> None:
    created = await scim.post("/Users", json=employee(1, codes=["BEN_CHOICE_2026"]))
    assert created.status_code == 201
    person = created.json()["id"]
    assert queued(db) == []  # a newcomer waits for the draw: arrival order admits nobody
    with db.read() as conn:
        assert projections.get(conn, "benefits-2026", person) is None
    assert draw(ruled) == 3
    with db.read() as conn:
        projection = projections.get(conn, "benefits-2026", person)
    assert projection is not None and projection.in_scope
    response = await scim.patch(
        f"/Users/{person}",
        json={
            "schemas": [PATCH],
            "Operations": [
                {
                    "op": "replace",
                    "path": f"{HR}:roleCodes",
                    "value": ["BEN_CHOICE_2026", "MANAGER"],
                }
            ],
        },
    )
    assert response.status_code == 200
    assert [(i["kind"], i.get("ref")) for i in queued(db)[3:]] == [
        ("upsert_account", None),
        ("enrol", "BEN-2026-MGR"),
    ]


async def test_losing_the_role_code_suspends_the_enrolment(
    scim: httpx.AsyncClient, db: Database, ruled: Provisioner
) -> None:
    person = (await scim.post("/Users", json=employee(2, codes=["BEN_CHOICE_2026"]))).json()["id"]
    draw(ruled)
    before = len(queued(db))
    response = await scim.patch(
        f"/Users/{person}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": f"{HR}:roleCodes", "value": ["EMPLOYEE"]}],
        },
    )
    assert response.status_code == 200
    added = [(i["kind"], i.get("ref")) for i in queued(db)[before:]]
    assert ("suspend_enrolment", "BEN-2026") in added
    assert ("remove_cohort_member", "BEN2026") in added
    assert all(kind != "unenrol" for kind, _ in added)


async def test_deleting_a_person_suspends_the_account_never_deletes(
    scim: httpx.AsyncClient, db: Database, ruled: Provisioner
) -> None:
    person = (await scim.post("/Users", json=employee(3, codes=["BEN_CHOICE_2026"]))).json()["id"]
    draw(ruled)
    before = len(queued(db))
    assert (await scim.delete(f"/Users/{person}")).status_code == 204
    assert [i["kind"] for i in queued(db)[before:]] == ["suspend_account"]


async def test_a_person_out_of_scope_gets_nothing(
    scim: httpx.AsyncClient, db: Database, ruled: Provisioner
) -> None:
    await scim.post("/Users", json=employee(4, codes=["BEN_CHOICE_2026"], department="Sales"))
    assert draw(ruled) == 0
    assert queued(db) == []


async def test_a_failed_write_enqueues_nothing(
    scim: httpx.AsyncClient, db: Database, book: RuleBook, rules_dir: Path
) -> None:
    assert uncapped(rules_dir) and book.reload()  # each write admits its person
    await scim.post("/Users", json=employee(5, codes=["BEN_CHOICE_2026"]))
    assert len(queued(db)) == 3
    duplicate = employee(5, codes=["BEN_CHOICE_2026"])
    duplicate["externalId"] = "other"
    assert (await scim.post("/Users", json=duplicate)).status_code == 409
    assert len(queued(db)) == 3


def _planner(db: Database, ruled: Provisioner, catalog: Catalog, book: RuleBook) -> Planner:
    return Planner(db, ruled.store, catalog, book.current, lambda: NOW)


def _seed(db: Database, catalog: Catalog, count: int, **kwargs: Any) -> Provisioner:
    bare = Provisioner(db, catalog, clock=lambda: NOW)  # no rules: the population predates them
    from bridge.provision import Cause

    for number in range(count):
        bare.create(Cause("seed"), "User", employee(number, **kwargs))
    return bare


def test_plan_then_apply_then_nothing_left(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook
) -> None:
    _seed(db, catalog, 12, codes=["BEN_CHOICE_2026"])
    planner = _planner(db, ruled, catalog, book)
    document = planner.plan_document()
    assert document["status"] == "changes"
    assert document["exit_code"] == 2
    run_id, status, written = planner.apply(document, actor="test")
    assert status == "applied"
    assert written == 36
    again = planner.plan_document()
    assert again["status"] == "no-changes"
    assert again["exit_code"] == 0
    assert run_id


def test_a_stale_plan_is_refused(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook
) -> None:
    bare = _seed(db, catalog, 3, codes=["BEN_CHOICE_2026"])
    planner = _planner(db, ruled, catalog, book)
    document = planner.plan_document()
    from bridge.provision import Cause

    bare.create(Cause("seed"), "User", employee(99, codes=["BEN_CHOICE_2026"]))
    with pytest.raises(PlanError, match="stale"):
        planner.apply(document, actor="test")
    assert queued(db) == []


def test_the_pilot_admits_at_most_its_cap(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook
) -> None:
    _seed(db, catalog, 230, codes=["EMPLOYEE"])
    plan = _planner(db, ruled, catalog, book).plan_document()
    assert plan["counts"]["create_account"]["count"] == 200


async def _deliver(db: Database, book: RuleBook) -> None:
    """The relay delivers the outbox to the LMS simulator: the LMS confirms what it holds."""
    ruleset = book.current()
    assert ruleset is not None
    target = MoodleTarget(
        ruleset.targets["moodle"],
        SIM_MOODLE_TOKEN,
        transport=httpx.ASGITransport(app=create_simulator(Knobs(seed=1))),
    )
    relay = Relay(db, {"moodle": target}, clock=lambda: datetime.now(UTC))
    while await relay.run_once():
        pass


async def test_mass_removal_is_quarantined_until_approved(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook, rules_dir: Path
) -> None:
    _seed(db, catalog, 40, codes=["BEN_CHOICE_2026"])
    planner = _planner(db, ruled, catalog, book)
    planner.apply(planner.plan_document(), actor="test")
    await _deliver(db, book)  # plans diff against what the LMS confirmed (DESIGN §4)
    text = (rules_dir / "benefits-2026.yaml").read_text()
    (rules_dir / "benefits-2026.yaml").write_text(
        text.replace("course: BEN-2026\n", "course: BEN-2027\n")
    )
    assert book.reload()
    document = planner.plan_document()
    assert document["status"] == "quarantined"
    run_id, status, _ = planner.apply(document, actor="test")
    assert status == "quarantined"
    assert queued(db) == []
    released = planner.approve(run_id, actor="admin")
    assert released > 0
    assert {i["kind"] for i in queued(db)} >= {"suspend_enrolment", "enrol"}


def test_explain_names_each_condition_and_its_verdict(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook
) -> None:
    _seed(db, catalog, 1, codes=["BEN_CHOICE_2026", "MANAGER"])
    explanation = _planner(db, ruled, catalog, book).explain("E00000")
    from bridge.rules.explain_render import render_explanation

    text = render_explanation(explanation)
    assert "benefits-2026-managers" in text
    assert "✓" in text
    with pytest.raises(PlanError, match="no person"):
        _planner(db, ruled, catalog, book).explain("nobody")


def test_a_broken_rule_file_is_refused_and_the_last_good_set_stays(
    book: RuleBook, rules_dir: Path
) -> None:
    good = book.current()
    (rules_dir / "benefits-2026.yaml").write_text(
        "version: 1\nname: x\ntarget: nowhere\nenrolments: ["
    )
    assert not book.reload()
    assert book.current() is good
    assert book.last_refusal and "benefits-2026.yaml" in str(book.last_refusal[0])


def test_a_plan_restricted_with_only_projects_only_what_it_sends(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook
) -> None:
    _seed(db, catalog, 5, codes=["BEN_CHOICE_2026"])
    planner = _planner(db, ruled, catalog, book)
    partial = planner.plan_document(only={"benefits-2026-course"})
    kinds = {i["kind"] for i in partial["intents"]}
    assert kinds == {"upsert_account", "enrol"}
    planner.apply(partial, actor="test")
    rest = planner.plan_document()
    assert {i["kind"] for i in rest["intents"]} == {"add_cohort_member"}
    assert rest["counts"]["add_cohort_member"]["count"] == 5


def test_only_with_an_unknown_rule_is_an_error(
    db: Database, catalog: Catalog, ruled: Provisioner, book: RuleBook
) -> None:
    with pytest.raises(PlanError, match="benefits-2026-course"):
        _planner(db, ruled, catalog, book).plan_document(only={"benefits-2026-corse"})
