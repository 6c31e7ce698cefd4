"""``bridge demo`` end to end: a 40-person pilot over real HTTP, checked against the simulator.

The expected numbers come from the generated HR sample; the demo's summary is read back from
the simulator's state and the bridge's database. They must agree.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from bridge.cli import main
from bridge.demo import BENEFITS
from bridge.demo import MANAGER
from bridge.demo import HrRecord
from bridge.demo import Sample
from bridge.demo import edge_case_counts
from bridge.demo import hr_sample
from bridge.demo import render
from bridge.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = 40


def final_codes(record: HrRecord, sample: Sample) -> set[str]:
    codes = set(record.role_codes)
    if record.external_id in sample.day_two.add_benefits:
        codes.add(BENEFITS)
    if record.external_id in sample.day_two.remove_benefits:
        codes.discard(BENEFITS)
    return codes


@pytest.fixture(scope="module")
def sample() -> Sample:
    return hr_sample(PEOPLE)


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_demo(
        people=PEOPLE,
        workdir=tmp_path_factory.mktemp("demo"),
        keep=True,
        rules_dir=ROOT / "rules",
        schemas_dir=ROOT / "schemas",
        timeout=15,
    )


def test_the_sample_is_deterministic_and_holds_every_edge_case(sample: Sample) -> None:
    assert hr_sample(PEOPLE) == sample
    counts = edge_case_counts(PEOPLE)
    assert len(sample.pilot) == PEOPLE
    assert len(sample.others) == counts["other_departments"]
    edges = [r.edge for r in sample.pilot]
    for edge in ("missing_email", "duplicate_id", "non_standard_code"):
        assert edges.count(edge) == counts[edge]
    ids = [r.external_id for r in sample.records]
    assert len(ids) - len(set(ids)) == counts["duplicate_id"]
    assert all(r.work_email is None for r in sample.pilot if r.edge == "missing_email")
    assert all(
        BENEFITS not in r.role_codes and r.role_codes
        for r in sample.pilot
        if r.edge == "non_standard_code"
    )
    changed = [
        *sample.day_two.add_benefits,
        *sample.day_two.remove_benefits,
        *sample.day_two.terminate,
    ]
    assert len(changed) == len(set(changed)) > 0


def test_the_push_fills_no_seat_and_the_draw_seats_the_pilot(
    summary: dict[str, Any], sample: Sample
) -> None:
    # the capped pilot is never filled in arrival order: the SCIM push enqueues nothing
    assert summary["day1"]["intents"] == 0
    draw = summary["draw"]
    assert not draw["timed_out"] and draw["status"] == "applied"
    # everyone stored in the pilot department is eligible; fewer than the 200 seats
    stored = [r for r in sample.pilot if r.edge != "duplicate_id"]
    assert (draw["max_people"], draw["free_seats"]) == (200, 200)
    assert draw["candidates"] == draw["drawn"] == len(stored)
    assert draw["intents"] == draw["enqueued"] == draw["settled"] > 0


def test_the_numbers_add_up_against_the_simulator(summary: dict[str, Any], sample: Sample) -> None:
    assert not summary["day1"]["timed_out"] and not summary["day2"]["timed_out"]
    provisioned = [r for r in sample.pilot if r.edge not in ("missing_email", "duplicate_id")]
    terminated = set(sample.day_two.terminate)
    lms = summary["lms"]

    # accounts: people in scope with a work email, the second holder of an id refused
    assert lms["accounts"] == len(provisioned) == summary["linked_accounts"]
    assert lms["accounts_suspended"] == len(terminated)
    assert lms["accounts_active"] == len(provisioned) - len(terminated)
    assert summary["in_scope"] == {"benefits-2026": len(provisioned) - len(terminated)}
    stored = len(sample.records) - edge_case_counts(PEOPLE)["duplicate_id"]
    assert summary["population"] == stored

    # enrolments after day 2: removals are suspended (progress kept), terminations keep theirs
    holders = [r for r in provisioned if BENEFITS in final_codes(r, sample)]
    managers = [r for r in holders if MANAGER in r.role_codes]
    removed = [r for r in provisioned if r.external_id in sample.day_two.remove_benefits]
    assert lms["enrolments"]["BEN-2026"] == {"active": len(holders), "suspended": len(removed)}
    manager_course = lms["enrolments"].get("BEN-2026-MGR", {"active": 0, "suspended": 0})
    assert manager_course == {
        "active": len(managers),
        "suspended": sum(1 for r in removed if MANAGER in r.role_codes),
    }
    assert lms["cohort_members"].get("BEN2026", 0) == len(holders)
    assert set(lms["enrolments"]) <= {"BEN-2026", "BEN-2026-MGR"}

    # day 2 removes more of the pilot than the shipped safety threshold lets through at once:
    # the brake held the excess, the admin approved it, and it was delivered
    brake = summary["brake"]
    assert brake is not None and brake["held"] >= 1
    assert brake["released"] == brake["held"]

    # nothing went wrong on the way
    assert summary["errors"] == {"configuration": 0, "data_quality": 0, "transient": 0}
    assert summary["pending_changes"] == 0
    phases = (summary["day1"], summary["draw"], summary["day2"])
    assert summary["outbox"] == {"done": sum(phase["intents"] for phase in phases)}
    day_two = sample.day_two
    changes = len(day_two.add_benefits) + len(day_two.remove_benefits) + len(terminated)
    assert summary["day2"]["answers"] == {"200": changes}
    assert summary["journal"]["day2_writes"] == changes
    assert summary["journal"]["day2_tolerances"]["op_case"] == changes
    assert summary["journal"]["day2_first_seq"] == summary["journal"]["day1_last_seq"] + 1


def test_the_people_needing_attention_are_reported(summary: dict[str, Any], sample: Sample) -> None:
    duplicates = [r for r in sample.pilot if r.edge == "duplicate_id"]
    assert summary["day1"]["answers"] == {
        "201": len(sample.records) - len(duplicates),
        "409": len(duplicates),
    }
    assert {(i["userName"], i["externalId"], i["held_by"]) for i in summary["rejected"]} == {
        (r.user_name, r.external_id, r.duplicate_of) for r in duplicates
    }
    assert {i["scimType"] for i in summary["rejected"]} == {"uniqueness"}

    attention = summary["attention"]
    missing = {r.user_name for r in sample.pilot if r.edge == "missing_email"}
    assert {i["person"] for i in attention["problems"]} == missing
    assert all("email" in i["reason"] for i in attention["problems"])
    # one item per unknown code: how many hold it, a few of them, the code they meant
    held: dict[str, set[str]] = {}
    for record in sample.pilot:
        if record.edge == "non_standard_code":
            held.setdefault(record.role_codes[0], set()).add(record.user_name)
    found = {i["details"]["code"]: i["details"] for i in attention["unknown_role_codes"]}
    assert set(found) == set(held)
    for code, details in found.items():
        assert details["count"] == len(held[code])
        assert set(details["examples"]) <= held[code] and details["examples"]
        assert details["suggestion"] == BENEFITS
    for item in attention["unknown_role_codes"]:
        assert f"did you mean {BENEFITS}" in item["reason"]
    assert attention["duplicates"] == []


def test_the_report_renders_and_the_kept_database_answers(summary: dict[str, Any]) -> None:
    out = io.StringIO()
    render(summary, Console(file=out, width=160))
    text = out.getvalue()
    assert "BEN-2026" in text and "Errors by category" in text
    assert "day 1: draw the pilot" in text
    draw = summary["draw"]
    assert (
        f"seated {draw['drawn']} of {draw['candidates']} eligible people by stable hash "
        f"for {draw['free_seats']} free seats" in " ".join(text.split())
    )
    assert f"bridge journal --since {summary['journal']['day1_last_seq']}" in text
    result = CliRunner().invoke(
        main,
        ["journal", "--since", str(summary["journal"]["day1_last_seq"]), "--json"],
        env={"BRIDGE_DATABASE_URL": summary["database_url"]},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == summary["journal"]["day2_writes"] + summary["journal"]["day2_deliveries"]


def test_the_demo_wants_a_fresh_database(tmp_path: Path) -> None:
    existing = tmp_path / "bridge.db"
    existing.write_bytes(b"")
    result = CliRunner().invoke(main, ["demo", "--people", "20", "--database", str(existing)])
    assert result.exit_code != 0
    assert "fresh database" in result.output
