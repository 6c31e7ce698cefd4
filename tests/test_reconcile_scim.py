"""``bridge reconcile`` of an outbound ``scim`` target. The LMS is the bridge's own SCIM
server (a conformant RFC 7644 service provider, as in test_scim_target.py) on a database of its
own, served on a real port; accounts are provisioned into it through the relay, changed there
by hand over SCIM, and the reconcile must find exactly that and repair it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from bridge.config import Settings
from bridge.provision import Provisioner
from bridge.provision.drift import ACCOUNT_MISSING
from bridge.provision.drift import ACCOUNT_SUSPENDED
from bridge.provision.drift import FIELD
from bridge.provision.drift import UNCHECKED
from bridge.schemas import Catalog
from bridge.scim.app import create_app
from bridge.scim.auth import Authenticator
from bridge.store.engine import Database
from bridge.store.engine import connect
from bridge.targets.scim_reconcile import field_drift
from tests.conftest import ENTERPRISE
from tests.conftest import PATCH
from tests.conftest import ROOT
from tests.conftest import TOKEN
from tests.conftest import employee
from tests.conftest import free_port
from tests.conftest import run_cli
from tests.test_reconcile import post
from tests.test_reconcile import relay

RULES = """\
version: 1
name: accounts-lms
target: lms
aliases:
  department: urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department
scope:
  filter: 'department eq "Claims"'
mapping:
  idnumber: {from: externalId, required: true}
  username: {from: userName, transforms: [trim, lower], required: true}
  email: {from: 'emails[type eq "work"].value', transforms: [trim, lower], required: true}
  firstname: {from: name.givenName, transforms: [trim]}
  lastname: {from: name.familyName, transforms: [trim]}
  title: {from: title}
  department: {from: department}
safety:
  max_removals: 20
  max_removals_percent: 50
"""
TARGETS = """\
targets:
  lms:
    kind: scim
    base_url: {url}/scim/v2
    credentials:
      token: env:LMS_TOKEN
    options:
      attributes:
        department: {enterprise}:department
"""


def test_scim_field_drift_compares_the_mapped_attributes() -> None:
    compare = field_drift({"department": f"{ENTERPRISE}:department"})
    account = {
        "idnumber": "E1",
        "username": "Ann",
        "email": "ann@example.com",
        "title": "Clerk",
        "department": "Claims",
        "auth": "oauth2",
    }
    held = {
        "externalId": "E1",
        "userName": "ann",
        "emails": [{"value": "ANN@example.com", "primary": True}],
        "title": "Clerk",
        ENTERPRISE: {"department": "Claims"},
    }
    assert compare(account, held, {}) == {}
    changed = {**held, "externalId": "E2", "title": "Boss", ENTERPRISE: {"department": "IT"}}
    assert compare(account, changed, {}) == {"idnumber": "E2", "title": "Boss", "department": "IT"}
    # an attribute the LMS does not answer with is not compared
    assert compare(account, {"userName": "ann"}, {}) == {}


@pytest.fixture
def lms(tmp_path: Path, sqlite_template: Path, catalog: Catalog) -> Iterator[tuple[str, Database]]:
    """The bridge's SCIM server as the LMS, on its own SQLite database and a free port."""
    path = tmp_path / "lms.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    db = connect(url)
    settings = Settings(database_url=url, scim_token=TOKEN, schemas_dir=ROOT / "schemas")
    app = create_app(
        Provisioner(db, catalog), catalog, settings, Authenticator(db, env_token=TOKEN)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", db
    server.should_exit = True
    thread.join(timeout=10)
    db.dispose()


def reconcile(database_url: str, rules: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(
        database_url,
        rules,
        "reconcile",
        "--detailed-exitcode",
        "--json",
        *args,
        LMS_TOKEN=TOKEN,
    )
    assert result.exit_code in (0, 2), result.output
    return result.exit_code, json.loads(result.stdout)


def test_reconcile_finds_hand_changes_in_a_scim_lms_and_apply_repairs_them(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    lms: tuple[str, Database],
) -> None:
    url, _ = lms
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "targets.yaml").write_text(TARGETS.format(url=url, enterprise=ENTERPRISE))
    (rules / "accounts-lms.yaml").write_text(RULES)
    people = [{**employee(n, codes=["EMPLOYEE"]), "title": "Clerk"} for n in range(1, 5)]
    post(db, catalog, settings, rules, *people)
    credentials = {"LMS_TOKEN": TOKEN}
    relay(database_url, rules, catalog, credentials)
    code, before = reconcile(database_url, rules)
    assert code == 0 and before["drift"] == [], before["drift"]

    async def by_hand() -> dict[str, str]:
        async with httpx.AsyncClient(
            base_url=f"{url}/scim/v2", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            listed = (await client.get("/Users", params={"count": 100})).json()["Resources"]
            ids = {u["userName"]: u["id"] for u in listed}
            assert (await client.delete(f"/Users/{ids['emp1@example.com']}")).status_code == 204

            async def patch(name: str, value: dict[str, Any]) -> None:
                body = {"schemas": [PATCH], "Operations": [{"op": "replace", "value": value}]}
                response = await client.patch(f"/Users/{ids[name]}", json=body)
                assert response.status_code == 200, response.text

            await patch("emp2@example.com", {"active": False})
            await patch("emp3@example.com", {"title": "Boss"})
            return ids

    ids = asyncio.run(by_hand())
    code, document = reconcile(database_url, rules)
    assert code == 2 and document["source"] == "reconcile"
    drift = sorted(
        (d["label"], d["kind"], d["ref"], d["action"], d["owned"]) for d in document["drift"]
    )
    assert drift == [
        ("emp1@example.com", ACCOUNT_MISSING, None, "upsert_account", True),
        ("emp2@example.com", ACCOUNT_SUSPENDED, None, "reactivate_account", True),
        ("emp3@example.com", FIELD, "title", "upsert_account", True),
    ]
    title = next(d for d in document["drift"] if d["kind"] == FIELD)
    assert "'Boss'" in title["reason"] and "'Clerk'" in title["reason"]

    result = run_cli(
        database_url, rules, "reconcile", "--detailed-exitcode", "--apply", LMS_TOKEN=TOKEN
    )
    assert result.exit_code == 2 and "3 intent(s) applied" in result.output, result.output
    relay(database_url, rules, catalog, credentials)
    code, after = reconcile(database_url, rules)
    assert code == 0 and [d for d in after["drift"] if d["kind"] != UNCHECKED] == []

    async def held() -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(
            base_url=f"{url}/scim/v2", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            listed = (await client.get("/Users", params={"count": 100})).json()["Resources"]
            return {u["userName"]: u for u in listed}

    now = asyncio.run(held())
    assert now["emp1@example.com"]["id"] != ids["emp1@example.com"]  # created again
    assert now["emp2@example.com"]["active"] is True
    assert now["emp3@example.com"]["title"] == "Clerk"


def test_a_refused_read_stops_the_reconcile_with_a_one_line_error(
    tmp_path: Path,
    catalog: Catalog,
    settings: Settings,
    db: Database,
    database_url: str,
    lms: tuple[str, Database],
) -> None:
    url, _ = lms
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "targets.yaml").write_text(TARGETS.format(url=url, enterprise=ENTERPRISE))
    (rules / "accounts-lms.yaml").write_text(RULES)
    post(db, catalog, settings, rules, employee(1, codes=["EMPLOYEE"]))
    relay(database_url, rules, catalog, {"LMS_TOKEN": TOKEN})
    result = run_cli(database_url, rules, "reconcile", LMS_TOKEN="not-the-token")
    assert result.exit_code == 1
    assert "reading the LMS failed: GET /Users/" in result.output
    assert "HTTP 401" in result.output and "Traceback" not in result.output
