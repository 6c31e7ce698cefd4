"""Fixture files of ``bridge rules test``: their format, and parsing them into fixtures (:class:`Fixture`).

A fixture file sits next to the rule file it tests, as ``rules/<name>.test.yaml`` (the
loader skips ``*.test.yaml``); :mod:`bridge.rules.fixtures` runs what is parsed here.

Format::

    rules: benefits-2026            # the `name:` of the rule file under test
    anchors:                        # optional, never run: a place for YAML anchors
      jane: &jane {userName: jsmith, department: Claims, roleCodes: [BEN_CHOICE_2026]}
    tests:
      - name: a Claims employee with BEN_CHOICE_2026 gets account, course and cohort
        given:
          user:                     # the person's SCIM JSON, as the server stores it
            <<: *jane               # YAML merge keys work (keys written here win)
            externalId: E12345
            emails: [{type: work, value: j.smith@example.com}]
            urn:ietf:params:scim:schemas:extension:enterprise:2.0:User: {employeeNumber: "42"}
            roleCodes: [BEN_CHOICE_2026]   # an alias of the rule file: expanded
          groups: [Claims Team]     # optional: displayNames, or {value, display}
          lms:                      # optional: the prior projected state (absent: never seen)
            account: {idnumber: E12345, username: jsmith}   # default {}
            active: true            # default true
            enrolled: [BEN-2026]    # courses with an active enrolment
            suspended: [BEN-2026-MGR]   # courses with a suspended enrolment
            cohorts: [BEN2026]      # cohort memberships
            paths: [LP-1]           # learning paths (active)
            assignments: {}         # and/or the raw form engine.diff projects:
                                    # {"course:X": {status, rule, kind, ref}}
          admitted: true            # optional (default true): the pilot takes the person
        expect:                     # at least one of:
          intents:                  # the exact list, in order
            - upsert_account                   # `kind` or `kind ref`, or a mapping
            - enrol BEN-2026
            - {kind: add_cohort_member, ref: BEN2026, rule: benefits-2026-cohort}
          includes: [enrol BEN-2026]           # each of these is among the intents
          excludes: [{kind: unenrol}]          # none of these is
          in_scope: true
          problems: [missing required email]   # substrings; [] means no problems at all
          idempotent: true          # running again on the new projection gives no intents

An expected intent is compared only on the keys it gives (``kind``, ``ref``, ``rule``,
``target``, ``person``, ``data``); ``data`` is compared key by key, only the keys given
(each compared whole). ``kind`` must be an ``IntentKind``, ``rule`` an assignment id or the
rule file's name (account intents) or ``?`` (a projected assignment no rule assigns).

Decisions:

- ``user`` top-level keys that name an alias of the rule file (``roleCodes``,
  ``department``; case-insensitive) are expanded to the attribute they stand for, as in
  conditions. Next to a merge key, an alias or an extension block (URN key) sets only the
  attributes it names (the base's other extension attributes stay); other keys replace.
  Giving an attribute both ways is an error. So is a key that is neither an attribute of the
  schemas (a sub-attribute, in a complex value; an extension's attribute, in its block), nor
  an extension's URN, nor an alias (``bridge.rules.user_keys``): no condition or mapping
  would read it, and the test would pass without testing what it says.
- ``lms.account`` keys are the LMS attributes the rule file maps; one that misspells a
  mapping attribute (``firstName`` for ``firstname``) is an error. Other keys are kept: an
  attribute a mapping no longer sends (the engine clears it).
- ``groups`` are appended to the user's ``groups`` as ``{value, display, type: direct}``,
  as ``bridge.provision.projection.person_document`` does; a bare displayName is also used
  as the value.
- The person id (and ``id``, when the user has none) is the user's ``id``, else its
  ``externalId``, else its ``userName``.
- ``given.lms`` friendly lists become the engine's projection (``course:REF`` …), tagged
  with the id of the rule of the file that assigns REF, when there is one.
- Rule coverage counts every assignment and every mapping attribute of every rule file of
  the rule set (a rule file without fixtures counts as never exercised). An assignment is
  exercised when a test's person meets its condition or gets an intent tagged with its id;
  a mapping attribute when it is sent in an ``upsert_account`` or named by a problem.
  Failing tests count too. ``FixtureReport.ok(threshold)`` takes a percentage (0–100).
- A malformed fixture file raises ``RuleErrors``: every problem of every file at once, each
  a ``RuleError`` at file:line:col (as ``load_ruleset`` does), before any test runs; a
  ``given.user`` that is not a valid SCIM User is such a problem. A condition that cannot
  be evaluated is a reported problem of the test (see ``bridge.rules.verdicts``); an
  exception out of the engine fails the test it happened in, not the run.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import date
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from scim2_models import Path as ScimPath
from scim2_models import SCIMException
from scim2_models.path import AttrPath

from bridge.rules.attributes import UserSchema
from bridge.rules.engine import Intent
from bridge.rules.engine import IntentKind
from bridge.rules.engine import state_key
from bridge.rules.loader import Node
from bridge.rules.model import Assignment
from bridge.rules.model import AssignmentKind
from bridge.rules.model import Mark
from bridge.rules.model import RuleError
from bridge.rules.model import RuleFile
from bridge.rules.model import RuleSet
from bridge.rules.user_keys import UserKeys
from bridge.rules.user_keys import near_miss
from bridge.rules.verdicts import person_model
from bridge.schemas import Catalog
from bridge.schemas import scim_exception

FIXTURE_SUFFIX = ".test.yaml"
MERGE_KEY = "<<"
INTENT_KEYS = ("kind", "ref", "rule", "target", "person", "data")
_FILE_KEYS = ("rules", "tests", "anchors", "description")
_TEST_KEYS = ("name", "given", "expect", "description")
_GIVEN_KEYS = ("user", "groups", "lms", "admitted")
_LMS_KEYS = ("account", "active", "enrolled", "suspended", "cohorts", "paths", "assignments")
_EXPECT_KEYS = ("intents", "includes", "excludes", "in_scope", "problems", "idempotent")
# given.lms friendly list → (state key prefix, assignment kind, status)
_FRIENDLY = {
    "enrolled": ("course", AssignmentKind.enrolment, "active"),
    "suspended": ("course", AssignmentKind.enrolment, "suspended"),
    "cohorts": ("cohort", AssignmentKind.cohort, "active"),
    "paths": ("path", AssignmentKind.path, "active"),
}


def fixture_files(directory: Path) -> list[Path]:
    """The fixture files of a rules directory (``*.test.yaml``), sorted."""
    return sorted(directory.glob(f"*{FIXTURE_SUFFIX}"))


# ---------------------------------------------------------------------------------------
# The parsed form


@dataclass(frozen=True)
class ExpectedIntent:
    """An intent a test expects (or excludes), compared only on the keys it gives."""

    fields: dict[str, Any]
    mark: Mark

    def matches(self, intent: Intent) -> bool:
        actual = intent.as_dict()
        for key, expected in self.fields.items():
            if key == "data":
                data = actual.get("data", {})
                if any(data.get(k) != v for k, v in expected.items()):
                    return False
            elif actual.get(key) != expected:
                return False
        return True

    def __str__(self) -> str:
        text = str(self.fields.get("kind", "*"))
        if "ref" in self.fields:
            text += f" {self.fields['ref']}"
        for key in ("rule", "target", "person"):
            if key in self.fields:
                text += f" {key}={self.fields[key]}"
        if "data" in self.fields:
            text += f" data={_compact(self.fields['data'])}"
        return text


@dataclass(frozen=True)
class Expectation:
    intents: tuple[ExpectedIntent, ...] | None = None
    includes: tuple[ExpectedIntent, ...] = ()
    excludes: tuple[ExpectedIntent, ...] = ()
    in_scope: bool | None = None
    problems: tuple[str, ...] | None = None
    idempotent: bool = False


@dataclass(frozen=True)
class Fixture:
    """One test: a person, their prior LMS state, what the rules must produce."""

    name: str
    mark: Mark
    rule_file: RuleFile
    person_id: str
    user: dict[str, Any]
    projected: dict[str, Any] | None
    admitted: bool
    expect: Expectation


# ---------------------------------------------------------------------------------------
# Reading fixture files


def _close(word: str, options: list[str] | tuple[str, ...]) -> str:
    found = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean {found[0]!r}?" if found else f"one of: {', '.join(options)}"


def _fields(node: Node, errors: list[RuleError]) -> dict[str, Node]:
    """A mapping node's children, with YAML merge keys (``<<: *anchor``) applied."""
    out: dict[str, Node] = {}
    merge = node.value.get(MERGE_KEY)
    if merge is not None:
        sources = merge.value if isinstance(merge.value, list) else [merge]
        for source in sources:
            if not isinstance(source.value, dict):
                errors.append(
                    RuleError(
                        source.mark,
                        "`<<` merges a mapping",
                        text=source.text,
                        hint="write `<<: *anchor` naming a mapping",
                    )
                )
                continue
            for key, child in _fields(source, errors).items():
                out.setdefault(key, child)
    for key, child in node.value.items():
        if key != MERGE_KEY:
            out[key] = child
    return out


def _plain(node: Node, errors: list[RuleError]) -> Any:
    if isinstance(node.value, dict):
        return {key: _plain(child, errors) for key, child in _fields(node, errors).items()}
    if isinstance(node.value, list):
        return [_plain(child, errors) for child in node.value]
    if isinstance(node.value, datetime | date):  # unquoted YAML dates: JSON has strings
        return node.value.isoformat()
    return node.value


def _mapping(
    node: Node, where: str, allowed: tuple[str, ...], errors: list[RuleError]
) -> dict[str, Node] | None:
    if not isinstance(node.value, dict):
        errors.append(RuleError(node.mark, f"{where} must be a mapping", text=node.text))
        return None
    fields = _fields(node, errors)
    for key, child in fields.items():
        if key not in allowed:
            errors.append(
                RuleError(
                    child.mark,
                    f"unknown key {key!r} in {where}",
                    text=key,
                    hint=_close(key, allowed),
                )
            )
    return fields


def _list(node: Node, where: str, errors: list[RuleError]) -> list[Node] | None:
    if node.value is None:
        return []
    if not isinstance(node.value, list):
        errors.append(RuleError(node.mark, f"{where} must be a list", text=node.text))
        return None
    items: list[Node] = node.value
    return items


def _bool(node: Node | None, where: str, default: bool, errors: list[RuleError]) -> bool:
    if node is None or node.value is None:
        return default
    if not isinstance(node.value, bool):
        errors.append(RuleError(node.mark, f"{where} must be true or false", text=node.text))
        return default
    return node.value


def _rule_names(rule_file: RuleFile) -> list[str]:
    return [rule_file.name, *(a.id for a in rule_file.assignments)]


def _expected_intent(
    node: Node, where: str, rule_file: RuleFile, errors: list[RuleError]
) -> ExpectedIntent | None:
    kinds = [kind.value for kind in IntentKind]
    if isinstance(node.value, str):
        parts = node.value.split(maxsplit=1)
        fields: dict[str, Any] = {"kind": parts[0]} if parts else {}
        if len(parts) > 1:
            fields["ref"] = parts[1].strip()
    elif isinstance(node.value, dict):
        children = _mapping(node, where, INTENT_KEYS, errors)
        if children is None:
            return None
        fields = {key: _plain(child, errors) for key, child in children.items()}
        data = fields.get("data")
        if data is not None and not isinstance(data, dict):
            errors.append(
                RuleError(children["data"].mark, f"{where}: data must be a mapping", text=str(data))
            )
            return None
        for key in ("ref", "rule", "target", "person"):
            if key in fields and fields[key] is not None:
                fields[key] = str(fields[key])
    else:
        errors.append(
            RuleError(
                node.mark,
                f"{where} must be `kind [ref]` or a mapping",
                text=node.text,
                hint="e.g. `enrol BEN-2026` or {kind: enrol, ref: BEN-2026, rule: RULE_ID}",
            )
        )
        return None
    kind = fields.get("kind")
    if kind is None:
        errors.append(
            RuleError(node.mark, f"{where} needs a kind", hint=f"one of: {', '.join(kinds)}")
        )
        return None
    if kind not in kinds:
        errors.append(
            RuleError(
                node.mark,
                f"unknown intent kind {kind!r}",
                text=str(kind),
                hint=_close(str(kind), kinds),
            )
        )
        return None
    rule = fields.get("rule")
    if rule is not None and rule != "?" and rule not in _rule_names(rule_file):
        errors.append(
            RuleError(
                node.mark,
                f"no rule {rule!r} in rule file {rule_file.name!r}",
                text=str(rule),
                hint=_close(str(rule), _rule_names(rule_file)),
            )
        )
        return None
    return ExpectedIntent(fields, node.mark)


def _expected_intents(
    node: Node | None, where: str, rule_file: RuleFile, errors: list[RuleError]
) -> tuple[ExpectedIntent, ...] | None:
    if node is None:
        return None
    items = _list(node, where, errors)
    if items is None:
        return None
    found = [
        _expected_intent(item, f"{where} #{index + 1}", rule_file, errors)
        for index, item in enumerate(items)
    ]
    return tuple(item for item in found if item is not None)


def _expectation(node: Node, rule_file: RuleFile, errors: list[RuleError]) -> Expectation | None:
    fields = _mapping(node, "expect", _EXPECT_KEYS, errors)
    if fields is None:
        return None
    if not fields:
        errors.append(
            RuleError(
                node.mark,
                "expect needs at least one expectation",
                hint=f"one of: {', '.join(_EXPECT_KEYS)}",
            )
        )
        return None
    problems: tuple[str, ...] | None = None
    problems_node = fields.get("problems")
    if problems_node is not None:
        items = _list(problems_node, "expect.problems", errors) or []
        texts = []
        for item in items:
            if not isinstance(item.value, str) or not item.value:
                errors.append(
                    RuleError(item.mark, "expect.problems lists substrings", text=item.text)
                )
                continue
            texts.append(item.value)
        problems = tuple(texts)
    in_scope_node = fields.get("in_scope")
    return Expectation(
        intents=_expected_intents(fields.get("intents"), "expect.intents", rule_file, errors),
        includes=_expected_intents(fields.get("includes"), "expect.includes", rule_file, errors)
        or (),
        excludes=_expected_intents(fields.get("excludes"), "expect.excludes", rule_file, errors)
        or (),
        in_scope=None
        if in_scope_node is None
        else _bool(in_scope_node, "expect.in_scope", False, errors),
        problems=problems,
        idempotent=_bool(fields.get("idempotent"), "expect.idempotent", False, errors),
    )


def _alias_target(name: str, rule_file: RuleFile) -> AttrPath | None:
    for alias, path in rule_file.aliases.items():
        if alias.lower() == name.lower():
            try:
                node = ScimPath(path).ast
            except (SCIMException, ValueError):
                return None
            return node if isinstance(node, AttrPath) else None
    return None


def _key(holder: dict[str, Any], name: str) -> str:
    """The key ``holder`` spells ``name`` with (attribute names ignore case), or ``name``."""
    return next((key for key in holder if key.lower() == name.lower()), name)


def _user(
    node: Node, rule_file: RuleFile, keys: UserKeys, errors: list[RuleError]
) -> dict[str, Any] | None:
    """The person's SCIM JSON, with the rule file's aliases expanded in its top-level keys.

    Merge keys (``<<: *base``) are shallow, as in YAML, except for extensions: an extension
    block (URN key) or an alias written next to them sets only the attributes it names
    (``roleCodes: [X]`` keeps the base's other HR attributes). Every key written is checked
    (``keys``): an attribute of the schemas, an extension's URN or an alias.
    """
    if not isinstance(node.value, dict):
        errors.append(
            RuleError(node.mark, "given.user must be a mapping (SCIM JSON)", text=node.text)
        )
        return None
    keys.check(node, rule_file.aliases, errors)
    doc: dict[str, Any] = {}
    merge = node.value.get(MERGE_KEY)
    if merge is not None:
        sources = merge.value if isinstance(merge.value, list) else [merge]
        for source in reversed(sources):  # the first source wins, as in YAML
            base = _user(source, rule_file, keys, errors)
            if base is not None:
                for key, value in base.items():
                    doc[_key(doc, key)] = value
    explicit: dict[str, Any] = {}
    aliased: list[tuple[str, Node, AttrPath]] = []
    for key, child in node.value.items():
        if key == MERGE_KEY:
            continue
        target = None if ":" in key else _alias_target(key, rule_file)
        if target is None:
            explicit[key] = value = _plain(child, errors)
            base_value = doc.get(_key(doc, key))
            if ":" in key and isinstance(value, dict) and isinstance(base_value, dict):
                value = {**base_value, **value}  # an extension block adds to the base's
            doc[_key(doc, key)] = value
        else:
            aliased.append((key, child, target))
    written: set[str] = set()
    for key, child, target in aliased:
        where = str(target).lower()
        outer = target.uri or target.attr
        given = explicit.get(_key(explicit, outer))
        inner = target.attr if target.uri else target.sub_attr
        twice = where in written or (
            given is not None
            and (inner is None or (isinstance(given, dict) and _key(given, inner) in given))
        )
        if twice:
            errors.append(
                RuleError(
                    child.mark,
                    f"{key!r} is given twice (as the alias and as {target})",
                    text=key,
                    hint="write it once",
                )
            )
            continue
        written.add(where)
        holder: Any = doc
        for name in (target.uri, target.attr if target.sub_attr else None):
            if name is None:
                continue
            found = holder.get(_key(holder, name))
            copied = dict(found) if isinstance(found, dict) else {}
            holder[_key(holder, name)] = copied
            holder = copied
        leaf = target.sub_attr or target.attr
        holder[_key(holder, leaf)] = _plain(child, errors)
    return doc


def _groups(node: Node | None, errors: list[RuleError]) -> list[dict[str, Any]]:
    if node is None:
        return []
    out: list[dict[str, Any]] = []
    for item in _list(node, "given.groups", errors) or []:
        if isinstance(item.value, str | int) and not isinstance(item.value, bool):
            out.append({"value": str(item.value), "display": str(item.value), "type": "direct"})
            continue
        if isinstance(item.value, dict):
            fields = _mapping(item, "a group", ("value", "display", "type"), errors)
            if fields is None:
                continue
            group = {key: _plain(child, errors) for key, child in fields.items()}
            if "value" not in group and "display" not in group:
                errors.append(RuleError(item.mark, "a group needs value or display"))
                continue
            group.setdefault("value", group.get("display"))
            group.setdefault("type", "direct")
            out.append(group)
            continue
        errors.append(
            RuleError(item.mark, "a group is a displayName or {value, display}", text=item.text)
        )
    return out


def _account_keys(node: Node, rule_file: RuleFile, errors: list[RuleError]) -> None:
    """A key of ``given.lms.account`` that misspells an attribute the rule file maps."""
    mapped = [mapping.attribute for mapping in rule_file.mapping]
    for key, child in _fields(node, []).items():
        meant = near_miss(key, mapped)
        if meant is not None:
            errors.append(
                RuleError(
                    child.mark,
                    f"given.lms.account has {key!r}, which the rule file does not map: "
                    f"did you mean {meant!r}?",
                    text=key,
                    hint=f"the account holds the LMS attributes of the mapping: "
                    f"{', '.join(mapped)}",
                )
            )


def _projection(
    node: Node | None, rule_file: RuleFile, errors: list[RuleError]
) -> dict[str, Any] | None:
    if node is None or node.value is None:
        return None
    fields = _mapping(node, "given.lms", _LMS_KEYS, errors)
    if fields is None:
        return None
    account: Any = {}
    if "account" in fields:
        account = _plain(fields["account"], errors)
        if not isinstance(account, dict):
            errors.append(RuleError(fields["account"].mark, "given.lms.account must be a mapping"))
            account = {}
        _account_keys(fields["account"], rule_file, errors)
    assignments: dict[str, Any] = {}
    raw_node = fields.get("assignments")
    if raw_node is not None and raw_node.value is not None:
        raw = _plain(raw_node, errors)
        if not isinstance(raw, dict) or not all(
            isinstance(v, dict) and "status" in v for v in raw.values()
        ):
            errors.append(
                RuleError(
                    raw_node.mark,
                    "given.lms.assignments maps `course:REF` to {status, rule, kind, ref}",
                    hint="or write enrolled: [REF], suspended: [REF], cohorts: [REF]",
                )
            )
        else:
            assignments.update(raw)
    known: dict[str, Assignment] = {}
    for assignment in rule_file.assignments:
        known.setdefault(state_key(assignment), assignment)
    for key, (prefix, kind, status) in _FRIENDLY.items():
        list_node = fields.get(key)
        if list_node is None:
            continue
        for item in _list(list_node, f"given.lms.{key}", errors) or []:
            if not isinstance(item.value, str | int) or isinstance(item.value, bool):
                errors.append(
                    RuleError(item.mark, f"given.lms.{key} lists {prefix} ids", text=item.text)
                )
                continue
            ref = str(item.value)
            state = f"{prefix}:{ref}"
            if state in assignments:
                errors.append(
                    RuleError(item.mark, f"{state} is given twice in given.lms", text=ref)
                )
                continue
            entry: dict[str, Any] = {"status": status, "kind": kind.value, "ref": ref}
            if state in known:
                entry["rule"] = known[state].id
            assignments[state] = entry
    return {
        "account": account,
        "active": _bool(fields.get("active"), "given.lms.active", True, errors),
        "assignments": assignments,
    }


def _fixture(
    node: Node,
    index: int,
    rule_file: RuleFile,
    catalog: Catalog,
    names: set[str],
    keys: UserKeys,
    errors: list[RuleError],
) -> Fixture | None:
    where = f"test #{index + 1}"
    fields = _mapping(node, where, _TEST_KEYS, errors)
    if fields is None:
        return None
    before = len(errors)
    name_node = fields.get("name")
    name = name_node.value if name_node is not None else None
    if not isinstance(name, str) or not name.strip():
        errors.append(RuleError(node.mark, f"{where} needs a `name:` (text)"))
    elif name in names:
        assert name_node is not None
        errors.append(RuleError(name_node.mark, f"duplicate test name {name!r}", text=name))
    else:
        names.add(name)
    given_node, expect_node = fields.get("given"), fields.get("expect")
    if given_node is None:
        errors.append(RuleError(node.mark, f"{where} needs `given:`", hint="given: {user: {...}}"))
    if expect_node is None:
        errors.append(
            RuleError(node.mark, f"{where} needs `expect:`", hint="expect: {intents: [...]}")
        )
    if given_node is None or expect_node is None:
        return None
    given = _mapping(given_node, "given", _GIVEN_KEYS, errors)
    expect = _expectation(expect_node, rule_file, errors)
    if given is None or expect is None:
        return None
    user_node = given.get("user")
    if user_node is None:
        errors.append(RuleError(given_node.mark, "given needs `user:` (the person's SCIM JSON)"))
        return None
    user = _user(user_node, rule_file, keys, errors)
    groups = _groups(given.get("groups"), errors)
    projected = _projection(given.get("lms"), rule_file, errors)
    admitted = _bool(given.get("admitted"), "given.admitted", True, errors)
    if user is None or len(errors) > before:
        return None
    if groups:
        existing = user.get("groups")
        user["groups"] = [*(existing if isinstance(existing, list) else []), *groups]
    person_id = str(
        user.get("id") or user.get("externalId") or user.get("userName") or f"person-{index + 1}"
    )
    user.setdefault("id", person_id)
    try:
        person_model(catalog, user)
    except ValueError as exc:
        errors.append(
            RuleError(
                user_node.mark,
                f"given.user is not a valid SCIM User: {_first_line(exc)}",
                hint="attribute types follow schemas/*.json",
            )
        )
        return None
    assert isinstance(name, str)
    return Fixture(name, node.mark, rule_file, person_id, user, projected, admitted, expect)


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return str(scim_exception(exc).detail)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:3])


def parse_fixture_file(
    root: Node, ruleset: RuleSet, catalog: Catalog, errors: list[RuleError]
) -> list[Fixture]:
    """The tests of one fixture file (problems are appended to ``errors``)."""
    fields = _mapping(root, "a fixture file", _FILE_KEYS, errors)
    if fields is None:
        return []
    rules_node = fields.get("rules")
    if rules_node is None or not isinstance(rules_node.value, str):
        errors.append(
            RuleError(
                rules_node.mark if rules_node else root.mark,
                "a fixture file names the rule file it tests",
                hint="rules: benefits-2026",
            )
        )
        return []
    rule_file = ruleset.file(rules_node.value)
    if rule_file is None:
        errors.append(
            RuleError(
                rules_node.mark,
                f"no rule file named {rules_node.value!r}",
                text=rules_node.value,
                hint=_close(rules_node.value, [f.name for f in ruleset.files]),
            )
        )
        return []
    tests_node = fields.get("tests")
    items = _list(tests_node, "tests", errors) if tests_node is not None else []
    if not items:
        if items is not None:
            errors.append(
                RuleError(
                    tests_node.mark if tests_node else root.mark,
                    "a fixture file needs `tests:` (a list)",
                    hint="tests: [{name: ..., given: {user: {...}}, expect: {intents: [...]}}]",
                )
            )
        return []
    names: set[str] = set()
    keys = UserKeys(UserSchema(catalog))
    found = [
        _fixture(item, index, rule_file, catalog, names, keys, errors)
        for index, item in enumerate(items)
    ]
    return [fixture for fixture in found if fixture is not None]


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))
