"""Rule files from YAML into ``bridge.rules.model``, with every problem at file:line:col.

The YAML is composed into nodes (not loaded) so that each value keeps its position; the
loader collects every structural problem — YAML syntax, unknown keys, wrong types, inline
secrets, unknown transforms, filter syntax — before giving up, and never returns half a set.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from dataclasses import field
from datetime import date
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from scim2_models import SCIMException
from scim2_models import ScimFilter

from bridge.rules import schedule_nodes
from bridge.rules.aliases import expand_filter
from bridge.rules.aliases import expand_path
from bridge.rules.feeds import FEEDS_FILE
from bridge.rules.feeds import Feed
from bridge.rules.feeds import parse_feeds
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import FieldMapping
from bridge.rules.model import Mark
from bridge.rules.model import Otherwise
from bridge.rules.model import Pilot
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.model import Safety
from bridge.rules.model import Scope
from bridge.rules.model import Severity
from bridge.rules.model import Target
from bridge.rules.model import Transform
from bridge.rules.role_catalogue import ROLE_CODES_FILE
from bridge.rules.role_catalogue import ROLE_CODES_KEY
from bridge.rules.role_catalogue import DeclaredCode
from bridge.rules.role_catalogue import catalogue
from bridge.rules.role_catalogue import declared_in
from bridge.rules.transforms import TRANSFORMS
from bridge.schedule import Schedule
from bridge.schedule import parse as parse_schedule
from bridge.schedule import parse_every

TARGETS_FILE = "targets.yaml"
TARGET_KINDS = ("moodle", "canvas", "rest", "scim")
_SECRET_KEYS = re.compile(r"(?i)(password|secret|token|api[_-]?key|client[_-]?secret|wstoken)")
_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?$")


@dataclass
class Node:
    """A YAML value with its position; ``value`` holds Nodes inside lists and mappings."""

    value: Any
    mark: Mark
    text: str = ""

    def plain(self) -> Any:
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


def _mark(file: str, node: yaml.Node) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(file: str, node: yaml.Node, errors: list[RuleError]) -> Node:
    mark = _mark(file, node)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                errors.append(RuleError(_mark(file, key_node), "a key must be a plain string"))
                continue
            if key in out:
                errors.append(
                    RuleError(
                        _mark(file, key_node),
                        f"duplicate key {key!r}",
                        text=key,
                        hint="each key once per mapping",
                    )
                )
            child = _convert(file, value_node, errors)
            child.text = child.text or key
            out[key] = child
        return Node(out, mark)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(file, item, errors) for item in node.value], mark)
    constructor = yaml.SafeLoader(b"")
    try:
        value = constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        errors.append(RuleError(mark, f"bad value: {exc}", text=str(node.value)))
        value = None
    finally:
        constructor.dispose()
    return Node(value, mark, str(node.value))


def read_yaml(path: Path, display: str, errors: list[RuleError]) -> Node | None:
    """Compose a YAML file into Nodes; syntax errors are reported with their position."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        errors.append(RuleError(Mark(display), f"cannot read: {exc.strerror}"))
        return None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark
        lines = text.splitlines()
        if where is not None and where.line >= len(lines) and exc.context_mark is not None:
            where = exc.context_mark  # "end of stream": point at what was left open instead
        line = where.line + 1 if where else 0
        column = where.column + 1 if where else 0
        source = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        if _SECRET_KEYS.search(source):
            source = source.split(":", 1)[0] + ": ***"  # never echo a secret
        context = f" ({exc.context})" if exc.context else ""
        errors.append(
            RuleError(
                Mark(display, line, column),
                f"YAML syntax: {exc.problem}{context}",
                text=source,
                hint="check indentation and quoting (filters with quotes go in single quotes)",
            )
        )
        return None
    if root is None:
        errors.append(RuleError(Mark(display, 1, 1), "the file is empty"))
        return None
    return _convert(display, root, errors)


@dataclass
class _Reader:
    """Typed access to a mapping Node that reports, rather than raises, every problem."""

    node: Node
    errors: list[RuleError]
    allowed: tuple[str, ...]
    where: str
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not isinstance(self.node.value, dict):
            self.errors.append(
                RuleError(self.node.mark, f"{self.where} must be a mapping", text=self.node.text)
            )
            self.node = Node({}, self.node.mark)
            return
        for key, child in self.node.value.items():
            if key not in self.allowed:
                close = difflib.get_close_matches(key, self.allowed, n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"allowed keys: {', '.join(self.allowed)}"
                )
                self.errors.append(
                    RuleError(
                        child.mark, f"unknown key {key!r} in {self.where}", text=key, hint=hint
                    )
                )

    def get(self, key: str) -> Node | None:
        found: Node | None = self.node.value.get(key)
        return found

    def typed(
        self,
        key: str,
        kind: type | tuple[type, ...],
        *,
        required: bool = False,
        default: Any = None,
    ) -> Any:
        child = self.get(key)
        if child is None or child.value is None:
            if required:
                self.errors.append(
                    RuleError(self.node.mark, f"{self.where} needs {key!r}", hint=f"add `{key}:`")
                )
            return default
        if isinstance(child.value, bool) and kind in (int, float, (int, float)):
            ok = False
        else:
            ok = isinstance(child.value, kind)
        if not ok:
            names = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            self.errors.append(
                RuleError(
                    child.mark, f"{key!r} must be a {names}", text=child.text or str(child.value)
                )
            )
            return default
        return child.value


_DURATION_MEANING = {
    "due": "a due date (kept by the bridge)",
    "access_ends": "the end of the learner's access",
}


def _duration_days(node: Node | None, key: str, errors: list[RuleError]) -> int | None:
    """``due:`` / ``access_ends:`` in days: a whole number or an ISO 8601 duration (P30D, P4W).

    Access that ends the day it starts is refused (always a mistake); a due date may be today.
    """
    if node is None or node.value is None:
        return None
    least = 1 if key == "access_ends" else 0
    days: int | None = None
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        days = node.value
    elif (
        isinstance(node.value, str)
        and (match := _DURATION.match(node.value))
        and any(match.groups())
    ):
        weeks, plain = (int(g) if g else 0 for g in match.groups())
        days = weeks * 7 + plain
    if days is None:
        errors.append(
            RuleError(
                node.mark,
                f"`{key}:` is {_DURATION_MEANING[key]}: days or an ISO 8601 duration",
                text=node.text or str(node.value),
                hint="e.g. 30 or P30D or P4W",
            )
        )
        return None
    if days < least:
        errors.append(
            RuleError(
                node.mark,
                f"`{key}:` must be {'a day or more' if least else 'zero days or more'}, not {days}",
                text=node.text or str(node.value),
                hint="e.g. P90D"
                if key == "access_ends"
                else "a number of days after the enrolment, e.g. P30D",
            )
        )
        return None
    return days


def _check_filter(text: str, node: Node, errors: list[RuleError]) -> None:
    try:
        ScimFilter(text)
    except (SCIMException, ValueError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        errors.append(
            RuleError(
                node.mark,
                f"invalid SCIM filter: {detail}",
                text=text,
                hint='e.g. roleCodes eq "BEN_CHOICE_2026" and active eq true',
            )
        )


def _transforms(node: Node | None, errors: list[RuleError]) -> tuple[Transform, ...]:
    if node is None or node.value is None:
        return ()
    items = node.value if isinstance(node.value, list) else [node]
    out = []
    for item in items:
        if isinstance(item.value, str):
            name, argument = item.value, None
        elif isinstance(item.value, dict) and len(item.value) == 1:
            name, child = next(iter(item.value.items()))
            argument = child.plain()
        else:
            errors.append(
                RuleError(item.mark, "a transform is a name or {name: argument}", text=item.text)
            )
            continue
        spec = TRANSFORMS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(TRANSFORMS), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"known transforms: {', '.join(sorted(TRANSFORMS))}"
            )
            errors.append(RuleError(item.mark, f"unknown transform {name!r}", text=name, hint=hint))
            continue
        problem = spec.check(argument)
        if problem:
            errors.append(
                RuleError(
                    item.mark,
                    f"transform {name!r}: {problem}",
                    text=item.text or name,
                    hint=spec.usage,
                )
            )
            continue
        out.append(Transform(name, argument, item.mark))
    return tuple(out)


def _mapping(
    node: Node | None, aliases: dict[str, str], errors: list[RuleError]
) -> tuple[FieldMapping, ...]:
    if node is None or node.value is None:
        return ()
    if not isinstance(node.value, dict):
        errors.append(RuleError(node.mark, "mapping must be a mapping of LMS attribute → source"))
        return ()
    out = []
    for attribute, child in node.value.items():
        if isinstance(child.value, str):
            out.append(FieldMapping(attribute, expand_path(child.value, aliases), mark=child.mark))
            continue
        reader = _Reader(
            child,
            errors,
            ("from", "value", "transforms", "required", "on"),
            f"mapping {attribute!r}",
        )
        source = reader.typed("from", str)
        value_node = reader.get("value")
        if source is None and value_node is None:
            errors.append(
                RuleError(
                    child.mark,
                    f"mapping {attribute!r} needs `from:` or `value:`",
                    hint="from: userName",
                )
            )
        on = reader.typed("on", str)
        if on is not None and on != "create":
            errors.append(
                RuleError(child.mark, f"`on:` takes only 'create', not {on!r}", text=str(on))
            )
        if (
            value_node is not None
            and isinstance(value_node.value, str)
            and _SECRET_KEYS.search(attribute)
        ):
            errors.append(
                RuleError(
                    value_node.mark,
                    f"inline secret in mapping {attribute!r}",
                    text=attribute,
                    hint="secrets never go in rule files",
                )
            )
        out.append(
            FieldMapping(
                attribute=attribute,
                source=expand_path(source, aliases) if source else None,
                value=value_node.plain() if value_node is not None else None,
                transforms=_transforms(reader.get("transforms"), errors),
                required=bool(reader.typed("required", bool, default=False)),
                on_create_only=on == "create",
                mark=child.mark,
            )
        )
    return tuple(out)


_ASSIGNMENT_KEYS = {
    AssignmentKind.enrolment: ("id", "when", "course", "role", "otherwise", "due", "access_ends"),
    AssignmentKind.cohort: ("id", "when", "cohort", "otherwise"),
    AssignmentKind.path: ("id", "when", "path", "otherwise", "due", "access_ends"),
}
_REF_KEY = {
    AssignmentKind.enrolment: "course",
    AssignmentKind.cohort: "cohort",
    AssignmentKind.path: "path",
}


def _assignments(
    node: Node | None, kind: AssignmentKind, aliases: dict[str, str], errors: list[RuleError]
) -> list[Assignment]:
    if node is None or node.value is None:
        return []
    if not isinstance(node.value, list):
        errors.append(RuleError(node.mark, f"{kind.value}s must be a list"))
        return []
    out = []
    for index, child in enumerate(node.value):
        reader = _Reader(child, errors, _ASSIGNMENT_KEYS[kind], f"{kind.value} #{index + 1}")
        ref_key = _REF_KEY[kind]
        rule_id = reader.typed("id", str, required=True)
        when = reader.typed("when", str, required=True)
        ref = reader.typed(ref_key, (str, int), required=True)
        otherwise_text = reader.typed("otherwise", str, default="suspend")
        try:
            otherwise = Otherwise(otherwise_text)
        except ValueError:
            errors.append(
                RuleError(
                    child.mark,
                    f"otherwise must be suspend, unenrol or keep, not {otherwise_text!r}",
                    text=str(otherwise_text),
                )
            )
            otherwise = Otherwise.suspend
        expanded = when
        if isinstance(when, str):
            when_node = reader.get("when")
            assert when_node is not None
            expanded = expand_filter(when, aliases)
            _check_filter(expanded, when_node, errors)
        due_days = _duration_days(reader.get("due"), "due", errors)
        access_end_days = _duration_days(reader.get("access_ends"), "access_ends", errors)
        if rule_id is None or when is None or ref is None:
            continue
        out.append(
            Assignment(
                kind=kind,
                id=rule_id,
                when=expanded,
                ref=str(ref),
                role=reader.typed("role", str, default="student"),
                otherwise=otherwise,
                due_days=due_days,
                access_end_days=access_end_days,
                mark=child.mark,
            )
        )
    return out


def _scope(node: Node | None, aliases: dict[str, str], errors: list[RuleError], file: str) -> Scope:
    if node is None or node.value is None:
        return Scope(mark=Mark(file, 1, 1))
    if isinstance(node.value, str):
        whole = expand_filter(node.value, aliases)
        _check_filter(whole, node, errors)
        return Scope(whole, None, node.mark)
    reader = _Reader(node, errors, ("filter", "pilot"), "scope")
    text = reader.typed("filter", str)
    expanded: str | None = None
    if text is not None:
        expanded = expand_filter(text, aliases)
        filter_node = reader.get("filter")
        assert filter_node is not None
        _check_filter(expanded, filter_node, errors)
    pilot = None
    pilot_node = reader.get("pilot")
    if pilot_node is not None:
        pilot_reader = _Reader(
            pilot_node, errors, ("max_people", "sample_percent", "seed", "ends"), "pilot"
        )
        max_people = pilot_reader.typed("max_people", int)
        percent = pilot_reader.typed("sample_percent", (int, float))
        if max_people is not None and max_people < 1:
            errors.append(
                RuleError(pilot_node.mark, "max_people must be at least 1", text=str(max_people))
            )
        if percent is not None and not 0 < percent <= 100:
            errors.append(
                RuleError(pilot_node.mark, "sample_percent must be in (0, 100]", text=str(percent))
            )
        pilot = Pilot(
            max_people=max_people,
            sample_percent=float(percent) if percent is not None else None,
            seed=str(pilot_reader.typed("seed", (str, int), default="")),
            ends=pilot_reader.typed("ends", date),
        )
    return Scope(expanded, pilot, node.mark)


_FILE_KEYS = (
    "version",
    "name",
    "target",
    "scope",
    "aliases",
    "mapping",
    "enrolments",
    "cohorts",
    "paths",
    "safety",
    "schedule",
    ROLE_CODES_KEY,  # read by bridge.rules.role_catalogue: the rule set's catalogue
)


def parse_rule_file(root: Node, display: str, errors: list[RuleError]) -> RuleFile | None:
    reader = _Reader(root, errors, _FILE_KEYS, "a rule file")
    version = reader.typed("version", int, required=True)
    name = reader.typed("name", str, required=True)
    target = reader.typed("target", str, required=True)
    aliases_node = reader.get("aliases")
    aliases: dict[str, str] = {}
    if aliases_node is not None and aliases_node.value is not None:
        if isinstance(aliases_node.value, dict):
            for alias, child in aliases_node.value.items():
                if isinstance(child.value, str):
                    aliases[alias] = child.value
                else:
                    errors.append(
                        RuleError(
                            child.mark, f"alias {alias!r} must name an attribute path", text=alias
                        )
                    )
        else:
            errors.append(
                RuleError(
                    aliases_node.mark, "aliases must be a mapping of short name → attribute path"
                )
            )
    scope = _scope(reader.get("scope"), aliases, errors, display)
    mapping = _mapping(reader.get("mapping"), aliases, errors)
    assignments = [
        *_assignments(reader.get("enrolments"), AssignmentKind.enrolment, aliases, errors),
        *_assignments(reader.get("cohorts"), AssignmentKind.cohort, aliases, errors),
        *_assignments(reader.get("paths"), AssignmentKind.path, aliases, errors),
    ]
    safety_node = reader.get("safety")
    safety = Safety()
    if safety_node is not None:
        safety_reader = _Reader(
            safety_node, errors, ("max_removals", "max_removals_percent", "window"), "safety"
        )
        safety = Safety(
            max_removals=safety_reader.typed("max_removals", int),
            max_removals_percent=safety_reader.typed("max_removals_percent", (int, float)),
            window=_window(safety_reader.get("window"), errors),
        )
    schedule = _schedule(reader.get("schedule"), errors)
    if version is not None and version != 1:
        version_node = reader.get("version")
        assert version_node is not None
        errors.append(
            RuleError(
                version_node.mark,
                f"unsupported rule file version {version}",
                hint="this bridge reads version: 1",
            )
        )
    if name is None or target is None or version is None:
        return None
    return RuleFile(
        path=display,
        version=version,
        name=name,
        target=target,
        scope=scope,
        aliases=aliases,
        mapping=mapping,
        assignments=tuple(assignments),
        safety=safety,
        schedule=schedule,
        mark=root.mark,
    )


def _window(node: Node | None, errors: list[RuleError]) -> timedelta:
    """``safety.window``: how far back live removals count towards the threshold (the brake);
    an interval as in ``schedule:`` (``1h``, ``30m``, ``1d``), one hour when absent."""
    default = Safety().window
    if node is None or node.value is None:
        return default
    window = parse_every(node.value)
    if window is None:
        errors.append(
            RuleError(
                node.mark,
                f"bad window {node.value!r}",
                text=node.text or str(node.value),
                hint="an interval of a minute or more: e.g. 1h, 30m or 1d",
            )
        )
        return default
    return window


def _schedule(node: Node | None, errors: list[RuleError]) -> Schedule:
    """``schedule:`` through ``bridge.schedule.parse``, each problem at the key it is about."""
    if node is None:
        return Schedule()
    schedule, problems = parse_schedule(schedule_nodes.plain(node))
    schedule_nodes.report(node, problems, errors)
    return schedule


def parse_targets(root: Node, display: str, errors: list[RuleError]) -> dict[str, Target]:
    reader = _Reader(root, errors, ("targets",), "targets.yaml")
    node = reader.get("targets")
    if node is None or not isinstance(node.value, dict):
        errors.append(
            RuleError(root.mark, "targets.yaml needs a `targets:` mapping of name → target")
        )
        return {}
    out = {}
    for name, child in node.value.items():
        target_reader = _Reader(
            child, errors, ("kind", "base_url", "credentials", "options"), f"target {name!r}"
        )
        kind = target_reader.typed("kind", str, required=True)
        if kind is not None and kind not in TARGET_KINDS:
            kind_node = target_reader.get("kind")
            assert kind_node is not None
            errors.append(
                RuleError(
                    kind_node.mark,
                    f"unknown target kind {kind!r}",
                    text=kind,
                    hint=f"one of {', '.join(TARGET_KINDS)}",
                )
            )
        base_url = target_reader.typed("base_url", str, required=True)
        credentials: dict[str, str] = {}
        credentials_node = target_reader.get("credentials")
        if credentials_node is not None and isinstance(credentials_node.value, dict):
            for key, value in credentials_node.value.items():
                text = value.value
                if not isinstance(text, str) or not re.fullmatch(r"env:[A-Z_][A-Z0-9_]*", text):
                    errors.append(
                        RuleError(
                            value.mark,
                            f"credential {key!r} must name an environment variable",
                            text=f"{key}: {'***' if isinstance(text, str) else text}",
                            hint="write `env:MOODLE_TOKEN`; secrets never go in rule files",
                        )
                    )
                    continue
                credentials[key] = text.removeprefix("env:")
        options_node = target_reader.get("options")
        options = options_node.plain() if options_node is not None else {}
        if isinstance(options, dict):
            for key, value in options.items():
                if _SECRET_KEYS.search(key) and isinstance(value, str):
                    option_node = options_node.value[key] if options_node else child
                    errors.append(
                        RuleError(
                            option_node.mark,
                            f"inline secret in option {key!r}",
                            text=key,
                            hint="use credentials: {name: env:VAR}",
                        )
                    )
        if kind is None or base_url is None:
            continue
        out[name] = Target(
            name,
            kind,
            base_url,
            credentials,
            options if isinstance(options, dict) else {},
            child.mark,
        )
    return out


def load_ruleset(directory: Path, *, relative_to: Path | None = None) -> RuleSet:
    """Every ``*.yaml`` rule file of ``directory`` plus ``targets.yaml`` and ``role-codes.yaml``;
    RuleErrors if any problem (warnings alone do not stop it: ``read_ruleset`` returns them).

    Test fixtures (``*.test.yaml``) are not rule files.
    """
    return read_ruleset(directory, relative_to=relative_to)[0]


def read_ruleset(
    directory: Path, *, relative_to: Path | None = None
) -> tuple[RuleSet, list[RuleError]]:
    """``load_ruleset``, with the warnings the loader found (a role code declared twice).

    RuleErrors, warnings included, when there is an error. ``role-codes.yaml`` is not a rule
    file; like every rule file, it counts in the version hash.
    """
    errors: list[RuleError] = []
    digest = hashlib.sha256()
    base = relative_to or Path.cwd()

    def display(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            return str(path)

    if not directory.is_dir():
        raise RuleErrors([RuleError(Mark(str(directory)), "no such rules directory")])
    targets: dict[str, Target] = {}
    feeds: dict[str, Feed] = {}
    files = []
    declared: list[DeclaredCode] = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name.endswith(".test.yaml"):
            continue
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError as exc:
            errors.append(RuleError(Mark(display(path)), f"cannot read: {exc.strerror}"))
            continue
        root = read_yaml(path, display(path), errors)
        if root is None:
            continue
        if path.name == TARGETS_FILE:
            targets = parse_targets(root, display(path), errors)
            continue
        if path.name == FEEDS_FILE:
            feeds = parse_feeds(root, errors)
            continue
        declared += declared_in(path.name, root, errors)
        if path.name == ROLE_CODES_FILE:
            continue
        parsed = parse_rule_file(root, display(path), errors)
        if parsed is not None:
            files.append(parsed)
    role_codes = catalogue(declared, errors)
    errors.sort(key=lambda e: e.mark)
    if any(error.severity == Severity.error for error in errors):
        raise RuleErrors(errors)
    ruleset = RuleSet(tuple(files), targets, digest.hexdigest()[:12], role_codes, feeds)
    return ruleset, errors
