"""The ``bridge`` command as a new operator meets it: ``--help``, ``--version`` and completion
load no subcommand; ``plan`` follows Terraform's exit codes; outside a checkout, or before a
database exists, each command ends in one line that says what to set; ``journal`` and
``errors`` name people and keep the LMS's words at 80 columns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from click.testing import Result

from bridge.cli import SUBCOMMANDS
from bridge.cli import main
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.schemas import Catalog
from bridge.store.engine import Database
from tests.conftest import ROOT
from tests.conftest import employee
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.pilots import uncapped
from tests.test_three_states import World
from tests.test_three_states import make_world

HEAVY = ("starlette", "sqlalchemy", "httpx", "scim2_models", "uvicorn", "alembic", "yaml", "rich")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LOADED = (
    "import sys\n"
    "from bridge.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='bridge')\n"
    "except SystemExit:\n"
    "    pass\n"
    "heavy = {name.split('.')[0] for name in sys.modules} & set(sys.argv[0].split(','))\n"
    "print('LOADED', sorted(heavy))\n"
)


def loaded_by(*args: str, **env: str) -> tuple[str, list[str]]:
    """Run ``bridge ARGS`` in a fresh interpreter: its output, and which of ``HEAVY`` it
    imported."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED.replace("sys.argv[0]", repr(",".join(HEAVY))), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        cwd=ROOT,
    )
    out, _, last = done.stdout.rpartition("LOADED ")
    return out + done.stderr, json.loads(last.replace("'", '"'))


# -- speed: nothing heavy before a subcommand runs ---------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plan", "--help"]])
def test_help_and_version_import_no_io_library(args: list[str]) -> None:
    output, heavy = loaded_by(*args)
    if args[0] == "plan":  # a subcommand's own help loads its module, and only then
        assert "--detailed-exitcode" in output
        return
    assert heavy == [], f"bridge {' '.join(args)} imported {heavy}"
    assert "Usage: bridge" in output or output.startswith("bridge ")


def test_completing_a_subcommand_name_imports_nothing_heavy() -> None:
    output, heavy = loaded_by(
        _BRIDGE_COMPLETE="bash_complete", COMP_WORDS="bridge pl", COMP_CWORD="1"
    )
    assert "plain,plan" in output.split()
    assert heavy == []


def test_the_bash_completion_script_is_click_s() -> None:
    output, _ = loaded_by(_BRIDGE_COMPLETE="bash_source")
    assert "_bridge_completion" in output and "complete -o nosort -F" in output


def test_every_listed_subcommand_loads_under_its_name() -> None:
    context = click.Context(main)
    assert main.list_commands(context) == sorted(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        command = main.get_command(context, name)
        assert isinstance(command, click.Command) and command.name == name


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"bridge {metadata.version('scim-lms-bridge')}\n"


# -- plan: Terraform's exit codes --------------------------------------------------------------


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    return uncapped(shipped_rules(tmp_path))


@pytest.fixture
def world(db: Database, catalog: Catalog, book: RuleBook) -> World:
    return make_world(db, catalog, book)


def test_plan_exits_0_with_changes_and_2_only_when_asked(
    database_url: str, world: World, rules_dir: Path
) -> None:
    world.seed(1)  # stored before the rules: everything is still to make
    plain = run_cli(database_url, rules_dir, "plan", "--json")
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["status"] == "changes"
    detailed = run_cli(database_url, rules_dir, "plan", "--detailed-exitcode", "--json")
    assert detailed.exit_code == 2, detailed.output


def test_detailed_plan_exits_0_without_changes(database_url: str, rules_dir: Path) -> None:
    result = run_cli(database_url, rules_dir, "plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--bogus"], {}),
        ([], {"BRIDGE_MAX_PAGE_SIZE": "-5"}),
        (["--only", "nosuchrule"], {}),
    ],
)
def test_detailed_plan_exits_1_on_any_error(
    database_url: str, rules_dir: Path, args: list[str], env: dict[str, str]
) -> None:
    """Never 2, the code a script reads as "changes present" — a bad option or setting
    (click's usage errors exit 2 elsewhere) included."""
    result = run_cli(database_url, rules_dir, "plan", "--detailed-exitcode", *args, **env)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output


# -- first contact: one line, and no database made by reading ----------------------------------


def bare(*args: str, **env: str) -> Result:
    """``bridge ARGS`` with nothing but ``env`` configured, in the current directory."""
    unset = {name: None for name in os.environ if name.startswith("BRIDGE_")}
    return CliRunner().invoke(main, list(args), env={**unset, "COLUMNS": "80", **env})


@pytest.mark.parametrize("args", [["plan"], ["explain", "E00001"], ["rules", "check"]])
def test_outside_a_checkout_the_missing_schemas_are_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = bare(*args)
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.output.splitlines()
    assert "BRIDGE_SCHEMAS" in line and "no schemas directory at schemas" in line
    assert list(tmp_path.iterdir()) == []


def test_a_missing_rules_directory_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = bare("plan", BRIDGE_SCHEMAS=str(ROOT / "schemas"))
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert "no rules directory at rules" in line and "BRIDGE_RULES" in line


@pytest.mark.parametrize(
    "args",
    [
        ["journal"],
        ["errors"],
        ["errors", "show", "1"],
        ["stats"],
        ["runs"],
        ["tokens", "list"],
        ["plan"],
        ["explain", "E00001"],
    ],
)
def test_reading_never_creates_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    schemas = str(ROOT / "schemas")
    result = bare(*args, BRIDGE_SCHEMAS=schemas, BRIDGE_RULES=str(shipped_rules(tmp_path)))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: no database at {tmp_path.resolve() / 'bridge.db'}; "
        "run `bridge db upgrade` (or set BRIDGE_DATABASE_URL)"
    )
    assert not (tmp_path / "bridge.db").exists()
    assert not (tmp_path / "bridge.db-writer.lock").exists()


def test_db_upgrade_creates_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert bare("db", "upgrade").exit_code == 0
    assert (tmp_path / "bridge.db").exists()
    assert bare("journal").exit_code == 0


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        ("bridge.db", 2, "BRIDGE_DATABASE_URL must be a sqlite:///FILE or postgresql://"),
        ("postgresql://bridge:s3cret@db:notaport/bridge", 2, "BRIDGE_DATABASE_URL must be"),
        ("mysql://bridge:s3cret@db/bridge", 2, "BRIDGE_DATABASE_URL must be"),
        ("postgresql+nodriver://bridge:s3cret@db/bridge", 1, "cannot be opened"),
        ("postgresql://bridge:s3cret@127.0.0.1:1/bridge", 1, "cannot open the database"),
    ],
)
def test_a_bad_database_url_is_one_line_with_the_password_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, code: int, said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = bare("journal", BRIDGE_DATABASE_URL=url)
    assert result.exit_code == code, result.output
    (line,) = result.output.splitlines()
    assert said in line
    assert "s3cret" not in line
    assert isinstance(result.exception, SystemExit)  # click's error, not a traceback


# -- 80 columns: people by name, the LMS's words kept ------------------------------------------


def lines_fit(output: str, width: int = 80) -> None:
    too_wide = [line for line in output.splitlines() if len(line) > width]
    assert too_wide == []


def column(table: str, name: str, following: str) -> str:
    """The text of one column of a rich table, its folded lines joined."""
    lines = table.splitlines()
    header = next(line for line in lines if f" {name} " in line)
    start, end = header.index(f" {name} ") + 1, header.index(f" {following} ") + 1
    return "".join(line[start:end].strip() for line in lines[2:])


def test_journal_at_80_columns_names_the_person_and_the_actor(
    database_url: str, provisioner: Provisioner
) -> None:
    created = provisioner.create(
        Cause("okta-production-tenant"), "User", employee(7, codes=["BEN_CHOICE_2026"])
    )
    provisioner.delete(Cause("entra-id-directory-sync"), "User", created.record.id)
    result = CliRunner().invoke(
        main, ["journal"], env={"BRIDGE_DATABASE_URL": database_url, "COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    lines_fit(result.stdout)
    assert result.stdout.count("emp7@example.com (E00007)") == 2  # a delete keeps the name
    actors = column(result.stdout, "actor", "op")
    assert "okta-production-tenant" in actors and "entra-id-directory-sync" in actors
    assert not UUID.search(result.stdout)


async def test_errors_at_80_columns_name_the_person_and_keep_the_lms_words(
    database_url: str, world: World, rules_dir: Path
) -> None:
    world.stale_account(30)
    world.hire(30)
    await world.deliver()
    (letter,) = [
        json.loads(line)
        for line in run_cli(database_url, rules_dir, "errors", "--json").stdout.splitlines()
    ]
    result = run_cli(database_url, rules_dir, "errors", COLUMNS="80")
    assert result.exit_code == 0, result.output
    lines_fit(result.stdout)
    text = "".join(result.stdout.split())
    assert "emp30@example.com(E00030)" in text
    assert not UUID.search(result.stdout)
    said = str(letter["last_error"])
    assert len(said) > 40  # long enough that the old table cut it
    assert all(word in text for word in said.split()), said


def test_a_postgresql_url_without_its_driver_says_which_extra_to_install(tmp_path: Path) -> None:
    """psycopg is the ``postgres`` extra: without it, one line naming the extra (the driver's
    absence simulated the way Python itself reports it)."""
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from bridge.cli import main\n"
        "main(['journal'])\n"
    )
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": "postgresql://bridge:secret@127.0.0.1:1/bridge",
        "BRIDGE_SCHEMAS": str(ROOT / "schemas"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: BRIDGE_DATABASE_URL names a database whose driver (psycopg) is not installed: "
        "pip install 'scim-lms-bridge[postgres]'"
    ]
