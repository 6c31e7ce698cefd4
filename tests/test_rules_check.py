"""`bridge rules check` (DESIGN §6): every mistake an admin can make in rules/, at file:line:col.

Each test writes a small rules directory (the shipped targets.yaml plus one or two rule files)
and asserts where the problem is reported, what it says and what it hints. Rule files start
with a three-line header (version, name, target), so their body starts on line 4.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from bridge.rules.check import LmsCatalogue
from bridge.rules.check import check_directory
from bridge.rules.check import check_ruleset
from bridge.rules.check import errors_as_json
from bridge.rules.check import load_lms_catalogue
from bridge.rules.check import render_errors
from bridge.rules.loader import load_ruleset
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.schemas import Catalog

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "rules_fixtures" / "check"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "rules" / "targets.yaml", tmp_path / "targets.yaml")
    return tmp_path


def write(directory: Path, file_name: str, body: str, *, target: str = "moodle") -> None:
    """A rule file named after ``file_name``: the header is lines 1-3, ``body`` starts on 4."""
    name = file_name.removesuffix(".yaml")
    header = f"version: 1\nname: {name}\ntarget: {target}\n"
    (directory / file_name).write_text(header + textwrap.dedent(body).lstrip("\n"))


def check(directory: Path, catalog: Catalog, lms: LmsCatalogue | None = None) -> list[RuleError]:
    _, errors = check_directory(directory, catalog, lms, relative_to=directory)
    return errors


def only(errors: list[RuleError]) -> RuleError:
    assert len(errors) == 1, render_errors(errors)
    return errors[0]


# --- the shipped rules -------------------------------------------------------------------------


def test_shipped_rules_check_clean(catalog: Catalog) -> None:
    ruleset, errors = check_directory(ROOT / "rules", catalog, relative_to=ROOT, with_warnings=True)
    assert errors == [], render_errors(errors)  # not even a warning
    assert ruleset is not None and ruleset.file("benefits-2026") is not None


def test_shipped_rules_check_clean_against_the_demo_lms(catalog: Catalog) -> None:
    lms = load_lms_catalogue(FIXTURES / "lms-catalogue.yaml")
    _, errors = check_directory(ROOT / "rules", catalog, lms, relative_to=ROOT)
    assert errors == [], render_errors(errors)
    assert check_ruleset(load_ruleset(ROOT / "rules"), catalog, lms) == []


# --- what the loader refuses (structure), reported through check_directory ---------------------


def test_yaml_syntax_error(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "broken.yaml",
        """
        enrolments:
          - id: benefits
            when: "roleCodes eq "BEN_CHOICE_2026""
            course: BEN-2026
        """,
    )
    ruleset, errors = check_directory(rules, catalog, relative_to=rules)
    error = only(errors)
    assert ruleset is None
    assert str(error.mark) == "broken.yaml:6:26"
    assert error.message.startswith("YAML syntax:")
    assert error.text == 'when: "roleCodes eq "BEN_CHOICE_2026""'
    assert "single quotes" in error.hint


def test_unknown_key_suggests_the_right_one(rules: Path, catalog: Catalog) -> None:
    write(rules, "typo.yaml", "enrolmnts: []\n")
    error = only(check(rules, catalog))
    assert str(error.mark) == "typo.yaml:4:12"
    assert error.message == "unknown key 'enrolmnts' in a rule file"
    assert error.hint == "did you mean 'enrolments'?"


def test_invalid_filter_syntax(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "bad-filter.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active eq'
            course: BEN-2026
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "bad-filter.yaml:6:11"
    assert error.message.startswith("invalid SCIM filter")
    assert error.text == "active eq"


def test_unknown_transform(rules: Path, catalog: Catalog) -> None:
    write(
        rules, "transform.yaml", "mapping:\n  username: {from: userName, transforms: [lowercase]}\n"
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "transform.yaml:5:43"
    assert error.message == "unknown transform 'lowercase'"
    assert error.hint == "did you mean 'lower'?"


def test_unknown_transform_lists_the_known_ones(rules: Path, catalog: Catalog) -> None:
    write(rules, "fold.yaml", "mapping:\n  username: {from: userName, transforms: [asci]}\n")
    assert only(check(rules, catalog)).hint == "did you mean 'ascii'?"
    write(rules, "fold.yaml", "mapping:\n  username: {from: userName, transforms: [unidecode]}\n")
    assert only(check(rules, catalog)).hint == (
        "known transforms: ascii, default, join, lower, map, replace, split, template, trim, upper"
    )


def test_wrong_type(rules: Path, catalog: Catalog) -> None:
    write(rules, "pilot.yaml", 'scope:\n  pilot:\n    max_people: "ten"\n')
    error = only(check(rules, catalog))
    assert str(error.mark) == "pilot.yaml:6:17"
    assert error.message.startswith("'max_people' must be a")
    assert "int" in error.message
    assert error.text == "ten"


def test_due_and_access_ends_are_read_as_days(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "dates.yaml",
        """
        enrolments:
          - {id: a, when: 'active eq true', course: A, due: P30D, access_ends: P90D}
          - {id: b, when: 'active eq true', course: B, due: 14, access_ends: P12W}
          - {id: c, when: 'active eq true', course: C, access_ends: 1}
          - {id: d, when: 'active eq true', course: D, due: 0}
        paths:
          - {id: e, when: 'active eq true', path: LP-1, due: P2W, access_ends: P4W2D}
        """,
        target="rest-lms",
    )
    (rules / "targets.yaml").write_text(
        "targets:\n  rest-lms: {kind: rest, base_url: http://lms.example}\n", encoding="utf-8"
    )
    ruleset, errors = check_directory(rules, catalog, relative_to=rules)
    assert errors == [], render_errors(errors)
    assert ruleset is not None
    [rule_file] = ruleset.files
    days = [(a.id, a.due_days, a.access_end_days) for a in rule_file.assignments]
    assert days == [
        ("a", 30, 90),
        ("b", 14, 84),
        ("c", None, 1),
        ("d", 0, None),
        ("e", 14, 30),
    ]


def test_bad_due_and_access_ends(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "dates.yaml",
        """
        enrolments:
          - id: soon
            when: 'active eq true'
            course: A
            access_ends: soon
          - id: at-once
            when: 'active eq true'
            course: B
            access_ends: P0D
          - id: last-year
            when: 'active eq true'
            course: C
            due: -3
            access_ends: 2027-06-30
        cohorts:
          - {id: e, when: 'active eq true', cohort: X, access_ends: P90D}
        """,
    )
    errors = check(rules, catalog)
    assert [(str(e.mark), e.message, e.text) for e in errors] == [
        (
            "dates.yaml:8:18",
            "`access_ends:` is the end of the learner's access: days or an ISO 8601 duration",
            "soon",
        ),
        ("dates.yaml:12:18", "`access_ends:` must be a day or more, not 0", "P0D"),
        ("dates.yaml:16:10", "`due:` must be zero days or more, not -3", "-3"),
        (
            "dates.yaml:17:18",
            "`access_ends:` is the end of the learner's access: days or an ISO 8601 duration",
            "2027-06-30",
        ),
        ("dates.yaml:19:61", "unknown key 'access_ends' in cohort #1", "access_ends"),
    ]
    assert errors[0].hint == "e.g. 30 or P30D or P4W"
    assert errors[1].hint == "e.g. P90D"
    assert errors[4].hint == "allowed keys: id, when, cohort, otherwise"


def test_inline_secret_in_targets(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "targets.yaml").write_text(
        "targets:\n"
        "  moodle:\n"
        "    kind: moodle\n"
        "    base_url: http://127.0.0.1:8100\n"
        "    credentials:\n"
        "      token: abc123\n"
        "    options:\n"
        "      api_key: abc123\n"
    )
    first, second = check(tmp_path, catalog)
    assert str(first.mark) == "targets.yaml:6:14"
    assert first.message == "credential 'token' must name an environment variable"
    assert "env:" in first.hint
    assert str(second.mark) == "targets.yaml:8:16"
    assert second.message == "inline secret in option 'api_key'"
    assert all("abc123" not in e.text for e in (first, second)), "a secret is never echoed"


# --- attributes and filters against the SCIM schemas -------------------------------------------


def test_unknown_attribute_in_a_condition_suggests_the_alias(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "benefits.yaml",
        f"""
        aliases:
          roleCodes: {HR}:roleCodes
        enrolments:
          - id: benefits
            when: 'roleCode eq "BEN_CHOICE_2026"'
            course: BEN-2026
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "benefits.yaml:8:11"
    assert error.message == "unknown attribute 'roleCode' in the condition of enrolment 'benefits'"
    assert error.text == 'roleCode eq "BEN_CHOICE_2026"'
    assert error.hint.startswith(f"did you mean roleCodes (alias of {HR}:roleCodes)?")
    assert "aliases of this file: roleCodes" in error.hint


def test_extension_attribute_without_urn_or_alias(rules: Path, catalog: Catalog) -> None:
    write(rules, "number.yaml", "scope: 'employeeNumber pr'\n")
    error = only(check(rules, catalog))
    assert str(error.mark) == "number.yaml:4:8"
    assert error.message == "unknown attribute 'employeeNumber' in the scope filter"
    assert error.hint == (
        f"employeeNumber belongs to the extension {ENTERPRISE}: write {ENTERPRISE}:employeeNumber,"
        f" or add the alias `employeeNumber: {ENTERPRISE}:employeeNumber` under aliases:"
    )


def test_urn_qualified_attribute_is_checked_case_insensitively(
    rules: Path, catalog: Catalog
) -> None:
    write(
        rules,
        "urn.yaml",
        f"""
        enrolments:
          - id: known
            when: '{HR.upper()}:ROLECODES eq "A"'
            course: A
          - id: unknown
            when: '{HR}:roleCode eq "A"'
            course: B
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "urn.yaml:9:11"
    assert (
        error.message
        == f"unknown attribute '{HR}:roleCode' in the condition of enrolment 'unknown'"
    )
    assert error.hint == f"did you mean {HR}:roleCodes?"


def test_unknown_alias_target_is_reported_once_where_the_alias_is(
    rules: Path, catalog: Catalog
) -> None:
    write(
        rules,
        "alias.yaml",
        f"""
        aliases:
          roleCodes: {HR}:roleCode
        scope: 'roleCodes pr'
        enrolments:
          - id: benefits
            when: 'roleCodes eq "BEN_CHOICE_2026"'
            course: BEN-2026
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "alias.yaml:5:14"
    assert error.message == f"alias 'roleCodes' names an unknown attribute '{HR}:roleCode'"
    assert error.text == f"roleCodes: {HR}:roleCode"
    assert error.hint == f"did you mean {HR}:roleCodes?"


def test_alias_hiding_a_user_attribute(rules: Path, catalog: Catalog) -> None:
    write(rules, "hide.yaml", f"aliases:\n  title: {HR}:jobCode\n")
    error = only(check(rules, catalog))
    assert str(error.mark) == "hide.yaml:5:10"
    assert error.message == "alias 'title' hides the User attribute 'title'"


@pytest.mark.parametrize(
    ("condition", "message", "hint"),
    [
        (
            "active gt true",
            "operator 'gt' cannot be applied to the boolean attribute 'active'",
            "a boolean takes eq, ne or pr: active eq true",
        ),
        (
            'active co "t"',
            "operator 'co' cannot be applied to the boolean attribute 'active'",
            "a boolean takes eq, ne or pr: active eq true",
        ),
        (
            "userName eq 42",
            "value 42 is not valid for attribute 'userName'",
            'quote text: userName eq "…"',
        ),
        (
            'title[value eq "x"]',
            "attribute 'title' is not multi-valued and holds no values to select",
            "[…] selects among the values of a multi-valued attribute: compare title directly",
        ),
        (
            'name eq "Barbara"',
            "complex attribute 'name' compared as a whole",
            "compare one of name.formatted, name.familyName, name.givenName, name.middleName, "
            "name.honorificPrefix, name.honorificSuffix",
        ),
    ],
)
def test_operator_or_value_the_attribute_type_refuses(
    rules: Path, catalog: Catalog, condition: str, message: str, hint: str
) -> None:
    write(
        rules,
        "types.yaml",
        f"""
        enrolments:
          - id: typed
            when: '{condition}'
            course: BEN-2026
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "types.yaml:6:11"
    assert error.message == f"{message} in the condition of enrolment 'typed'"
    assert error.text == condition
    assert error.hint == hint


@pytest.mark.parametrize(
    "condition",
    [
        'emails co "example.com"',
        'emails[type eq "work" and primary eq true]',
        'emails.value ew "@example.com"',
        'meta.lastModified gt "2026-01-01T00:00:00Z"',
        f'{HR}:hireDate ge "2026-01-01T00:00:00Z" and {HR}:benefitsEligible eq true',
        'not (title pr) or userName sw "a"',
        f'{ENTERPRISE}:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d"',
        'groups[display eq "Sales"]',
        'USERNAME eq "bjensen"',
    ],
)
def test_valid_conditions_pass(rules: Path, catalog: Catalog, condition: str) -> None:
    write(rules, "valid.yaml", f"scope: '{condition}'\n")
    assert check(rules, catalog) == []


def test_value_outside_the_canonical_values(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "status.yaml",
        f"""
        aliases:
          employmentStatus: {HR}:employmentStatus
        scope: 'employmentStatus ne "terminatd"'
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "status.yaml:6:8"
    assert error.message == "'terminatd' is not a value of 'employmentStatus' in the scope filter"
    assert error.hint.startswith("did you mean 'terminated'? the schema's canonical values are")


def test_condition_that_can_never_match(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "never.yaml",
        f"""
        aliases:
          employmentStatus: {HR}:employmentStatus
          roleCodes: {HR}:roleCodes
        enrolments:
          - id: impossible
            when: 'employmentStatus eq "active" and employmentStatus eq "leave"'
            course: BEN-2026
          - id: both-codes-is-fine
            when: 'roleCodes eq "A" and roleCodes eq "B"'
            course: BEN-2026-MGR
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "never.yaml:9:11"
    assert error.message == "the condition of enrolment 'impossible' can never match"
    assert error.hint == (
        '`employmentStatus eq "active"` and `employmentStatus eq "leave"` cannot both hold; '
        "did you mean `or`?"
    )


def test_condition_outside_the_scope(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "outside.yaml",
        """
        scope: 'userType eq "Employee"'
        enrolments:
          - id: contractors
            when: 'userType eq "Contractor" and active eq true'
            course: BEN-2026
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "outside.yaml:7:11"
    assert error.message == (
        "the condition of enrolment 'contractors' can never match anyone in the file's scope"
    )
    assert '(the scope is userType eq "Employee")' in error.hint


# --- mappings ----------------------------------------------------------------------------------


def test_mapping_sources(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "mapping.yaml",
        """
        mapping:
          username: {from: userName, transforms: [lower]}
          title: {from: titel}
          email: {from: 'emails[tipe eq "work"].value'}
          firstname: {from: name}
          lastname: 'name.familyName eq "x"'
          auth: {value: , required: true, on: create}
          idnumber: {from: externalId, required: true, transforms: [{default: "-"}]}
        """,
    )
    errors = check(rules, catalog)
    assert [(str(e.mark), e.message) for e in errors] == [
        ("mapping.yaml:6:17", "unknown attribute 'titel' in mapping 'title'"),
        ("mapping.yaml:7:17", "unknown attribute 'emails.tipe' in mapping 'email'"),
        (
            "mapping.yaml:8:21",
            "complex attribute 'name' would reach the LMS as an object in mapping 'firstname'",
        ),
        (
            "mapping.yaml:9:13",
            "'name.familyName eq \"x\"' is not an attribute path in mapping 'lastname'",
        ),
        (
            "mapping.yaml:10:16",
            "mapping 'auth' sets nothing: it has no `from:` and an empty `value:` and, being "
            "required, holds every person back",
        ),
        (
            "mapping.yaml:11:42",
            "mapping 'idnumber' is required, but its `default` transform always supplies a value",
        ),
    ]
    assert errors[0].hint.startswith("did you mean title?")
    assert errors[1].hint.startswith("did you mean emails.type?")
    assert "name.givenName" in errors[2].hint


def test_moodle_usernames_must_be_lowercase(rules: Path, catalog: Catalog) -> None:
    write(rules, "upper.yaml", "mapping:\n  username: {from: userName, transforms: [trim]}\n")
    write(rules, "canvas.yaml", "mapping:\n  username: {from: userName}\n", target="canvas")
    error = only(check(rules, catalog))
    assert str(error.mark) == "upper.yaml:5:13"
    assert error.message.startswith("Moodle usernames must be lowercase")
    assert "lower" in error.hint


def test_mapping_conflict_across_files_of_one_target(rules: Path, catalog: Catalog) -> None:
    write(rules, "a.yaml", "mapping:\n  email: {from: 'emails[type eq \"work\"].value'}\n")
    write(rules, "b.yaml", "mapping:\n  email: {from: userName}\n")
    write(rules, "c.yaml", "mapping:\n  email: {from: userName}\n", target="canvas")
    error = only(check(rules, catalog))
    assert str(error.mark) == "b.yaml:5:10"
    assert error.message == "mapping 'email' differs from the one in a at a.yaml:5:10"
    assert error.text == "from userName"
    assert "target 'moodle'" in error.hint


# --- targets and the LMS catalogue -------------------------------------------------------------


def test_unknown_target(rules: Path, catalog: Catalog) -> None:
    write(rules, "target.yaml", "mapping: {}\n", target="moodel")
    error = only(check(rules, catalog))
    assert str(error.mark) == "target.yaml:3:9"
    assert error.message == "unknown target 'moodel'"
    assert error.hint == "did you mean 'moodle'? targets.yaml defines canvas, moodle"


def test_target_kind_without_cohorts(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "canvas.yaml",
        """
        cohorts:
          - id: benefits-cohort
            when: 'active eq true'
            cohort: BEN2026
        """,
        target="canvas",
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "canvas.yaml:7:13"
    assert error.message == "target 'canvas' is a canvas LMS, which has no cohorts"


def test_unknown_course_with_a_catalogue(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "courses.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active eq true'
            course: BEN-2062
        cohorts:
          - id: benefits-cohort
            when: 'active eq true'
            cohort: BEN2026
        """,
    )
    assert check(rules, catalog) == [], "refs are only checked against a catalogue"
    lms = load_lms_catalogue(FIXTURES / "lms-catalogue.yaml")
    error = only(check(rules, catalog, lms))
    assert str(error.mark) == "courses.yaml:7:13"
    assert error.message == "unknown course 'BEN-2062': not in the LMS catalogue"
    assert error.text == "BEN-2062"
    assert error.hint == "did you mean 'BEN-2026'?"


# --- rules against each other ------------------------------------------------------------------


def test_duplicate_ids_within_a_file_and_across_files_of_a_target(
    rules: Path, catalog: Catalog
) -> None:
    write(
        rules,
        "a.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active eq true'
            course: BEN-2026
        cohorts:
          - id: benefits
            when: 'active eq true'
            cohort: BEN2026
        """,
    )
    write(
        rules,
        "b.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active eq true'
            course: OTHER
        """,
    )
    write(
        rules,
        "c.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active eq true'
            course: OTHER
        """,
        target="canvas",
    )
    errors = check(rules, catalog)
    assert [(str(e.mark), e.message) for e in errors] == [
        ("a.yaml:9:9", "duplicate id 'benefits': also the id of the enrolment at a.yaml:5:5"),
        ("b.yaml:5:9", "duplicate id 'benefits': also the id of the enrolment at a.yaml:5:5"),
    ]
    assert errors[1].hint == "rule ids are unique across the rule files of target 'moodle'"


def test_duplicate_rule_file_names(rules: Path, catalog: Catalog) -> None:
    write(rules, "a.yaml", "mapping: {}\n")
    (rules / "b.yaml").write_text("version: 1\nname: a\ntarget: moodle\n")
    error = only(check(rules, catalog))
    assert str(error.mark) == "b.yaml:2:7"
    assert error.message == "rule file name 'a' is also used by a.yaml"


def test_shadowed_rules(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "shadow.yaml",
        f"""
        aliases:
          roleCodes: {HR}:roleCodes
        enrolments:
          - id: benefits
            when: 'roleCodes eq "BEN_CHOICE_2026"'
            course: BEN-2026
          - id: benefits-again
            when: 'ROLECODES eq "BEN_CHOICE_2026"'
            course: BEN-2026
          - id: benefits-managers
            when: 'roleCodes eq "MANAGER" and roleCodes eq "BEN_CHOICE_2026"'
            course: BEN-2026
          - id: managers-elsewhere
            when: 'roleCodes eq "MANAGER" and roleCodes eq "BEN_CHOICE_2026"'
            course: BEN-2026-MGR
        cohorts:
          - id: same-condition-other-kind
            when: 'roleCodes eq "BEN_CHOICE_2026"'
            cohort: BEN-2026
        """,
    )
    errors = check(rules, catalog)
    assert [(str(e.mark), e.message) for e in errors] == [
        (
            "shadow.yaml:11:11",
            "enrolment 'benefits-again' is shadowed by 'benefits' at shadow.yaml:7:5",
        ),
        (
            "shadow.yaml:14:11",
            "enrolment 'benefits-managers' is shadowed by 'benefits' at shadow.yaml:7:5",
        ),
    ]
    assert errors[0].text == 'ROLECODES eq "BEN_CHOICE_2026"', "shown as written"
    assert errors[0].hint.startswith("its condition is the same")
    assert errors[1].hint.startswith("everyone its condition matches is matched by the earlier")
    assert "never adds anything" in errors[1].hint


def test_conflicting_rules(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "conflict.yaml",
        """
        enrolments:
          - id: staff
            when: 'userType eq "Employee"'
            course: BEN-2026
            due: P30D
          - id: trainers
            when: 'title eq "Trainer"'
            course: BEN-2026
            role: teacher
            otherwise: keep
            due: P30D
          - id: assistants  # the settings of staff, and nobody is both a trainer and an assistant
            when: 'title eq "Assistant"'
            course: BEN-2026
            due: 30
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "conflict.yaml:11:13"
    assert error.message == (
        "enrolment 'trainers' conflicts with 'staff' at conflict.yaml:5:5: same course BEN-2026, "
        "different role (teacher vs student), otherwise (keep vs suspend)"
    )
    assert error.text == "course: BEN-2026"
    assert "merge them with `or`" in error.hint


def test_conflicting_rules_across_files_unless_their_scopes_are_disjoint(
    rules: Path, catalog: Catalog
) -> None:
    def enrol(scope: str, rule_id: str, days: int) -> str:
        return f"""
        scope: '{scope}'
        enrolments:
          - id: {rule_id}
            when: 'active eq true'
            course: BEN-2026
            due: {days}
        """

    write(rules, "a.yaml", enrol('userType eq "Employee"', "employees", 10))
    write(rules, "b.yaml", enrol('userType eq "Contractor"', "contractors", 30))
    assert check(rules, catalog) == [], "nobody is in both scopes"
    write(rules, "c.yaml", enrol('title eq "Trainer"', "trainers", 10))
    error = only(check(rules, catalog))
    assert str(error.mark) == "c.yaml:8:13"
    assert error.message == (
        "enrolment 'trainers' conflicts with 'contractors' at b.yaml:6:5: same course BEN-2026, "
        "different due (10 days vs 30 days)"
    )
    assert error.hint.startswith("both c and b drive it on target 'moodle'")


def test_access_that_ends_before_the_due_date_is_a_warning(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "early.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active eq true'
            course: BEN-2026
            due: P30D
            access_ends: P2W
          - id: onboarding
            when: 'active eq true'
            course: ONBOARD-101
            due: P30D
            access_ends: P30D
        """,
    )
    assert check(rules, catalog) == [], "a warning: the rules still load"
    _, found = check_directory(rules, catalog, relative_to=rules, with_warnings=True)
    warning = only(found)
    assert warning.is_warning
    assert str(warning.mark) == "early.yaml:9:18"
    assert warning.message == (
        "enrolment 'benefits' ends access after 14 days, before its due date (30 days)"
    )
    assert warning.text == "P2W"
    assert "make access_ends later than due" in warning.hint


def test_conflicting_access_ends(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "ends.yaml",
        """
        enrolments:
          - {id: staff, when: 'userType eq "Employee"', course: BEN-2026, access_ends: P90D}
          - {id: trainers, when: 'title eq "Trainer"', course: BEN-2026}
        """,
    )
    error = only(check(rules, catalog))
    assert str(error.mark) == "ends.yaml:6:56"
    assert error.message == (
        "enrolment 'trainers' conflicts with 'staff' at ends.yaml:5:5: same course BEN-2026, "
        "different access_ends (none vs 90 days)"
    )


# --- everything at once, rendering -------------------------------------------------------------


def test_every_problem_is_reported_at_once(rules: Path, catalog: Catalog) -> None:
    """A YAML typo in one file hides neither the other files' problems nor their semantics."""
    write(rules, "a-broken.yaml", "enrolments: [\n")
    write(rules, "b-structure.yaml", "enrolmnts: []\n")
    write(
        rules,
        "c-semantic.yaml",
        """
        enrolments:
          - id: x
            when: 'active gt true'
            course: A
          - id: x
            when: 'roleCode pr'
            course: B
        """,
        target="moodel",
    )
    ruleset, errors = check_directory(rules, catalog, relative_to=rules)
    assert ruleset is None
    assert [(str(e.mark), e.message.split(":")[0]) for e in errors] == [
        ("a-broken.yaml:5:1", "YAML syntax"),
        ("b-structure.yaml:4:12", "unknown key 'enrolmnts' in a rule file"),
        ("c-semantic.yaml:3:9", "unknown target 'moodel'"),
        (
            "c-semantic.yaml:6:11",
            "operator 'gt' cannot be applied to the boolean attribute 'active' in the "
            "condition of enrolment 'x'",
        ),
        ("c-semantic.yaml:8:9", "duplicate id 'x'"),
        ("c-semantic.yaml:9:11", "unknown attribute 'roleCode' in the condition of enrolment 'x'"),
    ]
    rendered = render_errors(errors)
    assert rendered.startswith("a-broken.yaml:5:1: YAML syntax: ")
    assert rendered.endswith("\n6 problem(s) in 3 file(s)")
    assert [e["line"] for e in errors_as_json(errors)] == [5, 4, 3, 6, 8, 9]


def test_a_broken_targets_file_does_not_make_every_target_unknown(
    tmp_path: Path, catalog: Catalog
) -> None:
    (tmp_path / "targets.yaml").write_text("targets:\n  moodle:\n    kind: moodle\n")
    write(tmp_path, "a.yaml", "mapping: {}\n")
    error = only(check(tmp_path, catalog))
    assert error.message == "target 'moodle' needs 'base_url'"


def test_check_ruleset_is_pure_and_points_at_the_element(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "pure.yaml",
        """
        enrolments:
          - id: benefits
            when: 'active gt true'
            course: BEN-2026
        """,
    )
    ruleset = load_ruleset(rules, relative_to=rules)
    error = only(check_ruleset(ruleset, catalog))
    assert str(error.mark) == "pure.yaml:5:5", "the assignment; check_directory narrows to `when`"


def test_render_errors_and_json() -> None:
    from bridge.rules.model import Mark

    errors = [
        RuleError(Mark("a.yaml", 3, 9), "unknown target 'moodel'", text="moodel", hint="did you"),
        RuleError(Mark("b.yaml", 1, 1), "the file is empty"),
    ]
    assert render_errors(errors) == (
        "a.yaml:3:9: unknown target 'moodel'\n"
        "    moodel\n"
        "  hint: did you\n"
        "b.yaml:1:1: the file is empty\n"
        "2 problem(s) in 2 file(s)"
    )
    assert errors_as_json(errors)[0] == {
        "file": "a.yaml",
        "line": 3,
        "column": 9,
        "message": "unknown target 'moodel'",
        "text": "moodel",
        "hint": "did you",
        "severity": "error",
    }
    json.dumps(errors_as_json(errors))


# --- the LMS catalogue file --------------------------------------------------------------------


def test_lms_catalogue_yaml_and_json() -> None:
    from_yaml = load_lms_catalogue(FIXTURES / "lms-catalogue.yaml")
    assert from_yaml.courses == {"BEN-2026", "BEN-2026-MGR", "ONBOARD-101", "onboarding"}
    assert from_yaml.cohorts == {"BEN2026"}
    assert from_yaml.paths == frozenset()
    from_json = load_lms_catalogue(FIXTURES / "lms-catalogue.json")
    assert from_json.courses == {"BEN-2026", "BEN-2026-MGR"}


def test_bad_lms_catalogue(tmp_path: Path) -> None:
    bad_json = tmp_path / "lms.json"
    bad_json.write_text('{\n  "courses": ["A",]\n}\n')
    with pytest.raises(RuleErrors) as caught:
        load_lms_catalogue(bad_json)
    (error,) = caught.value.errors
    assert str(error.mark) == f"{bad_json}:2:19"
    assert error.message.startswith("JSON syntax:")

    bad_yaml = tmp_path / "lms.yaml"
    bad_yaml.write_text("course: [A]\ncohorts: A\npaths:\n  - [x]\n")
    with pytest.raises(RuleErrors) as caught:
        load_lms_catalogue(bad_yaml)
    assert [(str(e.mark), e.message) for e in caught.value.errors] == [
        (f"{bad_yaml}:1:1", "unknown key 'course' in the LMS catalogue"),
        (f"{bad_yaml}:2:10", "'cohorts' must be a list"),
        (f"{bad_yaml}:4:5", "an entry of 'paths' must be an idnumber or shortname"),
    ]
    assert caught.value.errors[0].hint == "did you mean 'courses'?"


# --- role codes: the declared catalogue and the codes people hold ------------------------------

CODES = "role_codes: [BEN_CHOICE_2026, MANAGER, EMPLOYEE]\n"


def declare(directory: Path, body: str) -> None:
    (directory / "role-codes.yaml").write_text(textwrap.dedent(body).lstrip("\n"))


def test_role_codes_are_declared_in_role_codes_yaml_and_in_rule_files(rules: Path) -> None:
    declare(
        rules,
        """
        role_codes:
          - BEN_CHOICE_2026
          - {code: MANAGER, note: "people managers: the manager module"}
        """,
    )
    write(rules, "a.yaml", "role_codes: [EMPLOYEE]\n")
    ruleset = load_ruleset(rules, relative_to=rules)
    assert ruleset.role_codes == {"BEN_CHOICE_2026", "MANAGER", "EMPLOYEE"}
    assert [f.name for f in ruleset.files] == ["a"], "role-codes.yaml is not a rule file"
    declare(rules, CODES)  # the catalogue is part of the rules: a new version
    assert load_ruleset(rules, relative_to=rules).version != ruleset.version


def test_a_malformed_catalogue_points_at_file_line_col(rules: Path, catalog: Catalog) -> None:
    declare(
        rules,
        """
        role_codes:
          - BEN_CHOICE_2026
          - 2026
          - {code: MANAGER, notes: x}
          - {note: no code}
          - " EMPLOYEE"
          - BEN_CHOICE_2026
        """,
    )
    write(rules, "a.yaml", "role_codes: MANAGER\n")
    ruleset, errors = check_directory(rules, catalog, relative_to=rules, with_warnings=True)
    assert ruleset is None
    assert [(str(e.mark), e.message, e.severity.value) for e in errors] == [
        ("a.yaml:4:13", "role_codes must be a list of role codes", "error"),
        ("role-codes.yaml:3:5", "a role code is text", "error"),
        ("role-codes.yaml:4:28", "unknown key 'notes' in a role code", "error"),
        ("role-codes.yaml:5:5", "a role code needs `code:`", "error"),
        ("role-codes.yaml:6:5", "role code ' EMPLOYEE' is empty or has spaces around it", "error"),
        (
            "role-codes.yaml:7:5",
            "role code BEN_CHOICE_2026 is declared twice (also at role-codes.yaml:2:5)",
            "warning",
        ),
    ]
    assert errors[1].hint == 'quote it: `- "2026"`'


def test_a_code_declared_twice_is_only_a_warning(rules: Path, catalog: Catalog) -> None:
    declare(rules, CODES)
    write(rules, "a.yaml", "role_codes: [MANAGER]\n")
    ruleset, errors = check_directory(rules, catalog, relative_to=rules, with_warnings=True)
    assert ruleset is not None and ruleset.role_codes == {"BEN_CHOICE_2026", "MANAGER", "EMPLOYEE"}
    warning = only(errors)
    assert (str(warning.mark), warning.message) == (
        "role-codes.yaml:1:31",
        "role code MANAGER is declared twice (also at a.yaml:4:14)",
    )
    assert check(rules, catalog) == []


def test_role_codes_yaml_declares_role_codes_only(rules: Path, catalog: Catalog) -> None:
    declare(rules, "role_codez: [MANAGER]\n")
    error = only(check(rules, catalog))
    assert (str(error.mark), error.message) == (
        "role-codes.yaml:1:1",
        "role-codes.yaml declares role codes: it needs a `role_codes:` list",
    )


CONDITIONS = f"""
aliases:
  roleCodes: {HR}:roleCodes
scope: 'roleCodes eq "EMPLOYE"'
enrolments:
  - id: benefits
    when: 'roleCodes eq "BEN_CHOCE_2026"'
    course: BEN-2026
  - id: managers
    when: 'roleCodes eq "MANAGR" and not (roleCodes ne "BEN_CHOICE_2026")'
    course: BEN-2026-MGR
  - id: any-benefits
    when: 'roleCodes sw "BEN_CHOICE_"'
    course: BEN-ANY
"""


def test_a_role_code_nobody_declared_or_holds_is_an_error_with_the_code_it_means(
    rules: Path, catalog: Catalog
) -> None:
    declare(rules, CODES)
    write(rules, "codes.yaml", CONDITIONS)
    errors = check(rules, catalog)
    assert [(str(e.mark), e.message) for e in errors] == [
        (
            "codes.yaml:6:8",
            "unknown role code EMPLOYE in the scope filter: did you mean EMPLOYEE?",
        ),
        (
            "codes.yaml:9:11",
            "unknown role code BEN_CHOCE_2026 in the condition of enrolment 'benefits': "
            "did you mean BEN_CHOICE_2026?",
        ),
        (
            "codes.yaml:12:11",
            "unknown role code MANAGR in the condition of enrolment 'managers': "
            "did you mean MANAGER?",
        ),
    ]
    assert errors[1].text == 'roleCodes eq "BEN_CHOCE_2026"', "as the file spells it"
    assert "known: the 3 declared in role_codes" in errors[1].hint
    assert "declare it in role-codes.yaml" in errors[1].hint


def test_codes_held_by_people_stored_are_real_ones(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "codes.yaml",
        f"""
        aliases:
          roleCodes: {HR}:roleCodes
        enrolments:
          - {{id: hyphens, when: 'roleCodes eq "BEN-CHOICE-2026"', course: A}}
          - {{id: underscores, when: 'roleCodes eq "BEN_CHOICE_2026"', course: B}}
          - {{id: managers, when: 'roleCodes eq "MANAGER"', course: C}}
        """,
    )
    held = frozenset({"BEN-CHOICE-2026", "EMPLOYEE"})
    _, errors = check_directory(rules, catalog, relative_to=rules, held_role_codes=held)
    assert [(str(e.mark), e.message) for e in errors] == [
        (
            "codes.yaml:8:29",
            "unknown role code BEN_CHOICE_2026 in the condition of enrolment 'underscores': "
            "did you mean BEN-CHOICE-2026?",
        ),
        ("codes.yaml:9:26", "unknown role code MANAGER in the condition of enrolment 'managers'"),
    ]
    assert "known: the 2 held by people stored" in errors[1].hint
    declare(rules, "role_codes: [MANAGER]\n")  # the catalogue and the people together
    _, errors = check_directory(rules, catalog, relative_to=rules, held_role_codes=held)
    assert [e.message for e in errors] == [
        "unknown role code BEN_CHOICE_2026 in the condition of enrolment 'underscores': "
        "did you mean BEN-CHOICE-2026?"
    ]
    assert "known: the 1 declared in role_codes and the 2 held by people stored" in errors[0].hint


def test_with_neither_a_catalogue_nor_people_the_check_cannot_tell(
    rules: Path, catalog: Catalog
) -> None:
    write(rules, "codes.yaml", CONDITIONS)
    assert check(rules, catalog) == [], "warnings only: the rules load"
    _, warnings = check_directory(rules, catalog, relative_to=rules, with_warnings=True)
    assert [(str(w.mark), w.message, w.severity.value) for w in warnings] == [
        (
            "codes.yaml:6:8",
            "cannot tell whether EMPLOYE in the scope filter is a real role code: "
            "declare role_codes",
            "warning",
        ),
        (
            "codes.yaml:9:11",
            "cannot tell whether BEN_CHOCE_2026 in the condition of enrolment 'benefits' is a "
            "real role code: declare role_codes",
            "warning",
        ),
        (
            "codes.yaml:12:11",
            "cannot tell whether MANAGR in the condition of enrolment 'managers' is a real role "
            "code: declare role_codes",
            "warning",
        ),
        (
            "codes.yaml:12:11",
            "cannot tell whether BEN_CHOICE_2026 in the condition of enrolment 'managers' is a "
            "real role code: declare role_codes",
            "warning",
        ),
    ]
    assert "role-codes.yaml" in warnings[0].hint and "BRIDGE_DATABASE_URL" in warnings[0].hint


def test_a_rule_book_loads_what_rules_check_judges_with_the_data(
    rules: Path, catalog: Catalog
) -> None:
    # serve, relay and plan load rules without reading who holds which code: they leave the
    # role codes to `bridge rules check`, rather than refuse a code only the people stored hold.
    from bridge.cli.rules import check_rules

    declare(rules, CODES)
    write(rules, "codes.yaml", CONDITIONS)
    ruleset, errors = check_rules(rules, catalog)
    assert ruleset is not None and errors == []
    ruleset, errors = check_rules(rules, catalog, role_codes=True)
    assert ruleset is None
    assert [e.message.split(" in ")[0] for e in errors] == [
        "unknown role code EMPLOYE",
        "unknown role code BEN_CHOCE_2026",
        "unknown role code MANAGR",
    ]


def test_the_shipped_catalogue_declares_the_sample_codes_not_its_misspellings() -> None:
    from bridge.demo.sample import BENEFITS
    from bridge.demo.sample import MANAGER
    from bridge.demo.sample import NON_STANDARD

    codes = load_ruleset(ROOT / "rules", relative_to=ROOT).role_codes
    assert {BENEFITS, MANAGER, "EMPLOYEE"} <= codes
    assert not codes & set(NON_STANDARD)


# --- mapping keys: the fields of the target kind ------------------------------------------------


def test_canvas_takes_the_fields_its_profile_reads(rules: Path, catalog: Catalog) -> None:
    write(
        rules,
        "canvas.yaml",
        """
        mapping:
          idnumber: {from: externalId}
          name: {from: displayName}
          sis_user_id: {from: externalId}
          title: {from: title}
        """,
        target="canvas",
    )
    errors = check(rules, catalog)
    assert [(str(e.mark), e.message) for e in errors] == [
        ("canvas.yaml:7:16", "canvas has no user field sis_user_id: did you mean idnumber?"),
        ("canvas.yaml:8:10", "canvas has no user field title"),
    ]
    assert "nothing would be sent" in errors[1].hint


def test_rest_and_scim_targets_template_any_attribute(tmp_path: Path, catalog: Catalog) -> None:
    shutil.copytree(ROOT / "rules" / "examples" / "docebo", tmp_path / "docebo")
    mapping = "mapping:\n  firstName: {from: name.givenName}\n"
    write(tmp_path / "docebo", "extra.yaml", mapping, target="docebo")
    assert check(tmp_path / "docebo", catalog) == []


def test_the_target_adapters_take_the_fields_the_checker_knows() -> None:
    from bridge.rules.target_fields import CANVAS_USER_FIELDS
    from bridge.rules.target_fields import MOODLE_USER_FIELDS
    from bridge.targets.canvas_api import CANVAS_KEYS
    from bridge.targets.moodle_ws import USER_FIELDS

    assert USER_FIELDS is MOODLE_USER_FIELDS
    assert CANVAS_KEYS == CANVAS_USER_FIELDS
