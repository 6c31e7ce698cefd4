"""``feeds.yaml``: the HR feeds, checked like rule files (file:line:col and a hint), and one HR
record turned into a SCIM User by a feed's mapping."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from bridge.rules.feeds import ENTERPRISE
from bridge.rules.feeds import HR
from bridge.rules.feeds import Feed
from bridge.rules.feeds import RecordError
from bridge.rules.feeds import to_scim_user
from bridge.rules.loader import load_ruleset
from bridge.rules.model import RuleErrors
from tests.conftest import ROOT

SHIPPED = ROOT / "rules" / "feeds.yaml"


def workday() -> Feed:
    return load_ruleset(ROOT / "rules").feeds["workday"]


def test_the_shipped_feed_loads() -> None:
    feed = workday()
    assert feed.signature == "standard-webhooks"
    assert feed.secrets == ("HRIS_WEBHOOK_SECRET", "HRIS_WEBHOOK_SECRET_PREVIOUS")
    assert feed.tolerance == timedelta(minutes=5)
    assert (feed.export.format, feed.export.min_percent) == ("csv", 90.0)
    env = {"HRIS_WEBHOOK_SECRET_PREVIOUS": "old"}
    assert feed.secret_values(env) == [b"old"]  # unset ones are skipped


def test_a_record_becomes_a_scim_user_with_the_rules_transforms() -> None:
    record = {
        "employee_id": "E12345",
        "email": " J.Smith@Example.com ",
        "first_name": "Jane",
        "last_name": "",
        "department": "Claims",
        "status": "Active",
        "role_codes": "BEN_CHOICE_2026; EMPLOYEE",
    }
    user = to_scim_user(workday(), record)
    assert user["externalId"] == "E12345"
    assert user["userName"] == "j.smith@example.com"
    assert user["emails"] == [{"value": "j.smith@example.com", "type": "work", "primary": True}]
    assert user["name"] == {"givenName": "Jane"}  # an empty field is not sent
    assert user[ENTERPRISE] == {"department": "Claims"}
    assert user[HR] == {"employmentStatus": "active", "roleCodes": ["BEN_CHOICE_2026", "EMPLOYEE"]}
    assert set(user["schemas"]) == {
        "urn:ietf:params:scim:schemas:core:2.0:User",
        ENTERPRISE,
        HR,
    }


def test_a_record_missing_a_required_field_names_it() -> None:
    with pytest.raises(
        RecordError, match="employee_id or externalId: missing, and externalId needs it"
    ):
        to_scim_user(workday(), {"email": "a@example.com"})


def feeds_dir(tmp_path: Path, text: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("targets.yaml", "benefits-2026.yaml"):
        shutil.copy(ROOT / "rules" / name, rules / name)
    (rules / "feeds.yaml").write_text(text)
    return rules


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("feeds:\n  hr:\n    secrets: [s3cret]\n", 3, "a secret is named by its environment"),
        (
            "feeds:\n  hr:\n    signature: md5\n    secrets: [env:S]\n",
            3,
            "unknown signature 'md5'",
        ),
        ("feeds:\n  hr:\n    secret: [env:S]\n", 3, "unknown key 'secret' in feed 'hr'"),
        (
            "feeds:\n  hr:\n    secrets: [env:S]\n    tolerance: soon\n",
            4,
            "tolerance is a duration",
        ),
        (
            "feeds:\n  hr:\n    secrets: [env:S]\n    mapping:\n      userName: email\n",
            5,
            "maps no externalId",
        ),
        (
            "feeds:\n  hr:\n    secrets: [env:S]\n    mapping:\n      externalId: id\n"
            "      email: mail\n",
            7,
            "a feed cannot set 'email'",
        ),
        (
            "feeds:\n  hr:\n    secrets: [env:S]\n    mapping:\n      externalId: {from: id, "
            "transforms: [lowercase]}\n",
            6,
            "unknown transform 'lowercase'",
        ),
        (
            "feeds:\n  HR Feed:\n    secrets: [env:S]\n",
            3,
            "lowercase letters, digits",
        ),
        (
            "feeds:\n  hr:\n    secrets: [env:S]\n    mapping: {externalId: id}\n"
            "    export: {format: xlsx}\n",
            6,
            "export format: one of csv, jsonl",
        ),
    ],
)
def test_mistakes_are_rule_errors_with_a_position(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    with pytest.raises(RuleErrors) as raised:
        load_ruleset(feeds_dir(tmp_path, text))
    found = [e for e in raised.value.errors if problem in e.message]
    assert found, [e.message for e in raised.value.errors]
    assert found[0].mark.file.endswith("feeds.yaml")
    assert found[0].mark.line in (line - 1, line, line + 1)


def test_did_you_mean_for_a_misspelt_attribute(tmp_path: Path) -> None:
    text = "feeds:\n  hr:\n    secrets: [env:S]\n    mapping:\n      externalId: id\n"
    text += "      departmnet: dept\n"
    with pytest.raises(RuleErrors) as raised:
        load_ruleset(feeds_dir(tmp_path, text))
    (error,) = [e for e in raised.value.errors if "departmnet" in e.message]
    assert error.hint == "did you mean 'department'?"


def test_the_shipped_feed_reads_the_guides_webhook_and_an_export_row() -> None:
    """One mapping for both: ``from: [employee_id, externalId]`` takes the first field the
    record has; role codes come as a list (webhook) or ``A;B`` (CSV)."""
    guide = {
        "externalId": "E12345",
        "email": "j.smith@example.com",
        "role_codes": ["BEN_CHOICE_2026"],
    }
    user = to_scim_user(workday(), guide)
    assert user["externalId"] == "E12345" and user[HR]["roleCodes"] == ["BEN_CHOICE_2026"]
    row = {"employee_id": "E7", "email": "a@example.com", "role_codes": "A;B"}
    assert to_scim_user(workday(), row)[HR]["roleCodes"] == ["A", "B"]
    with pytest.raises(RecordError, match="employee_id or externalId: missing"):
        to_scim_user(workday(), {"email": "a@example.com"})
