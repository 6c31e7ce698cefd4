"""The README's quick start, as a new user runs it: the example user is a Claims employee holding
BEN_CHOICE_2026, inside the shipped scope, so the pilot's draw admits her and an enrolment in
BEN-2026 is planned — ``bridge explain`` says "admitted", never "the LMS already matches".

The payload is read from the README's curl, sent through the real SCIM app with every shipped
rule file, and the draw is the README's own ``bridge plan --out`` + ``bridge apply``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.rules.pilot import ADMITTED
from bridge.store.engine import Database
from tests.conftest import ROOT
from tests.conftest import queued
from tests.conftest import run_cli

README = ROOT / "README.md"
CURL = re.compile(r"curl -s -X POST \S+/scim/v2/Users .*?-d '(?P<body>\{.*?\})'", re.DOTALL)


def readme_payload(text: str) -> dict[str, Any]:
    """The JSON body of the README's first ``curl … /scim/v2/Users`` (its ``-d '…'``)."""
    found = CURL.search(text)
    assert found is not None, "no `curl -s -X POST …/scim/v2/Users … -d '{…}'` in the README"
    body: dict[str, Any] = json.loads(found["body"])
    return body


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """Every shipped rule file, the role-code catalogue and the targets, as the README uses."""
    return Path(shutil.copytree(ROOT / "rules", tmp_path / "rules"))


def test_the_readme_says_the_curl_runs_in_a_second_terminal() -> None:
    text = README.read_text(encoding="utf-8")
    curl = CURL.search(text)
    assert curl is not None
    between = text[text.rindex("bridge serve", 0, curl.start()) : curl.start()]
    assert "second terminal" in between, "say where the curl runs, between serve and the curl"


async def test_the_readme_user_is_in_scope_and_gets_an_enrolment_planned(
    scim: httpx.AsyncClient, db: Database, database_url: str, rules_dir: Path, tmp_path: Path
) -> None:
    payload = readme_payload(README.read_text(encoding="utf-8"))
    created = await scim.post(
        "/Users", content=json.dumps(payload), headers={"Content-Type": "application/scim+json"}
    )
    assert created.status_code == 201, created.text
    external_id = payload["externalId"]

    # the README's draw: a capped pilot's seats go by `bridge plan` + `bridge apply`
    plan_file = tmp_path / "plan.json"
    planned = await asyncio.to_thread(
        run_cli, database_url, rules_dir, "plan", "--out", str(plan_file)
    )
    assert planned.exit_code == 0, planned.output  # the README chains apply with &&
    applied = await asyncio.to_thread(run_cli, database_url, rules_dir, "apply", str(plan_file))
    assert applied.exit_code == 0, applied.output

    explained = await asyncio.to_thread(
        run_cli, database_url, rules_dir, "explain", external_id, "--json"
    )
    assert explained.exit_code == 0, explained.output
    files = {f["rule_file"]: f for f in json.loads(explained.output)["rule_files"]}
    benefits = files["benefits-2026"]
    assert benefits["scope"]["verdict"] is True and benefits["in_scope"] is True
    assert benefits["pilot"]["admitted"] is True
    assert benefits["pilot"]["reason"] == ADMITTED
    assert benefits["lms"]["has_account"] is False  # nothing delivered yet: no relay here
    wanted = {(i["kind"], i.get("ref")) for i in benefits["intents"]}
    assert ("enrol", "BEN-2026") in wanted and ("upsert_account", None) in wanted

    text = (
        await asyncio.to_thread(run_cli, database_url, rules_dir, "explain", external_id)
    ).output
    assert "admitted to the pilot" in text
    assert "the LMS already matches" not in text
    person = created.json()["id"]
    enrolments = [i["ref"] for i in queued(db) if i["person"] == person and i["kind"] == "enrol"]
    assert enrolments == ["BEN-2026"]
