"""The generated parts of the rule-language reference (pure): ``bridge rules docs``.

The reference (``rules/README.md``) is written by hand around sections that come from the code,
so they cannot drift: the keys of a rule file and of ``targets.yaml`` (from the JSON Schemas of
:mod:`bridge.rules.json_schema`), the transforms with an example each (run by the tests), the
attributes and canonical values conditions can name (from ``schemas/``), the account fields of
each target kind and the intent kinds. A section sits between two marker lines::

    <!-- BEGIN GENERATED: transforms (bridge rules docs) -->
    …
    <!-- END GENERATED: transforms -->

:func:`fill` rewrites every marked section of a document; a document is stale when filling
it changes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass

from scim2_models import Attribute
from scim2_models import Schema as ScimSchema

from bridge.rules.checker import _TARGET_HOLDS as _HOLDS
from bridge.rules.engine import IntentKind
from bridge.rules.feeds import ATTRIBUTES as FEED_ATTRIBUTES
from bridge.rules.feeds import EXPORT_KEYS
from bridge.rules.feeds import FEED_KEYS
from bridge.rules.feeds import FETCH_KEYS
from bridge.rules.feeds import FORMATS
from bridge.rules.feeds import MAPPING_KEYS
from bridge.rules.feeds import SCHEMES
from bridge.rules.json_schema import CANVAS_OPTIONS
from bridge.rules.json_schema import COMMON_OPTIONS
from bridge.rules.json_schema import DATE
from bridge.rules.json_schema import DURATION
from bridge.rules.json_schema import ENV_VARIABLE
from bridge.rules.json_schema import INTERVAL
from bridge.rules.json_schema import MOODLE_OPTIONS
from bridge.rules.json_schema import TIME
from bridge.rules.json_schema import Schema
from bridge.rules.json_schema import fixtures_schema
from bridge.rules.json_schema import rules_schema
from bridge.rules.json_schema import targets_schema
from bridge.rules.loader import TARGET_KINDS
from bridge.rules.model import AssignmentKind
from bridge.rules.target_fields import CANVAS_USER_FIELDS
from bridge.rules.target_fields import MOODLE_USER_FIELDS
from bridge.rules.transforms import TRANSFORMS
from bridge.schemas import GROUP_SCHEMA
from bridge.schemas import USER_SCHEMA
from bridge.schemas import Catalog

_BEGIN = re.compile(r"^<!-- BEGIN GENERATED: ([a-z-]+) .*-->$", re.MULTILINE)


@dataclass(frozen=True)
class TransformExample:
    """One row of the transforms table: the transform as written, what it does, in → out."""

    written: str
    does: str
    given: str
    gives: str


TRANSFORM_EXAMPLES: tuple[TransformExample, ...] = (
    TransformExample("lower", "lowercase", '"J.Smith"', '"j.smith"'),
    TransformExample("upper", "uppercase", '"ben_choice_2026"', '"BEN_CHOICE_2026"'),
    TransformExample("trim", "removes surrounding spaces", '"  Jane "', '"Jane"'),
    TransformExample(
        "ascii",
        "folds to ASCII: accents dropped, ø ß æ œ ł đ ð þ ı spelled out, letters with no ASCII "
        "spelling (Cyrillic, CJK) dropped",
        '"Józef.Nowak-Øster"',
        '"Jozef.Nowak-Oster"',
    ),
    TransformExample(
        '{split: ";"}',
        "text to a list (default separator: a comma), empty items dropped",
        '"a; b;;c"',
        "[a, b, c]",
    ),
    TransformExample(
        '{join: ";"}',
        "a list to text (default separator: a comma)",
        "[BEN_CHOICE_2026, MANAGER]",
        '"BEN_CHOICE_2026;MANAGER"',
    ),
    TransformExample('{default: "-"}', "a value for a missing or empty one", '""', '"-"'),
    TransformExample(
        "{map: {FT: full-time, PT: part-time}}",
        "a lookup table; values not in it pass through",
        "PT",
        "part-time",
    ),
    TransformExample(
        "{map: {table: {FT: full-time}, default: other}}",
        "a lookup table with a value for the rest",
        "XX",
        "other",
    ),
    TransformExample(
        '{template: "{value}@example.com"}',
        "text around the value",
        "jsmith",
        "jsmith@example.com",
    ),
    TransformExample(
        '{replace: {pattern: "[^a-z0-9_.@-]", with: ""}}',
        "a regular-expression replacement",
        '"o\'neil@example.com"',
        '"oneil@example.com"',
    ),
)
"""Each transform at least once; ``tests/test_rules_docs.py`` runs every example."""

INTENT_MEANINGS = {
    IntentKind.upsert_account: "create the account, or update the fields that changed",
    IntentKind.reactivate_account: "lift an account's suspension (the person is back in scope)",
    IntentKind.enrol: "enrol in a course (or reactivate a suspended enrolment)",
    IntentKind.add_cohort_member: "add to a cohort (Canvas: a group)",
    IntentKind.suspend_enrolment: "suspend an enrolment, progress kept (`otherwise: suspend`)",
    IntentKind.unenrol: "remove an enrolment (`otherwise: unenrol`)",
    IntentKind.remove_cohort_member: "remove from a cohort",
    IntentKind.suspend_account: "suspend the account (out of scope, or `active` false)",
}
"""Every intent kind, for the fixture format (``expect.intents``) and the plan."""


# ---------------------------------------------------------------------------------------------
# Keys, from the JSON Schemas


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_PATTERNS = {
    DATE: "a date `YYYY-MM-DD`",
    TIME: 'a time `"HH:MM"`',
    INTERVAL: "an interval: `30m`, `1h`, `1d`",
    DURATION: "a duration: `P30D`, `P4W`",
    ENV_VARIABLE: "`env:VARIABLE`",
}


def type_text(schema: Schema) -> str:
    """A schema's type as a reader writes it: ``text``, ``1``, ``suspend | unenrol | keep``."""
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " | ".join(f"`{value}`" for value in schema["enum"] if value is not None)
    if "$ref" in schema:
        return "a " + str(schema["$ref"]).rsplit("/", 1)[-1]
    if "pattern" in schema and schema["pattern"] in _PATTERNS:
        return _PATTERNS[schema["pattern"]]
    if "type" not in schema and "oneOf" in schema:
        return " or ".join(type_text(form) for form in schema["oneOf"])
    names = {
        "string": "text",
        "integer": "integer",
        "number": "number",
        "boolean": "`true` | `false`",
        "object": "mapping",
        "array": "list",
        "null": "nothing",
    }
    kinds = schema.get("type")
    if kinds is None:
        return "any"
    listed = kinds if isinstance(kinds, list) else [kinds]
    return " or ".join(names[kind] for kind in listed)


def _object_form(schema: Schema) -> Schema | None:
    if schema.get("type") == "object" and "properties" in schema:
        return schema
    for form in schema.get("oneOf", []):
        found = _object_form(form)
        if found is not None:
            return found
    return None


def keys(schema: Schema, prefix: str = "") -> Iterator[tuple[str, Schema]]:
    """Every key a document of ``schema`` may hold, as a dotted path (``scope.pilot.ends``,
    ``enrolments[].due``, ``mapping.FIELD.from``), depth first."""
    definitions = schema.get("$defs", {})

    def walk(node: Schema, path: str) -> Iterator[tuple[str, Schema]]:
        if "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        form = _object_form(node)
        if form is not None:
            for key, child in form["properties"].items():
                child_path = f"{path}.{key}" if path else key
                yield child_path, child
                yield from walk(child, child_path)
            return
        items = node.get("items")
        if node.get("type") == "array" and isinstance(items, dict) and _object_form(items):
            yield from walk(items, f"{path}[]")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and ("$ref" in extra or _object_form(extra)):
            yield from walk(extra, f"{path}.NAME")

    yield from walk(schema, prefix)


def _describe(schema: Schema) -> str:
    if "description" in schema:
        return str(schema["description"])
    for form in schema.get("oneOf", []):
        if "description" in form:
            return str(form["description"])
    return ""


def key_table(schema: Schema) -> str:
    """A markdown table of every key of ``schema``: type, default, meaning."""
    required = _required_paths(schema)
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for path, child in keys(schema):
        default = (
            "required"
            if path in required
            else (f"`{json.dumps(child['default'])}`" if "default" in child else "")
        )
        lines.append(
            f"| `{path}` | {_cell(type_text(child))} | {default} | {_cell(_describe(child))} |"
        )
    return "\n".join(lines)


def _required_paths(schema: Schema) -> set[str]:
    found = {str(key) for key in schema.get("required", [])}
    for path, child in keys(schema):
        form = _object_form(child) or {}
        items = child.get("items")
        if isinstance(items, dict):
            form = _object_form(items) or form
            path = f"{path}[]"
        found |= {f"{path}.{key}" for key in form.get("required", [])}
    targets = schema.get("properties", {}).get("targets", {}).get("additionalProperties")
    if isinstance(targets, dict):
        found |= {f"targets.NAME.{key}" for key in targets.get("required", [])}
    return found


def options_table() -> str:
    """The options of ``moodle`` and ``canvas`` targets (``rest`` and ``scim``: examples)."""
    lines = ["| kind | option | type | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for kind, listed in (("moodle", MOODLE_OPTIONS), ("canvas", CANVAS_OPTIONS)):
        for name, schema in {**listed, **COMMON_OPTIONS}.items():
            default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
            lines.append(
                f"| `{kind}` | `{name}` | {_cell(type_text(schema))} | {default} "
                f"| {_cell(_describe(schema))} |"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Transforms, fields, intents


def transforms_table() -> str:
    """The transforms with an example each (``TRANSFORM_EXAMPLES``)."""
    lines = ["| written | what it does | example |", "| --- | --- | --- |"]
    for row in TRANSFORM_EXAMPLES:
        lines.append(f"| `{row.written}` | {_cell(row.does)} | `{row.given}` → `{row.gives}` |")
    lines.append("")
    lines.append("Known transforms: " + ", ".join(f"`{name}`" for name in TRANSFORMS) + ".")
    return "\n".join(lines)


def fields_table() -> str:
    """The account fields a mapping may set, and what each target kind holds (a rule file's
    cohorts on a kind without cohorts are an error of ``bridge rules check``)."""

    def listed(fields: frozenset[str]) -> str:
        return ", ".join(f"`{name}`" for name in sorted(fields))

    rows = {
        "moodle": f"{listed(MOODLE_USER_FIELDS)}, `auth`; any other key is a custom profile "
        "field the site must define (option `custom_profile_fields`)",
        "canvas": f"{listed(CANVAS_USER_FIELDS)}",
        "rest": "any key: the target's request templates name what they send",
        "scim": "any key: the bridge's account vocabulary or SCIM's own (option `attributes`)",
    }
    lines = ["| target kind | mapping keys | holds |", "| --- | --- | --- |"]
    for kind in TARGET_KINDS:
        holds = ["accounts", *(f"{held.value}s" for held in AssignmentKind if held in _HOLDS[kind])]
        lines.append(f"| `{kind}` | {rows[kind]} | {', '.join(holds)} |")
    return "\n".join(lines)


def intents_table() -> str:
    """Every intent kind and what it asks the LMS for."""
    lines = ["| intent kind | what it does |", "| --- | --- |"]
    lines += [f"| `{kind.value}` | {INTENT_MEANINGS[kind]} |" for kind in IntentKind]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Attributes, from schemas/


def _flags(attribute: Attribute) -> str:
    flags = []
    if attribute.multi_valued:
        flags.append("multi-valued")
    if attribute.case_exact is not None and bool(attribute.case_exact.value):
        flags.append("case-exact")
    if attribute.canonical_values:
        flags.append("values: " + ", ".join(f"`{v}`" for v in attribute.canonical_values))
    return "; ".join(flags)


def _attribute_rows(prefix: str, attributes: list[Attribute]) -> Iterator[str]:
    for attribute in attributes:
        written = f"{prefix}{attribute.name}"
        kind = str(attribute.type.value if attribute.type is not None else "")
        yield f"| `{written}` | {kind} | {_cell(_flags(attribute))} |"
        for sub in attribute.sub_attributes or []:
            sub_kind = str(sub.type.value if sub.type is not None else "")
            yield f"| `{written}.{sub.name}` | {sub_kind} | {_cell(_flags(sub))} |"


def attributes_catalogue(catalog: Catalog) -> str:
    """The attributes a condition or a mapping source can name: the User schema, then each
    extension of the User resource type (written with its URN, or through an alias)."""
    parts: list[str] = []
    header = ["| written | type | notes |", "| --- | --- | --- |"]

    def section(schema: ScimSchema | None, title: str, prefix: str) -> None:
        if schema is None:
            return
        parts.append(f"#### {title}")
        parts.append("")
        parts.extend(header)
        parts.extend(_attribute_rows(prefix, list(schema.attributes or [])))
        parts.append("")

    common = [
        "| `id` | string | case-exact; the bridge's id of the person |",
        "| `externalId` | string | case-exact; the IdP's or HR system's id (employee id) |",
        "| `meta.created`, `meta.lastModified` | dateTime | |",
    ]
    parts += ["#### Every resource (RFC 7643 §3.1)", "", *header, *common, ""]
    section(catalog.schema(USER_SCHEMA), f"User (`{USER_SCHEMA}`)", "")
    for urn in catalog.extension_urns("User"):
        extension = catalog.schema(urn)
        section(extension, f"User extension `{urn}`", f"{urn}:")
        if extension is not None:
            parts.append("Aliases for a rule file (`aliases:`), to write the short names:")
            parts.append("")
            parts.append("```yaml")
            parts.append("aliases:")
            parts += [f"  {a.name}: {urn}:{a.name}" for a in extension.attributes or []]
            parts.append("```")
            parts.append("")
    group = catalog.schema(GROUP_SCHEMA)
    if group is not None:
        names = ", ".join(f"`{a.name}`" for a in group.attributes or [])
        parts.append(f"Groups (`{GROUP_SCHEMA}`: {names}) are not what a condition tests:")
        parts.append('a person\'s groups are their `groups` attribute (`groups[display eq "…"]`).')
    return "\n".join(parts).rstrip()


# ---------------------------------------------------------------------------------------------
# Sections and documents

FEED_KEY_MEANINGS: dict[str, tuple[str, str, str]] = {
    "signature": (
        "text",
        "`standard-webhooks`",
        f"how webhooks and export uploads are signed: {', '.join(SCHEMES)}",
    ),
    "secrets": (
        "list of `env:VARIABLE`",
        "required",
        "the variables holding the shared secrets, newest first (any one verifies: rotation)",
    ),
    "tolerance": ("duration (`5m`)", "`5m`", "how far `webhook-timestamp` may be from now"),
    "mapping": (
        "mapping",
        "required",
        "SCIM attribute (short name below) ← the HR record's field: one per attribute",
    ),
    "export": ("mapping", "csv, 90 %", "how the nightly full export is read, and fetched"),
    "export.format": ("text", "`csv`", f"one of {', '.join(FORMATS)} (CSV with a header row)"),
    "export.min_percent": (
        "number 0–100",
        "`90`",
        "an export with fewer people than this share of the last accepted one is refused",
    ),
    "export.delimiter": ("one character", "`,`", "the CSV column separator"),
    "export.source": (
        "path or URL",
        "none",
        "where the schedule reads the export: a file (relative to the rules directory) or an "
        "`https://` URL",
    ),
    "export.token": ("`env:VARIABLE`", "none", "a bearer token for a URL `source`"),
    "export.schedule": (
        '`nightly`, `hourly`, `{at: "HH:MM"}`, `{every: 6h}`',
        "none",
        "when `bridge serve` fetches and syncs `source` (job `sync` of `feed:NAME`)",
    ),
    "export.timezone": ("IANA name", "`UTC`", "the time zone of `export.schedule`"),
    "fetch": ("mapping", "none", "completes a thin event (an id only) from the HRIS's API"),
    "fetch.url": ("URL with `{externalId}`", "required", "where one person's record is read"),
    "fetch.token": ("`env:VARIABLE`", "none", "the HRIS API's bearer token"),
    "mapping.ATTRIBUTE.from": (
        "field or list of fields",
        "none",
        "the HR record's field; a list: the first one present (an export's column, a "
        "webhook's key)",
    ),
    "mapping.ATTRIBUTE.value": ("text", "none", "a constant instead of `from`"),
    "mapping.ATTRIBUTE.transforms": ("list", "none", "the rules' transforms, in order"),
    "mapping.ATTRIBUTE.required": (
        "true / false",
        "`false`",
        "a record without it is rejected, with the line and the fix",
    ),
}
"""What each key of ``feeds.yaml`` means (every key the loader takes must be here: tested)."""


def feed_keys() -> list[str]:
    """Every key ``feeds.yaml`` takes, as the loader knows them."""
    return [
        *FEED_KEYS,
        *(f"export.{key}" for key in EXPORT_KEYS),
        *(f"fetch.{key}" for key in FETCH_KEYS),
        *(f"mapping.ATTRIBUTE.{key}" for key in MAPPING_KEYS),
    ]


def feeds_table() -> str:
    """The keys of a feed in ``feeds.yaml``, then the SCIM attributes a mapping may set."""
    lines = ["| key (under `feeds.NAME`) | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key in feed_keys():
        kind, default, meaning = FEED_KEY_MEANINGS[key]
        lines.append(f"| `{key}` | {kind} | {default} | {_cell(meaning)} |")
    lines += ["", "| mapping attribute | SCIM attribute |", "| --- | --- |"]
    for short, (schema, path) in FEED_ATTRIBUTES.items():
        where = ".".join(path) if schema is None else f"{schema}:{'.'.join(path)}"
        lines.append(f"| `{short}` | `{where}` |")
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[Catalog], str]] = {
    "rule-file-keys": lambda _: key_table(rules_schema()),
    "targets-keys": lambda _: key_table(targets_schema()),
    "target-options": lambda _: options_table(),
    "fixture-keys": lambda _: key_table(fixtures_schema()),
    "account-fields": lambda _: fields_table(),
    "transforms": lambda _: transforms_table(),
    "attributes": attributes_catalogue,
    "intent-kinds": lambda _: intents_table(),
    "feed-keys": lambda _: feeds_table(),
}
"""Every generated section by name, in the order ``bridge rules docs`` prints them."""


def sections(catalog: Catalog) -> dict[str, str]:
    """Every section's markdown."""
    return {name: build(catalog) for name, build in SECTIONS.items()}


def begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED: {name} (bridge rules docs; do not edit by hand) -->"


def end(name: str) -> str:
    return f"<!-- END GENERATED: {name} -->"


def render(generated: dict[str, str]) -> str:
    """Every section, marked, one after the other (what ``bridge rules docs`` prints)."""
    return "\n\n".join(f"{begin(n)}\n{text}\n{end(n)}" for n, text in generated.items()) + "\n"


class DocsError(ValueError):
    """A document's markers are broken: a section without its end, an unknown section."""


def marked(document: str) -> list[str]:
    """The names of the sections a document marks, in order."""
    return _BEGIN.findall(document)


def fill(document: str, generated: dict[str, str]) -> str:
    """``document`` with each marked section's body replaced by the generated text."""
    out = document
    for name in marked(document):
        if name not in generated:
            raise DocsError(f"unknown generated section {name!r} (known: {', '.join(generated)})")
        pattern = re.compile(
            rf"^<!-- BEGIN GENERATED: {re.escape(name)} .*?-->\n.*?^{re.escape(end(name))}$",
            re.MULTILINE | re.DOTALL,
        )
        found = pattern.search(out)
        if found is None:
            raise DocsError(f"section {name!r} has no end marker: {end(name)}")
        body = f"{begin(name)}\n{generated[name]}\n{end(name)}"
        out = out[: found.start()] + body + out[found.end() :]
    return out


def yaml_blocks(document: str) -> list[tuple[int, str]]:
    """The fenced ```` ```yaml ```` blocks of a markdown document with the line each starts on
    (1-based, the first line of YAML)."""
    found = []
    for match in re.finditer(r"^```yaml\n(.*?)^```$", document, re.MULTILINE | re.DOTALL):
        line = document.count("\n", 0, match.start(1)) + 1
        found.append((line, match.group(1)))
    return found
