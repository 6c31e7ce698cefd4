"""``bridge reconcile`` of a Canvas target: hand changes in the Canvas simulator found as drift,
re-asserted through the outbox; the simulator's account users list and enrollments list paged
by ``Link`` as Canvas does (``per_page`` capped at 100, opaque bookmarks, ``state[]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import Settings
from bridge.lmssim.app import SIM_CANVAS_TOKEN
from bridge.provision.drift import ACCOUNT_MISSING
from bridge.provision.drift import ACCOUNT_SUSPENDED
from bridge.provision.drift import ADDED_BY_HAND
from bridge.provision.drift import ENROLMENT_REMOVED
from bridge.provision.drift import ENROLMENT_SUSPENDED
from bridge.provision.drift import FIELD
from bridge.provision.drift import NOT_OWNED
from bridge.provision.drift import UNCHECKED
from bridge.rules.plan import plan_from_json
from bridge.schemas import Catalog
from bridge.store.engine import Database
from bridge.targets.canvas_api import THROTTLE_DELAY
from bridge.targets.canvas_api import next_link
from bridge.targets.canvas_reconcile import CanvasReader
from bridge.targets.canvas_reconcile import CanvasReadError
from bridge.targets.canvas_reconcile import field_drift
from tests.conftest import employee
from tests.conftest import run_cli
from tests.test_reconcile import post
from tests.test_reconcile import relay

RULES = """\
version: 1
name: canvas-benefits
target: canvas
aliases:
  roleCodes: urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser:roleCodes
  department: urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department
scope:
  filter: 'department eq "Claims"'
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
safety:
  max_removals: 20
  max_removals_percent: 50
"""
TARGETS = """\
targets:
  canvas:
    kind: canvas
    base_url: {url}
    credentials:
      token: env:CANVAS_TOKEN
    options:
      account_id: 1
      per_page: 2
"""


def canvas_rules(directory: Path, url: str) -> Path:
    """A rule file driving the Canvas simulator; ``per_page: 2`` so every list pages."""
    rules = directory / "rules"
    rules.mkdir()
    (rules / "targets.yaml").write_text(TARGETS.format(url=url))
    (rules / "canvas-benefits.yaml").write_text(RULES)
    return rules


def cli(database_url: str, rules: Path, *args: str) -> Any:
    return run_cli(database_url, rules, *args, CANVAS_TOKEN=SIM_CANVAS_TOKEN)


def reconcile(database_url: str, rules: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = cli(database_url, rules, "reconcile", "--detailed-exitcode", "--json", *args)
    assert result.exit_code in (0, 2), result.output
    return result.exit_code, json.loads(result.stdout)


def deliver(database_url: str, rules: Path, tmp_path: Path, catalog: Catalog) -> None:
    plan = tmp_path / "plan.json"
    planned = cli(database_url, rules, "plan", "--detailed-exitcode", "--out", str(plan))
    assert planned.exit_code in (0, 2), planned.output
    if planned.exit_code == 2:
        applied = cli(database_url, rules, "apply", str(plan))
        assert applied.exit_code == 0, applied.output
    relay(database_url, rules, catalog, {"CANVAS_TOKEN": SIM_CANVAS_TOKEN})


def test_canvas_field_drift_compares_names_and_email() -> None:
    account = {"firstname": "Ann", "lastname": "Lee", "email": "ann@example.com", "idnumber": "E1"}
    held = {"name": "Ann Lee", "sortable_name": "Lee, Ann", "email": "ANN@example.com"}
    assert field_drift(account, held, {}) == {}
    renamed = {**held, "name": "Annie Lee", "sortable_name": "Lee, Annie", "email": "x@y.example"}
    assert field_drift(account, renamed, {}) == {
        "firstname": "Annie Lee",
        "lastname": "Annie Lee",
        "email": "x@y.example",
    }


def test_simulated_canvas_lists_users_and_enrollments_by_link_pages(
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    site = simulator.state.canvas
    course = next(c for c in site.courses.values() if c.sis_course_id == "SEC-101")
    for number in range(150):
        user = site.add_user(f"u{number}", f"User {number:03d}", sis_user_id=f"S{number}")
        state = "inactive" if number % 10 == 0 else "completed" if number % 10 == 1 else "active"
        site.add_enrollment(user.id, course.id, "StudentEnrollment", state)
    site.users[max(site.users)].state = "deleted"
    headers = {"Authorization": f"Bearer {SIM_CANVAS_TOKEN}"}
    with httpx.Client(base_url=url, headers=headers) as client:

        def walk(path: str, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
            pages = []
            response = client.get(path, params=params)
            while True:
                assert response.status_code == 200, response.text
                pages.append(response.json())
                following = next_link(response.headers.get("link"))
                if following is None:
                    return pages
                assert "page=bookmark" in following  # opaque, followed as given
                response = client.get(following)

        users = walk("/api/v1/accounts/self/users", {"per_page": 500, "include[]": "email"})
        assert [len(p) for p in users] == [100, 49]  # per_page capped at 100; deleted left out
        listed = [u for page in users for u in page]
        assert len({u["id"] for u in listed}) == 149 and "email" in listed[0]
        assert listed[0]["workflow_state"] == "active"
        names = [u["sortable_name"] for u in listed]
        assert names == sorted(names)
        enrolled = walk(
            f"/api/v1/courses/sis_course_id:{course.sis_course_id}/enrollments",
            {"per_page": 40, "state[]": ["active", "inactive"]},
        )
        states = [e["enrollment_state"] for page in enrolled for e in page]
        assert len(states) == 150 - 15 and set(states) == {"active", "inactive"}
        assert client.get("/api/v1/accounts/2/users").status_code == 404


def test_reconcile_finds_hand_changes_in_canvas_and_apply_repairs_them(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    rules = canvas_rules(tmp_path, url)
    people = [employee(n, codes=["BEN_CHOICE_2026"]) for n in range(1, 7)]
    post(db, catalog, settings, rules, *people)
    deliver(database_url, rules, tmp_path, catalog)
    code, before = reconcile(database_url, rules)
    assert code == 0 and before["drift"] == [], before["drift"]

    site = simulator.state.canvas
    user = {u.login_id: u for u in site.users.values()}
    ben = next(c for c in site.courses.values() if c.sis_course_id == "BEN-2026")
    mgr = next(c for c in site.courses.values() if c.sis_course_id == "BEN-2026-MGR")

    def enrollment(login: str) -> Any:
        return next(
            e
            for e in site.enrollments.values()
            if (e.user_id, e.course_id) == (user[login].id, ben.id)
        )

    user["emp1@example.com"].state = "deleted"  # deleting a user deletes their enrollments
    enrollment("emp1@example.com").enrollment_state = "deleted"
    user["emp2@example.com"].state = "suspended"
    enrollment("emp3@example.com").enrollment_state = "deleted"
    enrollment("emp4@example.com").enrollment_state = "inactive"
    user["emp5@example.com"].email = "someone.else@example.com"
    site.add_enrollment(user["emp6@example.com"].id, mgr.id, "StudentEnrollment", "active")
    stranger = site.add_user("stranger", "Stray Hand", sis_user_id="X1")
    site.add_enrollment(stranger.id, ben.id, "StudentEnrollment", "active")

    code, document = reconcile(database_url, rules)
    assert code == 2
    assert document["source"] == "reconcile" and document["targets"] == ["canvas"]
    plan_from_json(document)
    drift = sorted(
        (d["label"], d["kind"], d["ref"], d["action"], d["owned"]) for d in document["drift"]
    )
    assert drift == [
        ("emp1@example.com", ACCOUNT_MISSING, None, "upsert_account", True),
        ("emp1@example.com", ENROLMENT_REMOVED, "BEN-2026", "enrol", True),
        ("emp2@example.com", ACCOUNT_SUSPENDED, None, "reactivate_account", True),
        ("emp3@example.com", ENROLMENT_REMOVED, "BEN-2026", "enrol", True),
        ("emp4@example.com", ENROLMENT_SUSPENDED, "BEN-2026", "enrol", True),
        ("emp5@example.com", FIELD, "email", "upsert_account", True),
        ("emp6@example.com", ADDED_BY_HAND, "BEN-2026-MGR", None, False),
        ("stranger", NOT_OWNED, "BEN-2026", None, False),
    ]
    named = (ACCOUNT_MISSING, ACCOUNT_SUSPENDED, FIELD, NOT_OWNED)
    assert all("Canvas" in d["reason"] for d in document["drift"] if d["kind"] in named)

    result = cli(database_url, rules, "reconcile", "--detailed-exitcode", "--apply")
    assert result.exit_code == 2 and "6 intent(s) applied" in result.output, result.output
    relay(database_url, rules, catalog, {"CANVAS_TOKEN": SIM_CANVAS_TOKEN})

    code, after = reconcile(database_url, rules)
    assert code == 0 and after["intents"] == []
    assert sorted((d["label"], d["kind"]) for d in after["drift"] if d["kind"] != UNCHECKED) == [
        ("emp6@example.com", ADDED_BY_HAND),
        ("stranger", NOT_OWNED),
    ]
    assert user["emp1@example.com"].state == "active"  # SIS reactivation: the same user
    assert user["emp2@example.com"].state == "active"
    assert user["emp5@example.com"].email == "emp5@example.com"
    for login in ("emp1@example.com", "emp3@example.com", "emp4@example.com"):
        assert enrollment(login).enrollment_state == "active"
    assert next(e for e in site.enrollments.values() if e.user_id == stranger.id).enrollment_state


def test_a_course_canvas_lacks_is_unchecked_not_an_error(
    tmp_path: Path, database_url: str, simulator_url: tuple[str, Any]
) -> None:
    url, _ = simulator_url
    rules = canvas_rules(tmp_path, url)
    text = (rules / "canvas-benefits.yaml").read_text()
    (rules / "canvas-benefits.yaml").write_text(
        text.replace("    course: BEN-2026-MGR", "    course: NOPE-2026")
    )
    code, document = reconcile(database_url, rules)
    assert code == 0 and document["intents"] == []
    assert [(d["kind"], d["ref"], d["reason"]) for d in document["drift"]] == [
        (UNCHECKED, "NOPE-2026", "no Canvas course 'NOPE-2026': not checked")
    ]


async def test_the_canvas_reader_waits_out_throttling_and_refuses_foreign_links() -> None:
    calls: list[str] = []

    def canvas(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if len(calls) == 1:
            return httpx.Response(403, text="403 Forbidden (Rate Limit Exceeded)")
        if request.url.host == "canvas.test" and "page=2" not in str(request.url):
            following = '<http://canvas.test/api/v1/accounts/1/users?page=2>; rel="next"'
            return httpx.Response(200, json=[{"id": 5, "name": "A"}], headers={"Link": following})
        evil = '<http://elsewhere.test/api/v1/accounts/1/users?page=3>; rel="next"'
        return httpx.Response(200, json=[{"id": 6, "name": "B"}], headers={"Link": evil})

    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with httpx.AsyncClient(
        base_url="http://canvas.test", transport=httpx.MockTransport(canvas)
    ) as client:
        reader = CanvasReader(client, "1", sleep=sleep)
        with pytest.raises(CanvasReadError, match="Link to another host refused: elsewhere.test"):
            await reader.users(["5"])
    assert waits == [THROTTLE_DELAY] and reader.calls == 3
    assert "per_page=100" in calls[0] and "include%5B%5D=email" in calls[0]
