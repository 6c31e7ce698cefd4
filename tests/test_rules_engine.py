"""The pure rules core on plain data: transforms, attribute paths, desired state, diff, pilot.

No database, no YAML: rule files are built from the model's dataclasses, people are SCIM
JSON dicts, and verdicts are handed in as the callers (ScimFilter.match, SQL) would.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from bridge.rules import paths
from bridge.rules.engine import REMOVALS
from bridge.rules.engine import Desired
from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import desired_state
from bridge.rules.engine import diff
from bridge.rules.engine import in_sample
from bridge.rules.engine import sample_rank
from bridge.rules.engine import state_key
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import FieldMapping
from bridge.rules.model import Otherwise
from bridge.rules.model import Pilot
from bridge.rules.model import RuleFile
from bridge.rules.model import Safety
from bridge.rules.model import Scope
from bridge.rules.model import Transform
from bridge.rules.transforms import TRANSFORMS
from bridge.rules.transforms import TransformError
from bridge.rules.transforms import apply

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
SCOPE = f'{ENTERPRISE}:department eq "Claims"'
BEN = f'{HR}:roleCodes eq "BEN_CHOICE_2026"'
MGR = f'{HR}:roleCodes eq "MANAGER" and {BEN}'
WORK_EMAIL = 'emails[type eq "work"].value'

COURSE = Assignment(AssignmentKind.enrolment, "course-rule", BEN, "BEN-2026", due_days=30)
MANAGERS = Assignment(AssignmentKind.enrolment, "managers-rule", MGR, "BEN-2026-MGR")
COHORT = Assignment(AssignmentKind.cohort, "cohort-rule", BEN, "BEN2026")

MAPPING = (
    FieldMapping("idnumber", "externalId", required=True),
    FieldMapping(
        "username", "userName", transforms=(Transform("trim"), Transform("lower")), required=True
    ),
    FieldMapping(
        "email", WORK_EMAIL, transforms=(Transform("trim"), Transform("lower")), required=True
    ),
    FieldMapping("firstname", "name.givenName", transforms=(Transform("default", "-"),)),
    FieldMapping("department", f"{ENTERPRISE}:department"),
    FieldMapping("auth", None, value="saml2", on_create_only=True),
)


def rule_file(
    *assignments: Assignment,
    mapping: tuple[FieldMapping, ...] = MAPPING,
    scope: str | None = SCOPE,
) -> RuleFile:
    return RuleFile(
        path="rules/test.yaml",
        version=1,
        name="test-rules",
        target="moodle",
        scope=Scope(scope),
        aliases={},
        mapping=mapping,
        assignments=assignments or (COURSE, MANAGERS, COHORT),
        safety=Safety(),
    )


def person(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "p1",
        "externalId": "E12345",
        "userName": " J.Smith ",
        "active": True,
        "name": {"givenName": "Jane", "familyName": "Smith"},
        "emails": [
            {"type": "home", "value": "jane@home.example"},
            {"type": "work", "value": "J.Smith@Example.com"},
        ],
        ENTERPRISE: {"department": "Claims"},
        HR: {"roleCodes": ["BEN_CHOICE_2026"]},
    }
    doc.update(changes)
    return doc


def verdicts(*true: str, rules: RuleFile | None = None) -> dict[str, bool]:
    """Every condition of the rule file, True for those named (as verdicts.evaluate gives)."""
    rules = rules or rule_file()
    texts = [rules.scope.filter or "", *(a.when for a in rules.assignments)]
    return {text: text in true for text in texts if text}


def kinds(intents: list[Intent]) -> list[tuple[str, str | None]]:
    return [(i.kind.value, i.ref) for i in intents]


def run(
    doc: dict[str, Any],
    true: tuple[str, ...],
    projected: dict[str, Any] | None,
    rules: RuleFile | None = None,
    *,
    admitted: bool = True,
) -> tuple[list[Intent], dict[str, Any] | None, Desired]:
    rules = rules or rule_file()
    desired = desired_state("p1", doc, rules, verdicts(*true, rules=rules), admitted=admitted)
    intents, projection = diff("p1", desired, projected, rules)
    return intents, projection, desired


def provisioned(*true: str, rules: RuleFile | None = None) -> dict[str, Any]:
    """The projection after a first run (the LMS holds what the rules asked)."""
    _, projection, _ = run(person(), true, None, rules)
    assert projection is not None
    return projection


# ---------------------------------------------------------------------------------------
# Transforms


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("lower", "AbC", "abc"),
        ("lower", ["A", None, "B"], ["a", None, "b"]),
        ("lower", None, None),
        ("upper", "abc", "ABC"),
        ("upper", ["a"], ["A"]),
        ("trim", "  x y  ", "x y"),
        ("trim", [" a ", "b "], ["a", "b"]),
        ("trim", None, None),
    ],
)
def test_text_transforms(name: str, value: Any, expected: Any) -> None:
    assert apply(value, name, None) == expected


@pytest.mark.parametrize("name", ["lower", "upper", "trim"])
@pytest.mark.parametrize("value", [42, True, {"a": "b"}])
def test_text_transforms_refuse_other_values(name: str, value: Any) -> None:
    with pytest.raises(TransformError, match=f"{name} needs text, got {type(value).__name__}"):
        apply(value, name, None)


def test_split() -> None:
    assert apply("a, b,,c ", "split", None) == ["a", "b", "c"]
    assert apply("a;b", "split", ";") == ["a", "b"]
    assert apply("a,b", "split", "") == ["a", "b"]  # an empty separator is the default
    assert apply(["x", "y"], "split", None) == ["x", "y"]
    assert apply(None, "split", None) is None
    with pytest.raises(TransformError, match="split needs text, got int"):
        apply(3, "split", None)


def test_join() -> None:
    assert apply(["a", "b"], "join", None) == "a,b"
    assert apply(["a", 1], "join", "; ") == "a; 1"
    assert apply(["a", "b"], "join", "") == "ab"
    assert apply("already", "join", ";") == "already"
    assert apply(None, "join", None) is None
    with pytest.raises(TransformError, match="join needs a list, got int"):
        apply(3, "join", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "-"), ("", "-"), ([], "-"), ("x", "x"), (0, 0), (False, False), (["a"], ["a"])],
)
def test_default(value: Any, expected: Any) -> None:
    assert apply(value, "default", "-") == expected


def test_map() -> None:
    table = {"FT": "full-time", "PT": "part-time"}
    assert apply("FT", "map", table) == "full-time"
    assert apply("XX", "map", table) == "XX"  # unmapped values pass through
    assert apply(["PT", "FT", None], "map", table) == ["part-time", "full-time", None]
    assert apply(None, "map", table) is None
    assert apply(1, "map", {"1": "one"}) == "one"  # keys are compared as text
    with_default = {"table": {"FT": "full-time"}, "default": "other"}
    assert apply("FT", "map", with_default) == "full-time"
    assert apply("XX", "map", with_default) == "other"


def test_template() -> None:
    assert apply("jsmith", "template", "{value}@example.com") == "jsmith@example.com"
    assert apply(["a", "b"], "template", "x-{value}") == ["x-a", "x-b"]
    assert apply(None, "template", "{value}!") is None
    with pytest.raises(TransformError, match="template needs text, got int"):
        apply(12345, "template", "E{value}")


def test_replace() -> None:
    assert apply("J.Smith-1", "replace", {"pattern": "[^A-Za-z]", "with": ""}) == "JSmith"
    assert apply("a b", "replace", {"pattern": " "}) == "ab"  # `with` defaults to nothing
    assert apply(["a1", "b2"], "replace", {"pattern": r"(\w)(\d)", "with": r"\2\1"}) == [
        "1a",
        "2b",
    ]
    with pytest.raises(TransformError, match="replace needs text"):
        apply(5, "replace", {"pattern": "x"})


@pytest.mark.parametrize(
    ("name", "argument", "problem"),
    [
        ("lower", "x", "takes no argument"),
        ("trim", {"a": 1}, "takes no argument"),
        ("split", 3, "separator string"),
        ("join", ["x"], "separator string"),
        ("map", {}, "lookup table"),
        ("map", "FT", "lookup table"),
        ("template", "no placeholder", "{value}"),
        ("template", 3, "{value}"),
        ("replace", "x", "{pattern: REGEX, with: TEXT}"),
        ("replace", {"pattern": "("}, "bad regular expression"),
        ("replace", {"pattern": "x", "by": "y"}, "unknown keys ['by']"),
    ],
)
def test_transform_arguments_are_checked(name: str, argument: Any, problem: str) -> None:
    found = TRANSFORMS[name].check(argument)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    ("name", "argument"),
    [
        ("lower", None),
        ("split", None),
        ("split", ";"),
        ("join", " "),
        ("default", None),
        ("default", 0),
        ("map", {"a": "b"}),
        ("template", "{value}!"),
        ("replace", {"pattern": "a", "with": "b"}),
    ],
)
def test_good_transform_arguments_pass(name: str, argument: Any) -> None:
    assert TRANSFORMS[name].check(argument) is None


def test_map_with_a_table_that_is_not_a_mapping_is_refused_by_the_check() -> None:
    assert TRANSFORMS["map"].check({"table": "FT"}) is not None


def test_map_of_a_boolean_attribute_uses_the_yaml_spelling() -> None:
    # `transforms: [{map: {true: eligible, false: not eligible}}]` as the loader builds it.
    assert apply(True, "map", {"true": "eligible", "false": "not eligible"}) == "eligible"


# ---------------------------------------------------------------------------------------
# Attribute paths


def test_read_simple_and_nested_attributes() -> None:
    doc = person()
    assert paths.read(doc, "userName") == " J.Smith "
    assert paths.read(doc, "name.givenName") == "Jane"
    assert paths.read(doc, "title") is None
    assert paths.read(doc, "name.middleName") is None


def test_read_ignores_the_case_of_attribute_names() -> None:
    doc = {"UserName": "x", "name": {"GivenName": "Jane"}, ENTERPRISE.upper(): {"Department": "D"}}
    assert paths.read(doc, "username") == "x"
    assert paths.read(doc, "NAME.givenname") == "Jane"
    assert paths.read(doc, f"{ENTERPRISE}:department") == "D"


def test_read_sub_attribute_of_a_multi_valued_attribute() -> None:
    assert paths.read(person(), "emails.value") == ["jane@home.example", "J.Smith@Example.com"]
    assert paths.read(person(), "emails.display") is None
    assert paths.read({"emails": []}, "emails.value") is None


def test_read_value_path() -> None:
    doc = person()
    assert paths.read(doc, WORK_EMAIL) == "J.Smith@Example.com"
    assert paths.read(doc, 'emails[type eq "WORK"].value') == "J.Smith@Example.com"
    assert paths.read(doc, 'emails[type eq "other"].value') is None
    assert paths.read(doc, 'emails[type eq "work"]') == [
        {"type": "work", "value": "J.Smith@Example.com"}
    ]
    assert (
        paths.read(doc, 'emails[value ew "example" or type eq "home"].value') == "jane@home.example"
    )
    two_work = person(emails=[{"type": "work", "value": "a@x"}, {"type": "work", "value": "b@x"}])
    assert paths.read(two_work, WORK_EMAIL) == ["a@x", "b@x"]
    assert paths.read({"emails": "not a list"}, WORK_EMAIL) is None


def test_value_path_filters_hold_on_one_element() -> None:
    doc = person(
        emails=[
            {"type": "work", "value": "a@x", "primary": False},
            {"type": "home", "value": "b@x", "primary": True},
        ]
    )
    # type eq work holds on the first element, primary on the second: no single element.
    assert paths.read(doc, 'emails[type eq "work" and primary eq true].value') is None
    assert paths.read(doc, 'emails[type eq "home" and primary eq true].value') == "b@x"
    assert paths.read(doc, 'emails[not (type eq "work")].value') == "b@x"
    assert paths.read(doc, "emails[primary pr].value") == ["a@x", "b@x"]


def test_value_path_over_simple_values() -> None:
    doc = person(**{HR: {"roleCodes": ["BEN_CHOICE_2026", "MANAGER"]}})
    assert paths.read(doc, f'{HR}:roleCodes[value sw "BEN"]') == ["BEN_CHOICE_2026"]
    assert paths.read(doc, f'{HR}:roleCodes[value eq "NONE"]') is None


def test_read_urn_paths() -> None:
    doc = person(**{ENTERPRISE: {"department": "Claims", "manager": {"value": "m1"}}})
    assert paths.read(doc, f"{ENTERPRISE}:department") == "Claims"
    assert paths.read(doc, f"{ENTERPRISE}:manager.value") == "m1"
    assert paths.read(doc, f"{HR}:roleCodes") == ["BEN_CHOICE_2026"]
    assert paths.read(doc, f"{HR.upper()}:ROLECODES") == ["BEN_CHOICE_2026"]
    # The core schema's URN designates the top level.
    assert paths.read(doc, "urn:ietf:params:scim:schemas:core:2.0:User:externalId") == "E12345"
    # An extension the person does not have.
    assert paths.read({"userName": "x"}, f"{ENTERPRISE}:department") is None


@pytest.mark.parametrize("text", ['userName eq "x"', "", "a[", "emails[type eq 1].value.x"])
def test_read_refuses_what_is_not_an_attribute_path(text: str) -> None:
    with pytest.raises(ValueError, match="is not an attribute path"):
        paths.read(person(), text)


# ---------------------------------------------------------------------------------------
# Desired state


def test_desired_state_of_an_eligible_person() -> None:
    desired = desired_state("p1", person(), rule_file(), verdicts(SCOPE, BEN))
    assert desired.in_scope and desired.active
    assert desired.account == {
        "idnumber": "E12345",
        "username": "j.smith",
        "email": "j.smith@example.com",
        "firstname": "Jane",
        "department": "Claims",
    }
    assert desired.create_only == {"auth": "saml2"}
    assert sorted(desired.assignments) == ["cohort:BEN2026", "course:BEN-2026"]
    assert desired.problems == []
    assert ("username", " J.Smith ", "j.smith") in desired.mapping_trace


def test_out_of_scope_when_the_scope_filter_does_not_match_or_has_no_verdict() -> None:
    assert not desired_state("p1", person(), rule_file(), verdicts(BEN)).in_scope
    assert not desired_state("p1", person(), rule_file(), {}).in_scope
    desired = desired_state("p1", person(), rule_file(), verdicts(SCOPE, BEN), admitted=False)
    assert not desired.in_scope and desired.account == {} and desired.assignments == {}


def test_no_scope_filter_takes_everyone() -> None:
    rules = rule_file(scope=None)
    assert desired_state("p1", person(), rules, {}).in_scope


def test_missing_required_value_is_a_problem_and_blocks_the_account() -> None:
    doc = person(emails=[{"type": "home", "value": "jane@home.example"}])
    intents, projection, desired = run(doc, (SCOPE, BEN), None)
    assert [p.reason for p in desired.problems] == [f"missing required email (from {WORK_EMAIL})"]
    assert intents == [] and projection is None
    # Already projected: nothing changes either (the person is in the attention list).
    before = provisioned(SCOPE, BEN)
    intents, projection, _ = run(doc, (SCOPE, BEN), before)
    assert intents == [] and projection == before


def test_empty_values_count_as_missing() -> None:
    for emails in ([{"type": "work", "value": "   "}], [], None):
        desired = desired_state("p1", person(emails=emails), rule_file(), verdicts(SCOPE))
        assert any(p.reason.startswith("missing required email") for p in desired.problems)


def test_optional_missing_value_is_left_out_and_defaults_apply() -> None:
    doc = person(name=None, **{ENTERPRISE: {"department": None}})
    desired = desired_state("p1", doc, rule_file(), verdicts(SCOPE))
    assert desired.problems == []
    assert desired.account["firstname"] == "-"
    assert "department" not in desired.account


def test_transform_error_on_an_optional_attribute_is_a_problem() -> None:
    rules = rule_file(
        mapping=(*MAPPING, FieldMapping("code", "title", transforms=(Transform("lower"),)))
    )
    desired = desired_state("p1", person(title=7), rules, verdicts(SCOPE, rules=rules))
    assert [p.reason for p in desired.problems] == ["code: lower needs text, got int"]
    assert "code" not in desired.account


def test_required_attribute_whose_transform_fails_blocks_the_account() -> None:
    rules = rule_file(
        mapping=(
            FieldMapping("idnumber", "externalId", transforms=(Transform("lower"),), required=True),
        )
    )
    intents, _, desired = run(person(externalId=12345), (SCOPE,), None, rules)
    assert desired.problems
    assert intents == []


def test_on_create_attributes_go_only_with_the_creation() -> None:
    created, projection, _ = run(person(), (SCOPE,), None)
    assert created[0].data == {
        "create": True,
        "attributes": {
            "idnumber": "E12345",
            "username": "j.smith",
            "email": "j.smith@example.com",
            "firstname": "Jane",
            "department": "Claims",
            "auth": "saml2",
        },
    }
    assert projection is not None and "auth" not in projection["account"]
    updated, _, _ = run(person(userName="jane"), (SCOPE,), projection)
    assert [i.data for i in updated] == [{"create": False, "attributes": {"username": "jane"}}]


def test_inactive_person() -> None:
    desired = desired_state("p1", person(active=False), rule_file(), verdicts(SCOPE, BEN))
    assert desired.in_scope and not desired.active
    assert desired_state("p1", person(active=None), rule_file(), verdicts(SCOPE)).active


def test_assignments_follow_their_verdicts_and_the_first_rule_of_a_ref_wins() -> None:
    other = Assignment(AssignmentKind.enrolment, "other-rule", MGR, "BEN-2026", role="teacher")
    rules = rule_file(COURSE, other, COHORT)
    desired = desired_state("p1", person(), rules, verdicts(SCOPE, BEN, MGR, rules=rules))
    assert desired.assignments == {"course:BEN-2026": COURSE, "cohort:BEN2026": COHORT}
    only_mgr = desired_state("p1", person(), rules, verdicts(SCOPE, MGR, rules=rules))
    assert only_mgr.assignments == {"course:BEN-2026": other}


def test_state_keys() -> None:
    assert state_key(COURSE) == "course:BEN-2026"
    assert state_key(COHORT) == "cohort:BEN2026"
    assert state_key(Assignment(AssignmentKind.path, "p", BEN, "LP1")) == "path:LP1"


# ---------------------------------------------------------------------------------------
# Diff


def test_first_run_order() -> None:
    intents, projection, _ = run(person(), (SCOPE, BEN, MGR), None)
    assert kinds(intents) == [
        ("upsert_account", None),
        ("enrol", "BEN-2026"),
        ("enrol", "BEN-2026-MGR"),
        ("add_cohort_member", "BEN2026"),
    ]
    assert [i.rule for i in intents] == [
        "test-rules",
        "course-rule",
        "managers-rule",
        "cohort-rule",
    ]
    assert intents[1].data == {"kind": "enrolment", "role": "student", "due_days": 30}
    assert intents[3].data == {"kind": "cohort"}
    assert {i.target for i in intents} == {"moodle"} and {i.person for i in intents} == {"p1"}
    assert projection == {
        "account": {
            "idnumber": "E12345",
            "username": "j.smith",
            "email": "j.smith@example.com",
            "firstname": "Jane",
            "department": "Claims",
        },
        "active": True,
        "assignments": {
            "course:BEN-2026": {
                "status": "active",
                "rule": "course-rule",
                "kind": "enrolment",
                "ref": "BEN-2026",
            },
            "course:BEN-2026-MGR": {
                "status": "active",
                "rule": "managers-rule",
                "kind": "enrolment",
                "ref": "BEN-2026-MGR",
            },
            "cohort:BEN2026": {
                "status": "active",
                "rule": "cohort-rule",
                "kind": "cohort",
                "ref": "BEN2026",
            },
        },
    }


def test_order_does_not_depend_on_the_order_of_the_rules() -> None:
    extra = Assignment(AssignmentKind.enrolment, "a-rule", BEN, "AAA-1")
    results = set()
    for order in itertools.permutations((COURSE, MANAGERS, COHORT, extra)):
        rules = rule_file(*order)
        intents, _, _ = run(person(), (SCOPE, BEN, MGR), None, rules)
        results.add(tuple((i.kind.value, i.ref, i.rule) for i in intents))
    assert len(results) == 1
    assert [ref for _, ref, _ in next(iter(results))] == [
        None,
        "AAA-1",
        "BEN-2026",
        "BEN-2026-MGR",
        "BEN2026",
    ]


def test_removals_come_after_additions_in_a_fixed_order() -> None:
    before = provisioned(SCOPE, BEN, MGR)
    before["active"] = False  # also reactivated
    new = Assignment(AssignmentKind.enrolment, "new-rule", f"{HR}:roleCodes pr", "NEW-1")
    rules = rule_file(COURSE, MANAGERS, COHORT, new)
    intents, _, _ = run(person(userName="renamed"), (SCOPE, f"{HR}:roleCodes pr"), before, rules)
    assert kinds(intents) == [
        ("upsert_account", None),
        ("reactivate_account", None),
        ("enrol", "NEW-1"),
        ("suspend_enrolment", "BEN-2026"),
        ("suspend_enrolment", "BEN-2026-MGR"),
        ("remove_cohort_member", "BEN2026"),
    ]
    assert {i.kind for i in intents} & REMOVALS == {
        IntentKind.suspend_enrolment,
        IntentKind.remove_cohort_member,
    }


def test_idempotent_when_the_projection_matches() -> None:
    for true in [(SCOPE, BEN, MGR), (SCOPE,), (BEN,)]:
        _, projection, desired = run(person(), true, None)
        again, after = diff("p1", desired, projection, rule_file())
        assert again == [] and after == projection


def test_idempotent_after_removals_and_suspensions() -> None:
    _, projection, desired = run(person(active=False), (SCOPE,), provisioned(SCOPE, BEN))
    again, after = diff("p1", desired, projection, rule_file())
    assert again == [] and after == projection


def test_losing_the_condition_suspends_the_enrolment_by_default() -> None:
    intents, projection, _ = run(person(), (SCOPE,), provisioned(SCOPE, BEN))
    assert kinds(intents) == [
        ("suspend_enrolment", "BEN-2026"),
        ("remove_cohort_member", "BEN2026"),
    ]
    assert intents[0].rule == "course-rule" and intents[0].data == {"kind": "enrolment"}
    assert projection is not None
    assert projection["assignments"]["course:BEN-2026"]["status"] == "suspended"
    assert "cohort:BEN2026" not in projection["assignments"]
    assert IntentKind.unenrol not in {i.kind for i in intents}


def test_regaining_the_condition_enrols_again() -> None:
    _, suspended, _ = run(person(), (SCOPE,), provisioned(SCOPE, BEN))
    intents, projection, _ = run(person(), (SCOPE, BEN), suspended)
    assert kinds(intents) == [("enrol", "BEN-2026"), ("add_cohort_member", "BEN2026")]
    assert projection == provisioned(SCOPE, BEN)


def test_otherwise_unenrol_and_keep() -> None:
    unenrol = Assignment(
        AssignmentKind.enrolment, "u-rule", BEN, "U-1", otherwise=Otherwise.unenrol
    )
    keep = Assignment(AssignmentKind.enrolment, "k-rule", BEN, "K-1", otherwise=Otherwise.keep)
    rules = rule_file(unenrol, keep)
    intents, projection, _ = run(person(), (SCOPE,), provisioned(SCOPE, BEN, rules=rules), rules)
    assert [(i.kind.value, i.ref, i.rule) for i in intents] == [("unenrol", "U-1", "u-rule")]
    assert projection is not None
    assert "course:U-1" not in projection["assignments"]
    assert projection["assignments"]["course:K-1"]["status"] == "active"


def test_cohort_membership_is_removed_whatever_otherwise_says_but_keep() -> None:
    suspend = Assignment(AssignmentKind.cohort, "c1", BEN, "C1")
    unenrol = Assignment(AssignmentKind.cohort, "c2", BEN, "C2", otherwise=Otherwise.unenrol)
    keep = Assignment(AssignmentKind.cohort, "c3", BEN, "C3", otherwise=Otherwise.keep)
    rules = rule_file(suspend, unenrol, keep)
    intents, _, _ = run(person(), (SCOPE,), provisioned(SCOPE, BEN, rules=rules), rules)
    assert kinds(intents) == [("remove_cohort_member", "C1"), ("remove_cohort_member", "C2")]


def test_learning_paths_are_enrolments() -> None:
    path = Assignment(AssignmentKind.path, "lp-rule", BEN, "LP-1", due_days=14)
    rules = rule_file(path)
    intents, projection, _ = run(person(), (SCOPE, BEN), None, rules)
    assert intents[1].kind == IntentKind.enrol
    assert intents[1].data == {"kind": "path", "role": "student", "due_days": 14}
    intents, _, _ = run(person(), (SCOPE,), projection, rules)
    assert [(i.kind, i.data) for i in intents] == [(IntentKind.suspend_enrolment, {"kind": "path"})]


def test_due_stays_a_deadline_and_only_access_ends_ends_access() -> None:
    """``due`` → ``due_days`` (the bridge keeps the date); ``access_ends`` → ``access_end_days``,
    the only data a target may turn into an LMS end date (Moodle's ``timeend``, LMS.md)."""
    course = Assignment(
        AssignmentKind.enrolment, "course-rule", BEN, "BEN-2026", due_days=30, access_end_days=90
    )
    path = Assignment(AssignmentKind.path, "lp-rule", BEN, "LP-1", access_end_days=7)
    cohort = Assignment(AssignmentKind.cohort, "cohort-rule", BEN, "BEN2026", access_end_days=5)
    intents, projection, _ = run(person(), (SCOPE, BEN), None, rule_file(course, path, cohort))
    assert [(i.ref, i.data) for i in intents[1:]] == [
        (
            "BEN-2026",
            {"kind": "enrolment", "role": "student", "due_days": 30, "access_end_days": 90},
        ),
        ("LP-1", {"kind": "path", "role": "student", "access_end_days": 7}),
        ("BEN2026", {"kind": "cohort"}),  # a membership has no end
    ]
    intents, _, _ = run(person(), (SCOPE, BEN), None, rule_file(COURSE))
    assert intents[1].data == {"kind": "enrolment", "role": "student", "due_days": 30}
    assert projection is not None
    assert projection["assignments"]["course:BEN-2026"] == {
        "status": "active",
        "rule": "course-rule",
        "kind": "enrolment",
        "ref": "BEN-2026",
    }


def test_an_assignment_whose_rule_was_deleted_is_suspended_under_its_old_rule() -> None:
    before = provisioned(SCOPE, BEN, MGR)
    rules = rule_file(COURSE, COHORT)  # the managers' rule is gone
    intents, _, _ = run(person(), (SCOPE, BEN), before, rules)
    assert [(i.kind.value, i.ref, i.rule) for i in intents] == [
        ("suspend_enrolment", "BEN-2026-MGR", "managers-rule")
    ]


def test_account_changes_send_only_what_changed() -> None:
    before = provisioned(SCOPE, BEN)
    doc = person(userName="JSMITH2", **{ENTERPRISE: {"department": "Claims"}})
    intents, projection, _ = run(doc, (SCOPE, BEN), before)
    assert [(i.kind, i.data) for i in intents] == [
        (IntentKind.upsert_account, {"create": False, "attributes": {"username": "jsmith2"}})
    ]
    assert projection is not None and projection["account"]["username"] == "jsmith2"


def test_reactivation() -> None:
    before = provisioned(SCOPE, BEN) | {"active": False}
    intents, projection, _ = run(person(), (SCOPE, BEN), before)
    assert kinds(intents) == [("reactivate_account", None)]
    assert intents[0].rule == "test-rules"
    assert projection is not None and projection["active"] is True


def test_inactive_person_already_provisioned_is_suspended() -> None:
    intents, projection, _ = run(person(active=False), (SCOPE, BEN), provisioned(SCOPE, BEN))
    assert [(i.kind, i.data) for i in intents] == [
        (IntentKind.suspend_account, {"reason": "inactive"})
    ]
    assert projection is not None and projection["active"] is False


def test_out_of_scope_suspends_the_account_only_if_it_was_active() -> None:
    before = provisioned(SCOPE, BEN)
    intents, projection, desired = run(person(), (BEN,), before)
    assert not desired.in_scope
    assert [(i.kind, i.data) for i in intents] == [
        (IntentKind.suspend_account, {"reason": "out of scope"})
    ]
    # Enrolments are left as they are: the account is suspended, progress kept.
    assert projection == before | {"active": False}
    again, after, _ = run(person(), (BEN,), projection)
    assert again == [] and after == projection


def test_out_of_scope_and_never_provisioned_is_nothing() -> None:
    intents, projection, _ = run(person(), (BEN,), None)
    assert intents == [] and projection is None


def test_deleted_person_is_suspended() -> None:
    before = provisioned(SCOPE, BEN)
    intents, _ = diff("p1", Desired(in_scope=False), before, rule_file())
    assert kinds(intents) == [("suspend_account", None)]


def test_back_in_scope_is_reactivated_without_re_enrolment() -> None:
    _, suspended, _ = run(person(), (BEN,), provisioned(SCOPE, BEN))
    intents, _, _ = run(person(), (SCOPE, BEN), suspended)
    assert kinds(intents) == [("reactivate_account", None)]


def test_intent_as_dict() -> None:
    intent = Intent(IntentKind.enrol, "p1", "moodle", "r", "C1", {"role": "student"})
    assert intent.as_dict() == {
        "kind": "enrol",
        "person": "p1",
        "target": "moodle",
        "rule": "r",
        "ref": "C1",
        "data": {"role": "student"},
    }
    bare = Intent(IntentKind.suspend_account, "p1", "moodle", "r")
    assert bare.as_dict() == {
        "kind": "suspend_account",
        "person": "p1",
        "target": "moodle",
        "rule": "r",
    }


# ---------------------------------------------------------------------------------------
# Pilot sampling


KEYS = [f"E{n:05d}" for n in range(4000)]


def test_no_sample_takes_everyone() -> None:
    assert all(in_sample(Pilot(max_people=200), key) for key in KEYS[:50])
    assert all(in_sample(Pilot(sample_percent=100), key) for key in KEYS)


def test_sample_is_stable_and_about_the_size_asked() -> None:
    pilot = Pilot(sample_percent=10, seed="benefits-2026")
    first = {key for key in KEYS if in_sample(pilot, key)}
    assert first == {
        key for key in KEYS if in_sample(Pilot(sample_percent=10, seed="benefits-2026"), key)
    }
    assert 300 <= len(first) <= 500  # 10% of 4000, give or take
    assert len({key for key in KEYS if in_sample(Pilot(sample_percent=1, seed="x"), key)}) < 100


def test_samples_grow_monotonically_with_the_percentage() -> None:
    small = {k for k in KEYS if in_sample(Pilot(sample_percent=5, seed="s"), k)}
    large = {k for k in KEYS if in_sample(Pilot(sample_percent=20, seed="s"), k)}
    assert small < large


def test_the_seed_changes_the_sample() -> None:
    one = {k for k in KEYS if in_sample(Pilot(sample_percent=10, seed="one"), k)}
    two = {k for k in KEYS if in_sample(Pilot(sample_percent=10, seed="two"), k)}
    assert one != two


def test_sample_rank_is_stable_and_independent_of_arrival_order() -> None:
    pilot = Pilot(max_people=200, seed="benefits-2026")
    ranked = sorted(KEYS, key=lambda key: sample_rank(pilot, key))
    shuffled = list(reversed(KEYS))
    assert sorted(shuffled, key=lambda key: sample_rank(pilot, key)) == ranked
    assert [sample_rank(pilot, k) for k in KEYS[:20]] == [sample_rank(pilot, k) for k in KEYS[:20]]
    assert len({sample_rank(pilot, k) for k in KEYS}) == len(KEYS)
    # The first 200 are not simply the first 200 to arrive.
    assert set(ranked[:200]) != set(KEYS[:200])
    other = sorted(KEYS, key=lambda key: sample_rank(Pilot(seed="other"), key))
    assert other[:200] != ranked[:200]


def test_sample_rank_and_membership_use_different_hashes() -> None:
    pilot = Pilot(sample_percent=50, seed="s")
    in_first_half = {k for k in sorted(KEYS, key=lambda k: sample_rank(pilot, k))[:2000]}
    assert in_first_half != {k for k in KEYS if in_sample(pilot, k)}
