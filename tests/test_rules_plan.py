"""The plan over a population (bridge.rules.plan): plain data through the real engine."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from bridge.relay import confirm
from bridge.rules import engine
from bridge.rules.engine import IntentKind
from bridge.rules.loader import load_ruleset
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.model import Safety
from bridge.rules.plan import FORMAT
from bridge.rules.plan import Confirmed
from bridge.rules.plan import Ledger
from bridge.rules.plan import PersonOutcome
from bridge.rules.plan import Plan
from bridge.rules.plan import QueuedRow
from bridge.rules.plan import build_plan
from bridge.rules.plan import confirmed_view
from bridge.rules.plan import known_role_codes
from bridge.rules.plan import plan_from_json
from bridge.rules.plan import plan_to_json
from bridge.rules.plan import render_text
from bridge.rules.plan import summary_line
from bridge.rules.plan import unknown_role_codes

ROOT = Path(__file__).resolve().parent.parent
RULES = load_ruleset(ROOT / "rules", relative_to=ROOT)


def _benefits() -> RuleFile:
    found = RULES.file("benefits-2026")
    assert found is not None
    return found


BENEFITS = _benefits()
COURSE, MANAGERS, COHORT = BENEFITS.assignments
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
NOW = "2026-01-08T10:00:00Z"


def person(
    user: str,
    employee_id: str,
    codes: list[str],
    *,
    email: str | None = None,
    department: str = "Claims",
    title: str = "Claims Specialist",
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "userName": user,
        "externalId": employee_id,
        "name": {"givenName": "Jane", "familyName": "Smith"},
        "title": title,
        "active": True,
        HR: {"roleCodes": codes, "employmentStatus": "active"},
        ENTERPRISE: {"department": department},
    }
    if email != "":
        doc["emails"] = [{"type": "work", "value": email or f"{user}@example.com"}]
    return doc


def verdicts(doc: dict[str, Any], rules: RuleFile = BENEFITS) -> dict[str, bool]:
    """Hand-written verdicts for the benefits rules (what SQL would compute)."""
    codes = set(doc[HR]["roleCodes"])
    found = {
        COURSE.when: "BEN_CHOICE_2026" in codes,
        MANAGERS.when: {"BEN_CHOICE_2026", "MANAGER"} <= codes,
        COHORT.when: "BEN_CHOICE_2026" in codes,
    }
    if rules.scope.filter is not None:
        found[rules.scope.filter] = doc[ENTERPRISE]["department"] == "Claims"
    return found


def outcome(
    person_id: str,
    doc: dict[str, Any],
    *,
    projected: dict[str, Any] | None = None,
    rules: RuleFile = BENEFITS,
) -> PersonOutcome:
    desired = engine.desired_state(person_id, doc, rules, verdicts(doc, rules))
    intents, _ = engine.diff(person_id, desired, projected, rules)
    return PersonOutcome(
        person_id=person_id,
        label=doc["userName"],
        rule_file=rules.name,
        target=rules.target,
        in_scope=desired.in_scope,
        intents=intents,
        problems=desired.problems,
        role_codes=list(doc[HR]["roleCodes"]),
        account=desired.account,
    )


def projection_of(person_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The projected state after a first, applied run for ``doc``."""
    desired = engine.desired_state(person_id, doc, BENEFITS, verdicts(doc))
    _, projection = engine.diff(person_id, desired, None, BENEFITS)
    assert projection is not None
    return projection


def plan(
    outcomes: list[PersonOutcome],
    *,
    projected: int = 0,
    ruleset: RuleSet = RULES,
    only: set[str] | None = None,
) -> Plan:
    return build_plan(
        ruleset,
        outcomes,
        population=len({o.person_id for o in outcomes}),
        projected_counts={"benefits-2026": projected},
        generated_at=NOW,
        only=only,
        rules_version=ruleset.version,
    )


def losing_code(count: int, *, start: int = 0) -> list[PersonOutcome]:
    """People enrolled before who no longer hold BEN_CHOICE_2026: 2 removals each (and an
    account update: their LMS roles change)."""
    out = []
    for index in range(start, start + count):
        before = person(f"lost{index}", f"L{index}", ["BEN_CHOICE_2026"])
        now = person(f"lost{index}", f"L{index}", [])
        out.append(outcome(f"l{index}", now, projected=projection_of(f"l{index}", before)))
    return out


def new_people(count: int, codes: list[str] | None = None) -> list[PersonOutcome]:
    names = ["jane.smith", "bo.lee", "ann.ko", "raj.patel", "li.wu", "max.roe"]
    return [
        outcome(f"p{index}", person(names[index], f"E{index}", codes or ["BEN_CHOICE_2026"]))
        for index in range(count)
    ]


# -- counts -------------------------------------------------------------------------------------


def test_counts_per_action_with_examples() -> None:
    result = plan(new_people(5))
    assert result.count("create_account") == 5
    assert result.count("enrol") == 5
    assert result.count("add_cohort_member") == 5
    assert result.count("suspend_enrolment") == 0
    assert result.counts["enrol"].examples == ["jane.smith", "bo.lee", "ann.ko"]
    assert result.status == "changes"
    assert result.exit_code == 2
    assert len(result.intents) == 15
    text = render_text(result)
    assert "+ enrol" in text
    assert "(jane.smith, bo.lee, ann.ko, +2 more)" in text
    assert "update account" not in text  # actions with nothing to do are not listed


def test_per_rule_counts_list_every_rule_of_the_file() -> None:
    managers = outcome("m1", person("mia.mgr", "E9", ["BEN_CHOICE_2026", "MANAGER"]))
    result = plan([*new_people(2), managers])
    assert result.rules["benefits-2026"].counts == {"create_account": 3}
    assert result.rules["benefits-2026-course"].counts == {"enrol": 3}
    assert result.rules["benefits-2026-managers"].counts == {"enrol": 1}
    assert result.rules["benefits-2026-cohort"].counts == {"add_cohort_member": 3}
    assert list(result.rules) == [
        "benefits-2026",
        "benefits-2026-course",
        "benefits-2026-managers",
        "benefits-2026-cohort",
    ]
    nobody = plan(new_people(1))
    assert nobody.rules["benefits-2026-managers"].counts == {}  # matched nobody, still shown


def test_updates_are_counted_apart_from_creations() -> None:
    before = person("jane.smith", "E1", ["BEN_CHOICE_2026"], title="Clerk")
    now = person("jane.smith", "E1", ["BEN_CHOICE_2026"], title="Claims Lead")
    changed = outcome("p1", now, projected=projection_of("p1", before))
    result = plan([changed, *new_people(2)[1:]], projected=1)
    assert result.count("update_account") == 1
    assert result.counts["update_account"].examples == ["jane.smith"]
    assert result.count("create_account") == 1
    assert "~ update account" in render_text(result)


def test_no_changes() -> None:
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    same = outcome("p1", doc, projected=projection_of("p1", doc))
    result = plan([same], projected=1)
    assert result.intents == []
    assert result.status == "no-changes"
    assert result.exit_code == 0
    assert summary_line(result) == "No changes. 0 people need attention; safety: ok."


def test_intents_in_a_deterministic_order() -> None:
    outcomes = [*new_people(6), *losing_code(3)]
    first = plan_to_json(plan(outcomes, projected=50))
    shuffled = list(outcomes)
    random.Random(7).shuffle(shuffled)
    assert plan_to_json(plan(shuffled, projected=50)) == first
    persons = [intent["person"] for intent in first["intents"]]
    assert persons == sorted(persons)
    kinds = [i["kind"] for i in first["intents"] if i["person"] == "p0"]
    assert kinds == ["upsert_account", "enrol", "add_cohort_member"]


def test_a_person_under_two_rule_files_gets_account_intents_first() -> None:
    second = dataclasses.replace(BENEFITS, name="benefits-extra", assignments=(COURSE,))
    ruleset = RuleSet((BENEFITS, second), RULES.targets, RULES.version)
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    first_file = outcome("p1", doc)
    second_file = outcome("p1", doc, rules=second)
    result = build_plan(
        ruleset,
        [first_file, second_file],
        population=1,
        projected_counts={},
        generated_at=NOW,
        rules_version="v",
    )
    kinds = [intent.kind for intent in result.intents]
    assert kinds == sorted(kinds, key=list(IntentKind).index)
    # the same person under two files of one target is no duplicate
    assert result.attention == []


# -- attention ----------------------------------------------------------------------------------


def test_people_with_problems_need_attention_and_get_no_intents() -> None:
    missing = outcome("p9", person("no.mail", "E9", ["BEN_CHOICE_2026"], email=""))
    result = plan([missing, *new_people(1)])
    assert [(a.person, a.kind, a.rule_file) for a in result.attention] == [
        ("p9", "problem", "benefits-2026")
    ]
    assert result.attention[0].reason.startswith("missing required email")
    assert all(intent.person != "p9" for intent in result.intents)
    assert result.people_needing_attention == 1
    assert "1 person needs attention" in summary_line(result)


def test_duplicate_ids_list_both_people() -> None:
    first = outcome("p1", person("jane.smith", "E123", ["BEN_CHOICE_2026"]))
    second = outcome("p2", person("john.doe", "E123", ["BEN_CHOICE_2026"]))
    result = plan([first, second])
    reasons = {(a.person, a.reason) for a in result.attention if a.kind == "duplicate"}
    assert reasons == {
        ("p1", "duplicate idnumber E123 also used by john.doe"),
        ("p2", "duplicate idnumber E123 also used by jane.smith"),
    }
    assert result.people_needing_attention == 2


def test_three_people_sharing_an_id_each_name_the_others() -> None:
    outcomes = [
        outcome(f"p{i}", person(name, "E123", ["BEN_CHOICE_2026"]))
        for i, name in enumerate(["ann.ko", "bo.lee", "cy.dunn"])
    ]
    expected = {
        ("p0", "duplicate idnumber E123 also used by bo.lee, cy.dunn"),
        ("p1", "duplicate idnumber E123 also used by ann.ko, cy.dunn"),
        ("p2", "duplicate idnumber E123 also used by ann.ko, bo.lee"),
    }
    assert {(a.person, a.reason) for a in plan(outcomes).attention} == expected
    assert {(a.person, a.reason) for a in plan(outcomes[::-1]).attention} == expected


def test_duplicates_compare_usernames_and_emails_case_insensitively() -> None:
    first = outcome("p1", person("jane.smith", "E1", [], email="Jane@Example.com"))
    second = outcome("p2", person("Jane.Smith", "E2", [], email="jane@example.com"))
    third = outcome("p3", person("jane.smith ", "E3", [], email="other@example.com"))
    result = plan([first, second, third])
    found = sorted((a.person, a.reason.split(" also")[0]) for a in result.attention)
    assert found == [
        ("p1", "duplicate email jane@example.com"),
        ("p1", "duplicate username jane.smith"),
        ("p2", "duplicate email jane@example.com"),
        ("p2", "duplicate username jane.smith"),
        ("p3", "duplicate username jane.smith"),
    ]


def test_out_of_scope_people_are_not_duplicates() -> None:
    inside = outcome("p1", person("jane.smith", "E1", ["BEN_CHOICE_2026"]))
    outside = outcome("p2", person("jane.smith2", "E1", [], department="Sales"))
    assert not outside.in_scope
    assert plan([inside, outside]).attention == []


def test_duplicates_are_per_target() -> None:
    canvas = dataclasses.replace(BENEFITS, name="benefits-canvas", target="canvas")
    ruleset = RuleSet((BENEFITS, canvas), RULES.targets, RULES.version)
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    other = person("john.doe", "E1", ["BEN_CHOICE_2026"])
    result = build_plan(
        ruleset,
        [outcome("p1", doc), outcome("p2", other, rules=canvas)],
        population=2,
        projected_counts={},
        generated_at=NOW,
        rules_version="v",
    )
    assert result.attention == []


def with_catalogue(*codes: str) -> RuleSet:
    """The shipped rules with this role-code catalogue (none: the conditions' codes only)."""
    return dataclasses.replace(RULES, role_codes=frozenset(codes))


def test_unknown_role_codes_with_a_suggestion() -> None:
    typo = outcome("p1", person("bo.lee", "E1", ["ben_choice_2026"]))
    close = outcome("p2", person("ann.ko", "E2", ["BEN_CHOICE_2025", "MANAGER"]))
    unrelated = outcome("p3", person("li.wu", "E3", ["BEN_CHOICE_2026", "EMPLOYEE"]))
    result = plan([typo, close, unrelated], ruleset=with_catalogue())
    found = {(a.people, a.reason) for a in result.attention}
    assert found == {
        (
            ("p1",),
            "unknown role code ben_choice_2026 held by 1 person (bo.lee): "
            "did you mean BEN_CHOICE_2026?",
        ),
        (
            ("p2",),
            "unknown role code BEN_CHOICE_2025 held by 1 person (ann.ko): "
            "did you mean BEN_CHOICE_2026?",
        ),
        (("p3",), "unknown role code EMPLOYEE held by 1 person (li.wu)"),
    }
    assert all(
        a.kind == "unknown-role-code" and a.rule_file is None and a.person is None
        for a in result.attention
    )
    assert result.people_needing_attention == 3


def test_unknown_role_codes_of_people_out_of_scope_are_not_reported() -> None:
    outside = outcome("p1", person("bo.lee", "E1", ["ben_choice_2026"], department="Sales"))
    assert plan([outside]).attention == []


def test_a_person_under_two_rule_files_is_counted_once_per_unknown_code() -> None:
    second = dataclasses.replace(BENEFITS, name="benefits-extra")
    ruleset = RuleSet((BENEFITS, second), RULES.targets, RULES.version)
    doc = person("bo.lee", "E1", ["ben_choice_2026"])
    result = build_plan(
        ruleset,
        [outcome("p1", doc), outcome("p1", doc, rules=second)],
        population=1,
        projected_counts={},
        generated_at=NOW,
        rules_version="v",
    )
    assert [a.reason for a in result.attention] == [
        "unknown role code ben_choice_2026 held by 1 person (bo.lee): did you mean BEN_CHOICE_2026?"
    ]
    assert result.attention[0].details["count"] == 1


# The issue "Plans that tell the truth": 10,000 HRIS people, 200 of 209 attention items
# "unknown role code EMPLOYEE", the one real problem (BEN-CHOICE-2026) hidden among them.


def test_a_code_in_the_catalogue_that_drives_nothing_needs_no_attention() -> None:
    outcomes = [
        outcome(f"p{i}", person(f"user{i}", f"E{i}", ["BEN_CHOICE_2026", "EMPLOYEE"]))
        for i in range(200)
    ]
    outcomes += [
        outcome(f"q{i}", person(name, f"F{i}", ["BEN-CHOICE-2026", "EMPLOYEE"]))
        for i, name in enumerate(["ann.ko", "bo.lee", "cy.dunn"])
    ]
    without = plan(outcomes, ruleset=with_catalogue())
    assert {a.details["code"] for a in without.attention} == {"EMPLOYEE", "BEN-CHOICE-2026"}
    result = plan(outcomes, ruleset=with_catalogue("EMPLOYEE", "BEN_CHOICE_2026", "MANAGER"))
    (item,) = result.attention
    assert item.kind == "unknown-role-code"
    assert (item.person, item.label, item.rule_file) == (None, None, None)
    assert item.people == ("q0", "q1", "q2")
    assert item.details == {
        "code": "BEN-CHOICE-2026",
        "count": 3,
        "examples": ["ann.ko", "bo.lee", "cy.dunn"],
        "suggestion": "BEN_CHOICE_2026",
    }
    assert item.reason == (
        "unknown role code BEN-CHOICE-2026 held by 3 people (ann.ko, bo.lee, cy.dunn): "
        "did you mean BEN_CHOICE_2026?"
    )
    text = render_text(result)
    assert (
        "  ! unknown role code BEN-CHOICE-2026 held by 3 people (ann.ko, bo.lee, cy.dunn): "
        "did you mean BEN_CHOICE_2026?"
    ) in text.splitlines()
    assert "Attention (3 people):" in text
    assert "3 people need attention" in summary_line(result)


def test_an_unknown_code_held_by_many_is_one_item_with_a_few_examples() -> None:
    outcomes = [
        outcome(f"p{i:02d}", person(f"user{i:02d}", f"E{i}", ["BEN_CHOICE_2026", "EMPLOYEE"]))
        for i in range(40)
    ]
    result = plan(outcomes[::-1], ruleset=with_catalogue("BEN_CHOICE_2026"))
    (item,) = result.attention
    assert item.reason == (
        "unknown role code EMPLOYEE held by 40 people (user00, user01, user02, +37 more)"
    )
    assert len(item.people) == 40 and item.details["suggestion"] is None
    assert result.people_needing_attention == 40


def test_the_catalogue_and_the_conditions_are_both_known() -> None:
    known = known_role_codes(with_catalogue("EMPLOYEE", "CONTRACTOR"))
    assert known.exact == {"EMPLOYEE", "CONTRACTOR", "BEN_CHOICE_2026", "MANAGER"}
    # a suggestion may come from the catalogue; spelling (case, - . space for _) first
    found = unknown_role_codes(
        with_catalogue("EMPLOYEE", "CONTRACTOR"),
        [("p1", "bo.lee", ["contractor ", "Ben Choice 2026"]), ("p2", "ann.ko", ["employe"])],
    )
    assert [(f.code, f.count, f.examples, f.suggestion) for f in found] == [
        ("Ben Choice 2026", 1, ("bo.lee",), "BEN_CHOICE_2026"),
        ("contractor ", 1, ("bo.lee",), "CONTRACTOR"),
        ("employe", 1, ("ann.ko",), "EMPLOYEE"),
    ]


def test_known_role_codes_come_from_every_condition_and_any_urn() -> None:
    extra = (
        Assignment(AssignmentKind.enrolment, "a", 'roleCodes eq "PLAIN"', "C1"),
        Assignment(AssignmentKind.enrolment, "b", f'{HR}:roleCodes eq "URN_CODE"', "C2"),
        Assignment(AssignmentKind.enrolment, "c", 'roleCodes[value eq "IN_BRACKETS"]', "C3"),
        Assignment(AssignmentKind.enrolment, "d", 'roleCodes sw "SAFETY_"', "C4"),
        Assignment(AssignmentKind.enrolment, "e", 'not (title eq "NOT_A_CODE")', "C5"),
    )
    rules = dataclasses.replace(BENEFITS, assignments=extra)
    known = known_role_codes(RuleSet((rules,), {}, "v"))
    assert known.exact == {"PLAIN", "URN_CODE", "IN_BRACKETS"}
    assert known.knows("SAFETY_2026")
    assert not known.knows("NOT_A_CODE")
    full = known_role_codes(RULES)
    assert full.exact == {"BEN_CHOICE_2026", "MANAGER"} | RULES.role_codes


def test_attention_text_is_grouped_by_reason_and_capped() -> None:
    outcomes = [
        outcome(f"p{i}", person(f"user{i}", f"E{i}", ["BEN_CHOICE_2026", "EMPLOYEE"]))
        for i in range(5)
    ]
    outcomes += [outcome(f"q{i}", person(f"odd{i}", f"F{i}", [f"ODD_{i}"])) for i in range(30)]
    result = plan(outcomes, ruleset=with_catalogue())
    text = render_text(result)
    assert "  ! unknown role code EMPLOYEE held by 5 people (user0, user1, user2, +2 more)" in text
    attention_lines = [line for line in text.splitlines() if line.startswith("  ! ")]
    assert len(attention_lines) == 20
    assert attention_lines[-1] == "  ! +12 more (bridge plan --json lists all)"
    assert "35 people need attention" in summary_line(result)


# -- safety -------------------------------------------------------------------------------------


def test_quarantine_by_count() -> None:
    result = plan(losing_code(11), projected=1000)  # 22 removals > max_removals 20
    (verdict,) = result.safety
    assert verdict.removals == 22
    assert verdict.verdict == "quarantined"
    assert verdict.reason == "22 removals exceed max_removals 20"
    assert result.status == "quarantined"
    assert result.exit_code == 2
    text = render_text(result)
    assert "benefits-2026: QUARANTINED — 22 removals exceed max_removals 20" in text
    assert summary_line(result).endswith("safety: quarantined (benefits-2026).")


def test_quarantine_by_percent() -> None:
    result = plan(losing_code(3), projected=50)  # 6 removals = 12% > 10%
    (verdict,) = result.safety
    assert verdict.verdict == "quarantined"
    assert verdict.removals_percent == pytest.approx(12.0)
    assert "12.0% of 50 projected, above max_removals_percent 10" in verdict.reason
    assert result.status == "quarantined"


def test_under_both_thresholds_is_ok() -> None:
    result = plan([*losing_code(3), *new_people(2)], projected=100)  # 6 removals, 6%
    (verdict,) = result.safety
    assert verdict.verdict == "ok"
    assert verdict.removals == 6
    assert result.status == "changes"
    assert result.count("suspend_enrolment") == 3
    assert result.count("remove_cohort_member") == 3
    assert summary_line(result) == (
        "Plan: 2 accounts to create, 3 to update, 2 enrolments, 2 cohort memberships, "
        "3 suspensions, 3 removals; 0 people need attention; safety: ok."
    )


def test_exactly_at_the_thresholds_is_ok() -> None:
    result = plan(losing_code(10), projected=200)  # 20 removals, 10%
    assert result.safety[0].verdict == "ok"


def test_removals_with_nothing_projected_do_not_divide_by_zero() -> None:
    result = plan(losing_code(1), projected=0)
    (verdict,) = result.safety
    assert verdict.removals_percent == 100.0
    assert verdict.verdict == "quarantined"
    empty = plan(new_people(1), projected=0)
    assert empty.safety[0].removals_percent is None
    assert empty.safety[0].verdict == "ok"


def test_no_limits_never_quarantine() -> None:
    unlimited = dataclasses.replace(BENEFITS, safety=Safety())
    ruleset = RuleSet((unlimited,), RULES.targets, RULES.version)
    result = plan(losing_code(30), projected=30, ruleset=ruleset)
    assert result.safety[0].verdict == "ok"
    assert "no limits set" in result.safety[0].reason


# -- only ---------------------------------------------------------------------------------------


def test_only_an_assignment_keeps_its_intents_and_the_account_they_need() -> None:
    managers = outcome("m1", person("mia.mgr", "E9", ["BEN_CHOICE_2026", "MANAGER"]))
    result = plan([*new_people(2), managers], only={"benefits-2026-managers"})
    assert [(i.kind, i.person, i.rule) for i in result.intents] == [
        (IntentKind.upsert_account, "m1", "benefits-2026"),
        (IntentKind.enrol, "m1", "benefits-2026-managers"),
    ]
    assert result.only == ["benefits-2026-managers"]
    assert list(result.rules) == ["benefits-2026", "benefits-2026-managers"]
    assert result.count("add_cohort_member") == 0


def test_only_an_assignment_drops_account_updates_of_other_rules() -> None:
    before = person("jane.smith", "E1", ["BEN_CHOICE_2026"], title="Clerk")
    now = person("jane.smith", "E1", ["BEN_CHOICE_2026", "MANAGER"], title="Lead")
    changed = outcome("p1", now, projected=projection_of("p1", before))
    result = plan([changed], projected=1, only={"benefits-2026-managers"})
    assert [(i.kind, i.rule) for i in result.intents] == [
        (IntentKind.enrol, "benefits-2026-managers")
    ]


def test_only_a_rule_file_keeps_everything_of_it() -> None:
    outcomes = [*new_people(2), *losing_code(1)]
    assert plan(outcomes, projected=10, only={"benefits-2026"}).intents == (
        plan(outcomes, projected=10).intents
    )


def test_only_leaves_other_rule_files_out() -> None:
    other = dataclasses.replace(
        BENEFITS,
        name="compliance",
        assignments=(dataclasses.replace(COURSE, id="compliance-course", ref="COMP-1"),),
    )
    ruleset = RuleSet((BENEFITS, other), RULES.targets, RULES.version)
    doc = person("bo.lee", "E1", ["ben_choice_2026"])
    outcomes = [outcome("p1", doc), outcome("p1", doc, rules=other)]
    result = build_plan(
        ruleset,
        outcomes,
        population=1,
        projected_counts={},
        generated_at=NOW,
        only={"compliance"},
        rules_version="v",
    )
    assert {i.rule for i in result.intents} == {"compliance"}
    assert [s.rule_file for s in result.safety] == ["compliance"]


def test_only_with_an_unknown_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="did you mean 'benefits-2026-course'"):
        plan(new_people(1), only={"benefits-2026-cours"})


def test_an_outcome_of_an_unknown_rule_file_is_an_error() -> None:
    stray = dataclasses.replace(new_people(1)[0], rule_file="nope")
    with pytest.raises(ValueError, match="unknown rule file 'nope'"):
        plan([stray])


# -- JSON ---------------------------------------------------------------------------------------


def a_busy_plan() -> Plan:
    outcomes = [
        *new_people(4),
        *losing_code(11),
        outcome("d1", person("dup.one", "E0", ["ben_choice_2026"])),
        outcome("x1", person("no.mail", "E77", ["BEN_CHOICE_2026"], email="")),
    ]
    return plan(outcomes, projected=40, only=None)


def test_json_round_trip() -> None:
    original = a_busy_plan()
    data = plan_to_json(original)
    assert data["format"] == FORMAT == "bridge-plan/1"
    assert plan_from_json(data) == original
    through_text = json.loads(json.dumps(data))
    assert plan_from_json(through_text) == original
    assert plan_to_json(plan_from_json(through_text)) == data


def test_json_fields() -> None:
    data = plan_to_json(a_busy_plan())
    assert set(data) == {
        "format",
        "generated_at",
        "rules_version",
        "population",
        "only",
        "status",
        "exit_code",
        "counts",
        "rules",
        "attention",
        "safety",
        "intents",
        "states",
        "in_flight",
    }
    assert data["generated_at"] == NOW
    assert data["states"] == {
        "to_make": len(data["intents"]),
        "failed": 0,
        "pending": 0,
        "waiting": 0,
    }
    assert data["in_flight"] == []
    assert data["status"] == "quarantined"
    assert data["exit_code"] == 2
    assert [(action, c["kind"]) for action, c in data["counts"].items()] == [
        ("create_account", "upsert_account"),
        ("update_account", "upsert_account"),
        ("reactivate_account", "reactivate_account"),
        ("enrol", "enrol"),
        ("add_cohort_member", "add_cohort_member"),
        ("suspend_enrolment", "suspend_enrolment"),
        ("unenrol", "unenrol"),
        ("remove_cohort_member", "remove_cohort_member"),
        ("suspend_account", "suspend_account"),
    ]
    assert data["counts"]["suspend_enrolment"] == {
        "kind": "suspend_enrolment",
        "count": 11,
        "examples": ["lost0", "lost1", "lost10"],  # the smallest person ids (l0, l1, l10)
    }
    upserts = sum(c["count"] for c in data["counts"].values() if c["kind"] == "upsert_account")
    assert upserts == sum(1 for i in data["intents"] if i["kind"] == "upsert_account")
    assert data["safety"][0] == {
        "rule_file": "benefits-2026",
        "target": "moodle",
        "removals": 22,
        "projected": 40,
        "removals_percent": 55.0,
        "max_removals": 20,
        "max_removals_percent": 10.0,
        "verdict": "quarantined",
        "reason": "22 removals exceed max_removals 20; "
        "22 removals are 55.0% of 40 projected, above max_removals_percent 10",
    }
    kinds = {entry["kind"] for entry in data["attention"]}
    assert kinds == {"problem", "duplicate", "unknown-role-code"}
    assert set(data["attention"][0]) == {
        "person",
        "label",
        "rule_file",
        "kind",
        "reason",
        "people",
        "details",
    }
    first = next(i for i in data["intents"] if i["kind"] == "enrol")
    assert first == {
        "kind": "enrol",
        "person": first["person"],
        "target": "moodle",
        "rule": "benefits-2026-course",
        "ref": "BEN-2026",
        "data": {"kind": "enrolment", "role": "student", "due_days": 30},
        "state": "to_make",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({}, "format is null"),
        ({"format": "bridge-plan/2"}, 'format is "bridge-plan/2"'),
        ({"format": "terraform"}, "not a plan file"),
    ],
)
def test_a_bad_format_is_refused(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_from_json(data)


def test_broken_plan_files_are_refused_with_a_clear_message() -> None:
    good = plan_to_json(a_busy_plan())

    def broken(change: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(json.dumps(good))
        change(data)
        return data

    cases = [
        (lambda d: d.pop("intents"), "has no 'intents'"),
        (lambda d: d.__setitem__("population", "many"), r"plan.population has the wrong type"),
        (lambda d: d.__setitem__("status", "maybe"), "unknown status 'maybe'"),
        (lambda d: d["intents"][0].__setitem__("kind", "delete_all"), "unknown kind 'delete_all'"),
        (lambda d: d["intents"][1].pop("person"), r"intents\[1\] has no 'person'"),
        (lambda d: d["intents"][2].__setitem__("data", []), r"intents\[2\].data has the wrong"),
        (lambda d: d["intents"].__setitem__(0, "enrol"), r"intents\[0\] must be an object"),
        (lambda d: d["attention"][0].pop("reason"), r"attention\[0\] has no 'reason'"),
        (lambda d: d["safety"][0].__setitem__("removals", None), r"safety\[0\].removals"),
        (lambda d: d["counts"].__setitem__("nuke", d["counts"]["enrol"]), "action 'nuke'"),
        (lambda d: d.__setitem__("counts", []), "plan.counts has the wrong type"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            plan_from_json(broken(change))


# -- text ---------------------------------------------------------------------------------------


def test_text_rendering() -> None:
    result = a_busy_plan()
    text = render_text(result)
    lines = text.splitlines()
    assert lines[0] == f"Plan for rules {RULES.version} — 17 people — generated {NOW}"
    assert "  + create account " in text
    assert "  - suspend enrolment " in text
    assert "  - remove cohort member " in text
    assert any(
        line.split() == ["benefits-2026-course", "benefits-2026", "4", "0", "11"] for line in lines
    )
    assert "Attention (3 people):" in text
    assert "dup.one: [benefits-2026] duplicate idnumber E0 also used by jane.smith" in text
    assert lines[-1] == summary_line(result)
    assert lines[-1] == (
        "Plan: 5 accounts to create, 11 to update, 4 enrolments, 4 cohort memberships, "
        "11 suspensions, 11 removals; 3 people need attention; "
        "safety: quarantined (benefits-2026)."
    )
    assert "\x1b[" not in text
    colored = render_text(result, color=True)
    assert "\x1b[31m" in colored and "\x1b[32m" in colored


def test_summary_line_of_the_guide() -> None:
    outcomes = [
        *new_people(2),
        outcome("m1", person("mia.mgr", "E9", ["BEN_CHOICE_2026", "MANAGER"])),
        outcome("o1", person("odd", "E10", ["ben_choice_2026"])),
    ]
    result = plan(outcomes, projected=10)
    assert summary_line(result) == (
        "Plan: 4 accounts to create, 0 to update, 4 enrolments, 3 cohort memberships, "
        "0 suspensions, 0 removals; 1 person needs attention; safety: ok."
    )


# -- the three states: desired vs confirmed, pending, waiting ------------------------------------

AT = "2026-11-01T09:00:00+00:00"


def delivered(person_id: str, doc: dict[str, Any], *, only: set[str] | None = None) -> Confirmed:
    """What the LMS confirms after the first run's intents for ``doc`` were delivered (the
    relay's own ``confirm``), all of them or only those of the kinds in ``only``."""
    desired = engine.desired_state(person_id, doc, BENEFITS, verdicts(doc))
    intents, _ = engine.diff(person_id, desired, None, BENEFITS)
    document: dict[str, Any] = {}
    for intent in intents:
        if only is None or intent.kind.value in only:
            document = confirm(document, intent.as_dict())
            document["account_at"] = AT
    return Confirmed("42", document, AT)


def tracked_outcome(
    person_id: str, doc: dict[str, Any], ledger: Ledger, confirmed: Confirmed | None
) -> PersonOutcome:
    """The outcome ``bridge plan`` makes: desired diffed against the confirmed view."""
    projected = projection_of(person_id, doc)
    desired = engine.desired_state(person_id, doc, BENEFITS, verdicts(doc))
    before = confirmed_view(BENEFITS, projected, confirmed)
    intents, _ = engine.diff(person_id, desired, before, BENEFITS)
    blocked = ledger.blocked_reason(BENEFITS.target, person_id)
    return PersonOutcome(
        person_id=person_id,
        label=doc["userName"],
        rule_file=BENEFITS.name,
        target=BENEFITS.target,
        in_scope=desired.in_scope,
        intents=intents,
        problems=desired.problems,
        role_codes=list(doc[HR]["roleCodes"]),
        account=desired.account,
        tracked=[ledger.track(intent, doc["userName"]) for intent in intents],
        blocked=[blocked] if blocked else [],
    )


def row(
    row_id: int,
    person: str,
    kind: str,
    ref: str | None = None,
    status: str = "pending",
    **more: Any,
) -> QueuedRow:
    return QueuedRow(row_id, "moodle", person, kind, ref, status, **more)


def test_confirmed_view_no_link_or_nothing_projected_is_no_account() -> None:
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    assert confirmed_view(BENEFITS, projection_of("p1", doc), None) is None
    assert confirmed_view(BENEFITS, None, delivered("p1", doc)) is None
    assert confirmed_view(BENEFITS, projection_of("p1", doc), Confirmed(None, {})) is None


def test_everything_confirmed_means_no_intents() -> None:
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    view = confirmed_view(BENEFITS, projection_of("p1", doc), delivered("p1", doc))
    assert view == projection_of("p1", doc)
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts(doc))
    assert engine.diff("p1", desired, view, BENEFITS)[0] == []


def test_what_the_lms_did_not_confirm_is_still_to_make() -> None:
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    account_only = delivered("p1", doc, only={"upsert_account"})
    view = confirmed_view(BENEFITS, projection_of("p1", doc), account_only)
    assert view is not None and view["assignments"] == {}
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts(doc))
    intents, _ = engine.diff("p1", desired, view, BENEFITS)
    assert [(i.kind.value, i.ref) for i in intents] == [
        ("enrol", "BEN-2026"),
        ("add_cohort_member", "BEN2026"),
    ]


def test_an_attribute_the_lms_holds_but_the_person_lost_is_cleared() -> None:
    before = person("jane.smith", "E1", ["BEN_CHOICE_2026"], title="Clerk")
    now = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    del now["title"]
    # The projection already moved on (the SCIM write path projected the change) …
    projected = projection_of("p1", now)
    assert "title" not in projected["account"]
    # … but the LMS still holds the old title: it is cleared, not left stale.
    view = confirmed_view(BENEFITS, projected, delivered("p1", before))
    desired = engine.desired_state("p1", now, BENEFITS, verdicts(now))
    (update,) = engine.diff("p1", desired, view, BENEFITS)[0]
    assert update.data == {"create": False, "attributes": {"title": None}}


def test_removals_the_projection_already_made_are_made_again_until_confirmed() -> None:
    before = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    now = person("jane.smith", "E1", [])
    desired = engine.desired_state("p1", now, BENEFITS, verdicts(now))
    _, projected = engine.diff("p1", desired, projection_of("p1", before), BENEFITS)
    assert projected is not None and "cohort:BEN2026" not in projected["assignments"]
    view = confirmed_view(BENEFITS, projected, delivered("p1", before))
    kinds = [(i.kind.value, i.ref) for i in engine.diff("p1", desired, view, BENEFITS)[0]]
    assert ("remove_cohort_member", "BEN2026") in kinds
    assert ("suspend_enrolment", "BEN-2026") in kinds


def test_another_rule_files_assignments_are_not_this_ones() -> None:
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    other = dataclasses.replace(BENEFITS, name="other", assignments=())
    projected = {"account": {}, "active": True, "assignments": {}}
    view = confirmed_view(other, projected, delivered("p1", doc))
    assert view is not None and view["assignments"] == {}


def test_the_ledger_says_where_an_intent_stands() -> None:
    doc = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    desired = engine.desired_state("p1", doc, BENEFITS, verdicts(doc))
    upsert, enrol, cohort = engine.diff("p1", desired, None, BENEFITS)[0]
    assert Ledger().track(upsert).state == "to_make"

    retrying = row(1, "p1", "upsert_account", status="retry", attempts=2)
    on_its_way = Ledger([retrying])
    tracked = on_its_way.track(upsert)
    assert (tracked.state, tracked.row, tracked.blocked_by) == ("pending", retrying, None)
    assert on_its_way.track(enrol).state == "to_make"  # another ref, another intent
    quarantined = Ledger([row(1, "p1", "enrol", "BEN-2026", status="quarantined", run_id="r1")])
    assert "bridge approve r1" in quarantined.track(enrol).describe()

    dead = row(1, "p1", "upsert_account", status="dead", category="data_quality", last_error="x")
    later = [row(4, "p1", "upsert_account"), row(5, "p1", "enrol", "BEN-2026")]
    ledger = Ledger([dead, *later, row(9, "p2", "enrol", "BEN-2026")])
    failed = ledger.track(upsert)
    assert (failed.state, failed.row) == ("failed", dead)  # not the update queued behind it
    blocked = ledger.track(enrol)
    assert (blocked.state, blocked.row, blocked.blocked_by) == ("pending", later[1], dead)
    assert ledger.track(cohort).state == "to_make"
    found = ledger.blocked("moodle", "p1")
    assert found == (dead, later)
    assert ledger.blocked("moodle", "p2") is None

    waiting = Ledger([dead, later[1]], waiting={"moodle": "target moodle is unreachable: 503"})
    assert waiting.track(enrol).state == "waiting"  # on its way: it waits on the target
    assert waiting.track(upsert).state == "failed"  # still a change to make, with the reason
    assert waiting.track(upsert).waiting == "target moodle is unreachable: 503"
    assert waiting.track(upsert).row == dead
    assert (
        waiting.track(upsert)
        .describe()
        .startswith(
            "failed — data_quality: x (outbox #1, 0 attempts); still to make: `bridge apply` "
            "sends it again in place; its target waits — target moodle is unreachable: 503"
        )
    )


def test_the_plan_counts_only_what_apply_sends() -> None:
    failing = person("jane.smith", "E1", ["BEN_CHOICE_2026"])
    queued_ = person("bo.lee", "E2", ["BEN_CHOICE_2026"])
    done = person("ann.ko", "E3", ["BEN_CHOICE_2026"])
    dead = row(1, "p1", "upsert_account", status="dead", category="configuration", last_error="no")
    ledger = Ledger(
        [
            dead,
            row(2, "p1", "enrol", "BEN-2026"),
            row(3, "p1", "add_cohort_member", "BEN2026"),
            row(4, "p2", "upsert_account", attempts=1, next_attempt_at=AT, last_error="503"),
            row(5, "p2", "enrol", "BEN-2026"),
        ]
    )
    outcomes = [
        tracked_outcome("p1", failing, ledger, None),
        tracked_outcome("p2", queued_, ledger, None),
        tracked_outcome("p3", done, ledger, delivered("p3", done)),
    ]
    result = plan(outcomes, projected=3)
    assert [(t.intent.person, t.intent.kind.value, t.state) for t in result.tracked] == [
        ("p1", "upsert_account", "failed"),
        ("p2", "add_cohort_member", "to_make"),
    ]
    assert result.count("create_account") == 1 and result.count("add_cohort_member") == 1
    assert result.count("enrol") == 0
    assert result.state_counts() == {"to_make": 1, "failed": 1, "pending": 4, "waiting": 0}
    assert result.exit_code == 2
    (blocked,) = result.attention
    assert (blocked.person, blocked.kind) == ("p1", "blocked")
    assert blocked.reason == (
        "2 later intents in moodle blocked behind dead letter #1 upsert_account "
        "(configuration: no); fix it, then `bridge apply` or `bridge errors retry 1`"
    )
    assert summary_line(result) == (
        "Plan: 1 account to create, 0 to update, 0 enrolments, 1 cohort membership, "
        "0 suspensions, 0 removals; 1 change failed before (apply sends it again); "
        "4 intents pending in the outbox; 1 person needs attention; safety: ok."
    )
    data = plan_to_json(result)
    assert data["states"] == {"to_make": 1, "failed": 1, "pending": 4, "waiting": 0}
    assert data["intents"][0]["outbox"]["id"] == 1
    assert [e["state"] for e in data["in_flight"]] == ["pending"] * 4
    assert data["in_flight"][0]["blocked_by"]["id"] == 1
    assert "blocked_by" not in data["in_flight"][2]
    assert plan_from_json(json.loads(json.dumps(data))) == result
    text = render_text(result)
    assert (
        "jane.smith: create account [benefits-2026] — configuration: no (outbox #1, 0 attempts)"
        in text
    )
    assert "bo.lee: update account" not in text
    assert "bo.lee: create account [benefits-2026] — pending: outbox #4, attempt 2 at" in text


def test_intents_never_sent_to_a_waiting_target_are_still_changes_with_the_reason() -> None:
    docs = [person(f"u{n}", f"E{n}", ["BEN_CHOICE_2026"]) for n in range(4)]
    reason = "target moodle fails preflight: no token (rules/targets.yaml:7:7); fix: set it"
    ledger = Ledger(waiting={"moodle": reason})
    result = plan([tracked_outcome(f"p{n}", d, ledger, None) for n, d in enumerate(docs)])
    assert len(result.tracked) == 12 and result.exit_code == 2
    assert {e.waiting for e in result.tracked} == {reason}
    assert result.state_counts() == {"to_make": 12, "failed": 0, "pending": 0, "waiting": 0}
    text = render_text(result)
    assert "  ‖ to make, but the target waits — apply enqueues them and they wait (12):" in text
    assert f"      its target waits — {reason}: 12 intents (u0, u1, u2, +1 more)" in text
    assert plan_from_json(plan_to_json(result)) == result


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["intents"][0].__setitem__("state", "pending"), r"intents\[0\] has state"),
        (lambda d: d["in_flight"].append({**d["intents"][0]}), r"in_flight\[0\] has state"),
        (lambda d: d["intents"][0].__setitem__("outbox", []), r"intents\[0\].outbox must be"),
        (
            lambda d: d["intents"][0].__setitem__("outbox", {"id": "1"}),
            r"intents\[0\].outbox: not an outbox row",
        ),
        (
            lambda d: d["in_flight"].append({**d["intents"][0], "state": "waiting"}),
            "waiting without a reason",
        ),
    ],
)
def test_broken_states_in_a_plan_file_are_refused(change: Any, message: str) -> None:
    data = plan_to_json(plan(new_people(1)))
    change(data)
    with pytest.raises(ValueError, match=message):
        plan_from_json(data)


def test_a_plan_file_without_states_reads_as_changes_to_make() -> None:
    data = plan_to_json(plan(new_people(2)))
    for key in ("states", "in_flight"):
        del data[key]
    for entry in data["intents"]:
        del entry["state"]
    again = plan_from_json(data)
    assert [t.state for t in again.tracked] == ["to_make"] * 6
    assert again == plan(new_people(2))
