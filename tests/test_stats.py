"""``bridge stats``: freshness (SCIM write → LMS confirmation) and errors per 1,000 changes —
the before/after figures of the integration guide (">70 % fewer errors and stale data").

The pure parts (``--since``, nearest ranks, attempt categories, durations) run on plain data.
The figures come from the real path on SQLite and PostgreSQL: SCIM writes through the app
under the shipped rules (or a plan applied), the relay delivering to the LMS simulator under a
controlled clock, so every latency is known to the second; then the ``bridge`` command.
"""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.cli.stats import duration
from bridge.cli.stats import parse_since
from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.lmssim.app import Knobs
from bridge.lmssim.app import create_app as create_simulator
from bridge.provision import Cause
from bridge.provision import Provisioner
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.rules.model import Target as TargetConfig
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import outbox
from bridge.store.engine import Database
from bridge.store.stats import attempt_category
from bridge.store.stats import rank
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.targets.moodle import MoodleTarget
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import assert_scim
from tests.conftest import employee
from tests.conftest import queued
from tests.conftest import run_cli
from tests.conftest import shipped_rules
from tests.pilots import draw
from tests.pilots import uncapped

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# -- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("90m", NOW - timedelta(minutes=90)),
        ("1d12h", NOW - timedelta(hours=36)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T09:30:00", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
        ("2026-03-01T09:30:00+02:00", datetime(2026, 3, 1, 7, 30, tzinfo=UTC)),
        ("2026-03-01T09:30:00Z", datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_since_is_a_duration_back_from_now_or_an_iso_date_in_utc(
    text: str, expected: datetime
) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("yesterday", "neither a duration"),
        ("24x", "neither"),
        ("", "neither"),
        ("2027-01-01", "future"),
    ],
)
def test_a_since_that_cannot_be_read_says_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_since(text, NOW)


def test_percentiles_are_nearest_ranks() -> None:
    """p: the smallest value at or under which at least p % of the values lie (1-based)."""
    assert [rank(p, 30) for p in (50, 95, 99, 100)] == [15, 29, 30, 30]
    assert [rank(p, 100) for p in (50, 95, 99)] == [50, 95, 99]
    assert [rank(p, 1) for p in (50, 95, 99)] == [1, 1, 1]
    assert [rank(p, 9) for p in (50, 95, 99)] == [5, 9, 9]


def test_each_failed_attempt_has_a_category() -> None:
    assert attempt_category("deliver.done", None, "done") is None
    assert attempt_category("deliver.retry", None, "retry") == "transient"
    assert attempt_category("deliver.dead", "data_quality", "dead") == "data_quality"
    assert attempt_category("deliver.dead", "configuration", "dead") == "configuration"
    assert attempt_category("deliver.wait", None, "retry") == "transient"  # an outage
    assert attempt_category("deliver.wait", None, "dead") == "configuration"  # failing preflight


def test_durations_read_for_people() -> None:
    assert [duration(s) for s in (None, 0.25, 12.34, 195, 3725, 93784)] == [
        "-",
        "250ms",
        "12.3s",
        "3m15s",
        "1h02m",
        "1d02h",
    ]


# -- through the real path ----------------------------------------------------------------------


class Clock:
    """The time the provisioner, the relay and the plans read: whole seconds, moved by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, start: datetime, seconds: float) -> None:
        self.now = start + timedelta(seconds=seconds)


def start_of_yesterday() -> datetime:
    """A day ago, to the second: times the written changes can carry and ``now`` can age."""
    return (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)


def moodle_on(simulator: Any) -> MoodleTarget:
    config = TargetConfig("moodle", "moodle", "http://moodle.test", {"token": "T"}, {})
    return MoodleTarget(config, SIM_MOODLE_TOKEN, transport=httpx.ASGITransport(app=simulator))


def stats(database_url: str, rules_dir: Path, *args: str) -> dict[str, Any]:
    result = run_cli(database_url, rules_dir, "stats", "--json", *args)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    assert report["format"] == "bridge-stats/1"
    return report


def book_of(rules_dir: Path, catalog: Catalog) -> RuleBook:
    book = RuleBook(rules_dir, lambda d: check_directory(d, catalog))
    book.load()
    return book


async def test_freshness_and_errors_of_scim_writes_the_relay_delivered(
    database_url: str, db: Database, catalog: Catalog, settings: Settings, tmp_path: Path
) -> None:
    """Ten people written a second apart (W+0…W+9 s), each owing three LMS calls (account,
    course, cohort); the relay meets an outage at W+50, then delivers one call per person at
    W+100, W+200 and W+300. Latencies: 91…100, 191…200, 291…300 s. An eleventh person's email
    is refused by the LMS (data quality): one dead letter and two calls held behind it."""
    rules_dir = uncapped(shipped_rules(tmp_path))
    written = start_of_yesterday()
    clock = Clock(written)
    provisioner = Provisioner(db, catalog, rules=book_of(rules_dir, catalog).current, clock=clock)
    app = create_app(provisioner, catalog, settings, Authenticator(db, env_token=TOKEN))
    async with app_client(app) as scim:
        for number in range(10):
            clock.at(written, number)
            assert_scim(
                await scim.post("/Users", json=employee(number, codes=["BEN_CHOICE_2026"])), 201
            )
        clock.at(written, 10)
        refused = employee(10, codes=["BEN_CHOICE_2026"])
        refused["emails"] = [{"value": "not-an-email", "type": "work"}]
        assert_scim(await scim.post("/Users", json=refused), 201)
    assert len(queued(db)) == 33

    simulator = create_simulator(Knobs(seed=1))
    relay = Relay(db, {"moodle": moodle_on(simulator)}, clock=clock, probe_base=1, probe_cap=1)
    clock.at(written, 50)
    simulator.state.knobs.error_rate = 1.0  # the LMS answers 5xx: an outage, waited out
    assert await relay.run_once() == 11
    simulator.state.knobs.error_rate = 0.0
    for seconds in (100, 200, 300):
        clock.at(written, seconds)
        assert await relay.run_once() in (10, 11)

    report = stats(database_url, rules_dir)
    total = report["total"]
    assert report["since"] is None and list(report["targets"]) == ["moodle"]
    assert report["targets"]["moodle"] == total
    assert total["changes"] == 33
    assert total["outcomes"] == {
        "delivered": 30,
        "dead": 1,
        "skipped": 0,
        "pending": 2,
        "retrying": 0,
        "quarantined": 0,
    }
    assert total["latency_seconds"] == {
        "confirmed": 30,
        "unknown": 0,
        "p50": 195.0,  # rank 15 of 30
        "p95": 299.0,  # rank 29
        "p99": 300.0,  # rank 30
        "max": 300.0,
    }
    held, dead = total["open"]["pending"], total["open"]["dead"]
    assert (held["count"], held["before_window"], dead["count"]) == (2, 0, 1)
    assert held["oldest_written_at"] == (written + timedelta(seconds=10)).isoformat()
    age = (datetime.now(UTC) - written).total_seconds() - 10
    assert age - 120 < held["oldest_age_seconds"] <= age
    assert total["open"]["retrying"]["count"] == total["open"]["quarantined"]["count"] == 0
    # 1 of 31 decided changes (30 delivered, 1 dead-lettered) failed, for its data.
    assert total["errors"] == {
        "decided": 31,
        "changes": {"data_quality": 1, "configuration": 0, "transient": 0, "total": 1},
        "per_1000": {"data_quality": 32.26, "configuration": 0.0, "transient": 0.0, "total": 32.26},
    }
    # 42 attempts: 11 met the outage (not charged), 30 delivered, 1 refused for the data.
    assert total["attempts"] == {
        "total": 42,
        "failed": {"data_quality": 1, "configuration": 0, "transient": 11, "total": 12},
        "waits": 11,
        "per_1000": {
            "data_quality": 23.81,
            "configuration": 0.0,
            "transient": 261.9,
            "total": 285.71,
        },
    }

    # Since W+5: people 5…10 (18 changes); latencies 91…95, 191…195, 291…295.
    recent = stats(database_url, rules_dir, "--since", (written + timedelta(seconds=5)).isoformat())
    assert recent["total"]["changes"] == 18
    assert [recent["total"]["latency_seconds"][p] for p in ("p50", "p95", "p99", "max")] == [
        193.0,
        295.0,
        295.0,
        295.0,
    ]
    assert recent["total"]["errors"]["per_1000"]["total"] == 62.5  # 1 of 16
    assert recent["total"]["attempts"]["total"] == 6 + 15 + 1

    # A window after every write: nothing new, and what still waits is shown all the same.
    later = stats(database_url, rules_dir, "--since", (written + timedelta(seconds=11)).isoformat())
    assert later["total"]["changes"] == 0
    assert later["total"]["latency_seconds"]["p50"] is None
    assert later["total"]["errors"]["per_1000"] is None
    assert later["total"]["open"]["pending"]["count"] == 2
    assert later["total"]["open"]["pending"]["before_window"] == 2
    assert later["total"]["open"]["dead"]["before_window"] == 1

    text = run_cli(database_url, rules_dir, "stats")
    assert text.exit_code == 0, text.output
    for shown in (
        "3m15s",
        "4m59s",
        "5m00s",
        "32.26 (1)",
        "285.71 (12)",
        "pending (queued or being sent): 2",
    ):
        assert shown in text.output, text.output
    text = run_cli(
        database_url, rules_dir, "stats", "--since", (written + timedelta(seconds=11)).isoformat()
    )
    assert "2 written before the window" in text.output, text.output

    # Sent again after the fix: no longer dead, but it did dead-letter — still an error.
    assert run_cli(database_url, rules_dir, "errors", "retry", "--all").exit_code == 0
    again = stats(database_url, rules_dir)["total"]
    assert (again["outcomes"]["dead"], again["outcomes"]["pending"]) == (0, 3)
    assert again["errors"]["changes"]["data_quality"] == 1
    assert again["errors"]["decided"] == 31


class Recording:
    """An LMS that confirms every call (a second target beside the simulated Moodle)."""

    kind = "test"

    def __init__(self, name: str) -> None:
        self.name = name

    async def deliver(self, delivery: Delivery) -> Result:
        return Result.done(lms_user_id=f"lms-{delivery.intent['person']}")

    async def aclose(self) -> None:
        return None


async def test_a_change_an_applied_plan_made_is_timed_from_the_apply(
    database_url: str, db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    """Under the capped pilot a SCIM write admits nobody; the day-0 draw (plan + apply, at
    W+1 h) makes the calls, with no journal entry of a write behind them: their latency runs
    from the apply (60, 120, 180 s), not from the writes an hour earlier. A second target's
    calls count in their own row and in the total."""
    rules_dir = shipped_rules(tmp_path)
    written = start_of_yesterday()
    clock = Clock(written)
    provisioner = Provisioner(db, catalog, rules=book_of(rules_dir, catalog).current, clock=clock)
    for number in range(3):
        provisioner.create(Cause("hris"), "User", employee(number, codes=["BEN_CHOICE_2026"]))
    assert queued(db) == []
    clock.at(written, 3600)
    assert draw(provisioner) == 9
    other = {"kind": "upsert_account", "target": "canvas", "rule": "r", "data": {}}
    with db.write() as conn:
        outbox.enqueue(conn, [{**other, "person": "p1"}, {**other, "person": "p2"}], now=clock())
        assert {row["journal_seq"] for row in outbox.pending(conn)} == {None}

    simulator = create_simulator(Knobs(seed=2))
    targets = {"moodle": moodle_on(simulator), "canvas": Recording("canvas")}
    relay = Relay(db, targets, clock=clock)
    for seconds in (60, 120, 180):
        clock.at(written, 3600 + seconds)
        await relay.run_once()

    report = stats(database_url, rules_dir)
    latency = {name: report["targets"][name]["latency_seconds"] for name in ("canvas", "moodle")}
    assert [latency["moodle"][p] for p in ("p50", "p95", "p99", "max")] == [
        120.0,
        180.0,
        180.0,
        180.0,
    ]
    assert [latency["canvas"][p] for p in ("p50", "max")] == [60.0, 60.0]
    total = report["total"]
    # 60 ×5, 120 ×3, 180 ×3: rank 6 of 11 is 120, rank 11 is 180.
    assert [total["latency_seconds"][p] for p in ("p50", "p95", "max")] == [120.0, 180.0, 180.0]
    assert (total["changes"], total["outcomes"]["delivered"]) == (11, 11)
    assert total["errors"]["per_1000"]["total"] == 0.0
    assert total["attempts"] == {
        "total": 11,
        "failed": {"data_quality": 0, "configuration": 0, "transient": 0, "total": 0},
        "waits": 0,
        "per_1000": {"data_quality": 0.0, "configuration": 0.0, "transient": 0.0, "total": 0.0},
    }

    canvas = stats(database_url, rules_dir, "--target", "canvas")
    assert list(canvas["targets"]) == ["canvas"] and canvas["target"] == "canvas"
    assert canvas["total"] == canvas["targets"]["canvas"]
    assert canvas["total"]["changes"] == 2
    nothing = run_cli(database_url, rules_dir, "stats", "--target", "docebo")
    assert nothing.exit_code == 0 and "no changes" in nothing.output, nothing.output


def test_a_since_the_command_cannot_read_is_a_usage_error(
    database_url: str, tmp_path: Path
) -> None:
    result = run_cli(database_url, shipped_rules(tmp_path), "stats", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "neither a duration" in result.output
