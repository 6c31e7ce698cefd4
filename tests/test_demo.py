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
from bridge.cli.demo import demo_wiring
from bridge.demo import BENEFITS
from bridge.demo import MANAGER
from bridge.demo import HrRecord
from bridge.demo import Sample
from bridge.demo import edge_case_counts
from bridge.demo import hr_sample
from bridge.demo import render
from bridge.demo import run_demo
from bridge.demo.readback import errors_by_category
from bridge.demo.readback import problems

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
        demo_wiring(),
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
    assert summary["day1"]["lms_changes"] == 0
    draw = summary["draw"]
    assert not draw["timed_out"] and draw["status"] == "applied"
    # everyone stored in the pilot department is eligible; fewer than the 200 seats
    stored = [r for r in sample.pilot if r.edge != "duplicate_id"]
    assert (draw["max_people"], draw["free_seats"]) == (200, 200)
    assert draw["candidates"] == draw["drawn"] == len(stored)
    assert draw["lms_changes"] == draw["enqueued"] == draw["delivered"] > 0
    assert draw["failed"] == 0


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
    assert summary["dead_letters_by_category"] == {
        "configuration": 0,
        "data_quality": 0,
        "transient": 0,
    }
    assert summary["pending_changes"] == 0
    phases = (summary["day1"], summary["draw"], summary["day2"])
    assert summary["outbox"] == {"done": sum(phase["lms_changes"] for phase in phases)}
    # day 2's removals past the threshold wait for the approval, which delivers them
    assert summary["day1"]["delivered"] == summary["day1"]["lms_changes"]
    assert summary["draw"]["delivered"] == summary["draw"]["lms_changes"]
    assert summary["day2"]["delivered"] + brake["delivered"] == summary["day2"]["lms_changes"]
    assert brake["lms_changes"] == 0 and brake["delivered"] > 0
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
    assert "day 1 draw" in text
    draw = summary["draw"]
    assert (
        f"seated {draw['drawn']} of {draw['candidates']} eligible people by a repeatable "
        f"lottery for {draw['free_seats']} free seats" in " ".join(text.split())
    )
    assert f"bridge journal --since {summary['journal']['day1_last_seq']}" in text
    result = CliRunner().invoke(
        main,
        ["journal", "--since", str(summary["journal"]["day1_last_seq"]), "--json"],
        env={"BRIDGE_DATABASE_URL": summary["database_url"]},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    log = summary["journal"]
    assert len(lines) == log["day2_writes"] + log["day2_deliveries"] + log["day2_decisions"]
    assert log["day2_decisions"] == 1  # the admin's approval of the held removals


def test_the_demo_wants_a_fresh_database(tmp_path: Path) -> None:
    existing = tmp_path / "bridge.db"
    existing.write_bytes(b"")
    result = CliRunner().invoke(main, ["demo", "--people", "20", "--database", str(existing)])
    assert result.exit_code != 0
    assert "fresh database" in result.output


def test_errors_by_category_count_the_data_problems_the_report_lists(
    summary: dict[str, Any], sample: Sample
) -> None:
    # Every data problem of the sample is held back before the LMS (none is a dead letter):
    # the "Data" row counts exactly the people listed under "People needing attention".
    listed = summary["problems"]
    expected = (
        edge_case_counts(PEOPLE)["duplicate_id"]
        + edge_case_counts(PEOPLE)["missing_email"]
        + len({r.role_codes[0] for r in sample.pilot if r.edge == "non_standard_code"})
    )
    assert len(listed) == expected
    assert summary["errors"]["data_quality"] == {
        "held_back": expected,
        "refused_by_lms": 0,
        "total": expected,
    }
    out = io.StringIO()
    render(summary, Console(file=out, width=120))
    rows = [line for line in out.getvalue().splitlines() if "Data: fix the HR record" in line]
    assert len(rows) == 1
    assert rows[0].split("│")[2].strip() == str(expected)
    assert f"People needing attention ({expected})" in out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_the_report_speaks_plainly_and_fits_the_terminal(
    summary: dict[str, Any], width: int
) -> None:
    out = io.StringIO()
    render(summary, Console(file=out, width=width))
    text = out.getvalue()
    # the commands to copy are printed whole (soft-wrapped); everything else fits
    prose = [line for line in text.splitlines() if not line.startswith(("  export ", "  bridge "))]
    assert max(len(line) for line in prose) <= width
    assert "…" not in text  # nothing cut short
    words = " ".join(text.split())
    for jargon in ("×", "intent", "settled", "op_case", "boolean_string", "dead letter", "seqs"):
        assert jargon not in words, jargon
    assert 'operation names in capitals ("Replace")' in words
    assert "the bridge and the LMS agree" in words
    for row in summary["problems"]:
        assert row["person"] in text


def test_problems_are_the_refusals_and_the_plans_attention_items() -> None:
    rejected = [
        {
            "externalId": "E1",
            "userName": "b@example.com",
            "status": 409,
            "scimType": "uniqueness",
            "detail": "externalId E1 is taken",
            "held_by": "a@example.com",
        }
    ]
    attention = {
        "problems": [
            {
                "person": "c",
                "reason": 'missing required email (from emails[type eq "work"].value)',
                "details": {},
            }
        ],
        "unknown_role_codes": [
            {
                "person": "1 person",
                "reason": "unknown role code ben held by 1 person (d@example.com): did you mean BEN?",
                "details": {
                    "code": "ben",
                    "count": 1,
                    "examples": ["d@example.com"],
                    "suggestion": "BEN",
                },
            }
        ],
        "blocked": [{"person": "e", "reason": "1 later intent blocked behind dead letter #9"}],
    }
    rows = problems(rejected, attention)
    assert [(r["what"], r["person"], r["why"], r["category"]) for r in rows] == [
        (
            "duplicate id",
            "b@example.com",
            "employee id E1 already belongs to a@example.com",
            "data_quality",
        ),
        ("missing data", "c", "no email in the HR record; the LMS needs one", "data_quality"),
        ("unknown code", "d@example.com", "ben: did you mean BEN?", "data_quality"),
        ("waiting", "e", "1 later intent blocked behind dead letter #9", None),
    ]
    # the person waiting behind a dead letter is counted once, as that dead letter
    counts = errors_by_category(rows, {"data_quality": 1, "transient": 2})
    assert counts == {
        "data_quality": {"held_back": 3, "refused_by_lms": 1, "total": 4},
        "configuration": {"held_back": 0, "refused_by_lms": 0, "total": 0},
        "transient": {"held_back": 0, "refused_by_lms": 2, "total": 2},
    }
