"""The brake on mass removals from live writes (Entra's accidental-deletion prevention).

An identity provider misconfigured to deactivate 30 % of a department over SCIM must not
reach the LMS unchecked: removals past the rule file's ``safety`` threshold within
``safety.window`` are held in one run per target until ``bridge approve`` or ``bridge reject``;
the SCIM writes still succeed, additions are never held. The counting and the split are
specified on plain data first, then end to end: SCIM → outbox → relay → LMS simulator.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.provision import Provisioner
from bridge.provision.brake import allowance
from bridge.provision.brake import split
from bridge.provision.brake import superseded
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.loader import load_ruleset
from bridge.rules.model import RuleErrors
from bridge.rules.model import Safety
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import journal
from bridge.store import outbox
from bridge.store import runs
from bridge.store.engine import Database
from tests.conftest import PATCH
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.pilots import uncapped
from tests.test_reconcile import drain

SHIPPED_SAFETY = "safety:\n  max_removals: 20\n  max_removals_percent: 10\n"
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

# -- the threshold and the split, on plain data -------------------------------------------------


def test_allowance_is_the_stricter_limit_and_at_the_limit_passes() -> None:
    assert allowance(Safety(max_removals=20, max_removals_percent=10), 40) == 4
    assert allowance(Safety(max_removals=3, max_removals_percent=10), 400) == 3
    assert allowance(Safety(max_removals_percent=12.5), 40) == 5
    assert allowance(Safety(), 40) is None, "no limit set: the brake never holds"


def test_percent_form_lets_one_removal_through_and_a_zero_count_holds_all() -> None:
    assert allowance(Safety(max_removals_percent=10), 2) == 1, "one leaver is no mass removal"
    assert allowance(Safety(max_removals_percent=10), 0) == 1
    assert allowance(Safety(max_removals=0, max_removals_percent=10), 40) == 0


def test_split_counts_people_and_sends_additions_whatever_the_count() -> None:
    intents = [
        {"kind": "suspend_account", "person": "a"},
        {"kind": "upsert_account", "person": "b"},
        {"kind": "unenrol", "person": "c"},
        {"kind": "enrol", "person": "c"},
        {"kind": "remove_cohort_member", "person": "d"},
    ]
    removed = {"x", "y"}
    sent, held, _ = split(intents, removed, allowed=3)
    assert [(i["kind"], i["person"]) for i in sent] == [
        ("suspend_account", "a"),
        ("upsert_account", "b"),
        ("enrol", "c"),
    ]
    assert [(i["kind"], i["person"]) for i in held] == [
        ("unenrol", "c"),
        ("remove_cohort_member", "d"),
    ]
    assert removed == {"x", "y", "a"}


def test_split_lets_a_persons_removals_go_together() -> None:
    both = [{"kind": "suspend_enrolment", "person": "p"}, {"kind": "unenrol", "person": "p"}]
    assert split(both, set(), allowed=1) == (both, [], 1)
    assert split(both, {"p"}, allowed=1) == (both, [], 1), "already counted in the window"
    assert split(both, {"q"}, allowed=1) == ([], both, 1)
    # counted in the database: people of other writes count, this write's are named
    assert split(both, set(), allowed=3, counted=2) == (both, [], 3)
    assert split(both, set(), allowed=2, counted=2) == ([], both, 2)


def test_window_is_read_from_safety_with_file_line_col_errors(tmp_path: Path) -> None:
    rules = shipped_rules(tmp_path)
    path = rules / "benefits-2026.yaml"
    text = path.read_text()
    path.write_text(text.replace(SHIPPED_SAFETY, SHIPPED_SAFETY + "  window: 30m\n"))
    (rule_file,) = load_ruleset(rules, relative_to=rules).files
    assert rule_file.safety.window == timedelta(minutes=30)
    path.write_text(text)
    assert load_ruleset(rules, relative_to=rules).files[0].safety.window == timedelta(hours=1)
    path.write_text(text.replace(SHIPPED_SAFETY, SHIPPED_SAFETY + "  window: soon\n"))
    with pytest.raises(RuleErrors) as caught:
        load_ruleset(rules, relative_to=rules)
    (error,) = caught.value.errors
    line = text.splitlines().index("  max_removals_percent: 10") + 2
    assert str(error.mark) == f"benefits-2026.yaml:{line}:11"
    assert error.message == "bad window 'soon'" and "1h" in error.hint


# -- end to end: SCIM → outbox → relay → the LMS simulator --------------------------------------


class Bridge:
    """The real SCIM app over a test database, with a clock the test moves."""

    def __init__(
        self, db: Database, catalog: Catalog, settings: Settings, rules: Path, url: str
    ) -> None:
        self.db, self.catalog, self.rules, self.url = db, catalog, rules, url
        self.now = START
        book = RuleBook(rules, lambda d: check_directory(d, catalog))
        book.load()
        self.book = book
        self.app = create_app(
            Provisioner(db, catalog, rules=book.current, clock=self.clock),
            catalog,
            settings,
            Authenticator(db, env_token=TOKEN),
        )
        self.ids: dict[int, str] = {}

    def clock(self) -> datetime:
        return self.now

    def send(self, *calls: tuple[str, str, Any]) -> list[httpx.Response]:
        async def run() -> list[httpx.Response]:
            async with app_client(self.app) as client:
                return [await client.request(m, p, json=body) for m, p, body in calls]

        return asyncio.run(run())

    def hire(self, *numbers: int) -> None:
        answers = self.send(
            *(("POST", "/Users", employee(n, codes=["BEN_CHOICE_2026"])) for n in numbers)
        )
        for number, answer in zip(numbers, answers, strict=True):
            assert answer.status_code == 201, answer.text
            self.ids[number] = answer.json()["id"]

    def set_active(self, numbers: list[int], active: bool) -> list[int]:
        op = {"op": "replace", "path": "active", "value": active}
        answers = self.send(
            *(
                ("PATCH", f"/Users/{self.ids[n]}", {"schemas": [PATCH], "Operations": [op]})
                for n in numbers
            )
        )
        return [answer.status_code for answer in answers]

    def relay(self) -> None:
        """Deliver everything due, in process."""
        drain(self.db, self.book.current())

    def cli(self, database_url: str, *args: str) -> Any:
        return run_cli(database_url, self.rules, *args, MOODLE_TOKEN=SIM_MOODLE_TOKEN)

    def removals(self, run_id: str | None = None) -> dict[str, list[tuple[str, str | None]]]:
        """Suspensions not settled in the outbox (or those of a run) by status: (person, run)."""
        with self.db.read() as conn:
            found = outbox.unsettled(conn) if run_id is None else outbox.of_run(conn, run_id)
        out: dict[str, list[tuple[str, str | None]]] = {}
        for row in found:
            if row["intent"]["kind"] == "suspend_account":
                out.setdefault(row["status"], []).append((row["ordering_key"], row["run_id"]))
        return out


def setup(
    tmp_path: Path,
    db: Database,
    catalog: Catalog,
    settings: Settings,
    url: str,
    safety: str = SHIPPED_SAFETY,
) -> Bridge:
    """40 people of Claims provisioned over SCIM and delivered to the simulator."""
    rules = uncapped(shipped_rules(tmp_path, url))
    path = rules / "benefits-2026.yaml"
    text = path.read_text()
    assert SHIPPED_SAFETY in text
    path.write_text(text.replace(SHIPPED_SAFETY, safety))
    bridge = Bridge(db, catalog, settings, rules, url)
    bridge.hire(*range(1, 41))
    bridge.relay()
    with db.read() as conn:
        assert outbox.backlog(conn) == 0 and outbox.counts(conn) == {"done": 120}
    return bridge


def suspended(simulator: Any, numbers: list[int]) -> list[bool]:
    site = simulator.state.moodle
    return [site.user_named(f"emp{n}@example.com").suspended for n in numbers]


GONE = list(range(1, 13))  # 12 of 40: 30 %


def test_a_mass_deactivation_is_held_past_the_threshold_until_approved(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, simulator = simulator_url
    bridge = setup(tmp_path, db, catalog, settings, url)
    with caplog.at_level("WARNING", logger="bridge.provision"):
        assert bridge.set_active(GONE, False) == [200] * 12, "the IdP never sees an error"

    # 10 % of 40 managed: 4 removals go, the other 8 are held in one run
    found = bridge.removals()
    assert [person for person, _ in found["pending"]] == [bridge.ids[n] for n in GONE[:4]]
    assert {run for _, run in found["pending"]} == {None}
    held_runs = {run for _, run in found["quarantined"]}
    assert len(found["quarantined"]) == 8 and len(held_runs) == 1
    (run_id,) = held_runs
    assert run_id is not None
    with db.read() as conn:
        run = runs.get(conn, run_id)
    assert run is not None and (run["kind"], run["status"]) == ("held", "quarantined")
    assert run["rules_version"] == bridge.book.current().version  # type: ignore[union-attr]
    summary = run["summary"]
    assert (summary["target"], summary["held"], summary["allowed"], summary["managed"]) == (
        "moodle",
        8,
        4,
        40,
    )
    assert summary["counts"] == {"suspend_account": {"count": 8}}
    warnings = [r.getMessage() for r in caplog.records if "brake" in r.getMessage()]
    assert len(warnings) == 1, "one warning when the run starts holding"
    assert run_id in warnings[0] and "bridge approve RUN or bridge reject RUN" in warnings[0]

    bridge.relay()  # nothing held reaches the LMS
    assert suspended(simulator, GONE) == [True] * 4 + [False] * 8
    assert len(bridge.removals()["quarantined"]) == 8

    # plan and explain show the held intents as pending, awaiting approval
    planned = bridge.cli(database_url, "plan", "--json")
    document = json.loads(planned.stdout)
    waiting = [i for i in document["in_flight"] if i["kind"] == "suspend_account"]
    assert len(waiting) == 8 and {i["state"] for i in waiting} == {"pending"}
    assert {(i["outbox"]["status"], i["outbox"]["run_id"]) for i in waiting} == {
        ("quarantined", run_id)
    }
    assert document["counts"]["suspend_account"]["count"] == 0
    explained = bridge.cli(database_url, "explain", "emp12@example.com")
    assert f"quarantined until `bridge approve {run_id}`" in explained.output

    # the held run's plan, and `bridge runs`
    shown = bridge.cli(database_url, "plan", "--detailed-exitcode", "--run", run_id, "--json")
    assert shown.exit_code == 2, shown.output
    held_plan = json.loads(shown.stdout)
    assert held_plan["format"] == "bridge-plan/1" and held_plan["run"]["kind"] == "held"
    assert sorted(i["person"] for i in held_plan["intents"]) == sorted(
        bridge.ids[n] for n in GONE[4:]
    )
    assert held_plan["counts"]["suspend_account"]["count"] == 8
    text = bridge.cli(database_url, "plan", "--run", run_id).output
    assert f"run {run_id} (held, quarantined)" in text and f"bridge reject {run_id}" in text
    unknown = bridge.cli(database_url, "plan", "--run", "nosuchrun")
    assert unknown.exit_code == 1 and "no run 'nosuchrun'" in unknown.output
    listed = json.loads(bridge.cli(database_url, "runs", "--json").stdout)
    (entry,) = [r for r in listed["runs"] if r["id"] == run_id]
    assert (entry["kind"], entry["state"], entry["summary"]["held"]) == ("held", "quarantined", 8)
    text = bridge.cli(database_url, "runs").output
    assert "held" in text and "awaiting approval" in text

    approved = bridge.cli(database_url, "approve", run_id)
    assert approved.exit_code == 0 and "8 intent(s) released" in approved.output
    bridge.relay()
    assert suspended(simulator, GONE) == [True] * 12
    with db.read() as conn:
        assert runs.get(conn, run_id)["status"] == "approved"  # type: ignore[index]
        assert outbox.backlog(conn) == 0


def test_a_rejected_held_run_is_cancelled_journalled_and_never_sent(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    bridge = setup(tmp_path, db, catalog, settings, url)
    assert bridge.set_active(GONE, False) == [200] * 12
    (run_id,) = {run for _, run in bridge.removals()["quarantined"]}
    assert run_id is not None

    rejected = bridge.cli(database_url, "reject", run_id, "--reason", "IdP scoping mistake")
    assert rejected.exit_code == 0 and "8 intent(s) cancelled" in rejected.output
    again = bridge.cli(database_url, "reject", run_id)
    assert again.exit_code == 1 and "not quarantined" in again.output
    bridge.relay()
    assert suspended(simulator, GONE) == [True] * 4 + [False] * 8
    assert "quarantined" not in bridge.removals()
    assert list(bridge.removals(run_id)) == ["rejected"]
    assert len(bridge.removals(run_id)["rejected"]) == 8
    with db.read() as conn:
        run = runs.get(conn, run_id)
        (entry,) = [e for e in journal.read(conn) if e.op == "reject"]
        assert outbox.backlog(conn) == 0
    assert run is not None and run["status"] == "rejected"
    assert run["summary"]["reason"] == "IdP scoping mistake"
    assert entry.actor.startswith("cli:") and entry.detail == {
        "run": run_id,
        "kind": "held",
        "target": "moodle",
        "reason": "IdP scoping mistake",
        "cancelled": 8,
    }
    stats = bridge.cli(database_url, "stats", "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["total"]["outcomes"]["rejected"] == 8
    # not planned away: desired still says remove, so the plan shows it as a change to make
    document = json.loads(bridge.cli(database_url, "plan", "--json").stdout)
    assert document["counts"]["suspend_account"]["count"] == 8
    assert not [i for i in document["in_flight"] if i["kind"] == "suspend_account"]
    # the IdP is fixed: the next write restores them, and nothing was ever suspended
    assert bridge.set_active(GONE[4:], True) == [200] * 8
    bridge.relay()
    assert suspended(simulator, GONE) == [True] * 4 + [False] * 8
    document = json.loads(bridge.cli(database_url, "plan", "--json").stdout)
    assert document["counts"]["suspend_account"]["count"] == 0


def test_removals_after_the_window_count_afresh_and_additions_are_never_held(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    simulator_url: tuple[str, Any],
) -> None:
    url, simulator = simulator_url
    safety = "safety:\n  max_removals: 3\n  window: 30m\n"  # the count form alone
    bridge = setup(tmp_path, db, catalog, settings, url, safety)
    assert bridge.set_active([1, 2, 3, 4, 5], False) == [200] * 5
    found = bridge.removals()
    assert len(found["pending"]) == 3 and len(found["quarantined"]) == 2
    (run_id,) = {run for _, run in found["quarantined"]}

    # while holding: a hire and a reactivation go at once
    bridge.now += timedelta(minutes=10)
    bridge.hire(41)
    assert bridge.set_active([1], True) == [200]
    with db.read() as conn:
        kinds = sorted(row["intent"]["kind"] for row in outbox.pending(conn, limit=100))
    assert kinds.count("upsert_account") == 1 and "reactivate_account" in kinds
    # still in the window: a removal joins the same held run
    bridge.now += timedelta(minutes=10)
    assert bridge.set_active([6], False) == [200]
    found = bridge.removals()
    assert len(found["quarantined"]) == 3 and {r for _, r in found["quarantined"]} == {run_id}
    with db.read() as conn:
        assert runs.get(conn, run_id)["summary"]["held"] == 3  # type: ignore[index]

    # the window has passed since the first three: removals count afresh
    bridge.now = START + timedelta(minutes=31)
    assert bridge.set_active([7, 8], False) == [200] * 2
    found = bridge.removals()
    assert [p for p, _ in found["pending"][-2:]] == [bridge.ids[7], bridge.ids[8]]
    assert {r for _, r in found["pending"]} == {None}
    bridge.relay()
    assert suspended(simulator, [2, 3, 4, 5, 6, 7, 8]) == [True, True, False, False, False] + [
        True,
        True,
    ]

    # the IdP restores one of the held: approving the run does not remove them after all
    assert bridge.set_active([5], True) == [200]
    approved = bridge.cli(database_url, "approve", run_id)
    assert approved.exit_code == 0 and "2 intent(s) released" in approved.output
    bridge.relay()
    assert suspended(simulator, [4, 5, 6]) == [True, False, True]
    assert {status: len(rows) for status, rows in bridge.removals(run_id).items()} == {
        "done": 2,
        "rejected": 1,
    }
    with db.read() as conn:
        assert runs.get(conn, run_id)["summary"]["superseded"] == 1  # type: ignore[index]


def test_a_held_removal_undone_by_a_later_row_is_superseded() -> None:
    def row(row_id: int, kind: str, person: str, ref: str | None = None) -> dict[str, Any]:
        intent = {"kind": kind, "person": person, "ref": ref}
        return {"id": row_id, "target": "moodle", "ordering_key": person, "intent": intent}

    held = [
        row(1, "suspend_account", "a"),
        row(2, "unenrol", "b", "BEN-2026"),
        row(3, "remove_cohort_member", "c", "BEN2026"),
        row(9, "suspend_account", "d"),
    ]
    later = [
        row(5, "reactivate_account", "a"),
        row(6, "enrol", "b", "OTHER"),  # another course: not an undo
        row(7, "add_cohort_member", "c", "BEN2026"),
        row(8, "reactivate_account", "d"),  # before the held row: not an undo
    ]
    assert superseded(held, later) == [1, 3]
