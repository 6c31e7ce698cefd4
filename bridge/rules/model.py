"""The rule language as plain data: rule files, targets, and what the engine produces.

Everything here is immutable and free of I/O; the loader builds it from YAML, the engine
reads it. Each element keeps the ``Mark`` (file:line:col) it came from, for errors and
``bridge explain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import date
from datetime import timedelta
from enum import StrEnum
from typing import Any

from bridge.schedule import Schedule


@dataclass(frozen=True, order=True)
class Mark:
    """Where something was written: 1-based line and column."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class Severity(StrEnum):
    """An error stops a rule set from loading; a warning is shown by ``bridge rules check``
    (a value the LMS may refuse, a plugin a stock site lacks) and loads."""

    error = "error"
    warning = "warning"


class RuleError(Exception):
    """A problem in a rule file, with where it is, the offending text and a hint."""

    def __init__(
        self,
        mark: Mark,
        message: str,
        *,
        text: str = "",
        hint: str = "",
        severity: Severity = Severity.error,
    ) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.text = text
        self.hint = hint
        self.severity = severity

    @property
    def is_warning(self) -> bool:
        return self.severity == Severity.warning

    def __str__(self) -> str:
        label = "warning: " if self.is_warning else ""
        lines = [f"{self.mark}: {label}{self.message}"]
        if self.text:
            lines.append(f"    {self.text}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.mark.file,
            "line": self.mark.line,
            "column": self.mark.column,
            "message": self.message,
            "text": self.text,
            "hint": self.hint,
            "severity": self.severity.value,
        }


class RuleErrors(Exception):
    """Every problem found at once (``bridge rules check``)."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__(f"{len(errors)} problem(s) in the rules")
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


@dataclass(frozen=True)
class Transform:
    """One named step of a mapping pipeline, e.g. ``lower`` or ``{default: "-"}``."""

    name: str
    argument: Any = None
    mark: Mark = field(default=Mark(""), compare=False)


@dataclass(frozen=True)
class FieldMapping:
    """LMS account attribute ← SCIM attribute path (or a constant), through transforms."""

    attribute: str
    source: str | None
    value: Any = None
    transforms: tuple[Transform, ...] = ()
    required: bool = False
    on_create_only: bool = False
    mark: Mark = field(default=Mark(""), compare=False)


@dataclass(frozen=True)
class Pilot:
    """A bounded first population: at most ``max_people``, a stable-hash sample, an end date."""

    max_people: int | None = None
    sample_percent: float | None = None
    seed: str = ""
    ends: date | None = None


@dataclass(frozen=True)
class Scope:
    """Who the rule file applies to: a SCIM filter (aliases expanded) and an optional pilot."""

    filter: str | None = None
    pilot: Pilot | None = None
    mark: Mark = field(default=Mark(""), compare=False)


class AssignmentKind(StrEnum):
    enrolment = "enrolment"
    cohort = "cohort"
    path = "path"


class Otherwise(StrEnum):
    """What happens when a condition stops matching: suspend (progress kept) by default."""

    suspend = "suspend"
    unenrol = "unenrol"
    keep = "keep"


@dataclass(frozen=True)
class Assignment:
    """``when`` a SCIM filter matches, the person is on this course, cohort or learning path.

    ``due_days`` (``due:``) is a deadline the bridge keeps: it never ends access in the LMS.
    ``access_end_days`` (``access_ends:``) is the only setting that ends the learner's access
    (Moodle's enrolment ``timeend``), that many days after the enrolment.
    """

    kind: AssignmentKind
    id: str
    when: str
    ref: str
    role: str = "student"
    otherwise: Otherwise = Otherwise.suspend
    due_days: int | None = None
    access_end_days: int | None = None
    mark: Mark = field(default=Mark(""), compare=False)


@dataclass(frozen=True)
class Safety:
    """Removals above either threshold quarantine a plan until approved; removals from live
    writes above it within ``window`` are held until approved (the brake)."""

    max_removals: int | None = None
    max_removals_percent: float | None = None
    window: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class RuleFile:
    """One rule file: what it drives, who it covers, how accounts map, what people get."""

    path: str
    version: int
    name: str
    target: str
    scope: Scope
    aliases: dict[str, str]
    mapping: tuple[FieldMapping, ...]
    assignments: tuple[Assignment, ...]
    safety: Safety
    schedule: Schedule = field(default_factory=Schedule)
    mark: Mark = field(default=Mark(""), compare=False)


@dataclass(frozen=True)
class Target:
    """An LMS the rules drive (from ``rules/targets.yaml``); credentials by env var name."""

    name: str
    kind: str
    base_url: str
    credentials: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    mark: Mark = field(default=Mark(""), compare=False)


@dataclass(frozen=True)
class RuleSet:
    """Every rule file and target of a rules directory, with a content hash as its version."""

    files: tuple[RuleFile, ...]
    targets: dict[str, Target]
    version: str
    role_codes: frozenset[str] = frozenset()
    """The declared role-code catalogue (``role_codes:`` in rule files, ``role-codes.yaml``):
    every code HR may send, including those that drive nothing (``EMPLOYEE``); empty when
    none is declared (then the codes the conditions name are the known ones)."""
    feeds: dict[str, Any] = field(default_factory=dict)
    """The HR feeds of ``feeds.yaml`` by name (``bridge.rules.feeds.Feed``)."""

    def file(self, name: str) -> RuleFile | None:
        return next((f for f in self.files if f.name == name), None)
