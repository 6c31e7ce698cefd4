"""Preflight of the read-back functions: ``bridge training --refresh`` and ``bridge reconcile``
call web-service functions delivery does not. One missing from the token's service is a
warning finding that names it and where an admin adds it (delivery goes on), and the message
the read-back commands refuse with (``moodle_preflight.read_refusal``). Against the Moodle
simulator, whose service is a list of functions as on a real site.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import create_app as create_simulator
from bridge.targets.completion import Ask
from bridge.targets.completion import read_all
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_completion import MoodleCompletion
from bridge.targets.moodle_findings import SERVICE
from bridge.targets.moodle_preflight import READS
from bridge.targets.moodle_preflight import RECONCILE
from bridge.targets.moodle_preflight import TRAINING
from bridge.targets.moodle_preflight import missing_reads
from bridge.targets.moodle_preflight import read_refusal
from bridge.targets.moodle_preflight import refusal
from bridge.targets.moodle_reconcile import READ_FUNCTIONS
from bridge.targets.preflight import Verdict
from bridge.targets.preflight import requirements
from bridge.targets.registry import make_target
from tests.test_preflight import moodle_verdict
from tests.test_preflight import ruleset_of
from tests.test_preflight import site_of
from tests.test_preflight import targets_check
from tests.test_preflight import write_rules

COMPLETION = "core_completion_get_course_completion_status"
ACTIVITIES = "core_completion_get_activities_completion_status"
PARTICIPANTS = "core_enrol_get_enrolled_users"
MEMBERS = "core_cohort_get_cohort_members"
WHERE_TO_ADD = f"{SERVICE} → the token's service → Functions"


@pytest.fixture
def sim() -> Starlette:
    return create_simulator()


@pytest.fixture
def transport(sim: Starlette) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=sim)


def read_warnings(verdict: Verdict) -> dict[str, str]:
    """The failing ``read_function`` findings: function → message."""
    found = {}
    for finding in verdict.findings:
        if finding.check == "read_function" and not finding.ok:
            assert finding.severity == "warning", finding
            assert finding.fix == f"add {finding.subject} under {WHERE_TO_ADD}"
            found[str(finding.subject)] = finding.message
    return found


# -- pure -------------------------------------------------------------------------------------


def test_the_read_back_commands_and_their_functions() -> None:
    """Training reads completion (and looks courses up); a reconcile reads what
    ``moodle_reconcile`` calls — the five functions an admin adds for the read-back."""
    assert READS[TRAINING] == ("core_course_get_courses_by_field", COMPLETION, ACTIVITIES)
    assert READS[RECONCILE] == READ_FUNCTIONS
    assert {COMPLETION, ACTIVITIES, PARTICIPANTS, MEMBERS, "core_user_get_users_by_field"} <= {
        f for functions in READS.values() for f in functions
    }


def test_refusal_names_each_missing_function_of_its_command_only() -> None:
    everything = {f for functions in READS.values() for f in functions}
    assert refusal(TRAINING, everything) is None
    assert refusal(RECONCILE, everything) is None
    held = everything - {COMPLETION, ACTIVITIES, PARTICIPANTS}
    training = refusal(TRAINING, held)
    assert training == (
        "bridge training --refresh needs web-service functions the token's external service "
        f"lacks: {COMPLETION}, {ACTIVITIES}; add each under {WHERE_TO_ADD} "
        "(delivery does not need them)"
    )
    reconcile = refusal(RECONCILE, held)
    assert reconcile is not None and PARTICIPANTS in reconcile and COMPLETION not in reconcile
    assert missing_reads(held)[COMPLETION] == [TRAINING]
    course_lookup = missing_reads(everything - {"core_course_get_courses_by_field"})
    assert course_lookup == {"core_course_get_courses_by_field": [TRAINING, RECONCILE]}


# -- against the simulator --------------------------------------------------------------------


async def test_a_read_function_missing_is_a_warning_and_delivery_goes_on(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path)
    for function in (ACTIVITIES, MEMBERS):
        site_of(sim).service_functions.discard(function)

    verdict = await moodle_verdict(rules, transport)

    assert verdict.passed, verdict.reason()
    assert verdict.reason() == ""
    assert read_warnings(verdict) == {
        ACTIVITIES: f"{ACTIVITIES} is not in the token's external service: bridge training "
        "--refresh cannot run without it (delivery does not need it)",
        MEMBERS: f"{MEMBERS} is not in the token's external service: bridge reconcile cannot "
        "run without it (delivery does not need it)",
    }
    where = {f.where for f in verdict.findings if f.check == "read_function"}
    assert where == {requirements(ruleset_of(rules), "moodle").where}  # the target's entry


async def test_every_read_function_present_is_one_passing_finding(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> None:
    verdict = await moodle_verdict(write_rules(tmp_path), transport)

    reads = [f for f in verdict.findings if f.check == "read_function"]
    assert [(f.ok, f.message) for f in reads] == [
        (True, "the 7 web-service function(s) the read-back commands call are in the service")
    ]


async def test_a_function_delivery_needs_too_is_one_error_not_also_a_warning(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    """``core_user_get_users_by_field`` is every intent's account lookup: without it delivery
    fails preflight, and that error already names it."""
    site_of(sim).service_functions.discard("core_user_get_users_by_field")

    verdict = await moodle_verdict(write_rules(tmp_path), transport)

    assert not verdict.passed
    blocking = [(f.check, f.subject) for f in verdict.blocking]
    assert ("function", "core_user_get_users_by_field") in blocking
    assert read_warnings(verdict) == {}


async def test_rules_without_cohorts_need_no_cohort_reads(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    for function in ("core_cohort_search_cohorts", MEMBERS):
        site_of(sim).service_functions.discard(function)

    verdict = await moodle_verdict(write_rules(tmp_path, cohorts=False), transport)

    assert verdict.passed, verdict.reason()
    assert read_warnings(verdict) == {}


async def test_read_refusal_asks_the_site_once(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    ruleset = ruleset_of(write_rules(tmp_path))
    target = make_target(ruleset.targets["moodle"], {"MOODLE_TOKEN": SIM_MOODLE_TOKEN}, transport)
    assert isinstance(target, MoodleTarget)
    try:
        assert await read_refusal(target, TRAINING) is None
        site_of(sim).service_functions.discard(PARTICIPANTS)
        assert await read_refusal(target, TRAINING) is None
        said = await read_refusal(target, RECONCILE, requirements(ruleset, "moodle"))
        assert said is not None and said.startswith("bridge reconcile needs")
        assert PARTICIPANTS in said and WHERE_TO_ADD in said
        assert site_of(sim).calls["core_webservice_get_site_info"] == 3
        # The completion reader asks once for all its reads and answers each with the reason.
        site_of(sim).service_functions.discard(COMPLETION)
        asks = [Ask(f"p{n}", str(n + 10), None, "BEN-2026") for n in range(3)]
        readings = await read_all(MoodleCompletion(target), asks, concurrency=3)
        expected = refusal(TRAINING, site_of(sim).service_functions)
        assert expected is not None and COMPLETION in expected
        assert [(r.state, r.error) for r in readings] == [(None, expected)] * 3
        assert site_of(sim).calls["core_webservice_get_site_info"] == 4
        assert COMPLETION not in site_of(sim).calls
    finally:
        await target.aclose()


def test_targets_check_shows_the_warning_and_passes(
    tmp_path: Path, database_url: str, simulator_url: tuple[str, Starlette]
) -> None:
    url, app = simulator_url
    site_of(app).service_functions.discard(COMPLETION)
    rules = write_rules(tmp_path, moodle=url, canvas=url)

    result = targets_check(database_url, rules, "moodle", "--json")

    assert result.exit_code == 0, result.output
    (target,) = json.loads(result.stdout)["targets"]
    assert target["passed"] is True
    warned = [f for f in target["findings"] if f["check"] == "read_function" and not f["ok"]]
    assert [(f["subject"], f["severity"]) for f in warned] == [(COMPLETION, "warning")]
    assert WHERE_TO_ADD in warned[0]["fix"]
