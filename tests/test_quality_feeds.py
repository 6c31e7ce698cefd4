"""``bridge quality`` per HR feed: the webhooks and uploads refused before anything was
stored (counted durably, per reason, with the fix), and the feed's people whose work email is
not an address or who hold a role code no catalogue knows — each with examples and the fix to
make in the HRIS."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.provision.feed_quality import feed_quality
from bridge.store import webhook_refusals
from bridge.store.engine import Database
from bridge.store.engine import connect
from tests.conftest import run_cli
from tests.test_sync import export
from tests.test_sync import row
from tests.test_sync import sync
from tests.test_webhooks import Bridge
from tests.test_webhooks import bridge  # noqa: F401 (a fixture)
from tests.test_webhooks import event
from tests.test_webhooks import hr_rules  # noqa: F401 (a fixture)
from tests.test_webhooks import standard_headers

HR = "urn:ietf:params:scim:schemas:extension:bridge:2.0:HrUser"


def test_feed_people_with_a_broken_email_or_an_unknown_role_code_are_listed_with_the_fix(
    database_url: str, feed_rules: Path, tmp_path: Path
) -> None:
    people = [row(n) for n in range(1, 8)]
    people[2] = people[2].replace("Person3@Example.com", "person3-at-example.com")
    people[4] = people[4].replace("BEN_CHOICE_2026;EMPLOYEE", "BEN_CHOISE_2026;EMPLOYEE")
    result, _ = sync(database_url, feed_rules, export(tmp_path, "people.csv", *people))
    assert result.exit_code == 0, result.output
    report = run_cli(database_url, feed_rules, "quality", "--json")
    checks = json.loads(report.output)["feeds"]["workday"]["people"]
    assert checks["people"] == 7
    assert checks["missing_email"]["count"] == 0
    invalid = checks["invalid_email"]
    assert invalid["count"] == 1 and invalid["examples"] == ["E0003: 'person3-at-example.com'"]
    codes = {c["code"]: c for c in checks["unknown_role_codes"]}
    code = codes["BEN_CHOISE_2026"]
    assert (code["code"], code["count"], code["suggestion"]) == (
        "BEN_CHOISE_2026",
        1,
        "BEN_CHOICE_2026",
    )
    text = run_cli(database_url, feed_rules, "quality").output
    assert "1 person with a work email that is not an address (E0003" in text
    assert "role code 'BEN_CHOISE_2026' held by 1 person" in text
    assert "did you mean BEN_CHOICE_2026?" in text


def test_feed_quality_counts_each_person_once_and_ignores_deactivated_ones() -> None:
    docs = [
        ("E1", "a@example.com", {"emails": [{"value": "a@example.com"}]}),
        ("E2", "b", {"emails": []}),
        ("E3", "c", {"emails": [{"value": "c@localhost"}], HR: {"roleCodes": ["X"]}}),
        ("E4", "d", {"emails": [{"value": "bad"}, {"value": "d@example.org"}]}),
    ]
    found = feed_quality(docs, None)
    assert found["people"] == 4
    assert found["missing_email"]["count"] == 1 and found["missing_email"]["examples"] == ["E2 (b)"]
    assert found["invalid_email"]["examples"] == ["E3: 'c@localhost'"]  # E4 has a good one
    assert found["unknown_role_codes"] == []  # no rules: no catalogue to judge by


async def test_refused_webhooks_are_counted_durably_per_reason(
    bridge: Bridge,  # noqa: F811
) -> None:
    payload = event("wh_1")
    body = json.dumps(payload).encode()
    for _ in range(2):
        forged = standard_headers(body, "wh_1", secret="whsec_" + "A" * 44)
        assert (await bridge.post("workday", payload, forged)).status_code == 401
    assert (await bridge.post("workday", payload, {})).status_code == 401
    assert (await bridge.post("nosuchfeed", payload, {})).status_code == 404
    with bridge.db.read() as conn:
        counted = {r["error"]: r["count"] for r in webhook_refusals.of_feed(conn, "workday")}
        invented = webhook_refusals.of_feed(conn, "nosuchfeed")
    assert counted == {"forged": 2, "unsigned": 1}
    assert invented == []  # an undeclared feed name is not counted: anyone could invent one
    assert bridge.events() == []  # nothing of the refused bodies kept


def test_refusal_counts_add_up_across_connections(database_url: str) -> None:
    from datetime import UTC
    from datetime import datetime

    db: Database = connect(database_url)
    try:
        now = datetime(2026, 12, 7, tzinfo=UTC)
        for _ in range(3):
            db.run(
                lambda tx: webhook_refusals.record(
                    tx, feed="workday", kind="event", error="stale", reason="old", now=now
                )
            )
        with db.read() as conn:
            (found,) = webhook_refusals.of_feed(conn, "workday")
        assert (found["count"], found["last_reason"]) == (3, "old")
    finally:
        db.dispose()


def test_each_kind_of_refusal_says_what_to_fix(database_url: str, feed_rules: Path) -> None:
    from datetime import UTC
    from datetime import datetime

    db: Database = connect(database_url)
    try:
        now = datetime(2026, 12, 7, tzinfo=UTC)
        for kind, error in (
            ("event", "forged"),
            ("export", "forbidden"),
            ("export", "unknown token"),
        ):
            db.run(
                lambda tx, kind=kind, error=error: webhook_refusals.record(
                    tx, feed="workday", kind=kind, error=error, reason="as refused", now=now
                )
            )
    finally:
        db.dispose()
    text = run_cli(database_url, feed_rules, "quality").output
    assert "1 webhook(s) refused (forged)" in text
    assert "the HRIS and the bridge hold different secrets" in text
    assert "1 export upload(s) refused (forbidden)" in text
    assert "lacks the write scope" in text
    assert "bridge tokens create NAME --scope write" in text
