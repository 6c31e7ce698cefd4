"""Target preflight: what a target needs of the LMS, and whether the LMS has it.

A ``Finding`` is one check (the credential works, a web-service function is allowed, the
auth kind exists, a course the rules name exists…) with the rule file:line:col that depends
on it and the fix to make in the LMS or the rules. A ``Verdict`` is every finding of one
target at one time; a target whose verdict has a failing error finding is *misconfigured*
and its intents wait (``bridge.store.health``) instead of burning retries into dead letters.
``Requirements`` is what the rules ask of a target, derived purely from a ``RuleSet``.
"""

from __future__ import annotations

from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One preflight check of one target.

    ``check``: what was checked (``credential``, ``function``, ``auth``, ``course``,
    ``cohort``, ``path``, ``profile_field``, ``username``…); ``subject``: which one
    (``BEN-2026``, ``core_user_create_users``); ``where``: the rule ``file:line:col`` that
    depends on it; ``fix``: what to change, in the LMS or in the rules.
    """

    target: str
    check: str
    ok: bool
    message: str
    subject: str | None = None
    severity: str = ERROR
    where: str | None = None
    fix: str = ""

    @property
    def blocking(self) -> bool:
        return not self.ok and self.severity == ERROR

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def line(self) -> str:
        """One line for logs and ``plan``/``explain``/``errors``: what, where, the fix."""
        text = self.message
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f"; fix: {self.fix}"
        return text


@dataclass(frozen=True)
class Verdict:
    """Every finding of one target's preflight; ``unreachable``: the LMS could not be asked."""

    target: str
    findings: tuple[Finding, ...] = ()
    unreachable: bool = False

    @property
    def passed(self) -> bool:
        return not self.unreachable and not any(f.blocking for f in self.findings)

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.severity == WARNING]

    def reason(self) -> str:
        """Why the target's intents wait (empty when it passed)."""
        failing = self.blocking
        if self.unreachable and not failing:
            failing = [f for f in self.findings if not f.ok][:1]
        if not failing:
            return ""
        more = f" (and {len(failing) - 1} more)" if len(failing) > 1 else ""
        return f"target {self.target} fails preflight: {failing[0].line()}{more}"


@dataclass(frozen=True)
class Requirement:
    """One thing the rules need a target to have, and where the rules say so."""

    subject: str
    where: str


@dataclass(frozen=True)
class Requirements:
    """What the rules ask of one target (pure: derived from a RuleSet)."""

    target: str
    courses: tuple[Requirement, ...] = ()
    cohorts: tuple[Requirement, ...] = ()
    paths: tuple[Requirement, ...] = ()
    attributes: tuple[Requirement, ...] = ()  # mapped LMS attribute names (profile fields…)
    auth: Requirement | None = None  # the auth kind of created accounts, where it is set
    extra: dict[str, Any] = field(default_factory=dict)
