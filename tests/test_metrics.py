"""``/metrics``: the Prometheus text format, read by a bearer of the ``metrics`` scope.

Every figure is read from a real scrape of the real app: requests counted by route template,
the database's figures (outbox depth, runs awaiting a decision, preflight verdicts, last
reconciles) read at scrape time, the relay's deliveries against the LMS simulator, and every
metric the shipped Grafana dashboard queries.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bridge.auth.tokens import parse_scopes
from bridge.cli.relay import build_relay
from bridge.config import Settings
from bridge.lmssim.app import SIM_MOODLE_TOKEN
from bridge.provision import Provisioner
from bridge.relay import Relay
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import health
from bridge.store import outbox
from bridge.store import runs
from bridge.store import schedule_runs
from bridge.store import tokens
from bridge.store.engine import Database
from bridge.targets.base import Category
from bridge.targets.base import Delivery
from bridge.targets.base import Result
from bridge.telemetry import Telemetry
from tests.conftest import NOW
from tests.conftest import TOKEN
from tests.conftest import app_client
from tests.conftest import employee
from tests.conftest import shipped_rules
from tests.conftest import user_payload
from tests.pilots import draw

METRICS_TOKEN = "brg_metrics-scrape-token"


def add_token(db: Database, name: str, token: str, scopes: str) -> None:
    with db.write() as conn:
        tokens.create(conn, name, token, parse_scopes(scopes), NOW)


async def scrape(app: Any, token: str = METRICS_TOKEN) -> dict[tuple[str, frozenset[Any]], float]:
    """One real scrape: sample (name, labels) → value."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bridge.test"
    ) as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def ruled_app(db: Database, catalog: Catalog, rules: Path, **more: Any) -> Any:
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    provisioner = Provisioner(db, catalog, rules=book.current)
    settings = Settings(scim_token=TOKEN)
    return create_app(
        provisioner, catalog, settings, Authenticator(db, env_token=TOKEN), book=book, **more
    )


async def test_a_scrape_needs_a_token_with_the_metrics_scope(db: Database, app: Any) -> None:
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    add_token(db, "okta", "brg_scim-only", "write")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bridge.test"
    ) as http:
        anonymous = await http.get("/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert (
            await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        scim_only = await http.get("/metrics", headers={"Authorization": "Bearer brg_scim-only"})
        assert scim_only.status_code == 403
        assert "lacks the metrics scope" in scim_only.json()["detail"]
        env_token = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert env_token.status_code == 403  # BRIDGE_SCIM_TOKEN reads and writes SCIM only
        ok = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        assert "# TYPE bridge_http_requests_total counter" in ok.text
    async with app_client(app, METRICS_TOKEN) as scim:  # the metrics token reads nothing else
        assert (await scim.get("/Users")).status_code == 403


async def test_requests_are_counted_by_route_template_and_status(db: Database, app: Any) -> None:
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    async with app_client(app) as scim:
        created = (await scim.post("/Users", json=user_payload("ada"))).json()
        for _ in range(2):
            assert (await scim.get(f"/Users/{created['id']}")).status_code == 200
        assert (await scim.get("/Users/00000000-0000-0000-0000-000000000000")).status_code == 404
        assert (await scim.get("/nowhere/at/all")).status_code == 404
    found = await scrape(app)
    by_id = "/scim/v2/{endpoint:resource}/{id}"
    total = "bridge_http_requests_total"
    assert value(found, total, route=by_id, method="GET", status="200") == 2
    assert value(found, total, route=by_id, method="GET", status="404") == 1
    assert (
        value(found, total, route="/scim/v2/{endpoint:resource}", method="POST", status="201") == 1
    )
    assert value(found, total, route="/scim/v2/{rest:path}", method="GET", status="404") == 1
    assert (
        value(found, "bridge_http_request_duration_seconds_count", route=by_id, method="GET") == 3
    )
    assert not any(created["id"] in str(labels) for _, labels in found)  # ids never label


async def test_the_databases_figures_are_read_at_scrape_time(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    app = ruled_app(db, catalog, shipped_rules(tmp_path))
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    intent = {"kind": "upsert_account", "person": "p1", "target": "moodle", "rule": "r"}
    with db.write() as conn:
        outbox.enqueue(conn, [intent, {**intent, "person": "p2"}], now=NOW)
        outbox.enqueue(conn, [{**intent, "person": "p3", "target": "canvas"}], now=NOW)
        runs.create(
            conn, "held1", kind=runs.HELD, status="quarantined", rules_version="v",
            summary={"target": "moodle"}, now=NOW, actor="t",
        )  # fmt: skip
        runs.create(
            conn, "plan1", kind="apply", status="applied", rules_version="v",
            summary={}, now=NOW, actor="t",
        )  # fmt: skip
        health.save(conn, "moodle", health.MISCONFIGURED, now=NOW, reason="no token")
    with db.write() as conn:
        claimed = schedule_runs.claim(
            conn, job_key="benefits-2026/reconcile", rule_file="benefits-2026", job="reconcile",
            occurrence=NOW, worker="w", now=NOW,
        )  # fmt: skip
    assert claimed is not None
    with db.write() as conn:
        schedule_runs.finish(
            conn, claimed, state=schedule_runs.DONE, now=NOW + timedelta(minutes=3),
            summary={},
        )  # fmt: skip
    found = await scrape(app)
    assert value(found, "bridge_outbox_rows", target="moodle", state="pending") == 2
    assert value(found, "bridge_outbox_rows", target="moodle", state="dead") == 0
    assert value(found, "bridge_outbox_rows", target="canvas", state="pending") == 1
    assert value(found, "bridge_runs_awaiting_decision", kind="held") == 1
    assert ("bridge_runs_awaiting_decision", frozenset({("kind", "apply")})) not in found
    assert value(found, "bridge_target_preflight", target="moodle", verdict="failed") == 1
    assert value(found, "bridge_target_preflight", target="moodle", verdict="passed") == 0
    finished = (NOW + timedelta(minutes=3)).timestamp()
    assert value(found, "bridge_last_reconcile_timestamp_seconds", target="moodle") == finished
    version = next(dict(labels)["version"] for name, labels in found if name == "bridge_rules_info")
    assert version == app.state.server.provisioner.projector.rules().version
    assert value(found, "bridge_rules_reload_refused") == 0
    assert value(found, "bridge_rules_reload_refusals_total") == 0


async def test_a_refused_reload_is_counted_and_flagged_until_the_files_are_fixed(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    import os

    rules = shipped_rules(tmp_path)
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    provisioner = Provisioner(db, catalog, rules=book.current)
    authenticate = Authenticator(db, env_token=TOKEN)
    app = create_app(provisioner, catalog, Settings(scim_token=TOKEN), authenticate, book=book)
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    path = rules / "benefits-2026.yaml"
    good = path.read_text()
    for attempt, text in enumerate((good + "\nbogus_key: 1\n", good + "\nbogus: 2\n"), 1):
        path.write_text(text)
        os.utime(path, (attempt * 10.0 + 1e9, attempt * 10.0 + 1e9))
        assert book.reload() is False
        found = await scrape(app)
        assert value(found, "bridge_rules_reload_refused") == 1
        assert value(found, "bridge_rules_reload_refusals_total") == attempt
    path.write_text(good)
    os.utime(path, (1e9 + 100, 1e9 + 100))
    book.reload()
    found = await scrape(app)
    assert value(found, "bridge_rules_reload_refused") == 0
    assert value(found, "bridge_rules_reload_refusals_total") == 2


class AnsweringLms:
    """An LMS that answers each person's first delivery from a script (retry, then dead)."""

    kind = "test"
    name = "lms"

    def __init__(self, answers: dict[str, list[Result]]) -> None:
        self.answers = answers

    async def deliver(self, delivery: Delivery) -> Result:
        queued = self.answers.get(delivery.intent["person"])
        return queued.pop(0) if queued else Result.done(lms_user_id="42")

    async def aclose(self) -> None:
        return None


async def test_the_relay_counts_retries_dead_letters_and_write_to_confirmed_latency(
    db: Database, app: Any
) -> None:
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    telemetry: Telemetry = app.state.telemetry
    now = [NOW]
    intent = {"kind": "upsert_account", "person": "ok", "target": "lms", "rule": "r"}
    with db.write() as conn:
        outbox.enqueue(
            conn,
            [intent, {**intent, "person": "flaky"}, {**intent, "person": "broken"}],
            now=NOW,
        )
    lms = AnsweringLms(
        {
            "flaky": [Result.retry("503 from the LMS")],
            "broken": [Result.dead(Category.data_quality, "bad email")],
        }
    )
    relay = Relay(db, {"lms": lms}, clock=lambda: now[0], telemetry=telemetry)
    now[0] = NOW + timedelta(seconds=7)
    assert await relay.run_once() == 3
    now[0] = NOW + timedelta(hours=1)
    assert await relay.run_once() == 1  # the flaky one, again
    found = await scrape(app)
    deliveries = "bridge_deliveries_total"
    assert value(found, deliveries, target="lms", outcome="done", category="none") == 2
    assert value(found, deliveries, target="lms", outcome="retry", category="transient") == 1
    assert value(found, deliveries, target="lms", outcome="dead", category="data_quality") == 1
    assert value(found, "bridge_delivery_retries_total", target="lms", category="transient") == 1
    assert value(found, "bridge_dead_letters_total", target="lms", category="data_quality") == 1
    latency = "bridge_write_to_confirmed_seconds"
    assert value(found, f"{latency}_count", target="lms") == 2
    assert value(found, f"{latency}_sum", target="lms") == 7 + 3600  # written at NOW
    assert value(found, f"{latency}_bucket", target="lms", le="10.0") == 1


async def test_a_delivery_to_the_lms_simulator_is_counted_done(
    db: Database, catalog: Catalog, tmp_path: Path, simulator_url: tuple[str, Any]
) -> None:
    rules = shipped_rules(tmp_path, simulator_url[0])
    telemetry = Telemetry()
    app = ruled_app(db, catalog, rules, telemetry=telemetry)
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    async with app_client(app) as scim:
        response = await scim.post("/Users", json=employee(1, codes=["BEN_CHOICE_2026"]))
        assert response.status_code == 201, response.text
    assert draw(app.state.server.provisioner) > 0  # the capped pilot's day-0 draw
    before = await scrape(app)
    assert sum(v for (n, _labels), v in before.items() if n == "bridge_outbox_rows") > 0
    relay = build_relay(
        db, app.state.server.provisioner.projector.rules(), {"MOODLE_TOKEN": SIM_MOODLE_TOKEN}
    )
    assert relay is not None
    relay.telemetry = telemetry
    try:
        while await relay.run_once():
            pass
    finally:
        await relay.aclose()
    found = await scrape(app)
    done = sum(
        v for (n, labels), v in found.items()
        if n == "bridge_deliveries_total" and ("outcome", "done") in labels
    )  # fmt: skip
    assert done >= 1
    assert value(found, "bridge_write_to_confirmed_seconds_count", target="moodle") == done
    assert value(found, "bridge_outbox_rows", target="moodle", state="pending") == 0


def dashboard_metrics() -> set[str]:
    text = resources.files("bridge.telemetry").joinpath("grafana-dashboard.json").read_text()
    dashboard = json.loads(text)
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bbridge_[a-z_]+\b", expr)}


async def test_every_metric_the_dashboard_queries_is_in_a_real_scrape(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    app = ruled_app(db, catalog, shipped_rules(tmp_path))
    add_token(db, "prometheus", METRICS_TOKEN, "metrics")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bridge.test"
    ) as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    exported: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        exported.add(family.name)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ())
        exported.update(family.name + suffix for suffix in suffixes)
    queried = dashboard_metrics()
    assert len(queried) >= 12
    assert queried - exported == set()


async def test_a_standalone_relay_serves_its_counters_on_its_metrics_port(db: Database) -> None:
    """``bridge relay --metrics-port``: the relay's deliveries, scraped from its own port."""
    import httpx

    from bridge.cli.relay import serve_metrics

    intent = {"kind": "upsert_account", "person": "ok", "target": "lms", "rule": "r"}
    with db.write() as conn:
        outbox.enqueue(conn, [intent], now=NOW)
    relay = Relay(db, {"lms": AnsweringLms({})}, clock=lambda: NOW + timedelta(seconds=2))
    port = serve_metrics(relay, "127.0.0.1", 0)
    assert await relay.run_once() == 1
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    line = 'bridge_deliveries_total{category="none",outcome="done",target="lms"} 1.0'
    assert line in text, text[:2000]
    assert 'bridge_write_to_confirmed_seconds_count{target="lms"} 1.0' in text
