"""The LMS catalogue: the courses, cohorts and learning paths an LMS holds, read from YAML or JSON."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from bridge.rules.model import AssignmentKind
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors


@dataclass(frozen=True)
class LmsCatalogue:
    """What exists in the LMS: course, cohort and learning-path idnumbers or shortnames."""

    courses: frozenset[str] = frozenset()
    cohorts: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()

    def refs(self, kind: AssignmentKind) -> frozenset[str]:
        return {
            AssignmentKind.enrolment: self.courses,
            AssignmentKind.cohort: self.cohorts,
            AssignmentKind.path: self.paths,
        }[kind]


_CATALOGUE_KEYS = ("courses", "cohorts", "paths")
_ENTRY_KEYS = ("idnumber", "shortname")


def _node_mark(display: str, node: yaml.Node) -> Mark:
    return Mark(display, node.start_mark.line + 1, node.start_mark.column + 1)


def _entries(display: str, section: str, node: yaml.Node, errors: list[RuleError]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return found
    if not isinstance(node, yaml.SequenceNode):
        errors.append(
            RuleError(
                _node_mark(display, node), f"{section!r} must be a list", hint=f"{section}: [A, B]"
            )
        )
        return found
    for item in node.value:
        if (
            isinstance(item, yaml.ScalarNode)
            and item.tag != "tag:yaml.org,2002:null"
            and str(item.value).strip()
        ):
            found.add(str(item.value).strip())
            continue
        if isinstance(item, yaml.MappingNode):
            values = [
                str(v.value).strip()
                for k, v in item.value
                if isinstance(v, yaml.ScalarNode)
                and k.value in _ENTRY_KEYS
                and str(v.value).strip()
            ]
            if values:
                found.update(values)
                continue
        errors.append(
            RuleError(
                _node_mark(display, item),
                f"an entry of {section!r} must be an idnumber or shortname",
                text=str(item.value) if isinstance(item, yaml.ScalarNode) else "",
                hint="a text such as BEN-2026, or {idnumber: BEN-2026, shortname: ben26}",
            )
        )
    return found


def load_lms_catalogue(path: Path) -> LmsCatalogue:
    """What the LMS holds, from ``{courses: [...], cohorts: [...], paths: [...]}`` in YAML or
    JSON; RuleErrors at file:line:col when the file is not that."""
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleErrors(
            [RuleError(Mark(display), f"cannot read the LMS catalogue: {exc.strerror}")]
        ) from exc
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            lines = text.splitlines()
            line = lines[exc.lineno - 1].strip() if 0 < exc.lineno <= len(lines) else ""
            raise RuleErrors(
                [
                    RuleError(
                        Mark(display, exc.lineno, exc.colno), f"JSON syntax: {exc.msg}", text=line
                    )
                ]
            ) from exc
        # JSON allows tabs between tokens, YAML does not; valid JSON has none inside strings.
        text = text.replace("\t", " ")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark
        mark = Mark(display, where.line + 1, where.column + 1) if where else Mark(display)
        raise RuleErrors([RuleError(mark, f"YAML syntax: {exc.problem}")]) from exc
    except yaml.YAMLError as exc:
        raise RuleErrors([RuleError(Mark(display), f"YAML: {exc}")]) from exc
    errors: list[RuleError] = []
    sections: dict[str, set[str]] = {key: set() for key in _CATALOGUE_KEYS}
    if not isinstance(root, yaml.MappingNode):
        mark = _node_mark(display, root) if root is not None else Mark(display, 1, 1)
        errors.append(
            RuleError(
                mark,
                "an LMS catalogue is a mapping of courses, cohorts and paths",
                hint="courses: [BEN-2026]\ncohorts: [BEN2026]\npaths: []",
            )
        )
    else:
        for key_node, value_node in root.value:
            key = str(key_node.value)
            if key not in sections:
                close = difflib.get_close_matches(key, _CATALOGUE_KEYS, n=1)
                errors.append(
                    RuleError(
                        _node_mark(display, key_node),
                        f"unknown key {key!r} in the LMS catalogue",
                        text=key,
                        hint=f"did you mean {close[0]!r}?"
                        if close
                        else f"allowed keys: {', '.join(_CATALOGUE_KEYS)}",
                    )
                )
                continue
            sections[key] |= _entries(display, key, value_node, errors)
    if errors:
        raise RuleErrors(sorted(errors, key=lambda e: e.mark))
    return LmsCatalogue(
        frozenset(sections["courses"]), frozenset(sections["cohorts"]), frozenset(sections["paths"])
    )
