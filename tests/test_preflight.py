"""Target preflight: what the rules need of a target (pure), whether the LMS has it (Moodle and
Canvas simulators, the bridge's own SCIM server), the verdict in target_health, and
``bridge targets check``.

Each missing thing gives exactly one failing finding, with the rule file:line:col that
depends on it and the fix; the rules live in a temporary rules directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.cli.targets import exit_code
from bridge.lmssim.app import SIM_CANVAS_TOKEN
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import create_app as create_simulator
from bridge.lmssim.moodle import MoodleSite
from bridge.provision.preflight import check_target
from bridge.provision.preflight import preflight_for
from bridge.provision.preflight import run_preflight
from bridge.rules.loader import load_ruleset
from bridge.rules.model import RuleSet
from bridge.store import health
from bridge.store.engine import Database
from bridge.targets.base import Target
from bridge.targets.canvas import CanvasTarget
from bridge.targets.moodle import MoodleTarget
from bridge.targets.moodle_findings import PROBE_IDNUMBER
from bridge.targets.moodle_findings import STOCK_AUTHS
from bridge.targets.moodle_findings import auth_finding
from bridge.targets.moodle_findings import custom_fields
from bridge.targets.moodle_findings import function_findings
from bridge.targets.moodle_findings import profile_field_findings
from bridge.targets.moodle_ws import FUNCTIONS_BY_INTENT
from bridge.targets.preflight import Finding
from bridge.targets.preflight import Requirement
from bridge.targets.preflight import Requirements
from bridge.targets.preflight import Verdict
from bridge.targets.preflight import requirements
from bridge.targets.registry import make_target
from bridge.targets.rest_preflight import request_findings
from bridge.targets.scim import ScimTarget
from tests.conftest import NOW
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import free_port
from tests.conftest import run_cli

SIM = "http://lms.test"

TARGETS = """\
targets:
  moodle:
    kind: moodle
    base_url: {moodle}
    credentials:
      token: env:MOODLE_TOKEN
    options:
      auth: {auth}
      student_role_id: 5
  canvas:
    kind: canvas
    base_url: {canvas}
    credentials:
      token: env:CANVAS_TOKEN
    options:
      account_id: 1
"""

TRAINING = """\
version: 1
name: training
target: {target}

aliases:
  roleCodes: urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser:roleCodes

mapping:
  idnumber: {{from: externalId, required: true}}
  username: {{from: userName, transforms: [trim, lower], required: true}}
  email: {{from: 'emails[type eq "work"].value', required: true}}
  firstname: {{from: name.givenName}}
  lastname: {{from: name.familyName}}
  title: {{from: title}}
  roles: {{from: roleCodes}}
{extra_mapping}
enrolments:
  - id: benefits
    when: 'roleCodes eq "BEN_CHOICE_2026"'
    course: {course}
{extra_enrolments}
cohorts:
  - id: benefits-cohort
    when: 'roleCodes eq "BEN_CHOICE_2026"'
    cohort: {cohort}
"""


def write_rules(
    directory: Path,
    *,
    target: str = "moodle",
    course: str = "BEN-2026",
    cohort: str = "BEN2026",
    auth: str = "oauth2",
    extra_mapping: str = "",
    extra_enrolments: str = "",
    moodle: str = SIM,
    canvas: str = SIM,
    cohorts: bool = True,
) -> Path:
    rules = directory / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "targets.yaml").write_text(TARGETS.format(moodle=moodle, canvas=canvas, auth=auth))
    text = TRAINING.format(
        target=target,
        course=course,
        cohort=cohort,
        extra_mapping=extra_mapping,
        extra_enrolments=extra_enrolments,
    )
    if not cohorts:
        text = text.split("cohorts:")[0]
    (rules / "training.yaml").write_text(text)
    return rules


def ruleset_of(rules: Path) -> RuleSet:
    return load_ruleset(rules, relative_to=rules)


def at(rules: Path, file: str, line_text: str, column_text: str | None = None) -> str:
    """``file:line:col``: the first line holding ``line_text``, the column where
    ``column_text`` (default: ``line_text``) starts on it."""
    for number, line in enumerate((rules / file).read_text().splitlines(), start=1):
        if line_text in line:
            return f"{file}:{number}:{line.index(column_text or line_text) + 1}"
    raise AssertionError(f"{line_text!r} not in {file}")


def failing(verdict: Verdict) -> list[Finding]:
    return [f for f in verdict.findings if not f.ok]


def only_failure(verdict: Verdict) -> Finding:
    found = failing(verdict)
    assert len(found) == 1, [f.line() for f in found]
    return found[0]


# -- what the rules need (pure) ---------------------------------------------------------------------


def test_requirements_name_every_ref_with_the_rule_that_needs_it(tmp_path: Path) -> None:
    rules = write_rules(
        tmp_path,
        extra_mapping="  auth: {value: saml2, on: create}\n",
        extra_enrolments=(
            "  - id: managers\n"
            "    when: 'roleCodes eq \"MANAGER\"'\n"
            "    course: BEN-2026-MGR\n"
            "    otherwise: unenrol\n"
        ),
    )
    needs = requirements(ruleset_of(rules), "moodle")

    assert needs.kind == "moodle"
    assert needs.courses == (
        Requirement("BEN-2026", at(rules, "training.yaml", "id: benefits")),
        Requirement("BEN-2026-MGR", at(rules, "training.yaml", "id: managers")),
    )
    cohort = Requirement("BEN2026", at(rules, "training.yaml", "id: benefits-cohort"))
    assert needs.cohorts == (cohort,)
    assert needs.paths == ()
    title = Requirement("title", at(rules, "training.yaml", "title:", "{from"))
    assert title in needs.attributes
    assert "auth" not in [a.subject for a in needs.attributes]
    # The rule file's constant wins over the target's option for the accounts it creates.
    assert needs.auth == Requirement("saml2", at(rules, "training.yaml", "{value: saml2"))
    assert needs.auths == (needs.auth,)
    assert needs.credentials == {"token": "MOODLE_TOKEN"}
    assert needs.where == at(rules, "targets.yaml", "kind: moodle")
    assert needs.intent_kinds() == [
        "upsert_account",
        "reactivate_account",
        "enrol",
        "add_cohort_member",
        "suspend_enrolment",
        "unenrol",
        "remove_cohort_member",
        "suspend_account",
    ]
    unenrol = next(r for r in needs.intents if r.subject == "unenrol")
    assert unenrol.where == at(rules, "training.yaml", "id: managers")


def test_requirements_without_unenrol_rules_need_no_unenrol(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, cohorts=False)
    needs = requirements(ruleset_of(rules), "moodle")

    assert not needs.needs("unenrol")
    assert not needs.needs("add_cohort_member")
    assert needs.needs("suspend_enrolment")
    # No auth in the rule file: the target's option applies, where the target is declared.
    assert needs.auth == Requirement("oauth2", at(rules, "targets.yaml", "kind: moodle"))


def test_requirements_of_a_target_no_rule_file_drives(tmp_path: Path) -> None:
    needs = requirements(ruleset_of(write_rules(tmp_path)), "canvas")

    assert (needs.courses, needs.intents, needs.files) == ((), (), ())
    assert needs.credentials == {"token": "CANVAS_TOKEN"}


def test_exit_code_fails_before_unreachable() -> None:
    ok = Verdict("a")
    bad = Verdict("b", (Finding("b", "course", False, "no course"),))
    away = Verdict("c", (), unreachable=True)

    assert [exit_code([ok]), exit_code([ok, away]), exit_code([away, bad])] == [0, 2, 1]


# -- what the answers mean (pure) -------------------------------------------------------------------

NEEDS = Requirements(
    "moodle",
    where="targets.yaml:3:5",
    intents=(
        Requirement("upsert_account", "a.yaml:1:1"),
        Requirement("unenrol", "a.yaml:20:5"),
    ),
    attributes=(
        Requirement("username", "a.yaml:8:13"),
        Requirement("title", "a.yaml:10:10"),
        Requirement("cost-centre", "a.yaml:11:16"),
        Requirement("roles", "a.yaml:12:10"),
    ),
)


def test_function_findings_name_the_missing_function_and_the_rule_needing_it() -> None:
    allowed = set(FUNCTIONS_BY_INTENT["upsert_account"]) | {"core_webservice_get_site_info"}
    findings = function_findings("moodle", NEEDS, allowed | {"core_course_get_courses_by_field"})

    assert findings[0].ok
    assert [(f.subject, f.where) for f in findings[1:]] == [
        ("enrol_manual_unenrol_users", "a.yaml:20:5")
    ]


def test_auth_refused_by_create_users_even_though_installed() -> None:
    finding = auth_finding("moodle", Requirement("webservice", "a.yaml:14:9"))

    assert not finding.ok and "refuses auth 'webservice'" in finding.message


def test_auth_listed_as_installed_by_the_target_option() -> None:
    finding = auth_finding("moodle", Requirement("saml2", "a.yaml:14:9"), installed=["saml2"])

    assert finding.ok and "auth_plugins" in finding.message


def test_custom_fields_follow_the_renames_and_skip_standard_fields() -> None:
    options = {"profile_fields": {"title": "jobtitle", "roles": None}}

    assert [(a.subject, short) for a, short in custom_fields(NEEDS, options)] == [
        ("title", "jobtitle"),
        ("cost-centre", "cost-centre"),
    ]


def test_profile_field_short_names_moodle_cannot_have() -> None:
    fields = custom_fields(NEEDS, {})
    findings = profile_field_findings("moodle", fields, {"title": "m", "roles": "m"})

    assert [(f.subject, f.ok) for f in findings] == [
        ("title", True),
        ("cost-centre", False),
        ("roles", True),
    ]
    assert "letters, digits and _" in findings[1].message


def test_rest_target_without_a_request_for_an_intent_the_rules_produce() -> None:
    findings = request_findings("docebo", NEEDS, {"lookup", "create_account"})

    assert [(f.subject, f.where) for f in findings] == [("unenrol", "a.yaml:20:5")]
    assert "add a unenrol request" in findings[0].fix


# -- Moodle, against the simulator ------------------------------------------------------------------


@pytest.fixture
def sim() -> Starlette:
    return create_simulator()


def site_of(app: Starlette) -> MoodleSite:
    site: MoodleSite = app.state.moodle
    return site


@pytest.fixture
def transport(sim: Starlette) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=sim)


async def moodle_verdict(
    rules: Path,
    transport: httpx.AsyncBaseTransport,
    *,
    token: str = SIM_MOODLE_TOKEN,
    name: str = "moodle",
) -> Verdict:
    ruleset = ruleset_of(rules)
    env = {"MOODLE_TOKEN": token, "CANVAS_TOKEN": SIM_CANVAS_TOKEN}
    target = make_target(ruleset.targets[name], env, transport)
    try:
        return await check_target(target, requirements(ruleset, name))
    finally:
        await target.aclose()


async def test_moodle_site_with_everything_passes(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    verdict = await moodle_verdict(write_rules(tmp_path), transport)

    assert verdict.passed, verdict.reason()
    assert not verdict.unreachable
    assert failing(verdict) == []
    checks = {f.check for f in verdict.findings}
    assert {"credential", "function", "auth", "course", "cohort", "profile_field"} <= checks
    # Usernames must be ASCII unless the target says the site allows more: a note, not a failure.
    note = next(f for f in verdict.findings if f.check == "username")
    assert note.ok and note.severity == "warning"
    # The custom fields were proved on a bridge-owned account nobody can log in to.
    probe = [u for u in site_of(sim).snapshot()["users"] if u["username"] == "bridge-preflight"]
    assert len(probe) == 1
    assert probe[0]["auth"] == "nologin" and probe[0]["suspended"]
    assert probe[0]["idnumber"] == PROBE_IDNUMBER
    assert site_of(sim).calls["core_webservice_get_site_info"] == 1
    assert sum(site_of(sim).calls.values()) <= 10  # a handful of calls for a small rule set


async def test_moodle_second_run_reuses_the_probe_account_and_asks_again(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path)
    await moodle_verdict(rules, transport)
    calls = dict(site_of(sim).calls)
    verdict = await moodle_verdict(rules, transport)

    assert verdict.passed, verdict.reason()
    assert site_of(sim).calls["core_user_create_users"] == calls["core_user_create_users"] == 1
    # Nothing is cached across runs: the site is asked again.
    assert site_of(sim).calls["core_webservice_get_site_info"] == 2


async def test_moodle_missing_course(tmp_path: Path, transport: httpx.AsyncBaseTransport) -> None:
    rules = write_rules(tmp_path, course="BEN-2099")
    verdict = await moodle_verdict(rules, transport)

    finding = only_failure(verdict)
    assert (finding.check, finding.subject, finding.severity) == ("course", "BEN-2099", "error")
    assert finding.where == at(rules, "training.yaml", "id: benefits")
    assert "no Moodle course with idnumber or shortname 'BEN-2099'" in finding.message
    assert "create the course with course ID number 'BEN-2099'" in finding.fix
    assert not verdict.passed and not verdict.unreachable


async def test_moodle_course_without_a_manual_enrolment_instance(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, course="LIB")  # the simulator's library tour: self enrolment
    finding = only_failure(await moodle_verdict(rules, transport))

    assert (finding.check, finding.subject) == ("course", "LIB")
    assert "no enabled manual enrolment instance" in finding.message
    assert "Manual enrolments" in finding.fix
    assert finding.where == at(rules, "training.yaml", "id: benefits")


async def test_moodle_course_found_by_shortname(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, course="ONBOARD-101")  # idnumber ONB101, shortname ONBOARD-101
    verdict = await moodle_verdict(rules, transport)

    assert verdict.passed, verdict.reason()


async def test_moodle_missing_cohort(tmp_path: Path, transport: httpx.AsyncBaseTransport) -> None:
    rules = write_rules(tmp_path, cohort="BEN2099")
    finding = only_failure(await moodle_verdict(rules, transport))

    assert (finding.check, finding.subject) == ("cohort", "BEN2099")
    assert finding.where == at(rules, "training.yaml", "id: benefits-cohort")
    assert "cohort ID 'BEN2099'" in finding.fix


async def test_moodle_function_removed_from_the_service(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(
        tmp_path,
        extra_enrolments=(
            "  - id: managers\n"
            "    when: 'roleCodes eq \"MANAGER\"'\n"
            "    course: BEN-2026-MGR\n"
            "    otherwise: unenrol\n"
        ),
    )
    site_of(sim).service_functions.discard("enrol_manual_unenrol_users")
    finding = only_failure(await moodle_verdict(rules, transport))

    assert (finding.check, finding.subject) == ("function", "enrol_manual_unenrol_users")
    assert finding.where == at(rules, "training.yaml", "id: managers")
    assert "External services" in finding.fix and "enrol_manual_unenrol_users" in finding.fix


async def test_moodle_unenrol_function_not_needed_without_unenrol_rules(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    site_of(sim).service_functions.discard("enrol_manual_unenrol_users")
    verdict = await moodle_verdict(write_rules(tmp_path), transport)

    assert verdict.passed, verdict.reason()


async def test_moodle_saml2_on_a_stock_site(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, extra_mapping="  auth: {value: saml2, on: create}\n")
    finding = only_failure(await moodle_verdict(rules, transport))

    assert (finding.check, finding.subject) == ("auth", "saml2")
    assert finding.where == at(rules, "training.yaml", "{value: saml2")
    assert "not a stock Moodle auth plugin and no account on the site uses it" in finding.message
    assert "install and enable the saml2 auth plugin" in finding.fix
    assert "saml2" not in STOCK_AUTHS


async def test_moodle_saml2_where_the_site_has_it(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    site_of(sim).auth_plugins.add("saml2")
    site_of(sim).add_user("sso.user", auth="saml2", email="sso.user@example.com")
    rules = write_rules(tmp_path, extra_mapping="  auth: {value: saml2, on: create}\n")
    verdict = await moodle_verdict(rules, transport)

    assert verdict.passed, verdict.reason()
    auth = next(f for f in verdict.findings if f.check == "auth")
    assert "1 account(s) on the site use it" in auth.message


async def test_moodle_undefined_profile_field(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, extra_mapping="  costcentre: {from: title}\n")
    verdict = await moodle_verdict(rules, transport)

    finding = only_failure(verdict)
    assert (finding.check, finding.subject) == ("profile_field", "costcentre")
    assert finding.where == at(rules, "training.yaml", "costcentre:", "{from")
    assert "is not defined" in finding.message
    assert "User profile fields" in finding.fix and "remove 'costcentre'" in finding.fix
    # The fields the site defines (title, roles) were proved by the same write and read-back.
    defined = {f.subject for f in verdict.findings if f.ok and f.check == "profile_field"}
    assert defined == {"title", "roles"}
    assert site_of(sim).calls["core_user_update_users"] == 1


async def test_moodle_profile_fields_unverified_without_a_probe_account(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, extra_mapping="  costcentre: {from: title}\n")
    targets = (rules / "targets.yaml").read_text()
    (rules / "targets.yaml").write_text(
        targets.replace("student_role_id: 5", "student_role_id: 5\n      preflight_account: false")
    )
    verdict = await moodle_verdict(rules, transport)

    assert verdict.passed, verdict.reason()
    unverified = [f for f in verdict.warnings if f.check == "profile_field"]
    assert {f.subject for f in unverified} == {"title", "roles", "costcentre"}
    assert all("cannot be verified" in f.message for f in unverified)
    assert "core_user_create_users" not in site_of(sim).calls


async def test_moodle_bad_token(tmp_path: Path, transport: httpx.AsyncBaseTransport) -> None:
    rules = write_rules(tmp_path)
    verdict = await moodle_verdict(rules, transport, token="not-the-token")

    finding = only_failure(verdict)
    assert (finding.check, finding.subject) == ("credential", "MOODLE_TOKEN")
    assert "the token is refused" in finding.message and "invalidtoken" in finding.message
    assert "create a token" in finding.fix and "MOODLE_TOKEN" in finding.fix
    assert finding.where == at(rules, "targets.yaml", "kind: moodle")
    assert not verdict.unreachable


async def test_moodle_rest_protocol_disabled(
    tmp_path: Path, sim: Starlette, transport: httpx.AsyncBaseTransport
) -> None:
    site_of(sim).rest_enabled = False
    finding = only_failure(await moodle_verdict(write_rules(tmp_path), transport))

    assert finding.check == "credential"
    assert "HTTP 403" in finding.message
    assert "Enable web services" in finding.fix and "Manage protocols" in finding.fix


async def test_moodle_unreachable(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    rules = write_rules(tmp_path, moodle=closed)
    verdict = await moodle_verdict(rules, httpx.AsyncHTTPTransport())

    assert verdict.unreachable and not verdict.passed
    assert verdict.blocking == []  # not a configuration finding
    assert "did not answer" in verdict.reason()


# -- Canvas, against the simulator ------------------------------------------------------------------


async def test_canvas_with_its_courses_passes(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, target="canvas", cohorts=False)
    verdict = await moodle_verdict(rules, transport, name="canvas")

    assert verdict.passed, verdict.reason()
    assert [f.check for f in verdict.findings] == ["credential", "course"]


async def test_canvas_missing_course_and_cohorts(
    tmp_path: Path, transport: httpx.AsyncBaseTransport
) -> None:
    rules = write_rules(tmp_path, target="canvas", course="BEN-2099")
    verdict = await moodle_verdict(rules, transport, name="canvas")

    course, cohort = failing(verdict)
    assert (course.check, course.subject) == ("course", "BEN-2099")
    assert course.where == at(rules, "training.yaml", "id: benefits")
    assert "SIS ID 'BEN-2099'" in course.fix
    assert (cohort.check, cohort.subject) == ("cohort", "BEN2026")
    assert cohort.where == at(rules, "training.yaml", "id: benefits-cohort")
    assert "Canvas has no cohorts" in cohort.message


async def test_canvas_bad_token(tmp_path: Path, sim: Starlette) -> None:
    rules = write_rules(tmp_path, target="canvas", cohorts=False)
    ruleset = ruleset_of(rules)
    target = CanvasTarget(
        ruleset.targets["canvas"], "wrong", transport=httpx.ASGITransport(app=sim)
    )
    verdict = await check_target(target, requirements(ruleset, "canvas"))
    await target.aclose()

    finding = only_failure(verdict)
    assert (finding.check, finding.subject) == ("credential", "CANVAS_TOKEN")
    assert "refused" in finding.message and "CANVAS_TOKEN" in finding.fix


# -- SCIM, against the bridge's own SCIM server -----------------------------------------------------


@pytest.fixture
async def scim_server(app: Starlette) -> AsyncIterator[httpx.AsyncBaseTransport]:
    yield httpx.ASGITransport(app=app)


async def scim_verdict(
    rules: Path, transport: httpx.AsyncBaseTransport, token: str
) -> tuple[Verdict, ScimTarget]:
    ruleset = ruleset_of(rules)
    target = ScimTarget(ruleset.targets["lms"], token, transport=transport)
    try:
        return await check_target(target, requirements(ruleset, "lms")), target
    finally:
        await target.aclose()


def scim_rules(tmp_path: Path) -> Path:
    rules = write_rules(tmp_path)
    (rules / "targets.yaml").write_text(
        (rules / "targets.yaml").read_text()
        + "  lms:\n    kind: scim\n    base_url: http://bridge.test/scim/v2\n"
        + "    credentials:\n      token: env:LMS_TOKEN\n"
    )
    (rules / "accounts.yaml").write_text(
        "version: 1\nname: accounts\ntarget: lms\nmapping:\n"
        "  idnumber: {from: externalId}\n  username: {from: userName}\n"
        "  costcentre: {from: title}\n"
    )
    return rules


async def test_scim_target_takes_the_token(
    tmp_path: Path, scim_server: httpx.AsyncBaseTransport
) -> None:
    rules = scim_rules(tmp_path)
    verdict, _ = await scim_verdict(rules, scim_server, TOKEN)

    assert verdict.passed, verdict.reason()
    assert verdict.findings[0].check == "credential" and verdict.findings[0].ok
    # An attribute with no SCIM path is left out of every call: a warning at the mapping.
    (ignored,) = verdict.warnings
    assert ignored.subject == "costcentre"
    assert ignored.where == at(rules, "accounts.yaml", "costcentre:", "{from")


async def test_scim_target_refused_token(
    tmp_path: Path, scim_server: httpx.AsyncBaseTransport
) -> None:
    verdict, _ = await scim_verdict(scim_rules(tmp_path), scim_server, "wrong")

    (finding,) = verdict.blocking
    assert finding.check == "credential" and "refused" in finding.message
    assert "LMS_TOKEN" in finding.fix


# -- a declarative rest target ----------------------------------------------------------------------


DOCEBO = """\
  docebo:
    kind: rest
    base_url: http://docebo.test
    credentials:
      token: env:DOCEBO_TOKEN
    options:
      auth: {type: bearer}
      create_account:
        method: POST
        url: /manage/v1/user
        body: {userid: "{{ attributes.username }}"}
        id: $.data.user_id
      enrol:
        method: POST
        url: /learn/v1/enrollments
        body: {user_id: "{{ lms_user_id }}", course: "{{ ref }}"}
"""


async def test_rest_target_is_checked_for_the_requests_the_rules_need(tmp_path: Path) -> None:
    rules = write_rules(tmp_path, target="docebo", cohorts=False)
    (rules / "targets.yaml").write_text((rules / "targets.yaml").read_text() + DOCEBO)
    ruleset = ruleset_of(rules)
    target = make_target(ruleset.targets["docebo"], {"DOCEBO_TOKEN": "t"})
    verdict = await check_target(target, requirements(ruleset, "docebo"))
    await target.aclose()

    assert verdict.findings[0].check == "credential" and verdict.findings[0].ok
    assert "not verified" in verdict.findings[0].message
    assert [(f.subject, f.where) for f in verdict.blocking] == [
        ("reactivate_account", "training.yaml:1:1"),
        ("suspend_enrolment", at(rules, "training.yaml", "id: benefits")),
        ("suspend_account", "training.yaml:1:1"),
    ]


# -- recorded in target_health, logged --------------------------------------------------------------


async def test_run_preflight_records_misconfigured_then_ok(
    tmp_path: Path,
    db: Database,
    sim: Starlette,
    transport: httpx.AsyncBaseTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = write_rules(tmp_path, course="NEW-2027")
    ruleset = ruleset_of(rules)
    targets: dict[str, Target] = {
        "moodle": MoodleTarget(ruleset.targets["moodle"], SIM_MOODLE_TOKEN, transport=transport)
    }
    caplog.set_level(logging.INFO, logger="bridge.preflight")

    verdicts = await run_preflight(db, ruleset, targets, now=NOW)

    assert not verdicts["moodle"].passed
    with db.read() as conn:
        found = health.get(conn, "moodle")
    assert found is not None and found.state == health.MISCONFIGURED
    assert found.reason == verdicts["moodle"].reason()
    assert "NEW-2027" in found.reason and "training.yaml" in found.reason
    assert [f["subject"] for f in found.findings if f["severity"] == "error"] == ["NEW-2027"]
    (record,) = [r for r in caplog.records if r.name == "bridge.preflight"]
    assert record.levelno == logging.WARNING
    assert (record.target, record.verdict) == ("moodle", "failed")  # type: ignore[attr-defined]
    assert "NEW-2027" in record.getMessage()

    site_of(sim).add_course("NEW-2027", "New course", idnumber="NEW-2027")
    caplog.clear()
    verdicts = await run_preflight(db, ruleset, targets, now=NOW)
    await targets["moodle"].aclose()

    assert verdicts["moodle"].passed
    with db.read() as conn:
        found = health.get(conn, "moodle")
    assert found is not None and found.state == health.OK and found.reason == ""
    (record,) = [r for r in caplog.records if r.name == "bridge.preflight"]
    assert (record.levelno, record.verdict) == (logging.INFO, "passed")  # type: ignore[attr-defined]


async def test_preflight_for_the_relay_checks_one_target_against_the_current_rules(
    tmp_path: Path, db: Database, transport: httpx.AsyncBaseTransport
) -> None:
    ruleset = ruleset_of(write_rules(tmp_path, cohort="GONE"))
    moodle = MoodleTarget(ruleset.targets["moodle"], SIM_MOODLE_TOKEN, transport=transport)
    recheck = preflight_for(db, lambda: ruleset, {"moodle": moodle}, now=lambda: NOW)

    verdict = await recheck("moodle")
    await moodle.aclose()

    assert [f.subject for f in verdict.blocking] == ["GONE"]
    with db.read() as conn:
        found = health.get(conn, "moodle")
    assert found is not None and found.state == health.MISCONFIGURED and found.checked == NOW


def test_unreachable_target_leaves_the_health_state_alone(tmp_path: Path, db: Database) -> None:
    rules = write_rules(tmp_path, moodle=f"http://127.0.0.1:{free_port()}")
    ruleset = ruleset_of(rules)
    with db.write() as conn:
        health.save(conn, "moodle", health.UNREACHABLE, now=NOW, reason="circuit open")
    target = make_target(ruleset.targets["moodle"], {"MOODLE_TOKEN": "x"})

    verdicts = asyncio.run(run_preflight(db, ruleset, {"moodle": target}, now=NOW))

    assert verdicts["moodle"].unreachable
    with db.read() as conn:
        found = health.get(conn, "moodle")
    assert found is not None and (found.state, found.reason) == (health.UNREACHABLE, "circuit open")


# -- bridge targets check ---------------------------------------------------------------------------


def targets_check(database_url: str, rules: Path, *args: str) -> Any:
    return run_cli(
        database_url,
        rules,
        "targets",
        "check",
        *args,
        MOODLE_TOKEN=SIM_MOODLE_TOKEN,
        CANVAS_TOKEN=SIM_CANVAS_TOKEN,
    )


def test_cli_check_json_fails_with_the_finding_and_records_it(
    tmp_path: Path, database_url: str, db: Database, simulator_url: tuple[str, Starlette]
) -> None:
    url, _ = simulator_url
    rules = write_rules(tmp_path, course="BEN-2099", moodle=url, canvas=url)

    result = targets_check(database_url, rules, "moodle", "--json")

    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    (target,) = document["targets"]
    assert (target["name"], target["passed"], target["unreachable"]) == ("moodle", False, False)
    bad = [f for f in target["findings"] if not f["ok"]]
    # BRIDGE_RULES outside the working directory: rule files are named by their full path.
    where = f"{rules}/" + at(rules, "training.yaml", "id: benefits")
    assert [(f["check"], f["subject"], f["where"]) for f in bad] == [("course", "BEN-2099", where)]
    assert "create the course" in bad[0]["fix"]
    with db.read() as conn:
        found = health.get(conn, "moodle")
    assert found is not None and found.state == health.MISCONFIGURED


def test_cli_check_passes_with_a_table(
    tmp_path: Path, database_url: str, simulator_url: tuple[str, Starlette]
) -> None:
    url, _ = simulator_url
    rules = write_rules(tmp_path, moodle=url, canvas=url)

    result = targets_check(database_url, rules, "moodle")

    assert result.exit_code == 0, result.output
    assert "✓ target moodle passes preflight" in result.stdout
    assert "BEN-2026" in result.stdout and "core_webservice_get_site_info" in result.stdout


def test_cli_check_unreachable_exits_2(tmp_path: Path, database_url: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    rules = write_rules(tmp_path, moodle=closed, canvas=closed)

    result = targets_check(database_url, rules, "--json")

    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert [(t["name"], t["unreachable"]) for t in document["targets"]] == [
        ("canvas", True),
        ("moodle", True),
    ]


def test_cli_check_unknown_target(tmp_path: Path, database_url: str) -> None:
    result = targets_check(database_url, write_rules(tmp_path), "blackboard")

    assert result.exit_code == 1
    assert "no target 'blackboard'" in result.output


def test_requirements_of_the_shipped_rules() -> None:
    needs = requirements(load_ruleset(ROOT / "rules", relative_to=ROOT), "moodle")

    assert [c.subject for c in needs.courses] == ["BEN-2026", "BEN-2026-MGR"]
    assert [c.subject for c in needs.cohorts] == ["BEN2026"]
    assert needs.auth is not None and needs.auth.where.startswith("rules/benefits-2026.yaml:")
