"""``bridge explain`` for one person (bridge.rules.explain): plain data through the real engine."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bridge.rules import engine
from bridge.rules.aliases import expand_filter
from bridge.rules.engine import Intent
from bridge.rules.engine import state_key
from bridge.rules.explain import Explanation
from bridge.rules.explain import build_explanation
from bridge.rules.explain import contract_filter
from bridge.rules.explain import explanation_to_json
from bridge.rules.explain_render import render_explanation
from bridge.rules.loader import load_ruleset
from bridge.rules.model import RuleFile
from bridge.rules.pilot import Draw
from bridge.rules.pilot import admission
from bridge.rules.plan_model import Confirmed
from bridge.rules.plan_model import Ledger
from bridge.rules.plan_model import QueuedRow
from bridge.rules.plan_model import confirmed_view

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 11, 1)
RULES = load_ruleset(ROOT / "rules", relative_to=ROOT)


def _benefits() -> RuleFile:
    found = RULES.file("benefits-2026")
    assert found is not None
    return found


BENEFITS = _benefits()
COURSE, MANAGERS, COHORT = BENEFITS.assignments
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def person(codes: list[str], *, email: str | None = " Jane.Smith@Example.com ") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "userName": " Jane.Smith ",
        "externalId": "E123",
        "name": {"givenName": "Jane", "familyName": "Smith"},
        "title": "Claims Specialist",
        HR: {"roleCodes": codes, "employmentStatus": "active"},
        ENTERPRISE: {"department": "Claims"},
    }
    if email is not None:
        doc["emails"] = [{"type": "work", "value": email}]
    return doc


def explain(
    doc: dict[str, Any],
    *,
    in_claims: bool = True,
    already: bool = True,
    draw: Draw | None = None,
    projected: dict[str, Any] | None = None,
) -> tuple[Explanation, list[Intent]]:
    """The explanation of ``doc`` under the shipped rules; the pilot's verdict is
    ``pilot.admission`` (``already``: projected in scope before; ``draw``: a plan's draw)."""
    codes = set(doc[HR]["roleCodes"])
    assert BENEFITS.scope.filter is not None
    verdicts = {
        BENEFITS.scope.filter: in_claims,
        COURSE.when: "BEN_CHOICE_2026" in codes,
        MANAGERS.when: {"BEN_CHOICE_2026", "MANAGER"} <= codes,
    }
    seat = admission(
        BENEFITS.scope.pilot,
        "p1",
        "E123",
        admitted=already,
        in_filter=in_claims,
        today=TODAY,
        draw=draw,
    )
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts, admitted=seat.admitted)
    intents, _ = engine.diff("p1", desired, projected, BENEFITS)
    exp = build_explanation(
        "p1",
        "jane.smith (E123)",
        RULES,
        {BENEFITS.name: (verdicts, seat.admitted, seat.reason, desired, intents)},
    )
    return exp, intents


def line_of(text: str, *needles: str) -> str:
    found = [line for line in text.splitlines() if all(n in line for n in needles)]
    assert len(found) == 1, (needles, text)
    return found[0]


def test_each_condition_shows_its_verdict_and_where_it_is_written() -> None:
    exp, _ = explain(person(["BEN_CHOICE_2026"]))
    text = render_explanation(exp)
    assert text.splitlines()[0] == f"Explain jane.smith (E123) (person p1) — rules {RULES.version}"
    assert 'scope    ✓ department eq "Claims" and employmentStatus ne "terminated"' in text
    course = line_of(text, "benefits-2026-course ")
    assert course.lstrip().startswith("✓ benefits-2026-course")
    assert f"rules/benefits-2026.yaml:{COURSE.mark.line}" in course
    assert 'roleCodes eq "BEN_CHOICE_2026"' in course
    assert "→ enrolment BEN-2026" in course
    managers = line_of(text, "benefits-2026-managers ")
    assert managers.lstrip().startswith("✗ benefits-2026-managers")
    assert 'roleCodes eq "MANAGER" and roleCodes eq "BEN_CHOICE_2026"' in managers
    assert line_of(text, "benefits-2026-cohort ").lstrip().startswith("✓ benefits-2026-cohort")
    # columns line up
    assert course.index("rules/") == managers.index("rules/")


def test_a_condition_not_evaluated_is_marked_as_such() -> None:
    doc = person(["BEN_CHOICE_2026"])
    assert BENEFITS.scope.filter is not None
    verdicts = {BENEFITS.scope.filter: True}
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts)
    exp = build_explanation("p1", "jane", RULES, {BENEFITS.name: (verdicts, True, "", desired, [])})
    text = render_explanation(exp)
    assert line_of(text, "benefits-2026-course ").lstrip().startswith("? benefits-2026-course")
    assert exp.files[0].assignments[0].verdict is None


def test_each_mapping_shows_source_and_result() -> None:
    exp, _ = explain(person(["BEN_CHOICE_2026", "MANAGER"]))
    text = render_explanation(exp)
    username = line_of(text, "username ")
    assert "← userName" in username
    assert '" Jane.Smith "' in username
    assert username.rstrip().endswith('→  "jane.smith"  (required)')
    email = line_of(text, "email ", "←")
    assert '← emails[type eq "work"].value' in email
    assert '→  "jane.smith@example.com"' in email
    roles = line_of(text, "roles ")
    assert "← roleCodes" in roles  # the alias, not the URN path
    assert '["BEN_CHOICE_2026", "MANAGER"]' in roles
    auth = line_of(text, "auth ")
    assert "= constant" in auth and '"oauth2"' in auth and "(on create)" in auth
    arrows = {line.index("→") for line in text.splitlines() if "  →  " in line}
    assert len(arrows) == 1  # one column for every mapping result


def test_a_missing_required_value_shows_the_problem() -> None:
    exp, intents = explain(person(["BEN_CHOICE_2026"], email=None))
    assert intents == []
    text = render_explanation(exp)
    email = line_of(text, "email ", "←")
    assert "✗  missing required email" in email
    assert "intents  none" in text
    assert "  problems" in text
    assert '    ! missing required email (from emails[type eq "work"].value)' in text


def test_resulting_intents_are_listed() -> None:
    exp, intents = explain(person(["BEN_CHOICE_2026"]))
    assert [i.kind.value for i in intents] == ["upsert_account", "enrol", "add_cohort_member"]
    text = render_explanation(exp)
    assert '+ upsert_account [benefits-2026] create idnumber="E123"' in text
    assert '+ enrol BEN-2026 [benefits-2026-course] role="student" due_days=30' in text


def test_out_of_scope() -> None:
    exp, _ = explain(person(["BEN_CHOICE_2026"]), in_claims=False)
    text = render_explanation(exp)
    assert 'scope    ✗ department eq "Claims"' in text
    assert "→ not in scope" in text
    assert "not mapped (out of scope)" in line_of(text, "username ")
    (file,) = exp.files
    assert not file.in_scope and file.scope_verdict is False


LIMITS = "(max 200 people, ends 2027-06-30)"


def test_pilot_admission() -> None:
    staying, _ = explain(person(["BEN_CHOICE_2026"]))
    assert f"pilot    ✓ admitted to the pilot {LIMITS}" in render_explanation(staying)

    full = Draw({"p0": 1, "p1": 2}, free_seats=1)
    exp, intents = explain(person(["BEN_CHOICE_2026"]), already=False, draw=full)
    text = render_explanation(exp)
    assert (
        "pilot    ✗ not drawn: rank 2 of 2 for 1 free seat: the pilot is full (200 people) "
        + LIMITS
    ) in text
    assert "→ not in scope" in text and intents == []

    drawn, intents = explain(person(["BEN_CHOICE_2026"]), already=False, draw=Draw({"p1": 1}, 3))
    assert (
        "pilot    ✓ drawn: rank 1 of 1 for 3 free seats (admitted by the next `bridge apply`) "
        + LIMITS
    ) in render_explanation(drawn)
    assert [i.kind.value for i in intents] == ["upsert_account", "enrol", "add_cohort_member"]


def test_a_live_write_leaves_a_newcomer_to_the_draw() -> None:
    exp, intents = explain(person(["BEN_CHOICE_2026"]), already=False, draw=None)
    text = render_explanation(exp)
    assert (
        f"pilot    ✗ not admitted: waiting for the draw (the next `bridge apply`) {LIMITS}" in text
    )
    assert intents == []


def test_the_pilot_is_never_ticked_outside_the_scope_filter() -> None:
    for already in (True, False):
        exp, _ = explain(person(["BEN_CHOICE_2026"]), in_claims=False, already=already)
        text = render_explanation(exp)
        assert f"pilot    ✗ not admitted: outside the scope filter {LIMITS}" in text
        (file,) = explanation_to_json(exp)["rule_files"]
        assert file["pilot"]["admitted"] is False
    assert BENEFITS.scope.filter is not None
    verdicts = {BENEFITS.scope.filter: False}
    desired = engine.desired_state("p1", person([]), BENEFITS, verdicts)
    with pytest.raises(ValueError, match="outside the scope filter"):
        build_explanation(
            "p1", "p1", RULES, {BENEFITS.name: (verdicts, True, "admitted", desired, [])}
        )


def test_suspensions_are_explained() -> None:
    before = person(["BEN_CHOICE_2026"])
    assert BENEFITS.scope.filter is not None
    verdicts = {BENEFITS.scope.filter: True, COURSE.when: True}
    desired = engine.desired_state("p1", before, BENEFITS, verdicts)
    _, projection = engine.diff("p1", desired, None, BENEFITS)
    exp, intents = explain(person([]), projected=projection)
    assert [i.kind.value for i in intents] == [
        "upsert_account",  # the LMS roles lose the code
        "suspend_enrolment",
        "remove_cohort_member",
    ]
    text = render_explanation(exp)
    assert "~ upsert_account [benefits-2026] update roles=(cleared)" in text
    assert "- suspend_enrolment BEN-2026 [benefits-2026-course]" in text
    assert "- remove_cohort_member BEN2026 [benefits-2026-cohort]" in text
    assert line_of(text, "benefits-2026-course ").lstrip().startswith("✗")


def test_json() -> None:
    exp, intents = explain(person(["BEN_CHOICE_2026"]))
    data = explanation_to_json(exp)
    assert json.loads(json.dumps(data)) == data
    assert data["format"] == "bridge-explain/1"
    assert (data["person"], data["label"]) == ("p1", "jane.smith (E123)")
    (file,) = data["rule_files"]
    assert file["scope"] == {
        "filter": 'department eq "Claims" and employmentStatus ne "terminated"',
        "expanded": BENEFITS.scope.filter,
        "verdict": True,
    }
    assert file["pilot"]["admitted"] is True
    assert file["pilot"]["settings"]["max_people"] == 200
    course = file["assignments"][0]
    assert course == {
        "id": "benefits-2026-course",
        "kind": "enrolment",
        "ref": "BEN-2026",
        "where": f"rules/benefits-2026.yaml:{COURSE.mark.line}",
        "condition": 'roleCodes eq "BEN_CHOICE_2026"',
        "expanded_condition": COURSE.when,
        "verdict": True,
        "otherwise": "suspend",
        "confirmed": None,
    }
    username = next(m for m in file["mapping"] if m["attribute"] == "username")
    assert (username["source"], username["source_value"], username["result"]) == (
        "userName",
        " Jane.Smith ",
        "jane.smith",
    )
    assert file["intents"] == [{**intent.as_dict(), "state": "to_make"} for intent in intents]
    assert file["lms"]["looked_up"] is False
    assert (file["waiting"], file["blocked"]) == (None, None)


def test_unknown_rule_file_is_an_error() -> None:
    with pytest.raises(ValueError, match="no such rule file: nope"):
        build_explanation("p1", "x", RULES, {"nope": ({}, True, "", engine.Desired(False), [])})


def test_rule_files_without_evidence_are_left_out() -> None:
    exp = build_explanation("p1", "jane", RULES, {})
    assert exp.files == []
    assert "no rule file applies" in render_explanation(exp)


@pytest.mark.parametrize("condition", [*(a.when for a in BENEFITS.assignments)])
def test_contracted_conditions_expand_back(condition: str) -> None:
    short = contract_filter(condition, BENEFITS.aliases)
    assert "urn:" not in short
    assert expand_filter(short, BENEFITS.aliases) == condition


# -- desired, pending, confirmed ----------------------------------------------------------------

AT = "2026-11-01T09:00:00+00:00"


def evidence(
    doc: dict[str, Any], ledger: Ledger, confirmed: Confirmed | None, projected: dict[str, Any]
) -> Explanation:
    """As ``bridge explain`` builds it: desired diffed against the confirmed view."""
    codes = set(doc[HR]["roleCodes"])
    assert BENEFITS.scope.filter is not None
    verdicts = {
        BENEFITS.scope.filter: True,
        COURSE.when: "BEN_CHOICE_2026" in codes,
        MANAGERS.when: {"BEN_CHOICE_2026", "MANAGER"} <= codes,
        COHORT.when: "BEN_CHOICE_2026" in codes,
    }
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts)
    before = confirmed_view(BENEFITS, projected, confirmed)
    intents, _ = engine.diff("p1", desired, before, BENEFITS)
    return build_explanation(
        "p1",
        "jane.smith (E123)",
        RULES,
        {BENEFITS.name: (verdicts, True, "", desired, intents)},
        ledger=ledger,
        confirmed={"moodle": confirmed, "canvas": None},
    )


def first_run(doc: dict[str, Any]) -> dict[str, Any]:
    verdicts = {BENEFITS.scope.filter or "": True, COURSE.when: True, COHORT.when: True}
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts)
    _, projection = engine.diff("p1", desired, None, BENEFITS)
    assert projection is not None
    return projection


def test_a_failed_create_is_shown_with_its_failure_and_what_waits_behind_it() -> None:
    doc = person(["BEN_CHOICE_2026"])
    dead = QueuedRow(
        7,
        "moodle",
        "p1",
        "upsert_account",
        None,
        "dead",
        1,
        AT,
        "email already used",
        "data_quality",
    )
    behind = QueuedRow(8, "moodle", "p1", "enrol", "BEN-2026", "pending", 0, AT)
    exp = evidence(doc, Ledger([dead, behind]), None, first_run(doc))
    text = render_explanation(exp)
    assert "LMS      no account confirmed in moodle" in text
    assert (
        "  blocked  1 later intent in moodle blocked behind dead letter #7 upsert_account" in text
    )
    assert "the LMS already matches" not in text
    assert (
        "        ↳ failed — data_quality: email already used (outbox #7, 1 attempt); "
        "still to make: `bridge apply` sends it again in place"
    ) in text
    assert (
        f"        ↳ pending: outbox #8, attempt 1 at {AT}; blocked behind dead letter "
        "#7 upsert_account (data_quality: email already used)"
    ) in text
    assert "        ↳ to make: the LMS has not confirmed it and nothing is on its way" in text
    assert "not held" in line_of(text, "benefits-2026-course ")
    (file,) = explanation_to_json(exp)["rule_files"]
    assert [i["state"] for i in file["intents"]] == ["failed", "pending", "to_make"]
    assert file["intents"][1]["blocked_by"]["id"] == 7
    assert file["lms"] == {
        "looked_up": True,
        "lms_user_id": None,
        "has_account": False,
        "account_at": None,
        "confirmed_at": None,
        "active": None,
    }


def test_what_the_lms_confirmed_is_shown_and_then_nothing_is_left() -> None:
    doc = person(["BEN_CHOICE_2026"])
    projected = first_run(doc)
    assignments = {
        key: {**value, "at": AT, **({"due": "2026-12-01"} if key.startswith("course") else {})}
        for key, value in projected["assignments"].items()
    }
    confirmed = Confirmed(
        "42", {**projected, "account_at": AT, "assignments": assignments}, "2026-11-02T00:00:00"
    )
    exp = evidence(doc, Ledger(), confirmed, projected)
    assert exp.files[0].intents == []
    text = render_explanation(exp)
    assert f"LMS      moodle account 42 (active), confirmed {AT}" in text
    assert f"intents  none: the LMS already matches (confirmed {AT})" in text
    course = line_of(text, "benefits-2026-course ")
    assert course.endswith(f"· LMS: active (confirmed {AT}), due 2026-12-01")
    (file,) = explanation_to_json(exp)["rule_files"]
    assert file["assignments"][0]["confirmed"] == assignments[state_key(COURSE)]


def test_a_waiting_target_is_named_with_its_reason() -> None:
    doc = person(["BEN_CHOICE_2026"])
    reason = "target moodle fails preflight: auth 'oauth2' is not enabled (rules/x.yaml:1:1)"
    exp = evidence(doc, Ledger(waiting={"moodle": reason}), None, first_run(doc))
    text = render_explanation(exp)
    assert f"  target   moodle: waiting — {reason}" in text
    # never sent: still changes to make, each shown with why its target waits
    assert (
        text.count(
            f"↳ to make: the LMS has not confirmed it and nothing is on its way; "
            f"its target waits — {reason}"
        )
        == 3
    )


def test_no_intents_because_of_a_problem_is_not_a_match() -> None:
    doc = person(["BEN_CHOICE_2026"], email=None)
    exp = evidence(doc, Ledger(), None, first_run(person(["BEN_CHOICE_2026"])))
    text = render_explanation(exp)
    assert "intents  none: the problems below hold the account back" in text
