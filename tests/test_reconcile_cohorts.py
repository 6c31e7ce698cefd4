"""``bridge reconcile`` of Moodle cohort members: removed by hand → added again, added by hand
→ reported; the simulator's ``core_cohort_get_cohort_members``; a function missing from the
token's service named as a configuration error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.moodle import FUNCTIONS
from bridge.lmssim.moodle_ws import WsError
from bridge.provision.drift import ADDED_BY_HAND
from bridge.provision.drift import COHORT_REMOVED
from bridge.provision.drift import NOT_OWNED
from bridge.provision.drift import Managed
from bridge.provision.drift import compare
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.schemas import Catalog
from bridge.store.engine import Database
from bridge.targets.moodle_reconcile import Participants
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.test_reconcile import deliver
from tests.test_reconcile import post
from tests.test_reconcile import reconcile
from tests.test_reconcile import relay

# -- the comparison, on plain data ------------------------------------------------------------

COHORT = Assignment(AssignmentKind.cohort, "ben-cohort", "true", "BEN2026")
USER = {"id": 7, "username": "ann", "email": "ann@example.com"}


def managed(members: set[int]) -> Managed:
    return Managed(
        "moodle",
        "benefits",
        {"cohort:BEN2026": COHORT},
        {},
        {"ben-cohort": "benefits"},
        cohorts={"BEN2026": Participants(4, frozenset(members), frozenset())},
    )


def confirmed(member: bool) -> dict[str, Any]:
    assignments = {"cohort:BEN2026": {"status": "active", "kind": "cohort"}} if member else {}
    return {"account": {"username": "ann"}, "active": True, "assignments": assignments}


def test_cohort_membership_removed_by_hand_is_added_again() -> None:
    assert compare("p1", "7", confirmed(True), USER, managed({7})) == []
    found = compare("p1", "7", confirmed(True), USER, managed(set()))
    assert [(d.kind, d.ref, d.owned) for d in found] == [(COHORT_REMOVED, "BEN2026", True)]
    intent = found[0].intent
    assert intent is not None and intent.kind.value == "add_cohort_member"
    assert (intent.rule, intent.ref, intent.data) == ("ben-cohort", "BEN2026", {"kind": "cohort"})
    gone = compare("p1", "7", confirmed(True), None, managed(set()))
    assert [d.kind for d in gone] == ["account-missing", COHORT_REMOVED]
    assert "went with the account" in gone[1].reason


def test_cohort_membership_added_by_hand_is_reported_only() -> None:
    found = compare("p1", "7", confirmed(False), USER, managed({7}))
    assert [(d.kind, d.owned, d.intent) for d in found] == [(ADDED_BY_HAND, False, None)]
    assert "cohort BEN2026" in found[0].reason


# -- the simulator's core_cohort_get_cohort_members -------------------------------------------


def test_simulated_get_cohort_members_answers_as_moodle(simulator_url: tuple[str, Any]) -> None:
    site = simulator_url[1].state.moodle
    cohort = next(c for c in site.cohorts.values() if c.idnumber == "BEN2026")
    zed = site.add_user("zed", firstname="Zed", lastname="Zulu", email="z@example.com")
    amy = site.add_user("amy", firstname="Amy", lastname="Alpha", email="a@example.com")
    gone = site.add_user("gone", firstname="Gone", lastname="Away", email="g@example.com")
    for user in (zed, amy, gone):
        site.add_member(cohort.id, user.id)
    site.delete_user(gone)
    call = site.call
    assert call(SIM_MOODLE_TOKEN, "core_cohort_get_cohort_members", {"cohortids": [cohort.id]}) == [
        {"cohortid": cohort.id, "userids": [amy.id, zed.id]}  # by last name; no deleted user
    ]
    with pytest.raises(WsError) as missing:
        call(SIM_MOODLE_TOKEN, "core_cohort_get_cohort_members", {"cohortids": [cohort.id, 999]})
    assert missing.value.errorcode == "invalidrecord"
    with pytest.raises(WsError) as invalid:
        call(SIM_MOODLE_TOKEN, "core_cohort_get_cohort_members", {"cohortids": ["x"]})
    assert invalid.value.errorcode == "invalidparameter"


# -- against the LMS simulator, on both databases ---------------------------------------------


def test_reconcile_finds_cohort_hand_changes_and_apply_repairs_them(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    people = [employee(n, codes=["BEN_CHOICE_2026"]) for n in (1, 2, 3)]
    post(db, catalog, settings, rules, *people, employee(4, codes=["EMPLOYEE"]))
    deliver(database_url, rules, tmp_path, catalog)
    code, before = reconcile(database_url, rules)
    assert code == 0 and before["drift"] == [], before["drift"]
    site = simulator.state.moodle
    cohort = next(c for c in site.cohorts.values() if c.idnumber == "BEN2026")
    by_name = {u.username: u for u in site.users.values() if not u.deleted}
    assert {u for c, u in site.members if c == cohort.id} == {
        by_name[f"emp{n}@example.com"].id for n in (1, 2, 3)
    }
    site.remove_member(cohort.id, by_name["emp1@example.com"].id)
    site.add_member(cohort.id, by_name["emp4@example.com"].id)  # the rules do not want it
    stranger = site.add_user("stranger", firstname="Stray", lastname="Hand", email="s@example.com")
    site.add_member(cohort.id, stranger.id)

    code, document = reconcile(database_url, rules)
    assert code == 2
    drift = sorted(
        (d["label"], d["kind"], d["ref"], d["action"], d["owned"]) for d in document["drift"]
    )
    assert drift == [
        ("emp1@example.com", COHORT_REMOVED, "BEN2026", "add_cohort_member", True),
        ("emp4@example.com", ADDED_BY_HAND, "BEN2026", None, False),
        ("stranger", NOT_OWNED, "BEN2026", None, False),
    ]
    assert [(i["kind"], i["ref"], i["rule"]) for i in document["intents"]] == [
        ("add_cohort_member", "BEN2026", "benefits-2026-cohort")
    ]

    applied = run_cli(
        database_url,
        rules,
        "reconcile",
        "--detailed-exitcode",
        "--apply",
        MOODLE_TOKEN=SIM_MOODLE_TOKEN,
    )
    assert applied.exit_code == 2 and "1 intent(s) applied" in applied.output, applied.output
    relay(database_url, rules, catalog)
    assert (cohort.id, by_name["emp1@example.com"].id) in site.members
    code, after = reconcile(database_url, rules)
    assert code == 0 and after["intents"] == []
    assert sorted((d["label"], d["kind"]) for d in after["drift"]) == [
        ("emp4@example.com", ADDED_BY_HAND),
        ("stranger", NOT_OWNED),
    ]
    # not owned: left as it was
    assert {(cohort.id, by_name["emp4@example.com"].id), (cohort.id, stranger.id)} <= site.members


def test_a_function_missing_from_the_service_is_named_with_where_to_add_it(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    post(db, catalog, settings, rules, employee(1, codes=["BEN_CHOICE_2026"]))
    deliver(database_url, rules, tmp_path, catalog)
    site = simulator.state.moodle
    site.service_functions = set(FUNCTIONS) - {
        "core_cohort_get_cohort_members",
        "core_enrol_get_enrolled_users",
    }
    before = site.snapshot()["calls"]
    result = run_cli(database_url, rules, "reconcile", MOODLE_TOKEN=SIM_MOODLE_TOKEN)
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "target moodle: bridge reconcile needs web-service functions" in said
    assert "core_cohort_get_cohort_members" in said and "core_enrol_get_enrolled_users" in said
    assert "Site administration → Server → Web services → External services" in said
    assert "Traceback" not in result.output
    # Refused before any read: only the site's function list was asked for.
    calls = site.snapshot()["calls"]
    asked = {f: n - before.get(f, 0) for f, n in calls.items() if n != before.get(f, 0)}
    assert asked == {"core_webservice_get_site_info": 1}
