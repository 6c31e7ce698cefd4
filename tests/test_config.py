"""Settings from the environment: every variable is typed and bounded at start, and a bad one
is refused with one line naming it, its value and what is allowed (never a traceback, never a
crash later in the relay); ``bridge config`` shows what is in effect, secrets masked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import VARIABLES
from bridge.config import ConfigError
from bridge.config import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.relay_per_target, settings.relay_lease_seconds) == (8, 60.0)
    assert settings.preflight_recheck_seconds == 30.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BRIDGE_RELAY_CONCURRENCY", "abc"),
        ("BRIDGE_RELAY_CONCURRENCY", "0"),
        ("BRIDGE_RELAY_CONCURRENCY", "-4"),
        ("BRIDGE_RELAY_CONCURRENCY", "2.5"),
        ("BRIDGE_RELAY_LEASE_SECONDS", "inf"),
        ("BRIDGE_RELAY_LEASE_SECONDS", "nan"),
        ("BRIDGE_RULES_RELOAD_SECONDS", "0"),
        ("BRIDGE_MAX_PAGE_SIZE", ""),
        ("BRIDGE_MAX_BULK_OPERATIONS", "1e3"),
        ("BRIDGE_MAX_PAYLOAD_BYTES", "12"),
        ("BRIDGE_JWT_LEEWAY_SECONDS", "-1"),
        ("BRIDGE_PREFLIGHT_RECHECK_SECONDS", "soon"),
        ("BRIDGE_PROBE_CAP_SECONDS", "0"),
    ],
)
def test_a_bad_number_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable) as caught:
        Settings.from_env({variable: value})
    assert repr(value) in str(caught.value)


def test_serve_refuses_to_start_on_a_bad_number() -> None:
    result = CliRunner().invoke(main, ["serve"], env={"BRIDGE_RELAY_CONCURRENCY": "lots"})
    assert result.exit_code == 2
    assert "BRIDGE_RELAY_CONCURRENCY must be a whole number from 1 to 1024, not 'lots'" in (
        result.output
    )


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("BRIDGE_LOG_FORMAT", "xml", "'json' or 'text'"),
        ("BRIDGE_USERNAME_POLICY", "nfc", "'exact' or 'nfkc'"),
        ("BRIDGE_SCHEDULER", "sometimes", "'on' or 'off'"),
        ("BRIDGE_DATABASE_URL", "bridge.db", "a sqlite:///FILE or postgresql://"),
        ("BRIDGE_DATABASE_URL", "mysql://db/bridge", "a sqlite:///FILE or postgresql://"),
        ("BRIDGE_MAX_PAGE_SIZE", "-5", "a whole number from 1 to 100000"),
        ("BRIDGE_MAX_PAGE_SIZE", "1000000", "a whole number from 1 to 100000"),
        ("BRIDGE_JWT_SCOPE_CLAIM", "", "a non-empty string"),
    ],
)
def test_the_refusal_says_what_is_allowed(variable: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"{variable} must be {allowed}") and line.endswith(f"not {value!r}")


def test_every_bad_variable_is_named_one_line_each() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BRIDGE_MAX_PAGE_SIZE": "x", "BRIDGE_JWT_LEEWAY_SECONDS": "-1"})
    assert sorted(line.split()[0] for line in str(caught.value).splitlines()) == [
        "BRIDGE_JWT_LEEWAY_SECONDS",
        "BRIDGE_MAX_PAGE_SIZE",
    ]


def test_values_are_read_typed_and_folded() -> None:
    settings = Settings.from_env(
        {
            "BRIDGE_LOG_FORMAT": "JSON",
            "BRIDGE_SCHEDULER": " Off ",
            "BRIDGE_SCIM_TOKEN": "",
            "BRIDGE_JWT_ISSUER": "https://idp.example",
            "BRIDGE_JWT_LEEWAY_SECONDS": "5",
            "BRIDGE_RULES": "/etc/bridge/rules",
            "BRIDGE_DATABASE_URL": "postgresql://bridge:pw@db:5432/bridge",
        }
    )
    assert (settings.log_format, settings.scheduler, settings.scim_token) == ("json", False, None)
    assert (settings.jwt.issuer, settings.jwt.leeway_seconds) == ("https://idp.example", 5)
    assert settings.rules_dir == Path("/etc/bridge/rules")


def test_building_settings_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MAX_PAGE_SIZE", "7")
    monkeypatch.setenv("BRIDGE_SCHEDULER", "off")
    assert Settings().max_page_size == 200 and Settings(scheduler=False).scheduler is False
    assert Settings.from_env().max_page_size == 7


def test_a_bad_variable_is_one_line_and_exit_2_for_any_command() -> None:
    result = CliRunner().invoke(main, ["journal"], env={"BRIDGE_MAX_PAGE_SIZE": "-5"})
    assert result.exit_code == 2
    assert result.output == (
        "Error: BRIDGE_MAX_PAGE_SIZE must be a whole number from 1 to 100000, not '-5'\n"
    )


def test_bridge_config_shows_each_value_its_origin_and_masks_secrets() -> None:
    env = {
        "BRIDGE_DATABASE_URL": "postgresql://bridge:s3cret@db:5432/bridge",
        "BRIDGE_SCIM_TOKEN": "tok-123456",
        "BRIDGE_CURSOR_SECRET": "cursor-key",
        "BRIDGE_MAX_PAGE_SIZE": "50",
        "BRIDGE_MAX_PAGE_SIZ": "typo",
    }
    unset = {name: None for name in os.environ if name.startswith("BRIDGE_")}
    result = CliRunner().invoke(main, ["config"], env={**unset, **env})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert rows["BRIDGE_DATABASE_URL"] == ["postgresql://bridge:***@db:5432/bridge", "env"]
    assert rows["BRIDGE_SCIM_TOKEN"] == ["***", "env"]
    assert rows["BRIDGE_CURSOR_SECRET"] == ["***", "env"]
    assert rows["BRIDGE_MAX_PAGE_SIZE"] == ["50", "env"]
    assert rows["BRIDGE_RELAY_CONCURRENCY"] == ["8", "default"]
    assert rows["BRIDGE_BASE_URL"] == ["(unset)", "default"]
    assert set(rows) == set(VARIABLES)
    for secret in ("s3cret", "tok-123456", "cursor-key"):
        assert secret not in result.output
    assert "BRIDGE_MAX_PAGE_SIZ is not a setting (did you mean BRIDGE_MAX_PAGE_SIZE?)" in (
        result.stderr
    )

    as_json = CliRunner().invoke(main, ["config", "--json"], env={**unset, **env})
    document = json.loads(as_json.stdout)
    assert document["BRIDGE_MAX_PAGE_SIZE"] == {
        "value": "50",
        "source": "env",
        "allowed": "a whole number from 1 to 100000",
    }
    assert document["BRIDGE_SCIM_TOKEN"]["value"] == "***"
    assert document["BRIDGE_JWT_JWKS_URL"] == {
        "value": None,
        "source": "default",
        "allowed": "a non-empty string or unset",
    }


def test_bridge_config_refuses_a_bad_variable_like_every_command() -> None:
    result = CliRunner().invoke(main, ["config"], env={"BRIDGE_SCHEDULER": "maybe"})
    assert result.exit_code == 2
    assert result.output == "Error: BRIDGE_SCHEDULER must be 'on' or 'off', not 'maybe'\n"
