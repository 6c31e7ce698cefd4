"""Training status: who must take each course, who is enrolled, started, complete or overdue —
desired (the rules' projection), confirmed (``links.confirmed``) and the completion last read
from the LMS (``training_status``) joined per person and course; and the refresh that reads it.

Definitions (one ``TrainingRow`` per person and course, for every course enrolment the rules
want — *desired* — or the LMS confirmed holding — *enrolled*, bridge-made by construction):

- **status**: ``not_enrolled`` (desired, no active enrolment confirmed: the person cannot be
  trained), ``not_read`` (enrolled, completion never read), ``error`` (the last read failed:
  ``error`` says why), else what the LMS answered: ``not_started``, ``in_progress``, ``complete``.
- **started**: in progress or complete.
- **due**: the date the bridge keeps with the confirmed enrolment (the rule's ``due:`` from
  the first confirmed enrolment; never an LMS access end). None without ``due:``.
- **overdue**: enrolled, ``due`` before the report's date (``as_of``) and not complete; and
  every ``not_enrolled`` person (desired but never enrolled: no deadline can be met).
- **department**: the enterprise extension's ``department``; **role codes**: the HR
  extension's ``roleCodes`` (a person with several counts once under each).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from datetime import datetime
from typing import Any

from bridge.rules.model import RuleSet
from bridge.store import links
from bridge.store import training
from bridge.store.engine import Database
from bridge.targets.base import Target
from bridge.targets.base import TargetConfigError
from bridge.targets.completion import Ask
from bridge.targets.completion import CompletionReader
from bridge.targets.completion import Reading
from bridge.targets.completion import read_all
from bridge.targets.completion import reader_for
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_preflight import TRAINING
from bridge.targets.moodle_preflight import read_refusal
from bridge.targets.preflight import requirements
from bridge.targets.registry import make_target

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
NOT_ENROLLED, NOT_READ, ERROR = "not_enrolled", "not_read", "error"
STATUSES = (NOT_ENROLLED, NOT_READ, ERROR, "not_started", "in_progress", "complete")
COUNTS = ("desired", "enrolled", *STATUSES, "started", "overdue")
GROUPINGS = {"department", "role_code"}
NONE = "(none)"

Key = tuple[str, str, str]
"""(target, person, course)."""


@dataclass(frozen=True)
class TrainingRow:
    """One person in one course."""

    person: str
    user_name: str
    external_id: str | None
    department: str | None
    role_codes: tuple[str, ...]
    target: str
    course: str
    rule: str | None
    desired: bool
    enrolled: bool
    enrolled_at: str | None
    due: date | None
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    read_at: datetime | None
    error: str | None
    overdue: bool

    def as_dict(self) -> dict[str, Any]:
        def iso(value: date | datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "person": self.person,
            "userName": self.user_name,
            "externalId": self.external_id,
            "department": self.department,
            "role_codes": list(self.role_codes),
            "target": self.target,
            "course": self.course,
            "rule": self.rule,
            "desired": self.desired,
            "enrolled": self.enrolled,
            "enrolled_at": self.enrolled_at,
            "due": iso(self.due),
            "status": self.status,
            "overdue": self.overdue,
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "read_at": iso(self.read_at),
            "error": self.error,
        }


def _courses(assignments: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The active course enrolments of an assignments map, by course ref."""
    found = {}
    for key, value in assignments.items():
        if not isinstance(value, Mapping) or not str(key).startswith("course:"):
            continue
        if value.get("kind", "enrolment") == "enrolment" and value.get("status") == "active":
            found[str(value.get("ref") or str(key).split(":", 1)[1])] = dict(value)
    return found


def _due(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def build_rows(
    desired: Iterable[tuple[str, str, Mapping[str, Any]]],
    confirmed: Iterable[tuple[str, str, str | None, Mapping[str, Any]]],
    stored: Mapping[Key, training.Status],
    people: Mapping[str, training.Person],
    as_of: date,
) -> list[TrainingRow]:
    """Join (pure): ``desired`` (target, person, projected state), ``confirmed`` (target, person,
    LMS id, confirmed document), the stored readings and the people, as on ``as_of``."""
    wanted: dict[Key, dict[str, Any]] = {}
    for target, person_id, state in desired:
        for course, assignment in _courses(state.get("assignments") or {}).items():
            wanted.setdefault((target, person_id, course), assignment)
    held: dict[Key, dict[str, Any]] = {}
    for target, person_id, _, document in confirmed:
        for course, assignment in _courses(links.assignments_of(document)).items():
            held[(target, person_id, course)] = assignment
    rows = []
    for key in sorted(wanted.keys() | held.keys()):
        target, person_id, course = key
        person = people.get(person_id)
        doc = person.doc if person is not None else {}
        codes = (doc.get(HR) or {}).get("roleCodes") or []
        enrolment = held.get(key)
        reading = stored.get(key) if enrolment is not None else None
        if enrolment is None:
            status = NOT_ENROLLED
        elif reading is None:
            status = NOT_READ
        elif reading.error is not None or reading.state is None:
            status = ERROR
        else:
            status = reading.state
        due = _due(enrolment.get("due")) if enrolment is not None else None
        overdue = status == NOT_ENROLLED or (
            due is not None and due < as_of and status != "complete"
        )
        rows.append(
            TrainingRow(
                person=person_id,
                user_name=person.user_name if person is not None else person_id,
                external_id=person.external_id if person is not None else None,
                department=(doc.get(ENTERPRISE) or {}).get("department"),
                role_codes=tuple(str(c) for c in codes if c),
                target=target,
                course=course,
                rule=(enrolment or wanted.get(key) or {}).get("rule"),
                desired=key in wanted,
                enrolled=enrolment is not None,
                enrolled_at=enrolment.get("at") if enrolment is not None else None,
                due=due,
                status=status,
                started_at=reading.started_at if reading is not None else None,
                completed_at=reading.completed_at if reading is not None else None,
                read_at=reading.read_at if reading is not None else None,
                error=reading.error if reading is not None else None,
                overdue=overdue,
            )
        )
    return sorted(rows, key=lambda r: (r.course, r.target, r.user_name, r.person))


def counts(rows: Iterable[TrainingRow]) -> dict[str, int]:
    """How many rows are desired, enrolled, in each status, started and overdue."""
    found: Counter[str] = Counter()
    for row in rows:
        found["desired"] += row.desired
        found["enrolled"] += row.enrolled
        found[row.status] += 1
        found["started"] += row.status in ("in_progress", "complete")
        found["overdue"] += row.overdue
    return {name: found[name] for name in COUNTS}


def group_names(row: TrainingRow, by: str) -> list[str]:
    """The groups a row counts under: its department, or each of its role codes."""
    if by == "department":
        return [row.department or NONE]
    return list(row.role_codes) or [NONE]


def grouped(rows: Sequence[TrainingRow], by: str) -> dict[str, dict[str, int]]:
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(sorted(GROUPINGS))}, not {by!r}")
    members: dict[str, list[TrainingRow]] = {}
    for row in rows:
        for name in group_names(row, by):
            members.setdefault(name, []).append(row)
    return {name: counts(members[name]) for name in sorted(members)}


@dataclass
class Report:
    """The rows a report shows (after ``--course`` / ``--overdue``) and the figures over them."""

    as_of: date
    generated_at: datetime
    rows: list[TrainingRow]
    course: str | None = None
    overdue_only: bool = False
    by: str | None = None
    refreshed: dict[str, int] | None = None

    @property
    def read_times(self) -> list[datetime]:
        return sorted(r.read_at for r in self.rows if r.read_at is not None)

    def as_json(self) -> dict[str, Any]:
        times = self.read_times
        document: dict[str, Any] = {
            "format": "bridge-training/1",
            "generated_at": self.generated_at.isoformat(),
            "as_of": self.as_of.isoformat(),
            "course": self.course,
            "overdue_only": self.overdue_only,
            "read": {
                "oldest": times[0].isoformat() if times else None,
                "newest": times[-1].isoformat() if times else None,
                "refreshed": self.refreshed,
            },
            "totals": counts(self.rows),
            "courses": {
                c: counts([r for r in self.rows if r.course == c])
                for c in sorted({r.course for r in self.rows})
            },
            "by": self.by,
            "groups": grouped(self.rows, self.by) if self.by else None,
            "people": [row.as_dict() for row in self.rows],
        }
        return document


class Training:
    """Reads the stored training status and refreshes it from the LMSs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def rows(self, as_of: date) -> list[TrainingRow]:
        with self.db.read() as conn:
            desired = training.desired_states(conn)
            confirmed = [
                (
                    str(link["target"]),
                    str(link["resource_id"]),
                    link["lms_user_id"],
                    link["confirmed"],
                )
                for link in links.all_of(conn)
            ]
            stored = training.stored(conn)
            ids = {person for _, person, _ in desired} | {person for _, person, _, _ in confirmed}
            people = training.people(conn, ids)
        return build_rows(desired, confirmed, stored, people, as_of)

    async def refresh(
        self,
        readers: Mapping[str, CompletionReader | str],
        now: datetime,
        *,
        concurrency: int = 8,
        targets: Collection[str] | None = None,
    ) -> dict[str, int]:
        """Read completion for every confirmed course enrolment from its target's reader (a
        string instead of a reader: why that target cannot be read, recorded per person), store
        every reading, and say how many were read and how many failed. ``targets``: only the
        enrolments in these targets (None: all)."""
        with self.db.read() as conn:
            all_links = [
                link
                for link in links.all_of(conn)
                if targets is None or str(link["target"]) in targets
            ]
            ids = {str(link["resource_id"]) for link in all_links}
            people = training.people(conn, ids)
        asks: dict[str, list[Ask]] = {}
        for link in all_links:
            person = people.get(str(link["resource_id"]))
            for course in _courses(links.assignments_of(link["confirmed"])):
                asks.setdefault(str(link["target"]), []).append(
                    Ask(
                        resource_id=str(link["resource_id"]),
                        lms_user_id=link["lms_user_id"],
                        external_id=person.external_id if person is not None else None,
                        course=course,
                    )
                )
        statuses: list[training.Status] = []
        for target, wanted in sorted(asks.items()):
            reader = readers.get(target, f"target {target!r} is not in the rules")
            if isinstance(reader, str):
                readings = [Reading.failed(reader)] * len(wanted)
            else:
                readings = await read_all(reader, wanted, concurrency=concurrency)
            statuses.extend(
                training.Status(
                    target,
                    ask.resource_id,
                    ask.course,
                    reading.state,
                    reading.started_at,
                    reading.completed_at,
                    now,
                    reading.error,
                )
                for ask, reading in zip(wanted, readings, strict=True)
            )
        with self.db.write() as conn:
            training.save(conn, statuses)
        failed = sum(1 for s in statuses if s.error is not None)
        return {"read": len(statuses) - failed, "failed": failed}


class ReadRefused(Exception):
    """A target's setup cannot answer the completion reads (a web-service function missing
    from the token's service): nothing was read, the stored readings are kept."""


def _unreadable(name: str, kind: str) -> str:
    if kind == "rest":
        return (
            f"target {name} declares no `completion:` request in targets.yaml: add one to "
            "read progress (rules/examples/docebo/targets.yaml shows how)"
        )
    return f"a {kind} target cannot report completion"


async def refresh_targets(
    db: Database,
    ruleset: RuleSet,
    env: Mapping[str, str],
    now: datetime,
    *,
    targets: Collection[str] | None = None,
    concurrency: int = 8,
) -> dict[str, int]:
    """``bridge training --refresh`` (and the scheduled ``training`` job): build a reader per
    target of the rules (``targets``: only these), read, store, and close the targets.

    A target that cannot be built is recorded as why, for each person. A Moodle token whose
    service lacks a read function raises ``ReadRefused`` before anything is read: storing
    that refusal as every person's error would overwrite the readings already held.
    """
    readers: dict[str, CompletionReader | str] = {}
    built: list[Target] = []
    try:
        for name, config in ruleset.targets.items():
            if targets is not None and name not in targets:
                continue
            try:
                target = make_target(config, env)
            except TargetConfigError as exc:
                readers[name] = str(exc)
                continue
            built.append(target)
            if isinstance(target, MoodleTarget):
                refused = await read_refusal(target, TRAINING, requirements(ruleset, name))
                if refused is not None:
                    raise ReadRefused(f"target {name}: {refused}")
            readers[name] = reader_for(target) or _unreadable(name, config.kind)
        return await Training(db).refresh(readers, now, concurrency=concurrency, targets=targets)
    finally:
        for target in built:
            await target.aclose()
