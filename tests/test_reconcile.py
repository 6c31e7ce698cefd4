"""``bridge reconcile``: hand changes in Moodle found as drift, re-asserted through the outbox.

People are provisioned for real (SCIM → plan → apply → relay into the LMS simulator), then
changed by hand in the simulator's state the way an LMS admin would; the reconcile must find
exactly that drift, each item with its reason, repair what the bridge owns and leave the rest.
The pure comparison is specified on plain data first.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.cli.relay import build_relay
from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.provision import Provisioner
from bridge.provision.drift import ACCOUNT_MISSING
from bridge.provision.drift import ACCOUNT_REACTIVATED
from bridge.provision.drift import ACCOUNT_SUSPENDED
from bridge.provision.drift import ADDED_BY_HAND
from bridge.provision.drift import COHORT_REMOVED
from bridge.provision.drift import ENROLMENT_REACTIVATED
from bridge.provision.drift import ENROLMENT_REMOVED
from bridge.provision.drift import ENROLMENT_SUSPENDED
from bridge.provision.drift import FIELD
from bridge.provision.drift import NOT_OWNED
from bridge.provision.drift import UNCHECKED
from bridge.provision.drift import Managed
from bridge.provision.drift import compare
from bridge.provision.drift import field_drift
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import RuleSet
from bridge.rules.plan import plan_from_json
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.targets.moodle_reconcile import Participants
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules

# -- the comparison, on plain data ------------------------------------------------------------

COURSE = Assignment(AssignmentKind.enrolment, "ben-course", "true", "BEN-2026", due_days=30)
ACCOUNT = {"username": "ann", "email": "ann@example.com", "firstname": "Ann", "auth": "oauth2"}
USER = {"id": 7, "username": "ann", "email": "ann@example.com", "firstname": "Ann"}


def managed(active: Iterable[int] = (), suspended: Iterable[int] = ()) -> Managed:
    return Managed(
        "moodle",
        "benefits",
        {"course:BEN-2026": COURSE},
        {"BEN-2026": Participants(3, frozenset(active), frozenset(suspended))},
        {"ben-course": "benefits"},
    )


def confirmed(*, active: bool = True, course: str | None = "active") -> dict[str, Any]:
    assignments = {}
    if course is not None:
        assignments["course:BEN-2026"] = {"status": course, "rule": "ben-course", "ref": "BEN-2026"}
    return {"account": ACCOUNT, "active": active, "assignments": assignments}


def kinds(found: list[Any]) -> list[tuple[str, str | None]]:
    return [(d.kind, d.intent.kind.value if d.intent else None) for d in found]


def test_no_drift_when_moodle_holds_what_it_confirmed() -> None:
    assert compare("p1", "7", confirmed(), USER, managed(active={7})) == []


def test_account_deleted_by_hand_is_created_again_and_re_enrolled() -> None:
    found = compare("p1", "7", confirmed(), None, managed())
    assert kinds(found) == [(ACCOUNT_MISSING, "upsert_account"), (ENROLMENT_REMOVED, "enrol")]
    create = found[0].intent
    assert create is not None and create.data == {"create": True, "attributes": ACCOUNT}
    assert found[1].intent is not None and found[1].intent.data["due_days"] == 30
    assert "deleted by hand" in found[0].reason


def test_account_suspended_by_hand_is_reactivated_and_reactivated_by_hand_suspended() -> None:
    held = {**USER, "suspended": True}
    assert kinds(compare("p1", "7", confirmed(), held, managed(active={7}))) == [
        (ACCOUNT_SUSPENDED, "reactivate_account")
    ]
    found = compare("p1", "7", confirmed(active=False), USER, managed(active={7}))
    assert kinds(found) == [(ACCOUNT_REACTIVATED, "suspend_account")]


def test_field_drift_on_mapped_fields_only() -> None:
    held = {**USER, "email": "someone@else.example", "auth": "manual"}
    assert field_drift(ACCOUNT, held, {}) == {"email": "someone@else.example"}
    found = compare("p1", "7", confirmed(), held, managed(active={7}))
    assert kinds(found) == [(FIELD, "upsert_account")]
    assert found[0].intent is not None
    assert found[0].intent.data == {"create": False, "attributes": {"email": "ann@example.com"}}
    # a custom profile field Moodle does not return may be undefined there: not compared
    assert field_drift({**ACCOUNT, "title": "Clerk"}, USER, {}) == {}


def test_enrolments_removed_suspended_reactivated_or_added_by_hand() -> None:
    assert kinds(compare("p1", "7", confirmed(), USER, managed())) == [(ENROLMENT_REMOVED, "enrol")]
    assert kinds(compare("p1", "7", confirmed(), USER, managed(suspended={7}))) == [
        (ENROLMENT_SUSPENDED, "enrol")
    ]
    assert kinds(compare("p1", "7", confirmed(course="suspended"), USER, managed(active={7}))) == [
        (ENROLMENT_REACTIVATED, "suspend_enrolment")
    ]
    added = compare("p1", "7", confirmed(course=None), USER, managed(active={7}))
    assert kinds(added) == [(ADDED_BY_HAND, None)]
    assert added[0].owned is False


# -- against the LMS simulator, on both databases ---------------------------------------------


def post(db: Database, catalog: Catalog, settings: Settings, rules: Path, *people: Any) -> None:
    """SCIM POST /Users of each body, through the real app with ``rules``."""
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    app = create_app(
        Provisioner(db, catalog, rules=book.current),
        catalog,
        settings,
        Authenticator(db, env_token=TOKEN),
    )

    async def send() -> None:
        async with app_client(app) as client:
            for body in people:
                response = await client.post("/Users", json=body)
                assert response.status_code == 201, response.text

    asyncio.run(send())


def provision(db: Database, catalog: Catalog, settings: Settings, rules: Path, people: int) -> None:
    """People 1..``people`` holding BEN_CHOICE_2026 created through SCIM (the pilot is
    admitted by plan + apply: ``deliver``)."""
    bodies = [employee(n, codes=["BEN_CHOICE_2026"]) for n in range(1, people + 1)]
    post(db, catalog, settings, rules, *bodies)


def deliver(database_url: str, rules: Path, tmp_path: Path, catalog: Catalog) -> None:
    """plan → apply → relay until nothing is due."""
    plan = tmp_path / "plan.json"
    result = run_cli(
        database_url,
        rules,
        "plan",
        "--detailed-exitcode",
        "--out",
        str(plan),
        MOODLE_TOKEN=SIM_MOODLE_TOKEN,
    )
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        applied = run_cli(database_url, rules, "apply", str(plan), MOODLE_TOKEN=SIM_MOODLE_TOKEN)
        assert applied.exit_code == 0, applied.output
    relay(database_url, rules, catalog)


def relay(
    database_url: str, rules: Path, catalog: Catalog, env: dict[str, str] | None = None
) -> None:
    """Deliver everything due, in process (its targets' connections closed after); ``env``:
    the targets' credentials (default: the Moodle simulator's token)."""
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    db = connect(database_url)
    try:
        drain(db, book.current(), env)
    finally:
        db.dispose()


def drain(db: Database, ruleset: RuleSet | None, env: Mapping[str, str] | None = None) -> None:
    """The relay of ``ruleset``'s targets run until nothing is due, then closed."""
    relay = build_relay(db, ruleset, env or {"MOODLE_TOKEN": SIM_MOODLE_TOKEN})
    assert relay is not None

    async def run() -> None:
        try:
            while await relay.run_once():
                pass
        finally:
            await relay.aclose()

    asyncio.run(run())


def reconcile(database_url: str, rules: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(
        database_url,
        rules,
        "reconcile",
        "--detailed-exitcode",
        "--json",
        *args,
        MOODLE_TOKEN=SIM_MOODLE_TOKEN,
    )
    assert result.exit_code in (0, 2), result.output
    return result.exit_code, json.loads(result.stdout)


def test_reconcile_finds_hand_changes_in_moodle_and_apply_repairs_them(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    provision(db, catalog, settings, rules, 6)
    deliver(database_url, rules, tmp_path, catalog)
    code, before = reconcile(database_url, rules)
    assert code == 0 and before["intents"] == [] and before["drift"] == [], before["drift"]

    site = simulator.state.moodle
    by_name = {u.username: u for u in site.users.values() if not u.deleted}
    ben = next(c for c in site.courses.values() if c.shortname == "BEN-2026")
    mgr = next(c for c in site.courses.values() if c.shortname == "BEN-2026-MGR")
    site.delete_user(by_name["emp1@example.com"])
    by_name["emp2@example.com"].suspended = True
    site.unenrol(site.instance(ben.id, "manual"), by_name["emp3@example.com"].id)
    site.enrol(site.instance(mgr.id, "manual"), by_name["emp4@example.com"].id, 5)
    by_name["emp5@example.com"].email = "someone.else@example.com"
    stranger = site.add_user("stranger", firstname="Stray", lastname="Hand", email="s@example.com")
    site.enrol(site.instance(ben.id, "manual"), stranger.id, 5)

    code, document = reconcile(database_url, rules, "--out", str(tmp_path / "drift.json"))
    assert code == 2
    assert document["format"] == "bridge-plan/1" and document["source"] == "reconcile"
    plan_from_json(document)  # a plan file like any other
    drift = sorted(
        (d["label"], d["kind"], d["ref"], d["action"], d["owned"])
        for d in document["drift"]
        if d["kind"] != UNCHECKED
    )
    assert drift == [
        ("emp1@example.com", ACCOUNT_MISSING, None, "upsert_account", True),
        ("emp1@example.com", COHORT_REMOVED, "BEN2026", "add_cohort_member", True),
        ("emp1@example.com", ENROLMENT_REMOVED, "BEN-2026", "enrol", True),
        ("emp2@example.com", ACCOUNT_SUSPENDED, None, "reactivate_account", True),
        ("emp3@example.com", ENROLMENT_REMOVED, "BEN-2026", "enrol", True),
        ("emp4@example.com", ADDED_BY_HAND, "BEN-2026-MGR", None, False),
        ("emp5@example.com", FIELD, "email", "upsert_account", True),
        ("stranger", NOT_OWNED, "BEN-2026", None, False),
    ]
    assert all(d["reason"] for d in document["drift"])
    intents = sorted((i["kind"], i.get("ref"), i["state"]) for i in document["intents"])
    assert intents == [
        ("add_cohort_member", "BEN2026", "to_make"),
        ("enrol", "BEN-2026", "to_make"),
        ("enrol", "BEN-2026", "to_make"),
        ("reactivate_account", None, "to_make"),
        ("upsert_account", None, "to_make"),
        ("upsert_account", None, "to_make"),
    ]
    assert all(i["reason"] for i in document["intents"])
    assert document["counts"]["create_account"]["count"] == 1
    assert document["safety"][0]["verdict"] == "ok"

    result = run_cli(
        database_url,
        rules,
        "reconcile",
        "--detailed-exitcode",
        "--apply",
        MOODLE_TOKEN=SIM_MOODLE_TOKEN,
    )
    assert result.exit_code == 2, result.output
    assert "6 intent(s) applied" in result.output
    run_id = result.output.split("run ", 1)[1].split(":", 1)[0]
    # a reconcile run reverts like any run; a field written back has no before-image yet
    revert = run_cli(database_url, rules, "revert", "--run", run_id)  # shown, not applied
    assert "suspend_account" in revert.output and "suspend_enrolment BEN-2026" in revert.output
    assert revert.exit_code == 1 and "1 conflict(s)" in revert.output
    relay(database_url, rules, catalog)

    code, after = reconcile(database_url, rules)
    assert code == 0 and after["intents"] == []
    left = sorted((d["label"], d["kind"]) for d in after["drift"] if d["kind"] != UNCHECKED)
    assert left == [("emp4@example.com", ADDED_BY_HAND), ("stranger", NOT_OWNED)]
    live = {u.username: u for u in site.users.values() if not u.deleted}
    assert not live["emp2@example.com"].suspended
    assert live["emp5@example.com"].email == "emp5@example.com"
    for name in ("emp1@example.com", "emp3@example.com", "stranger"):
        assert (site.instance(ben.id, "manual").id, live[name].id) in site.enrolments
    # not owned: left as it was
    assert (site.instance(mgr.id, "manual").id, live["emp4@example.com"].id) in site.enrolments


def test_reconcile_pending_intents_are_not_enqueued_twice(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    provision(db, catalog, settings, rules, 2)
    deliver(database_url, rules, tmp_path, catalog)
    site = simulator.state.moodle
    site.user_named("emp1@example.com").suspended = True
    first = run_cli(database_url, rules, "reconcile", "--apply", MOODLE_TOKEN=SIM_MOODLE_TOKEN)
    assert "1 intent(s) applied" in first.output
    shown = run_cli(database_url, rules, "reconcile", MOODLE_TOKEN=SIM_MOODLE_TOKEN)
    assert shown.exit_code == 0, shown.output  # nothing left to enqueue
    assert "reactivate_account (pending)" in shown.output
    assert "suspended by hand" in shown.output and "1 already on their way" in shown.output
    code, document = reconcile(database_url, rules)  # not relayed yet: on its way
    assert code == 0 and document["intents"] == []
    assert [(i["kind"], i["state"]) for i in document["in_flight"]] == [
        ("reactivate_account", "pending")
    ]


def test_reconcile_says_which_target_kinds_it_cannot_read(
    tmp_path: Path, database_url: str
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules" / "examples" / "docebo", rules)
    result = run_cli(database_url, rules, "reconcile", "--target", "docebo")
    assert result.exit_code == 1
    assert "reconcile is not available for kind rest yet" in result.output
    assert "it reads: moodle, canvas, scim" in result.output


def test_saved_reconcile_is_applied_by_bridge_apply_unless_stale(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    provision(db, catalog, settings, rules, 2)
    deliver(database_url, rules, tmp_path, catalog)
    site = simulator.state.moodle
    site.user_named("emp1@example.com").suspended = True
    saved = tmp_path / "drift.json"
    code, _ = reconcile(database_url, rules, "--out", str(saved))
    assert code == 2
    site.user_named("emp2@example.com").suspended = True  # more drift since it was reviewed
    stale = run_cli(database_url, rules, "apply", str(saved), MOODLE_TOKEN=SIM_MOODLE_TOKEN)
    assert stale.exit_code == 1 and "stale" in stale.output
    site.user_named("emp2@example.com").suspended = False
    applied = run_cli(database_url, rules, "apply", str(saved), MOODLE_TOKEN=SIM_MOODLE_TOKEN)
    assert applied.exit_code == 0 and "1 intent(s) applied" in applied.output
    relay(database_url, rules, catalog)
    code, after = reconcile(database_url, rules)
    assert code == 0 and not site.user_named("emp1@example.com").suspended


def test_reconcile_removals_over_the_safety_threshold_are_quarantined(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    """An account the bridge suspended, reactivated by hand, is suspended again: a removal,
    judged by the rule file's safety limits (1 of 2 accounts is over max_removals_percent 10)."""
    url, simulator = simulator_url
    rules = shipped_rules(tmp_path, url)
    provision(db, catalog, settings, rules, 2)
    deliver(database_url, rules, tmp_path, catalog)
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    app = create_app(
        Provisioner(db, catalog, rules=book.current),
        catalog,
        settings,
        Authenticator(db, env_token=TOKEN),
    )

    async def deactivate() -> None:
        async with app_client(app) as client:
            found = await client.get("/Users", params={"filter": 'userName eq "emp1@example.com"'})
            person = found.json()["Resources"][0]["id"]
            body = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            }
            response = await client.patch(f"/Users/{person}", json=body)
            assert response.status_code == 200, response.text

    asyncio.run(deactivate())
    relay(database_url, rules, catalog)
    site = simulator.state.moodle
    assert site.user_named("emp1@example.com").suspended
    site.user_named("emp1@example.com").suspended = False  # reactivated by hand

    code, document = reconcile(database_url, rules)
    assert code == 2 and document["status"] == "quarantined"
    assert [(d["kind"], d["action"]) for d in document["drift"] if d["kind"] != UNCHECKED] == [
        (ACCOUNT_REACTIVATED, "suspend_account")
    ]
    result = run_cli(database_url, rules, "reconcile", "--apply", MOODLE_TOKEN=SIM_MOODLE_TOKEN)
    assert "1 intent(s) quarantined" in result.output and "bridge approve" in result.output
    relay(database_url, rules, catalog)
    assert not site.user_named("emp1@example.com").suspended  # held until approved
    run_id = result.output.split("run ", 1)[1].split(":", 1)[0]
    approved = run_cli(database_url, rules, "approve", run_id)
    assert approved.exit_code == 0, approved.output
    relay(database_url, rules, catalog)
    assert site.user_named("emp1@example.com").suspended
    assert reconcile(database_url, rules)[0] == 0
