"""``base_url: env:VARIABLE`` in ``targets.yaml``: one image and one rules directory, the LMS's
address given per deployment (compose, Kubernetes) like its token; unset, the target is not
built and says which variable to set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.targets.base import TargetConfigError
from bridge.targets.registry import make_target
from tests.conftest import run_cli
from tests.conftest import shipped_rules


def env_url_rules(tmp_path: Path) -> Path:
    rules = shipped_rules(tmp_path)
    targets = rules / "targets.yaml"
    targets.write_text(targets.read_text().replace("http://127.0.0.1:8100", "env:MOODLE_URL", 1))
    return rules


def test_rules_check_takes_a_base_url_from_the_environment(
    tmp_path: Path, catalog: Catalog
) -> None:
    ruleset, findings = check_directory(env_url_rules(tmp_path), catalog)
    assert ruleset is not None, findings
    assert ruleset.targets["moodle"].base_url == "env:MOODLE_URL"


def test_the_target_reads_its_address_from_the_environment_or_names_the_variable(
    tmp_path: Path, catalog: Catalog
) -> None:
    ruleset, _ = check_directory(env_url_rules(tmp_path), catalog)
    assert ruleset is not None
    config = ruleset.targets["moodle"]
    env = {"MOODLE_TOKEN": SIM_MOODLE_TOKEN}
    with pytest.raises(TargetConfigError, match="MOODLE_URL \\(base_url\\) is not set"):
        make_target(config, env)
    target: Any = make_target(config, {**env, "MOODLE_URL": "https://lms.example.com"})
    assert "lms.example.com" in str(target._client.base_url)


def test_targets_check_reaches_the_lms_the_environment_names(
    catalog: Catalog, tmp_path: Path, simulator_url: tuple[str, Any], database_url: str
) -> None:
    rules = env_url_rules(tmp_path)
    env = {"MOODLE_TOKEN": SIM_MOODLE_TOKEN, "MOODLE_URL": simulator_url[0]}
    checked = run_cli(database_url, rules, "targets", "check", "moodle", **env)
    assert checked.exit_code == 0, checked.output
    unset = run_cli(database_url, rules, "targets", "check", "moodle", MOODLE_TOKEN="x")
    assert unset.exit_code != 0 and "MOODLE_URL" in unset.output
