"""``bridge rules test``: fixture files — given a person, expect these LMS calls.

A fixture file sits next to the rule file it tests, as ``rules/<name>.test.yaml`` (the
loader skips ``*.test.yaml``). Each test runs the real pipeline on one person, without a
database: the person's SCIM JSON is validated into the User model, every condition is
evaluated with ``ScimFilter.match`` (``bridge.rules.verdicts``, as the server does), then
``engine.desired_state`` and ``engine.diff`` against the prior LMS state the test gives.

The file format and its parsing are :mod:`bridge.rules.fixture_file` (re-exported here); this
module runs the tests, counts rule coverage and renders the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import desired_state
from bridge.rules.engine import diff
from bridge.rules.fixture_file import FIXTURE_SUFFIX
from bridge.rules.fixture_file import INTENT_KEYS
from bridge.rules.fixture_file import MERGE_KEY
from bridge.rules.fixture_file import Expectation
from bridge.rules.fixture_file import ExpectedIntent
from bridge.rules.fixture_file import Fixture
from bridge.rules.fixture_file import _compact
from bridge.rules.fixture_file import _rule_names
from bridge.rules.fixture_file import fixture_files
from bridge.rules.fixture_file import parse_fixture_file
from bridge.rules.loader import read_yaml
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.verdicts import ConditionProblem
from bridge.rules.verdicts import evaluate
from bridge.rules.verdicts import person_model
from bridge.schemas import Catalog

__all__ = [
    "CaseResult",
    "CoverageItem",
    "Expectation",
    "ExpectedIntent",
    "FIXTURE_SUFFIX",
    "Fixture",
    "FixtureReport",
    "INTENT_KEYS",
    "MERGE_KEY",
    "describe_intent",
    "fixture_files",
    "parse_fixture_file",
    "render_report",
    "rule_mark",
    "run_fixtures",
]


# ---------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one test."""

    name: str
    mark: Mark
    rule_file: str
    passed: bool
    reasons: tuple[str, ...] = ()
    intents: tuple[Intent, ...] = ()
    problems: tuple[str, ...] = ()
    in_scope: bool = False

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def where(self) -> str:
        return f"{self.mark.file}:{self.mark.line}"


@dataclass(frozen=True)
class CoverageItem:
    """An assignment or a mapping attribute, and whether any test exercised it."""

    rule_file: str
    kind: str  # "assignment" | "mapping"
    name: str
    mark: Mark
    exercised: bool

    @property
    def label(self) -> str:
        return self.name if self.kind == "assignment" else f"mapping {self.name}"


@dataclass
class FixtureReport:
    """Every test's outcome and the rule coverage of a ``bridge rules test`` run."""

    results: list[CaseResult]
    coverage: list[CoverageItem]
    ruleset: RuleSet
    files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def exercised(self) -> int:
        return sum(1 for item in self.coverage if item.exercised)

    @property
    def coverage_percent(self) -> float:
        """Exercised rules over all rules, in percent (100 when there are none)."""
        if not self.coverage:
            return 100.0
        return 100.0 * self.exercised / len(self.coverage)

    @property
    def never_exercised(self) -> list[CoverageItem]:
        return [item for item in self.coverage if not item.exercised]

    def ok(self, coverage_threshold: float | None = None) -> bool:
        """No test failed and, given a threshold in percent (0–100), coverage reaches it."""
        if self.failed:
            return False
        return coverage_threshold is None or self.coverage_percent >= coverage_threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "passed": self.passed,
            "failed": self.failed,
            "tests": [
                {
                    "name": r.name,
                    "where": r.where,
                    "rule_file": r.rule_file,
                    "status": r.status,
                    "reasons": list(r.reasons),
                    "intents": [i.as_dict() for i in r.intents],
                    "problems": list(r.problems),
                    "in_scope": r.in_scope,
                }
                for r in self.results
            ],
            "coverage": {
                "exercised": self.exercised,
                "total": len(self.coverage),
                "percent": round(self.coverage_percent, 1),
                "never_exercised": [
                    {"rule_file": i.rule_file, "rule": i.label, "where": str(i.mark)}
                    for i in self.never_exercised
                ],
            },
        }


def rule_mark(rule_file: RuleFile, intent: Intent) -> Mark:
    """Where the rule behind an intent is written."""
    for assignment in rule_file.assignments:
        if assignment.id == intent.rule:
            return assignment.mark
    if intent.kind == IntentKind.suspend_account and intent.data.get("reason") == "out of scope":
        return rule_file.scope.mark
    if intent.kind == IntentKind.upsert_account:
        sent = intent.data.get("attributes", {})
        for mapping in rule_file.mapping:
            if mapping.attribute in sent:
                return mapping.mark
    return rule_file.mark


def describe_intent(rule_file: RuleFile, intent: Intent, *, data: bool = True) -> str:
    """``enrol BEN-2026  [benefits-2026-course at rules/benefits-2026.yaml:34:5]``."""
    text = intent.kind.value + (f" {intent.ref}" if intent.ref is not None else "")
    if intent.rule in _rule_names(rule_file):
        text += f"  [{intent.rule} at {rule_mark(rule_file, intent)}]"
    else:  # projected by a rule since deleted (or given in the fixture's lms state)
        text += f"  [{intent.rule}: no such rule in {rule_file.path}]"
    if data and intent.data:
        text += f" {_compact(intent.data)}"
    return text


def _describe_expected(rule_file: RuleFile, expected: ExpectedIntent) -> str:
    text = str(expected)
    rule = expected.fields.get("rule")
    ref = expected.fields.get("ref")
    behind = next(
        (
            a
            for a in rule_file.assignments
            if (rule is not None and a.id == rule)
            or (rule is None and ref is not None and a.ref == ref)
        ),
        None,
    )
    if behind is not None:
        text += f"  [{behind.id} at {behind.mark}]"
    return text + f"  (expected at {expected.mark.file}:{expected.mark.line})"


def _check_intents(rule_file: RuleFile, expect: Expectation, intents: list[Intent]) -> list[str]:
    reasons: list[str] = []

    def actual_lines() -> list[str]:
        if not intents:
            return ["    (none)"]
        return [f"    {n}. {describe_intent(rule_file, i)}" for n, i in enumerate(intents, 1)]

    if expect.intents is not None:
        expected = list(expect.intents)
        in_order = len(expected) == len(intents) and all(
            e.matches(i) for e, i in zip(expected, intents, strict=True)
        )
        if not in_order:
            lines = ["intents differ", "  expected:"]
            lines += [f"    {n}. {e}" for n, e in enumerate(expected, 1)] or ["    (none)"]
            lines += ["  actual:", *actual_lines()]
            missing = [e for e in expected if not any(e.matches(i) for i in intents)]
            unexpected = [i for i in intents if not any(e.matches(i) for e in expected)]
            lines += [f"  missing: {_describe_expected(rule_file, e)}" for e in missing]
            lines += [
                f"  unexpected: {describe_intent(rule_file, i, data=False)}" for i in unexpected
            ]
            if not missing and not unexpected:
                lines.append("  (the same intents, in another order or number)")
            reasons.append("\n".join(lines))
    missing = [e for e in expect.includes if not any(e.matches(i) for i in intents)]
    if missing:
        lines = [f"missing: {_describe_expected(rule_file, e)}" for e in missing]
        reasons.append("\n".join([*lines, "  actual:", *actual_lines()]))
    for excluded in expect.excludes:
        for intent in intents:
            if excluded.matches(intent):
                reasons.append(
                    f"unexpected: {describe_intent(rule_file, intent)}"
                    f"  (excluded by {excluded} at {excluded.mark.file}:{excluded.mark.line})"
                )
    return reasons


def _check_problems(expect: Expectation, problems: list[str]) -> list[str]:
    if expect.problems is None:
        return []
    shown = "; ".join(problems) if problems else "(none)"
    if not expect.problems and problems:
        return [f"expected no problems, got: {shown}"]
    return [
        f"expected a problem containing {text!r}, got: {shown}"
        for text in expect.problems
        if not any(text in problem for problem in problems)
    ]


@dataclass
class _Exercised:
    assignments: set[tuple[str, str]] = field(default_factory=set)
    mappings: set[tuple[str, str]] = field(default_factory=set)


def _run_one(fixture: Fixture, catalog: Catalog, seen: _Exercised) -> CaseResult:
    rule_file, expect = fixture.rule_file, fixture.expect
    try:
        model = person_model(catalog, fixture.user)
        condition_problems: list[ConditionProblem] = []
        verdicts = evaluate(rule_file, model, catalog.user, problems=condition_problems)
        desired = desired_state(
            fixture.person_id, fixture.user, rule_file, verdicts, admitted=fixture.admitted
        )
        intents, projection = diff(fixture.person_id, desired, fixture.projected, rule_file)
        again = (
            diff(fixture.person_id, desired, projection, rule_file)[0] if expect.idempotent else []
        )
    except Exception as exc:  # a crash is this test's failure, not the run's
        return CaseResult(
            fixture.name,
            fixture.mark,
            rule_file.name,
            passed=False,
            reasons=(f"the engine raised {type(exc).__name__}: {exc}",),
        )
    problems = [p.reason for p in desired.problems] + [str(p) for p in condition_problems]
    name = rule_file.name
    seen.assignments.update((name, a.id) for a in desired.assignments.values())
    seen.assignments.update((name, i.rule) for i in intents)
    for intent in intents:
        if intent.kind == IntentKind.upsert_account:
            seen.mappings.update((name, a) for a in intent.data.get("attributes", {}))
    for mapping in rule_file.mapping:
        attribute = mapping.attribute
        if any(
            p.startswith(f"{attribute}:") or p.startswith(f"missing required {attribute} ")
            for p in problems
        ):
            seen.mappings.add((name, attribute))
    reasons = _check_intents(rule_file, expect, intents)
    if expect.in_scope is not None and expect.in_scope != desired.in_scope:
        reasons.append(
            f"expected in_scope: {str(expect.in_scope).lower()}, "
            f"got {str(desired.in_scope).lower()}  (scope at {rule_file.scope.mark})"
        )
    reasons += _check_problems(expect, problems)
    if again:
        lines = [f"    {describe_intent(rule_file, i)}" for i in again]
        reasons.append("\n".join(["not idempotent: running again gives", *lines]))
    return CaseResult(
        fixture.name,
        fixture.mark,
        name,
        passed=not reasons,
        reasons=tuple(reasons),
        intents=tuple(intents),
        problems=tuple(problems),
        in_scope=desired.in_scope,
    )


def _display(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def run_fixtures(
    ruleset: RuleSet, catalog: Catalog, files: list[Path], *, relative_to: Path | None = None
) -> FixtureReport:
    """Run every test of ``files``; ``RuleErrors`` (file:line:col) if any file is malformed.

    Every file is read and checked before any test runs, so a broken file reports all its
    problems (and those of the other files) at once.
    """
    base = relative_to or Path.cwd()
    errors: list[RuleError] = []
    fixtures: list[Fixture] = []
    displays: list[str] = []
    for path in files:
        display = _display(path, base)
        displays.append(display)
        root = read_yaml(path, display, errors)
        if root is not None:
            fixtures.extend(parse_fixture_file(root, ruleset, catalog, errors))
    if errors:
        raise RuleErrors(sorted(errors, key=lambda e: e.mark))
    seen = _Exercised()
    results = [_run_one(fixture, catalog, seen) for fixture in fixtures]
    coverage: list[CoverageItem] = []
    for rule_file in ruleset.files:
        coverage.extend(
            CoverageItem(
                rule_file.name,
                "assignment",
                a.id,
                a.mark,
                (rule_file.name, a.id) in seen.assignments,
            )
            for a in rule_file.assignments
        )
        coverage.extend(
            CoverageItem(
                rule_file.name,
                "mapping",
                m.attribute,
                m.mark,
                (rule_file.name, m.attribute) in seen.mappings,
            )
            for m in rule_file.mapping
        )
    return FixtureReport(results, coverage, ruleset, displays)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def render_report(report: FixtureReport, verbose: bool = False) -> str:
    """PASS/FAIL per test (with why), a summary, and the coverage line."""
    lines: list[str] = []
    files = {f.name: f for f in report.ruleset.files}
    for result in report.results:
        lines.append(f"{result.status}  {result.name}  ({result.where})")
        rule_file = files.get(result.rule_file)
        if not result.passed:
            lines.extend(_indent(reason, "      ") for reason in result.reasons)
        elif verbose and rule_file is not None:
            if result.intents:
                lines.extend(
                    f"      {describe_intent(rule_file, intent)}" for intent in result.intents
                )
            else:
                scope = "in scope" if result.in_scope else "out of scope"
                lines.append(f"      (no intents; {scope})")
            lines.extend(f"      problem: {problem}" for problem in result.problems)
    total = len(report.results)
    lines.append(
        f"{report.passed} passed, {report.failed} failed "
        f"({total} test{'s' if total != 1 else ''} in {len(report.files)} "
        f"file{'s' if len(report.files) != 1 else ''})"
    )
    coverage = (
        f"coverage: {report.exercised}/{len(report.coverage)} rules "
        f"({math.floor(report.coverage_percent)}%)"
    )
    never = report.never_exercised
    if never:
        coverage += " — never exercised: " + ", ".join(
            f"{item.label} at {item.mark}" for item in never
        )
    lines.append(coverage)
    return "\n".join(lines)
