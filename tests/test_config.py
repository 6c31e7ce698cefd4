"""Settings from the environment: every numeric variable is validated at start, and a bad one
is refused with a message naming it (never a traceback, never a crash later in the relay)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bridge.cli import main
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
