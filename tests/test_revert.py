"""Reversal from the journal: inverse writes through the same provisioning and outbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.provision.planning import Planner
from bridge.provision.revert import Reverter
from bridge.provision.revert import RevertError
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.store import outbox
from bridge.store.engine import Database
from tests.conftest import GROUP_SCHEMA
from tests.conftest import HR
from tests.conftest import NOW
from tests.conftest import employee
from tests.conftest import queued
from tests.pilots import draw

CAUSE = Cause("hr-admin")


def _get(provisioner: Provisioner, person: str) -> dict[str, Any]:
    return provisioner.get("User", person).doc


def test_reverting_a_patch_restores_the_before_image_and_reaches_the_lms(
    ruled: Provisioner, db: Database
) -> None:
    person = ruled.create(CAUSE, "User", employee(1, codes=["BEN_CHOICE_2026"])).record.id
    draw(ruled)  # the capped pilot admits them (a SCIM create alone waits for the draw)
    change = ruled.patch(
        CAUSE, "User", person, [{"op": "replace", "path": f"{HR}:roleCodes", "value": ["EMPLOYEE"]}]
    )
    assert [i["kind"] for i in queued(db)][-2:] == ["suspend_enrolment", "remove_cohort_member"]
    reverter = Reverter(ruled)
    plan = reverter.plan(seq=change.seq)
    assert [s.action for s in plan.steps] == ["restore"]
    assert plan.exit_code == 2
    reverter.apply(plan, actor="admin")
    assert _get(ruled, person)[HR]["roleCodes"] == ["BEN_CHOICE_2026"]
    assert [i["kind"] for i in queued(db)][-2:] == ["enrol", "add_cohort_member"]


def test_reverting_a_create_deactivates_never_deletes(ruled: Provisioner, db: Database) -> None:
    created = ruled.create(CAUSE, "User", employee(2, codes=["BEN_CHOICE_2026"]))
    draw(ruled)  # the capped pilot admits them (a SCIM create alone waits for the draw)
    reverter = Reverter(ruled)
    plan = reverter.plan(seq=created.seq)
    assert [s.action for s in plan.steps] == ["deactivate"]
    reverter.apply(plan, actor="admin")
    assert _get(ruled, created.record.id)["active"] is False
    assert queued(db)[-1]["kind"] == "suspend_account"


def test_a_value_changed_by_someone_else_since_is_a_conflict(
    ruled: Provisioner, db: Database
) -> None:
    person = ruled.create(CAUSE, "User", employee(3, codes=["BEN_CHOICE_2026"])).record.id
    first = ruled.patch(
        CAUSE, "User", person, [{"op": "replace", "path": "title", "value": "Lead"}]
    )
    ruled.patch(
        Cause("okta"), "User", person, [{"op": "replace", "path": "title", "value": "Director"}]
    )
    reverter = Reverter(ruled)
    plan = reverter.plan(seq=first.seq)
    assert plan.conflicts and plan.exit_code == 1
    with pytest.raises(RevertError, match="conflict"):
        reverter.apply(plan, actor="admin")
    assert _get(ruled, person)["title"] == "Director"


def test_reverting_everything_since_a_time_for_one_person(ruled: Provisioner, db: Database) -> None:
    person = ruled.create(CAUSE, "User", employee(4, codes=["BEN_CHOICE_2026"])).record.id
    ruled.patch(CAUSE, "User", person, [{"op": "replace", "path": "title", "value": "A"}])
    ruled.patch(CAUSE, "User", person, [{"op": "replace", "path": "title", "value": "B"}])
    other = ruled.create(CAUSE, "User", employee(5, codes=["BEN_CHOICE_2026"])).record.id
    ruled.patch(CAUSE, "User", other, [{"op": "replace", "path": "title", "value": "Z"}])
    reverter = Reverter(ruled)
    plan = reverter.plan(since=NOW - timedelta(seconds=1), person="E00004")
    assert [s.action for s in plan.steps] == ["deactivate"]
    only_patches = reverter.plan(seq=None, since=NOW - timedelta(seconds=1))
    assert {s.resource_id for s in only_patches.steps} == {person, other}


def test_reverting_a_membership_change_inverts_it(ruled: Provisioner, db: Database) -> None:
    person = ruled.create(CAUSE, "User", employee(6, codes=["EMPLOYEE"])).record.id
    group = ruled.create(
        CAUSE, "Group", {"schemas": [GROUP_SCHEMA], "displayName": "Pilot"}
    ).record.id
    added = ruled.patch(
        CAUSE, "Group", group, [{"op": "add", "path": "members", "value": [{"value": person}]}]
    )
    reverter = Reverter(ruled)
    reverter.apply(reverter.plan(seq=added.seq), actor="admin")
    assert ruled.get("Group", group).members == []


def test_reverting_a_delete_recreates_the_person(ruled: Provisioner, db: Database) -> None:
    person = ruled.create(CAUSE, "User", employee(7, codes=["BEN_CHOICE_2026"])).record.id
    deleted = ruled.delete(CAUSE, "User", person)
    reverter = Reverter(ruled)
    plan = reverter.plan(seq=deleted.seq)
    assert [s.action for s in plan.steps] == ["recreate"]
    reverter.apply(plan, actor="admin")
    page = ruled.search(["User"], None, count=10)
    assert [r.external_id for r in page.records] == ["E00007"]


def test_reverting_a_run_enqueues_its_inverse_intents(
    db: Database,
    catalog: Catalog,
    ruled: Provisioner,
    book: RuleBook,
) -> None:
    bare = Provisioner(db, catalog, clock=lambda: NOW)
    for number in range(3):
        bare.create(CAUSE, "User", employee(number, codes=["BEN_CHOICE_2026"]))
    planner = Planner(db, ruled.store, catalog, book.current, lambda: NOW)
    run_id, _, _ = planner.apply(planner.plan_document(), actor="test")
    with db.write() as conn:
        conn.exec_driver_sql("UPDATE outbox SET status = 'done'")  # the relay delivered the run
    reverter = Reverter(ruled)
    plan = reverter.plan(run=run_id)
    reverter.apply(plan, actor="admin")
    with db.read() as conn:
        kinds = sorted({row["intent"]["kind"] for row in outbox.pending(conn, limit=100)})
    assert kinds == ["remove_cohort_member", "suspend_account", "suspend_enrolment"]
