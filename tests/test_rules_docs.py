"""The rule-language reference (rules/README.md) kept true by the code: its generated sections
equal ``bridge rules docs``, every YAML example on it passes ``bridge rules check`` (and the
JSON Schema; fixture examples pass ``bridge rules test``), and every worked example of
rules/examples/ passes both commands."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.cli.rules import check_rules
from bridge.cli.rules import exit_codes
from bridge.rules import docs
from bridge.rules.fixtures import fixture_files
from bridge.rules.fixtures import run_fixtures
from bridge.rules.json_schema import as_instance
from bridge.rules.json_schema import schemas
from bridge.rules.loader import read_yaml
from bridge.rules.model import RuleError
from bridge.rules.transforms import TRANSFORMS
from bridge.rules.transforms import apply
from bridge.schemas import Catalog

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
REFERENCE = RULES / "README.md"
EXAMPLES = sorted(path for path in (RULES / "examples").iterdir() if path.is_dir())
SHIPPED = ("targets.yaml", "role-codes.yaml", "benefits-2026.yaml")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, list(args), env={"BRIDGE_SCHEMAS": str(ROOT / "schemas")}, catch_exceptions=False
    )
    return result.exit_code, result.output


# -- generated sections ------------------------------------------------------------------------


def test_the_reference_is_what_bridge_rules_docs_generates() -> None:
    code, output = cli("rules", "docs", "--check", str(REFERENCE))
    assert code == 0, output
    text = REFERENCE.read_text(encoding="utf-8")
    assert set(docs.marked(text)) == {*docs.SECTIONS, "exit-codes"}


def test_a_stale_reference_fails_the_check_and_is_rewritten(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    text = REFERENCE.read_text(encoding="utf-8")
    stale.write_text(text.replace("| `lower` | lowercase |", "| `lower` | LOWERCASE |"))

    code, output = cli("rules", "docs", "--check", str(stale))
    assert code == 1
    assert "out of date" in output
    code, output = cli("rules", "docs", str(stale))
    assert code == 0, output
    assert stale.read_text(encoding="utf-8") == text


def test_a_document_without_markers_or_with_a_broken_one_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain.md"
    plain.write_text("# nothing generated here\n")
    assert cli("rules", "docs", "--check", str(plain))[0] == 1
    broken = tmp_path / "broken.md"
    broken.write_text(f"{docs.begin('transforms')}\nno end marker\n")
    code, output = cli("rules", "docs", str(broken))
    assert code == 1
    assert "no end marker" in output
    assert broken.read_text() == f"{docs.begin('transforms')}\nno end marker\n"


def test_bridge_rules_docs_prints_every_section() -> None:
    code, output = cli("rules", "docs")
    assert code == 0
    assert docs.marked(output) == [*docs.SECTIONS, "exit-codes"]


def test_every_transform_has_an_example_and_each_example_holds() -> None:
    named = set()
    for row in docs.TRANSFORM_EXAMPLES:
        written = yaml.safe_load(row.written)
        name, argument = (
            (written, None) if isinstance(written, str) else next(iter(written.items()))
        )
        named.add(name)
        assert TRANSFORMS[name].check(argument) is None, row
        assert apply(yaml.safe_load(row.given), name, argument) == yaml.safe_load(row.gives), row
    assert named == set(TRANSFORMS)


def test_the_attribute_catalogue_names_every_attribute_of_the_schemas(catalog: Catalog) -> None:
    text = docs.attributes_catalogue(catalog)
    for schema in catalog.schemas:
        if schema.id == "urn:ietf:params:scim:schemas:core:2.0:Group":
            continue
        prefix = (
            "" if schema.id == "urn:ietf:params:scim:schemas:core:2.0:User" else f"{schema.id}:"
        )
        for attribute in schema.attributes or []:
            assert f"| `{prefix}{attribute.name}` |" in text
    hr = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"
    assert f"| `{hr}:roleCodes` | string | multi-valued; case-exact |" in text
    assert "| `groups.display` | string |" in text
    assert f"  roleCodes: {hr}:roleCodes" in text


def test_the_exit_codes_are_those_each_command_states() -> None:
    table = exit_codes(main)
    assert "| `bridge targets check` | Exit 0 when every checked target passes, 1 when" in table
    assert "| `bridge rules check` | Exit 0 when the rules load" in table
    listed = re.findall(r"^\| `(bridge [a-z -]+)` \|", table, re.MULTILINE)
    assert "bridge rules docs" in listed and "bridge plan" in listed
    assert len(listed) == len(set(listed))


# -- YAML examples of the reference ------------------------------------------------------------


def _blocks() -> list[tuple[str, str]]:
    """Every YAML example of the documentation under rules/, with where it is (file:line)."""
    return [
        (f"{path.relative_to(RULES)}:{line}", block)
        for path in sorted(RULES.rglob("*.md"))
        for line, block in docs.yaml_blocks(path.read_text(encoding="utf-8"))
    ]


def _top_level(text: str) -> dict[str, str]:
    """A YAML file's top-level entries as text, in order (comments go with the next key)."""
    found: dict[str, str] = {}
    pending: list[str] = []
    key = None
    for line in text.splitlines(keepends=True):
        match = re.match(r"^([A-Za-z_][\w-]*):", line)
        if match:
            key = match.group(1)
            found[key] = "".join(pending) + line
            pending = []
        elif key is None or line.startswith("#"):
            pending.append(line)
        else:
            found[key] += line
    return found


def _merged(fragment: str) -> str:
    """The shipped benefits rule file with the fragment's top-level keys in place of its own."""
    base = _top_level((RULES / "benefits-2026.yaml").read_text(encoding="utf-8"))
    given = _top_level(fragment)
    if "aliases" in given:  # more aliases: the base's conditions keep theirs
        names = re.findall(r"^  (\w+):", given["aliases"], re.MULTILINE)
        kept = [
            line
            for line in base["aliases"].splitlines(keepends=True)[1:]
            if not any(line.startswith(f"  {name}:") for name in names)
        ]
        given["aliases"] = given["aliases"].rstrip("\n") + "\n" + "".join(kept)
    base.update(given)
    return "".join(block if block.endswith("\n") else block + "\n" for block in base.values())


def _directory(tmp_path: Path, where: str, block: str) -> tuple[Path, str, str]:
    """The shipped rules with the example in place: (directory, file written, schema name)."""
    directory = tmp_path / "rules"
    directory.mkdir()
    for name in SHIPPED:
        shutil.copy(RULES / name, directory / name)
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"{where}: a YAML example is a mapping"
    if "tests" in data:
        name, schema = "benefits-2026.test.yaml", ""
        text = block
    elif "targets" in data:
        name, schema, text = "targets.yaml", "targets", block
    elif "feeds" in data:
        name, schema, text = "feeds.yaml", "", block
    elif set(data) == {"role_codes"} and "version" not in data:
        name, schema, text = "role-codes.yaml", "", block
    elif "version" in data:
        (directory / "benefits-2026.yaml").unlink()
        name, schema, text = "example.yaml", "rules", block
    else:
        name, schema, text = "benefits-2026.yaml", "rules", _merged(block)
    (directory / name).write_text(text, encoding="utf-8")
    return directory, name, schema


def _problems(errors: list[RuleError]) -> list[str]:
    return [str(error) for error in errors if not error.is_warning]


@pytest.mark.parametrize(("where", "block"), _blocks(), ids=[where for where, _ in _blocks()])
def test_every_yaml_example_of_the_documentation_passes_rules_check(
    tmp_path: Path, catalog: Catalog, where: str, block: str
) -> None:
    directory, name, schema = _directory(tmp_path, where, block)
    ruleset, errors = check_rules(directory, catalog, with_warnings=True, role_codes=True)
    assert _problems(errors) == [], where
    assert ruleset is not None
    if schema:
        errors_found = []
        node = read_yaml(directory / name, name, errors_found)
        assert node is not None
        instance = as_instance(node.plain())
        found = [
            e.message
            for e in jsonschema.Draft202012Validator(schemas()[schema]).iter_errors(instance)
        ]
        assert found == [], where
    fixtures = fixture_files(directory)
    if fixtures:
        report = run_fixtures(ruleset, catalog, fixtures)
        assert report.ok(None), where


def test_the_reference_has_examples_of_each_kind() -> None:
    kinds = set()
    for _, block in _blocks():
        data = yaml.safe_load(block)
        kinds |= set(data)
    assert {"tests", "targets", "role_codes", "version", "scope", "mapping", "schedule"} <= kinds
    assert any('groups[display eq "Benefits Eligible"]' in block for _, block in _blocks())


# -- worked examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("folder", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_every_worked_example_passes_rules_check_and_rules_test(
    folder: Path, catalog: Catalog
) -> None:
    ruleset, errors = check_rules(folder, catalog, with_warnings=True, role_codes=True)
    assert _problems(errors) == []
    assert ruleset is not None
    fixtures = fixture_files(folder)
    if fixtures:
        report = run_fixtures(ruleset, catalog, fixtures)
        assert report.ok(100.0), [result.name for result in report.results if not result.passed]


def test_the_worked_examples_the_reference_promises_exist() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"entra-groups", "okta-role-codes", "canvas", "company-rollout"} <= names
    entra = (RULES / "examples" / "entra-groups" / "benefits-entra.yaml").read_text()
    assert 'groups[display eq "Benefits Eligible"]' in entra
    for name in ("entra-groups", "okta-role-codes", "canvas", "company-rollout"):
        assert fixture_files(RULES / "examples" / name), name
        assert f"(examples/{name}/)" in REFERENCE.read_text(encoding="utf-8")


# -- the pull-request recipe -------------------------------------------------------------------


def _bridge_commands(text: str) -> list[list[str]]:
    """The ``bridge …`` commands a CI or hook definition runs (up to a shell operator)."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    found = []
    for match in re.finditer(r"(?<![\w-])bridge ((?:rules|plan|db)\b[^\n|>;&'\"]*)", code):
        words = match.group(1).split()
        found.append([w for w in words if not w.startswith("$")])
    return found


@pytest.mark.parametrize("name", ["pre-commit-config.yaml", "github-actions.yml"])
def test_the_pull_request_recipe_runs_commands_the_bridge_has(name: str) -> None:
    text = (RULES / "ci" / name).read_text(encoding="utf-8")
    yaml.safe_load(text)
    commands = _bridge_commands(text)
    assert ["rules", "check", "rules"] in commands and ["rules", "test", "rules"] in commands
    for words in commands:
        result = CliRunner().invoke(main, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)
    if name == "github-actions.yml":
        assert ["plan", "--rules", "rules", "--out", "plan.json"] in commands


def test_every_key_of_feeds_yaml_is_in_the_reference() -> None:
    from bridge.rules.docs import FEED_KEY_MEANINGS
    from bridge.rules.docs import feed_keys

    assert set(FEED_KEY_MEANINGS) == set(feed_keys())
