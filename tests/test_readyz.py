"""``/readyz``: 200 with every check when the bridge can do its work, 503 with the reasons when
it cannot; ``/healthz`` stays the liveness probe whatever ``/readyz`` says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.rules.book import RuleBook
from bridge.rules.check import check_directory
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store import health
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.store.gauges import head_revision
from tests.conftest import NOW
from tests.conftest import TOKEN
from tests.conftest import shipped_rules


def ruled_app(db: Database, catalog: Catalog, rules: Path) -> tuple[Any, RuleBook]:
    book = RuleBook(rules, lambda d: check_directory(d, catalog))
    book.load()
    provisioner = Provisioner(db, catalog, rules=book.current)
    app = create_app(
        provisioner,
        catalog,
        Settings(scim_token=TOKEN),
        Authenticator(db, env_token=TOKEN),
        book=book,
    )
    return app, book


async def probe(app: Any, path: str = "/readyz") -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bridge.test"
    ) as http:
        return await http.get(path)


async def test_ready_with_every_check_named(db: Database, catalog: Catalog, tmp_path: Path) -> None:
    app, book = ruled_app(db, catalog, shipped_rules(tmp_path))
    response = await probe(app)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["database"]["ok"]
    assert checks["migrations"] == {"ok": True, "current": head_revision(), "head": head_revision()}
    assert checks["rules"] == {"ok": True, "version": book.current().version}  # type: ignore[union-attr]
    assert checks["target:moodle"] == {"ok": True, "verdict": "unchecked"}
    assert "target:canvas" not in checks  # no rule file drives it


async def test_a_target_failing_preflight_is_not_ready_an_unreachable_one_is(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    app, _ = ruled_app(db, catalog, shipped_rules(tmp_path))
    with db.write() as conn:
        health.save(conn, "moodle", health.UNREACHABLE, now=NOW, reason="connection refused")
    response = await probe(app)
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["target:moodle"]["verdict"] == "unreachable"
    why = "target moodle fails preflight: core_user_create_users is not allowed"
    with db.write() as conn:
        health.save(conn, "moodle", health.MISCONFIGURED, now=NOW, reason=why)
    response = await probe(app)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["target:moodle"] == {"ok": False, "verdict": "failed", "reason": why}
    assert body["reasons"] == [f"target:moodle: {why}"]
    assert (await probe(app, "/healthz")).status_code == 200  # still alive
    with db.write() as conn:
        health.save(conn, "moodle", health.OK, now=NOW)
    assert (await probe(app)).status_code == 200


async def test_a_refused_reload_is_reported_and_the_last_good_set_keeps_it_ready(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    rules = shipped_rules(tmp_path)
    app, book = ruled_app(db, catalog, rules)
    version = book.current().version  # type: ignore[union-attr]
    broken = rules / "benefits-2026.yaml"
    broken.write_text(broken.read_text().replace("target: moodle", "target: nowhere", 1))
    assert not book.reload()
    response = await probe(app)
    assert response.status_code == 200, response.text
    rules_check = response.json()["checks"]["rules"]
    assert rules_check["version"] == version
    assert "nowhere" in rules_check["reload_refused"]
    assert rules_check["note"] == "the last good rule set stays in force"


async def test_a_database_behind_the_code_migrations_is_not_ready(
    db: Database, catalog: Catalog, tmp_path: Path
) -> None:
    app, _ = ruled_app(db, catalog, shipped_rules(tmp_path))
    head = head_revision()
    with db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        response = await probe(app)
    finally:  # the PostgreSQL database is the session's: put it back
        with db.write() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert response.status_code == 503
    migrations = response.json()["checks"]["migrations"]
    assert (migrations["ok"], migrations["current"], migrations["head"]) == (False, "0001", head)
    assert response.json()["reasons"] == [f"migrations: {migrations['reason']}"]


async def test_a_database_that_does_not_answer_is_not_ready(catalog: Catalog) -> None:
    # A PostgreSQL server nobody listens for (port 9): the query fails at once.
    gone = connect("postgresql://bridge:bridge@127.0.0.1:9/bridge")
    try:
        provisioner = Provisioner(gone, catalog)
        app = create_app(provisioner, catalog, Settings(), Authenticator(gone, env_token=TOKEN))
        response = await probe(app)
    finally:
        gone.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is False
    assert body["reasons"][0].startswith("database: the database did not answer: OperationalError")
