"""JSON Schemas (draft 2020-12) of the rule language and of the plan file, as plain data (pure).

``bridge rules schema`` writes them (committed under ``schemas/json/``): a rule file, the
``targets.yaml`` of a rules directory, a fixture file of ``bridge rules test``, and
``bridge-plan/1`` (:mod:`bridge.rules.plan_json`).
Editors with the YAML language server read them to complete keys and flag mistakes as the admin
types. The loader stays the judge (a schema cannot know the attributes of ``schemas/`` or the
courses of the LMS); the schemas catch what the shape shows: a misspelt key, a wrong type, an
unknown transform, target kind, job or intent kind. Names that have a home in the code (the
transforms, the target kinds, the jobs, the intent kinds, the plan's actions and states) are
read from it, so a schema cannot fall behind the loader.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from bridge.rules.engine import IntentKind
from bridge.rules.loader import TARGET_KINDS
from bridge.rules.model import Otherwise
from bridge.rules.plan_model import _KIND_OF_ACTION
from bridge.rules.plan_model import STATES
from bridge.rules.transforms import TRANSFORMS
from bridge.schedule import JOBS

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://scim-lms-bridge.example/schemas/"
FILES = {
    "rules": "rules.schema.json",
    "targets": "targets.schema.json",
    "fixtures": "rules-test.schema.json",
    "bridge-plan-1": "bridge-plan-1.schema.json",
}
"""Each schema by name, and the file ``bridge rules schema --out DIR`` writes it to."""

ENV_VARIABLE = r"^env:[A-Z_][A-Z0-9_]*$"
DURATION = r"^P(?:\d+W)?(?:\d+D)?$"
DATE = r"^\d{4}-\d{2}-\d{2}$"
TIME = r"^([01]?\d|2[0-3]):[0-5]\d$"
INTERVAL = r"^\d+\s*(m|min|h|d)$"


def _text(description: str, **more: Any) -> Schema:
    return {"type": "string", "description": description, **more}


def _object(
    description: str,
    properties: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    closed: bool = True,
) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


# ---------------------------------------------------------------------------------------------
# Transforms: a name, or {name: argument}

_ARGUMENTS: dict[str, Schema] = {
    "lower": {"type": "null"},
    "upper": {"type": "null"},
    "trim": {"type": "null"},
    "ascii": {"type": "null"},
    "split": {"type": ["string", "null"], "description": "the separator (default a comma)"},
    "join": {"type": ["string", "null"], "description": "the separator (default a comma)"},
    "default": {"description": "the value for a missing or empty one"},
    "map": {
        "type": "object",
        "minProperties": 1,
        "description": "a lookup table {from: to}, or {table: {from: to}, default: value}",
    },
    "template": {
        "type": "string",
        "pattern": r"\{value\}",
        "description": "text with {value} in it",
    },
    "replace": _object(
        "a regular-expression replacement",
        {"pattern": _text("a regular expression (Python re)"), "with": _text("the replacement")},
        required=("pattern",),
    ),
}


def transform_schema() -> Schema:
    """One step of a pipeline: a name (those that need no argument) or ``{name: argument}``."""
    bare = [name for name, spec in TRANSFORMS.items() if spec.check(None) is None]
    forms: list[Schema] = [{"type": "string", "enum": bare}]
    for name in TRANSFORMS:
        forms.append(
            {
                "type": "object",
                "properties": {name: _ARGUMENTS[name]},
                "required": [name],
                "additionalProperties": False,
            }
        )
    return {
        "description": "a transform: " + ", ".join(TRANSFORMS) + " (rules/README.md, Transforms)",
        "oneOf": forms,
    }


# ---------------------------------------------------------------------------------------------
# Rule files

_DURATION: Schema = {
    "oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": DURATION, "minLength": 2},
    ],
}


def _duration(description: str) -> Schema:
    return {**_DURATION, "description": description}


def _assignment(kind: str, ref_key: str, ref_meaning: str, *, durations: bool) -> Schema:
    properties: dict[str, Schema] = {
        "id": _text("unique rule id: intents, plans and the journal name the rule by it"),
        "when": _text("a SCIM filter: who gets it (aliases allowed)"),
        ref_key: {"type": ["string", "integer"], "description": ref_meaning},
        "otherwise": {
            "enum": [o.value for o in Otherwise],
            "default": Otherwise.suspend.value,
            "description": "what happens when `when` stops matching: suspend (progress kept), "
            "unenrol, keep",
        },
    }
    if kind == "enrolment":
        properties["role"] = _text("the role in the course", default="student")
    if durations:
        properties["due"] = _duration(
            "a training deadline the bridge keeps (days or P30D, P4W); never ends access"
        )
        properties["access_ends"] = _duration(
            "the learner's access ends this long after enrolment (days or P90D); at least a day"
        )
    return _object(
        f"an {kind} rule" if kind[0] in "aeiou" else f"a {kind} rule",
        properties,
        required=("id", "when", ref_key),
    )


def _job() -> Schema:
    return {
        "description": "nightly (= at 02:00), hourly (= every 1h), or {at: HH:MM} / {every: "
        "15m|1h|1d} with optional from/until dates (inclusive)",
        "oneOf": [
            {"enum": ["nightly", "daily", "hourly"]},
            {
                "type": "object",
                "properties": {
                    "at": _text('a 24-hour local time, in quotes: "02:00"', pattern=TIME),
                    "every": _text(
                        "an interval of a minute or more: 15m, 1h, 1d", pattern=INTERVAL
                    ),
                    "from": _text("the first local day it runs (YYYY-MM-DD)", pattern=DATE),
                    "until": _text("the last local day it runs, inclusive", pattern=DATE),
                },
                "additionalProperties": False,
                "oneOf": [{"required": ["at"]}, {"required": ["every"]}],
            },
        ],
    }


def _role_codes() -> Schema:
    code: Schema = {"type": "string", "minLength": 1, "pattern": r"^\S(.*\S)?$"}
    return {
        "type": "array",
        "description": "role codes HR sends, added to the catalogue of role-codes.yaml: CODE "
        'or {code: CODE, note: "why it exists"}',
        "items": {
            "oneOf": [
                code,
                _object(
                    "a role code with a note for people",
                    {"code": code, "note": _text("why the code exists (for people only)")},
                    required=("code",),
                ),
            ]
        },
    }


def _mapping_entry() -> Schema:
    pipeline: Schema = {
        "description": "a pipeline, run in order",
        "oneOf": [
            {"type": "array", "items": {"$ref": "#/$defs/transform"}},
            {"$ref": "#/$defs/transform"},
        ],
    }
    return {
        "oneOf": [
            _text("a SCIM attribute path: `attribute: userName` is short for {from: userName}"),
            {
                **_object(
                    "an LMS account field ← a SCIM attribute (or a constant), through transforms",
                    {
                        "from": _text(
                            'a SCIM attribute path (emails[type eq "work"].value picks one '
                            "value; aliases allowed)"
                        ),
                        "value": {"description": "a constant instead of `from`"},
                        "transforms": pipeline,
                        "required": {
                            "type": "boolean",
                            "default": False,
                            "description": "a person without the value gets no account and is "
                            "listed as a problem",
                        },
                        "on": {
                            "const": "create",
                            "description": "create: sent only when the account is created",
                        },
                    },
                ),
                "anyOf": [{"required": ["from"]}, {"required": ["value"]}],
            },
        ]
    }


def rules_schema() -> Schema:
    """A rule file (``rules/<name>.yaml``); ``role-codes.yaml`` and ``feeds.yaml`` are not."""
    filter_text = _text(
        'a SCIM filter (RFC 7644 §3.4.2.2): department eq "Claims" and active eq true'
    )
    pilot = _object(
        "a bounded first population, drawn by `bridge plan` + `bridge apply`",
        {
            "max_people": {
                "type": "integer",
                "minimum": 1,
                "description": "a cap on the people admitted",
            },
            "sample_percent": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 100,
                "description": "a stable-hash sample of the eligible people",
            },
            "seed": {
                "type": ["string", "integer"],
                "default": "",
                "description": "the hash seed of the sample and the draw order",
            },
            "ends": _text("after this date nobody new is admitted (people in stay)", pattern=DATE),
        },
    )
    scope = {
        "description": "who the rule file applies to: a SCIM filter, or {filter, pilot}",
        "oneOf": [
            filter_text,
            _object("the scope", {"filter": filter_text, "pilot": pilot}),
        ],
    }
    schedule = _object(
        "jobs `bridge serve` runs for this rule file (`bridge runs` lists them)",
        {
            "timezone": _text("an IANA time zone the times and days are in", default="UTC"),
            **{job: _job() for job in JOBS},
        },
    )
    safety = _object(
        "removal thresholds: a plan over them waits for `bridge approve`; live writes over them "
        "within `window` are held",
        {
            "max_removals": {"type": "integer", "minimum": 0, "description": "people"},
            "max_removals_percent": {
                "type": "number",
                "minimum": 0,
                "description": "of the people the rule file holds in scope",
            },
            "window": _text(
                "how far back live removals count (30m, 1h, 1d)", pattern=INTERVAL, default="1h"
            ),
        },
    )
    return {
        "$schema": DIALECT,
        "$id": BASE + FILES["rules"],
        "title": "bridge rule file",
        "description": "A rule file of the rules directory (rules/README.md is the reference).",
        "type": "object",
        "properties": {
            "version": {"const": 1, "description": "the rule language version: 1"},
            "name": _text("the rule file's name: plans, the journal and `bridge explain` use it"),
            "target": _text("a target of targets.yaml"),
            "aliases": {
                "type": "object",
                "description": "short names for long attribute paths, in conditions and "
                "mapping sources",
                "additionalProperties": {"type": "string"},
            },
            "scope": scope,
            "mapping": {
                "type": "object",
                "description": "the target's account fields, each ← a SCIM attribute",
                "additionalProperties": {"$ref": "#/$defs/mapping"},
            },
            "enrolments": {
                "type": "array",
                "description": "courses people get when a condition matches",
                "items": _assignment(
                    "enrolment",
                    "course",
                    "the course's idnumber (SIS course id on Canvas)",
                    durations=True,
                ),
            },
            "cohorts": {
                "type": "array",
                "description": "cohorts (Canvas: groups) people join when a condition matches",
                "items": _assignment("cohort", "cohort", "the cohort's id", durations=False),
            },
            "paths": {
                "type": "array",
                "description": "learning paths people get when a condition matches",
                "items": _assignment("path", "path", "the learning path's id", durations=True),
            },
            "safety": safety,
            "schedule": schedule,
            "role_codes": _role_codes(),
        },
        "required": ["version", "name", "target"],
        "additionalProperties": False,
        "$defs": {"transform": transform_schema(), "mapping": _mapping_entry()},
    }


# ---------------------------------------------------------------------------------------------
# targets.yaml

MOODLE_OPTIONS: dict[str, Schema] = {
    "student_role_id": {"type": "integer", "description": "Moodle's role id of `student`"},
    "role_ids": {
        "type": "object",
        "additionalProperties": {"type": "integer"},
        "description": "Moodle role ids by the rules' `role` ({teacher: 4})",
    },
    "custom_profile_fields": {
        "type": "array",
        "items": {"type": "string"},
        "description": "the short names of the custom profile fields the site defines",
    },
    "profile_fields": {
        "type": "object",
        "description": "rename an attribute's custom profile field ({title: jobtitle})",
    },
    "auth": _text("the auth kind of accounts whose rule file sets none", default="manual"),
    "auth_plugins": {
        "type": "array",
        "items": {"type": "string"},
        "description": "auth plugins the site has installed beyond the stock ones (saml2)",
    },
    "extended_username_chars": {
        "type": "boolean",
        "default": False,
        "description": "only where the site has extendedusernamechars on",
    },
    "batch_size": {"type": "integer", "minimum": 1, "default": 200, "description": "rows per call"},
    "max_input_vars": {
        "type": "integer",
        "minimum": 1,
        "default": 5000,
        "description": "the site's PHP max_input_vars: batches are cut to stay under it",
    },
    "preflight_account": {
        "type": "boolean",
        "default": True,
        "description": "false: `bridge targets check` writes no probe account",
    },
}
CANVAS_OPTIONS: dict[str, Schema] = {
    "account_id": {"type": ["integer", "string"], "description": "the Canvas account"},
    "authentication_provider_id": {
        "type": ["integer", "string"],
        "description": "the authentication provider of the logins the bridge creates",
    },
    "throttle_low_water": {"type": "number", "description": "pace below this bucket level"},
    "throttle_leak_per_s": {"type": "number", "default": 10, "description": "refill rate"},
    "throttle_pacing": {"type": "boolean", "default": True, "description": "false: no pacing"},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100},
    "unenrol_task": {"enum": ["conclude", "delete"], "default": "conclude"},
    "roles": {"type": "object", "description": "Canvas enrolment types by the rules' `role`"},
}
COMMON_OPTIONS: dict[str, Schema] = {
    "rate_limit_per_s": {"type": "number", "description": "calls per second to this LMS"},
    "rate_limit_burst": {"type": "integer", "default": 2, "description": "calls in a burst"},
    "timeout": {"type": "number", "description": "seconds per call"},
}
"""Options every kind reads. Options are open (a ``rest`` target's requests, a ``scim``
target's attributes): the listed ones are completed and typed, others pass."""


def _options(kind: str, listed: dict[str, Schema]) -> Schema:
    return {
        "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
        "then": {
            "properties": {
                "options": {"type": "object", "properties": {**COMMON_OPTIONS, **listed}}
            }
        },
    }


def targets_schema() -> Schema:
    """``targets.yaml``: the LMSs the rule files drive."""
    target = _object(
        "an LMS",
        {
            "kind": {"enum": list(TARGET_KINDS), "description": "the kind of LMS API"},
            "base_url": _text(
                "the LMS's base URL, or env:VARIABLE to read it from the environment",
                pattern=r"^(https?://|env:[A-Za-z_][A-Za-z0-9_]*$)",
            ),
            "credentials": {
                "type": "object",
                "description": "environment variables only (env:MOODLE_TOKEN), never secrets",
                "additionalProperties": {"type": "string", "pattern": ENV_VARIABLE},
            },
            "options": {"type": "object", "description": "the kind's options"},
        },
        required=("kind", "base_url"),
    )
    target["allOf"] = [_options("moodle", MOODLE_OPTIONS), _options("canvas", CANVAS_OPTIONS)]
    return {
        "$schema": DIALECT,
        "$id": BASE + FILES["targets"],
        "title": "bridge targets.yaml",
        "description": "The LMS targets of a rules directory (rules/README.md, Targets).",
        "type": "object",
        "properties": {
            "targets": {
                "type": "object",
                "description": "target name → target",
                "additionalProperties": target,
                "minProperties": 1,
            }
        },
        "required": ["targets"],
        "additionalProperties": False,
    }


# ---------------------------------------------------------------------------------------------
# Fixture files (*.test.yaml, bridge.rules.fixture_file)


def _intent_kinds() -> list[str]:
    return [kind.value for kind in IntentKind]


def _expected_intent() -> Schema:
    kinds = "|".join(_intent_kinds())
    return {
        "description": "an intent: `kind`, `kind ref`, or a mapping compared on the keys it gives",
        "oneOf": [
            {"type": "string", "pattern": f"^({kinds})( +\\S.*)?$"},
            _object(
                "an intent, compared on the keys given",
                {
                    "kind": {"enum": _intent_kinds()},
                    "ref": {"type": ["string", "integer"]},
                    "rule": _text("an assignment id, or the rule file's name (account intents)"),
                    "target": _text("the target's name"),
                    "person": _text("the person's id"),
                    "data": {"type": "object", "description": "compared key by key"},
                },
                required=("kind",),
            ),
        ],
    }


def fixtures_schema() -> Schema:
    """A fixture file of ``bridge rules test`` (``<rule file>.test.yaml``)."""
    texts: Schema = {"type": "array", "items": {"type": ["string", "integer"]}}
    intents: Schema = {"type": "array", "items": {"$ref": "#/$defs/intent"}}
    lms = _object(
        "what the LMS holds already (absent: the person was never provisioned)",
        {
            "account": {"type": "object", "description": "the account's fields the rules map"},
            "active": {
                "type": "boolean",
                "default": True,
                "description": "false: the account is suspended",
            },
            "enrolled": {**texts, "description": "courses with an active enrolment"},
            "suspended": {**texts, "description": "courses with a suspended enrolment"},
            "cohorts": {**texts, "description": "cohort memberships"},
            "paths": {**texts, "description": "learning paths"},
            "assignments": {"type": "object", "description": "the raw projection"},
        },
    )
    given = _object(
        "the person and what the LMS holds",
        {
            "user": {"type": "object", "description": "the person's SCIM User (aliases allowed)"},
            "groups": {
                "type": "array",
                "description": "group display names, or {value, display}",
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        _object("a group", {"value": _text("id"), "display": _text("name")}),
                    ]
                },
            },
            "lms": lms,
            "admitted": {
                "type": "boolean",
                "default": True,
                "description": "false: the capped pilot did not take the person",
            },
        },
        required=("user",),
    )
    expect = _object(
        "what the rules must produce (at least one key)",
        {
            "intents": {**intents, "description": "the exact list, in order"},
            "includes": {**intents, "description": "each is among the intents"},
            "excludes": {**intents, "description": "none is among the intents"},
            "in_scope": {"type": "boolean", "description": "the rule file's scope takes them"},
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": "substrings of the problems; [] means none",
            },
            "idempotent": {
                "type": "boolean",
                "default": False,
                "description": "running again on the result gives no intents",
            },
        },
    )
    expect["minProperties"] = 1
    test = _object(
        "one test",
        {
            "name": _text("what the test shows"),
            "description": _text("more words for people"),
            "given": given,
            "expect": expect,
        },
        required=("name", "given", "expect"),
    )
    return {
        "$schema": DIALECT,
        "$id": BASE + FILES["fixtures"],
        "title": "bridge rules test fixture file",
        "description": "Fixtures of a rule file (rules/README.md, Testing rule files).",
        "type": "object",
        "properties": {
            "rules": _text("the `name:` of the rule file under test"),
            "description": _text("more words for people"),
            "anchors": {"description": "never run: a place for YAML anchors"},
            "tests": {
                "type": "array",
                "items": test,
                "minItems": 1,
                "description": "the tests, each on its own",
            },
        },
        "required": ["rules", "tests"],
        "additionalProperties": False,
        "$defs": {"intent": _expected_intent()},
    }


# ---------------------------------------------------------------------------------------------
# bridge-plan/1

ATTENTION_KINDS = ("problem", "blocked", "duplicate-refused", "duplicate", "unknown-role-code")


def _nullable(kind: str | list[str]) -> Schema:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"]}


def _row() -> Schema:
    return {
        "type": "object",
        "required": ["id", "kind", "status", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {"enum": [k.value for k in IntentKind]},
            "ref": _nullable("string"),
            "status": {"type": "string"},
            "attempts": {"type": "integer", "minimum": 0},
            "next_attempt_at": _nullable("string"),
            "last_error": _nullable("string"),
            "category": {"enum": ["configuration", "data_quality", "transient", None]},
            "run_id": _nullable("string"),
        },
    }


def plan_schema() -> Schema:
    """The plan file ``bridge plan --json`` prints (format ``bridge-plan/1``).

    Consumers ignore keys they do not know, so objects stay open; what is documented in
    :mod:`bridge.rules.plan_json` is required and typed.
    """
    actions = list(_KIND_OF_ACTION)
    intent: Schema = {
        "type": "object",
        "required": ["kind", "person", "target", "rule", "state"],
        "properties": {
            "kind": {"enum": [k.value for k in IntentKind]},
            "person": {"type": "string"},
            "target": {"type": "string"},
            "rule": {"type": "string"},
            "ref": {"type": "string"},
            "data": {"type": "object"},
            "state": {"enum": list(STATES)},
            "outbox": {"$ref": "#/$defs/row"},
            "blocked_by": {"$ref": "#/$defs/row"},
            "waiting": {"type": "string"},
        },
    }
    count = {
        "type": "object",
        "required": ["kind", "count", "examples"],
        "properties": {
            "kind": {"enum": [k.value for k in IntentKind]},
            "count": {"type": "integer", "minimum": 0},
            "examples": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
    }
    attention = {
        "type": "object",
        "required": ["person", "label", "rule_file", "kind", "reason"],
        "properties": {
            "person": _nullable("string"),
            "label": _nullable("string"),
            "rule_file": _nullable("string"),
            "kind": {"enum": list(ATTENTION_KINDS)},
            "reason": {"type": "string"},
            "people": {"type": "array", "items": {"type": "string"}},
            "details": {"type": "object"},
        },
    }
    safety = {
        "type": "object",
        "required": [
            "rule_file",
            "target",
            "removals",
            "projected",
            "removals_percent",
            "max_removals",
            "max_removals_percent",
            "verdict",
            "reason",
        ],
        "properties": {
            "rule_file": {"type": "string"},
            "target": {"type": "string"},
            "removals": {"type": "integer", "minimum": 0},
            "projected": {"type": "integer", "minimum": 0},
            "removals_percent": _nullable("number"),
            "max_removals": _nullable("integer"),
            "max_removals_percent": _nullable("number"),
            "verdict": {"enum": ["ok", "quarantined"]},
            "reason": {"type": "string"},
        },
    }
    return {
        "$schema": DIALECT,
        "$id": BASE + FILES["bridge-plan-1"],
        "title": "bridge-plan/1",
        "description": "The plan file of `bridge plan --json` / `--out` (read by `bridge apply`).",
        "type": "object",
        "required": [
            "format",
            "generated_at",
            "rules_version",
            "population",
            "only",
            "status",
            "exit_code",
            "states",
            "counts",
            "rules",
            "attention",
            "safety",
            "intents",
            "in_flight",
        ],
        "properties": {
            "format": {"const": "bridge-plan/1"},
            "generated_at": {"type": "string"},
            "rules_version": {"type": "string"},
            "population": {"type": "integer", "minimum": 0},
            "only": {"type": ["array", "null"], "items": {"type": "string"}},
            "status": {"enum": ["no-changes", "changes", "quarantined"]},
            "exit_code": {"enum": [0, 2]},
            "states": {
                "type": "object",
                "required": list(STATES),
                "properties": {s: {"type": "integer", "minimum": 0} for s in STATES},
            },
            "counts": {
                "type": "object",
                "required": actions,
                "properties": {action: count for action in actions},
                "additionalProperties": False,
            },
            "rules": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["rule_file", "counts"],
                    "properties": {
                        "rule_file": {"type": "string"},
                        "counts": {
                            "type": "object",
                            "propertyNames": {"enum": actions},
                            "additionalProperties": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
            "attention": {"type": "array", "items": attention},
            "safety": {"type": "array", "items": safety},
            "intents": {"type": "array", "items": intent},
            "in_flight": {"type": "array", "items": intent},
        },
        "$defs": {"row": _row()},
    }


def schemas() -> dict[str, Schema]:
    """Every schema by name (``FILES``)."""
    return {
        "rules": rules_schema(),
        "targets": targets_schema(),
        "fixtures": fixtures_schema(),
        "bridge-plan-1": plan_schema(),
    }


def as_instance(value: Any) -> Any:
    """A rule file's plain YAML values as the YAML language server sees them (YAML 1.2, JSON
    types): a date written unquoted (``ends: 2027-06-30``) is text there."""
    if isinstance(value, dict):
        return {str(key): as_instance(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_instance(item) for item in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def dump(schema: Schema) -> str:
    """A schema as the committed file holds it: indented JSON, a newline at the end."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
