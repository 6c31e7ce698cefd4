"""The JSON Schemas of the rule language and of bridge-plan/1 (bridge.rules.json_schema): the
committed files are what ``bridge rules schema`` generates, they accept every shipped and example
file and reject what the loader rejects for its shape, they agree with the loader's keys, and a
real ``bridge plan --json`` validates against bridge-plan/1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.rules import loader
from bridge.rules.engine import IntentKind
from bridge.rules.feeds import FEEDS_FILE
from bridge.rules.fixture_file import FIXTURE_SUFFIX
from bridge.rules.fixtures import run_fixtures
from bridge.rules.json_schema import FILES
from bridge.rules.json_schema import as_instance
from bridge.rules.json_schema import dump
from bridge.rules.json_schema import schemas
from bridge.rules.loader import read_ruleset
from bridge.rules.loader import read_yaml
from bridge.rules.model import AssignmentKind
from bridge.rules.model import RuleError
from bridge.rules.model import RuleErrors
from bridge.rules.role_catalogue import ROLE_CODES_FILE
from bridge.rules.transforms import TRANSFORMS
from bridge.schedule import JOBS
from bridge.schemas import Catalog
from bridge.schemas import load_catalog
from tests.conftest import employee
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "schemas" / "json"
RULES = ROOT / "rules"
NOT_RULE_FILES = {loader.TARGETS_FILE, FEEDS_FILE, ROLE_CODES_FILE}


def rules_directories() -> list[Path]:
    return [RULES, *sorted(p for p in (RULES / "examples").iterdir() if p.is_dir())]


def documents(kind: str) -> list[Path]:
    """Every shipped and example rule file (``rules``), targets.yaml (``targets``) or fixture
    file (``fixtures``)."""
    found = []
    for directory in rules_directories():
        for path in sorted(directory.glob("*.yaml")):
            if path.name.endswith(FIXTURE_SUFFIX):
                if kind == "fixtures":
                    found.append(path)
                continue
            if kind == "targets" and path.name == loader.TARGETS_FILE:
                found.append(path)
            if kind == "rules" and path.name not in NOT_RULE_FILES:
                found.append(path)
    return found


def instance(path: Path) -> Any:
    """A YAML file's values as the YAML language server reads them."""
    errors: list[RuleError] = []
    node = read_yaml(path, path.name, errors)
    assert node is not None and errors == []
    return as_instance(node.plain())


def problems(name: str, document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schemas()[name])
    return sorted(f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document))


# -- generated and committed -------------------------------------------------------------------


def test_the_committed_schemas_are_what_bridge_rules_schema_generates() -> None:
    for name, schema in schemas().items():
        assert (COMMITTED / FILES[name]).read_text(encoding="utf-8") == dump(schema), name
    result = CliRunner().invoke(main, ["rules", "schema", "--out", str(COMMITTED), "--check"])
    assert result.exit_code == 0, result.output


def test_a_stale_schema_fails_the_check_and_is_written_again(tmp_path: Path) -> None:
    shutil.copytree(COMMITTED, tmp_path / "json")
    stale = tmp_path / "json" / FILES["rules"]
    stale.write_text(stale.read_text().replace('"otherwise"', '"otherwize"'))
    runner = CliRunner()
    checked = runner.invoke(main, ["rules", "schema", "--out", str(tmp_path / "json"), "--check"])
    assert checked.exit_code == 1
    assert "out of date" in checked.output
    written = runner.invoke(main, ["rules", "schema", "--out", str(tmp_path / "json")])
    assert written.exit_code == 0
    assert stale.read_text() == dump(schemas()["rules"])


def test_bridge_rules_schema_prints_one_schema() -> None:
    result = CliRunner().invoke(main, ["rules", "schema", "targets"])
    assert result.exit_code == 0
    assert json.loads(result.output) == schemas()["targets"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = schemas()[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_scim_schema_loader_does_not_read_the_json_schemas() -> None:
    """schemas/ holds the SCIM schemas the server serves; schemas/json/ is not one of them."""
    assert sorted(path.name for path in COMMITTED.glob("*.json")) == sorted(FILES.values())
    catalog = load_catalog(ROOT / "schemas")
    ids = {str(schema.id) for schema in catalog.schemas}
    assert all(i.startswith("urn:ietf:params:scim:schemas:") for i in ids)
    assert len(ids) == len(list((ROOT / "schemas").glob("*.json"))) - 1  # resource-types.json


# -- the schemas and the loader agree ----------------------------------------------------------


def test_the_rule_file_schema_names_the_keys_the_loader_reads() -> None:
    schema = schemas()["rules"]
    properties = schema["properties"]
    assert set(properties) == set(loader._FILE_KEYS)
    for kind, keys in loader._ASSIGNMENT_KEYS.items():
        item = properties[f"{kind.value}s"]["items"]
        assert set(item["properties"]) == set(keys), kind
    assert set(properties["schedule"]["properties"]) == {"timezone", *JOBS}
    transforms = schema["$defs"]["transform"]["oneOf"]
    assert {next(iter(form["properties"])) for form in transforms[1:]} == set(TRANSFORMS)
    assert AssignmentKind.path.value + "s" in properties


@pytest.mark.parametrize("path", documents("rules"), ids=lambda p: str(p.relative_to(RULES)))
def test_every_shipped_and_example_rule_file_is_valid(path: Path) -> None:
    assert problems("rules", instance(path)) == []


@pytest.mark.parametrize("path", documents("targets"), ids=lambda p: str(p.relative_to(RULES)))
def test_every_shipped_and_example_targets_file_is_valid(path: Path) -> None:
    assert problems("targets", instance(path)) == []


@pytest.mark.parametrize("path", documents("fixtures"), ids=lambda p: str(p.relative_to(RULES)))
def test_every_shipped_and_example_fixture_file_is_valid(path: Path) -> None:
    """Read as the language server does: YAML merge keys (``<<: *jane``) resolved."""
    assert problems("fixtures", as_instance(yaml.safe_load(path.read_text()))) == []


# -- what a schema catches, the loader refuses too -----------------------------------------------

BENEFITS = RULES / "benefits-2026.yaml"


def mistaken(old: str, new: str) -> str:
    text = BENEFITS.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


RULE_MISTAKES = {
    "a misspelt top-level key": ("\nenrolments:\n", "\nenrollments:\n"),
    "a misspelt key of an enrolment": ("    due: P30D          #", "    deu: P30D          #"),
    "a misspelt pilot key": ("max_people: 200", "max_peeple: 200"),
    "a wrong type": ("max_people: 200", 'max_people: "200"'),
    "a wrong type of required": (
        "{from: externalId, required: true}",
        "{from: externalId, required: yes please}",
    ),
    "an unknown transform": ("transforms: [trim, lower]", "transforms: [trim, lowercase]"),
    "a transform without its argument": ('{default: "-"}', "template"),
    "an unknown otherwise": (
        "    course: BEN-2026\n",
        "    course: BEN-2026\n    otherwise: delete\n",
    ),
    "a bad duration": ("due: P30D          #", "due: 30 days       #"),
    "an unknown job": ("  training: {at:", "  trainings: {at:"),
    "a version the bridge does not read": ("version: 1", "version: 2"),
}


@pytest.mark.parametrize("mistake", sorted(RULE_MISTAKES))
def test_a_mistake_in_a_rule_file_is_rejected_by_the_schema_and_the_loader(
    tmp_path: Path, mistake: str
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "targets.yaml", rules / "targets.yaml")
    (rules / "benefits-2026.yaml").write_text(mistaken(*RULE_MISTAKES[mistake]))
    assert problems("rules", instance(rules / "benefits-2026.yaml")) != []
    with pytest.raises(RuleErrors):
        read_ruleset(rules)


TARGET_MISTAKES = {
    "an unknown target kind": ("kind: moodle", "kind: blackboard"),
    "a misspelt target key": ("base_url:", "baseurl:"),
    "a secret written in the file": ("token: env:MOODLE_TOKEN", "token: s3cr3t"),
    "a wrong type of option": ("student_role_id: 5", "student_role_id: five"),
}


@pytest.mark.parametrize("mistake", sorted(TARGET_MISTAKES))
def test_a_mistake_in_targets_yaml_is_rejected_by_the_schema(tmp_path: Path, mistake: str) -> None:
    old, new = TARGET_MISTAKES[mistake]
    text = (RULES / "targets.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "targets.yaml"
    path.write_text(text.replace(old, new, 1))
    assert problems("targets", instance(path)) != []


FIXTURE_MISTAKES = {
    "an unknown intent kind": ("- {kind: enrol, ref: BEN-2026,", "- {kind: enroll, ref: BEN-2026,"),
    "an unknown intent kind written short": (
        "includes: [enrol BEN-2026]",
        "includes: [enroll BEN-2026]",
    ),
    "a misspelt expect key": ("      in_scope: false\n", "      inscope: false\n"),
    "a misspelt given key": ("      admitted: false", "      admited: false"),
    "a wrong type": ("idempotent: true", "idempotent: always"),
}


@pytest.mark.parametrize("mistake", sorted(FIXTURE_MISTAKES))
def test_a_mistake_in_a_fixture_file_is_rejected_by_the_schema_and_rules_test(
    tmp_path: Path, mistake: str, catalog: Catalog
) -> None:
    old, new = FIXTURE_MISTAKES[mistake]
    text = (RULES / "benefits-2026.test.yaml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "benefits-2026.test.yaml"
    path.write_text(text.replace(old, new, 1))
    assert problems("fixtures", as_instance(yaml.safe_load(path.read_text()))) != []
    with pytest.raises(RuleErrors):
        run_fixtures(read_ruleset(RULES)[0], catalog, [path])


# -- bridge-plan/1 ------------------------------------------------------------------------------


async def test_bridge_plan_json_is_a_valid_bridge_plan_1_document(
    database_url: str, scim: httpx.AsyncClient, rules_dir: Path
) -> None:
    """The capped pilot's draw over people who arrived by SCIM: intents of every addition,
    a missing email (a problem) and an unknown role code in the attention list."""
    for number in range(1, 4):
        response = await scim.post("/Users", json=employee(number, codes=["BEN_CHOICE_2026"]))
        assert response.status_code == 201, response.text
    await scim.post("/Users", json=employee(4, codes=["BEN_CHOICE_2026"], email=False))
    await scim.post("/Users", json=employee(5, codes=["BEN-CHOICE-2026"]))

    result = run_cli(database_url, rules_dir, "plan", "--json")
    assert result.exit_code in (0, 2), result.output
    document = json.loads(result.stdout)
    assert problems("bridge-plan-1", document) == []
    kinds = {intent["kind"] for intent in document["intents"]}
    assert {"upsert_account", "enrol", "add_cohort_member"} <= kinds
    assert {item["kind"] for item in document["attention"]} >= {"problem", "unknown-role-code"}

    wrong = json.loads(result.stdout)
    wrong["intents"][0]["kind"] = "delete_account"
    assert problems("bridge-plan-1", wrong) != []
    assert "delete_account" not in {k.value for k in IntentKind}
    del wrong["intents"][0]["kind"]
    wrong["intents"][0]["kind"] = "enrol"
    del wrong["counts"]["unenrol"]
    assert problems("bridge-plan-1", wrong) != []
