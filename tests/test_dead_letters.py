"""``bridge errors retry|skip``: a dead letter goes back to pending (fresh attempts) or is given
up on, and the decision is in the person's journal with who took it, as from the admin page."""

from __future__ import annotations

import getpass
from datetime import timedelta
from pathlib import Path

from bridge.relay import Relay
from bridge.store import journal
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.targets.base import Category
from bridge.targets.base import Result
from tests.conftest import NOW
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.test_metrics import AnsweringLms


async def dead_letters(db: Database, *people: str) -> list[int]:
    """One dead letter per person (the LMS refused their account for the data)."""
    intent = {"kind": "upsert_account", "target": "lms", "rule": "r"}
    with db.write() as conn:
        outbox.enqueue(conn, [{**intent, "person": p} for p in people], now=NOW)
    refusal = [Result.dead(Category.data_quality, "bad email")]
    lms = AnsweringLms({p: list(refusal) for p in people})
    relay = Relay(db, {"lms": lms}, clock=lambda: NOW + timedelta(seconds=1))
    assert await relay.run_once() == len(people)
    with db.read() as conn:
        return [int(row["id"]) for row in outbox.dead_letters(conn, limit=10)]


async def test_retry_and_skip_from_the_command_line_are_journalled_on_the_person(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    first, second = sorted(await dead_letters(db, "ann", "bob"))
    rules = shipped_rules(tmp_path)
    retried = run_cli(database_url, rules, "errors", "retry", str(first))
    assert retried.exit_code == 0 and "1 intent(s) queued again" in retried.output
    skipped = run_cli(database_url, rules, "errors", "skip", str(second), str(first))
    assert "1 intent(s) skipped" in skipped.output  # the first is no longer dead
    with db.read() as conn:
        rows = {row_id: outbox.get(conn, row_id) for row_id in (first, second)}
        decisions = [e for e in journal.read(conn) if e.op.startswith("errors.")]
    assert rows[first] is not None and rows[first]["status"] == outbox.PENDING
    assert rows[second] is not None and rows[second]["status"] == outbox.SKIPPED
    who = f"cli:{getpass.getuser()}"
    assert [(e.op, e.actor, e.resource_id, (e.detail or {})["outbox"]) for e in decisions] == [
        ("errors.retry", who, "ann", first),
        ("errors.skip", who, "bob", second),
    ]
    assert decisions[0].detail is not None and decisions[0].detail["last_error"] == "bad email"
