"""``bridge rules test``: the shipped fixtures pass with full coverage, a wrong expectation
fails with a reason worth reading, a malformed fixture file points at file:line:col; and the
single-person verdicts (ScimFilter.match) the runner relies on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.rules.fixtures import FixtureReport
from bridge.rules.fixtures import fixture_files
from bridge.rules.fixtures import render_report
from bridge.rules.fixtures import run_fixtures
from bridge.rules.loader import load_ruleset
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleSet
from bridge.rules.verdicts import ConditionProblem
from bridge.rules.verdicts import check_conditions
from bridge.rules.verdicts import evaluate
from bridge.rules.verdicts import person_model
from bridge.schemas import Catalog

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
SHIPPED = RULES / "benefits-2026.test.yaml"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

JANE = """
      user:
        externalId: E12345
        userName: jsmith
        emails: [{type: work, value: j.smith@example.com}]
        department: Claims
        roleCodes: [BEN_CHOICE_2026]
"""


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_ruleset(RULES, relative_to=ROOT)


def _shipped_marks() -> dict[str, str]:
    """Where the shipped rules are written (``rules/benefits-2026.yaml:53:5``), by rule id."""
    rule_file = load_ruleset(RULES, relative_to=ROOT).file("benefits-2026")
    assert rule_file is not None
    marks = {a.id: str(a.mark) for a in rule_file.assignments}
    marks.update({f"mapping {m.attribute}": str(m.mark) for m in rule_file.mapping})
    marks["scope"] = str(rule_file.scope.mark)
    return marks


AT = _shipped_marks()
COURSE_AT, MANAGERS_AT = AT["benefits-2026-course"], AT["benefits-2026-managers"]
TITLE_AT = AT["mapping title"]


def run_text(ruleset: RuleSet, catalog: Catalog, tmp_path: Path, text: str) -> FixtureReport:
    path = tmp_path / "case.test.yaml"
    path.write_text(text, encoding="utf-8")
    return run_fixtures(ruleset, catalog, [path], relative_to=tmp_path)


def errors_of(ruleset: RuleSet, catalog: Catalog, tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RuleErrors) as caught:
        run_text(ruleset, catalog, tmp_path, text)
    return [str(error) for error in caught.value.errors]


# ---------------------------------------------------------------------------------------
# The shipped fixtures


def test_the_shipped_fixtures_pass_with_full_coverage(ruleset: RuleSet, catalog: Catalog) -> None:
    assert fixture_files(RULES) == [SHIPPED]
    report = run_fixtures(ruleset, catalog, [SHIPPED], relative_to=ROOT)
    rendered = render_report(report, verbose=False)
    assert report.failed == 0, rendered
    assert report.passed == len(report.results) >= 10
    assert report.never_exercised == [], rendered
    assert report.coverage_percent == 100.0
    assert report.ok(coverage_threshold=100)
    assert "FAIL" not in rendered
    assert rendered.splitlines()[-1] == "coverage: 12/12 rules (100%)"
    assert f"{len(report.results)} passed, 0 failed" in rendered
    first = report.results[0]
    assert first.where.startswith("rules/benefits-2026.test.yaml:")


def test_verbose_shows_the_intents_of_passing_tests(ruleset: RuleSet, catalog: Catalog) -> None:
    report = run_fixtures(ruleset, catalog, [SHIPPED], relative_to=ROOT)
    quiet, verbose = render_report(report, verbose=False), render_report(report, verbose=True)
    line = f"enrol BEN-2026-MGR  [benefits-2026-managers at {MANAGERS_AT}]"
    assert line in verbose and line not in quiet
    assert "problem: missing required email" in verbose
    assert len(verbose.splitlines()) > len(quiet.splitlines())


def test_the_report_as_json(ruleset: RuleSet, catalog: Catalog) -> None:
    document = run_fixtures(ruleset, catalog, [SHIPPED], relative_to=ROOT).as_dict()
    assert document["failed"] == 0
    assert document["coverage"] == {
        "exercised": 12,
        "total": 12,
        "percent": 100.0,
        "never_exercised": [],
    }
    assert document["tests"][0]["status"] == "PASS"
    assert document["tests"][0]["intents"][1]["kind"] == "enrol"


# ---------------------------------------------------------------------------------------
# Failures and coverage


def test_a_wrong_expectation_fails_with_a_helpful_reason(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: a manager module for everyone
    given:{JANE}
    expect:
      intents:
        - upsert_account
        - {{kind: enrol, ref: BEN-2026-MGR}}
        - add_cohort_member BEN2026
""",
    )
    assert not report.ok() and report.failed == 1
    result = report.results[0]
    assert result.status == "FAIL" and result.where == "case.test.yaml:4"
    reason = "\n".join(result.reasons)
    assert "intents differ" in reason
    assert "1. upsert_account\n" in reason and "2. enrol BEN-2026-MGR\n" in reason
    # What came out instead, with the rule behind it.
    assert f"2. enrol BEN-2026  [benefits-2026-course at {COURSE_AT}]" in reason
    # The expected intent's rule (found by its course) and where the fixture asked for it.
    assert (
        f"missing: enrol BEN-2026-MGR  [benefits-2026-managers at {MANAGERS_AT}]"
        "  (expected at case.test.yaml:16)" in reason
    )
    assert f"unexpected: enrol BEN-2026  [benefits-2026-course at {COURSE_AT}]" in reason
    rendered = render_report(report, verbose=False)
    assert rendered.startswith("FAIL  a manager module for everyone  (case.test.yaml:4)\n")
    assert "0 passed, 1 failed" in rendered


def test_order_matters_in_an_exact_list(ruleset: RuleSet, catalog: Catalog, tmp_path: Path) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: out of order
    given:{JANE}
    expect:
      intents: [add_cohort_member, enrol, upsert_account]
""",
    )
    assert "in another order" in report.results[0].reasons[0]


def test_includes_excludes_scope_problems_and_idempotence_failures(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: everything wrong
    given:{JANE}
      lms: {{account: {{idnumber: E12345}}, cohorts: [BEN2026]}}
    expect:
      includes: [{{kind: enrol, rule: benefits-2026-managers}}]
      excludes: [{{kind: upsert_account, data: {{create: false}}}}]
      in_scope: false
      problems: [missing required email]
""",
    )
    reasons = report.results[0].reasons
    assert reasons[0].startswith(
        f"missing: enrol rule=benefits-2026-managers  [benefits-2026-managers at {MANAGERS_AT}]"
    )
    assert reasons[1].startswith("unexpected: upsert_account  [benefits-2026 at ")
    assert "(excluded by upsert_account data=" in reasons[1]
    assert reasons[2] == (f"expected in_scope: false, got true  (scope at {AT['scope']})")
    assert reasons[3] == "expected a problem containing 'missing required email', got: (none)"


def test_idempotence_is_checked(ruleset: RuleSet, catalog: Catalog, tmp_path: Path) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: reruns are quiet
    given:{JANE}
    expect: {{idempotent: true, problems: []}}
""",
    )
    assert report.ok(), render_report(report, verbose=True)


def test_coverage_lists_what_no_test_exercised(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: just Jane
    given:{JANE}
    expect: {{in_scope: true}}
""",
    )
    assert report.ok()
    assert report.ok(coverage_threshold=80)
    assert not report.ok(coverage_threshold=100)
    never = [(item.label, str(item.mark)) for item in report.never_exercised]
    assert never == [
        ("benefits-2026-managers", MANAGERS_AT),
        ("mapping title", TITLE_AT),
    ]
    assert render_report(report, verbose=False).splitlines()[-1] == (
        "coverage: 10/12 rules (83%) — never exercised: "
        f"benefits-2026-managers at {MANAGERS_AT}, mapping title at {TITLE_AT}"
    )


def test_a_failing_test_still_counts_for_coverage(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: wrong but exercising
    given:{JANE}
    expect: {{intents: []}}
""",
    )
    assert report.failed == 1
    assert "benefits-2026-course" not in {item.name for item in report.never_exercised}


# ---------------------------------------------------------------------------------------
# Malformed fixture files


def test_a_malformed_fixture_points_at_file_line_col(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    errors = errors_of(
        ruleset,
        catalog,
        tmp_path,
        """rules: benefits-2026
tests:
  - name: typos
    given:
      user: {userName: a}
      lms: {enroled: [BEN-2026]}
    expect:
      intents: [enroll BEN-2026, {kind: enrol, rule: benefits-2026-corse}]
      in_scope: maybe
""",
    )
    assert errors == [
        "case.test.yaml:6:22: unknown key 'enroled' in given.lms\n"
        "    enroled\n  hint: did you mean 'enrolled'?",
        "case.test.yaml:8:17: unknown intent kind 'enroll'\n"
        "    enroll\n  hint: did you mean 'enrol'?",
        "case.test.yaml:8:34: no rule 'benefits-2026-corse' in rule file 'benefits-2026'\n"
        "    benefits-2026-corse\n  hint: did you mean 'benefits-2026-course'?",
        "case.test.yaml:9:17: expect.in_scope must be true or false\n    maybe",
    ]


def test_yaml_syntax_errors_have_their_position(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    errors = errors_of(ruleset, catalog, tmp_path, "rules: benefits-2026\ntests:\n  - name: [x\n")
    assert len(errors) == 1 and errors[0].startswith("case.test.yaml:3:11: YAML syntax:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules: benefits-2025\ntests: []\n",
            "case.test.yaml:1:8: no rule file named 'benefits-2025'",
        ),
        ("tests: []\n", "case.test.yaml:1:1: a fixture file names the rule file it tests"),
        ("rules: benefits-2026\n", "case.test.yaml:1:1: a fixture file needs `tests:`"),
        ("rules: benefits-2026\ntests: {a: 1}\n", "case.test.yaml:2:8: tests must be a list"),
        ("- 1\n", "case.test.yaml:1:1: a fixture file must be a mapping"),
        (
            "rules: benefits-2026\ntests:\n  - name: x\n    given: {user: {userName: a}}\n",
            "case.test.yaml:3:5: test #1 needs `expect:`",
        ),
        (
            "rules: benefits-2026\ntests:\n  - name: x\n    given: {user: {userName: a}}\n"
            "    expect: {}\n",
            "case.test.yaml:5:13: expect needs at least one expectation",
        ),
        (
            "rules: benefits-2026\ntests:\n  - name: x\n    given: {user: {emails: 3}}\n"
            "    expect: {intents: []}\n",
            "case.test.yaml:4:19: given.user is not a valid SCIM User: emails: Input should be a valid list",
        ),
        (
            "rules: benefits-2026\ntests:\n  - name: x\n    given: {user: {a: 1}}\n"
            "    expect: {intents: []}\n  - name: x\n    given: {user: {a: 1}}\n"
            "    expect: {intents: []}\n",
            "case.test.yaml:6:11: duplicate test name 'x'",
        ),
        (
            "rules: benefits-2026\ntests:\n  - name: x\n"
            "    given: {user: {department: A, " + ENTERPRISE + ": {department: B}}}\n"
            "    expect: {intents: []}\n",
            "case.test.yaml:4:32: 'department' is given twice",
        ),
    ],
)
def test_structural_problems(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path, text: str, expected: str
) -> None:
    errors = errors_of(ruleset, catalog, tmp_path, text)
    assert any(error.startswith(expected) for error in errors), errors


def test_a_misspelt_attribute_of_the_person_fails_the_file_instead_of_testing_nothing(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    # Each of these would be read by no condition and no mapping: the test would pass while
    # the person it describes holds no role code, no department, no first name.
    errors = errors_of(
        ruleset,
        catalog,
        tmp_path,
        f"""rules: benefits-2026
anchors:
  base: &base
    userName: jsmith
    roleCode: [BEN_CHOICE_2026]
tests:
  - name: typos
    given:
      user:
        <<: *base
        costCenter: "4130"
        name: {{givenNme: Jane}}
        emails: [{{type: work, vale: j@x}}]
        {ENTERPRISE}: {{departement: Claims}}
    expect: {{in_scope: true}}
  - name: the same anchor again
    given: {{user: {{<<: *base}}}}
    expect: {{in_scope: true}}
""",
    )
    assert errors == [
        "case.test.yaml:5:15: unknown attribute 'roleCode' in given.user: no condition or "
        "mapping reads it\n    roleCode\n  hint: did you mean 'roleCodes'?",
        "case.test.yaml:11:21: unknown attribute 'costCenter' in given.user: no condition or "
        "mapping reads it\n    costCenter\n  hint: costCenter belongs to the extension "
        f"{ENTERPRISE}: write it under `{ENTERPRISE}: {{costCenter: …}}`, or add the alias "
        f"`costCenter: {ENTERPRISE}:costCenter` to the rule file's aliases",
        "case.test.yaml:12:26: name has no sub-attribute 'givenNme'\n    name.givenNme\n"
        "  hint: did you mean name.givenName?",
        "case.test.yaml:13:37: emails has no sub-attribute 'vale'\n    emails.vale\n"
        "  hint: did you mean emails.value?",
        f"case.test.yaml:14:{len(ENTERPRISE) + 25}: the extension {ENTERPRISE} has no attribute "
        f"'departement'\n    {ENTERPRISE}:departement\n  hint: did you mean 'department'?",
    ], "each once, though two tests merge the anchor"


def test_a_misspelt_account_attribute_of_the_lms_state_fails(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    errors = errors_of(
        ruleset,
        catalog,
        tmp_path,
        f"""rules: benefits-2026
tests:
  - name: prior state
    given:
{JANE}
      lms:
        account: {{idnumber: E12345, firstName: Jane, costcentre: "4130"}}
    expect: {{in_scope: true}}
""",
    )
    assert errors == [
        "case.test.yaml:14:48: given.lms.account has 'firstName', which the rule file does "
        "not map: did you mean 'firstname'?\n    firstName\n  hint: the account holds the LMS "
        "attributes of the mapping: idnumber, username, email, firstname, lastname, title, "
        "department, roles, auth"
    ], "costcentre is no misspelling: an attribute a mapping no longer sends"


def test_every_file_is_checked_before_any_test_runs(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    good, bad = tmp_path / "a.test.yaml", tmp_path / "b.test.yaml"
    shutil.copy(SHIPPED, good)
    bad.write_text("rules: nope\ntests: []\n", encoding="utf-8")
    with pytest.raises(RuleErrors) as caught:
        run_fixtures(ruleset, catalog, [good, bad], relative_to=tmp_path)
    assert [str(e.mark) for e in caught.value.errors] == ["b.test.yaml:1:8"]


# ---------------------------------------------------------------------------------------
# The friendly forms


def test_friendly_lms_form_equals_the_raw_projection(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
tests:
  - name: friendly
    given:{JANE}
      lms: {{account: {{username: old}}, enrolled: [BEN-2026-MGR], suspended: [BEN-2026], cohorts: [OLD]}}
    expect: {{idempotent: true}}
  - name: raw
    given:{JANE}
      lms:
        account: {{username: old}}
        active: true
        assignments:
          course:BEN-2026-MGR: {{status: active, rule: benefits-2026-managers, kind: enrolment, ref: BEN-2026-MGR}}
          course:BEN-2026: {{status: suspended, rule: benefits-2026-course, kind: enrolment, ref: BEN-2026}}
          cohort:OLD: {{status: active, kind: cohort, ref: OLD}}
    expect: {{idempotent: true}}
""",
    )
    friendly, raw = report.results
    assert friendly.passed and raw.passed
    assert friendly.intents == raw.intents
    assert [(i.kind.value, i.ref, i.rule) for i in friendly.intents] == [
        ("upsert_account", None, "benefits-2026"),
        ("enrol", "BEN-2026", "benefits-2026-course"),
        ("add_cohort_member", "BEN2026", "benefits-2026-cohort"),
        ("suspend_enrolment", "BEN-2026-MGR", "benefits-2026-managers"),
        ("remove_cohort_member", "OLD", "?"),
    ]
    assert "remove_cohort_member OLD  [?: no such rule in rules/benefits-2026.yaml]" in (
        render_report(report, verbose=True)
    )


def test_aliases_merge_keys_and_short_intents(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
anchors:
  base: &base
    userName: jsmith
    emails: [{{type: work, value: j@x}}]
    {ENTERPRISE}: {{department: Claims}}
    {HR}: {{roleCodes: [BEN_CHOICE_2026]}}
tests:
  - name: full URNs through a merge key
    given:
      user: {{<<: *base, externalId: E1}}
    expect:
      intents: [upsert_account, enrol BEN-2026, add_cohort_member BEN2026]
  - name: an alias overrides nothing it is not given
    given:
      user: {{<<: *base, externalId: E2, ROLECODES: [MANAGER, BEN_CHOICE_2026]}}
    expect:
      includes: [enrol BEN-2026-MGR]
""",
    )
    assert report.ok(), render_report(report, verbose=True)


def test_groups_are_added_to_the_person(catalog: Catalog, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "targets.yaml", rules)
    (rules / "team.yaml").write_text(
        """version: 1
name: team
target: moodle
scope: 'groups.display eq "Claims Team"'
mapping:
  username: {from: userName, required: true}
  groups: {from: groups.value}
cohorts:
  - {id: team-cohort, when: 'groups[value eq "g-42"]', cohort: TEAM}
""",
        encoding="utf-8",
    )
    ruleset = load_ruleset(rules, relative_to=tmp_path)
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        """
rules: team
tests:
  - name: a member by displayName
    given:
      user: {userName: a}
      groups: [Claims Team]
    expect:
      intents:
        - {kind: upsert_account, data: {attributes: {username: a, groups: [Claims Team]}}}
  - name: a member by value and display
    given:
      user: {userName: b}
      groups: [{value: g-42, display: claims team}]
    expect:
      intents: [upsert_account, add_cohort_member TEAM]
  - name: not a member
    given:
      user: {userName: c}
    expect: {in_scope: false}
""",
    )
    assert report.ok(coverage_threshold=100), render_report(report, verbose=True)


# ---------------------------------------------------------------------------------------
# Verdicts: ScimFilter.match on one person


def test_person_model_ignores_unknown_attributes(catalog: Catalog) -> None:
    model = person_model(
        catalog,
        {
            "id": "p1",
            "userName": "a",
            "favouriteColour": "green",
            HR: {"roleCodes": ["X"], "shoeSize": 42},
            "groups": [{"value": "g1", "display": "G"}],
        },
    )
    assert model.model_dump()["userName"] == "a"
    assert model.model_dump()["groups"] == [{"value": "g1", "display": "G"}]


def test_verdicts_are_those_of_the_server(ruleset: RuleSet, catalog: Catalog) -> None:
    rule_file = ruleset.file("benefits-2026")
    assert rule_file is not None
    scope, course, managers, cohort = (
        rule_file.scope.filter,
        *(a.when for a in rule_file.assignments),
    )
    assert course == cohort

    def verdicts(doc: dict[str, object]) -> dict[str, bool]:
        return evaluate(rule_file, person_model(catalog, doc), catalog.user)

    claims = {"userName": "a", ENTERPRISE: {"department": "CLAIMS"}}
    assert verdicts(claims) == {scope: True, course: False, managers: False}
    both = claims | {HR: {"roleCodes": ["MANAGER", "BEN_CHOICE_2026"]}}
    assert verdicts(both) == {scope: True, course: True, managers: True}
    lowercase = claims | {HR: {"roleCodes": ["ben_choice_2026"]}}  # caseExact
    assert verdicts(lowercase)[course] is False
    gone = claims | {HR: {"employmentStatus": "Terminated"}}  # not caseExact
    assert verdicts(gone)[scope] is False


def test_a_condition_that_cannot_be_evaluated_is_false_and_reported(
    catalog: Catalog, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "targets.yaml", rules)
    (rules / "typo.yaml").write_text(
        """version: 1
name: typo
target: moodle
mapping:
  username: {from: userName, required: true}
enrolments:
  - {id: typo-course, when: 'roleCode eq "X" or userName pr', course: C1}
""",
        encoding="utf-8",
    )
    ruleset = load_ruleset(rules, relative_to=tmp_path)
    rule_file = ruleset.file("typo")
    assert rule_file is not None
    problems: list[ConditionProblem] = []
    model = person_model(catalog, {"userName": "a"})
    verdicts = evaluate(rule_file, model, catalog.user, problems=problems)
    assert verdicts == {'roleCode eq "X" or userName pr': False}
    assert [str(p) for p in problems] == [
        """condition 'roleCode eq "X" or userName pr' cannot be evaluated: Field not found: roleCode"""
    ]
    assert evaluate(rule_file, model, catalog.user) == verdicts  # problems are optional
    [error] = check_conditions(rule_file, catalog.user)
    assert str(error.mark) == "rules/typo.yaml:7:5"
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        """
rules: typo
tests:
  - name: the typo shows
    given: {user: {userName: a}}
    expect:
      intents: [upsert_account]
      problems: [Field not found roleCode]
""",
    )
    assert report.results[0].reasons == (
        "expected a problem containing 'Field not found roleCode', got: condition "
        """'roleCode eq "X" or userName pr' cannot be evaluated: Field not found: roleCode""",
    )


def test_next_to_a_merge_key_extensions_add_to_the_base(
    ruleset: RuleSet, catalog: Catalog, tmp_path: Path
) -> None:
    report = run_text(
        ruleset,
        catalog,
        tmp_path,
        f"""
rules: benefits-2026
anchors:
  gone: &gone
    userName: jsmith
    externalId: E1
    emails: [{{type: work, value: j@x}}]
    department: Claims
    {HR}: {{employmentStatus: terminated, roleCodes: [EMPLOYEE]}}
tests:
  - name: the alias replaces roleCodes only; employmentStatus stays
    given:
      user: {{<<: *gone, roleCodes: [BEN_CHOICE_2026]}}
    expect: {{in_scope: false}}
  - name: an extension block adds to the base's
    given:
      user: {{<<: *gone, {HR}: {{employmentStatus: active}}}}
    expect:
      in_scope: true
      intents:
        - {{kind: upsert_account, data: {{attributes: {{idnumber: E1, username: jsmith, email: j@x,
            firstname: "-", lastname: "-", department: Claims, roles: [EMPLOYEE], auth: oauth2}}}}}}
  - name: other keys replace
    given:
      user: {{<<: *gone, emails: [{{type: home, value: h@x}}], {HR}: {{employmentStatus: active}}}}
    expect: {{problems: [missing required email]}}
""",
    )
    assert report.ok(), render_report(report, verbose=True)
