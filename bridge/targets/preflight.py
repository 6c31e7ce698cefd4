"""Target preflight: what a target needs of the LMS, and whether the LMS has it.

A ``Finding`` is one check (the credential works, a web-service function is allowed, the
auth kind exists, a course the rules name exists…) with the rule file:line:col that depends
on it and the fix to make in the LMS or the rules. A ``Verdict`` is every finding of one
target at one time; a target whose verdict has a failing error finding is *misconfigured*
and its intents wait (``bridge.store.health``) instead of burning retries into dead letters.
``Requirements`` is what the rules ask of a target, derived purely from a ``RuleSet`` by
``requirements``. The checks live with each LMS kind (``moodle_preflight`` and the pure
``moodle_findings``, ``canvas_preflight``, ``scim_preflight``, ``rest_preflight``);
``bridge.provision.preflight`` runs them and records the verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from bridge.rules.model import AssignmentKind
from bridge.rules.model import Mark
from bridge.rules.model import Otherwise
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet

ERROR = "error"
WARNING = "warning"

ACCOUNT_INTENTS = ("upsert_account", "reactivate_account", "suspend_account")
"""What any rule file can ask of its target: create/update, reactivate and suspend accounts."""
NOT_ATTRIBUTES = frozenset({"auth", "password", "suspended"})
"""Mapping keys that say how accounts are made, not what they hold (``moodle_ws.user_row``)."""
INTENT_ORDER = (
    "upsert_account",
    "reactivate_account",
    "enrol",
    "add_cohort_member",
    "suspend_enrolment",
    "unenrol",
    "remove_cohort_member",
    "suspend_account",
)
"""Intent kinds in the order the engine sends them (``bridge.rules.engine.IntentKind``)."""


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

    def as_dict(self) -> dict[str, Any]:
        """The verdict as ``bridge targets check --json`` prints it."""
        return {
            "name": self.target,
            "passed": self.passed,
            "unreachable": self.unreachable,
            "reason": self.reason(),
            "findings": [f.as_dict() for f in self.findings],
        }

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
    """What the rules ask of one target (pure: derived from a RuleSet by ``requirements``).

    ``courses``/``cohorts``/``paths``: each ref once, ``where`` every assignment naming it;
    ``attributes``: mapped LMS attribute names (profile fields…) with the mapping's place;
    ``auth``: the auth kind of created accounts and where it is set (``auths``: every kind, when
    rule files differ); ``intents``: the intent kinds the rules can produce, each with the rules
    that produce it; ``where``: the target's entry in targets.yaml; ``credentials``: credential
    name → the environment variable holding it (names only, never values); ``files``: the rule
    files driving the target. ``extra``: ``dynamic_auth`` (where ``auth`` comes from a SCIM
    attribute, so no preflight can know it).
    """

    target: str
    courses: tuple[Requirement, ...] = ()
    cohorts: tuple[Requirement, ...] = ()
    paths: tuple[Requirement, ...] = ()
    attributes: tuple[Requirement, ...] = ()  # mapped LMS attribute names (profile fields…)
    auth: Requirement | None = None  # the auth kind of created accounts, where it is set
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    where: str = ""
    intents: tuple[Requirement, ...] = ()
    auths: tuple[Requirement, ...] = ()
    credentials: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def needs(self, intent: str) -> bool:
        return any(r.subject == intent for r in self.intents)

    def intent_kinds(self) -> list[str]:
        return [r.subject for r in self.intents]


def _gather(pairs: Iterable[tuple[str, Mark]]) -> tuple[Requirement, ...]:
    """One Requirement per subject (first-seen order), ``where`` every place naming it."""
    places: dict[str, list[str]] = {}
    for subject, mark in pairs:
        seen = places.setdefault(subject, [])
        if str(mark) not in seen:
            seen.append(str(mark))
    return tuple(Requirement(subject, ", ".join(where)) for subject, where in places.items())


def _file_mark(rule_file: RuleFile) -> Mark:
    return rule_file.mark if rule_file.mark.file else Mark(rule_file.path, 1, 1)


def _intents(files: Iterable[RuleFile]) -> tuple[Requirement, ...]:
    """Which intent kinds the rules can produce (``bridge.rules.engine.diff``), and from where."""
    pairs: list[tuple[str, Mark]] = []
    for rule_file in files:
        pairs += [(kind, _file_mark(rule_file)) for kind in ACCOUNT_INTENTS]
        for assignment in rule_file.assignments:
            cohort = assignment.kind == AssignmentKind.cohort
            pairs.append(("add_cohort_member" if cohort else "enrol", assignment.mark))
            if assignment.otherwise == Otherwise.keep:
                continue
            if cohort:
                pairs.append(("remove_cohort_member", assignment.mark))
            elif assignment.otherwise == Otherwise.unenrol:
                pairs.append(("unenrol", assignment.mark))
            else:
                pairs.append(("suspend_enrolment", assignment.mark))
    order = {kind: index for index, kind in enumerate(INTENT_ORDER)}
    gathered = _gather(pairs)
    return tuple(sorted(gathered, key=lambda r: order.get(r.subject, len(order))))


def requirements(ruleset: RuleSet, target_name: str) -> Requirements:
    """What every rule file driving ``target_name`` asks of it (pure)."""
    config = ruleset.targets.get(target_name)
    files = [f for f in ruleset.files if f.target == target_name]
    refs: dict[AssignmentKind, list[tuple[str, Mark]]] = {kind: [] for kind in AssignmentKind}
    attributes: list[tuple[str, Mark]] = []
    auths: list[tuple[str, Mark]] = []
    dynamic: list[str] = []
    option_auth = config.options.get("auth") if config is not None else None
    target_mark = config.mark if config is not None else Mark("")
    uses_option = not files
    for rule_file in files:
        for assignment in rule_file.assignments:
            refs[assignment.kind].append((assignment.ref, assignment.mark))
        auth = next((m for m in rule_file.mapping if m.attribute == "auth"), None)
        if auth is None:
            uses_option = True
        elif auth.source is not None:
            dynamic.append(str(auth.mark))
        elif auth.value is not None and str(auth.value).strip():
            auths.append((str(auth.value).strip(), auth.mark))
        else:
            uses_option = True
        attributes += [
            (m.attribute, m.mark) for m in rule_file.mapping if m.attribute not in NOT_ATTRIBUTES
        ]
    if uses_option and option_auth:
        auths.append((str(option_auth), target_mark))
    gathered_auths = _gather(auths)
    return Requirements(
        target=target_name,
        courses=_gather(refs[AssignmentKind.enrolment]),
        cohorts=_gather(refs[AssignmentKind.cohort]),
        paths=_gather(refs[AssignmentKind.path]),
        attributes=_gather(attributes),
        auth=gathered_auths[0] if gathered_auths else None,
        extra={"dynamic_auth": ", ".join(dynamic)} if dynamic else {},
        kind=config.kind if config is not None else "",
        where=str(target_mark) if config is not None else "",
        intents=_intents(files),
        auths=gathered_auths,
        credentials=dict(config.credentials) if config is not None else {},
        files=tuple(f.path for f in files),
    )


class Unreachable(Exception):
    """The LMS did not answer a preflight call (timeout, connection error, 5xx, throttling)."""


def unreachable_verdict(
    target: str, lms: str, error: Exception, findings: Iterable[Finding], where: str | None
) -> Verdict:
    """The verdict of a preflight the LMS stopped answering: what was found so far, plus a
    non-blocking note (the relay's circuit breaker owns outages, not the preflight)."""
    note = Finding(
        target,
        "reachable",
        False,
        f"{lms} did not answer: {error}",
        severity=WARNING,
        where=where,
        fix=f"check that {lms} is up and base_url is right; the relay keeps probing",
    )
    return Verdict(target, (*findings, note), unreachable=True)
